//! The reads of a PostgreSQL store ([`PostgresReads`]).

use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;
use vellum_core::time::Micros;
use vellum_core::{
    AggregateMetaData, Batch, Error, ErrorKind, Event, EventQuery, ExportFrom, Packet, ProcessInstance,
    QueueMessage, Record, Result, StoreStats,
};

use super::PROVIDER;
use super::sql::Sql;
use super::storage;
use crate::bulk::limit;
use crate::fields::stored_strings;
use crate::schema::from_db;
use crate::store::{Dialect, Sealed};
use crate::sums::{QueueRow, Rows};
use crate::verify::{RawRow, VerifyPage};

/// The reads of one PostgreSQL store: cached prepared statements on the provider's pool.
pub struct PostgresReads {
    pub(super) app_key: String,
    pub(super) pool: Pool,
    pub(super) sql: Arc<Sql>,
    /// The server process holding the store's lock (`pg_backend_pid()`).
    pub(super) backend_pid: i32,
    /// The advisory-lock key the store holds (a reader: the key of the application it reads).
    pub(super) lock_key: i64,
    /// A reader's `LISTEN` connection, which wakes its followers (`None` for a store, and for a
    /// reader of a caller's pool).
    pub(super) listener: Option<super::listen::Listener>,
}

impl std::fmt::Debug for PostgresReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresReads")
            .field("app_key", &self.app_key)
            .field("schema", &self.sql.schema)
            .finish_non_exhaustive()
    }
}

impl PostgresReads {
    fn fail(&self, doing: &str) -> impl Fn(tokio_postgres::Error) -> Error + '_ {
        let doing = doing.to_owned();
        move |e| storage(&self.app_key, &doing, e)
    }

    /// Runs one read on a pooled connection with a cached prepared statement.
    pub(super) async fn query(
        &self,
        doing: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>> {
        let client = self.pool.get().await.map_err(|e| storage(&self.app_key, doing, e))?;
        let statement = client.prepare_cached(sql).await.map_err(self.fail(doing))?;
        client.query(&statement, params).await.map_err(self.fail(doing))
    }

    async fn query_opt(&self, doing: &str, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>> {
        Ok(self.query(doing, sql, params).await?.into_iter().next())
    }

    pub(super) fn get<'r, T: tokio_postgres::types::FromSql<'r>>(
        &self,
        row: &'r Row,
        index: usize,
        doing: &str,
    ) -> Result<T> {
        row.try_get(index).map_err(|e| storage(&self.app_key, doing, e))
    }

    /// The checker of this store's rows.
    pub(super) fn rows(&self) -> Rows<'_> {
        Rows { provider: PROVIDER, app_key: &self.app_key }
    }

    /// The events of rows `(offset, envelope, checksum)`, checked; found through `query` when
    /// given, or a dense stretch of the log from offset `dense_from` otherwise.
    pub(super) fn events_of(
        &self,
        rows: &[Row],
        doing: &str,
        query: Option<&EventQuery>,
        dense_from: Option<i64>,
    ) -> Result<Vec<Event>> {
        let mut previous: Option<i64> = None;
        rows.iter()
            .map(|row| {
                let offset: i64 = self.get(row, 0, doing)?;
                let bytes: &[u8] = self.get(row, 1, doing)?;
                let sum: i64 = self.get(row, 2, doing)?;
                let expected = dense_from.map(|first| previous.map_or(first, |p| p + 1));
                if previous.is_some_and(|p| p >= offset) || expected.is_some_and(|e| e != offset) {
                    return Err(self.rows().corrupt(
                        "vellum_event",
                        &format_args!("event at offset {}", expected.unwrap_or(offset)),
                        format!("is missing or out of order (the row read has offset {offset})"),
                    ));
                }
                previous = Some(offset);
                self.rows().event(offset, bytes, sum, query)
            })
            .collect()
    }
}

impl Sealed for PostgresReads {}

impl Dialect for PostgresReads {
    const PROVIDER: &'static str = PROVIDER;

    fn app_key(&self) -> &str {
        &self.app_key
    }

    fn close(&self) {
        if let Some(listener) = &self.listener {
            listener.stop();
        }
    }

    async fn aggregate(&self, handler_key: &str, instance_id: &str) -> Result<AggregateMetaData> {
        let doing = "loading aggregate meta-data";
        let row = self
            .query_opt(doing, &self.sql.load_aggregate, &[&self.app_key, &handler_key, &instance_id])
            .await?;
        let mut meta = AggregateMetaData::new(handler_key, instance_id);
        if let Some(row) = row {
            let (revision, last_event_id): (i64, String) =
                (self.get(&row, 0, doing)?, self.get(&row, 1, doing)?);
            self.rows().aggregate(
                handler_key,
                instance_id,
                revision,
                &last_event_id,
                self.get(&row, 2, doing)?,
            )?;
            meta.revision = from_db(revision);
            meta.last_event_id = last_event_id;
        }
        Ok(meta)
    }

