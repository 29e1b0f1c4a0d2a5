//! The tables of one write transaction: the stored state plans are made against, and the
//! applying of a plan. Also the reads, over a read transaction.

use std::path::Path;

use redb::{ReadOnlyTable, ReadTransaction, ReadableTable, Table, WriteTransaction};
use vellum_core::provider::PreBatchState;
use vellum_core::provider::{Counters, Plan, Write};
use vellum_core::time::Micros;
use vellum_core::{
    AggregateMetaData, Envelope, Event, EventQuery, Packet, ProcessInstance, QueueMessage, Result,
};

use crate::file::OrStorage;
use crate::layout::{
    AGGREGATES, AggregateRecord, COUNTERS, COUNTERS_CHECKSUM, EVENT_IDS, EVENTS, EVENTS_BY_SOURCE,
    EVENTS_BY_TYPE, Links, NEXT_OFFSET, NEXT_SEQUENCE, OFFSETS, PROCESSES, ProcessRecord, QUEUE, QUEUE_ORDER,
    QUEUE_TIMEOUTS, QueueRecord, SOURCE_HEADS, TYPE_HEADS,
};
use crate::records::Codec;

type StrTable<'t, V> = Table<'t, &'static str, V>;
type PairTable<'t, V> = Table<'t, (&'static str, &'static str), V>;

/// Every table, open in one write transaction.
pub(crate) struct WriteTables<'t> {
    file: &'t Path,
    codec: Codec<'t>,
    counters: StrTable<'t, u64>,
    events: Table<'t, u64, &'static [u8]>,
    event_ids: StrTable<'t, u64>,
    by_type: Table<'t, (&'static str, u64), ()>,
    by_source: Table<'t, (&'static str, &'static str, u64), ()>,
    type_heads: StrTable<'t, u64>,
    source_heads: PairTable<'t, u64>,
    aggregates: PairTable<'t, &'static [u8]>,
    processes: PairTable<'t, &'static [u8]>,
    queue: StrTable<'t, &'static [u8]>,
    queue_order: Table<'t, (i64, u64, &'static str), ()>,
    queue_timeouts: Table<'t, (&'static str, &'static str, &'static str), ()>,
    offsets: StrTable<'t, &'static [u8]>,
}

impl<'t> WriteTables<'t> {
    /// Opens every table in `txn`.
    pub(crate) fn open(txn: &'t WriteTransaction, codec: Codec<'t>) -> Result<Self> {
        let file = codec.file;
        Ok(Self {
            file,
            codec,
            counters: txn.open_table(COUNTERS).or_storage(file)?,
            events: txn.open_table(EVENTS).or_storage(file)?,
            event_ids: txn.open_table(EVENT_IDS).or_storage(file)?,
            by_type: txn.open_table(EVENTS_BY_TYPE).or_storage(file)?,
            by_source: txn.open_table(EVENTS_BY_SOURCE).or_storage(file)?,
            type_heads: txn.open_table(TYPE_HEADS).or_storage(file)?,
            source_heads: txn.open_table(SOURCE_HEADS).or_storage(file)?,
            aggregates: txn.open_table(AGGREGATES).or_storage(file)?,
            processes: txn.open_table(PROCESSES).or_storage(file)?,
            queue: txn.open_table(QUEUE).or_storage(file)?,
            queue_order: txn.open_table(QUEUE_ORDER).or_storage(file)?,
            queue_timeouts: txn.open_table(QUEUE_TIMEOUTS).or_storage(file)?,
            offsets: txn.open_table(OFFSETS).or_storage(file)?,
        })
    }

    /// The stored counters, checked against their checksum.
    pub(crate) fn counters(&self) -> Result<Counters> {
        let counter = |name: &str| -> Result<Option<u64>> {
            Ok(self.counters.get(name).or_storage(self.file)?.map(|v| v.value()))
        };
        checked_counters(
            self.codec,
            counter(NEXT_OFFSET)?,
            counter(NEXT_SEQUENCE)?,
            counter(COUNTERS_CHECKSUM)?,
        )
    }

    /// Applies a plan (a group's batches or an import), then stores its counters.
    pub(crate) fn apply(&mut self, plan: &Plan<'_>) -> Result<()> {
        for write in &plan.writes {
            self.write(write)?;
        }
        if plan.counters_changed() {
            let file = self.file;
            self.counters.insert(NEXT_OFFSET, plan.after.next_offset).or_storage(file)?;
            self.counters.insert(NEXT_SEQUENCE, plan.after.next_sequence).or_storage(file)?;
            let sum = self.codec.counters_sum(plan.after.next_offset, plan.after.next_sequence);
            self.counters.insert(COUNTERS_CHECKSUM, sum).or_storage(file)?;
        }
        Ok(())
    }

