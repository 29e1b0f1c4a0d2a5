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
    AggregateMetaData, Event, ExportFrom, Packet, ProcessInstance, QueueMessage, Record, Result, StoreStats,
};

use super::reads::{MysqlReads, bytes, decode_envelope};
use super::{get_bytes, get_i64, get_string};
use crate::bulk::{BulkSql, Style, limit};
use crate::schema::{from_db, to_db};

/// MySQL's export statements: `?` placeholders, expanded keysets.
static SQL: LazyLock<BulkSql> =
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
    /// becomes a record.
    /// One export page.
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
                (&sql.events, vec![app, Value::Int(i64::try_from(from).unwrap_or(i64::MAX)), n], event)
            }
        };
        let rows = self.rows("exporting records", statement, params).await?;
        rows.into_iter().map(|row| decode(&self.app_key, row)).collect()
    }
}

/// Turns a row of an export statement into a record (the app key names decoding errors).
type Decode = fn(&str, Row) -> Result<Record>;

fn aggregate(_: &str, mut row: Row) -> Result<Record> {
    Ok(Record::Aggregate(AggregateMetaData {
        handler_key: get_string(&mut row, 0)?,
        instance_id: get_string(&mut row, 1)?,
        revision: from_db(get_i64(&mut row, 2)?),
        last_event_id: get_string(&mut row, 3)?,
    }))
}

fn process(_: &str, mut row: Row) -> Result<Record> {
    Ok(Record::Process(ProcessInstance {
        handler_key: get_string(&mut row, 0)?,
        instance_id: get_string(&mut row, 1)?,
        revision: from_db(get_i64(&mut row, 2)?),
        packet: Packet { media_type: get_string(&mut row, 3)?, data: get_bytes(&mut row, 4)? },
    }))
}

fn offset(_: &str, mut row: Row) -> Result<Record> {
    Ok(Record::Offset {
        application_key: get_string(&mut row, 0)?,
        next_offset: from_db(get_i64(&mut row, 1)?),
    })
}

fn queued(app_key: &str, mut row: Row) -> Result<Record> {
    Ok(Record::Queue {
        sequence: from_db(get_i64(&mut row, 3)?),
        message: QueueMessage {
            revision: from_db(get_i64(&mut row, 0)?),
            failure_count: from_db(get_i64(&mut row, 1)?),
            next_attempt_at: Micros(get_i64(&mut row, 2)?).to_system_time(),
            envelope: decode_envelope(app_key, &get_bytes(&mut row, 4)?)?,
        },
    })
}

fn event(app_key: &str, mut row: Row) -> Result<Record> {
    Ok(Record::Event(Event {
        offset: from_db(get_i64(&mut row, 0)?),
        envelope: decode_envelope(app_key, &get_bytes(&mut row, 1)?)?,
    }))
}
