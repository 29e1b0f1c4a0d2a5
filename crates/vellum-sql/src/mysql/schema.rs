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
//!
//! Since schema version 2 every row carries its record checksum (`checksum`; the queue has
//! `envelope_checksum` and `state_checksum`, see `crate::sums`); [`create_schema`] upgrades a
//! version 1 database by adding the columns and filling them from each row.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, Value};
use vellum_core::{Error, Result};

use super::lock::lock_name;
use super::{MAX_KEY_BYTES, get_bytes, get_i64, get_string, opt_bytes, opt_i64, storage};
use crate::schema::{SCHEMA_VERSION, from_db};
use crate::sums::write as sum;

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
                next_sequence BIGINT NOT NULL,
                checksum BIGINT NOT NULL
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
                checksum BIGINT NOT NULL,
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
                checksum BIGINT NOT NULL,
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
                checksum BIGINT NOT NULL,
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
                envelope_checksum BIGINT NOT NULL,
                state_checksum BIGINT NOT NULL,
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
                checksum BIGINT NOT NULL,
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
    Error::storage_kind(
        vellum_core::ErrorKind::Misconfigured,
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
        Stored::Version(v) if v < 2 => add_checksums(conn).await?,
        Stored::Version(_) | Stored::Missing => {}
    }
    for statement in ddl() {
        conn.query_drop(statement).await.map_err(|e| storage("creating the schema", e))?;
    }
    // One row: the version, recorded last, so an interrupted upgrade runs again.
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

/// The checksum columns schema 2 added, per table.
const CHECKSUM_COLUMNS: [(&str, &str); 7] = [
    ("vellum_app", "checksum"),
    ("vellum_event", "checksum"),
    ("vellum_aggregate", "checksum"),
    ("vellum_process", "checksum"),
    ("vellum_queue", "envelope_checksum"),
    ("vellum_queue", "state_checksum"),
    ("vellum_offset", "checksum"),
];

/// Schema 1 to 2: adds the checksum columns and fills them from each row.
///
/// MySQL commits DDL at once, so each step may be repeated: a column already added (by an
/// upgrade that was interrupted) is kept, and every row is summed again. The version row is
/// written only after this returns (see [`create_locked`]); the caller holds the schema lock.
async fn add_checksums(conn: &mut Conn) -> Result<()> {
    let what = "upgrading the schema to version 2";
    let err = |e| storage(what, e);
    for (table, column) in CHECKSUM_COLUMNS {
        let exists: Option<Row> = conn
            .exec_first(
                "SELECT 1 FROM information_schema.columns \
                 WHERE table_schema = DATABASE() AND table_name = ? AND column_name = ?",
                (table, column),
            )
            .await
            .map_err(err)?;
        if exists.is_none() {
            conn.query_drop(format!("ALTER TABLE {table} ADD COLUMN {column} BIGINT NOT NULL DEFAULT 0"))
                .await
                .map_err(err)?;
        }
    }
    backfill(conn, "vellum_app", &["app_key"], "next_offset, next_sequence", &["checksum"], |row| {
        let app = get_string(row, 0)?;
        Ok(vec![sum::counters(&app, from_db(get_i64(row, 1)?), from_db(get_i64(row, 2)?))])
    })
    .await?;
    backfill(conn, "vellum_event", &["app_key", "event_offset"], "envelope", &["checksum"], |row| {
        let (app, offset) = (get_string(row, 0)?, get_i64(row, 1)?);
        Ok(vec![sum::event(&app, from_db(offset), &get_bytes(row, 2)?)])
    })
    .await?;
    let instance = ["app_key", "handler_key", "instance_id"];
    backfill(conn, "vellum_aggregate", &instance, "revision, last_event_id", &["checksum"], |row| {
        let (app, h, i) = (get_string(row, 0)?, get_string(row, 1)?, get_string(row, 2)?);
        let (revision, last) = (from_db(get_i64(row, 3)?), get_string(row, 4)?);
        Ok(vec![sum::aggregate(&app, &h, &i, revision, &last)])
    })
    .await?;
    backfill(conn, "vellum_process", &instance, "revision, media_type, data", &["checksum"], |row| {
        let (app, h, i) = (get_string(row, 0)?, get_string(row, 1)?, get_string(row, 2)?);
        let (revision, media_type, data) =
            (from_db(get_i64(row, 3)?), get_string(row, 4)?, get_bytes(row, 5)?);
        Ok(vec![sum::process(&app, &h, &i, revision, &media_type, &data)])
    })
    .await?;
    backfill(
        conn,
        "vellum_queue",
        &["app_key", "message_id"],
        "revision, failure_count, next_attempt_at, sequence, envelope",
        &["envelope_checksum", "state_checksum"],
        |row| {
            let (app, id) = (get_string(row, 0)?, get_string(row, 1)?);
            let (revision, failures, at) = (get_i64(row, 2)?, get_i64(row, 3)?, get_i64(row, 4)?);
            let (sequence, envelope) = (get_i64(row, 5)?, get_bytes(row, 6)?);
            Ok(vec![
                sum::queue_envelope(&app, &id, from_db(sequence), &envelope),
                sum::queue_state(&app, &id, from_db(revision), from_db(failures), at),
            ])
        },
    )
    .await?;
    backfill(conn, "vellum_offset", &["app_key", "source_app_key"], "next_offset", &["checksum"], |row| {
        let (app, source) = (get_string(row, 0)?, get_string(row, 1)?);
        Ok(vec![sum::offset(&app, &source, from_db(get_i64(row, 2)?))])
    })
    .await?;
    // As a new table has them: no default, so a writer that leaves a sum out fails.
    for (table, column) in CHECKSUM_COLUMNS {
        conn.query_drop(format!("ALTER TABLE {table} ALTER COLUMN {column} DROP DEFAULT"))
            .await
            .map_err(err)?;
    }
    Ok(())
}

