//! [`PostgresStore`]: one open application store.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use deadpool_postgres::Pool;

use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use tracing::Instrument as _;
use vellum_core::time::Micros;
use vellum_core::{
    AggregateMetaData, AggregateRepository, Batch, DataStore, Envelope, Error, Event, EventCursor,
    EventPageSource, EventQuery, EventRepository, OffsetRepository, Packet, PageFuture, PersistResult,
    Persister, ProcessInstance, ProcessRepository, QueueMessage, QueueRepository, Result, observe,
};

use super::PROVIDER;
use super::sql::Sql;
use super::storage;
use super::writer::PgWriter;
use crate::schema::from_db;
use vellum_core::commit::WriteQueue;

/// An open store of one application in a [`PostgresProvider`](super::PostgresProvider).
///
/// Holds the application's advisory lock on a dedicated connection until closed or dropped.
pub struct PostgresStore {
    shared: Arc<Shared>,
    /// The queue to the store's writer, which owns the lock connection.
    pub(super) writes: WriteQueue,
    backend_pid: i32,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("app_key", &self.shared.app_key)
            .field("schema", &self.shared.sql.schema)
            .finish_non_exhaustive()
    }
}

/// What the store and its event cursors share: everything reads need.
pub(super) struct Shared {
    pub(super) app_key: String,
    pool: Pool,
    pub(super) sql: Arc<Sql>,
    closed: AtomicBool,
}

