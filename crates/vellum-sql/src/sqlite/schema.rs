//! The SQLite schema: DDL for the shared table layout (see [`crate::schema`]), and the version
//! check every open runs.
//!
//! Tables are `STRICT` (no silent type affinity) and every key column uses SQLite's default
//! `BINARY` collation, so keys compare byte for byte. Small keyed tables are `WITHOUT ROWID`;
//! tables holding envelopes or packets (events, queue, processes) keep a rowid, because SQLite
//! stores large rows inefficiently in a `WITHOUT ROWID` b-tree.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use vellum_core::{Error, ErrorKind, Result};

use crate::schema::{SCHEMA_VERSION, from_db};

/// Every table, in the order [`drop_schema`] drops them.
const TABLES: [&str; 7] = [
    "vellum_event",
    "vellum_queue",
    "vellum_aggregate",
    "vellum_process",
    "vellum_offset",
    "vellum_app",
    "vellum_schema",
];

const DDL: &str = "
CREATE TABLE IF NOT EXISTS vellum_schema (
    id      INTEGER PRIMARY KEY CHECK (id = 0),
    version INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS vellum_app (
    app_key       TEXT    NOT NULL PRIMARY KEY,
    next_offset   INTEGER NOT NULL,
    next_sequence INTEGER NOT NULL,
    checksum      INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS vellum_event (
    app_key       TEXT    NOT NULL,
    event_offset  INTEGER NOT NULL,
    message_id    TEXT    NOT NULL,
    portable_name TEXT    NOT NULL,
    handler_key   TEXT    NOT NULL,
    instance_id   TEXT    NOT NULL,
    envelope      BLOB    NOT NULL,
    checksum      INTEGER NOT NULL,
    UNIQUE (app_key, event_offset),
    UNIQUE (app_key, message_id)
) STRICT;
CREATE INDEX IF NOT EXISTS vellum_event_by_type
    ON vellum_event (app_key, portable_name, event_offset);
CREATE INDEX IF NOT EXISTS vellum_event_by_source
    ON vellum_event (app_key, handler_key, instance_id, event_offset);
CREATE TABLE IF NOT EXISTS vellum_aggregate (
    app_key       TEXT    NOT NULL,
    handler_key   TEXT    NOT NULL,
    instance_id   TEXT    NOT NULL,
    revision      INTEGER NOT NULL,
    last_event_id TEXT    NOT NULL,
    checksum      INTEGER NOT NULL,
    PRIMARY KEY (app_key, handler_key, instance_id)
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS vellum_process (
    app_key     TEXT    NOT NULL,
    handler_key TEXT    NOT NULL,
    instance_id TEXT    NOT NULL,
    revision    INTEGER NOT NULL,
    media_type  TEXT    NOT NULL,
    data        BLOB    NOT NULL,
    checksum    INTEGER NOT NULL,
    UNIQUE (app_key, handler_key, instance_id)
) STRICT;
CREATE TABLE IF NOT EXISTS vellum_queue (
    app_key             TEXT    NOT NULL,
    message_id          TEXT    NOT NULL,
    revision            INTEGER NOT NULL,
    failure_count       INTEGER NOT NULL,
    next_attempt_at     INTEGER NOT NULL,
    sequence            INTEGER NOT NULL,
    timeout_handler_key TEXT,
    timeout_instance_id TEXT,
    envelope            BLOB    NOT NULL,
    envelope_checksum   INTEGER NOT NULL,
    state_checksum      INTEGER NOT NULL,
    UNIQUE (app_key, message_id)
) STRICT;
CREATE INDEX IF NOT EXISTS vellum_queue_by_time
    ON vellum_queue (app_key, next_attempt_at, sequence, message_id);
CREATE INDEX IF NOT EXISTS vellum_queue_by_owner
    ON vellum_queue (app_key, timeout_handler_key, timeout_instance_id)
    WHERE timeout_handler_key IS NOT NULL;
CREATE TABLE IF NOT EXISTS vellum_offset (
    app_key        TEXT    NOT NULL,
    source_app_key TEXT    NOT NULL,
    next_offset    INTEGER NOT NULL,
    checksum       INTEGER NOT NULL,
    PRIMARY KEY (app_key, source_app_key)
) STRICT, WITHOUT ROWID;
";

fn storage(what: &str) -> impl FnOnce(rusqlite::Error) -> Error + '_ {
    move |e| Error::storage(format!("sqlite: {what}"), e)
}

/// The schema version stored in the database, or `None` when there is no vellum schema.
pub(crate) fn stored_version(conn: &Connection) -> Result<Option<i64>> {
    let what = "reading the vellum schema version";
    let exists: bool = conn
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'vellum_schema')",
            [],
            |row| row.get(0),
        )
        .map_err(storage(what))?;
    if !exists {
        return Ok(None);
    }
    conn.query_row("SELECT version FROM vellum_schema WHERE id = 0", [], |row| row.get(0))
        .optional()
        .map_err(storage(what))
}

