//! The schema version every dialect shares (each dialect writes its own DDL).
//!
//! Tables (names shared by all dialects; types per dialect):
//! - `vellum_schema(version)`: one row, the schema version of the database.
//! - `vellum_app(app_key, next_offset, next_sequence)`: the per-application counter row.
//! - `vellum_event(app_key, event_offset, message_id, portable_name, handler_key, instance_id, envelope)`:
//!   primary key `(app_key, event_offset)`, unique `(app_key, message_id)`, indexes on
//!   `(app_key, portable_name, event_offset)` and `(app_key, handler_key, instance_id, event_offset)`.
//! - `vellum_aggregate(app_key, handler_key, instance_id, revision, last_event_id)`.
//! - `vellum_process(app_key, handler_key, instance_id, revision, media_type, data)`.
//! - `vellum_queue(app_key, message_id, revision, failure_count, next_attempt_at, sequence,
//!   timeout_handler_key, timeout_instance_id, envelope)`: `next_attempt_at` is i64 microseconds
//!   (docs/queue.md#time-precision-and-range); the timeout columns are NULL for messages that
//!   are not timeouts; indexes on `(app_key, next_attempt_at, sequence, message_id)` and
//!   `(app_key, timeout_handler_key, timeout_instance_id)`.
//! - `vellum_offset(app_key, source_app_key, next_offset)`.
//!
//! Since version 2 every table but `vellum_schema` also has `checksum` (the queue:
//! `envelope_checksum` and `state_checksum`), the row's record sum (docs/integrity.md).
//!
//! Every row is scoped by the store's application key
//! (docs/events.md#isolation-per-application). u64 values (revisions, offsets, failure counts)
//! are stored in signed 64-bit columns by bit-casting, so the full u64 range round-trips; only
//! equality is ever asked of those columns except `event_offset`, which stays far below 2^63.

/// The schema version this build writes and reads. A database at a newer version is refused;
/// one at an older version is upgraded by `create_schema` (and so by opening with migration on).
///
/// - 1: rows without checksums.
/// - 2: every row carries the checksum of its record (`checksum`; the queue has
///   `envelope_checksum` and `state_checksum`), see `sums.rs` and docs/integrity.md.
/// - 3: PostgreSQL allocates each application a lock id (`vellum_lock`), so advisory-lock keys
///   never collide (docs/locking.md#postgresql); the other dialects only record the number.
pub const SCHEMA_VERSION: i64 = 3;

/// Stores a u64 in a signed 64-bit column, keeping every bit.
#[must_use]
pub fn to_db(value: u64) -> i64 {
    value.cast_signed()
}

/// Reads back a u64 stored by [`to_db`].
#[must_use]
pub fn from_db(value: i64) -> u64 {
    value.cast_unsigned()
}
