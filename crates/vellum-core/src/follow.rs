//! [`Follower`]: an event query that does not end (docs/events.md#following-the-log).
//!
//! A follower is an [`EventCursor`] that, having handed out every stored match, waits for more
//! instead of returning `None`. It reads every page from storage, as a cursor does, so a slow
//! follower never makes the writer buffer anything for it; the writer's wake-ups carry no data.
//! It waits for a wake-up (the store's [`Wakeups`], from
//! [`EventPageSource::commits`](crate::EventPageSource::commits)). When those report every commit
//! (a store holding the application's lock: nobody else writes; a PostgreSQL reader while its
//! `LISTEN` connection is up) it waits for nothing else and queries nothing while nothing is
//! written. Otherwise it also polls: 5 ms after it last found nothing, doubling up to the poll
//! cap (default [`DEFAULT_POLL_CAP`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_core::Stream;
use tokio::sync::watch;

use crate::cursor::EventCursor;
use crate::error::{Error, Result};
use crate::model::Event;

/// The longest a follower waits between two looks at the store when nothing wakes it.
pub const DEFAULT_POLL_CAP: Duration = Duration::from_secs(1);

/// The first poll interval after a look found nothing new.
const FIRST_POLL: Duration = Duration::from_millis(5);

/// How a store tells its followers that new events may be stored. A wake-up carries no data:
/// the follower reads its pages from storage, so a slow one never makes the writer buffer.
///
/// Whoever clears or sets the `partial` flag given to [`Wakeups::unless`] must also send a
/// change on the channel, so that followers waiting on the channel alone look again (and,
/// once the flag is set, start polling).
#[derive(Debug, Clone)]
pub struct Wakeups {
    changes: watch::Receiver<u64>,
    /// Set while commits may happen that `changes` does not report.
    partial: Arc<AtomicBool>,
}

impl Wakeups {
    /// Wake-ups that report every commit while `partial` is unset (for example: while the
    /// store holds the application's lock and so is its only writer).
    #[must_use]
    pub fn unless(changes: watch::Receiver<u64>, partial: Arc<AtomicBool>) -> Self {
        Self { changes, partial }
    }

    /// Wake-ups that report every commit, always (an in-memory store: no other process writes).
    #[must_use]
    pub fn every_commit(changes: watch::Receiver<u64>) -> Self {
        Self::unless(changes, Arc::new(AtomicBool::new(false)))
    }

    /// Wake-ups that report some commits only (this process's): followers poll as well.
    #[must_use]
    pub fn some_commits(changes: watch::Receiver<u64>) -> Self {
        Self::unless(changes, Arc::new(AtomicBool::new(true)))
    }

    /// Whether every commit is reported now, so a follower need not poll.
    fn complete(&self) -> bool {
        !self.partial.load(Ordering::Acquire)
    }
}

/// Follows an event query: every stored match from the start offset, in offset order, each
/// exactly once, then every new one as it is committed. Made by [`EventCursor::follow`].
///
/// ```
/// # use vellum_core::{EventRepository, Result};
/// # async fn example(store: &impl EventRepository) -> Result<()> {
/// let mut follower = store.load_events_by_type(&["OrderPlaced"], 0).await?.follow();
/// loop {
///     match follower.next().await {
///         Ok(event) => println!("{} at offset {}", event.envelope.portable_name, event.offset),
///         // The store was closed: a follower ends with `Closed`.
///         Err(vellum_core::Error::Closed) => return Ok(()),
///         Err(e) => return Err(e),
///     }
/// }
/// # }
/// ```
pub struct Follower {
    cursor: EventCursor,
    commits: Option<Wakeups>,
    poll: Duration,
    poll_cap: Duration,
    /// The last look failed: pause before the next (a caller retrying at once must not spin).
    failed: bool,
    /// How many times the follower looked at the store with nothing buffered.
    looks: u64,
}