    fn write(&mut self, write: &Write<'_>) -> Result<()> {
        let file = self.file;
        match *write {
            Write::PutAggregate { meta, revision } => {
                let record = AggregateRecord { revision, last_event_id: meta.last_event_id.clone() };
                let key = (meta.handler_key.as_str(), meta.instance_id.as_str());
                let value = self.codec.seal_aggregate(key.0, key.1, &record);
                self.aggregates.insert(key, value.as_slice()).or_storage(file)?;
            }
            Write::PutProcess { instance, revision } => {
                let record = ProcessRecord {
                    revision,
                    media_type: instance.packet.media_type.clone(),
                    data: instance.packet.data.clone(),
                };
                let key = (instance.handler_key.as_str(), instance.instance_id.as_str());
                let value = self.codec.seal_process(key.0, key.1, &record);
                self.processes.insert(key, value.as_slice()).or_storage(file)?;
            }
            Write::RemoveProcess { handler_key, instance_id } => {
                self.processes.remove((handler_key, instance_id)).or_storage(file)?;
                for id in self.owned_timeouts(handler_key, instance_id)? {
                    self.remove_queue(&id)?;
                }
            }
            Write::AppendEvent { offset, envelope } => {
                #[cfg(test)]
                if envelope.message_id == crate::tests::INJECT_STORAGE_FAILURE {
                    return Err(vellum_core::Error::storage("injected failure", "test"));
                }
                self.append_event(offset, envelope)?;
            }
            Write::InsertQueue { message, revision, sequence, next_attempt_at } => {
                self.insert_queue(sequence, revision, message, next_attempt_at)?;
            }
            Write::UpdateQueue { message_id, revision, failure_count, next_attempt_at } => {
                self.update_queue(message_id, revision, failure_count, next_attempt_at)?;
            }
            Write::RemoveQueue { message_id } => self.remove_queue(message_id)?,
            Write::PutOffset { application_key, next_offset } => {
                let value = self.codec.seal_offset(application_key, next_offset);
                self.offsets.insert(application_key, value.as_slice()).or_storage(file)?;
            }
        }
        Ok(())
    }

    /// Stores an event at `offset` with its index entries, linked to the newest event of its
    /// type and of its source, which it then becomes.
    fn append_event(&mut self, offset: u64, envelope: &Envelope) -> Result<()> {
        let file = self.file;
        let id = envelope.message_id.as_str();
        let name = envelope.portable_name.as_str();
        let source = (envelope.source_handler_key(), envelope.source_instance_id.as_str());
        let links = Links {
            by_type: self.type_heads.insert(name, offset).or_storage(file)?.map(|v| v.value()),
            by_source: self.source_heads.insert(source, offset).or_storage(file)?.map(|v| v.value()),
        };
        self.events
            .insert(offset, self.codec.seal_event(offset, envelope, links).as_slice())
            .or_storage(file)?;
        self.event_ids.insert(id, offset).or_storage(file)?;
        self.by_type.insert((name, offset), ()).or_storage(file)?;
        self.by_source.insert((source.0, source.1, offset), ()).or_storage(file)?;
        Ok(())
    }

    /// Stores a message that is not queued yet, with its index entries.
    fn insert_queue(
        &mut self,
        sequence: u64,
        revision: u64,
        message: &QueueMessage,
        at: Micros,
    ) -> Result<()> {
        let file = self.file;
        let envelope = &message.envelope;
        let record = QueueRecord {
            revision,
            failure_count: message.failure_count,
            next_attempt_at: at.0,
            sequence,
            envelope: envelope.to_bytes(),
        };
        let id = message.id();
        self.queue.insert(id, self.codec.seal_queue(id, &record).as_slice()).or_storage(file)?;
        self.queue_order.insert((at.0, sequence, id), ()).or_storage(file)?;
        if let Some((handler_key, instance_id)) = Write::timeout_owner(message) {
            self.queue_timeouts.insert((handler_key, instance_id, id), ()).or_storage(file)?;
        }
        Ok(())
    }

