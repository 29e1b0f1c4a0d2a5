//! Bulk export and import ([`vellum_core::BulkStore`]) of a [`SqliteStore`].
//!
//! Export pages are inline reads on the store's read connections, like every other read.
//! An import is a job of the store's writer ([`crate::group::Committer::import`]), so it runs
//! between two groups on the writer connection: one `BEGIN IMMEDIATE` transaction that reads
//! the records' keys, checks them and inserts every row with cached one-row statements (in
//! process, a row costs microseconds; multi-row statements would save nothing worth their
//! shapes).

use std::sync::LazyLock;

use rusqlite::{Connection, Row, ToSql, Transaction, TransactionBehavior, params};
use tracing::Instrument as _;
use vellum_core::bulk::check_import;
use vellum_core::time::Micros;
use vellum_core::{
    AggregateMetaData, BulkStore, DataStore as _, Error, Event, ExportFrom, Packet, ProcessInstance,
    QueueMessage, Record, Result, StoreStats, observe,
};

use super::PROVIDER;
use super::store::{SqliteStore, decode};
use super::writer::{read_snapshot, store_counters};
use crate::bulk::{self, BulkSql, ImportRows, Style, counters_after, event_keys, limit};
use crate::plan::StateKeys;
use crate::schema::{from_db, to_db};

/// SQLite's statements: `?` placeholders, row-value keysets (SQLite turns them into index
/// ranges).
struct Statements {
    export: BulkSql,
    events: String,
    aggregates: String,
    processes: String,
    queue: String,
    offsets: String,
}

static SQL: LazyLock<Statements> = LazyLock::new(|| {
    let style = Style { tables: "", numbered: false, row_values: true };
    Statements {
        export: BulkSql::new(style),
        events: bulk::EVENTS.insert_one(style),
        aggregates: bulk::AGGREGATES.insert_one(style),
        processes: bulk::PROCESSES.insert_one(style),
        queue: bulk::QUEUE.insert_one(style),
        offsets: bulk::OFFSETS.insert_one(style),
    }
});

impl BulkStore for SqliteStore {
    async fn stats(&self) -> Result<StoreStats> {
        let app = self.app_key();
        let counts: [i64; 5] = self.shared.read("stats", "counting records", |conn| {
            conn.prepare_cached(&SQL.export.stats)?.query_row(params![app, app, app, app, app], |r| {
                Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?])
            })
        })?;
        let [aggregates, processes, offsets, queue, events] = counts.map(from_db);
        Ok(StoreStats { aggregates, processes, offsets, queue, events })
    }

    async fn export_page(&self, from: ExportFrom, limit: usize) -> Result<Vec<Record>> {
        observe::bulk_span(PROVIDER, self.app_key(), false, limit).in_scope(|| self.export(from, limit))
    }

    async fn import(&self, records: Vec<Record>) -> Result<()> {
        let span = observe::bulk_span(PROVIDER, self.app_key(), true, records.len());
        let result = async {
            let committer = self.committer.read().await;
            committer.as_ref().ok_or(Error::Closed)?.import(records).await
        }
        .instrument(span.clone())
        .await;
        observe::record(&span, result)
    }
}

