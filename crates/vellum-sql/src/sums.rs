//! Row checksums, checked the same way in every dialect: a dialect reads a row's columns and its
//! stored sum(s), and these functions check them against the sum of the record's kind
//! ([`vellum_core::provider::integrity`]), so a damaged row is an
//! [`ErrorKind::Corrupt`](vellum_core::ErrorKind::Corrupt) error naming the provider, the table,
//! the application and the row, never a wrong value (docs/integrity.md).
//!
//! Sums are stored in 64-bit integer columns holding the 32-bit sum ([`to_column`]).

use std::fmt;

use vellum_core::provider::integrity;
use vellum_core::{Envelope, Error, Event, EventQuery, Result};

use crate::schema::from_db;

/// A sum as stored in its column.
#[must_use]
pub(crate) fn to_column(sum: u32) -> i64 {
    i64::from(sum)
}

/// Checks the rows one store reads.
#[derive(Clone, Copy)]
pub(crate) struct Rows<'a> {
    /// The dialect's provider name.
    pub(crate) provider: &'static str,
    /// The store's application key.
    pub(crate) app_key: &'a str,
}

/// How errors name the table.
struct Table(&'static str);

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "table {}", self.0)
    }
}

impl Rows<'_> {
    /// A corrupt-kind error naming the table and the row.
    pub(crate) fn corrupt(
        &self,
        table: &'static str,
        row: &dyn fmt::Display,
        what: impl Into<String>,
    ) -> Error {
        integrity::corrupt(self.provider, &Table(table), self.app_key, row, what)
    }

    fn check(&self, table: &'static str, row: &dyn fmt::Display, stored: i64, computed: u32) -> Result<()> {
        if stored == to_column(computed) {
            return Ok(());
        }
        Err(self.corrupt(
            table,
            row,
            format!("checksum mismatch: stored {stored:x}, computed {computed:08x}"),
        ))
    }

    /// The event of a `vellum_event` row; when the row was found through `query`, the event
    /// must match it (a damaged index column must not put an event in another's results).
    pub(crate) fn event(
        &self,
        offset: i64,
        bytes: &[u8],
        sum: i64,
        query: Option<&EventQuery>,
    ) -> Result<Event> {
        let offset = from_db(offset);
        let row = format_args!("event at offset {offset}");
        self.check("vellum_event", &row, sum, integrity::event(self.app_key, offset, bytes))?;
        let envelope = Envelope::from_bytes(bytes)
            .map_err(|e| self.corrupt("vellum_event", &row, format!("does not decode: {e}")))?;
        if query.is_some_and(|q| !q.matches(&envelope)) {
            return Err(self.corrupt(
                "vellum_event",
                &row,
                format!(
                    "was found by a query it does not match: its index columns disagree with event {:?} \
                     of type {:?}",
                    envelope.message_id, envelope.portable_name
                ),
            ));
        }
        Ok(Event { offset, envelope })
    }

    /// Checks a `vellum_aggregate` row.
    pub(crate) fn aggregate(
        &self,
        handler_key: &str,
        instance_id: &str,
        revision: i64,
        last_event_id: &str,
        sum: i64,
    ) -> Result<()> {
        let computed =
            integrity::aggregate(self.app_key, handler_key, instance_id, from_db(revision), last_event_id);
        self.check(
            "vellum_aggregate",
            &format_args!("aggregate {handler_key:?}/{instance_id:?}"),
            sum,
            computed,
        )
    }

    /// Checks a `vellum_process` row.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn process(
        &self,
        handler_key: &str,
        instance_id: &str,
        revision: i64,
        media_type: &str,
        data: &[u8],
        sum: i64,
    ) -> Result<()> {
        let computed =
            integrity::process(self.app_key, handler_key, instance_id, from_db(revision), media_type, data);
        self.check("vellum_process", &format_args!("process {handler_key:?}/{instance_id:?}"), sum, computed)
    }

    /// The envelope of a `vellum_queue` row, after checking both its sums.
    pub(crate) fn queue(&self, row: &QueueRow<'_>) -> Result<Envelope> {
        let what = format_args!("queue message {:?}", row.message_id);
        let envelope_sum =
            integrity::queue_envelope(self.app_key, row.message_id, from_db(row.sequence), row.envelope);
        self.check("vellum_queue", &what, row.envelope_sum, envelope_sum)?;
        let state_sum = integrity::queue_state(
            self.app_key,
            row.message_id,
            from_db(row.revision),
            from_db(row.failure_count),
            row.next_attempt_at,
        );
        self.check("vellum_queue", &what, row.state_sum, state_sum)?;
        let envelope = Envelope::from_bytes(row.envelope)
            .map_err(|e| self.corrupt("vellum_queue", &what, format!("does not decode: {e}")))?;
        if envelope.message_id != row.message_id {
            return Err(self.corrupt(
                "vellum_queue",
                &what,
                format!("holds message {:?}", envelope.message_id),
            ));
        }
        Ok(envelope)
    }

    /// Checks a `vellum_offset` row.
    pub(crate) fn offset(&self, source: &str, next_offset: i64, sum: i64) -> Result<()> {
        let computed = integrity::offset(self.app_key, source, from_db(next_offset));
        self.check("vellum_offset", &format_args!("offset of application {source:?}"), sum, computed)
    }

    /// Checks the `vellum_app` row.
    pub(crate) fn counters(&self, next_offset: i64, next_sequence: i64, sum: i64) -> Result<()> {
        let computed = integrity::counters(self.app_key, from_db(next_offset), from_db(next_sequence));
        self.check("vellum_app", &"counters", sum, computed)
    }
}

