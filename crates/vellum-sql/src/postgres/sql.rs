//! The statements of the PostgreSQL dialect, with table names qualified by the configured
//! schema. The schema name is configuration, validated to `[a-z_][a-z0-9_]*` before it is ever
//! put into a statement; everything else is a bound parameter.

use vellum_core::Error;

use crate::bulk::{BulkSql, Style};

/// Checks a schema name: 1 to 63 characters, lowercase ASCII letters, digits and `_`, not
/// starting with a digit and not starting with `pg_` (reserved by PostgreSQL).
pub(crate) fn validate_schema(name: &str) -> Result<(), Error> {
    let mut chars = name.chars();
    let valid_first = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let valid_rest = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid_first && valid_rest && name.len() <= 63 && !name.starts_with("pg_") {
        Ok(())
    } else {
        Err(Error::storage(
            format!("invalid PostgreSQL schema name {name:?}"),
            "expected 1 to 63 characters of [a-z0-9_], not starting with a digit or \"pg_\"",
        ))
    }
}

/// The DDL of the current schema version, run in one transaction by `create_schema`. `{s}` is the schema.
pub(crate) fn create_statements(s: &str) -> Vec<String> {
    let key = r#"TEXT COLLATE "C" NOT NULL"#;
    vec![
        format!("CREATE SCHEMA IF NOT EXISTS {s}"),
        format!("CREATE TABLE IF NOT EXISTS {s}.vellum_schema (version BIGINT NOT NULL)"),
        format!(
            "CREATE TABLE IF NOT EXISTS {s}.vellum_app (app_key {key} PRIMARY KEY, \
             next_offset BIGINT NOT NULL, next_sequence BIGINT NOT NULL, checksum BIGINT NOT NULL)"
        ),
        // Schema 3: each application's lock id, the low half of its advisory-lock key.
        format!(
            "CREATE TABLE IF NOT EXISTS {s}.vellum_lock (app_key {key} PRIMARY KEY, \
             lock_id INTEGER GENERATED ALWAYS AS IDENTITY NOT NULL UNIQUE)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {s}.vellum_event (app_key {key}, event_offset BIGINT NOT NULL, \
             message_id {key}, portable_name {key}, handler_key {key}, instance_id {key}, \
             envelope BYTEA NOT NULL, checksum BIGINT NOT NULL, PRIMARY KEY (app_key, event_offset), \
             UNIQUE (app_key, message_id))"
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS vellum_event_by_type ON {s}.vellum_event \
             (app_key, portable_name, event_offset)"
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS vellum_event_by_source ON {s}.vellum_event \
             (app_key, handler_key, instance_id, event_offset)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {s}.vellum_aggregate (app_key {key}, handler_key {key}, \
             instance_id {key}, revision BIGINT NOT NULL, last_event_id {key}, checksum BIGINT NOT NULL, \
             PRIMARY KEY (app_key, handler_key, instance_id))"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {s}.vellum_process (app_key {key}, handler_key {key}, \
             instance_id {key}, revision BIGINT NOT NULL, media_type {key}, data BYTEA NOT NULL, \
             checksum BIGINT NOT NULL, PRIMARY KEY (app_key, handler_key, instance_id))"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {s}.vellum_queue (app_key {key}, message_id {key}, \
             revision BIGINT NOT NULL, failure_count BIGINT NOT NULL, next_attempt_at BIGINT NOT NULL, \
             sequence BIGINT NOT NULL, timeout_handler_key TEXT COLLATE \"C\", \
             timeout_instance_id TEXT COLLATE \"C\", envelope BYTEA NOT NULL, \
             envelope_checksum BIGINT NOT NULL, state_checksum BIGINT NOT NULL, \
             PRIMARY KEY (app_key, message_id))"
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS vellum_queue_by_next_attempt ON {s}.vellum_queue \
             (app_key, next_attempt_at, sequence, message_id)"
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS vellum_queue_by_timeout_owner ON {s}.vellum_queue \
             (app_key, timeout_handler_key, timeout_instance_id) WHERE timeout_handler_key IS NOT NULL"
        ),
        // Raises SQLSTATE VLSTL when a group's assumed pre-group state is not the stored one
        // (see `Sql::verify`); the pipelined COMMIT after it then rolls back.
        format!(
            "CREATE OR REPLACE FUNCTION {s}.vellum_expect(ok BOOLEAN) RETURNS BOOLEAN LANGUAGE plpgsql AS $$ \
             BEGIN IF ok IS NOT TRUE THEN RAISE EXCEPTION 'vellum: the assumed state of a group is stale' \
             USING ERRCODE = '{STALE}'; END IF; RETURN TRUE; END $$"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {s}.vellum_offset (app_key {key}, source_app_key {key}, \
             next_offset BIGINT NOT NULL, checksum BIGINT NOT NULL, PRIMARY KEY (app_key, source_app_key))"
        ),
    ]
}

/// Schema 1 to 2: the checksum columns, filled by `create_schema` before it records version 2.
pub(crate) fn add_checksum_columns(s: &str) -> String {
    let add = |table: &str, column: &str| {
        format!("ALTER TABLE {s}.{table} ADD COLUMN IF NOT EXISTS {column} BIGINT NOT NULL DEFAULT 0;")
    };
    [
        add("vellum_app", "checksum"),
        add("vellum_event", "checksum"),
        add("vellum_aggregate", "checksum"),
        add("vellum_process", "checksum"),
        add("vellum_queue", "envelope_checksum"),
        add("vellum_queue", "state_checksum"),
        add("vellum_offset", "checksum"),
    ]
    .concat()
}

/// The SQLSTATE `vellum_expect` raises.
pub(crate) const STALE: &str = "VLSTL";

/// SQLSTATE `division_by_zero`: how a simple group's statement (`simple.rs`) fails a check, as
/// `STALE` does elsewhere; it divides nowhere else.
pub(crate) const DIVISION_BY_ZERO: &str = "22012";

/// SQLSTATE `unique_violation`: in a simple group's statement (`simple.rs`), a row the group
/// assumed absent is stored already, so the group's assumed state was stale.
pub(crate) const UNIQUE_VIOLATION: &str = "23505";

/// Every statement text the dialect runs after the schema exists.
#[derive(Debug)]
pub(crate) struct Sql {
    pub schema: String,
    // Schema version and app row.
    pub ensure_app: String,
    // Reads (pool).
    pub load_aggregate: String,
    pub load_process: String,
    pub load_offset: String,
    pub next_event_offset: String,
    pub load_queue: String,
    pub page_by_type: String,
    pub page_by_source: String,
    // Group commit: reads.
    pub read_counters: String,
    pub read_aggregates: String,
    pub read_processes: String,
    pub read_queue: String,
    pub read_offsets: String,
    pub read_events: String,
    pub verify: String,
    // Group commit: writes.
    pub insert_events: String,
    pub upsert_aggregates: String,
    pub upsert_offsets: String,
    pub upsert_process: String,
    pub delete_process: String,
    pub delete_timeouts: String,
    pub insert_queue: String,
    pub update_queue: String,
    pub delete_queue: String,
    pub store_counters: String,
    /// Wakes the application's listeners (docs/events.md#reading-beside-the-engine); sent in
    /// the committing transaction, so it is delivered only if the commit is.
    pub notify: String,
    // Bulk export (pool).
    pub bulk: BulkSql,
}

impl Sql {
    /// The statements over tables in `schema` (already validated).
    #[allow(clippy::too_many_lines)] // one statement text per field
    pub(crate) fn new(schema: String) -> Self {
        let s = schema.as_str();
        let prefix = format!("{s}.");
        // `C`-collated key columns compare bytewise in keysets and ORDER BY alike.
        let style = Style { tables: &prefix, numbered: true, row_values: true };
        Self {
            bulk: BulkSql::new(style),
            ensure_app: format!(
                "INSERT INTO {s}.vellum_app (app_key, next_offset, next_sequence, checksum) \
                 VALUES ($1, 0, 0, $2) ON CONFLICT (app_key) DO NOTHING"
            ),
            load_aggregate: format!(
                "SELECT revision, last_event_id, checksum FROM {s}.vellum_aggregate \
                 WHERE app_key = $1 AND handler_key = $2 AND instance_id = $3"
            ),
            load_process: format!(
                "SELECT revision, media_type, data, checksum FROM {s}.vellum_process \
                 WHERE app_key = $1 AND handler_key = $2 AND instance_id = $3"
            ),
            load_offset: format!(
                "SELECT next_offset, checksum FROM {s}.vellum_offset WHERE app_key = $1 AND source_app_key = $2"
            ),
            next_event_offset: format!(
                "SELECT next_offset, next_sequence, checksum FROM {s}.vellum_app WHERE app_key = $1"
            ),
            load_queue: format!(
                "SELECT revision, failure_count, next_attempt_at, envelope, sequence, message_id, \
                 envelope_checksum, state_checksum FROM {s}.vellum_queue WHERE app_key = $1 ORDER BY next_attempt_at, sequence, message_id LIMIT $2"
            ),
            // One ordered index range per type, merged: cost follows the matches. The plain
            // `portable_name = ANY(..)` form gets a generic plan that walks the whole log in
            // offset order and filters, so a rare type cost a full scan.
            page_by_type: format!(
                "SELECT e.event_offset, e.envelope, e.checksum FROM unnest($2::text[]) AS t(name) \
                 CROSS JOIN LATERAL (SELECT event_offset, envelope, checksum FROM {s}.vellum_event \
                 WHERE app_key = $1 AND portable_name = t.name AND event_offset >= $3 \
                 ORDER BY event_offset LIMIT $4) e ORDER BY e.event_offset LIMIT $4"
            ),
            page_by_source: format!(
                "SELECT event_offset, envelope, checksum FROM {s}.vellum_event WHERE app_key = $1 \
                 AND handler_key = $2 AND instance_id = $3 AND event_offset >= $4 \
                 ORDER BY event_offset LIMIT $5"
            ),
            read_counters: format!(
                "SELECT next_offset, next_sequence, checksum FROM {s}.vellum_app WHERE app_key = $1"
            ),
            read_aggregates: format!(
                "SELECT k.h, k.i, (SELECT a.revision FROM {s}.vellum_aggregate a WHERE a.app_key = $1 \
                 AND a.handler_key = k.h AND a.instance_id = k.i) FROM UNNEST($2::text[], $3::text[]) AS k(h, i)"
            ),
            read_processes: format!(
                "SELECT k.h, k.i, (SELECT p.revision FROM {s}.vellum_process p WHERE p.app_key = $1 \
                 AND p.handler_key = k.h AND p.instance_id = k.i) FROM UNNEST($2::text[], $3::text[]) AS k(h, i)"
            ),
            read_queue: format!(
                "SELECT q.message_id, q.revision, q.timeout_handler_key, q.timeout_instance_id \
                 FROM UNNEST($2::text[]) AS k(m) CROSS JOIN LATERAL (SELECT * FROM {s}.vellum_queue q \
                 WHERE q.app_key = $1 AND q.message_id = k.m OFFSET 0) q"
            ),
            read_offsets: format!(
                "SELECT o.source_app_key, o.next_offset FROM UNNEST($2::text[]) AS k(src) \
                 CROSS JOIN LATERAL (SELECT * FROM {s}.vellum_offset o WHERE o.app_key = $1 \
                 AND o.source_app_key = k.src OFFSET 0) o"
            ),
            read_events: format!(
                "SELECT k.m FROM UNNEST($2::text[]) AS k(m) WHERE \
                 (SELECT TRUE FROM {s}.vellum_event e WHERE e.app_key = $1 AND e.message_id = k.m)"
            ),
            verify: format!("SELECT {s}.vellum_expect({})", expect_conditions(s)),
            insert_events: format!(
                "INSERT INTO {s}.vellum_event \
                 (app_key, event_offset, message_id, portable_name, handler_key, instance_id, envelope, \
                 checksum) SELECT $1, * FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::text[], \
                 $6::text[], $7::bytea[], $8::bigint[])"
            ),
            upsert_aggregates: format!(
                "INSERT INTO {s}.vellum_aggregate \
                 (app_key, handler_key, instance_id, revision, last_event_id, checksum) \
                 SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::bigint[], $5::text[], $6::bigint[]) \
                 ON CONFLICT (app_key, handler_key, instance_id) \
                 DO UPDATE SET revision = EXCLUDED.revision, last_event_id = EXCLUDED.last_event_id, \
                 checksum = EXCLUDED.checksum"
            ),
            upsert_offsets: format!(
                "INSERT INTO {s}.vellum_offset (app_key, source_app_key, next_offset, checksum) \
                 SELECT $1, * FROM UNNEST($2::text[], $3::bigint[], $4::bigint[]) \
                 ON CONFLICT (app_key, source_app_key) \
                 DO UPDATE SET next_offset = EXCLUDED.next_offset, checksum = EXCLUDED.checksum"
            ),
            upsert_process: format!(
                "INSERT INTO {s}.vellum_process \
                 (app_key, handler_key, instance_id, revision, media_type, data, checksum) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (app_key, handler_key, instance_id) \
                 DO UPDATE SET revision = EXCLUDED.revision, media_type = EXCLUDED.media_type, \
                 data = EXCLUDED.data, checksum = EXCLUDED.checksum"
            ),
            delete_process: format!(
                "DELETE FROM {s}.vellum_process WHERE app_key = $1 AND handler_key = $2 AND instance_id = $3"
            ),
            delete_timeouts: format!(
                "DELETE FROM {s}.vellum_queue WHERE app_key = $1 AND timeout_handler_key = $2 \
                 AND timeout_instance_id = $3"
            ),
            insert_queue: format!(
                "INSERT INTO {s}.vellum_queue (app_key, message_id, revision, failure_count, next_attempt_at, \
                 sequence, timeout_handler_key, timeout_instance_id, envelope, envelope_checksum, state_checksum) \
                 SELECT $1, m, r, f, t, q, th, ti, e, es, ss FROM UNNEST($2::text[], $3::bigint[], $4::bigint[], \
                 $5::bigint[], $6::bigint[], $7::text[], $8::text[], $9::bytea[], $10::bigint[], $11::bigint[]) \
                 AS u(m, r, f, t, q, th, ti, e, es, ss)"
            ),
            update_queue: format!(
                "UPDATE {s}.vellum_queue SET revision = $3, failure_count = $4, next_attempt_at = $5, \
                 state_checksum = $6 WHERE app_key = $1 AND message_id = $2"
            ),
            delete_queue: format!("DELETE FROM {s}.vellum_queue WHERE app_key = $1 AND message_id = $2"),
            notify: "SELECT pg_notify($1::text, '')".to_owned(),
            store_counters: format!(
                "INSERT INTO {s}.vellum_app (app_key, next_offset, next_sequence, checksum) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (app_key) DO UPDATE SET \
                 next_offset = EXCLUDED.next_offset, next_sequence = EXCLUDED.next_sequence, \
                 checksum = EXCLUDED.checksum"
            ),
            schema,
        }
    }
}

/// The condition `vellum_expect` checks: the pre-group state a group assumed. Parameters:
/// `$1` app key, `$2` event IDs expected absent, `$3..$5` aggregate keys and revisions (0:
/// absent), `$6..$8` process keys and revisions, `$9..$12` queue IDs, revisions and timeout
/// owners, `$13, $14` offset sources and values, `$15, $16` the counters. Every lookup is a
/// correlated index probe per key, never a join over the app's rows (scalar subqueries are not
/// flattened into joins; the `LATERAL … OFFSET 0` of the read statements likewise stays a
/// per-key probe).
fn expect_conditions(s: &str) -> String {
    let queue = format!(
        "NOT EXISTS (SELECT 1 FROM UNNEST($9::text[], $10::bigint[], $11::text[], $12::text[]) \
         AS k(m, r, th, ti) WHERE CASE WHEN k.r = 0 \
         THEN EXISTS (SELECT 1 FROM {s}.vellum_queue q WHERE q.app_key = $1 AND q.message_id = k.m) \
         ELSE NOT EXISTS (SELECT 1 FROM {s}.vellum_queue q WHERE q.app_key = $1 AND q.message_id = k.m \
         AND q.revision = k.r AND q.timeout_handler_key IS NOT DISTINCT FROM k.th \
         AND q.timeout_instance_id IS NOT DISTINCT FROM k.ti) END)"
    );
    let counters = format!(
        "EXISTS (SELECT 1 FROM {s}.vellum_app WHERE app_key = $1 AND next_offset = $15 AND next_sequence = $16)"
    );
    format!(
        "{} AND {} AND {} AND {queue} AND {} AND {counters}",
        events_probe(s, 2),
        revision_probe(s, "vellum_aggregate", 3),
        revision_probe(s, "vellum_process", 6),
        offsets_probe(s, 13),
    )
}

/// That none of the message IDs in `${ids}` is stored.
pub(super) fn events_probe(s: &str, ids: u32) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM UNNEST(${ids}::text[]) AS k(m) WHERE \
         (SELECT TRUE FROM {s}.vellum_event e WHERE e.app_key = $1 AND e.message_id = k.m))"
    )
}

