//! [`Follower`]: an event query that does not end (docs/events.md#following-the-log).
//!
//! A follower is an [`EventCursor`] that, having handed out every stored match, waits for more
//! instead of returning `None`. It reads every page from storage, as a cursor does, so a slow
//! follower never makes the writer buffer anything for it; the writer's wake-ups carry no data.
//! It waits for whichever comes first: a wake-up from this process's commits (the store's
//! [`EventPageSource::commits`](crate::EventPageSource::commits)), or its poll timer, which
//! catches commits made by other processes: 5 ms after it last found nothing, doubling up to
//! the poll cap (default [`DEFAULT_POLL_CAP`]).

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
    commits: Option<watch::Receiver<u64>>,
    poll: Duration,
    poll_cap: Duration,
}

impl Follower {
    pub(crate) fn new(cursor: EventCursor, commits: Option<watch::Receiver<u64>>) -> Self {
        Self { cursor, commits, poll: FIRST_POLL, poll_cap: DEFAULT_POLL_CAP }
    }

    /// Sets the longest wait between two looks at the store when no wake-up comes (commits
    /// from other processes are seen within it). At least 1 ms.
    #[must_use]
    pub fn with_poll_cap(mut self, cap: Duration) -> Self {
        self.poll_cap = cap.max(Duration::from_millis(1));
        self
    }

    /// The next matching event, waiting for it to be committed if need be. Returns
    /// [`Error::Closed`] once the store is closed (and every later call does too).
    ///
    /// # Cancel safety
    /// Dropping the future loses nothing: the position moves only when an event is returned.
    pub async fn next(&mut self) -> Result<Event> {
        loop {
            // Mark the wake-ups seen before looking, so a commit after the look still wakes us.
            if let Some(commits) = &mut self.commits {
                commits.borrow_and_update();
            }
            if let Some(event) = self.cursor.next().await? {
                self.poll = FIRST_POLL;
                return Ok(event);
            }
            self.wait().await;
        }
    }

    /// Waits for a wake-up or the poll timer, whichever comes first.
    async fn wait(&mut self) {
        let pause = self.poll.min(self.poll_cap);
        self.poll = (self.poll * 2).min(self.poll_cap);
        match &mut self.commits {
            Some(commits) => {
                tokio::select! {
                    changed = commits.changed() => {
                        if changed.is_err() {
                            // The writer is gone: the store is closed; the next look says so.
                            self.commits = None;
                        } else {
                            self.poll = FIRST_POLL;
                        }
                    }
                    () = tokio::time::sleep(pause) => {}
                }
            }
            None => tokio::time::sleep(pause).await,
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
            .field("wakes_on_commits", &self.commits.is_some())
            .field("poll", &self.poll)
            .field("poll_cap", &self.poll_cap)
            .finish()
    }
}
