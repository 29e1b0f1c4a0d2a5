//! The reads of a SQLite store ([`SqliteReads`]) and its read connections.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params};
use vellum_core::time::Micros;
use vellum_core::{
    AggregateMetaData, Error, Event, EventQuery, ExportFrom, Packet, ProcessInstance, QueueMessage, Record,
    Result, StoreStats,
};

use super::PROVIDER;
use crate::schema::from_db;
use crate::store::{Dialect, Sealed};
use crate::sums::{QueueRow, Rows};
use crate::verify::{RawRow, VerifyPage};
use vellum_core::verify::{Checker, Index};

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

/// The reads of one SQLite store: inline, on the store's read connections.
#[derive(Debug)]
pub struct SqliteReads {
    pub(crate) app_key: Arc<str>,
    pub(crate) readers: Readers,
    /// Tells the lock registry the store is letting go of its lock once it is closed or dropped
    /// (`None`: a reader, which holds no lock).
    pub(crate) release: Option<super::lock::Release>,
}

impl SqliteReads {
    /// Runs a read on a read connection; `what` describes it in errors.
    ///
    /// Reads run inline: they are indexed point lookups or one bounded page, which take
    /// microseconds, and WAL readers never wait for the writer; a blocking-thread hop would cost
    /// more than the read itself.
    pub(super) fn with<T>(
        &self,
        what: &str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        self.readers
            .with(f)
            .map_err(|e| Error::storage(format!("sqlite: {what} for application {:?}", self.app_key), e))
    }

    pub(super) fn app_key(&self) -> &str {
        &self.app_key
    }

    /// The checker of this store's rows.
    pub(super) fn rows(&self) -> Rows<'_> {
        Rows { provider: PROVIDER, app_key: &self.app_key }
    }
}

impl Sealed for SqliteReads {}

impl Dialect for SqliteReads {
    const PROVIDER: &'static str = PROVIDER;

    fn app_key(&self) -> &str {
        &self.app_key
    }

