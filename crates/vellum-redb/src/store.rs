//! [`RedbStore`]: one open application store.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::{Mutex, RwLock};
use redb::ReadableDatabase;
use tokio::sync::oneshot;
use tracing::{Instrument as _, Span};
use vellum_core::{
    AggregateMetaData, AggregateRepository, Batch, DataStore, Error, EventCursor, EventPageSource,
    EventQuery, EventRepository, OffsetRepository, PageFuture, PersistResult, Persister, ProcessInstance,
    ProcessRepository, QueueMessage, QueueRepository, Result, observe,
};

use crate::PROVIDER;
use crate::file::{OpenFile, OrStorage, guarded};
use crate::tables::Reader;
use crate::writer::{Msg, Request, Ticket, WriterHandle};

/// Cancels a still-queued batch when a `persist` future is dropped before its answer.
struct CancelOnDrop(Option<Arc<Ticket>>);

impl CancelOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(ticket) = self.0.take() {
            ticket.cancel();
        }
    }
}

/// An open store of one application in a [`RedbProvider`](crate::RedbProvider).
///
/// Writes go to the store's writer thread (group commit); reads run on redb read transactions
/// (MVCC snapshots) in the calling task. After [`close`](DataStore::close), or when the store is
/// dropped, the file is closed and its lock released; cursors keep no handle on it.
#[derive(Debug)]
pub struct RedbStore {
    shared: Arc<Shared>,
}

/// What the store and its event cursors share.
#[derive(Debug)]
struct Shared {
    app_key: String,
    path: PathBuf,
    /// The open file; `None` once closed. Reads hold the read lock for their (short, blocking)
    /// duration, so `close` taking it away waits for them and never pulls a file from under one.
    file: RwLock<Option<Arc<OpenFile>>>,
    /// The writer; `None` once closed.
    writer: Mutex<Option<WriterHandle>>,
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
            f(&Reader { txn: &txn, file: &file.path })
        })
    }

    /// Stops the writer and takes the file away; the caller decides whether to wait.
    fn shut(&self) -> Option<(WriterHandle, Option<Arc<OpenFile>>)> {
        let writer = self.writer.lock().take()?;
        let file = self.file.write().take();
        Some((writer, file))
    }
}

impl RedbStore {
    pub(crate) fn new(app_key: String, file: Arc<OpenFile>, writer: WriterHandle) -> Self {
        let path = file.path.clone();
        Self {
            shared: Arc::new(Shared {
                app_key,
                path,
                file: RwLock::new(Some(file)),
                writer: Mutex::new(Some(writer)),
            }),
        }
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

    /// Sends the request `make` builds to the writer thread and awaits its answer.
    ///
    /// If this future is dropped while the request is still queued, the request is cancelled
    /// (never applied); once the writer has taken it, it is applied whole or not at all (D10).
    pub(crate) async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T>>, Arc<Ticket>) -> Msg,
    ) -> Result<T> {
        let writer = self.writer()?;
        let (reply, outcome) = oneshot::channel();
        let ticket = Arc::new(Ticket::default());
        writer.send(make(reply, Arc::clone(&ticket))).map_err(|_| Error::Closed)?;
        drop(writer);
        let pending = CancelOnDrop(Some(ticket));
        // No answer means the writer stopped before taking the request: it was not applied.
        let outcome = outcome.await.unwrap_or(Err(Error::Closed));
        pending.disarm();
        outcome
    }

    /// The writer's handle, or `Closed`.
    fn writer(&self) -> Result<WriterHandle> {
        self.shared.writer.lock().clone().ok_or(Error::Closed)
    }

    /// [`Persister::persist`] without its span.
    async fn persist_untraced(&self, batch: Batch) -> Result<PersistResult> {
        batch.validate()?;
        if batch.is_empty() {
            // Nothing to write, but a closed store still says so.
            return self.writer().map(|_| PersistResult::default());
        }
        self.call(|reply, ticket| Msg::Persist(Request { batch, reply, ticket })).await
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
        let name = match query {
            EventQuery::ByType(_) => "events_by_type",
            EventQuery::BySource { .. } => "events_by_source",
        };
        Box::pin(async move { self.read(name, |r| r.events(query, from, limit)) })
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

    async fn load_events_by_type(&self, portable_names: &[&str], min_offset: u64) -> Result<EventCursor> {
        self.cursor(EventQuery::by_type(portable_names.iter().copied()), min_offset)
    }

    async fn load_events_by_source(&self, handler_key: &str, instance_id: &str) -> Result<EventCursor> {
        self.cursor(EventQuery::by_source(handler_key, instance_id), 0)
    }
}

impl Persister for RedbStore {
    async fn persist(&self, batch: Batch) -> Result<PersistResult> {
        let span = observe::persist_span(PROVIDER, &self.shared.app_key, batch.len());
        let outcome = self.persist_untraced(batch).instrument(span.clone()).await;
        observe::record(&span, outcome)
    }
}

impl DataStore for RedbStore {
    fn app_key(&self) -> &str {
        &self.shared.app_key
    }

    async fn close(&self) -> Result<()> {
        let (writer, file) = self.shared.shut().ok_or(Error::Closed)?;
        let (ack, stopped) = oneshot::channel();
        // The writer finishes the group in flight, drops its handle on the file, then answers.
        let _ = writer.send(Msg::Stop(ack));
        drop(writer);
        let _ = stopped.await;
        match file.map(Arc::try_unwrap) {
            Some(Ok(file)) => {
                let path = file.path.clone();
                guarded(&path, || file.close())
            }
            // Still referenced (cannot happen once the writer has answered): dropping closes it.
            Some(Err(_)) | None => Ok(()),
        }
    }
}

impl Drop for RedbStore {
    /// A dropped store closes its file and releases its lock, as a closed one does (the writer
    /// finishes its group in flight first).
    fn drop(&mut self) {
        if let Some((writer, file)) = self.shared.shut() {
            let (ack, _) = oneshot::channel();
            let _ = writer.send(Msg::Stop(ack));
            drop(file);
        }
    }
}
