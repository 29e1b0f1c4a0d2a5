//! Plans: what a unit of work writes, decided once for every provider.
//!
//! A store's writer commits either a group of batches or a bulk import. Both become a [`Plan`]:
//! a closed list of [`Write`]s, with event offsets and enqueue sequences already assigned, and
//! the application's [`Counters`] after it. A provider has one executor that applies a plan to
//! its storage; it never decides anything itself. See `docs/batches.md` for the rules applied.
//!
//! - [`plan_group`] evaluates each batch (with [`eval::evaluate`](crate::eval::evaluate))
//!   against the stored state *plus the batches before it in the group*, so batch k sees
//!   batches 0..k; a failed batch contributes nothing and fails alone.
//! - [`plan_import`] checks records with [`check_import`] and keeps their revisions, offsets
//!   and sequences verbatim.
//!
//! The stored state is read through [`PreBatchState`]; [`StateKeys`] lists the rows a unit of
//! work can ask about, so a provider may fetch exactly those into a [`Snapshot`] first.

use std::collections::{HashMap, HashSet};

use crate::batch::Batch;
use crate::bulk::{Record, check_import};
use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::eval::{Effect, PreBatchState, evaluate};
use crate::model::{AggregateMetaData, PersistResult, ProcessInstance, QueueMessage};
use crate::operation::Operation;
use crate::time::Micros;

/// An application's counters: the offset the next event gets and the next enqueue sequence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// The offset of the next appended event (also the number of events).
    pub next_offset: u64,
    /// The enqueue sequence of the next new queue message.
    pub next_sequence: u64,
}

/// One write of a plan. Executors apply writes in order; offsets, sequences and revisions are
/// final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write<'a> {
    /// Insert or replace aggregate meta-data (`meta.last_event_id`) with `revision`.
    PutAggregate {
        /// The meta-data; its own `revision` field is ignored.
        meta: &'a AggregateMetaData,
        /// The revision to store.
        revision: u64,
    },
    /// Insert or replace a process instance (`instance.packet`) with `revision`.
    PutProcess {
        /// The instance; its own `revision` field is ignored.
        instance: &'a ProcessInstance,
        /// The revision to store.
        revision: u64,
    },
    /// Delete a process instance and every queued timeout it owns.
    RemoveProcess {
        /// The process handler key.
        handler_key: &'a str,
        /// The process instance ID.
        instance_id: &'a str,
    },
    /// Insert an event at `offset`.
    AppendEvent {
        /// Its offset (dense: the previous write's offset + 1, or the stored next offset).
        offset: u64,
        /// The envelope.
        envelope: &'a Envelope,
    },
    /// Insert a queue message that is not stored.
    InsertQueue {
        /// The message; `failure_count`, `next_attempt_at` and the envelope are stored.
        message: &'a QueueMessage,
        /// The revision to store (1 for a new message, the record's for an import).
        revision: u64,
        /// Its enqueue sequence, the FIFO tie-break kept for the message's life.
        sequence: u64,
        /// `message.next_attempt_at` in storage form.
        next_attempt_at: Micros,
    },
    /// Update a stored queue message's retry state (its envelope is immutable). A message that
    /// an earlier [`Write::RemoveProcess`] of the same plan cascaded away is not updated.
    UpdateQueue {
        /// The message ID.
        message_id: &'a str,
        /// The revision to store.
        revision: u64,
        /// The failure count to store.
        failure_count: u64,
        /// The time to store.
        next_attempt_at: Micros,
    },
    /// Delete a queue message if it is still stored (idempotent: a cascade may have removed it).
    RemoveQueue {
        /// The message ID.
        message_id: &'a str,
    },
    /// Insert or replace a consumer offset.
    PutOffset {
        /// The source application key.
        application_key: &'a str,
        /// The offset to store.
        next_offset: u64,
    },
}

impl Write<'_> {
    /// `(handler_key, instance_id)` of the process owning a queue message, when it is a timeout.
    #[must_use]
    pub fn timeout_owner(message: &QueueMessage) -> Option<(&str, &str)> {
        let env = &message.envelope;
        env.is_timeout().then(|| (env.source_handler_key(), env.source_instance_id.as_str()))
    }
}

