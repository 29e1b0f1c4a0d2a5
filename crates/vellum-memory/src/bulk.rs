//! Bulk export and import ([`vellum_core::bulk`]) of a memory store.
//!
//! Aggregates, processes and offsets live in hash maps, so a page of them sorts the keys past
//! the resume point: fine for a provider whose data fits in memory anyway.

use vellum_core::provider::observe;
use vellum_core::provider::plan_import;
use vellum_core::verify::Report;
use vellum_core::{
    AggregateMetaData, BulkStore, DataStore, ExportFrom, ProcessInstance, Record, Result, StoreStats,
};

use crate::database::Database;
use crate::store::MemoryStore;

impl BulkStore for MemoryStore {
    async fn stats(&self) -> Result<StoreStats> {
        Ok(self.read()?.stats())
    }

    async fn export_page(&self, from: ExportFrom, limit: usize) -> Result<Vec<Record>> {
        let _span = observe::bulk_span("memory", self.app_key(), false, limit).entered();
        Ok(self.read()?.export(from, limit))
    }

    async fn import(&self, records: Vec<Record>) -> Result<()> {
        let span = observe::bulk_span("memory", self.app_key(), true, records.len());
        let _entered = span.enter();
        let result = self.write().and_then(|mut db| {
            let counters = db.counters();
            let plan = plan_import(&records, &mut *db, counters)?;
            db.apply(&plan);
            Ok(())
        });
        observe::record(&span, result)
    }

    async fn verify(&self, progress: &mut (dyn FnMut(u64) + Send)) -> Result<Report> {
        Ok(self.read()?.verify(progress))
    }
}

impl Database {
    fn stats(&self) -> StoreStats {
        StoreStats {
            aggregates: self.aggregates.len() as u64,
            processes: self.processes.len() as u64,
            offsets: self.offsets.len() as u64,
            queue: self.queue.len() as u64,
            events: self.events.next_offset(),
        }
    }

    fn export(&self, from: ExportFrom, limit: usize) -> Vec<Record> {
        match from {
            ExportFrom::Aggregates(after) => {
                let page =
                    page_after(self.aggregates.iter().map(|(h, i, v)| ((h, i), v)), after.as_ref(), limit);
                page.into_iter()
                    .map(|((h, i), (revision, last_event_id))| {
                        Record::Aggregate(AggregateMetaData {
                            handler_key: h.to_owned(),
                            instance_id: i.to_owned(),
                            revision: *revision,
                            last_event_id: last_event_id.clone(),
                        })
                    })
                    .collect()
            }
            ExportFrom::Processes(after) => {
                let page =
                    page_after(self.processes.iter().map(|(h, i, v)| ((h, i), v)), after.as_ref(), limit);
                page.into_iter()
                    .map(|((h, i), (revision, packet))| {
                        Record::Process(ProcessInstance {
                            handler_key: h.to_owned(),
                            instance_id: i.to_owned(),
                            revision: *revision,
                            packet: packet.clone(),
                        })
                    })
                    .collect()
            }
            ExportFrom::Offsets(after) => {
                let mut keys: Vec<(&String, &u64)> =
                    self.offsets.iter().filter(|(k, _)| after.as_ref().is_none_or(|a| *k > a)).collect();
                keys.sort_unstable();
                keys.truncate(limit);
                keys.into_iter()
                    .map(|(k, v)| Record::Offset { application_key: k.clone(), next_offset: *v })
                    .collect()
            }
            ExportFrom::Queue(after) => self
                .queue
                .after(after.as_ref(), limit)
                .into_iter()
                .map(|(sequence, message)| Record::Queue { sequence, message })
                .collect(),
            ExportFrom::Events(from) => {
                self.events.slice(from, limit).into_iter().map(Record::Event).collect()
            }
        }
    }
}

/// The first `limit` entries whose `(handler key, instance id)` sorts after `after`.
fn page_after<'a, V>(
    entries: impl Iterator<Item = ((&'a str, &'a str), V)>,
    after: Option<&(String, String)>,
    limit: usize,
) -> Vec<((&'a str, &'a str), V)> {
    let mut page: Vec<_> =
        entries.filter(|(key, _)| after.is_none_or(|(h, i)| *key > (h.as_str(), i.as_str()))).collect();
    page.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    page.truncate(limit);
    page
}
