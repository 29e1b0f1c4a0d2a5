//! Pages of a whole-log cursor fetched ahead of its consumer (docs/events.md#cursors).
//!
//! A whole-log query's offsets are dense, so after a full page the next pages' start offsets
//! are known: the cursor asks for [`DEPTH`] of them at once, each in a task of its own, and a
//! provider's reads (decoding, round trips to a server) overlap with each other and with the
//! consumer. A page fetched ahead is used only if it starts exactly where the consumer got to;
//! otherwise (the log ended in a short page, an error, a page size change) the fetches ahead
//! are dropped. Memory stays bounded: at most `DEPTH` pages beyond the one being handed out.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::cursor::{EventPageSource, EventQuery};
use crate::error::{Error, Result};
use crate::model::Event;

/// How many pages a whole-log cursor fetches ahead.
pub(crate) const DEPTH: usize = 2;

/// One page being fetched ahead: the events from `from` on, at most `limit`.
struct Page {
    from: u64,
    limit: usize,
    task: JoinHandle<Result<Vec<Event>>>,
}

/// The pages being fetched ahead, in offset order. Dropping it stops their fetches.
#[derive(Default)]
pub(crate) struct ReadAhead {
    pages: VecDeque<Page>,
}

impl ReadAhead {
    /// The page fetched ahead that starts at `from`, with its limit, once fetched; `None` (and
    /// every fetch ahead dropped) if there is none.
    ///
    /// # Cancel safety
    /// Dropped while it waits, the page stays queued and is waited for again next time.
    pub(crate) async fn take(&mut self, from: u64) -> Option<(Result<Vec<Event>>, usize)> {
        if self.pages.front().is_none_or(|page| page.from != from) {
            self.clear();
            return None;
        }
        let page = self.pages.front_mut()?;
        let fetched = (&mut page.task).await;
        let limit = page.limit;
        self.pages.pop_front();
        let fetched = fetched.unwrap_or_else(|e| Err(Error::storage("reading a page ahead", e)));
        if fetched.is_err() {
            self.clear();
        }
        Some((fetched, limit))
    }

    /// Starts fetching pages of `limit` events from `from` on (the offset after a full page)
    /// until [`DEPTH`] are under way. Needs a tokio runtime; without one nothing is fetched
    /// ahead.
    pub(crate) fn fill(
        &mut self,
        source: &Arc<dyn EventPageSource>,
        query: &EventQuery,
        from: u64,
        limit: usize,
    ) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let mut next = self.pages.back().map_or(from, |page| page.from.saturating_add(page.limit as u64));
        while self.pages.len() < DEPTH {
            let (source, query) = (Arc::clone(source), query.clone());
            let task = runtime.spawn(async move { source.load_page(&query, next, limit).await });
            self.pages.push_back(Page { from: next, limit, task });
            next = next.saturating_add(limit as u64);
        }
    }

    /// Stops every fetch ahead.
    pub(crate) fn clear(&mut self) {
        for page in self.pages.drain(..) {
            page.task.abort();
        }
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.clear();
    }
}