/// What a unit of work writes, and the counters to store after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan<'a> {
    /// The writes, in order.
    pub writes: Vec<Write<'a>>,
    /// The counters before the plan.
    pub before: Counters,
    /// The counters after the plan.
    pub after: Counters,
}

impl Plan<'_> {
    /// Whether the plan writes nothing (its transaction can be skipped or rolled back).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Whether the counters must be stored.
    #[must_use]
    pub fn counters_changed(&self) -> bool {
        self.before != self.after
    }
}

/// A planned unit of work: the plan, and one outcome per batch (none for an import).
#[derive(Debug)]
pub struct Planned<'a> {
    /// One result per batch, in submission order; empty for an import.
    pub outcomes: Vec<Result<PersistResult>>,
    /// The writes of every batch that passed.
    pub plan: Plan<'a>,
}

/// Plans a group of batches against the stored state `state` with the stored `counters`.
///
/// Each batch is validated, then evaluated against the state as the batches before it left
/// it. `Err` only for a storage error from `state` (the whole group must fail).
pub fn plan_group<'a, S: PreBatchState + ?Sized>(
    batches: &'a [Batch],
    state: &mut S,
    counters: Counters,
) -> Result<Planned<'a>> {
    let mut overlay = Overlay::new(state, counters);
    let mut writes = Vec::new();
    let mut outcomes = Vec::with_capacity(batches.len());
    for batch in batches {
        let outcome = batch.validate().and_then(|()| evaluate(batch, &mut overlay));
        match outcome {
            Ok(effects) => {
                let mut result = PersistResult::default();
                for effect in effects {
                    writes.push(overlay.advance(effect, &mut result)?);
                }
                outcomes.push(Ok(result));
            }
            Err(e) if e.is_storage() => return Err(e),
            Err(e) => outcomes.push(Err(e)),
        }
    }
    let plan = Plan { writes, before: counters, after: overlay.counters };
    Ok(Planned { outcomes, plan })
}

/// Plans a bulk import: [`check_import`] against `state`, then one write per record with its
/// revision, offset and sequence kept. The counters move past the last event and past every
/// imported sequence, so later batches continue where the records leave off.
///
/// # Errors
/// [`Error::InvalidImport`] naming the first refused record, or a storage error from `state`.
pub fn plan_import<'a, S: PreBatchState + ?Sized>(
    records: &'a [Record],
    state: &mut S,
    counters: Counters,
) -> Result<Plan<'a>> {
    check_import(records, counters.next_offset, state)?;
    let mut after = counters;
    let writes = records
        .iter()
        .map(|record| {
            Ok(match record {
                Record::Aggregate(meta) => Write::PutAggregate { meta, revision: meta.revision },
                Record::Process(instance) => Write::PutProcess { instance, revision: instance.revision },
                Record::Offset { application_key, next_offset } => {
                    Write::PutOffset { application_key, next_offset: *next_offset }
                }
                Record::Queue { sequence, message } => {
                    after.next_sequence = after.next_sequence.max(next(*sequence, "next_sequence")?);
                    Write::InsertQueue {
                        message,
                        revision: message.revision,
                        sequence: *sequence,
                        next_attempt_at: storable_time(message)?,
                    }
                }
                Record::Event(event) => {
                    after.next_offset = next(event.offset, "next_offset")?;
                    Write::AppendEvent { offset: event.offset, envelope: &event.envelope }
                }
            })
        })
        .collect::<Result<_>>()?;
    Ok(Plan { writes, before: counters, after })
}

fn storable_time(message: &QueueMessage) -> Result<Micros> {
    // `check_import` refused unstorable times already; this only keeps the plan total.
    Micros::from_system_time(message.next_attempt_at).ok_or_else(|| {
        Error::storage(format!("planning queue message {:?}", message.id()), "unstorable next_attempt_at")
    })
}

/// `value + 1`, or a storage error naming the exhausted counter.
fn next(value: u64, counter: &str) -> Result<u64> {
    value
        .checked_add(1)
        .ok_or_else(|| Error::storage(format!("advancing {counter}"), "the counter is exhausted"))
}

