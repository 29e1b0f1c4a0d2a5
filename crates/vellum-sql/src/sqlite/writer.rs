//! The store's executor for the commit engine ([`vellum_core::commit`]): one connection per
//! store, one `BEGIN IMMEDIATE` transaction per unit of work (a group of batches or an import),
//! run so that the async runtime never waits on SQLite or on `fsync` (`block_in_place` for a
//! lone batch on a multi-threaded runtime, otherwise a blocking thread).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use tokio::runtime::{Handle, RuntimeFlavor};
use vellum_core::provider::{Counters, Planned, QueueState, Snapshot, StateKeys, Write};
use vellum_core::provider::{Executor, Work};
use vellum_core::{Error, PersistResult, Result};

use crate::schema::{from_db, to_db};
use crate::sums::{Rows, write as sum};

use super::lock::{AppLock, FileId, fenced};

/// Runs a store's units of work on its writer connection.
#[derive(Debug)]
pub(crate) struct SqliteExecutor {
    pub(crate) app_key: Arc<str>,
    pub(crate) conn: Arc<Mutex<Connection>>,
    /// The store's lock and the check that it still guards the store: held until the queue is
    /// drained, released with the executor.
    pub(crate) guard: Arc<Guard>,
}

/// What makes the store the only writer of its application: its lock, and the database file
/// it writes. Checked before every unit of work (docs/locking.md#fencing).
#[derive(Debug)]
pub(crate) struct Guard {
    pub(crate) lock: AppLock,
    /// The canonical database path and the identity of the file the writer opened there
    /// (`None`: an in-memory database, nothing to check).
    pub(crate) database: Option<(PathBuf, Option<FileId>)>,
    pub(crate) app_key: Arc<str>,
    /// Why the store is fenced, once it is: it never writes again.
    pub(crate) fenced: Mutex<Option<String>>,
}

impl Guard {
    /// `Ok` while the lock guards the application and the database path still names the file
    /// the store writes: one `stat` each (microseconds). Otherwise an error of kind
    /// [`vellum_core::ErrorKind::Fenced`] naming the file, the application and the reason, and
    /// from then on for good; or a storage error if the check itself failed (nothing is written).
    pub(crate) fn check(&self) -> Result<()> {
        let Some((database, id)) = &self.database else { return Ok(()) };
        let mut fenced_for = self.fenced.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(reason) = fenced_for.as_deref() {
            return Err(fenced(database, &self.app_key, reason));
        }
        let lost = FileId::differs(*id, database)
            .map(|what| what.map(|what| format!("the database file {what} while the store had it open")))
            .and_then(|lost| match lost {
                Some(reason) => Ok(Some(reason)),
                None => self.lock.lost(),
            })
            .map_err(|e| {
                Error::storage(
                    format!(
                        "sqlite: checking that the store of application {:?} still holds its lock on \
                         database {}",
                        self.app_key,
                        database.display()
                    ),
                    e,
                )
            })?;
        match lost {
            None => Ok(()),
            Some(reason) => {
                let error = fenced(database, &self.app_key, &reason);
                *fenced_for = Some(reason);
                Err(error)
            }
        }
    }
}

impl Executor for SqliteExecutor {
    const PROVIDER: &'static str = super::PROVIDER;

    fn app_key(&self) -> &str {
        &self.app_key
    }

    async fn execute(&mut self, work: Work<'_>) -> Result<Vec<Result<PersistResult>>> {
        // A lone batch (usually committing on its caller's task, WriteQueue::spawn) runs where
        // it is polled; see below.
        let lone = matches!(work, Work::Persist(batches) if batches.len() == 1);
        let work = work.to_shared();
        let conn = Arc::clone(&self.conn);
        let app_key = Arc::clone(&self.app_key);
        let guard = Arc::clone(&self.guard);
        let run = move || {
            // Never write once the lock no longer guards the application.
            guard.check()?;
            // A panic inside a transaction rolled it back while unwinding (the `Transaction`
            // drops), so the connection is usable again.
            let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            transaction(&mut conn, &app_key, work.as_work())
        };
        // On a multi-threaded runtime a lone batch's transaction runs on the thread that polls
        // this, which hands its other tasks to another worker first: no thread hand-off there
        // and back, which costs a lone writer 20-30 µs per batch. Groups (many callers, so
        // many tasks to hand over) go to the blocking pool, which measured 7% faster at 16
        // writers; so does everything on a current-thread runtime, which has no other worker.
        if lone && Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread {
            return tokio::task::block_in_place(run);
        }
        let outcome = tokio::task::spawn_blocking(run).await.map_err(|e| {
            Error::storage(format!("sqlite: the writer task for application {:?} failed", self.app_key), e)
        });
        outcome.and_then(|o| o)
    }

    async fn release(self) {
        drop(self.guard);
    }
}

