//! [`SqliteStore`]: one open application store, its reads and its read connections.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};
use vellum_core::time::Micros;
use vellum_core::{
    AggregateMetaData, AggregateRepository, Batch, DataStore, Envelope, Error, Event, EventCursor,
    EventPageSource, EventQuery, EventRepository, OffsetRepository, Packet, PageFuture, PersistResult,
    Persister, ProcessInstance, ProcessRepository, QueueMessage, QueueRepository, Result, observe,
};

use super::PROVIDER;
use crate::schema::from_db;
use vellum_core::commit::WriteQueue;

/// Where a store's reads run.
#[derive(Debug)]
pub(crate) enum Readers {
    /// Read-only connections of the store's own, opened on demand and kept for reuse.
    Pool {
        /// The database file.
        path: PathBuf,
        /// Idle connections.
        idle: Mutex<Vec<Connection>>,
        /// How many idle connections are kept.
        max_idle: usize,
        /// The busy timeout of each connection.
        busy_timeout: Duration,
    },
    /// The caller's connection, shared with the writer.
    Shared(Arc<Mutex<Connection>>),
}

/// Opens a read connection: read-write flags (so it can use the WAL index) with `query_only`.
pub(crate) fn open_reader(path: &Path, busy_timeout: Duration) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.busy_timeout(busy_timeout)?;
    conn.pragma_update(None, "query_only", true)?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

impl Readers {
    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> rusqlite::Result<T> {
        match self {
            Self::Pool { path, idle, max_idle, busy_timeout } => {
                let pooled = idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
                let conn = match pooled {
                    Some(conn) => conn,
                    None => open_reader(path, *busy_timeout)?,
                };
                let result = f(&conn);
                let mut idle = idle.lock().unwrap_or_else(PoisonError::into_inner);
                if idle.len() < *max_idle {
                    idle.push(conn);
                }
                result
            }
            Self::Shared(conn) => f(&conn.lock().unwrap_or_else(PoisonError::into_inner)),
        }
    }

    fn clear(&self) {
        if let Self::Pool { idle, .. } = self {
            idle.lock().unwrap_or_else(PoisonError::into_inner).clear();
        }
    }
}

/// What the store and its event cursors share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) app_key: Arc<str>,
    pub(crate) closed: AtomicBool,
    pub(crate) readers: Readers,
}

impl Shared {
    /// Runs a read on a read connection, unless the store is closed.
    ///
    /// Reads run inline: they are indexed point lookups or one bounded page, which take
    /// microseconds, and WAL readers never wait for the writer; a blocking-thread hop would cost
    /// more than the read itself.
    ///
    /// `query` names the read in its `vellum.query` span; `what` describes it in errors.
    pub(super) fn read<T>(
        &self,
        query: &'static str,
        what: &str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let _span = observe::query_span(PROVIDER, &self.app_key, query).entered();
        self.readers
            .with(f)
            .map_err(|e| Error::storage(format!("sqlite: {what} for application {:?}", self.app_key), e))
    }
}

pub(super) fn decode(app_key: &str, what: &str, bytes: &[u8]) -> Result<Envelope> {
    Envelope::from_bytes(bytes)
        .map_err(|e| Error::storage(format!("sqlite: decoding {what} of application {app_key:?}"), e))
}