impl Shared {
    pub(super) fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) { Err(Error::Closed) } else { Ok(()) }
    }

    fn fail(&self, doing: &str) -> impl Fn(tokio_postgres::Error) -> Error + '_ {
        let doing = doing.to_owned();
        move |e| storage(&self.app_key, &doing, e)
    }

    /// Runs one read on a pooled connection with a cached prepared statement, in a
    /// `vellum.query` span named `name`.
    pub(super) async fn query(
        &self,
        name: &'static str,
        doing: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>> {
        self.check_open()?;
        let span = observe::query_span(PROVIDER, &self.app_key, name);
        async {
            let client = self.pool.get().await.map_err(|e| storage(&self.app_key, doing, e))?;
            let statement = client.prepare_cached(sql).await.map_err(self.fail(doing))?;
            client.query(&statement, params).await.map_err(self.fail(doing))
        }
        .instrument(span)
        .await
    }

    async fn query_opt(
        &self,
        name: &'static str,
        doing: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>> {
        Ok(self.query(name, doing, sql, params).await?.into_iter().next())
    }

    pub(super) fn get<'r, T: tokio_postgres::types::FromSql<'r>>(
        &self,
        row: &'r Row,
        index: usize,
        doing: &str,
    ) -> Result<T> {
        row.try_get(index).map_err(|e| storage(&self.app_key, doing, e))
    }

    pub(super) fn envelope(&self, bytes: &[u8], doing: &str) -> Result<Envelope> {
        Envelope::from_bytes(bytes).map_err(|e| storage(&self.app_key, doing, e))
    }

    pub(super) fn events(&self, rows: &[Row], doing: &str) -> Result<Vec<Event>> {
        rows.iter()
            .map(|row| {
                let offset: i64 = self.get(row, 0, doing)?;
                let bytes: &[u8] = self.get(row, 1, doing)?;
                Ok(Event { offset: from_db(offset), envelope: self.envelope(bytes, doing)? })
            })
            .collect()
    }
}

use crate::bulk::limit;

impl EventPageSource for Shared {
    fn load_page<'a>(&'a self, query: &'a EventQuery, from: u64, n: usize) -> PageFuture<'a> {
        Box::pin(async move {
            self.check_open()?;
            // Offsets stay far below 2^63: a larger start matches nothing.
            let Ok(from) = i64::try_from(from) else { return Ok(Vec::new()) };
            let (app, n) = (self.app_key.as_str(), limit(n));
            match query {
                EventQuery::ByType(names) => {
                    let doing = "loading events by type";
                    let rows = self
                        .query("events_by_type", doing, &self.sql.page_by_type, &[&app, names, &from, &n])
                        .await?;
                    self.events(&rows, doing)
                }
                EventQuery::BySource { handler_key, instance_id } => {
                    let doing = "loading events by source";
                    let params: [&(dyn ToSql + Sync); 5] = [&app, handler_key, instance_id, &from, &n];
                    let rows =
                        self.query("events_by_source", doing, &self.sql.page_by_source, &params).await?;
                    self.events(&rows, doing)
                }
            }
        })
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

impl PostgresStore {
    pub(crate) fn new(
        app_key: String,
        pool: Pool,
        sql: Arc<Sql>,
        backend_pid: i32,
        executor: PgWriter,
    ) -> Self {
        let (writes, run_writer) = WriteQueue::new(executor);
        tokio::spawn(run_writer);
        Self {
            shared: Arc::new(Shared { app_key, pool, sql, closed: AtomicBool::new(false) }),
            writes,
            backend_pid,
        }
    }

    /// The process ID of the server session holding this store's lock (`pg_backend_pid()`).
    #[must_use]
    pub fn lock_backend_pid(&self) -> i32 {
        self.backend_pid
    }

    /// What the store and its cursors share.
    pub(super) fn shared(&self) -> &Shared {
        &self.shared
    }

    fn cursor(&self, query: EventQuery, min_offset: u64) -> Result<EventCursor> {
        self.shared.check_open()?;
        Ok(EventCursor::new(Arc::clone(&self.shared) as Arc<dyn EventPageSource>, query, min_offset))
    }
}

impl AggregateRepository for PostgresStore {
    async fn load_aggregate_meta_data(
        &self,
        handler_key: &str,
        instance_id: &str,
    ) -> Result<AggregateMetaData> {
        let s = &self.shared;
        let doing = "loading aggregate meta-data";
        let row = s
            .query_opt("aggregate", doing, &s.sql.load_aggregate, &[&s.app_key, &handler_key, &instance_id])
            .await?;
        let mut meta = AggregateMetaData::new(handler_key, instance_id);
        if let Some(row) = row {
            meta.revision = from_db(s.get(&row, 0, doing)?);
            meta.last_event_id = s.get(&row, 1, doing)?;
        }
        Ok(meta)
    }
}

impl ProcessRepository for PostgresStore {
    async fn load_process_instance(&self, handler_key: &str, instance_id: &str) -> Result<ProcessInstance> {
        let s = &self.shared;
        let doing = "loading a process instance";
        let row = s
            .query_opt("process", doing, &s.sql.load_process, &[&s.app_key, &handler_key, &instance_id])
            .await?;
        let mut instance = ProcessInstance::new(handler_key, instance_id);
        if let Some(row) = row {
            instance.revision = from_db(s.get(&row, 0, doing)?);
            instance.packet =
                Packet::new(s.get::<String>(&row, 1, doing)?, s.get::<Vec<u8>>(&row, 2, doing)?);
        }
        Ok(instance)
    }
}

impl OffsetRepository for PostgresStore {
    async fn load_offset(&self, application_key: &str) -> Result<u64> {
        let s = &self.shared;
        let doing = "loading a consumer offset";
        let row = s.query_opt("offset", doing, &s.sql.load_offset, &[&s.app_key, &application_key]).await?;
        row.map_or(Ok(0), |row| Ok(from_db(s.get(&row, 0, doing)?)))
    }
}

impl QueueRepository for PostgresStore {
    async fn load_queue_messages(&self, n: usize) -> Result<Vec<QueueMessage>> {
        let s = &self.shared;
        s.check_open()?;
        if n == 0 {
            return Ok(Vec::new());
        }
        let doing = "loading queue messages";
        let rows = s.query("queue", doing, &s.sql.load_queue, &[&s.app_key, &limit(n)]).await?;
        rows.iter()
            .map(|row| {
                let bytes: &[u8] = s.get(row, 3, doing)?;
                Ok(QueueMessage {
                    revision: from_db(s.get(row, 0, doing)?),
                    failure_count: from_db(s.get(row, 1, doing)?),
                    next_attempt_at: Micros(s.get(row, 2, doing)?).to_system_time(),
                    envelope: s.envelope(bytes, doing)?,
                })
            })
            .collect()
    }
}

impl EventRepository for PostgresStore {
    async fn next_event_offset(&self) -> Result<u64> {
        let s = &self.shared;
        let doing = "loading the next event offset";
        let row = s.query_opt("next_event_offset", doing, &s.sql.next_event_offset, &[&s.app_key]).await?;
        row.map_or(Ok(0), |row| Ok(from_db(s.get(&row, 0, doing)?)))
    }

    async fn load_events_by_type(&self, portable_names: &[&str], min_offset: u64) -> Result<EventCursor> {
        self.cursor(EventQuery::by_type(portable_names.iter().copied()), min_offset)
    }

    async fn load_events_by_source(&self, handler_key: &str, instance_id: &str) -> Result<EventCursor> {
        self.cursor(EventQuery::by_source(handler_key, instance_id), 0)
    }
}

impl Persister for PostgresStore {
    async fn persist(&self, batch: Batch) -> Result<PersistResult> {
        self.writes.persist(batch).await
    }
}

impl DataStore for PostgresStore {
    fn app_key(&self) -> &str {
        &self.shared.app_key
    }

    async fn close(&self) -> Result<()> {
        // Reads see `Closed` from here on; the writer drains the queue and releases the lock.
        let closing = self.writes.close();
        self.shared.closed.store(true, Ordering::Release);
        closing.await
    }
}