/// Runs one unit of work in one immediate transaction: read the state it looks at, plan,
/// write, commit.
pub(crate) fn transaction(
    conn: &mut Connection,
    app_key: &str,
    work: Work<'_>,
) -> Result<Vec<Result<PersistResult>>> {
    let err = |what: &'static str| {
        move |e: rusqlite::Error| Error::storage(format!("sqlite: {what} for application {app_key:?}"), e)
    };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err("beginning a write transaction"))?;
    let mut snapshot = read_snapshot(&tx, app_key, work.keys())?;
    let counters = snapshot.counters;
    let Planned { outcomes, plan } = work.plan(&mut snapshot, counters)?;
    if plan.is_empty() {
        // Nothing to write: the transaction rolls back when dropped, without a flush.
        return Ok(outcomes);
    }
    for write in &plan.writes {
        execute(&tx, app_key, write).map_err(err("writing"))?;
    }
    if plan.counters_changed() {
        store_counters(&tx, app_key, plan.after).map_err(err("storing the application counters"))?;
    }
    tx.commit().map_err(err("committing a write transaction"))?;
    Ok(outcomes)
}

/// Creates or updates the application's counter row.
pub(crate) fn store_counters(
    tx: &Transaction<'_>,
    app_key: &str,
    Counters { next_offset, next_sequence }: Counters,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO vellum_app (app_key, next_offset, next_sequence, checksum) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (app_key) DO UPDATE SET next_offset = excluded.next_offset, \
         next_sequence = excluded.next_sequence, checksum = excluded.checksum",
    )?
    .execute(params![
        app_key,
        to_db(next_offset),
        to_db(next_sequence),
        sum::counters(app_key, next_offset, next_sequence)
    ])
    .map(drop)
}