impl EventPageSource for Shared {
    fn load_page<'a>(&'a self, query: &'a EventQuery, from: u64, limit: usize) -> PageFuture<'a> {
        Box::pin(async move {
            let from = i64::try_from(from).unwrap_or(i64::MAX);
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let name = match query {
                EventQuery::ByType(_) => "events_by_type",
                EventQuery::BySource { .. } => "events_by_source",
            };
            let rows: Vec<(i64, Vec<u8>)> = self.read(name, "loading a page of events", |conn| {
                let pair = |r: &Row<'_>| Ok((r.get(0)?, r.get(1)?));
                match query {
                    EventQuery::BySource { handler_key, instance_id } => conn
                        .prepare_cached(
                            "SELECT event_offset, envelope FROM vellum_event \
                             WHERE app_key = ?1 AND handler_key = ?2 AND instance_id = ?3 \
                             AND event_offset >= ?4 ORDER BY event_offset LIMIT ?5",
                        )?
                        .query_map(params![&*self.app_key, handler_key, instance_id, from, limit], pair)?
                        .collect(),
                    EventQuery::ByType(names) => {
                        // One indexed range per name, each in offset order and at most `limit`
                        // long, merged: the cost follows the page size, not the log's length.
                        // One read transaction, so every name sees the same snapshot.
                        let tx = conn.unchecked_transaction()?;
                        let mut stmt = tx.prepare_cached(
                            "SELECT event_offset, envelope FROM vellum_event \
                             WHERE app_key = ?1 AND portable_name = ?2 AND event_offset >= ?3 \
                             ORDER BY event_offset LIMIT ?4",
                        )?;
                        let mut all = Vec::new();
                        for name in names {
                            let rows = stmt.query_map(params![&*self.app_key, name, from, limit], pair)?;
                            for row in rows {
                                all.push(row?);
                            }
                        }
                        drop(stmt);
                        tx.commit()?;
                        if names.len() > 1 {
                            all.sort_unstable_by_key(|&(offset, _)| offset);
                            all.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
                        }
                        Ok(all)
                    }
                }
            })?;
            rows.into_iter()
                .map(|(offset, bytes)| {
                    Ok(Event {
                        offset: from_db(offset),
                        envelope: decode(&self.app_key, "an event", &bytes)?,
                    })
                })
                .collect()
        })
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// An open store of one application in a SQLite database.
///
/// Writes go through the store's group-commit writer; reads run on the store's read
/// connections. Dropping the store without closing it releases the lock once queued batches
/// have committed.
#[derive(Debug)]
pub struct SqliteStore {
    pub(crate) shared: Arc<Shared>,
    /// The queue to the store's writer, which holds the store's lock.
    pub(crate) writes: WriteQueue,
}

impl SqliteStore {
    fn cursor(&self, query: EventQuery, min_offset: u64) -> Result<EventCursor> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(EventCursor::new(Arc::clone(&self.shared) as Arc<dyn EventPageSource>, query, min_offset))
    }
}

impl AggregateRepository for SqliteStore {
    async fn load_aggregate_meta_data(
        &self,
        handler_key: &str,
        instance_id: &str,
    ) -> Result<AggregateMetaData> {
        let row: Option<(i64, String)> =
            self.shared.read("aggregate", "loading aggregate meta-data", |conn| {
                conn.prepare_cached(
                    "SELECT revision, last_event_id FROM vellum_aggregate \
                 WHERE app_key = ?1 AND handler_key = ?2 AND instance_id = ?3",
                )?
                .query_row(params![&*self.shared.app_key, handler_key, instance_id], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()
            })?;
        let mut meta = AggregateMetaData::new(handler_key, instance_id);
        if let Some((revision, last_event_id)) = row {
            meta.revision = from_db(revision);
            meta.last_event_id = last_event_id;
        }
        Ok(meta)
    }
}

impl ProcessRepository for SqliteStore {
    async fn load_process_instance(&self, handler_key: &str, instance_id: &str) -> Result<ProcessInstance> {
        let row: Option<(i64, String, Vec<u8>)> =
            self.shared.read("process", "loading a process instance", |conn| {
                conn.prepare_cached(
                    "SELECT revision, media_type, data FROM vellum_process \
                 WHERE app_key = ?1 AND handler_key = ?2 AND instance_id = ?3",
                )?
                .query_row(params![&*self.shared.app_key, handler_key, instance_id], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()
            })?;
        let mut instance = ProcessInstance::new(handler_key, instance_id);
        if let Some((revision, media_type, data)) = row {
            instance.revision = from_db(revision);
            instance.packet = Packet { media_type, data };
        }
        Ok(instance)
    }
}

impl OffsetRepository for SqliteStore {
    async fn load_offset(&self, application_key: &str) -> Result<u64> {
        let offset: Option<i64> = self.shared.read("offset", "loading a consumer offset", |conn| {
            conn.prepare_cached(
                "SELECT next_offset FROM vellum_offset WHERE app_key = ?1 AND source_app_key = ?2",
            )?
            .query_row(params![&*self.shared.app_key, application_key], |r| r.get(0))
            .optional()
        })?;
        Ok(offset.map_or(0, from_db))
    }
}

impl QueueRepository for SqliteStore {
    async fn load_queue_messages(&self, n: usize) -> Result<Vec<QueueMessage>> {
        if n == 0 {
            // Still report a closed store.
            return self.shared.read("queue", "loading queue messages", |_| Ok(Vec::new()));
        }
        let limit = i64::try_from(n).unwrap_or(i64::MAX);
        let rows: Vec<(i64, i64, i64, Vec<u8>)> =
            self.shared.read("queue", "loading queue messages", |conn| {
                conn.prepare_cached(
                    "SELECT revision, failure_count, next_attempt_at, envelope FROM vellum_queue \
                 WHERE app_key = ?1 ORDER BY next_attempt_at, sequence, message_id LIMIT ?2",
                )?
                .query_map(params![&*self.shared.app_key, limit], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?
                .collect()
            })?;
        rows.into_iter()
            .map(|(revision, failure_count, at, bytes)| {
                Ok(QueueMessage {
                    revision: from_db(revision),
                    failure_count: from_db(failure_count),
                    next_attempt_at: Micros(at).to_system_time(),
                    envelope: decode(&self.shared.app_key, "a queue message", &bytes)?,
                })
            })
            .collect()
    }
}

impl EventRepository for SqliteStore {
    async fn next_event_offset(&self) -> Result<u64> {
        let offset: Option<i64> =
            self.shared.read("next_event_offset", "loading the next event offset", |conn| {
                conn.prepare_cached("SELECT next_offset FROM vellum_app WHERE app_key = ?1")?
                    .query_row([&*self.shared.app_key], |r| r.get(0))
                    .optional()
            })?;
        Ok(offset.map_or(0, from_db))
    }

    async fn load_events_by_type(&self, portable_names: &[&str], min_offset: u64) -> Result<EventCursor> {
        self.cursor(EventQuery::by_type(portable_names.iter().copied()), min_offset)
    }

    async fn load_events_by_source(&self, handler_key: &str, instance_id: &str) -> Result<EventCursor> {
        self.cursor(EventQuery::by_source(handler_key, instance_id), 0)
    }
}

impl Persister for SqliteStore {
    async fn persist(&self, batch: Batch) -> Result<PersistResult> {
        self.writes.persist(batch).await
    }
}

impl DataStore for SqliteStore {
    fn app_key(&self) -> &str {
        &self.shared.app_key
    }

    async fn close(&self) -> Result<()> {
        // Reads see `Closed` from here on; the writer drains the queue and releases the lock.
        let closing = self.writes.close();
        self.shared.closed.store(true, Ordering::Release);
        self.shared.readers.clear();
        closing.await
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.readers.clear();
    }
}
