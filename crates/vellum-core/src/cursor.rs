//! Event results: a cursor that pages through the log by offset (docs/events.md#cursors).
//!
//! The cursor holds no transaction or connection between calls: each page is a fresh query for
//! events at or after the next unread offset. So it never skips or repeats an event, dropping it
//! at any point releases everything, and it sees events committed after the load call.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures_core::Stream;

use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::model::Event;

/// Which events a result holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventQuery {
    /// Every event: the whole log in offset order.
    All,
    /// Events whose portable name is in the set (sorted, without duplicates).
    ByType(Vec<String>),
    /// Events produced by one handler instance (exact match; `""` is not a wildcard).
    BySource {
        /// The producing handler's key.
        handler_key: String,
        /// The producing instance's ID.
        instance_id: String,
    },
}

impl EventQuery {
    /// A by-type query over the given portable names.
    pub fn by_type<I, S>(portable_names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut names: Vec<String> = portable_names.into_iter().map(Into::into).collect();
        names.sort_unstable();
        names.dedup();
        Self::ByType(names)
    }

    /// A by-source query.
    pub fn by_source(handler_key: impl Into<String>, instance_id: impl Into<String>) -> Self {
        Self::BySource { handler_key: handler_key.into(), instance_id: instance_id.into() }
    }

    /// Whether an event with this envelope belongs to the result.
    #[must_use]
    pub fn matches(&self, envelope: &Envelope) -> bool {
        match self {
            Self::All => true,
            Self::ByType(names) => names.binary_search(&envelope.portable_name).is_ok(),
            Self::BySource { handler_key, instance_id } => {
                envelope.source_handler_key() == handler_key && envelope.source_instance_id == *instance_id
            }
        }
    }

    /// The name of the `vellum.query` span a page of this query is read in.
    #[must_use]
    pub fn span_name(&self) -> &'static str {
        match self {
            Self::All => "events_all",
            Self::ByType(_) => "events_by_type",
            Self::BySource { .. } => "events_by_source",
        }
    }

    /// Whether no event can match (an empty type filter).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        matches!(self, Self::ByType(names) if names.is_empty())
    }
}

/// A boxed future returned by [`EventPageSource::load_page`].
pub type PageFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<Event>>> + Send + 'a>>;

/// What a provider implements so that [`EventCursor`] can page through its log.
pub trait EventPageSource: Send + Sync {
    /// Up to `limit` events matching `query` with `offset >= from`, in ascending offset order.
    /// Must return [`Error::Closed`](crate::Error::Closed) once the store is closed.
    ///
    /// # Cancel safety
    /// Implementations must be cancel safe: a dropped page future changes nothing and releases
    /// whatever it held (connection, read transaction). [`EventCursor::next`] relies on it.
    fn load_page<'a>(&'a self, query: &'a EventQuery, from: u64, limit: usize) -> PageFuture<'a>;

    /// Whether the store was closed (or dropped): the cursor then returns
    /// [`Error::Closed`](crate::Error::Closed) even for events it still holds.
    fn is_closed(&self) -> bool;

    /// Wake-ups whenever new events may have been committed to the store (and when it closes):
    /// [`Follower`](crate::Follower)s wait on them instead of polling, or besides polling when
    /// they may miss commits. The default, `None`, leaves followers to poll.
    fn commits(&self) -> Option<crate::Wakeups> {
        None
    }
}

/// The default number of events fetched by a cursor's first page.
pub const DEFAULT_PAGE_SIZE: usize = 256;

/// The most events a cursor fetches per page: after each full page it doubles its page size up
/// to this, so a long read (a scan, a rebuild) makes few queries while a short one reads little.
/// A page of typical events (~300 bytes) is then about 1.2 MiB.
pub const MAX_PAGE_SIZE: usize = 1024;

/// The result of an event query: call [`EventCursor::next`] until it returns `None`.
pub struct EventCursor {
    source: Arc<dyn EventPageSource>,
    query: EventQuery,
    next_offset: u64,
    buffer: VecDeque<Event>,
    page_size: usize,
    /// Whether the page size doubles after each full page (until [`MAX_PAGE_SIZE`]).
    grow: bool,
    /// The last page was short: report the end once before querying again.
    at_end: bool,
    closed: bool,
    /// Pages of a whole-log query fetched ahead of the consumer.
    ahead: crate::read_ahead::ReadAhead,
}