    fn update_queue(&mut self, id: &str, revision: u64, failure_count: u64, at: Micros) -> Result<()> {
        let file = self.file;
        let record = self.queue.get(id).or_storage(file)?.map(|v| v.value().to_vec());
        // Absent only when a `RemoveProcess` earlier in the batch cascaded it: nothing to update.
        let Some(bytes) = record else { return Ok(()) };
        let (mut record, _) = self.codec.queue(id, &bytes)?;
        if record.next_attempt_at != at.0 {
            self.queue_order.remove((record.next_attempt_at, record.sequence, id)).or_storage(file)?;
            self.queue_order.insert((at.0, record.sequence, id), ()).or_storage(file)?;
        }
        record.revision = revision;
        record.failure_count = failure_count;
        record.next_attempt_at = at.0;
        self.queue.insert(id, self.codec.seal_queue(id, &record).as_slice()).or_storage(file)?;
        Ok(())
    }

    /// Removes a message and its index entries if present (idempotent, see `Effect::RemoveQueue`).
    fn remove_queue(&mut self, id: &str) -> Result<()> {
        let file = self.file;
        let removed = self.queue.remove(id).or_storage(file)?.map(|v| v.value().to_vec());
        let Some(bytes) = removed else { return Ok(()) };
        let (record, envelope) = self.codec.queue(id, &bytes)?;
        self.queue_order.remove((record.next_attempt_at, record.sequence, id)).or_storage(file)?;
        if envelope.is_timeout() {
            let owner = (envelope.source_handler_key(), envelope.source_instance_id.as_str(), id);
            self.queue_timeouts.remove(owner).or_storage(file)?;
        }
        Ok(())
    }

    /// The IDs of the timeouts owned by a process instance.
    fn owned_timeouts(&self, handler_key: &str, instance_id: &str) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        for entry in self.queue_timeouts.range((handler_key, instance_id, "")..).or_storage(self.file)? {
            let (key, _) = entry.or_storage(self.file)?;
            let (hk, iid, id) = key.value();
            if hk != handler_key || iid != instance_id {
                break;
            }
            ids.push(id.to_owned());
        }
        Ok(ids)
    }
}

/// Preconditions are checked against verified records: a damaged revision must not decide a
/// conflict.
impl PreBatchState for WriteTables<'_> {
    fn aggregate_revision(&mut self, handler_key: &str, instance_id: &str) -> Result<u64> {
        let Some(value) = self.aggregates.get((handler_key, instance_id)).or_storage(self.file)? else {
            return Ok(0);
        };
        Ok(self.codec.aggregate(handler_key, instance_id, value.value())?.revision)
    }

    fn process_revision(&mut self, handler_key: &str, instance_id: &str) -> Result<Option<u64>> {
        let Some(value) = self.processes.get((handler_key, instance_id)).or_storage(self.file)? else {
            return Ok(None);
        };
        Ok(Some(self.codec.process(handler_key, instance_id, value.value())?.revision))
    }

    fn queue_revision(&mut self, message_id: &str) -> Result<Option<u64>> {
        let Some(value) = self.queue.get(message_id).or_storage(self.file)? else { return Ok(None) };
        Ok(Some(self.codec.queue(message_id, value.value())?.0.revision))
    }

    fn timeouts_of(&mut self, handler_key: &str, instance_id: &str) -> Result<Vec<String>> {
        self.owned_timeouts(handler_key, instance_id)
    }

    fn offset(&mut self, application_key: &str) -> Result<u64> {
        let Some(value) = self.offsets.get(application_key).or_storage(self.file)? else { return Ok(0) };
        self.codec.offset(application_key, value.value())
    }

    fn event_exists(&mut self, message_id: &str) -> Result<bool> {
        Ok(self.event_ids.get(message_id).or_storage(self.file)?.is_some())
    }
}

/// The counters as stored, checked against their checksum; a missing one is damage (a new file
/// is laid out with all three).
pub(crate) fn checked_counters(
    codec: Codec<'_>,
    next_offset: Option<u64>,
    next_sequence: Option<u64>,
    sum: Option<u64>,
) -> Result<Counters> {
    let (Some(next_offset), Some(next_sequence)) = (next_offset, next_sequence) else {
        return Err(codec.corrupt(&"counters", "a counter is missing"));
    };
    codec.check_counters(next_offset, next_sequence, sum)?;
    Ok(Counters { next_offset, next_sequence })
}

