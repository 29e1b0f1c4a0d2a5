//! [`MemoryReader`]: an application's event log, read beside its store.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::RwLockReadGuard;
use vellum_core::provider::observe;
use vellum_core::{
    Error, EventCursor, EventPageSource, EventQuery, EventReader, EventRepository, PageFuture, Result,
    Wakeups,
};

use crate::AppDb;
use crate::database::Database;

/// A reader of one application's event log in a [`MemoryProvider`](crate::MemoryProvider),
/// made by [`Provider::open_reader`](vellum_core::Provider::open_reader). It sees every commit
/// of the application's store as it happens.
#[derive(Debug)]
pub struct MemoryReader {
    shared: Arc<Shared>,
}

/// What the reader and its cursors share.
#[derive(Debug)]
struct Shared {
    app_key: String,
    db: Arc<AppDb>,
    closed: AtomicBool,
}

impl Shared {
    fn read(&self) -> Result<RwLockReadGuard<'_, Database>> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(self.db.data.read())
    }
}

impl MemoryReader {
    pub(crate) fn new(app_key: String, db: Arc<AppDb>) -> Self {
        Self { shared: Arc::new(Shared { app_key, db, closed: AtomicBool::new(false) }) }
    }

    fn cursor(&self, query: EventQuery, min_offset: u64) -> Result<EventCursor> {
        drop(self.shared.read()?);
        Ok(EventCursor::new(Arc::clone(&self.shared) as Arc<dyn EventPageSource>, query, min_offset))
    }
}

impl EventPageSource for Shared {
    fn load_page<'a>(&'a self, query: &'a EventQuery, from: u64, limit: usize) -> PageFuture<'a> {
        Box::pin(async move { Ok(self.read()?.events.page(query, from, limit)) })
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn commits(&self) -> Option<Wakeups> {
        Some(Wakeups::every_commit(self.db.commits.subscribe()))
    }
}

impl EventRepository for MemoryReader {
    async fn next_event_offset(&self) -> Result<u64> {
        Ok(self.shared.read()?.events.next_offset())
    }

    async fn load_all_events(&self, min_offset: u64) -> Result<EventCursor> {
        let _span = observe::query_span("memory", &self.shared.app_key, "events_all").entered();
        self.cursor(EventQuery::All, min_offset)
    }

    async fn load_events_by_type(&self, portable_names: &[&str], min_offset: u64) -> Result<EventCursor> {
        let _span = observe::query_span("memory", &self.shared.app_key, "events_by_type").entered();
        self.cursor(EventQuery::by_type(portable_names.iter().copied()), min_offset)
    }

    async fn load_events_by_source(&self, handler_key: &str, instance_id: &str) -> Result<EventCursor> {
        let _span = observe::query_span("memory", &self.shared.app_key, "events_by_source").entered();
        self.cursor(EventQuery::by_source(handler_key, instance_id), 0)
    }
}

impl EventReader for MemoryReader {
    async fn close(&self) -> Result<()> {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return Err(Error::Closed);
        }
        // Followers of this reader wake up to find it closed.
        self.shared.db.committed();
        Ok(())
    }
}

impl Drop for MemoryReader {
    fn drop(&mut self) {
        if !self.shared.closed.swap(true, Ordering::AcqRel) {
            self.shared.db.committed();
        }
    }
}
