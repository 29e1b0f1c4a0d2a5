//! [`SqlStore`]: one open application store, written once for every dialect.
//!
//! The store owns what every dialect shares: the closed state, the `vellum.query` spans, the
//! event cursors, the queue to the writer (`vellum_core::commit`), `close` and `Drop`, and bulk
//! export/import. A [`Dialect`] supplies only the reads, in its own SQL and row mapping, and any
//! limit of its own that a batch must meet before it is queued. A dialect may also give the store
//! an [`ErrorMap`], which every error the store returns passes through (SQLite names the database
//! file in it).

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing::Instrument as _;
use vellum_core::provider::WriteQueue;
use vellum_core::provider::observe;
use vellum_core::verify::{Checker, Index, Report};

use crate::verify::{RawRow, VerifyPage};
use vellum_core::{
    AggregateMetaData, AggregateRepository, Batch, BulkStore, DataStore, Error, Event, EventCursor,
    EventPageSource, EventQuery, EventRepository, ExportFrom, OffsetRepository, PageFuture, PersistResult,
    Persister, ProcessInstance, ProcessRepository, QueueMessage, QueueRepository, Record, Result, StoreStats,
};

mod sealed {
    /// Only this crate's dialects implement [`Dialect`](super::Dialect).
    pub trait Sealed {}
}

pub(crate) use sealed::Sealed;

/// The reads of one SQL dialect for one application store. Implemented by this crate's
/// dialects only; a store is a [`SqlStore`] over one of them.
///
/// Every method reads committed state and may assume the store is open (the store checks).
pub trait Dialect: Sealed + Send + Sync + Sized + 'static {
    /// The provider's name in tracing spans.
    const PROVIDER: &'static str;

    /// The application key of the store.
    fn app_key(&self) -> &str;

    /// The stored meta-data, or a revision-0 value when none is stored.
    fn aggregate(
        &self,
        handler_key: &str,
        instance_id: &str,
    ) -> impl Future<Output = Result<AggregateMetaData>> + Send;

    /// The stored instance, or a revision-0 value when none is stored.
    fn process(
        &self,
        handler_key: &str,
        instance_id: &str,
    ) -> impl Future<Output = Result<ProcessInstance>> + Send;

    /// The stored consumer offset, 0 when none is stored.
    fn offset(&self, application_key: &str) -> impl Future<Output = Result<u64>> + Send;

    /// The first `n` (at least 1) queue messages in queue order.
    fn queue_head(&self, n: usize) -> impl Future<Output = Result<Vec<QueueMessage>>> + Send;

    /// The offset the next event gets.
    fn next_event_offset(&self) -> impl Future<Output = Result<u64>> + Send;

    /// Up to `limit` events of `query` from offset `from` on, in offset order.
    fn events(
        &self,
        query: &EventQuery,
        from: u64,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Event>>> + Send;

    /// Record counts.
    fn stats(&self) -> impl Future<Output = Result<StoreStats>> + Send;

    /// One export page (see [`BulkStore::export_page`]).
    fn export(&self, from: ExportFrom, limit: usize) -> impl Future<Output = Result<Vec<Record>>> + Send;

    /// Refuses a batch the dialect cannot store (before it is queued, so the writer's
    /// connection never sees it). Default: every batch is storable.
    fn check(&self, batch: &Batch) -> Result<()> {
        let _ = batch;
        Ok(())
    }

    /// Lets go of read resources when the store closes or is dropped. Default: nothing.
    fn close(&self) {}

    /// The indexes whose entries [`Dialect::engine_check`] feeds to verify. Default: none.
    fn verify_indexes(&self) -> Vec<Index> {
        Vec::new()
    }

    /// One page of raw rows for verify (`verify.rs`), at most `verify::PAGE` long.
    fn verify_page(&self, page: VerifyPage) -> impl Future<Output = Result<Vec<RawRow>>> + Send;

    /// The counter row for verify: next offset, next sequence, checksum.
    fn verify_counters(&self) -> impl Future<Output = Result<Option<(i64, i64, i64)>>> + Send;

    /// The engine's own check and the entries of [`Dialect::verify_indexes`], fed to `checker`.
    /// Default: nothing.
    fn engine_check(&self, checker: &mut Checker) -> impl Future<Output = Result<()>> + Send {
        let _ = checker;
        std::future::ready(Ok(()))
    }
}

