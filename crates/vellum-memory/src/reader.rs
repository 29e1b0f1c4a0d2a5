//! [`MemoryReader`]: an application's event log, read beside its store.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use vellum_core::provider::observe;
use vellum_core::{Error, EventCursor, EventQuery, EventReader, EventRepository, Result};

use crate::AppDb;
use crate::store::Shared;

/// A reader of one application's event log in a [`MemoryProvider`](crate::MemoryProvider),
/// made by [`Provider::open_reader`](vellum_core::Provider::open_reader). It shares a store's
/// reads and sees every commit of the application's store as it happens.
#[derive(Debug)]
pub struct MemoryReader {
    shared: Arc<Shared>,
}

impl MemoryReader {
    pub(crate) fn new(app_key: String, db: Arc<AppDb>) -> Self {
        Self { shared: Arc::new(Shared::new(app_key, db)) }
    }

    fn query(&self, query: &'static str) -> tracing::Span {
        observe::query_span("memory", &self.shared.app_key, query)
    }
}

impl EventRepository for MemoryReader {
    async fn next_event_offset(&self) -> Result<u64> {
        Ok(self.shared.read()?.events.next_offset())
    }

    async fn load_all_events(&self, min_offset: u64) -> Result<EventCursor> {
        let _span = self.query("events_all").entered();
        self.shared.cursor(EventQuery::All, min_offset)
    }

    async fn load_events_by_type(&self, portable_names: &[&str], min_offset: u64) -> Result<EventCursor> {
        let _span = self.query("events_by_type").entered();
        self.shared.cursor(EventQuery::by_type(portable_names.iter().copied()), min_offset)
    }

    async fn load_events_by_source(&self, handler_key: &str, instance_id: &str) -> Result<EventCursor> {
        let _span = self.query("events_by_source").entered();
        self.shared.cursor(EventQuery::by_source(handler_key, instance_id), 0)
    }
}

impl EventReader for MemoryReader {
    /// Closes this reader only: the store, holding the application's lock, is not touched.
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