/// The rows a unit of work reads, without duplicates.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StateKeys {
    /// `(handler_key, instance_id)` of aggregates.
    pub aggregates: Vec<(String, String)>,
    /// `(handler_key, instance_id)` of processes.
    pub processes: Vec<(String, String)>,
    /// Queue message IDs.
    pub queue: Vec<String>,
    /// Source application keys of consumer offsets.
    pub offsets: Vec<String>,
    /// Event message IDs (to detect duplicates).
    pub events: Vec<String>,
}

impl StateKeys {
    /// The keys every operation of `batches` reads.
    #[must_use]
    pub fn of(batches: &[Batch]) -> Self {
        let mut keys = Self::default();
        for op in batches.iter().flat_map(Batch::iter) {
            match op {
                Operation::SaveAggregateMetaData(m) => {
                    keys.aggregates.push((m.handler_key.clone(), m.instance_id.clone()));
                }
                Operation::SaveProcessInstance(p) | Operation::RemoveProcessInstance(p) => {
                    keys.processes.push((p.handler_key.clone(), p.instance_id.clone()));
                }
                Operation::SaveEvent(e) => keys.events.push(e.message_id.clone()),
                Operation::SaveQueueMessage(m) | Operation::RemoveQueueMessage(m) => {
                    keys.queue.push(m.id().to_owned());
                }
                Operation::SaveOffset { application_key, .. } => keys.offsets.push(application_key.clone()),
            }
        }
        keys.dedup();
        keys
    }

    /// The keys [`check_import`] looks up for `records`.
    #[must_use]
    pub fn of_records(records: &[Record]) -> Self {
        let mut keys = Self::default();
        for record in records {
            match record {
                Record::Aggregate(m) => keys.aggregates.push((m.handler_key.clone(), m.instance_id.clone())),
                Record::Process(p) => keys.processes.push((p.handler_key.clone(), p.instance_id.clone())),
                Record::Offset { application_key, .. } => keys.offsets.push(application_key.clone()),
                Record::Queue { message, .. } => keys.queue.push(message.id().to_owned()),
                Record::Event(e) => keys.events.push(e.id().to_owned()),
            }
        }
        keys.dedup();
        keys
    }

    fn dedup(&mut self) {
        for list in [&mut self.queue, &mut self.offsets, &mut self.events] {
            list.sort_unstable();
            list.dedup();
        }
        for list in [&mut self.aggregates, &mut self.processes] {
            list.sort_unstable();
            list.dedup();
        }
    }
}

/// A stored queue message as far as preconditions and the timeout cascade care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueState {
    /// The stored revision.
    pub revision: u64,
    /// `(handler_key, instance_id)` of the owning process if the message is a timeout.
    pub timeout_owner: Option<(String, String)>,
}

/// Stored rows fetched ahead of planning (the rows of [`StateKeys`]); a key not present is
/// absent in storage. SQL providers read one of these per group.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Stored aggregate revisions.
    pub aggregates: HashMap<(String, String), u64>,
    /// Stored process revisions.
    pub processes: HashMap<(String, String), u64>,
    /// Stored queue messages.
    pub queue: HashMap<String, QueueState>,
    /// Stored consumer offsets.
    pub offsets: HashMap<String, u64>,
    /// Event message IDs already in the log.
    pub events: HashSet<String>,
    /// The stored counters.
    pub counters: Counters,
}

fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_owned(), b.to_owned())
}

impl Snapshot {
    /// The state `batches` themselves expect: each key as the first operation touching it says
    /// (its revision, 0 meaning absent; a consumer offset's current value), every event absent,
    /// and `counters`. A writer that holds the application's lock and knows the counters it
    /// left can plan against this without reading, provided its writes then check exactly
    /// these assumptions (a stale one must write nothing).
    #[must_use]
    pub fn assumed(batches: &[Batch], counters: Counters) -> Self {
        let mut s = Snapshot { counters, ..Snapshot::default() };
        for op in first_touches(batches) {
            match op {
                Operation::SaveAggregateMetaData(m) if m.revision != 0 => {
                    s.aggregates.insert(pair(&m.handler_key, &m.instance_id), m.revision);
                }
                Operation::SaveProcessInstance(p) | Operation::RemoveProcessInstance(p)
                    if p.revision != 0 =>
                {
                    s.processes.insert(pair(&p.handler_key, &p.instance_id), p.revision);
                }
                Operation::SaveQueueMessage(m) | Operation::RemoveQueueMessage(m) if m.revision != 0 => {
                    let owner = Write::timeout_owner(m).map(|(h, i)| pair(h, i));
                    s.queue
                        .insert(m.id().to_owned(), QueueState { revision: m.revision, timeout_owner: owner });
                }
                Operation::SaveOffset { application_key, current_offset, .. } => {
                    s.offsets.insert(application_key.clone(), *current_offset);
                }
                _ => {}
            }
        }
        s
    }
}

