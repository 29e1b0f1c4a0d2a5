//! Waiting for a store's lock: the back-off a standby engine polls with
//! (docs/failover.md#standby).
//!
//! Polling, not a blocking wait on the lock: every attempt takes the lock or fails at once, so a
//! dropped wait never leaves a pending request behind (a server session still queued for an
//! advisory lock would take it, unseen, the moment the holder lets go).

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Error, Result};

/// The first pause after a `Locked` attempt.
const FIRST: Duration = Duration::from_millis(5);

/// The longest pause between attempts: a freed lock is taken within this (plus one attempt).
pub const MAX_PAUSE: Duration = Duration::from_millis(100);

/// Pauses between attempts to take a lock: 5 ms, doubling to [`MAX_PAUSE`], never past the
/// deadline.
#[derive(Debug, Clone)]
pub struct Backoff {
    deadline: Instant,
    pause: Duration,
}

impl Backoff {
    /// Back-off for a wait of at most `timeout` from now.
    #[must_use]
    pub fn new(timeout: Duration) -> Self {
        let now = Instant::now();
        Self {
            deadline: now.checked_add(timeout).unwrap_or(now + Duration::from_secs(86_400 * 365)),
            pause: FIRST,
        }
    }

    /// Sleeps before the next attempt; `false` (at once) when the deadline has passed, i.e. the
    /// attempt just made was the last.
    pub async fn pause(&mut self) -> bool {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        tokio::time::sleep(self.pause.min(left)).await;
        self.pause = (self.pause * 2).min(MAX_PAUSE);
        true
    }
}

/// Calls `attempt` until it returns anything but [`Error::Locked`], pausing with [`Backoff`];
/// after `timeout` the last `Locked` is returned. Requires a tokio runtime with its timer.
pub async fn retry_locked<T, F, Fut>(timeout: Duration, mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut backoff = Backoff::new(timeout);
    loop {
        match attempt().await {
            Err(locked @ Error::Locked { .. }) => {
                if !backoff.pause().await {
                    return Err(locked);
                }
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_until_free_and_gives_up_at_the_deadline() {
        let calls = AtomicUsize::new(0);
        let got = retry_locked(Duration::from_secs(1), || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 3 {
                Err(Error::Locked { app_key: "a".into() })
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(got.unwrap(), 7);

        let started = tokio::time::Instant::now();
        let calls = AtomicUsize::new(0);
        let locked = retry_locked(Duration::from_millis(500), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(Error::Locked { app_key: "a".into() })
        })
        .await;
        assert!(matches!(locked, Err(Error::Locked { .. })));
        assert_eq!(started.elapsed(), Duration::from_millis(500), "gives up exactly at the deadline");
        // 5+10+20+40+80 = 155 ms, then 100 ms pauses: 155 + 3*100 = 455, then 45 to the deadline.
        assert_eq!(calls.load(Ordering::SeqCst), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn other_errors_end_the_wait_at_once() {
        let calls = AtomicUsize::new(0);
        let got = retry_locked(Duration::from_secs(5), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(Error::Closed)
        })
        .await;
        assert!(matches!(got, Err(Error::Closed)));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