    async fn process(&self, handler_key: &str, instance_id: &str) -> Result<ProcessInstance> {
        let doing = "loading a process instance";
        let row = self
            .query_opt(doing, &self.sql.load_process, &[&self.app_key, &handler_key, &instance_id])
            .await?;
        let mut instance = ProcessInstance::new(handler_key, instance_id);
        if let Some(row) = row {
            let revision: i64 = self.get(&row, 0, doing)?;
            let (media_type, data): (String, Vec<u8>) =
                (self.get(&row, 1, doing)?, self.get(&row, 2, doing)?);
            let sum = self.get(&row, 3, doing)?;
            self.rows().process(handler_key, instance_id, revision, &media_type, &data, sum)?;
            instance.revision = from_db(revision);
            instance.packet = Packet::new(media_type, data);
        }
        Ok(instance)
    }

    async fn offset(&self, application_key: &str) -> Result<u64> {
        let doing = "loading a consumer offset";
        let row = self.query_opt(doing, &self.sql.load_offset, &[&self.app_key, &application_key]).await?;
        let Some(row) = row else { return Ok(0) };
        let next_offset: i64 = self.get(&row, 0, doing)?;
        self.rows().offset(application_key, next_offset, self.get(&row, 1, doing)?)?;
        Ok(from_db(next_offset))
    }

    async fn queue_head(&self, n: usize) -> Result<Vec<QueueMessage>> {
        let doing = "loading queue messages";
        let rows = self.query(doing, &self.sql.load_queue, &[&self.app_key, &limit(n)]).await?;
        rows.iter()
            .map(|row| {
                let q = QueueRow {
                    revision: self.get(row, 0, doing)?,
                    failure_count: self.get(row, 1, doing)?,
                    next_attempt_at: self.get(row, 2, doing)?,
                    envelope: self.get(row, 3, doing)?,
                    sequence: self.get(row, 4, doing)?,
                    message_id: self.get(row, 5, doing)?,
                    envelope_sum: self.get(row, 6, doing)?,
                    state_sum: self.get(row, 7, doing)?,
                };
                Ok(QueueMessage {
                    revision: from_db(q.revision),
                    failure_count: from_db(q.failure_count),
                    next_attempt_at: Micros(q.next_attempt_at).to_system_time(),
                    envelope: self.rows().queue(&q)?,
                })
            })
            .collect()
    }

    async fn next_event_offset(&self) -> Result<u64> {
        let doing = "loading the next event offset";
        let row = self.query_opt(doing, &self.sql.next_event_offset, &[&self.app_key]).await?;
        let Some(row) = row else { return Ok(0) };
        let (next_offset, next_sequence): (i64, i64) = (self.get(&row, 0, doing)?, self.get(&row, 1, doing)?);
        self.rows().counters(next_offset, next_sequence, self.get(&row, 2, doing)?)?;
        Ok(from_db(next_offset))
    }

    async fn events(&self, query: &EventQuery, start: u64, page: usize) -> Result<Vec<Event>> {
        // Offsets stay far below 2^63: a larger start matches nothing.
        let Ok(from) = i64::try_from(start) else { return Ok(Vec::new()) };
        let (app, n) = (self.app_key.as_str(), limit(page));
        let (doing, rows) = match query {
            EventQuery::All => return crate::store::all_events(self, start, page).await,
            EventQuery::ByType(names) => {
                let doing = "loading events by type";
                (doing, self.query(doing, &self.sql.page_by_type, &[&app, names, &from, &n]).await?)
            }
            EventQuery::BySource { handler_key, instance_id } => {
                let doing = "loading events by source";
                let params: [&(dyn ToSql + Sync); 5] = [&app, handler_key, instance_id, &from, &n];
                (doing, self.query(doing, &self.sql.page_by_source, &params).await?)
            }
        };
        self.events_of(&rows, doing, Some(query), None)
    }

    async fn stats(&self) -> Result<StoreStats> {
        self.counts().await
    }

    async fn export(&self, from: ExportFrom, limit: usize) -> Result<Vec<Record>> {
        self.export_rows(from, limit).await
    }

    async fn verify_page(&self, page: VerifyPage) -> Result<Vec<RawRow>> {
        self.raw_page(&page).await
    }

    async fn verify_counters(&self) -> Result<Option<(i64, i64, i64)>> {
        self.raw_counters().await
    }

    /// PostgreSQL text cannot hold a NUL character: such a batch is refused here, naming the
    /// field, rather than by the server with an error that names none.
    fn check(&self, batch: &Batch) -> Result<()> {
        batch.validate()?;
        for (index, op) in batch.iter().enumerate() {
            if let Some(field) = stored_strings(op).into_iter().find(|f| f.value.contains('\0')) {
                return Err(Error::storage_kind(
                    ErrorKind::InvalidInput,
                    format!("postgres: cannot store data of application {:?}", self.app_key),
                    format!(
                        "the {} of operation {index} ({}) contains a NUL character, which PostgreSQL \
                         text cannot hold",
                        field.name,
                        op.name()
                    ),
                ));
            }
        }
        Ok(())
    }
}