/// The operations of `batches` that are the first to touch their entity (an aggregate and a
/// process of one handler key and instance ID count apart), in order: what a group assumes.
pub fn first_touches(batches: &[Batch]) -> impl Iterator<Item = &Operation> {
    let mut seen = HashSet::new();
    batches.iter().flat_map(Batch::iter).filter(move |op| {
        let aggregate = matches!(op, Operation::SaveAggregateMetaData(_));
        seen.insert((aggregate, op.entity()))
    })
}

impl PreBatchState for Snapshot {
    fn aggregate_revision(&mut self, handler_key: &str, instance_id: &str) -> Result<u64> {
        Ok(self.aggregates.get(&pair(handler_key, instance_id)).copied().unwrap_or(0))
    }

    fn process_revision(&mut self, handler_key: &str, instance_id: &str) -> Result<Option<u64>> {
        Ok(self.processes.get(&pair(handler_key, instance_id)).copied())
    }

    fn queue_revision(&mut self, message_id: &str) -> Result<Option<u64>> {
        Ok(self.queue.get(message_id).map(|q| q.revision))
    }

    fn timeouts_of(&mut self, handler_key: &str, instance_id: &str) -> Result<Vec<String>> {
        let owner = Some(pair(handler_key, instance_id));
        Ok(self.queue.iter().filter(|(_, q)| q.timeout_owner == owner).map(|(id, _)| id.clone()).collect())
    }

    fn offset(&mut self, application_key: &str) -> Result<u64> {
        Ok(self.offsets.get(application_key).copied().unwrap_or(0))
    }

    fn event_exists(&mut self, message_id: &str) -> Result<bool> {
        Ok(self.events.contains(message_id))
    }
}

/// A queue entry changed by an earlier batch of the group; `owner` is known for messages the
/// group enqueued (stored ones are found through [`PreBatchState::timeouts_of`]).
#[derive(Debug)]
struct Queued {
    revision: u64,
    owner: Option<(String, String)>,
}

/// The stored state with the effects of a group's earlier batches on top.
struct Overlay<'s, S: ?Sized> {
    base: &'s mut S,
    aggregates: HashMap<(String, String), u64>,
    processes: HashMap<(String, String), Option<u64>>,
    queue: HashMap<String, Option<Queued>>,
    offsets: HashMap<String, u64>,
    events: HashSet<String>,
    counters: Counters,
}

impl<'s, S: PreBatchState + ?Sized> Overlay<'s, S> {
    fn new(base: &'s mut S, counters: Counters) -> Self {
        Self {
            base,
            aggregates: HashMap::new(),
            processes: HashMap::new(),
            queue: HashMap::new(),
            offsets: HashMap::new(),
            events: HashSet::new(),
            counters,
        }
    }

