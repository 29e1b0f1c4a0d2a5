//! [`RedbStore`]: one open application store.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::RwLock;
use redb::ReadableDatabase;
use tracing::Span;
use vellum_core::provider::WriteQueue;
use vellum_core::provider::observe;
use vellum_core::{
    AggregateMetaData, AggregateRepository, Batch, DataStore, Error, EventCursor, EventPageSource,
    EventQuery, EventRepository, OffsetRepository, PageFuture, PersistResult, Persister, ProcessInstance,
    ProcessRepository, QueueMessage, QueueRepository, Result,
};

use crate::PROVIDER;
use crate::file::{OpenFile, OrStorage, guarded};
use crate::tables::Reader;

/// An open store of one application in a [`RedbProvider`](crate::RedbProvider).
///
/// Writes go to the store's writer thread (group commit); reads run on redb read transactions
/// (MVCC snapshots) in the calling task. After [`close`](DataStore::close), or when the store is
/// dropped, the file is closed and its lock released; cursors keep no handle on it.
#[derive(Debug)]
pub struct RedbStore {
    shared: Arc<Shared>,
    /// The queue to the store's writer thread.
    writes: WriteQueue,
}

/// What the store and its event cursors share.
#[derive(Debug)]
struct Shared {
    app_key: String,
    path: PathBuf,
    /// The open file; `None` once closed. Reads hold the read lock for their (short, blocking)
    /// duration, so `close` taking it away waits for them and never pulls a file from under one.
    file: RwLock<Option<Arc<OpenFile>>>,
    /// The writer's commit wake-ups, for followers.
    commits: vellum_core::Wakeups,
}

impl Shared {
    /// Runs `f` on a fresh read transaction inside a `vellum.query` span named `query`, or
    /// returns `Closed`.
    fn read<T>(&self, query: &'static str, f: impl FnOnce(&Reader<'_>) -> Result<T>) -> Result<T> {
        observe::query_span(PROVIDER, &self.app_key, query).in_scope(|| self.read_untraced(f))
    }

    /// Runs `f` on a fresh read transaction, or returns `Closed`.
    fn read_untraced<T>(&self, f: impl FnOnce(&Reader<'_>) -> Result<T>) -> Result<T> {
        let guard = self.file.read();
        let file = guard.as_ref().ok_or(Error::Closed)?;
        guarded(&file.path, || {
            let txn = file.db.begin_read().or_storage(&file.path)?;
            f(&Reader { txn: &txn, file: &file.path, codec: file.codec() })
        })
    }
}

impl RedbStore {
    pub(crate) fn new(app_key: String, file: Arc<OpenFile>, writes: WriteQueue) -> Self {
        let path = file.path.clone();
        let commits = writes.commits();
        Self { shared: Arc::new(Shared { app_key, path, file: RwLock::new(Some(file)), commits }), writes }
    }

    /// The path of the redb file holding this application's data.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// How many durable write transactions this store has committed since it was opened. With
    /// concurrent writers it is lower than the number of batches: that is group commit at work.
    /// 0 once closed.
    #[must_use]
    pub fn write_transactions(&self) -> u64 {
        self.shared.file.read().as_ref().map_or(0, |f| f.commits.load(Ordering::Relaxed))
    }

    /// Runs `f` on a fresh read transaction inside `span` (a bulk read has its own span), or
    /// returns `Closed`.
    pub(crate) fn read_in<T>(&self, span: &Span, f: impl FnOnce(&Reader<'_>) -> Result<T>) -> Result<T> {
        span.in_scope(|| self.shared.read_untraced(f))
    }

    /// Runs `f` on a fresh read transaction inside a `vellum.query` span, or returns `Closed`.
    pub(crate) fn read<T>(&self, query: &'static str, f: impl FnOnce(&Reader<'_>) -> Result<T>) -> Result<T> {
        self.shared.read(query, f)
    }

    /// Whether redb checked every page checksum when this store's file was opened.
    pub(crate) fn integrity_checked_at_open(&self) -> bool {
        self.shared.file.read().as_ref().is_some_and(|f| f.integrity_checked)
    }

