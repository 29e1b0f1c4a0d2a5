//! Group planning, shared by every dialect: which rows a group of batches must read, the
//! pre-batch state built from them, and the ordered writes of the batches that passed.
//!
//! A dialect commits a group in one transaction:
//! 1. [`StateKeys::of`] lists every row the group's preconditions look at; the dialect fetches
//!    them (a few `IN`/`ANY` queries plus the app's counter row) into a [`Snapshot`].
//! 2. [`plan_group`] evaluates each batch in turn against the snapshot (with `vellum_core::eval`,
//!    so the rules are the same as every provider's) and advances the snapshot by the effects
//!    of each batch that passed, so batch k sees batches before it. A failed batch contributes
//!    nothing: it fails alone, and no savepoint is needed.
//! 3. The dialect executes [`GroupPlan::writes`] in order, stores the counters, and commits.

use std::collections::{HashMap, HashSet};

use vellum_core::eval::{Effect, PreBatchState, evaluate};
use vellum_core::time::Micros;
use vellum_core::{Batch, Envelope, Operation, PersistResult, QueueMessage, Record, Result};

/// The rows a group of batches reads, without duplicates.
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
    /// Event message IDs (to detect duplicates, SPEC D4).
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

    /// The keys `vellum_core::bulk::check_import` looks up for `records`, so that a
    /// [`Snapshot`] of them answers every question the check asks.
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
        let keys = self;
        for list in [&mut keys.queue, &mut keys.offsets, &mut keys.events] {
            list.sort_unstable();
            list.dedup();
        }
        for list in [&mut keys.aggregates, &mut keys.processes] {
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

/// The pre-batch state of the rows in [`StateKeys`]. Rows not present are absent in storage.
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
    /// The app's next event offset (its counter row).
    pub next_offset: u64,
    /// The app's next enqueue sequence (its counter row).
    pub next_sequence: u64,
}

fn pair(a: &str, b: &str) -> (String, String) {
    (a.to_owned(), b.to_owned())
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

    fn offset(&mut self, application_key: &str) -> Result<u64> {
        Ok(self.offsets.get(application_key).copied().unwrap_or(0))
    }

    fn event_exists(&mut self, message_id: &str) -> Result<bool> {
        Ok(self.events.contains(message_id))
    }
}

/// One write of a planned group, in order. Offsets and enqueue sequences are already assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write<'a> {
    /// Insert an event at `offset`.
    Event {
        /// Its dense offset.
        offset: u64,
        /// The envelope.
        envelope: &'a Envelope,
    },
    /// Insert a new queue message with revision 1.
    Enqueue {
        /// Its enqueue sequence (FIFO tie-break, kept on update).
        sequence: u64,
        /// The message as submitted.
        message: &'a QueueMessage,
        /// Its `next_attempt_at`.
        next_attempt_at: Micros,
    },
    /// Any other effect, written as `vellum_core::eval` describes it. Never
    /// `Effect::AppendEvent` or `Effect::InsertQueue`, which become the variants above.
    /// `Effect::UpdateQueue` and `Effect::RemoveQueue` of a missing row are no-ops;
    /// `Effect::RemoveProcess` also deletes the process's timeouts.
    Other(Effect<'a>),
}

/// What a group commits: one outcome per batch and the writes of those that passed.
#[derive(Debug)]
pub struct GroupPlan<'a> {
    /// One result per batch, in submission order.
    pub outcomes: Vec<Result<PersistResult>>,
    /// The writes of every successful batch, in order.
    pub writes: Vec<Write<'a>>,
    /// The counter values to store after the group.
    pub next_offset: u64,
    /// The enqueue sequence to store after the group.
    pub next_sequence: u64,
}

impl GroupPlan<'_> {
    /// Whether the group writes anything (if not, the transaction can be skipped).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
}

/// Plans a group: validates and evaluates each batch against `snapshot`, advancing it.
pub fn plan_group<'a>(batches: &'a [Batch], snapshot: &mut Snapshot) -> GroupPlan<'a> {
    let mut writes = Vec::new();
    let outcomes = batches
        .iter()
        .map(|batch| {
            batch.validate()?;
            let effects = evaluate(batch, snapshot)?;
            let mut result = PersistResult::default();
            for effect in effects {
                writes.push(advance(snapshot, effect, &mut result));
            }
            Ok(result)
        })
        .collect();
    GroupPlan { outcomes, writes, next_offset: snapshot.next_offset, next_sequence: snapshot.next_sequence }
}

