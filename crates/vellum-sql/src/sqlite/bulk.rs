//! Bulk export ([`vellum_core::BulkStore`]) of a SQLite store.
//!
//! Export pages are inline reads on the store's read connections, like every other read.
//! An import is a unit of work of the store's writer, planned and applied like a group of
//! batches (see `writer.rs`).

use std::sync::LazyLock;

use rusqlite::{Row, ToSql, params};
use vellum_core::time::Micros;
use vellum_core::{
    AggregateMetaData, Event, ExportFrom, Packet, ProcessInstance, QueueMessage, Record, Result, StoreStats,
};

use super::reads::{SqliteReads, decode};
use crate::bulk::{BulkSql, Style, limit};
use crate::schema::{from_db, to_db};

/// SQLite's export statements: `?` placeholders, row-value keysets (SQLite turns them into
/// index ranges).
static SQL: LazyLock<BulkSql> =
    LazyLock::new(|| BulkSql::new(Style { tables: "", numbered: false, row_values: true }));

impl SqliteReads {
    /// Record counts.
    pub(super) fn counts(&self) -> Result<StoreStats> {
        let app = self.app_key();
        let counts: [i64; 5] = self.with("counting records", |conn| {
            conn.prepare_cached(&SQL.stats)?.query_row(params![app, app, app, app, app], |r| {
                Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?])
            })
        })?;
        let [aggregates, processes, offsets, queue, events] = counts.map(from_db);
        Ok(StoreStats { aggregates, processes, offsets, queue, events })
    }

    /// One export page, read inline.
    pub(super) fn export_rows(&self, from: ExportFrom, n: usize) -> Result<Vec<Record>> {
        let (app, n, sql) = (self.app_key(), limit(n), &*SQL);
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
        self.with("exporting records", |conn| conn.prepare_cached(sql)?.query_map(params, row)?.collect())
    }
}