impl EventCursor {
    /// A cursor over `query` starting at `min_offset`.
    pub fn new(source: Arc<dyn EventPageSource>, query: EventQuery, min_offset: u64) -> Self {
        Self {
            source,
            query,
            next_offset: min_offset,
            buffer: VecDeque::new(),
            page_size: DEFAULT_PAGE_SIZE,
            grow: true,
            at_end: false,
            closed: false,
            ahead: crate::read_ahead::ReadAhead::default(),
        }
    }

    /// Sets how many events each page fetches (at least 1), fixed. By default the first page
    /// fetches [`DEFAULT_PAGE_SIZE`] and each page after a full one twice as many, up to
    /// [`MAX_PAGE_SIZE`].
    #[must_use]
    pub fn with_page_size(mut self, page_size: usize) -> Self {
        self.page_size = page_size.max(1);
        self.grow = false;
        self
    }

    /// The query this cursor answers.
    #[must_use]
    pub fn query(&self) -> &EventQuery {
        &self.query
    }

    /// The next event, or `None` when every matching event committed so far has been returned.
    ///
    /// Calling again after `None` looks for events committed since.
    ///
    /// # Cancel safety
    /// Dropping the future part-way loses nothing: the cursor's position only moves when an
    /// event is handed out, and a page whose fetch was cut short is fetched again next time.
    pub async fn next(&mut self) -> Result<Option<Event>> {
        if self.closed {
            return Ok(None);
        }
        // A closed store hands out nothing, not even events already buffered
        // (`docs/events.md#cursors-and-closed-stores`).
        if self.source.is_closed() {
            return Err(Error::Closed);
        }
        if self.query.is_empty() {
            return Ok(None);
        }
        if self.buffer.is_empty() {
            if self.at_end {
                self.at_end = false;
                return Ok(None);
            }
            let (page, limit) = match self.ahead.take(self.next_offset).await {
                Some((page, limit)) => (page?, limit),
                None => (
                    self.source.load_page(&self.query, self.next_offset, self.page_size).await?,
                    self.page_size,
                ),
            };
            self.at_end = page.len() < limit;
            if !self.at_end {
                if self.grow {
                    self.page_size = (self.page_size * 2).min(MAX_PAGE_SIZE);
                }
                // The whole log is dense: the next pages start right after this one.
                if let (EventQuery::All, Some(last)) = (&self.query, page.last()) {
                    let from = last.offset.saturating_add(1);
                    self.ahead.fill(&self.source, &self.query, from, self.page_size);
                }
            }
            self.buffer.extend(page);
        }
        let Some(event) = self.buffer.pop_front() else {
            self.at_end = false;
            return Ok(None);
        };
        self.next_offset = event.offset.saturating_add(1);
        Ok(Some(event))
    }

    /// How many fetched events wait in the cursor's buffer.
    pub(crate) fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// The next event, querying the store whenever the buffer is empty: unlike [`next`](Self::next)
    /// it never reports the end of a drained short page without looking again, so a
    /// [`Follower`](crate::Follower) woken by a commit always sees it.
    pub(crate) async fn next_looking(&mut self) -> Result<Option<Event>> {
        if self.buffer.is_empty() {
            self.at_end = false;
        }
        self.next().await
    }

    /// Reads every remaining event into a vector.
    ///
    /// # Cancel safety
    /// Dropping the future drops the cursor and the events read so far; nothing in the store
    /// changes (it is a read). Use [`EventCursor::next`] to keep the position across a drop.
    pub async fn collect(mut self) -> Result<Vec<Event>> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await? {
            events.push(event);
        }
        Ok(events)
    }

    /// Releases the cursor's buffer; later calls to `next` return `None`. Closing twice is fine.
    pub fn close(&mut self) -> Result<()> {
        self.closed = true;
        self.buffer.clear();
        self.ahead.clear();
        Ok(())
    }

    /// The cursor as a [`Follower`](crate::Follower): it yields the stored events from the cursor's position and
    /// then waits for new ones instead of ending (docs/events.md#following-the-log).
    #[must_use]
    pub fn follow(self) -> crate::Follower {
        let commits = self.source.commits();
        crate::Follower::new(self, commits)
    }

    /// The cursor as a [`Stream`] of events.
    pub fn into_stream(self) -> impl Stream<Item = Result<Event>> + Send {
        futures_util::stream::unfold(Some(self), |cursor| async move {
            let mut cursor = cursor?;
            match cursor.next().await {
                Ok(Some(event)) => Some((Ok(event), Some(cursor))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        })
    }
}

impl std::fmt::Debug for EventCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventCursor")
            .field("query", &self.query)
            .field("next_offset", &self.next_offset)
            .field("buffered", &self.buffer.len())
            .finish_non_exhaustive()
    }
}