    async fn aggregate(&self, handler_key: &str, instance_id: &str) -> Result<AggregateMetaData> {
        let row: Option<(i64, String, i64)> = self.with("loading aggregate meta-data", |conn| {
            conn.prepare_cached(
                "SELECT revision, last_event_id, checksum FROM vellum_aggregate \
                 WHERE app_key = ?1 AND handler_key = ?2 AND instance_id = ?3",
            )?
            .query_row(params![&*self.app_key, handler_key, instance_id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
        })?;
        let mut meta = AggregateMetaData::new(handler_key, instance_id);
        if let Some((revision, last_event_id, sum)) = row {
            self.rows().aggregate(handler_key, instance_id, revision, &last_event_id, sum)?;
            meta.revision = from_db(revision);
            meta.last_event_id = last_event_id;
        }
        Ok(meta)
    }

    async fn process(&self, handler_key: &str, instance_id: &str) -> Result<ProcessInstance> {
        let row: Option<(i64, String, Vec<u8>, i64)> = self.with("loading a process instance", |conn| {
            conn.prepare_cached(
                "SELECT revision, media_type, data, checksum FROM vellum_process \
                 WHERE app_key = ?1 AND handler_key = ?2 AND instance_id = ?3",
            )?
            .query_row(params![&*self.app_key, handler_key, instance_id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()
        })?;
        let mut instance = ProcessInstance::new(handler_key, instance_id);
        if let Some((revision, media_type, data, sum)) = row {
            self.rows().process(handler_key, instance_id, revision, &media_type, &data, sum)?;
            instance.revision = from_db(revision);
            instance.packet = Packet { media_type, data };
        }
        Ok(instance)
    }

    async fn offset(&self, application_key: &str) -> Result<u64> {
        let row: Option<(i64, i64)> = self.with("loading a consumer offset", |conn| {
            conn.prepare_cached(
                "SELECT next_offset, checksum FROM vellum_offset WHERE app_key = ?1 AND source_app_key = ?2",
            )?
            .query_row(params![&*self.app_key, application_key], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
        })?;
        let Some((offset, sum)) = row else { return Ok(0) };
        self.rows().offset(application_key, offset, sum)?;
        Ok(from_db(offset))
    }

    async fn queue_head(&self, n: usize) -> Result<Vec<QueueMessage>> {
        type Raw = (i64, i64, i64, Vec<u8>, i64, String, i64, i64);
        let limit = i64::try_from(n).unwrap_or(i64::MAX);
        let rows: Vec<Raw> = self.with("loading queue messages", |conn| {
            conn.prepare_cached(
                "SELECT revision, failure_count, next_attempt_at, envelope, sequence, message_id, \
                 envelope_checksum, state_checksum FROM vellum_queue \
                 WHERE app_key = ?1 ORDER BY next_attempt_at, sequence, message_id LIMIT ?2",
            )?
            .query_map(params![&*self.app_key, limit], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?))
            })?
            .collect()
        })?;
        rows.into_iter()
            .map(|(revision, failure_count, at, bytes, sequence, message_id, envelope_sum, state_sum)| {
                let envelope = self.rows().queue(&QueueRow {
                    message_id: &message_id,
                    revision,
                    failure_count,
                    next_attempt_at: at,
                    sequence,
                    envelope: &bytes,
                    envelope_sum,
                    state_sum,
                })?;
                Ok(QueueMessage {
                    revision: from_db(revision),
                    failure_count: from_db(failure_count),
                    next_attempt_at: Micros(at).to_system_time(),
                    envelope,
                })
            })
            .collect()
    }

    async fn next_event_offset(&self) -> Result<u64> {
        let row: Option<(i64, i64, i64)> = self.with("loading the next event offset", |conn| {
            conn.prepare_cached(
                "SELECT next_offset, next_sequence, checksum FROM vellum_app WHERE app_key = ?1",
            )?
            .query_row([&*self.app_key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()
        })?;
        let Some((offset, sequence, sum)) = row else { return Ok(0) };
        self.rows().counters(offset, sequence, sum)?;
        Ok(from_db(offset))
    }

    async fn events(&self, query: &EventQuery, from: u64, limit: usize) -> Result<Vec<Event>> {
        let (source, names) = match query {
            EventQuery::All => return crate::store::all_events(self, from, limit).await,
            EventQuery::BySource { handler_key, instance_id } => (Some((handler_key, instance_id)), &[][..]),
            EventQuery::ByType(names) => (None, names.as_slice()),
        };
        let from = i64::try_from(from).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<(i64, Vec<u8>, i64)> = self.with("loading a page of events", |conn| {
            let pair = |r: &Row<'_>| Ok((r.get(0)?, r.get(1)?, r.get(2)?));
            if let Some((handler_key, instance_id)) = source {
                return conn
                    .prepare_cached(
                        "SELECT event_offset, envelope, checksum FROM vellum_event \
                         WHERE app_key = ?1 AND handler_key = ?2 AND instance_id = ?3 \
                         AND event_offset >= ?4 ORDER BY event_offset LIMIT ?5",
                    )?
                    .query_map(params![&*self.app_key, handler_key, instance_id, from, limit], pair)?
                    .collect();
            }
            // One indexed range per name, each in offset order and at most `limit` long, merged:
            // the cost follows the page size, not the log's length. One read transaction, so
            // every name sees the same snapshot.
            let tx = conn.unchecked_transaction()?;
            let mut stmt = tx.prepare_cached(
                "SELECT event_offset, envelope, checksum FROM vellum_event \
                 WHERE app_key = ?1 AND portable_name = ?2 AND event_offset >= ?3 \
                 ORDER BY event_offset LIMIT ?4",
            )?;
            let mut all = Vec::new();
            for name in names {
                for row in stmt.query_map(params![&*self.app_key, name, from, limit], pair)? {
                    all.push(row?);
                }
            }
            drop(stmt);
            tx.commit()?;
            if names.len() > 1 {
                all.sort_unstable_by_key(|&(offset, _, _)| offset);
                all.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            }
            Ok(all)
        })?;
        let mut previous = None;
        rows.into_iter()
            .map(|(offset, bytes, sum)| {
                if previous.is_some_and(|p| p >= offset) {
                    return Err(self.rows().corrupt(
                        "vellum_event",
                        &format_args!("event at offset {offset}"),
                        "appears twice or out of order in an index range",
                    ));
                }
                previous = Some(offset);
                self.rows().event(offset, &bytes, sum, Some(query))
            })
            .collect()
    }

    async fn stats(&self) -> Result<StoreStats> {
        self.counts()
    }

    async fn export(&self, from: ExportFrom, limit: usize) -> Result<Vec<Record>> {
        self.export_rows(from, limit)
    }

    fn close(&self) {
        self.readers.clear();
        // The store admits no more work: an open of its key in this process now waits for the
        // writer to drain the queue and release the lock, instead of failing with `Locked`.
        if let Some(release) = &self.release {
            release.start();
        }
    }

    fn verify_indexes(&self) -> Vec<Index> {
        super::verify::INDEXES.to_vec()
    }

    async fn verify_page(&self, page: VerifyPage) -> Result<Vec<RawRow>> {
        self.raw_page(&page)
    }

    async fn verify_counters(&self) -> Result<Option<(i64, i64, i64)>> {
        self.raw_counters()
    }

    async fn engine_check(&self, checker: &mut Checker) -> Result<()> {
        self.check_engine(checker)
    }
}