/// That each `(handler key, instance ID)` of `${first}`, `${first + 1}` has the revision in
/// `${first + 2}` in `table` (aggregates or processes; 0: absent).
pub(super) fn revision_probe(s: &str, table: &str, first: u32) -> String {
    let (i, r) = (first + 1, first + 2);
    format!(
        "NOT EXISTS (SELECT 1 FROM UNNEST(${first}::text[], ${i}::text[], ${r}::bigint[]) AS k(h, i, r) \
         WHERE coalesce((SELECT t.revision FROM {s}.{table} t WHERE t.app_key = $1 AND t.handler_key = k.h \
         AND t.instance_id = k.i), 0) <> k.r)"
    )
}

/// That each consumer offset of source `${src}` is the one in `${src + 1}` (0: absent).
pub(super) fn offsets_probe(s: &str, src: u32) -> String {
    let r = src + 1;
    format!(
        "NOT EXISTS (SELECT 1 FROM UNNEST(${src}::text[], ${r}::bigint[]) AS k(src, r) \
         WHERE coalesce((SELECT o.next_offset FROM {s}.vellum_offset o WHERE o.app_key = $1 \
         AND o.source_app_key = k.src), 0) <> k.r)"
    )
}

/// Allocates `$1`'s lock id if it has none (idempotent; safe without the lock).
pub(crate) fn allocate_lock_id(s: &str) -> String {
    format!("INSERT INTO {s}.vellum_lock (app_key) VALUES ($1) ON CONFLICT (app_key) DO NOTHING")
}

/// The advisory-lock key of application `$1` in schema `$2`: the schema's OID in the high 32
/// bits, the application's lock id in the low 32. OIDs are unique in a database and lock ids in
/// a schema, so no two applications of one database share a key (docs/locking.md#postgresql).
pub(crate) fn lock_key(s: &str) -> String {
    format!(
        "SELECT (n.oid::int8 << 32) | l.lock_id::int8 FROM pg_namespace n, {s}.vellum_lock l \
         WHERE n.nspname = $2 AND l.app_key = $1"
    )
}

/// The two-part advisory-lock key serialising `create_schema` for `schema`. Two-part keys are a
/// space of their own, apart from the one-part keys of applications, so a collision of these
/// hashes only serialises two schema creations.
pub(crate) fn schema_lock_key(schema: &str) -> (i32, i32) {
    let hash = vellum_core::provider::hash::fnv1a_64(schema.as_bytes());
    (((hash >> 32) as u32).cast_signed(), (hash as u32).cast_signed())
}