/// Up to `limit` events from offset `from` on, whatever their type: how every dialect answers
/// [`EventQuery::All`], through its export of the event section (dense, checksums checked).
pub(crate) async fn all_events<D: Dialect>(dialect: &D, from: u64, limit: usize) -> Result<Vec<Event>> {
    let records = dialect.export(ExportFrom::Events(from), limit).await?;
    Ok(records.into_iter().filter_map(|r| if let Record::Event(e) = r { Some(e) } else { None }).collect())
}

/// An open store of one application in a SQL database ([`SqliteStore`](crate::sqlite::SqliteStore),
/// [`PostgresStore`](crate::postgres::PostgresStore), [`MysqlStore`](crate::mysql::MysqlStore)).
///
/// Writes go through the store's writer, which holds the application's lock; reads run on the
/// dialect's read connections. Dropping the store without closing it closes it: the writer
/// drains what was queued and releases the lock.
pub struct SqlStore<D: Dialect> {
    shared: Arc<Shared<D>>,
    writes: WriteQueue,
}

/// What a store does to each error it returns, reads, cursor pages and writes alike (for example,
/// adding the file it is about).
pub(crate) type ErrorMap = Box<dyn Fn(Error) -> Error + Send + Sync>;

/// What a store or reader and its event cursors share.
pub(crate) struct Shared<D> {
    pub(crate) closed: AtomicBool,
    pub(crate) dialect: D,
    errors: Option<ErrorMap>,
    /// Wake-ups for followers: the writer's commits for a store; for a reader whatever the
    /// dialect offers (`None`: followers poll).
    commits: Option<vellum_core::Wakeups>,
}

impl<D: Dialect> fmt::Debug for SqlStore<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlStore")
            .field("provider", &D::PROVIDER)
            .field("app_key", &self.shared.dialect.app_key())
            .finish_non_exhaustive()
    }
}

impl<D: Dialect> Shared<D> {
    pub(crate) fn new(dialect: D, errors: Option<ErrorMap>, commits: Option<vellum_core::Wakeups>) -> Self {
        Self { closed: AtomicBool::new(false), dialect, errors, commits }
    }

    /// A cursor over `query` from `min_offset`, or `Closed`.
    pub(crate) fn cursor(self: &Arc<Self>, query: EventQuery, min_offset: u64) -> Result<EventCursor> {
        self.check_open()?;
        Ok(EventCursor::new(Arc::clone(self) as Arc<dyn EventPageSource>, query, min_offset))
    }

    /// The offset the next event gets.
    pub(crate) async fn next_event_offset(&self) -> Result<u64> {
        self.read("next_event_offset", self.dialect.next_event_offset()).await
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) { Err(Error::Closed) } else { Ok(()) }
    }

    /// `result`, its error passed through the store's [`ErrorMap`].
    fn mapped<T>(&self, result: Result<T>) -> Result<T> {
        match (result, &self.errors) {
            (Err(e), Some(map)) => Err(map(e)),
            (result, _) => result,
        }
    }

    /// Runs one read in a `vellum.query` span named `query`; `Closed` if the store was closed
    /// before or while it ran (a read never outlives `close` with an answer).
    async fn read<T>(&self, query: &'static str, read: impl Future<Output = Result<T>>) -> Result<T> {
        self.check_open()?;
        let span = observe::query_span(D::PROVIDER, self.dialect.app_key(), query);
        let value = self.mapped(read.instrument(span).await)?;
        self.check_open()?;
        Ok(value)
    }
}

impl<D: Dialect> EventPageSource for Shared<D> {
    fn load_page<'a>(&'a self, query: &'a EventQuery, from: u64, limit: usize) -> PageFuture<'a> {
        let name = query.span_name();
        Box::pin(self.read(name, self.dialect.events(query, from, limit)))
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn commits(&self) -> Option<vellum_core::Wakeups> {
        self.commits.clone()
    }
}

impl<D: Dialect> SqlStore<D> {
    /// A store over `dialect`'s reads and the queue to its writer.
    pub(crate) fn new(dialect: D, writes: WriteQueue) -> Self {
        Self::with_errors(dialect, writes, None)
    }

    /// [`SqlStore::new`], with every error the store returns passed through `errors`.
    pub(crate) fn with_errors(dialect: D, writes: WriteQueue, errors: Option<ErrorMap>) -> Self {
        let commits = Some(writes.commits());
        Self { shared: Arc::new(Shared::new(dialect, errors, commits)), writes }
    }

