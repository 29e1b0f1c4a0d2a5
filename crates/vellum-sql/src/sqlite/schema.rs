//! The SQLite schema: DDL for the shared table layout (see [`crate::schema`]), and the version
//! check every open runs.
//!
//! Tables are `STRICT` (no silent type affinity) and every key column uses SQLite's default
//! `BINARY` collation, so keys compare byte for byte. Small keyed tables are `WITHOUT ROWID`;
//! tables holding envelopes or packets (events, queue, processes) keep a rowid, because SQLite
//! stores large rows inefficiently in a `WITHOUT ROWID` b-tree.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use vellum_core::{Error, Result};

use crate::schema::SCHEMA_VERSION;

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
    next_sequence INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS vellum_event (
    app_key       TEXT    NOT NULL,
    event_offset  INTEGER NOT NULL,
    message_id    TEXT    NOT NULL,
    portable_name TEXT    NOT NULL,
    handler_key   TEXT    NOT NULL,
    instance_id   TEXT    NOT NULL,
    envelope      BLOB    NOT NULL,
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
    PRIMARY KEY (app_key, handler_key, instance_id)
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS vellum_process (
    app_key     TEXT    NOT NULL,
    handler_key TEXT    NOT NULL,
    instance_id TEXT    NOT NULL,
    revision    INTEGER NOT NULL,
    media_type  TEXT    NOT NULL,
    data        BLOB    NOT NULL,
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
        return Err(Error::storage(
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
        None => Err(Error::storage(
            "sqlite: opening the vellum schema",
            format!(
                "the database has no vellum schema (version {SCHEMA_VERSION} expected) and \
                 migration is turned off; call create_schema or enable SqliteOptions::migrate"
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

/// Drops every vellum table (and so all data of every application in the file). Idempotent.
pub fn drop_schema(conn: &mut Connection) -> Result<()> {
    let what = "dropping the vellum schema";
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(storage(what))?;
    for table in TABLES {
        tx.execute_batch(&format!("DROP TABLE IF EXISTS {table}")).map_err(storage(what))?;
    }
    tx.commit().map_err(storage(what))
}