    /// Applies one effect of a batch that passed and returns its write.
    fn advance<'a>(&mut self, effect: Effect<'a>, result: &mut PersistResult) -> Result<Write<'a>> {
        Ok(match effect {
            Effect::PutAggregate { meta, revision } => {
                self.aggregates.insert(pair(&meta.handler_key, &meta.instance_id), revision);
                Write::PutAggregate { meta, revision }
            }
            Effect::PutProcess { instance, revision } => {
                self.processes.insert(pair(&instance.handler_key, &instance.instance_id), Some(revision));
                Write::PutProcess { instance, revision }
            }
            Effect::RemoveProcess { handler_key, instance_id } => {
                self.processes.insert(pair(handler_key, instance_id), None);
                self.cascade(handler_key, instance_id)?;
                Write::RemoveProcess { handler_key, instance_id }
            }
            Effect::AppendEvent { envelope } => {
                let offset = self.counters.next_offset;
                self.counters.next_offset = next(offset, "next_offset")?;
                self.events.insert(envelope.message_id.clone());
                result.event_offsets.insert(envelope.message_id.clone(), offset);
                Write::AppendEvent { offset, envelope }
            }
            Effect::InsertQueue { message, next_attempt_at } => {
                let sequence = self.counters.next_sequence;
                self.counters.next_sequence = next(sequence, "next_sequence")?;
                let owner = Write::timeout_owner(message).map(|(h, i)| pair(h, i));
                self.queue.insert(message.id().to_owned(), Some(Queued { revision: 1, owner }));
                Write::InsertQueue { message, revision: 1, sequence, next_attempt_at }
            }
            Effect::UpdateQueue { message_id, revision, failure_count, next_attempt_at } => {
                match self.queue.get_mut(message_id) {
                    Some(Some(entry)) => entry.revision = revision,
                    // Cascaded away by this batch's own process removal: the update is moot.
                    Some(None) => {}
                    None => {
                        self.queue.insert(message_id.to_owned(), Some(Queued { revision, owner: None }));
                    }
                }
                Write::UpdateQueue { message_id, revision, failure_count, next_attempt_at }
            }
            Effect::RemoveQueue { message_id } => {
                self.queue.insert(message_id.to_owned(), None);
                Write::RemoveQueue { message_id }
            }
            Effect::PutOffset { application_key, next_offset } => {
                self.offsets.insert(application_key.to_owned(), next_offset);
                Write::PutOffset { application_key, next_offset }
            }
        })
    }

    /// Marks every timeout of the process as gone: those stored, and those the group enqueued.
    fn cascade(&mut self, handler_key: &str, instance_id: &str) -> Result<()> {
        for id in self.base.timeouts_of(handler_key, instance_id)? {
            self.queue.insert(id, None);
        }
        let owner = Some(pair(handler_key, instance_id));
        for entry in self.queue.values_mut() {
            if entry.as_ref().is_some_and(|q| q.owner == owner) {
                *entry = None;
            }
        }
        Ok(())
    }
}

