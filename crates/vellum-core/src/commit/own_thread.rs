//! A writer on a thread of its own ([`block_on`]): how the thread parks, and how the writer
//! gathers the callers it has just answered into its next group.
//!
//! On a tokio runtime the writer yields after a commit, and the callers it answered (tasks of
//! the same runtime) run and queue their next batches before it looks at the queue again. On a
//! thread of its own a yield gives nobody a turn: the callers wake on other threads, tens of
//! microseconds later. Without waiting for them, each group takes only the batches queued while
//! the previous group committed, and the callers split into two cohorts that commit in turn,
//! each group holding about half of them (measured on redb: 8.3-8.4 batches per group with
//! 16 writers, 32-40 with 64). So after a contended commit (more than one caller answered, or
//! other jobs queued behind it), the writer waits for the callers it answered, until they are
//! back or a short budget ([`gather_budget`]) ends.

use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::Job;

thread_local! {
    /// Whether this thread runs [`block_on`].
    static ON_OWN_THREAD: Cell<bool> = const { Cell::new(false) };
    /// The instant by which a future polled by [`block_on`] asked to be polled again, if it did.
    static WAKE_AT: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Runs a future to completion on the current thread, parking while it waits. For a writer
/// that runs on a thread of its own (its storage calls block).
pub fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    let _entered = Entered(ON_OWN_THREAD.replace(true));
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        match WAKE_AT.take() {
            Some(at) => std::thread::park_timeout(at.saturating_duration_since(Instant::now())),
            None => std::thread::park(),
        }
    }
}

/// Restores the thread's flag when [`block_on`] returns or unwinds (it may be nested).
struct Entered(bool);

impl Drop for Entered {
    fn drop(&mut self) {
        ON_OWN_THREAD.set(self.0);
    }
}

/// Whether the caller runs inside [`block_on`] (a writer on a thread of its own).
pub(super) fn on_own_thread() -> bool {
    ON_OWN_THREAD.get()
}

/// The longest the writer waits for answered callers after a commit that took `commit`: a
/// quarter of it, at most [`MAX_GATHER`]. Waiting pays when they come back (one commit for all
/// of them instead of two); if they do not, it costs at most a fifth of the writer's time.
pub(super) fn gather_budget(commit: Duration) -> Duration {
    #[cfg(test)]
    if let Some(budget) = TEST_BUDGET.get() {
        return budget;
    }
    (commit / 4).min(MAX_GATHER)
}

#[cfg(test)]
thread_local! {
    /// A budget a test sets on its writer's thread, so that what it checks does not depend on
    /// the machine waking callers within a millisecond.
    pub(super) static TEST_BUDGET: Cell<Option<Duration>> = const { Cell::new(None) };
}

/// The upper bound of [`gather_budget`], so a long commit does not hold the next group long.
const MAX_GATHER: Duration = Duration::from_millis(1);

/// Takes jobs from `receiver` into `jobs` until it holds `target` of them, the queue is closed
/// and drained, or `deadline` passes, parking in between (only inside [`block_on`], which
/// honours the deadline; the writer's own future must be the one awaiting it).
pub(super) async fn gather(
    receiver: &mut mpsc::UnboundedReceiver<Job>,
    jobs: &mut Vec<Job>,
    target: usize,
    deadline: Instant,
) {
    std::future::poll_fn(|cx| {
        loop {
            if jobs.len() >= target {
                return Poll::Ready(());
            }
            match receiver.poll_recv_many(cx, jobs, target - jobs.len()) {
                // Closed and drained: what was gathered commits, then the writer ends.
                Poll::Ready(0) => return Poll::Ready(()),
                Poll::Ready(_) => {}
                Poll::Pending if Instant::now() >= deadline => return Poll::Ready(()),
                Poll::Pending => {
                    WAKE_AT.set(Some(deadline));
                    return Poll::Pending;
                }
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_on_polls_again_at_a_gathers_deadline_with_nothing_sent() {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let (_sender, mut receiver) = mpsc::unbounded_channel();
            let mut jobs = Vec::new();
            let started = Instant::now();
            // Nothing is ever sent: only the deadline can end the wait.
            block_on(gather(&mut receiver, &mut jobs, 2, started + Duration::from_millis(20)));
            let _ = done.send((started.elapsed(), jobs.len(), on_own_thread()));
        });
        // A block_on that ignored the deadline would park until a wake-up that never comes.
        let (waited, gathered, flag) = finished.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(waited >= Duration::from_millis(20), "{waited:?}");
        assert_eq!(gathered, 0);
        assert!(!flag, "the flag is reset when block_on returns");
    }

    #[test]
    fn the_budget_is_a_quarter_of_the_commit_and_at_most_a_millisecond() {
        assert_eq!(gather_budget(Duration::from_micros(600)), Duration::from_micros(150));
        assert_eq!(gather_budget(Duration::from_millis(40)), MAX_GATHER);
    }
}
