//! Bulk export ([`vellum_core::BulkStore`]) of a MySQL store.
//!
//! Export pages are pooled reads. Their keysets are written out as `a > ? OR (a = ? AND b > ?)`
//! because MariaDB scans a row-value comparison from the start of the app's rows instead of
//! seeking (see [`crate::bulk::Style::row_values`]). An import is a unit of work of the store's
//! writer, planned and written like a group of batches (see `writer.rs`).

use std::sync::LazyLock;

use mysql_async::{Row, Value};
use vellum_core::time::Micros;
use vellum_core::{
    AggregateMetaData, ExportFrom, Packet, ProcessInstance, QueueMessage, Record, Result, StoreStats,
};

use super::reads::{MysqlReads, bytes, queue_row};
use super::{get_bytes, get_i64, get_string};
use crate::bulk::{BulkSql, Style, limit};
use crate::schema::{from_db, to_db};
use crate::sums::Rows;

/// MySQL's export statements: `?` placeholders, expanded keysets.
pub(super) static SQL: LazyLock<BulkSql> =
    LazyLock::new(|| BulkSql::new(Style { tables: "", numbered: false, row_values: false }));

impl MysqlReads {
    /// Record counts.
    pub(super) async fn counts(&self) -> Result<StoreStats> {
        let params = vec![bytes(&self.app_key); 5];
        let rows = self.rows("counting records", &SQL.stats, params).await?;
        let mut counts = [0; 5];
        if let Some(mut row) = rows.into_iter().next() {
            for (i, count) in counts.iter_mut().enumerate() {
                *count = from_db(get_i64(&mut row, i)?);
            }
        }
        let [aggregates, processes, offsets, queue, events] = counts;
        Ok(StoreStats { aggregates, processes, offsets, queue, events })
    }

    /// One export page: the statement and parameters of `from`'s section, and how a row of it
    /// becomes a record (after checking its sums).
    pub(super) async fn export_rows(&self, from: ExportFrom, n: usize) -> Result<Vec<Record>> {
        let app = bytes(&self.app_key);
        let (sql, n) = (&*SQL, Value::Int(limit(n)));
        let after = |first: Vec<Value>, keyset: Vec<Value>, n: Value| [first, keyset, vec![n]].concat();
        let (statement, params, decode): (&str, Vec<Value>, Decode) = match from {
            ExportFrom::Aggregates(None) => (&sql.aggregates_first, vec![app, n], aggregate),
            ExportFrom::Aggregates(Some((h, i))) => (
                &sql.aggregates_after,
                after(vec![app], sql.keyset(vec![bytes(&h), bytes(&i)]), n),
                aggregate,
            ),
            ExportFrom::Processes(None) => (&sql.processes_first, vec![app, n], process),
            ExportFrom::Processes(Some((h, i))) => {
                (&sql.processes_after, after(vec![app], sql.keyset(vec![bytes(&h), bytes(&i)]), n), process)
            }
            ExportFrom::Offsets(None) => (&sql.offsets_first, vec![app, n], offset),
            ExportFrom::Offsets(Some(source)) => (&sql.offsets_after, vec![app, bytes(&source), n], offset),
            ExportFrom::Queue(None) => (&sql.queue_first, vec![app, n], queued),
            ExportFrom::Queue(Some(key)) => {
                let (at, sequence) = (Value::Int(key.next_attempt_at.0), Value::Int(to_db(key.sequence)));
                let keyset = sql.keyset(vec![at, sequence, bytes(&key.message_id)]);
                (&sql.queue_after, after(vec![app], keyset, n), queued)
            }
            // Offsets stay far below 2^63: a larger start matches nothing.
            ExportFrom::Events(from) => {
                // Offsets stay far below 2^63: a larger start matches nothing.
                let from = i64::try_from(from).unwrap_or(i64::MAX);
                let rows =
                    self.rows("exporting records", &sql.events, vec![app, Value::Int(from), n]).await?;
                return events(self.sums(), from, rows);
            }
        };
        let rows = self.rows("exporting records", statement, params).await?;
        let sums = self.sums();
        rows.into_iter().map(|row| decode(sums, row)).collect()
    }
}

/// Turns a row of an export statement into a record, after checking its sums.
type Decode = fn(Rows<'_>, Row) -> Result<Record>;

fn aggregate(sums: Rows<'_>, mut row: Row) -> Result<Record> {
    let (handler_key, instance_id) = (get_string(&mut row, 0)?, get_string(&mut row, 1)?);
    let (revision, last_event_id) = (get_i64(&mut row, 2)?, get_string(&mut row, 3)?);
    sums.aggregate(&handler_key, &instance_id, revision, &last_event_id, get_i64(&mut row, 4)?)?;
    Ok(Record::Aggregate(AggregateMetaData {
        handler_key,
        instance_id,
        revision: from_db(revision),
        last_event_id,
    }))
}

fn process(sums: Rows<'_>, mut row: Row) -> Result<Record> {
    let (handler_key, instance_id) = (get_string(&mut row, 0)?, get_string(&mut row, 1)?);
    let revision = get_i64(&mut row, 2)?;
    let (media_type, data) = (get_string(&mut row, 3)?, get_bytes(&mut row, 4)?);
    sums.process(&handler_key, &instance_id, revision, &media_type, &data, get_i64(&mut row, 5)?)?;
    Ok(Record::Process(ProcessInstance {
        handler_key,
        instance_id,
        revision: from_db(revision),
        packet: Packet { media_type, data },
    }))
}

fn offset(sums: Rows<'_>, mut row: Row) -> Result<Record> {
    let (application_key, next_offset) = (get_string(&mut row, 0)?, get_i64(&mut row, 1)?);
    sums.offset(&application_key, next_offset, get_i64(&mut row, 2)?)?;
    Ok(Record::Offset { application_key, next_offset: from_db(next_offset) })
}

fn queued(sums: Rows<'_>, row: Row) -> Result<Record> {
    let (row, envelope) = queue_row(sums, row)?;
    Ok(Record::Queue {
        sequence: from_db(row.sequence),
        message: QueueMessage {
            revision: from_db(row.revision),
            failure_count: from_db(row.failure_count),
            next_attempt_at: Micros(row.next_attempt_at).to_system_time(),
            envelope,
        },
    })
}

/// A page of events from offset `from`: the log is dense, so a gap means a row was lost or its
/// offset damaged.
fn events(sums: Rows<'_>, from: i64, rows: Vec<Row>) -> Result<Vec<Record>> {
    let mut expected = from;
    rows.into_iter()
        .map(|mut row| {
            let offset = get_i64(&mut row, 0)?;
            if offset != expected {
                return Err(sums.corrupt(
                    "vellum_event",
                    &format_args!("event at offset {expected}"),
                    format!("is missing (the next row has offset {offset})"),
                ));
            }
            expected += 1;
            Ok(Record::Event(sums.event(offset, &get_bytes(&mut row, 1)?, get_i64(&mut row, 2)?, None)?))
        })
        .collect()
}