impl SqliteStore {
    /// One export page, read inline.
    fn export(&self, from: ExportFrom, n: usize) -> Result<Vec<Record>> {
        let (app, n, sql) = (self.app_key(), limit(n), &SQL.export);
        match from {
            ExportFrom::Aggregates(after) => {
                let row = |r: &Row<'_>| {
                    Ok(Record::Aggregate(AggregateMetaData {
                        handler_key: r.get(0)?,
                        instance_id: r.get(1)?,
                        revision: from_db(r.get(2)?),
                        last_event_id: r.get(3)?,
                    }))
                };
                match &after {
                    None => self.page(&sql.aggregates_first, &[&app, &n], row),
                    Some((h, i)) => self.page(&sql.aggregates_after, &[&app, h, i, &n], row),
                }
            }
            ExportFrom::Processes(after) => {
                let row = |r: &Row<'_>| {
                    Ok(Record::Process(ProcessInstance {
                        handler_key: r.get(0)?,
                        instance_id: r.get(1)?,
                        revision: from_db(r.get(2)?),
                        packet: Packet { media_type: r.get(3)?, data: r.get(4)? },
                    }))
                };
                match &after {
                    None => self.page(&sql.processes_first, &[&app, &n], row),
                    Some((h, i)) => self.page(&sql.processes_after, &[&app, h, i, &n], row),
                }
            }
            ExportFrom::Offsets(after) => {
                let row = |r: &Row<'_>| {
                    Ok(Record::Offset { application_key: r.get(0)?, next_offset: from_db(r.get(1)?) })
                };
                match &after {
                    None => self.page(&sql.offsets_first, &[&app, &n], row),
                    Some(source) => self.page(&sql.offsets_after, &[&app, source, &n], row),
                }
            }
            ExportFrom::Queue(after) => {
                let row = |r: &Row<'_>| {
                    let raw: (i64, i64, i64, i64, Vec<u8>) =
                        (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
                    Ok(raw)
                };
                let rows = match after {
                    None => self.page(&sql.queue_first, &[&app, &n], row)?,
                    Some(key) => {
                        let (at, sequence, id) =
                            (key.next_attempt_at.0, to_db(key.sequence), &key.message_id);
                        self.page(&sql.queue_after, &[&app, &at, &sequence, id, &n], row)?
                    }
                };
                rows.into_iter()
                    .map(|(revision, failure_count, at, sequence, envelope)| {
                        Ok(Record::Queue {
                            sequence: from_db(sequence),
                            message: QueueMessage {
                                revision: from_db(revision),
                                failure_count: from_db(failure_count),
                                next_attempt_at: Micros(at).to_system_time(),
                                envelope: decode(app, "a queue message", &envelope)?,
                            },
                        })
                    })
                    .collect()
            }
            ExportFrom::Events(offset) => {
                // Offsets stay far below 2^63: a larger start matches nothing.
                let offset = i64::try_from(offset).unwrap_or(i64::MAX);
                let row = |r: &Row<'_>| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?));
                let rows = self.page(&sql.events, &[&app, &offset, &n], row)?;
                rows.into_iter()
                    .map(|(offset, envelope)| {
                        let envelope = decode(app, "an event", &envelope)?;
                        Ok(Record::Event(Event { offset: from_db(offset), envelope }))
                    })
                    .collect()
            }
        }
    }

    /// Runs one page statement on a read connection.
    fn page<T>(
        &self,
        sql: &str,
        params: &[&dyn ToSql],
        row: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        self.shared.read("export", "exporting records", |conn| {
            conn.prepare_cached(sql)?.query_map(params, row)?.collect()
        })
    }
}

/// Imports `records` in one immediate transaction on the writer connection (the writer's job
/// for [`crate::group::Committer::import`]): checks them against the stored state, inserts
/// every row verbatim and advances the counters. On error the transaction rolls back.
pub(super) fn import(conn: &mut Connection, app_key: &str, records: &[Record]) -> Result<()> {
    let err = |what: &'static str| {
        move |e: rusqlite::Error| Error::storage(format!("sqlite: {what} for application {app_key:?}"), e)
    };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err("beginning an import transaction"))?;
    let (mut snapshot, stored) = read_snapshot(&tx, app_key, StateKeys::of_records(records))?;
    check_import(records, snapshot.next_offset, &mut snapshot)?;
    let before = (snapshot.next_offset, snapshot.next_sequence);
    insert(&tx, app_key, &ImportRows::of(records)?).map_err(err("importing records"))?;
    let after = counters_after(records, before);
    if stored != Some(after) {
        store_counters(&tx, app_key, after).map_err(err("storing the application counters"))?;
    }
    tx.commit().map_err(err("committing an import"))
}

fn insert(tx: &Transaction<'_>, app: &str, rows: &ImportRows<'_>) -> rusqlite::Result<()> {
    let sql = &*SQL;
    for m in &rows.aggregates {
        tx.prepare_cached(&sql.aggregates)?.execute(params![
            app,
            m.handler_key,
            m.instance_id,
            to_db(m.revision),
            m.last_event_id
        ])?;
    }
    for p in &rows.processes {
        tx.prepare_cached(&sql.processes)?.execute(params![
            app,
            p.handler_key,
            p.instance_id,
            to_db(p.revision),
            p.packet.media_type,
            p.packet.data
        ])?;
    }
    for (source, next_offset) in &rows.offsets {
        tx.prepare_cached(&sql.offsets)?.execute(params![app, source, to_db(*next_offset)])?;
    }
    for q in &rows.queue {
        let (owner_key, owner_id) = q.timeout_owner.unzip();
        tx.prepare_cached(&sql.queue)?.execute(params![
            app,
            q.message.id(),
            to_db(q.message.revision),
            to_db(q.message.failure_count),
            q.next_attempt_at.0,
            to_db(q.sequence),
            owner_key,
            owner_id,
            q.message.envelope.to_bytes(),
        ])?;
    }
    for e in &rows.events {
        let [id, name, handler, instance] = event_keys(&e.envelope);
        tx.prepare_cached(&sql.events)?.execute(params![
            app,
            to_db(e.offset),
            id,
            name,
            handler,
            instance,
            e.envelope.to_bytes()
        ])?;
    }
    Ok(())
}