impl Follower {
    pub(crate) fn new(cursor: EventCursor, commits: Option<Wakeups>) -> Self {
        Self { cursor, commits, poll: FIRST_POLL, poll_cap: DEFAULT_POLL_CAP, failed: false, looks: 0 }
    }

    /// Sets the longest wait between two looks at the store when its wake-ups do not report
    /// every commit (commits from other processes are then seen within it). At least 1 ms.
    #[must_use]
    pub fn with_poll_cap(mut self, cap: Duration) -> Self {
        self.poll_cap = cap.max(Duration::from_millis(1));
        self
    }

    /// How many times this follower has looked for new events (each look is one query of the
    /// store when nothing is buffered): what it costs the store while nothing is written.
    #[must_use]
    pub fn looks(&self) -> u64 {
        self.looks
    }

    /// The next matching event, waiting for it to be committed if need be. Returns
    /// [`Error::Closed`] once the store is closed (and every later call does too).
    ///
    /// An error reading the store (a server restarting, say) is returned as is and moves
    /// nothing: call `next` again to resume from the same event. That call first pauses (5 ms
    /// doubling up to the poll cap while the errors last), so a retry loop does not spin.
    ///
    /// # Cancel safety
    /// Dropping the future loses nothing: the position moves only when an event is returned.
    pub async fn next(&mut self) -> Result<Event> {
        if self.failed {
            tokio::time::sleep(self.next_pause()).await;
        }
        loop {
            // Mark the wake-ups seen before looking, so a commit after the look still wakes us.
            if let Some(commits) = &mut self.commits {
                commits.changes.borrow_and_update();
            }
            if self.cursor.buffered() == 0 {
                self.looks += 1;
            }
            match self.cursor.next_looking().await {
                Ok(Some(event)) => {
                    self.poll = FIRST_POLL;
                    self.failed = false;
                    return Ok(event);
                }
                Ok(None) => self.failed = false,
                Err(e) => {
                    self.failed = !matches!(e, Error::Closed);
                    return Err(e);
                }
            }
            self.wait().await;
        }
    }

    /// The current poll interval; doubles the next one, up to the cap.
    fn next_pause(&mut self) -> Duration {
        let pause = self.poll.min(self.poll_cap);
        self.poll = (self.poll * 2).min(self.poll_cap);
        pause
    }

    /// Waits for a wake-up, or also for the poll timer when the wake-ups may miss commits.
    async fn wait(&mut self) {
        let complete = match &self.commits {
            Some(commits) => commits.complete(),
            None => return tokio::time::sleep(self.next_pause()).await,
        };
        let pause = if complete {
            self.poll = FIRST_POLL;
            None
        } else {
            Some(self.next_pause())
        };
        let Some(Wakeups { changes, .. }) = &mut self.commits else { return };
        let changed = match pause {
            None => Some(changes.changed().await),
            Some(pause) => tokio::select! {
                changed = changes.changed() => Some(changed),
                () = tokio::time::sleep(pause) => None,
            },
        };
        match changed {
            // The sender is gone: the store is closed (the next look says so), or whoever woke
            // us stopped; poll from now on.
            Some(Err(_)) => self.commits = None,
            Some(Ok(())) => self.poll = FIRST_POLL,
            None => {}
        }
    }

    /// The follower as a [`Stream`]: events, then one `Err(Closed)` when the store closes.
    pub fn into_stream(self) -> impl Stream<Item = Result<Event>> + Send {
        futures_util::stream::unfold(Some(self), |follower| async move {
            let mut follower = follower?;
            match follower.next().await {
                Ok(event) => Some((Ok(event), Some(follower))),
                Err(e @ Error::Closed) => Some((Err(e), None)),
                Err(e) => Some((Err(e), Some(follower))),
            }
        })
    }
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower")
            .field("cursor", &self.cursor)
            .field("wakes_on_commits", &self.commits.as_ref().map(Wakeups::complete))
            .field("poll", &self.poll)
            .field("poll_cap", &self.poll_cap)
            .field("failed", &self.failed)
            .field("looks", &self.looks)
            .finish()
    }
}