/// Reads over one read transaction (an MVCC snapshot).
pub(crate) struct Reader<'a> {
    pub(crate) txn: &'a ReadTransaction,
    pub(crate) file: &'a Path,
    pub(crate) codec: Codec<'a>,
}

impl Reader<'_> {
    pub(crate) fn aggregate(&self, handler_key: &str, instance_id: &str) -> Result<AggregateMetaData> {
        let table = self.txn.open_table(AGGREGATES).or_storage(self.file)?;
        let mut meta = AggregateMetaData::new(handler_key, instance_id);
        if let Some(value) = table.get((handler_key, instance_id)).or_storage(self.file)? {
            let record = self.codec.aggregate(handler_key, instance_id, value.value())?;
            meta.revision = record.revision;
            meta.last_event_id = record.last_event_id;
        }
        Ok(meta)
    }

    pub(crate) fn process(&self, handler_key: &str, instance_id: &str) -> Result<ProcessInstance> {
        let table = self.txn.open_table(PROCESSES).or_storage(self.file)?;
        let mut instance = ProcessInstance::new(handler_key, instance_id);
        if let Some(value) = table.get((handler_key, instance_id)).or_storage(self.file)? {
            let record = self.codec.process(handler_key, instance_id, value.value())?;
            instance.revision = record.revision;
            instance.packet = Packet { media_type: record.media_type, data: record.data };
        }
        Ok(instance)
    }

    pub(crate) fn offset(&self, application_key: &str) -> Result<u64> {
        let table = self.txn.open_table(OFFSETS).or_storage(self.file)?;
        match table.get(application_key).or_storage(self.file)? {
            Some(value) => self.codec.offset(application_key, value.value()),
            None => Ok(0),
        }
    }

    /// The stored counters, checked against their checksum.
    pub(crate) fn counters(&self) -> Result<Counters> {
        let table = self.txn.open_table(COUNTERS).or_storage(self.file)?;
        let counter = |name: &str| -> Result<Option<u64>> {
            Ok(table.get(name).or_storage(self.file)?.map(|v| v.value()))
        };
        checked_counters(
            self.codec,
            counter(NEXT_OFFSET)?,
            counter(NEXT_SEQUENCE)?,
            counter(COUNTERS_CHECKSUM)?,
        )
    }

    pub(crate) fn next_event_offset(&self) -> Result<u64> {
        Ok(self.counters()?.next_offset)
    }

    pub(crate) fn queue_head(&self, n: usize) -> Result<Vec<QueueMessage>> {
        let order = self.txn.open_table(QUEUE_ORDER).or_storage(self.file)?;
        let queue = self.txn.open_table(QUEUE).or_storage(self.file)?;
        let mut messages = Vec::with_capacity(n.min(1024));
        for entry in order.iter().or_storage(self.file)?.take(n) {
            let (key, _) = entry.or_storage(self.file)?;
            messages.push(self.queued(&queue, key.value())?.1);
        }
        Ok(messages)
    }

    /// The enqueue sequence and the message the queue order entry `(time, sequence, ID)` names;
    /// an entry that disagrees with the message's record is damage.
    pub(crate) fn queued(
        &self,
        queue: &ReadOnlyTable<&'static str, &'static [u8]>,
        (at, sequence, id): (i64, u64, &str),
    ) -> Result<(u64, QueueMessage)> {
        let entry = || format!("queue order entry ({at}, {sequence}, {id:?})");
        let value = queue
            .get(id)
            .or_storage(self.file)?
            .ok_or_else(|| self.codec.corrupt(&entry(), "names a message that is not stored"))?;
        let (record, envelope) = self.codec.queue(id, value.value())?;
        if (record.next_attempt_at, record.sequence) != (at, sequence) {
            return Err(self.codec.corrupt(
                &entry(),
                format!(
                    "disagrees with the message's record (time {}, sequence {})",
                    record.next_attempt_at, record.sequence
                ),
            ));
        }
        let message = QueueMessage {
            revision: record.revision,
            failure_count: record.failure_count,
            next_attempt_at: Micros(record.next_attempt_at).to_system_time(),
            envelope,
        };
        Ok((record.sequence, message))
    }

    /// Up to `limit` events matching `query` with `offset >= from`, ascending, through the index.
    /// Each event is checked against the index entry that named it, and the entries against the
    /// chain of links the events form (docs/integrity.md#index-chains).
    pub(crate) fn events(&self, query: &EventQuery, from: u64, limit: usize) -> Result<Vec<Event>> {
        let file = self.file;
        match query {
            EventQuery::All => self.all_events(from, limit),
            EventQuery::ByType(names) => {
                let index = self.txn.open_table(EVENTS_BY_TYPE).or_storage(file)?;
                let heads = self.txn.open_table(TYPE_HEADS).or_storage(file)?;
                let mut all = Vec::new();
                for name in names {
                    let range = (name.as_str(), from)..=(name.as_str(), u64::MAX);
                    let mut offsets = Vec::new();
                    for entry in index.range(range).or_storage(file)?.take(limit) {
                        offsets.push(entry.or_storage(file)?.0.value().1);
                    }
                    let head = heads.get(name.as_str()).or_storage(file)?.map(|v| v.value());
                    let chain = Chain { query, from, limit, head, link: |l: Links| l.by_type, what: "type" };
                    all.extend(self.walk(&chain, offsets)?);
                }
                if names.len() > 1 {
                    all.sort_unstable_by_key(|e| e.offset);
                    all.truncate(limit);
                }
                Ok(all)
            }
            EventQuery::BySource { handler_key, instance_id } => {
                let index = self.txn.open_table(EVENTS_BY_SOURCE).or_storage(file)?;
                let (hk, iid) = (handler_key.as_str(), instance_id.as_str());
                let mut offsets = Vec::new();
                for entry in index.range((hk, iid, from)..=(hk, iid, u64::MAX)).or_storage(file)?.take(limit)
                {
                    offsets.push(entry.or_storage(file)?.0.value().2);
                }
                let heads = self.txn.open_table(SOURCE_HEADS).or_storage(file)?;
                let head = heads.get((hk, iid)).or_storage(file)?.map(|v| v.value());
                let chain = Chain { query, from, limit, head, link: |l: Links| l.by_source, what: "source" };
                self.walk(&chain, offsets)
            }
        }
    }

    /// The events at `offsets` (one index range, ascending), each checked against the query
    /// and against the previous one in its chain; a range that ends before `limit` must end at
    /// the chain's head.
    fn walk(
        &self,
        chain: &Chain<'_, impl Fn(Links) -> Option<u64>>,
        offsets: Vec<u64>,
    ) -> Result<Vec<Event>> {
        let events = self.txn.open_table(EVENTS).or_storage(self.file)?;
        let entry = |offset: u64| format!("events_by_{} index entry at offset {offset}", chain.what);
        let mut previous: Option<u64> = None;
        let mut page = Vec::with_capacity(offsets.len());
        for offset in offsets {
            let value = events
                .get(offset)
                .or_storage(self.file)?
                .ok_or_else(|| self.codec.corrupt(&entry(offset), "names no stored event"))?;
            let (envelope, links) = self.codec.event(offset, value.value())?;
            if !chain.query.matches(&envelope) {
                return Err(self.codec.corrupt(
                    &entry(offset),
                    format!(
                        "names event {:?} of type {:?} from {}/{}, which the query does not match",
                        envelope.message_id,
                        envelope.portable_name,
                        envelope.source_handler_key(),
                        envelope.source_instance_id
                    ),
                ));
            }
            let link = (chain.link)(links);
            let linked = match previous {
                Some(p) => link == Some(p),
                None => link.is_none_or(|l| l < chain.from),
            };
            if !linked {
                return Err(self.codec.corrupt(
                    &format_args!("event at offset {offset}"),
                    format!(
                        "follows offset {link:?} of its {}, but its index reads offset {previous:?} before it: \
                         an index entry is missing or extra",
                        chain.what
                    ),
                ));
            }
            previous = Some(offset);
            page.push(Event { offset, envelope });
        }
        let head_ok = match previous {
            Some(last) => chain.head == Some(last),
            None => chain.head.is_none_or(|h| h < chain.from),
        };
        if page.len() < chain.limit && !head_ok {
            return Err(self.codec.corrupt(
                &format_args!("events_by_{} index", chain.what),
                format!(
                    "ends at offset {previous:?}, but the newest event of its {} is at offset {:?}: \
                     index entries are missing",
                    chain.what, chain.head
                ),
            ));
        }
        Ok(page)
    }
}

/// One index range being read: the chain its events must form.
struct Chain<'q, L> {
    query: &'q EventQuery,
    from: u64,
    limit: usize,
    /// The newest event of the chain, from the heads table.
    head: Option<u64>,
    /// The link an event's chain follows.
    link: L,
    /// `type` or `source`.
    what: &'static str,
}
