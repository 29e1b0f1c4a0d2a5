//! Bulk export and import ([`vellum_core::bulk`]) of a redb store.
//!
//! An export page is one range scan of an ordered table starting just past the resume key, so
//! it costs what it returns, whatever the table's size: aggregates and processes in
//! `(handler key, instance ID)` order, offsets by source key, the queue through `queue_order`
//! (queue order) and events by offset.
//!
//! An import is a unit of work of the store's writer, like a group of batches, with a write
//! transaction of its own: it is planned (`vellum_core::provider::plan_import`, which checks it)
//! against that transaction and applied by the same code as batches.

use std::ops::Bound;

use redb::{Key, ReadableTableMetadata, TableDefinition, Value};
use vellum_core::provider::observe;
use vellum_core::verify::Report;
use vellum_core::{
    AggregateMetaData, BulkStore, DataStore, Event, ExportFrom, Packet, ProcessInstance, QueueKey, Record,
    Result, StoreStats,
};

use crate::PROVIDER;
use crate::file::OrStorage;
use crate::layout::{AGGREGATES, EVENTS, OFFSETS, PROCESSES, QUEUE, QUEUE_ORDER};
use crate::store::RedbStore;
use crate::tables::Reader;

/// The most records a page pre-allocates room for, so a huge `limit` costs nothing up front.
const MAX_PREALLOCATED: usize = 1024;

impl BulkStore for RedbStore {
    async fn stats(&self) -> Result<StoreStats> {
        // Not `Reader::stats`: that names one `Reader<'a>`, the closure any of them.
        #[allow(clippy::redundant_closure_for_method_calls)]
        self.read("stats", |r| r.stats())
    }

    async fn export_page(&self, from: ExportFrom, limit: usize) -> Result<Vec<Record>> {
        // The span is made before the page is read, so its `records` is the page size asked for.
        let span = observe::bulk_span(PROVIDER, self.app_key(), false, limit);
        self.read_in(&span, |r| r.export(&from, limit))
    }

    async fn import(&self, records: Vec<Record>) -> Result<()> {
        self.writes().import(records).await
    }

    async fn verify(&self, progress: &mut (dyn FnMut(u64) + Send)) -> Result<Report> {
        let checked = self.integrity_checked_at_open();
        self.read("verify", |r| r.verify(checked, progress))
    }
}

