//! Bulk export ([`vellum_core::BulkStore`]) of a PostgreSQL store.
//!
//! Export pages are pooled reads with cached prepared statements (keysets on the `C`-collated
//! primary keys and the queue-order index). An import is a unit of work of the store's writer,
//! planned and written like a group (see `writer.rs`), so the writer knows the counters it
//! wrote and its one-round-trip path stays correct after an import.

use vellum_core::time::Micros;
use vellum_core::{
    AggregateMetaData, ExportFrom, Packet, ProcessInstance, QueueMessage, Record, Result, StoreStats,
};

use super::reads::PostgresReads;
use super::storage;
use crate::bulk::limit;
use crate::schema::{from_db, to_db};
use crate::sums::QueueRow;

impl PostgresReads {
    /// Record counts.
    pub(super) async fn counts(&self) -> Result<StoreStats> {
        let app = self.app_key.as_str();
        let doing = "counting records";
        let rows = self.query(doing, &self.sql.bulk.stats, &[&app, &app, &app, &app, &app]).await?;
        let row = rows.first().ok_or_else(|| storage(app, doing, "no row returned"))?;
        let mut counts = [0; 5];
        for (i, count) in counts.iter_mut().enumerate() {
            *count = from_db(self.get::<i64>(row, i, doing)?);
        }
        let [aggregates, processes, offsets, queue, events] = counts;
        Ok(StoreStats { aggregates, processes, offsets, queue, events })
    }

    /// One export page.
    #[allow(clippy::too_many_lines)] // one arm per section, each a statement and its row check
    pub(super) async fn export_rows(&self, from: ExportFrom, n: usize) -> Result<Vec<Record>> {
        let s = self;
        let (app, n, sql) = (s.app_key.as_str(), limit(n), &s.sql.bulk);
        let doing = "exporting records";
        match from {
            ExportFrom::Aggregates(after) => {
                let rows = match &after {
                    None => s.query(doing, &sql.aggregates_first, &[&app, &n]).await?,
                    Some((h, i)) => s.query(doing, &sql.aggregates_after, &[&app, h, i, &n]).await?,
                };
                rows.iter()
                    .map(|row| {
                        let (handler_key, instance_id): (String, String) =
                            (s.get(row, 0, doing)?, s.get(row, 1, doing)?);
                        let (revision, last_event_id): (i64, String) =
                            (s.get(row, 2, doing)?, s.get(row, 3, doing)?);
                        s.rows().aggregate(
                            &handler_key,
                            &instance_id,
                            revision,
                            &last_event_id,
                            s.get(row, 4, doing)?,
                        )?;
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
                let rows = match &after {
                    None => s.query(doing, &sql.processes_first, &[&app, &n]).await?,
                    Some((h, i)) => s.query(doing, &sql.processes_after, &[&app, h, i, &n]).await?,
                };
                rows.iter()
                    .map(|row| {
                        let (handler_key, instance_id): (String, String) =
                            (s.get(row, 0, doing)?, s.get(row, 1, doing)?);
                        let revision: i64 = s.get(row, 2, doing)?;
                        let (media_type, data): (String, Vec<u8>) =
                            (s.get(row, 3, doing)?, s.get(row, 4, doing)?);
                        let sum = s.get(row, 5, doing)?;
                        s.rows().process(&handler_key, &instance_id, revision, &media_type, &data, sum)?;
                        Ok(Record::Process(ProcessInstance {
                            handler_key,
                            instance_id,
                            revision: from_db(revision),
                            packet: Packet::new(media_type, data),
                        }))
                    })
                    .collect()
            }
            ExportFrom::Offsets(after) => {
                let rows = match &after {
                    None => s.query(doing, &sql.offsets_first, &[&app, &n]).await?,
                    Some(source) => s.query(doing, &sql.offsets_after, &[&app, source, &n]).await?,
                };
                rows.iter()
                    .map(|row| {
                        let (application_key, next_offset): (String, i64) =
                            (s.get(row, 0, doing)?, s.get(row, 1, doing)?);
                        s.rows().offset(&application_key, next_offset, s.get(row, 2, doing)?)?;
                        Ok(Record::Offset { application_key, next_offset: from_db(next_offset) })
                    })
                    .collect()
            }
            ExportFrom::Queue(after) => {
                let rows = match after {
                    None => s.query(doing, &sql.queue_first, &[&app, &n]).await?,
                    Some(key) => {
                        let (at, sequence, id) =
                            (key.next_attempt_at.0, to_db(key.sequence), &key.message_id);
                        s.query(doing, &sql.queue_after, &[&app, &at, &sequence, id, &n]).await?
                    }
                };
                rows.iter()
                    .map(|row| {
                        let q = QueueRow {
                            revision: s.get(row, 0, doing)?,
                            failure_count: s.get(row, 1, doing)?,
                            next_attempt_at: s.get(row, 2, doing)?,
                            sequence: s.get(row, 3, doing)?,
                            envelope: s.get(row, 4, doing)?,
                            message_id: s.get(row, 5, doing)?,
                            envelope_sum: s.get(row, 6, doing)?,
                            state_sum: s.get(row, 7, doing)?,
                        };
                        Ok(Record::Queue {
                            sequence: from_db(q.sequence),
                            message: QueueMessage {
                                revision: from_db(q.revision),
                                failure_count: from_db(q.failure_count),
                                next_attempt_at: Micros(q.next_attempt_at).to_system_time(),
                                envelope: s.rows().queue(&q)?,
                            },
                        })
                    })
                    .collect()
            }
            ExportFrom::Events(offset) => {
                // Offsets stay far below 2^63: a larger start matches nothing.
                let Ok(offset) = i64::try_from(offset) else { return Ok(Vec::new()) };
                let rows = s.query(doing, &sql.events, &[&app, &offset, &n]).await?;
                Ok(s.events_of(&rows, doing, None, Some(offset))?.into_iter().map(Record::Event).collect())
            }
        }
    }
}
