//! Bulk export and import ([`vellum_core::bulk`]) of a redb store.
//!
//! An export page is one range scan of an ordered table starting just past the resume key, so
//! it costs what it returns, whatever the table's size: aggregates and processes in
//! `(handler key, instance ID)` order, offsets by source key, the queue through `queue_order`
//! (queue order) and events by offset.
//!
//! An import is a request to the store's writer thread, like a batch, but it gets a write
//! transaction of its own between two commit groups: it never interleaves with batches, and the
//! counters (next offset, next enqueue sequence) are read and written by the one writer as
//! always. It is checked ([`check_import`]) inside that transaction, so the check sees exactly
//! the state it writes over; on any error the transaction is dropped, which aborts it.

use std::ops::Bound;
use std::sync::atomic::Ordering;

use redb::{Key, ReadableTableMetadata, TableDefinition, Value};
use tracing::{Instrument as _, Span};
use vellum_core::bulk::{ImportError, check_import};
use vellum_core::eval::Effect;
use vellum_core::time::Micros;
use vellum_core::{
    AggregateMetaData, BulkStore, DataStore, Event, ExportFrom, Packet, ProcessInstance, QueueKey, Record,
    Result, StoreStats, observe,
};

use crate::PROVIDER;
use crate::file::{OpenFile, OrStorage, decode};
use crate::layout::{
    AGGREGATES, AggregateRecord, EVENTS, OFFSETS, PROCESSES, ProcessRecord, QUEUE, QUEUE_ORDER,
};
use crate::store::RedbStore;
use crate::tables::{Reader, WriteTables};
use crate::writer::{ImportRequest, Msg};

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
        let span = observe::bulk_span(PROVIDER, self.app_key(), true, records.len());
        let request = |reply, ticket| {
            // The writer thread does the work: hand it this span so the work shows inside it.
            Msg::Import(ImportRequest { records, reply, ticket, span: Span::current() })
        };
        let outcome = self.call(request).instrument(span.clone()).await;
        observe::record(&span, outcome)
    }
}

/// Checks and writes `records` in one write transaction; on the writer thread only. On error
/// nothing is written: the transaction is dropped uncommitted, which aborts it.
pub(crate) fn import(file: &OpenFile, records: &[Record]) -> Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let path = file.path.as_path();
    let txn = file.db.begin_write().or_storage(path)?;
    {
        let mut tables = WriteTables::open(&txn, path)?;
        let next_offset = tables.next_offset();
        check_import(records, next_offset, &mut tables)?;
        for (index, record) in records.iter().enumerate() {
            write(&mut tables, index, record)?;
        }
        tables.finish()?;
    }
    txn.commit().or_storage(path)?;
    file.commits.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Writes one record that [`check_import`] accepted, keeping its revision, offset and queue
/// sequence. Aggregates, processes and offsets are plain puts, so they reuse the effects a
/// batch writes; queue messages and events need their bookkeeping kept, not assigned.
fn write(tables: &mut WriteTables<'_>, index: usize, record: &Record) -> Result<()> {
    match record {
        Record::Aggregate(meta) => {
            tables.apply(&[Effect::PutAggregate { meta, revision: meta.revision }])?;
        }
        Record::Process(instance) => {
            tables.apply(&[Effect::PutProcess { instance, revision: instance.revision }])?;
        }
        Record::Offset { application_key, next_offset } => {
            tables.apply(&[Effect::PutOffset { application_key, next_offset: *next_offset }])?;
        }
        Record::Queue { sequence, message } => {
            // check_import refused unstorable times already; this only avoids a panic path.
            let at = Micros::from_system_time(message.next_attempt_at)
                .ok_or_else(|| ImportError::TimeOutOfRange { index, record: record.describe() })?;
            tables.put_queue(*sequence, message.revision, message, at)?;
        }
        Record::Event(event) => {
            // check_import verified that the events continue the log, so the next offset is
            // the event's own; a mismatch would mean a broken log, so refuse rather than shift.
            let expected = tables.next_offset();
            if event.offset != expected {
                return Err(ImportError::OffsetGap { index, record: record.describe(), expected }.into());
            }
            tables.append_event(&event.envelope)?;
        }
    }
    Ok(())
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
            ExportFrom::Events(from) => self.event_page(*from, limit),
        }
    }

    fn aggregates(&self, after: Option<&(String, String)>, limit: usize) -> Result<Vec<Record>> {
        let file = self.file;
        let table = self.txn.open_table(AGGREGATES).or_storage(file)?;
        let mut page = Vec::with_capacity(limit.min(MAX_PREALLOCATED));
        for entry in table.range::<(&str, &str)>(after_pair(after)).or_storage(file)?.take(limit) {
            let (key, value) = entry.or_storage(file)?;
            let (handler_key, instance_id) = key.value();
            let record: AggregateRecord = decode(value.value(), file, "aggregate record")?;
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
            let record: ProcessRecord = decode(value.value(), file, "process record")?;
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
            page.push(Record::Offset { application_key: key.value().to_owned(), next_offset: value.value() });
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
            let (_, _, id) = key.value();
            let (sequence, message) = self.queued(&queue, id)?;
            page.push(Record::Queue { sequence, message });
        }
        Ok(page)
    }

    /// Events from offset `from` on, whatever their type.
    fn event_page(&self, from: u64, limit: usize) -> Result<Vec<Record>> {
        let file = self.file;
        let events = self.txn.open_table(EVENTS).or_storage(file)?;
        let mut page = Vec::with_capacity(limit.min(MAX_PREALLOCATED));
        for entry in events.range(from..).or_storage(file)?.take(limit) {
            let (key, value) = entry.or_storage(file)?;
            let envelope = decode(value.value(), file, "event envelope")?;
            page.push(Record::Event(Event { offset: key.value(), envelope }));
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
