//! [`MemoryStore`]: one open application store.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{RwLockReadGuard, RwLockWriteGuard};
use vellum_core::provider::observe;
use vellum_core::provider::{Planned, plan_group};
use vellum_core::{
    AggregateMetaData, AggregateRepository, Batch, DataStore, Error, EventCursor, EventPageSource,
    EventQuery, EventRepository, OffsetRepository, PageFuture, PersistResult, Persister, ProcessInstance,
    ProcessRepository, QueueMessage, QueueRepository, Result,
};

use crate::AppDb;
use crate::database::Database;

/// An open store of one application in a [`MemoryProvider`](crate::MemoryProvider).
#[derive(Debug)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

/// What a store or reader and its event cursors share: the application's data and whether this
/// handle was closed.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) app_key: String,
    pub(crate) db: Arc<AppDb>,
    pub(crate) closed: AtomicBool,
}

impl Shared {
    pub(crate) fn new(app_key: String, db: Arc<AppDb>) -> Self {
        Self { app_key, db, closed: AtomicBool::new(false) }
    }

    /// A cursor over `query` from `min_offset`, or `Closed`.
    pub(crate) fn cursor(self: &Arc<Self>, query: EventQuery, min_offset: u64) -> Result<EventCursor> {
        drop(self.read()?);
        Ok(EventCursor::new(Arc::clone(self) as Arc<dyn EventPageSource>, query, min_offset))
    }

    pub(crate) fn read(&self) -> Result<RwLockReadGuard<'_, Database>> {
        let guard = self.db.data.read();
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(guard)
    }

    fn write(&self) -> Result<RwLockWriteGuard<'_, Database>> {
        let guard = self.db.data.write();
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(guard)
    }
}

impl MemoryStore {
    pub(crate) fn new(app_key: String, db: Arc<AppDb>) -> Self {
        Self { shared: Arc::new(Shared::new(app_key, db)) }
    }

    pub(crate) fn read(&self) -> Result<RwLockReadGuard<'_, Database>> {
        self.shared.read()
    }

    pub(crate) fn write(&self) -> Result<RwLockWriteGuard<'_, Database>> {
        self.shared.write()
    }

    fn query(&self, query: &'static str) -> tracing::Span {
        observe::query_span("memory", &self.shared.app_key, query)
    }

    fn cursor(&self, query: EventQuery, min_offset: u64) -> Result<EventCursor> {
        self.shared.cursor(query, min_offset)
    }
}

impl EventPageSource for Shared {
    fn load_page<'a>(&'a self, query: &'a EventQuery, from: u64, limit: usize) -> PageFuture<'a> {
        Box::pin(async move { Ok(self.read()?.events.page(query, from, limit)) })
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn commits(&self) -> Option<vellum_core::Wakeups> {
        // No other process can write to memory: the wake-ups report every commit.
        Some(vellum_core::Wakeups::every_commit(self.db.commits.subscribe()))
    }
}

impl AggregateRepository for MemoryStore {
    async fn load_aggregate_meta_data(
        &self,
        handler_key: &str,
        instance_id: &str,
    ) -> Result<AggregateMetaData> {
        let _span = self.query("aggregate").entered();
        Ok(self.shared.read()?.aggregate(handler_key, instance_id))
    }
}

impl ProcessRepository for MemoryStore {
    async fn load_process_instance(&self, handler_key: &str, instance_id: &str) -> Result<ProcessInstance> {
        let _span = self.query("process").entered();
        Ok(self.shared.read()?.process(handler_key, instance_id))
    }
}

impl OffsetRepository for MemoryStore {
    async fn load_offset(&self, application_key: &str) -> Result<u64> {
        let _span = self.query("offset").entered();
        Ok(self.shared.read()?.offset(application_key))
    }
}

impl QueueRepository for MemoryStore {
    async fn load_queue_messages(&self, n: usize) -> Result<Vec<QueueMessage>> {
        let _span = self.query("queue").entered();
        Ok(self.shared.read()?.queue.head(n))
    }
}

impl EventRepository for MemoryStore {
    async fn next_event_offset(&self) -> Result<u64> {
        Ok(self.shared.read()?.events.next_offset())
    }

    async fn load_all_events(&self, min_offset: u64) -> Result<EventCursor> {
        let _span = self.query("events_all").entered();
        self.cursor(EventQuery::All, min_offset)
    }

    async fn load_events_by_type(&self, portable_names: &[&str], min_offset: u64) -> Result<EventCursor> {
        let _span = self.query("events_by_type").entered();
        self.cursor(EventQuery::by_type(portable_names.iter().copied()), min_offset)
    }

    async fn load_events_by_source(&self, handler_key: &str, instance_id: &str) -> Result<EventCursor> {
        let _span = self.query("events_by_source").entered();
        self.cursor(EventQuery::by_source(handler_key, instance_id), 0)
    }
}

impl Persister for MemoryStore {
    async fn persist(&self, batch: Batch) -> Result<PersistResult> {
        let span = observe::persist_span("memory", &self.shared.app_key, batch.len());
        let _entered = span.enter();
        let result = (|| {
            let mut db = self.shared.write()?;
            let counters = db.counters();
            let Planned { mut outcomes, plan } =
                plan_group(std::slice::from_ref(&batch), &mut *db, counters)?;
            db.apply(&plan);
            outcomes.pop().unwrap_or_else(|| Err(Error::storage("memory: planning a batch", "no outcome")))
        })();
        if result.is_ok() {
            self.shared.db.committed();
        }
        observe::record(&span, result)
    }
}

impl DataStore for MemoryStore {
    fn app_key(&self) -> &str {
        &self.shared.app_key
    }

    async fn close(&self) -> Result<()> {
        // Taking the write lock waits for an admitted persist, so close never splits a batch.
        let _db = self.shared.db.data.write();
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return Err(Error::Closed);
        }
        self.shared.db.open.store(false, Ordering::Release);
        // Followers wake up to find the store closed.
        self.shared.db.committed();
        Ok(())
    }
}

impl Drop for MemoryStore {
    /// A dropped store releases its lock, as a closed one does.
    fn drop(&mut self) {
        if !self.shared.closed.swap(true, Ordering::AcqRel) {
            self.shared.db.open.store(false, Ordering::Release);
            self.shared.db.committed();
        }
    }
}