/// Refuses a database whose schema is newer than this build's.
fn refuse_newer(version: i64) -> Result<()> {
    if version > SCHEMA_VERSION {
        return Err(Error::storage_kind(
            ErrorKind::Misconfigured,
            "sqlite: opening the vellum schema",
            format!(
                "the database is at vellum schema version {version}, newer than version \
                 {SCHEMA_VERSION} that this build supports; upgrade vellum"
            ),
        ));
    }
    Ok(())
}

/// Checks that the database holds a vellum schema this build can use.
pub(crate) fn check(conn: &Connection) -> Result<()> {
    match stored_version(conn)? {
        Some(version) => refuse_newer(version),
        None => Err(Error::storage_kind(
            ErrorKind::Misconfigured,
            "sqlite: opening the vellum schema",
            format!(
                "the database has no vellum schema (version {SCHEMA_VERSION} expected) and \
                 migration is turned off; call create_schema or enable SqliteOptions::migrate"
            ),
        )),
    }
}

/// Checks that the database holds this build's schema version, for a reader (which neither
/// creates nor upgrades a schema).
pub(crate) fn check_current(conn: &Connection) -> Result<()> {
    match stored_version(conn)? {
        Some(SCHEMA_VERSION) => Ok(()),
        Some(version) if version > SCHEMA_VERSION => refuse_newer(version),
        stored => Err(Error::storage_kind(
            ErrorKind::Misconfigured,
            "sqlite: opening a reader",
            format!(
                "the database {}, not version {SCHEMA_VERSION}: open the application's store once \
                 (which creates or upgrades the schema), then read it",
                stored.map_or_else(
                    || "has no vellum schema".to_owned(),
                    |v| format!("is at schema version {v}")
                )
            ),
        )),
    }
}

