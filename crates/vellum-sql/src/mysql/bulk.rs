//! Bulk export and import ([`vellum_core::BulkStore`]) of a [`MysqlStore`].
//!
//! Export pages are pooled reads. Their keysets are written out as `a > ? OR (a = ? AND b > ?)`
//! because MariaDB scans a row-value comparison from the start of the app's rows instead of
//! seeking (see [`crate::bulk::Style::row_values`]). An import is a job of the store's writer
//! ([`crate::group::Committer::import`]), on the lock connection between two groups: one
//! transaction that reads the records' keys with the writer's state query, checks them, writes
//! multi-row inserts within the packet budget, stores the counters and commits.

use std::sync::LazyLock;

use mysql_async::{Conn, Row, Value};
use tracing::Instrument as _;
use vellum_core::bulk::check_import;
use vellum_core::time::Micros;
use vellum_core::{
    AggregateMetaData, BulkStore, DataStore as _, Event, ExportFrom, Packet, ProcessInstance, QueueMessage,
    Record, Result, StoreStats, observe,
};

use super::store::{MysqlStore, bytes, decode_envelope};
use super::writer::{MysqlWriter, Statements, TxError};
use super::{PROVIDER, get_bytes, get_i64, get_string};
use crate::bulk::{self, BulkSql, ImportRows, Style, counters_after, event_keys, limit};
use crate::plan::StateKeys;
use crate::schema::{from_db, to_db};

/// MySQL's statements: `?` placeholders, expanded keysets.
struct BulkStatements {
    export: BulkSql,
    /// `INSERT INTO … VALUES ` heads for the writer's multi-row inserts, per table.
    heads: [String; 5],
}

const STYLE: Style<'static> = Style { tables: "", numbered: false, row_values: false };

static SQL: LazyLock<BulkStatements> = LazyLock::new(|| BulkStatements {
    export: BulkSql::new(STYLE),
    heads: [bulk::AGGREGATES, bulk::PROCESSES, bulk::OFFSETS, bulk::QUEUE, bulk::EVENTS]
        .map(|table| format!("{} VALUES ", table.insert_head(STYLE))),
});

impl BulkStore for MysqlStore {
    async fn stats(&self) -> Result<StoreStats> {
        let app = bytes(self.app_key());
        let params = vec![app; 5];
        let rows = self.shared().rows("stats", "counting records", &SQL.export.stats, params).await?;
        let mut counts = [0; 5];
        if let Some(mut row) = rows.into_iter().next() {
            for (i, count) in counts.iter_mut().enumerate() {
                *count = from_db(get_i64(&mut row, i)?);
            }
        }
        let [aggregates, processes, offsets, queue, events] = counts;
        Ok(StoreStats { aggregates, processes, offsets, queue, events })
    }

    async fn export_page(&self, from: ExportFrom, limit: usize) -> Result<Vec<Record>> {
        let span = observe::bulk_span(PROVIDER, self.app_key(), false, limit);
        self.export(from, limit).instrument(span).await
    }

    async fn import(&self, records: Vec<Record>) -> Result<()> {
        let span = observe::bulk_span(PROVIDER, self.app_key(), true, records.len());
        let result = self.import_through_writer(records).instrument(span.clone()).await;
        observe::record(&span, result)
    }
}

impl MysqlStore {
    /// One export page: the statement and parameters of `from`'s section, and how a row of it
    /// becomes a record.
    async fn export(&self, from: ExportFrom, n: usize) -> Result<Vec<Record>> {
        let app = bytes(self.app_key());
        let (sql, n) = (&SQL.export, Value::Int(limit(n)));
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
        let rows = self.shared().rows("export", "exporting records", statement, params).await?;
        rows.into_iter().map(|row| decode(self.app_key(), row)).collect()
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

impl MysqlWriter {
    /// Checks and writes an import in one transaction (see the module docs). A refused import
    /// comes back as an error that is not `dead`, so the caller's `ROLLBACK` ends the reads'
    /// transaction and the store stays usable.
    pub(super) async fn import_transaction(
        &self,
        conn: &mut Conn,
        records: &[Record],
    ) -> Result<(), TxError> {
        let (mut snapshot, counter_row) = self.read_state(conn, &StateKeys::of_records(records)).await?;
        let before = (snapshot.next_offset, snapshot.next_sequence);
        check_import(records, snapshot.next_offset, &mut snapshot).map_err(|e| (e, false))?;
        let rows = ImportRows::of(records).map_err(|e| (e, false))?;
        let [aggregates, processes, offsets, queue, events] = &SQL.heads;
        let app = bytes(&self.app_key);
        let mut statements = Statements { conn, writer: self };
        let table_rows = [
            (aggregates, rows.aggregates.iter().map(|m| aggregate_row(&app, m)).collect::<Vec<_>>()),
            (processes, rows.processes.iter().map(|p| process_row(&app, p)).collect()),
            (
                offsets,
                rows.offsets
                    .iter()
                    .map(|&(source, next)| vec![app.clone(), bytes(source), Value::Int(to_db(next))])
                    .collect(),
            ),
            (queue, rows.queue.iter().map(|q| queue_row(&app, q)).collect()),
            (events, rows.events.iter().map(|e| event_row(&app, e)).collect()),
        ];
        for (head, values) in table_rows {
            statements.insert(head, "", values).await?;
        }
        let after = counters_after(records, before);
        self.store_counters(conn, counter_row.then_some(before), after).await?;
        self.commit(conn).await
    }
}

fn aggregate_row(app: &Value, m: &AggregateMetaData) -> Vec<Value> {
    vec![
        app.clone(),
        bytes(&m.handler_key),
        bytes(&m.instance_id),
        Value::Int(to_db(m.revision)),
        bytes(&m.last_event_id),
    ]
}

fn process_row(app: &Value, p: &ProcessInstance) -> Vec<Value> {
    vec![
        app.clone(),
        bytes(&p.handler_key),
        bytes(&p.instance_id),
        Value::Int(to_db(p.revision)),
        bytes(&p.packet.media_type),
        Value::Bytes(p.packet.data.clone()),
    ]
}

fn queue_row(app: &Value, q: &bulk::QueueRow<'_>) -> Vec<Value> {
    let (handler, instance) =
        q.timeout_owner.map_or((Value::NULL, Value::NULL), |(h, i)| (bytes(h), bytes(i)));
    vec![
        app.clone(),
        bytes(q.message.id()),
        Value::Int(to_db(q.message.revision)),
        Value::Int(to_db(q.message.failure_count)),
        Value::Int(q.next_attempt_at.0),
        Value::Int(to_db(q.sequence)),
        handler,
        instance,
        Value::Bytes(q.message.envelope.to_bytes()),
    ]
}

fn event_row(app: &Value, e: &Event) -> Vec<Value> {
    let [id, name, handler, instance] = event_keys(&e.envelope);
    vec![
        app.clone(),
        Value::Int(to_db(e.offset)),
        bytes(id),
        bytes(name),
        bytes(handler),
        bytes(instance),
        Value::Bytes(e.envelope.to_bytes()),
    ]
}
