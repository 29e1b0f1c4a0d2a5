//! The MySQL/MariaDB schema: DDL, version check, [`create_schema`] and [`drop_schema`].
//!
//! Types: every key column is `VARBINARY(512)` (byte-exact: no collation, no case folding, no
//! PAD SPACE, so `"a"` and `"a "` are different keys); payloads (`envelope`, `data`,
//! `media_type`, `last_event_id`) are `LONGBLOB`; u64 values, offsets, sequences and queue
//! times (microseconds) are `BIGINT` (u64 bit-cast, see [`crate::schema`]). No `TIMESTAMP`
//! columns (2038 and session time zones, docs/queue.md#time-precision-and-range). Tables are
//! InnoDB with `ROW_FORMAT=DYNAMIC`, whose index keys may be 3072 bytes: the widest index,
//! `vellum_event.by_source (app_key, handler_key, instance_id, event_offset)`, takes
//! 3 × 514 + 8 bytes, which is why keys are capped at [`MAX_KEY_BYTES`] (checked before a batch
//! reaches the database, see `store.rs`).

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};
use vellum_core::{Error, Result};

use super::lock::lock_name;
use super::{MAX_KEY_BYTES, opt_bytes, opt_i64, storage};
use crate::schema::SCHEMA_VERSION;

/// The tables in creation order (dropped in reverse).
const TABLES: [&str; 7] = [
    "vellum_schema",
    "vellum_app",
    "vellum_event",
    "vellum_aggregate",
    "vellum_process",
    "vellum_queue",
    "vellum_offset",
];

fn ddl() -> Vec<String> {
    let key = format!("VARBINARY({MAX_KEY_BYTES})");
    let table = "ENGINE=InnoDB ROW_FORMAT=DYNAMIC";
    vec![
        format!("CREATE TABLE IF NOT EXISTS vellum_schema (version BIGINT NOT NULL PRIMARY KEY) {table}"),
        format!(
            "CREATE TABLE IF NOT EXISTS vellum_app (
                app_key {key} NOT NULL PRIMARY KEY,
                next_offset BIGINT NOT NULL,
                next_sequence BIGINT NOT NULL
            ) {table}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS vellum_event (
                app_key {key} NOT NULL,
                event_offset BIGINT NOT NULL,
                message_id {key} NOT NULL,
                portable_name {key} NOT NULL,
                handler_key {key} NOT NULL,
                instance_id {key} NOT NULL,
                envelope LONGBLOB NOT NULL,
                PRIMARY KEY (app_key, event_offset),
                UNIQUE KEY by_message_id (app_key, message_id),
                KEY by_type (app_key, portable_name, event_offset),
                KEY by_source (app_key, handler_key, instance_id, event_offset)
            ) {table}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS vellum_aggregate (
                app_key {key} NOT NULL,
                handler_key {key} NOT NULL,
                instance_id {key} NOT NULL,
                revision BIGINT NOT NULL,
                last_event_id LONGBLOB NOT NULL,
                PRIMARY KEY (app_key, handler_key, instance_id)
            ) {table}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS vellum_process (
                app_key {key} NOT NULL,
                handler_key {key} NOT NULL,
                instance_id {key} NOT NULL,
                revision BIGINT NOT NULL,
                media_type LONGBLOB NOT NULL,
                data LONGBLOB NOT NULL,
                PRIMARY KEY (app_key, handler_key, instance_id)
            ) {table}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS vellum_queue (
                app_key {key} NOT NULL,
                message_id {key} NOT NULL,
                revision BIGINT NOT NULL,
                failure_count BIGINT NOT NULL,
                next_attempt_at BIGINT NOT NULL,
                sequence BIGINT NOT NULL,
                timeout_handler_key {key} NULL,
                timeout_instance_id {key} NULL,
                envelope LONGBLOB NOT NULL,
                PRIMARY KEY (app_key, message_id),
                KEY by_next_attempt (app_key, next_attempt_at, sequence, message_id),
                KEY by_timeout (app_key, timeout_handler_key, timeout_instance_id)
            ) {table}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS vellum_offset (
                app_key {key} NOT NULL,
                source_app_key {key} NOT NULL,
                next_offset BIGINT NOT NULL,
                PRIMARY KEY (app_key, source_app_key)
            ) {table}"
        ),
    ]
}