/// Applies one effect to the snapshot and turns it into a write.
fn advance<'a>(s: &mut Snapshot, effect: Effect<'a>, result: &mut PersistResult) -> Write<'a> {
    match effect {
        Effect::AppendEvent { envelope } => {
            let offset = s.next_offset;
            s.next_offset += 1;
            s.events.insert(envelope.message_id.clone());
            result.event_offsets.insert(envelope.message_id.clone(), offset);
            return Write::Event { offset, envelope };
        }
        Effect::InsertQueue { message, next_attempt_at } => {
            let sequence = s.next_sequence;
            s.next_sequence += 1;
            let env = &message.envelope;
            let timeout_owner =
                env.is_timeout().then(|| pair(env.source_handler_key(), &env.source_instance_id));
            s.queue.insert(message.id().to_owned(), QueueState { revision: 1, timeout_owner });
            return Write::Enqueue { sequence, message, next_attempt_at };
        }
        Effect::PutAggregate { meta, revision } => {
            s.aggregates.insert(pair(&meta.handler_key, &meta.instance_id), revision);
        }
        Effect::PutProcess { instance, revision } => {
            s.processes.insert(pair(&instance.handler_key, &instance.instance_id), revision);
        }
        Effect::RemoveProcess { handler_key, instance_id } => {
            s.processes.remove(&pair(handler_key, instance_id));
            let owner = Some(pair(handler_key, instance_id));
            s.queue.retain(|_, q| q.timeout_owner != owner);
        }
        Effect::UpdateQueue { message_id, revision, .. } => {
            if let Some(q) = s.queue.get_mut(message_id) {
                q.revision = revision;
            }
        }
        Effect::RemoveQueue { message_id } => {
            s.queue.remove(message_id);
        }
        Effect::PutOffset { application_key, next_offset } => {
            s.offsets.insert(application_key.to_owned(), next_offset);
        }
    }
    Write::Other(effect)
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use vellum_core::{AggregateMetaData, Error, Identity};

    use super::*;

    fn event(id: &str) -> Operation {
        Operation::SaveEvent(Envelope { message_id: id.into(), ..Envelope::default() })
    }

    fn save_aggregate(revision: u64) -> Operation {
        Operation::SaveAggregateMetaData(AggregateMetaData { revision, ..AggregateMetaData::new("h", "i") })
    }

    #[test]
    fn later_batches_see_earlier_ones_and_failures_are_isolated() {
        let batches = vec![
            Batch::from(vec![save_aggregate(0), event("e1")]),
            Batch::from(vec![save_aggregate(0), event("e2")]), // stale: conflicts alone
            Batch::from(vec![save_aggregate(1), event("e3")]),
            Batch::from(vec![event("e1")]), // duplicate of batch 0's event
        ];
        let mut snapshot = Snapshot { next_offset: 10, ..Snapshot::default() };
        let plan = plan_group(&batches, &mut snapshot);
        assert!(plan.outcomes[0].is_ok());
        assert!(matches!(plan.outcomes[1], Err(Error::Conflict { index: 0, .. })));
        assert_eq!(plan.outcomes[2].as_ref().unwrap().event_offsets["e3"], 11);
        assert!(matches!(plan.outcomes[3], Err(Error::DuplicateEvent { .. })));
        assert_eq!(plan.writes.len(), 4);
        assert_eq!(plan.next_offset, 12, "failed batches consume no offset");
    }

    #[test]
    fn cascade_in_one_batch_hides_the_timeout_from_later_batches() {
        let timeout = QueueMessage {
            revision: 1,
            failure_count: 0,
            next_attempt_at: UNIX_EPOCH,
            envelope: Envelope {
                message_id: "t".into(),
                source_handler: Some(Identity::new("", "p")),
                source_instance_id: "i".into(),
                scheduled_for: "x".into(),
                ..Envelope::default()
            },
        };
        let mut snapshot = Snapshot::default();
        snapshot.processes.insert(pair("p", "i"), 1);
        snapshot.queue.insert("t".into(), QueueState { revision: 1, timeout_owner: Some(pair("p", "i")) });
        let end = vellum_core::ProcessInstance { revision: 1, ..vellum_core::ProcessInstance::new("p", "i") };
        let batches = vec![
            Batch::from(vec![Operation::RemoveProcessInstance(end)]),
            Batch::from(vec![Operation::RemoveQueueMessage(timeout)]),
        ];
        let plan = plan_group(&batches, &mut snapshot);
        assert!(plan.outcomes[0].is_ok());
        assert!(plan.outcomes[1].as_ref().unwrap_err().is_conflict());
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