impl<S: PreBatchState + ?Sized> PreBatchState for Overlay<'_, S> {
    // Each lookup skips an empty map first: most groups touch each key once, and a pair key
    // costs two allocations to build.
    fn aggregate_revision(&mut self, handler_key: &str, instance_id: &str) -> Result<u64> {
        let changed = (!self.aggregates.is_empty())
            .then(|| self.aggregates.get(&pair(handler_key, instance_id)).copied())
            .flatten();
        match changed {
            Some(revision) => Ok(revision),
            None => self.base.aggregate_revision(handler_key, instance_id),
        }
    }

    fn process_revision(&mut self, handler_key: &str, instance_id: &str) -> Result<Option<u64>> {
        let changed = (!self.processes.is_empty())
            .then(|| self.processes.get(&pair(handler_key, instance_id)).copied())
            .flatten();
        match changed {
            Some(revision) => Ok(revision),
            None => self.base.process_revision(handler_key, instance_id),
        }
    }

    fn queue_revision(&mut self, message_id: &str) -> Result<Option<u64>> {
        match self.queue.get(message_id) {
            Some(entry) => Ok(entry.as_ref().map(|q| q.revision)),
            None => self.base.queue_revision(message_id),
        }
    }

    fn timeouts_of(&mut self, handler_key: &str, instance_id: &str) -> Result<Vec<String>> {
        // Only planning asks, and it asks the base; kept total for completeness.
        self.base.timeouts_of(handler_key, instance_id)
    }

    fn offset(&mut self, application_key: &str) -> Result<u64> {
        match self.offsets.get(application_key) {
            Some(offset) => Ok(*offset),
            None => self.base.offset(application_key),
        }
    }

    fn event_exists(&mut self, message_id: &str) -> Result<bool> {
        Ok(self.events.contains(message_id) || self.base.event_exists(message_id)?)
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::{Event, Identity};

    fn event(id: &str) -> Operation {
        Operation::SaveEvent(Envelope { message_id: id.into(), ..Envelope::default() })
    }

    fn save_aggregate(revision: u64) -> Operation {
        Operation::SaveAggregateMetaData(AggregateMetaData { revision, ..AggregateMetaData::new("h", "i") })
    }

    fn timeout(id: &str, revision: u64) -> QueueMessage {
        QueueMessage {
            revision,
            failure_count: 0,
            next_attempt_at: UNIX_EPOCH,
            envelope: Envelope {
                message_id: id.into(),
                source_handler: Some(Identity::new("", "p")),
                source_instance_id: "i".into(),
                scheduled_for: "x".into(),
                ..Envelope::default()
            },
        }
    }

    fn counters(next_offset: u64, next_sequence: u64) -> Counters {
        Counters { next_offset, next_sequence }
    }

    #[test]
    fn later_batches_see_earlier_ones_and_failures_are_isolated() {
        let batches = vec![
            Batch::from(vec![save_aggregate(0), event("e1")]),
            Batch::from(vec![save_aggregate(0), event("e2")]), // stale: conflicts alone
            Batch::from(vec![save_aggregate(1), event("e3")]),
            Batch::from(vec![event("e1")]), // duplicate of batch 0's event
        ];
        let group = plan_group(&batches, &mut Snapshot::default(), counters(10, 0)).unwrap();
        assert!(group.outcomes[0].is_ok());
        assert!(matches!(group.outcomes[1], Err(Error::Conflict { index: 0, .. })));
        assert_eq!(group.outcomes[2].as_ref().unwrap().event_offsets["e3"], 11);
        assert!(matches!(group.outcomes[3], Err(Error::DuplicateEvent { .. })));
        assert_eq!(group.plan.writes.len(), 4);
        assert_eq!(group.plan.after, counters(12, 0), "failed batches consume no offset");
    }

    #[test]
    fn a_cascade_hides_stored_and_enqueued_timeouts_from_later_batches() {
        let mut snapshot = Snapshot::default();
        snapshot.processes.insert(pair("p", "i"), 1);
        snapshot.queue.insert("t".into(), QueueState { revision: 1, timeout_owner: Some(pair("p", "i")) });
        let end = ProcessInstance { revision: 1, ..ProcessInstance::new("p", "i") };
        let batches = vec![
            Batch::from(vec![Operation::SaveQueueMessage(timeout("new", 0))]),
            Batch::from(vec![Operation::RemoveProcessInstance(end)]),
            Batch::from(vec![Operation::RemoveQueueMessage(timeout("t", 1))]),
            Batch::from(vec![Operation::RemoveQueueMessage(timeout("new", 1))]),
        ];
        let group = plan_group(&batches, &mut snapshot, Counters::default()).unwrap();
        assert!(group.outcomes[0].is_ok() && group.outcomes[1].is_ok());
        assert!(group.outcomes[2].as_ref().unwrap_err().is_conflict());
        assert!(group.outcomes[3].as_ref().unwrap_err().is_conflict());
    }

    #[test]
    fn an_import_keeps_offsets_and_sequences_and_moves_the_counters_past_them() {
        let records = vec![
            Record::Event(Event {
                offset: 3,
                envelope: Envelope { message_id: "e".into(), ..Envelope::default() },
            }),
            Record::Queue { sequence: 20, message: timeout("q", 2) },
        ];
        let plan = plan_import(&records, &mut Snapshot::default(), counters(3, 9)).unwrap();
        assert_eq!(plan.after, counters(4, 21));
        assert!(matches!(plan.writes[1], Write::InsertQueue { revision: 2, sequence: 20, .. }));
        let gap = plan_import(&records, &mut Snapshot::default(), counters(2, 0)).unwrap_err();
        assert!(matches!(gap, Error::InvalidImport(_)), "{gap}");
    }

    #[test]
    fn keys_are_deduplicated() {
        let batches =
            vec![Batch::from(vec![save_aggregate(0), event("e")]), Batch::from(vec![save_aggregate(1)])];
        let keys = StateKeys::of(&batches);
        assert_eq!(keys.aggregates, vec![pair("h", "i")]);
        assert_eq!(keys.events, vec!["e".to_owned()]);
    }
}