impl Reader<'_> {
    /// Record counts: the length of each table, and the next offset for events (dense).
    pub(crate) fn stats(&self) -> Result<StoreStats> {
        Ok(StoreStats {
            aggregates: self.count(AGGREGATES)?,
            processes: self.count(PROCESSES)?,
            offsets: self.count(OFFSETS)?,
            queue: self.count(QUEUE)?,
            events: self.next_event_offset()?,
        })
    }

    fn count<K: Key + 'static, V: Value + 'static>(&self, table: TableDefinition<K, V>) -> Result<u64> {
        self.txn.open_table(table).or_storage(self.file)?.len().or_storage(self.file)
    }

    /// Up to `limit` records of `from`'s section, starting just after its key.
    pub(crate) fn export(&self, from: &ExportFrom, limit: usize) -> Result<Vec<Record>> {
        match from {
            ExportFrom::Aggregates(after) => self.aggregates(after.as_ref(), limit),
            ExportFrom::Processes(after) => self.processes(after.as_ref(), limit),
            ExportFrom::Offsets(after) => self.offsets(after.as_deref(), limit),
            ExportFrom::Queue(after) => self.queue_page(after.as_ref(), limit),
            ExportFrom::Events(from) => {
                Ok(self.all_events(*from, limit)?.into_iter().map(Record::Event).collect())
            }
        }
    }

    fn aggregates(&self, after: Option<&(String, String)>, limit: usize) -> Result<Vec<Record>> {
        let file = self.file;
        let table = self.txn.open_table(AGGREGATES).or_storage(file)?;
        let mut page = Vec::with_capacity(limit.min(MAX_PREALLOCATED));
        for entry in table.range::<(&str, &str)>(after_pair(after)).or_storage(file)?.take(limit) {
            let (key, value) = entry.or_storage(file)?;
            let (handler_key, instance_id) = key.value();
            let record = self.codec.aggregate(handler_key, instance_id, value.value())?;
            page.push(Record::Aggregate(AggregateMetaData {
                handler_key: handler_key.to_owned(),
                instance_id: instance_id.to_owned(),
                revision: record.revision,
                last_event_id: record.last_event_id,
            }));
        }
        Ok(page)
    }

    fn processes(&self, after: Option<&(String, String)>, limit: usize) -> Result<Vec<Record>> {
        let file = self.file;
        let table = self.txn.open_table(PROCESSES).or_storage(file)?;
        let mut page = Vec::with_capacity(limit.min(MAX_PREALLOCATED));
        for entry in table.range::<(&str, &str)>(after_pair(after)).or_storage(file)?.take(limit) {
            let (key, value) = entry.or_storage(file)?;
            let (handler_key, instance_id) = key.value();
            let record = self.codec.process(handler_key, instance_id, value.value())?;
            page.push(Record::Process(ProcessInstance {
                handler_key: handler_key.to_owned(),
                instance_id: instance_id.to_owned(),
                revision: record.revision,
                packet: Packet { media_type: record.media_type, data: record.data },
            }));
        }
        Ok(page)
    }

    fn offsets(&self, after: Option<&str>, limit: usize) -> Result<Vec<Record>> {
        let file = self.file;
        let table = self.txn.open_table(OFFSETS).or_storage(file)?;
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut page = Vec::with_capacity(limit.min(MAX_PREALLOCATED));
        for entry in table.range::<&str>((start, Bound::Unbounded)).or_storage(file)?.take(limit) {
            let (key, value) = entry.or_storage(file)?;
            let next_offset = self.codec.offset(key.value(), value.value())?;
            page.push(Record::Offset { application_key: key.value().to_owned(), next_offset });
        }
        Ok(page)
    }

    /// Queue messages in queue order, through the `queue_order` index.
    fn queue_page(&self, after: Option<&QueueKey>, limit: usize) -> Result<Vec<Record>> {
        let file = self.file;
        // Index keys are (time, sequence, ID), the queue order; a page starts strictly after.
        let start = match after {
            None => Bound::Unbounded,
            Some(k) => Bound::Excluded((k.next_attempt_at.0, k.sequence, k.message_id.as_str())),
        };
        let order = self.txn.open_table(QUEUE_ORDER).or_storage(file)?;
        let queue = self.txn.open_table(QUEUE).or_storage(file)?;
        let mut page = Vec::with_capacity(limit.min(MAX_PREALLOCATED));
        for entry in order.range::<(i64, u64, &str)>((start, Bound::Unbounded)).or_storage(file)?.take(limit)
        {
            let (key, _) = entry.or_storage(file)?;
            let (sequence, message) = self.queued(&queue, key.value())?;
            page.push(Record::Queue { sequence, message });
        }
        Ok(page)
    }

    /// Up to `limit` events from offset `from` on, whatever their type, checked dense.
    pub(crate) fn all_events(&self, from: u64, limit: usize) -> Result<Vec<Event>> {
        let file = self.file;
        let events = self.txn.open_table(EVENTS).or_storage(file)?;
        let mut page = Vec::with_capacity(limit.min(MAX_PREALLOCATED));
        for (expected, entry) in (from..).zip(events.range(from..).or_storage(file)?.take(limit)) {
            let (key, value) = entry.or_storage(file)?;
            let offset = key.value();
            // The log is dense: a gap means a record was lost (docs/integrity.md).
            if offset != expected {
                return Err(self.codec.corrupt(
                    &format_args!("event at offset {expected}"),
                    format!("is missing (the next stored event is at offset {offset})"),
                ));
            }
            let (envelope, _) = self.codec.event(offset, value.value())?;
            page.push(Event { offset, envelope });
        }
        Ok(page)
    }
}

/// A range of `(handler key, instance ID)` keys.
type PairRange<'a> = (Bound<(&'a str, &'a str)>, Bound<(&'a str, &'a str)>);

/// The range of `(handler key, instance ID)` keys strictly after `after` (all when `None`).
fn after_pair(after: Option<&(String, String)>) -> PairRange<'_> {
    let start = after.map_or(Bound::Unbounded, |(h, i)| Bound::Excluded((h.as_str(), i.as_str())));
    (start, Bound::Unbounded)
}

#[cfg(test)]
mod tests;