/// Reads the counter row and the rows of `keys` (what planning a unit of work looks at).
fn read_snapshot(tx: &Transaction<'_>, app_key: &str, keys: StateKeys) -> Result<Snapshot> {
    let err = |what: &'static str| {
        move |e: rusqlite::Error| {
            Error::storage(format!("sqlite: reading {what} for application {app_key:?}"), e)
        }
    };
    let mut snapshot = Snapshot::default();
    let counters = tx
        .prepare_cached("SELECT next_offset, next_sequence, checksum FROM vellum_app WHERE app_key = ?1")
        .and_then(|mut s| {
            s.query_row([app_key], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)))
                .optional()
        })
        .map_err(err("the application counters"))?;
    if let Some((offset, sequence, stored)) = counters {
        // Offsets and sequences are handed out from these: damage must stop the writer.
        Rows { provider: super::PROVIDER, app_key }.counters(offset, sequence, stored)?;
        snapshot.counters = Counters { next_offset: from_db(offset), next_sequence: from_db(sequence) };
    }

    if !keys.aggregates.is_empty() {
        let mut s = tx
            .prepare_cached(
                "SELECT revision FROM vellum_aggregate \
                 WHERE app_key = ?1 AND handler_key = ?2 AND instance_id = ?3",
            )
            .map_err(err("aggregate revisions"))?;
        for key in keys.aggregates {
            let revision: Option<i64> = s
                .query_row(params![app_key, key.0, key.1], |r| r.get(0))
                .optional()
                .map_err(err("aggregate revisions"))?;
            if let Some(revision) = revision {
                snapshot.aggregates.insert(key, from_db(revision));
            }
        }
    }
    if !keys.processes.is_empty() {
        let mut s = tx
            .prepare_cached(
                "SELECT revision FROM vellum_process \
                 WHERE app_key = ?1 AND handler_key = ?2 AND instance_id = ?3",
            )
            .map_err(err("process revisions"))?;
        for key in keys.processes {
            let revision: Option<i64> = s
                .query_row(params![app_key, key.0, key.1], |r| r.get(0))
                .optional()
                .map_err(err("process revisions"))?;
            if let Some(revision) = revision {
                snapshot.processes.insert(key, from_db(revision));
            }
        }
    }
    if !keys.queue.is_empty() {
        let mut s = tx
            .prepare_cached(
                "SELECT revision, timeout_handler_key, timeout_instance_id FROM vellum_queue \
                 WHERE app_key = ?1 AND message_id = ?2",
            )
            .map_err(err("queue revisions"))?;
        for id in keys.queue {
            let row: Option<(i64, Option<String>, Option<String>)> = s
                .query_row(params![app_key, id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
                .map_err(err("queue revisions"))?;
            if let Some((revision, handler_key, instance_id)) = row {
                let timeout_owner = handler_key.zip(instance_id);
                snapshot.queue.insert(id, QueueState { revision: from_db(revision), timeout_owner });
            }
        }
    }
    if !keys.offsets.is_empty() {
        let mut s = tx
            .prepare_cached(
                "SELECT next_offset FROM vellum_offset WHERE app_key = ?1 AND source_app_key = ?2",
            )
            .map_err(err("consumer offsets"))?;
        for source in keys.offsets {
            let offset: Option<i64> = s
                .query_row(params![app_key, source], |r| r.get(0))
                .optional()
                .map_err(err("consumer offsets"))?;
            if let Some(offset) = offset {
                snapshot.offsets.insert(source, from_db(offset));
            }
        }
    }
    if !keys.events.is_empty() {
        let mut s = tx
            .prepare_cached("SELECT 1 FROM vellum_event WHERE app_key = ?1 AND message_id = ?2")
            .map_err(err("event message IDs"))?;
        for id in keys.events {
            if s.exists(params![app_key, id]).map_err(err("event message IDs"))? {
                snapshot.events.insert(id);
            }
        }
    }
    Ok(snapshot)
}

/// Executes one planned write.
#[allow(clippy::too_many_lines)] // one statement per kind of write
fn execute(tx: &Transaction<'_>, app_key: &str, write: &Write<'_>) -> rusqlite::Result<()> {
    match *write {
        Write::AppendEvent { offset, envelope } => {
            let bytes = envelope.to_bytes();
            tx.prepare_cached(
                "INSERT INTO vellum_event \
                 (app_key, event_offset, message_id, portable_name, handler_key, instance_id, envelope, \
                  checksum) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                app_key,
                to_db(offset),
                envelope.message_id,
                envelope.portable_name,
                envelope.source_handler_key(),
                envelope.source_instance_id,
                bytes,
                sum::event(app_key, offset, &bytes),
            ])?;
        }
        Write::InsertQueue { message, revision, sequence, next_attempt_at } => {
            let (owner_key, owner_id) = Write::timeout_owner(message).unzip();
            let (id, bytes) = (message.id(), message.envelope.to_bytes());
            tx.prepare_cached(
                "INSERT INTO vellum_queue \
                 (app_key, message_id, revision, failure_count, next_attempt_at, sequence, \
                  timeout_handler_key, timeout_instance_id, envelope, envelope_checksum, state_checksum) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                app_key,
                id,
                to_db(revision),
                to_db(message.failure_count),
                next_attempt_at.0,
                to_db(sequence),
                owner_key,
                owner_id,
                bytes,
                sum::queue_envelope(app_key, id, sequence, &bytes),
                sum::queue_state(app_key, id, revision, message.failure_count, next_attempt_at.0),
            ])?;
        }
        Write::PutAggregate { meta, revision } => {
            tx.prepare_cached(
                "INSERT INTO vellum_aggregate \
                 (app_key, handler_key, instance_id, revision, last_event_id, checksum) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (app_key, handler_key, instance_id) \
                 DO UPDATE SET revision = excluded.revision, last_event_id = excluded.last_event_id, \
                 checksum = excluded.checksum",
            )?
            .execute(params![
                app_key,
                meta.handler_key,
                meta.instance_id,
                to_db(revision),
                meta.last_event_id,
                sum::aggregate(app_key, &meta.handler_key, &meta.instance_id, revision, &meta.last_event_id),
            ])?;
        }
        Write::PutProcess { instance, revision } => {
            tx.prepare_cached(
                "INSERT INTO vellum_process \
                 (app_key, handler_key, instance_id, revision, media_type, data, checksum) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (app_key, handler_key, instance_id) \
                 DO UPDATE SET revision = excluded.revision, media_type = excluded.media_type, \
                 data = excluded.data, checksum = excluded.checksum",
            )?
            .execute(params![
                app_key,
                instance.handler_key,
                instance.instance_id,
                to_db(revision),
                instance.packet.media_type,
                instance.packet.data,
                sum::process_instance(app_key, instance, revision),
            ])?;
        }
        Write::RemoveProcess { handler_key, instance_id } => {
            tx.prepare_cached(
                "DELETE FROM vellum_process WHERE app_key = ?1 AND handler_key = ?2 AND instance_id = ?3",
            )?
            .execute(params![app_key, handler_key, instance_id])?;
            tx.prepare_cached(
                "DELETE FROM vellum_queue WHERE app_key = ?1 AND timeout_handler_key = ?2 \
                 AND timeout_instance_id = ?3",
            )?
            .execute(params![app_key, handler_key, instance_id])?;
        }
        Write::UpdateQueue { message_id, revision, failure_count, next_attempt_at } => {
            tx.prepare_cached(
                "UPDATE vellum_queue SET revision = ?3, failure_count = ?4, next_attempt_at = ?5, \
                 state_checksum = ?6 WHERE app_key = ?1 AND message_id = ?2",
            )?
            .execute(params![
                app_key,
                message_id,
                to_db(revision),
                to_db(failure_count),
                next_attempt_at.0,
                sum::queue_state(app_key, message_id, revision, failure_count, next_attempt_at.0),
            ])?;
        }
        Write::RemoveQueue { message_id } => {
            tx.prepare_cached("DELETE FROM vellum_queue WHERE app_key = ?1 AND message_id = ?2")?
                .execute(params![app_key, message_id])?;
        }
        Write::PutOffset { application_key, next_offset } => {
            tx.prepare_cached(
                "INSERT INTO vellum_offset (app_key, source_app_key, next_offset, checksum) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (app_key, source_app_key) \
                 DO UPDATE SET next_offset = excluded.next_offset, checksum = excluded.checksum",
            )?
            .execute(params![
                app_key,
                application_key,
                to_db(next_offset),
                sum::offset(app_key, application_key, next_offset)
            ])?;
        }
    }
    Ok(())
}