/// Creates the vellum tables and indexes if they do not exist and records the schema version.
///
/// Idempotent. Runs in one immediate transaction, so concurrent callers (other processes
/// opening the same file) serialise. A database at a newer schema version is refused.
pub fn create_schema(conn: &mut Connection) -> Result<()> {
    let what = "creating the vellum schema";
    // The common case, an up-to-date schema, needs no write lock.
    if stored_version(conn)? == Some(SCHEMA_VERSION) {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(storage(what))?;
    if let Some(version) = stored_version(&tx)? {
        refuse_newer(version)?;
        if version == SCHEMA_VERSION {
            return Ok(());
        }
        if version < 2 {
            add_checksums(&tx).map_err(storage("upgrading the vellum schema to version 2"))?;
        }
    }
    tx.execute_batch(DDL).map_err(storage(what))?;
    tx.execute(
        "INSERT INTO vellum_schema (id, version) VALUES (0, ?1) \
         ON CONFLICT (id) DO UPDATE SET version = excluded.version",
        [SCHEMA_VERSION],
    )
    .map_err(storage(what))?;
    tx.commit().map_err(storage(what))
}

/// Schema 1 to 2: adds the checksum columns and fills them from each row, in the caller's
/// transaction. Tables with a rowid are filled in rowid pages, so memory stays flat.
fn add_checksums(tx: &Connection) -> rusqlite::Result<()> {
    use crate::sums::write as sum;
    tx.execute_batch(
        "ALTER TABLE vellum_app ADD COLUMN checksum INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE vellum_event ADD COLUMN checksum INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE vellum_aggregate ADD COLUMN checksum INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE vellum_process ADD COLUMN checksum INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE vellum_queue ADD COLUMN envelope_checksum INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE vellum_queue ADD COLUMN state_checksum INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE vellum_offset ADD COLUMN checksum INTEGER NOT NULL DEFAULT 0;",
    )?;
    let apps: Vec<(String, i64, i64)> = tx
        .prepare("SELECT app_key, next_offset, next_sequence FROM vellum_app")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (app, offset, sequence) in apps {
        let value = sum::counters(&app, from_db(offset), from_db(sequence));
        tx.execute("UPDATE vellum_app SET checksum = ?2 WHERE app_key = ?1", params![app, value])?;
    }
    let aggregates: Vec<(String, String, String, i64, String)> = tx
        .prepare("SELECT app_key, handler_key, instance_id, revision, last_event_id FROM vellum_aggregate")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (app, h, i, revision, last) in aggregates {
        let value = sum::aggregate(&app, &h, &i, from_db(revision), &last);
        tx.execute(
            "UPDATE vellum_aggregate SET checksum = ?4 WHERE app_key = ?1 AND handler_key = ?2 AND instance_id = ?3",
            params![app, h, i, value],
        )?;
    }
    let offsets: Vec<(String, String, i64)> = tx
        .prepare("SELECT app_key, source_app_key, next_offset FROM vellum_offset")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (app, source, next) in offsets {
        let value = sum::offset(&app, &source, from_db(next));
        tx.execute(
            "UPDATE vellum_offset SET checksum = ?3 WHERE app_key = ?1 AND source_app_key = ?2",
            params![app, source, value],
        )?;
    }
    by_rowid(tx, "SELECT rowid, app_key, event_offset, envelope FROM vellum_event", |r| {
        let (app, offset, envelope): (String, i64, Vec<u8>) = (r.get(1)?, r.get(2)?, r.get(3)?);
        Ok((
            "UPDATE vellum_event SET checksum = ?2 WHERE rowid = ?1",
            vec![sum::event(&app, from_db(offset), &envelope)],
        ))
    })?;
    by_rowid(
        tx,
        "SELECT rowid, app_key, handler_key, instance_id, revision, media_type, data FROM vellum_process",
        |r| {
            let (app, h, i, revision, media_type, data): (String, String, String, i64, String, Vec<u8>) =
                (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?);
            let value = sum::process(&app, &h, &i, from_db(revision), &media_type, &data);
            Ok(("UPDATE vellum_process SET checksum = ?2 WHERE rowid = ?1", vec![value]))
        },
    )?;
    by_rowid(
        tx,
        "SELECT rowid, app_key, message_id, revision, failure_count, next_attempt_at, sequence, envelope \
         FROM vellum_queue",
        |r| {
            let (app, id, revision, failures, at, sequence, envelope): (
                String,
                String,
                i64,
                i64,
                i64,
                i64,
                Vec<u8>,
            ) = (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?);
            Ok((
                "UPDATE vellum_queue SET envelope_checksum = ?2, state_checksum = ?3 WHERE rowid = ?1",
                vec![
                    sum::queue_envelope(&app, &id, from_db(sequence), &envelope),
                    sum::queue_state(&app, &id, from_db(revision), from_db(failures), at),
                ],
            ))
        },
    )
}

/// Runs `select` (whose first column is the rowid) in pages of rowids and, for each row, the
/// update `f` returns with the rowid and the values it gives.
fn by_rowid(
    tx: &Connection,
    select: &str,
    mut f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<(&'static str, Vec<i64>)>,
) -> rusqlite::Result<()> {
    let page = format!("{select} WHERE rowid > ?1 ORDER BY rowid LIMIT 1000");
    let mut after = i64::MIN;
    loop {
        let updates: Vec<(i64, &'static str, Vec<i64>)> = tx
            .prepare(&page)?
            .query_map([after], |r| {
                let (sql, values) = f(r)?;
                Ok((r.get(0)?, sql, values))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let Some(&(last, _, _)) = updates.last() else { return Ok(()) };
        for (rowid, sql, values) in updates {
            let mut params: Vec<&dyn rusqlite::ToSql> = vec![&rowid];
            params.extend(values.iter().map(|v| v as &dyn rusqlite::ToSql));
            tx.execute(sql, params.as_slice())?;
        }
        after = last;
    }
}

/// Drops every vellum table (and so all data of every application in the file). Idempotent.
pub fn drop_schema(conn: &mut Connection) -> Result<()> {
    let what = "dropping the vellum schema";
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(storage(what))?;
    for table in TABLES {
        tx.execute_batch(&format!("DROP TABLE IF EXISTS {table}")).map_err(storage(what))?;
    }
    tx.commit().map_err(storage(what))
}