/// What [`stored_version`] found.
pub(super) enum Stored {
    /// No `vellum_schema` table (or no row in it).
    Missing,
    /// The version row.
    Version(i64),
}

/// The schema version of the connection's database.
pub(super) async fn stored_version(conn: &mut Conn) -> Result<Stored> {
    match conn.query_first::<Row, _>("SELECT MAX(version) FROM vellum_schema").await {
        Ok(Some(mut row)) => Ok(opt_i64(&mut row, 0)?.map_or(Stored::Missing, Stored::Version)),
        Ok(None) => Ok(Stored::Missing),
        // ER_NO_SUCH_TABLE
        Err(mysql_async::Error::Server(e)) if e.code == 1146 => Ok(Stored::Missing),
        Err(e) => Err(storage("reading the schema version (vellum_schema)", e)),
    }
}

/// The error for a database written by a newer vellum.
pub(super) fn newer(found: i64) -> Error {
    Error::storage(
        "mysql: opening the schema",
        format!(
            "the database has vellum schema version {found}, newer than version {SCHEMA_VERSION} \
             that this build supports; upgrade vellum"
        ),
    )
}

/// Creates the vellum tables in the connection's current database, or checks them.
///
/// Idempotent: tables that exist are kept; concurrent calls (from several processes) are
/// serialised with a server-wide `GET_LOCK` of the database. A database at a newer schema
/// version than [`SCHEMA_VERSION`] is refused and left untouched.
pub async fn create_schema(conn: &mut Conn) -> Result<()> {
    let database = current_database(conn).await?;
    let name = lock_name(&database, "schema", "");
    let row: Option<Row> = conn
        .exec_first("SELECT GET_LOCK(?, 30)", (name.as_str(),))
        .await
        .map_err(|e| storage("locking the database to create the schema", e))?;
    let got = match row {
        Some(mut row) => opt_i64(&mut row, 0)?,
        None => None,
    };
    if got != Some(1) {
        return Err(Error::storage(
            "mysql: creating the schema",
            format!("could not take the schema lock of database {database:?} within 30 s"),
        ));
    }
    let outcome = create_locked(conn).await;
    let released = conn.exec_drop("DO RELEASE_LOCK(?)", (name.as_str(),)).await;
    outcome?;
    released.map_err(|e| storage("releasing the schema lock", e))
}

async fn create_locked(conn: &mut Conn) -> Result<()> {
    match stored_version(conn).await? {
        Stored::Version(v) if v == SCHEMA_VERSION => return Ok(()),
        Stored::Version(v) if v > SCHEMA_VERSION => return Err(newer(v)),
        Stored::Version(_) | Stored::Missing => {}
    }
    for statement in ddl() {
        conn.query_drop(statement).await.map_err(|e| storage("creating the schema", e))?;
    }
    // One row: the version (older versions would be migrated here; version 1 is the first).
    conn.exec_drop("DELETE FROM vellum_schema WHERE version < ?", (SCHEMA_VERSION,))
        .await
        .map_err(|e| storage("recording the schema version", e))?;
    conn.exec_drop(
        "INSERT INTO vellum_schema (version) VALUES (?) ON DUPLICATE KEY UPDATE version = version",
        (SCHEMA_VERSION,),
    )
    .await
    .map_err(|e| storage("recording the schema version", e))
}

/// Drops every vellum table (all applications' data) from the connection's current database.
///
/// Idempotent: missing tables are ignored.
pub async fn drop_schema(conn: &mut Conn) -> Result<()> {
    let list = TABLES.iter().rev().copied().collect::<Vec<_>>().join(", ");
    conn.query_drop(format!("DROP TABLE IF EXISTS {list}"))
        .await
        .map_err(|e| storage("dropping the schema", e))
}

/// The connection's current database; vellum needs one.
pub(super) async fn current_database(conn: &mut Conn) -> Result<String> {
    let row: Option<Row> = conn
        .query_first("SELECT DATABASE()")
        .await
        .map_err(|e| storage("reading the current database", e))?;
    let name = match row {
        Some(mut row) => opt_bytes(&mut row, 0)?,
        None => None,
    };
    match name {
        Some(bytes) => {
            String::from_utf8(bytes).map_err(|e| Error::storage("mysql: reading the database name", e))
        }
        None => Err(Error::storage(
            "mysql: connecting",
            "no database selected: name one in the URL (mysql://user@host/database)",
        )),
    }
}
