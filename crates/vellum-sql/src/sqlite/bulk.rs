//! Bulk export ([`vellum_core::BulkStore`]) of a SQLite store.
//!
//! Export pages are inline reads on the store's read connections, like every other read.
//! An import is a unit of work of the store's writer, planned and applied like a group of
//! batches (see `writer.rs`).

use std::sync::LazyLock;

use rusqlite::{Row, ToSql, params};
use vellum_core::time::Micros;
use vellum_core::{
    AggregateMetaData, ExportFrom, Packet, ProcessInstance, QueueMessage, Record, Result, StoreStats,
};

use super::reads::SqliteReads;
use crate::bulk::{BulkSql, Style, limit};
use crate::schema::{from_db, to_db};
use crate::sums::QueueRow;

/// SQLite's export statements: `?` placeholders, row-value keysets (SQLite turns them into
/// index ranges).
pub(super) static SQL: LazyLock<BulkSql> =
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
    #[allow(clippy::too_many_lines)] // one arm per section, each a statement and its row check
    pub(super) fn export_rows(&self, from: ExportFrom, n: usize) -> Result<Vec<Record>> {
        let (app, n, sql) = (self.app_key(), limit(n), &*SQL);
        let rows = self.rows();
        match from {
            ExportFrom::Aggregates(after) => {
                let row = |r: &Row<'_>| {
                    let raw: (String, String, i64, String, i64) =
                        (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
                    Ok(raw)
                };
                let page = match &after {
                    None => self.page(&sql.aggregates_first, &[&app, &n], row)?,
                    Some((h, i)) => self.page(&sql.aggregates_after, &[&app, h, i, &n], row)?,
                };
                page.into_iter()
                    .map(|(handler_key, instance_id, revision, last_event_id, sum)| {
                        rows.aggregate(&handler_key, &instance_id, revision, &last_event_id, sum)?;
                        Ok(Record::Aggregate(AggregateMetaData {
                            handler_key,
                            instance_id,
                            revision: from_db(revision),
                            last_event_id,
                        }))
                    })
                    .collect()
            }
            ExportFrom::Processes(after) => {
                let row = |r: &Row<'_>| {
                    let raw: (String, String, i64, String, Vec<u8>, i64) =
                        (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?);
                    Ok(raw)
                };
                let page = match &after {
                    None => self.page(&sql.processes_first, &[&app, &n], row)?,
                    Some((h, i)) => self.page(&sql.processes_after, &[&app, h, i, &n], row)?,
                };
                page.into_iter()
                    .map(|(handler_key, instance_id, revision, media_type, data, sum)| {
                        rows.process(&handler_key, &instance_id, revision, &media_type, &data, sum)?;
                        Ok(Record::Process(ProcessInstance {
                            handler_key,
                            instance_id,
                            revision: from_db(revision),
                            packet: Packet { media_type, data },
                        }))
                    })
                    .collect()
            }
            ExportFrom::Offsets(after) => {
                let row =
                    |r: &Row<'_>| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?));
                let page = match &after {
                    None => self.page(&sql.offsets_first, &[&app, &n], row)?,
                    Some(source) => self.page(&sql.offsets_after, &[&app, source, &n], row)?,
                };
                page.into_iter()
                    .map(|(application_key, next_offset, sum)| {
                        rows.offset(&application_key, next_offset, sum)?;
                        Ok(Record::Offset { application_key, next_offset: from_db(next_offset) })
                    })
                    .collect()
            }
            ExportFrom::Queue(after) => {
                let row = |r: &Row<'_>| {
                    let raw: (i64, i64, i64, i64, Vec<u8>, String, i64, i64) = (
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                        r.get(7)?,
                    );
                    Ok(raw)
                };
                let page = match after {
                    None => self.page(&sql.queue_first, &[&app, &n], row)?,
                    Some(key) => {
                        let (at, sequence, id) =
                            (key.next_attempt_at.0, to_db(key.sequence), &key.message_id);
                        self.page(&sql.queue_after, &[&app, &at, &sequence, id, &n], row)?
                    }
                };
                page.into_iter()
                    .map(
                        |(
                            revision,
                            failure_count,
                            at,
                            sequence,
                            envelope,
                            message_id,
                            envelope_sum,
                            state_sum,
                        )| {
                            let envelope = rows.queue(&QueueRow {
                                message_id: &message_id,
                                revision,
                                failure_count,
                                next_attempt_at: at,
                                sequence,
                                envelope: &envelope,
                                envelope_sum,
                                state_sum,
                            })?;
                            Ok(Record::Queue {
                                sequence: from_db(sequence),
                                message: QueueMessage {
                                    revision: from_db(revision),
                                    failure_count: from_db(failure_count),
                                    next_attempt_at: Micros(at).to_system_time(),
                                    envelope,
                                },
                            })
                        },
                    )
                    .collect()
            }
            ExportFrom::Events(offset) => {
                // Offsets stay far below 2^63: a larger start matches nothing.
                let offset = i64::try_from(offset).unwrap_or(i64::MAX);
                let row =
                    |r: &Row<'_>| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?, r.get::<_, i64>(2)?));
                let page = self.page(&sql.events, &[&app, &offset, &n], row)?;
                let mut expected = offset;
                page.into_iter()
                    .map(|(offset, envelope, sum)| {
                        // The log is dense: a gap means a row was lost or its offset damaged.
                        if offset != expected {
                            return Err(rows.corrupt(
                                "vellum_event",
                                &format_args!("event at offset {expected}"),
                                format!("is missing (the next row has offset {offset})"),
                            ));
                        }
                        expected += 1;
                        Ok(Record::Event(rows.event(offset, &envelope, sum, None)?))
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
