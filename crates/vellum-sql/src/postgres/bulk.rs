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
                        Ok(Record::Aggregate(AggregateMetaData {
                            handler_key: s.get(row, 0, doing)?,
                            instance_id: s.get(row, 1, doing)?,
                            revision: from_db(s.get(row, 2, doing)?),
                            last_event_id: s.get(row, 3, doing)?,
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
                        Ok(Record::Process(ProcessInstance {
                            handler_key: s.get(row, 0, doing)?,
                            instance_id: s.get(row, 1, doing)?,
                            revision: from_db(s.get(row, 2, doing)?),
                            packet: Packet::new(
                                s.get::<String>(row, 3, doing)?,
                                s.get::<Vec<u8>>(row, 4, doing)?,
                            ),
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
                        Ok(Record::Offset {
                            application_key: s.get(row, 0, doing)?,
                            next_offset: from_db(s.get(row, 1, doing)?),
                        })
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
                        let bytes: &[u8] = s.get(row, 4, doing)?;
                        Ok(Record::Queue {
                            sequence: from_db(s.get(row, 3, doing)?),
                            message: QueueMessage {
                                revision: from_db(s.get(row, 0, doing)?),
                                failure_count: from_db(s.get(row, 1, doing)?),
                                next_attempt_at: Micros(s.get(row, 2, doing)?).to_system_time(),
                                envelope: s.envelope(bytes, doing)?,
                            },
                        })
                    })
                    .collect()
            }
            ExportFrom::Events(offset) => {
                // Offsets stay far below 2^63: a larger start matches nothing.
                let Ok(offset) = i64::try_from(offset) else { return Ok(Vec::new()) };
                let rows = s.query(doing, &sql.events, &[&app, &offset, &n]).await?;
                Ok(s.events_of(&rows, doing)?.into_iter().map(Record::Event).collect())
            }
        }
    }
}