/// The sums of one row being filled, from its key columns followed by its other selected columns.
type SumsOf = fn(&mut Row) -> Result<Vec<i64>>;

/// Fills `set` of every row of `table` with what `f` computes, in primary-key pages of 1000
/// rows (so memory stays flat), each page updated in one transaction.
async fn backfill(
    conn: &mut Conn,
    table: &str,
    key: &[&str],
    columns: &str,
    set: &[&str],
    f: SumsOf,
) -> Result<()> {
    let err = |e| storage("upgrading the schema to version 2 (filling the checksums)", e);
    let order = key.join(", ");
    let first = format!("SELECT {order}, {columns} FROM {table} ORDER BY {order} LIMIT 1000");
    let after =
        format!("SELECT {order}, {columns} FROM {table} WHERE {} ORDER BY {order} LIMIT 1000", after(key));
    let update = format!(
        "UPDATE {table} SET {} WHERE {}",
        set.iter().map(|c| format!("{c} = ?")).collect::<Vec<_>>().join(", "),
        key.iter().map(|c| format!("{c} = ?")).collect::<Vec<_>>().join(" AND "),
    );
    let mut last: Option<Vec<Value>> = None;
    loop {
        let rows: Vec<Row> = match &last {
            None => conn.query(&first).await.map_err(err)?,
            Some(key_values) => conn.exec(&after, keyset(key_values)).await.map_err(err)?,
        };
        if rows.is_empty() {
            return Ok(());
        }
        let mut updates = Vec::with_capacity(rows.len());
        for mut row in rows {
            let values: Vec<Value> = (0..key.len()).filter_map(|i| row.as_ref(i).cloned()).collect();
            let mut params: Vec<Value> = f(&mut row)?.into_iter().map(Value::Int).collect();
            params.extend(values.iter().cloned());
            updates.push(params);
            last = Some(values);
        }
        conn.query_drop("START TRANSACTION").await.map_err(err)?;
        conn.exec_batch(&update, updates).await.map_err(err)?;
        conn.query_drop("COMMIT").await.map_err(err)?;
    }
}

/// "After this key" over `columns`, written out (`a > ? OR (a = ? AND …)`) so MariaDB seeks.
fn after(columns: &[&str]) -> String {
    match columns {
        [] => "TRUE".to_owned(),
        [last] => format!("{last} > ?"),
        [first, rest @ ..] => format!("({first} > ? OR ({first} = ? AND {}))", after(rest)),
    }
}

/// The parameters of [`after`]: every value but the last twice.
fn keyset(key: &[Value]) -> Vec<Value> {
    let last = key.len().saturating_sub(1);
    key.iter().enumerate().flat_map(|(i, v)| vec![v.clone(); if i < last { 2 } else { 1 }]).collect()
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