/// The columns of a `vellum_queue` row that its sums cover.
pub(crate) struct QueueRow<'a> {
    pub(crate) message_id: &'a str,
    pub(crate) revision: i64,
    pub(crate) failure_count: i64,
    pub(crate) next_attempt_at: i64,
    pub(crate) sequence: i64,
    pub(crate) envelope: &'a [u8],
    pub(crate) envelope_sum: i64,
    pub(crate) state_sum: i64,
}

/// The sums a writer stores with each row, from the values it writes.
pub(crate) mod write {
    use vellum_core::provider::integrity;

    use super::to_column;

    /// The sum of an event row.
    pub(crate) fn event(app_key: &str, offset: u64, envelope: &[u8]) -> i64 {
        to_column(integrity::event(app_key, offset, envelope))
    }

    /// The sum of an aggregate row.
    pub(crate) fn aggregate(
        app_key: &str,
        handler_key: &str,
        instance_id: &str,
        revision: u64,
        last_event_id: &str,
    ) -> i64 {
        to_column(integrity::aggregate(app_key, handler_key, instance_id, revision, last_event_id))
    }

    /// The sum of a process row.
    pub(crate) fn process(
        app_key: &str,
        handler_key: &str,
        instance_id: &str,
        revision: u64,
        media_type: &str,
        data: &[u8],
    ) -> i64 {
        to_column(integrity::process(app_key, handler_key, instance_id, revision, media_type, data))
    }

    /// The sum of the row a writer stores for `instance` at `revision` (its stored revision,
    /// not the one the batch expected).
    pub(crate) fn process_instance(
        app_key: &str,
        instance: &vellum_core::ProcessInstance,
        revision: u64,
    ) -> i64 {
        process(
            app_key,
            &instance.handler_key,
            &instance.instance_id,
            revision,
            &instance.packet.media_type,
            &instance.packet.data,
        )
    }

    /// The envelope sum of a queue row.
    pub(crate) fn queue_envelope(app_key: &str, message_id: &str, sequence: u64, envelope: &[u8]) -> i64 {
        to_column(integrity::queue_envelope(app_key, message_id, sequence, envelope))
    }

    /// The state sum of a queue row.
    pub(crate) fn queue_state(
        app_key: &str,
        message_id: &str,
        revision: u64,
        failure_count: u64,
        next_attempt_at: i64,
    ) -> i64 {
        to_column(integrity::queue_state(app_key, message_id, revision, failure_count, next_attempt_at))
    }

    /// The sum of an offset row.
    pub(crate) fn offset(app_key: &str, source: &str, next_offset: u64) -> i64 {
        to_column(integrity::offset(app_key, source, next_offset))
    }

    /// The sum of the counters row.
    pub(crate) fn counters(app_key: &str, next_offset: u64, next_sequence: u64) -> i64 {
        to_column(integrity::counters(app_key, next_offset, next_sequence))
    }
}