    /// The queue to the writer (bulk import goes through it too).
    pub(crate) fn writes(&self) -> &WriteQueue {
        &self.writes
    }

    fn cursor(&self, query: EventQuery, min_offset: u64) -> Result<EventCursor> {
        if self.shared.file.read().is_none() {
            return Err(Error::Closed);
        }
        Ok(EventCursor::new(Arc::clone(&self.shared) as Arc<dyn EventPageSource>, query, min_offset))
    }
}

impl EventPageSource for Shared {
    fn load_page<'a>(&'a self, query: &'a EventQuery, from: u64, limit: usize) -> PageFuture<'a> {
        let name = query.span_name();
        Box::pin(async move { self.read(name, |r| r.events(query, from, limit)) })
    }

    fn is_closed(&self) -> bool {
        self.file.read().is_none()
    }

    fn commits(&self) -> Option<vellum_core::Wakeups> {
        Some(self.commits.clone())
    }
}

impl AggregateRepository for RedbStore {
    async fn load_aggregate_meta_data(
        &self,
        handler_key: &str,
        instance_id: &str,
    ) -> Result<AggregateMetaData> {
        self.shared.read("aggregate", |r| r.aggregate(handler_key, instance_id))
    }
}

impl ProcessRepository for RedbStore {
    async fn load_process_instance(&self, handler_key: &str, instance_id: &str) -> Result<ProcessInstance> {
        self.shared.read("process", |r| r.process(handler_key, instance_id))
    }
}

impl OffsetRepository for RedbStore {
    async fn load_offset(&self, application_key: &str) -> Result<u64> {
        self.shared.read("offset", |r| r.offset(application_key))
    }
}

impl QueueRepository for RedbStore {
    async fn load_queue_messages(&self, n: usize) -> Result<Vec<QueueMessage>> {
        self.shared.read("queue", |r| r.queue_head(n))
    }
}

impl EventRepository for RedbStore {
    async fn next_event_offset(&self) -> Result<u64> {
        // Not `Reader::next_event_offset`: that names one `Reader<'a>`, the closure any of them.
        #[allow(clippy::redundant_closure_for_method_calls)]
        self.shared.read("next_event_offset", |r| r.next_event_offset())
    }

    async fn load_all_events(&self, min_offset: u64) -> Result<EventCursor> {
        self.cursor(EventQuery::All, min_offset)
    }

    async fn load_events_by_type(&self, portable_names: &[&str], min_offset: u64) -> Result<EventCursor> {
        self.cursor(EventQuery::by_type(portable_names.iter().copied()), min_offset)
    }

    async fn load_events_by_source(&self, handler_key: &str, instance_id: &str) -> Result<EventCursor> {
        self.cursor(EventQuery::by_source(handler_key, instance_id), 0)
    }
}

impl Persister for RedbStore {
    async fn persist(&self, batch: Batch) -> Result<PersistResult> {
        self.writes.persist(batch).await
    }
}

impl DataStore for RedbStore {
    fn app_key(&self) -> &str {
        &self.shared.app_key
    }

    async fn close(&self) -> Result<()> {
        // Reads see `Closed` from here on; the writer drains the queue and lets go of its handle.
        // An open of this file in this process waits for that from now on (it no longer gets
        // `Locked`): the store admits no more work once its queue is closed, below.
        let file = self.shared.file.write().take();
        let closing = self.writes.close();
        if let Some(file) = &file {
            file.release_started();
        }
        closing.await?;
        match file.map(Arc::try_unwrap) {
            Some(Ok(file)) => {
                let path = file.path.clone();
                guarded(&path, || file.close())
            }
            // Still referenced (cannot happen once the writer has let go): dropping closes it.
            Some(Err(_)) | None => Ok(()),
        }
    }

    fn is_fenced(&self) -> bool {
        self.writes.is_fenced()
    }
}

impl Drop for RedbStore {
    /// A dropped store closes its file and releases its lock once the writer has drained its
    /// queue, as a closed one does. An open of the same file in this process meanwhile waits for
    /// that, instead of returning `Locked` (docs/close-and-cancellation.md#dropping-a-store).
    fn drop(&mut self) {
        if let Some(file) = self.shared.file.write().take() {
            file.release_started();
        }
    }
}