    /// The dialect's reads (for its own accessors).
    pub(crate) fn dialect(&self) -> &D {
        &self.shared.dialect
    }
}

impl<D: Dialect> AggregateRepository for SqlStore<D> {
    async fn load_aggregate_meta_data(
        &self,
        handler_key: &str,
        instance_id: &str,
    ) -> Result<AggregateMetaData> {
        self.shared.read("aggregate", self.shared.dialect.aggregate(handler_key, instance_id)).await
    }
}

impl<D: Dialect> ProcessRepository for SqlStore<D> {
    async fn load_process_instance(&self, handler_key: &str, instance_id: &str) -> Result<ProcessInstance> {
        self.shared.read("process", self.shared.dialect.process(handler_key, instance_id)).await
    }
}

impl<D: Dialect> OffsetRepository for SqlStore<D> {
    async fn load_offset(&self, application_key: &str) -> Result<u64> {
        self.shared.read("offset", self.shared.dialect.offset(application_key)).await
    }
}

impl<D: Dialect> QueueRepository for SqlStore<D> {
    async fn load_queue_messages(&self, n: usize) -> Result<Vec<QueueMessage>> {
        if n == 0 {
            // Nothing to read, but a closed store still says so.
            return self.shared.check_open().map(|()| Vec::new());
        }
        self.shared.read("queue", self.shared.dialect.queue_head(n)).await
    }
}

impl<D: Dialect> EventRepository for SqlStore<D> {
    async fn next_event_offset(&self) -> Result<u64> {
        self.shared.next_event_offset().await
    }

    async fn load_all_events(&self, min_offset: u64) -> Result<EventCursor> {
        self.shared.cursor(EventQuery::All, min_offset)
    }

    async fn load_events_by_type(&self, portable_names: &[&str], min_offset: u64) -> Result<EventCursor> {
        self.shared.cursor(EventQuery::by_type(portable_names.iter().copied()), min_offset)
    }

    async fn load_events_by_source(&self, handler_key: &str, instance_id: &str) -> Result<EventCursor> {
        self.shared.cursor(EventQuery::by_source(handler_key, instance_id), 0)
    }
}

impl<D: Dialect> Persister for SqlStore<D> {
    async fn persist(&self, batch: Batch) -> Result<PersistResult> {
        if let Err(e) = self.shared.dialect.check(&batch) {
            let span = observe::persist_span(D::PROVIDER, self.shared.dialect.app_key(), batch.len());
            return observe::record(&span, Err(e));
        }
        self.shared.mapped(self.writes.persist(batch).await)
    }
}

impl<D: Dialect> DataStore for SqlStore<D> {
    fn app_key(&self) -> &str {
        self.shared.dialect.app_key()
    }

    async fn close(&self) -> Result<()> {
        // The queue closes at the first poll; reads and cursors see `Closed` from then on. The
        // writer drains the queue and releases the lock, even if this future is dropped.
        let closing = self.writes.close();
        self.shared.closed.store(true, Ordering::Release);
        self.shared.dialect.close();
        self.shared.mapped(closing.await)
    }

    fn is_fenced(&self) -> bool {
        self.writes.is_fenced()
    }
}

impl<D: Dialect> Drop for SqlStore<D> {
    /// A dropped store is closed: reads and cursors see `Closed`, and the writer drains the
    /// queue and releases the lock (the queue closes as it drops).
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.dialect.close();
    }
}

impl<D: Dialect> BulkStore for SqlStore<D> {
    async fn stats(&self) -> Result<StoreStats> {
        // The counts come from one statement that cannot check the counter row's checksum;
        // this read does, so damaged counters are an error here too (docs/integrity.md).
        self.shared.read("next_event_offset", self.shared.dialect.next_event_offset()).await?;
        self.shared.read("stats", self.shared.dialect.stats()).await
    }

    async fn export_page(&self, from: ExportFrom, limit: usize) -> Result<Vec<Record>> {
        self.shared.check_open()?;
        let span = observe::bulk_span(D::PROVIDER, self.shared.dialect.app_key(), false, limit);
        let page = self.shared.mapped(self.shared.dialect.export(from, limit).instrument(span).await)?;
        self.shared.check_open()?;
        Ok(page)
    }

    async fn import(&self, records: Vec<Record>) -> Result<()> {
        self.shared.mapped(self.writes.import(records).await)
    }

    async fn verify(&self, progress: &mut (dyn FnMut(u64) + Send)) -> Result<Report> {
        self.shared.check_open()?;
        let span = observe::bulk_span(D::PROVIDER, self.shared.dialect.app_key(), false, 0);
        let report = self
            .shared
            .mapped(crate::verify::verify(&self.shared.dialect, progress).instrument(span).await)?;
        self.shared.check_open()?;
        Ok(report)
    }
}
