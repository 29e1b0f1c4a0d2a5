//! Batch evaluation, written once for every provider (docs/batches.md#evaluation-order).
//!
//! A provider persists a batch in two steps:
//! 1. [`evaluate`] checks every operation's precondition against the state *before* the batch
//!    (read through [`PreBatchState`]) and returns the first failure in batch order, or the list
//!    of [`Effect`]s to write. Nothing is written until every check has passed, so a failing batch
//!    needs no rollback, and batches sharing one transaction (group commit) fail alone.
//! 2. The provider writes the effects in order. [`Effect::RemoveQueue`] must be idempotent: the
//!    timeout cascade of an earlier [`Effect::RemoveProcess`] may already have removed it
//!    (docs/batches.md#process-removal-and-timeouts).

use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::model::{AggregateMetaData, ProcessInstance, QueueMessage};
use crate::operation::Operation;
use crate::time::Micros;
use crate::{Batch, InvalidBatch};

/// Read access to the persisted state a batch is checked against.
///
/// Methods take `&mut self` so implementations may cache or fetch lazily.
pub trait PreBatchState {
    /// The stored revision of an aggregate instance, 0 when never saved.
    fn aggregate_revision(&mut self, handler_key: &str, instance_id: &str) -> Result<u64>;
    /// The stored revision of a process instance, `None` when absent.
    fn process_revision(&mut self, handler_key: &str, instance_id: &str) -> Result<Option<u64>>;
    /// The stored revision of a queue message, `None` when absent.
    fn queue_revision(&mut self, message_id: &str) -> Result<Option<u64>>;
    /// The IDs of the stored timeouts owned by a process instance (removed with it). A
    /// `plan::Snapshot` may answer with only those among the keys it holds.
    fn timeouts_of(&mut self, handler_key: &str, instance_id: &str) -> Result<Vec<String>>;
    /// The stored consumer offset for a source application, 0 when none.
    fn offset(&mut self, application_key: &str) -> Result<u64>;
    /// Whether an event with this message ID is in the log.
    fn event_exists(&mut self, message_id: &str) -> Result<bool>;
}

/// One write a provider must perform, in batch order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect<'a> {
    /// Store aggregate meta-data with the given (already incremented) revision.
    PutAggregate {
        /// The meta-data as submitted (its `revision` is the old one).
        meta: &'a AggregateMetaData,
        /// The revision to store.
        revision: u64,
    },
    /// Store a process instance, replacing its packet, with the given revision.
    PutProcess {
        /// The instance as submitted (its `revision` is the old one).
        instance: &'a ProcessInstance,
        /// The revision to store.
        revision: u64,
    },
    /// Delete a process instance and every timeout it owns (docs/batches.md#process-removal-and-timeouts).
    RemoveProcess {
        /// The process handler key.
        handler_key: &'a str,
        /// The process instance ID.
        instance_id: &'a str,
    },
    /// Append an event at the next offset.
    AppendEvent {
        /// The event's envelope.
        envelope: &'a Envelope,
    },
    /// Enqueue a new message with revision 1 and the full envelope.
    InsertQueue {
        /// The message as submitted.
        message: &'a QueueMessage,
        /// Its `next_attempt_at` in storage form.
        next_attempt_at: Micros,
    },
    /// Update a queued message's retry state; its envelope is immutable.
    UpdateQueue {
        /// The message ID.
        message_id: &'a str,
        /// The revision to store.
        revision: u64,
        /// The new failure count.
        failure_count: u64,
        /// The new `next_attempt_at`.
        next_attempt_at: Micros,
    },
    /// Delete a queued message if it is still present.
    RemoveQueue {
        /// The message ID.
        message_id: &'a str,
    },
    /// Store a consumer offset.
    PutOffset {
        /// The source application key.
        application_key: &'a str,
        /// The offset to store.
        next_offset: u64,
    },
}

/// Checks every precondition of a validated batch against the pre-batch state and returns the
/// effects to write, or the first failure in batch order (a conflict, a duplicate event, or a
/// storage error from `state`).
pub fn evaluate<'a, S: PreBatchState + ?Sized>(batch: &'a Batch, state: &mut S) -> Result<Vec<Effect<'a>>> {
    batch.ops().iter().enumerate().map(|(index, op)| check(index, op, state)).collect()
}

fn check<'a, S: PreBatchState + ?Sized>(
    index: usize,
    op: &'a Operation,
    state: &mut S,
) -> Result<Effect<'a>> {
    let conflict = || Error::conflict(index, op);
    match op {
        Operation::SaveAggregateMetaData(meta) => {
            if state.aggregate_revision(&meta.handler_key, &meta.instance_id)? != meta.revision {
                return Err(conflict());
            }
            Ok(Effect::PutAggregate { meta, revision: next_revision(meta.revision, &conflict)? })
        }
        Operation::SaveProcessInstance(instance) => {
            let stored = state.process_revision(&instance.handler_key, &instance.instance_id)?;
            if stored.unwrap_or(0) != instance.revision {
                return Err(conflict());
            }
            let revision = next_revision(instance.revision, &conflict)?;
            Ok(Effect::PutProcess { instance, revision })
        }
        Operation::RemoveProcessInstance(instance) => {
            let stored = state.process_revision(&instance.handler_key, &instance.instance_id)?;
            if stored != Some(instance.revision) {
                return Err(conflict());
            }
            Ok(Effect::RemoveProcess {
                handler_key: &instance.handler_key,
                instance_id: &instance.instance_id,
            })
        }
        Operation::SaveEvent(envelope) => {
            if state.event_exists(&envelope.message_id)? {
                return Err(Error::DuplicateEvent { message_id: envelope.message_id.clone() });
            }
            Ok(Effect::AppendEvent { envelope })
        }
        Operation::SaveQueueMessage(message) => {
            let next_attempt_at = Micros::from_system_time(message.next_attempt_at)
                .ok_or_else(|| InvalidBatch::TimeOutOfRange { index, message_id: message.id().to_owned() })?;
            match state.queue_revision(message.id())? {
                None if message.revision == 0 => Ok(Effect::InsertQueue { message, next_attempt_at }),
                Some(stored) if stored == message.revision && stored != 0 => Ok(Effect::UpdateQueue {
                    message_id: message.id(),
                    revision: next_revision(stored, &conflict)?,
                    failure_count: message.failure_count,
                    next_attempt_at,
                }),
                _ => Err(conflict()),
            }
        }
        Operation::RemoveQueueMessage(message) => match state.queue_revision(message.id())? {
            Some(stored) if stored == message.revision => {
                Ok(Effect::RemoveQueue { message_id: message.id() })
            }
            _ => Err(conflict()),
        },
        Operation::SaveOffset { application_key, current_offset, next_offset } => {
            if state.offset(application_key)? != *current_offset {
                return Err(conflict());
            }
            Ok(Effect::PutOffset { application_key, next_offset: *next_offset })
        }
    }
}

/// `revision + 1`; a revision at `u64::MAX` cannot advance, which is reported as a conflict
/// rather than wrapping to 0 ("never persisted").
fn next_revision(revision: u64, conflict: &impl Fn() -> Error) -> Result<u64> {
    revision.checked_add(1).ok_or_else(conflict)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::{Identity, Packet};

    /// A pre-batch state from maps, recording which lookups were made.
    #[derive(Default)]
    struct State {
        processes: HashMap<(String, String), u64>,
        queue: HashMap<String, u64>,
        events: Vec<String>,
        asked: Vec<String>,
    }

    impl PreBatchState for State {
        fn aggregate_revision(&mut self, hk: &str, id: &str) -> Result<u64> {
            self.asked.push(format!("aggregate {hk} {id}"));
            Ok(0)
        }
        fn process_revision(&mut self, hk: &str, id: &str) -> Result<Option<u64>> {
            self.asked.push(format!("process {hk} {id}"));
            Ok(self.processes.get(&(hk.to_owned(), id.to_owned())).copied())
        }
        fn queue_revision(&mut self, id: &str) -> Result<Option<u64>> {
            self.asked.push(format!("queue {id}"));
            Ok(self.queue.get(id).copied())
        }
        fn timeouts_of(&mut self, _: &str, _: &str) -> Result<Vec<String>> {
            Ok(Vec::new())
        }
        fn offset(&mut self, ak: &str) -> Result<u64> {
            self.asked.push(format!("offset {ak}"));
            Ok(0)
        }
        fn event_exists(&mut self, id: &str) -> Result<bool> {
            self.asked.push(format!("event {id}"));
            Ok(self.events.iter().any(|e| e == id))
        }
    }

    fn timeout(id: &str, hk: &str, instance: &str) -> QueueMessage {
        QueueMessage {
            revision: 1,
            failure_count: 0,
            next_attempt_at: UNIX_EPOCH,
            envelope: Envelope {
                message_id: id.into(),
                source_handler: Some(Identity::new("", hk)),
                source_instance_id: instance.into(),
                scheduled_for: "2026-01-01T00:00:00Z".into(),
                ..Envelope::default()
            },
        }
    }

    fn instance(revision: u64) -> ProcessInstance {
        ProcessInstance { revision, packet: Packet::default(), ..ProcessInstance::new("<p>", "<i>") }
    }

    /// docs/batches.md#process-removal-and-timeouts: removing a process and its own timeout in one
    /// batch, in either order, succeeds.
    #[test]
    fn process_end_and_own_timeout_removal_compose() {
        let mut state = State::default();
        state.processes.insert(("<p>".into(), "<i>".into()), 1);
        state.queue.insert("<t>".into(), 1);
        for ops in [
            vec![
                Operation::RemoveProcessInstance(instance(1)),
                Operation::RemoveQueueMessage(timeout("<t>", "<p>", "<i>")),
            ],
            vec![
                Operation::RemoveQueueMessage(timeout("<t>", "<p>", "<i>")),
                Operation::RemoveProcessInstance(instance(1)),
            ],
        ] {
            let batch = Batch::from(ops);
            let effects = evaluate(&batch, &mut state).unwrap();
            assert_eq!(effects.len(), 2);
        }
    }

    /// docs/batches.md#evaluation-order: every op is checked in order and the first failure stops
    /// evaluation.
    #[test]
    fn first_failure_in_batch_order_is_reported() {
        let mut state = State::default();
        state.events.push("<dup>".into());
        let batch = Batch::from(vec![
            Operation::SaveOffset { application_key: "<a>".into(), current_offset: 0, next_offset: 1 },
            Operation::RemoveProcessInstance(instance(0)),
            Operation::SaveEvent(Envelope { message_id: "<dup>".into(), ..Envelope::default() }),
        ]);
        let err = evaluate(&batch, &mut state).unwrap_err();
        assert!(matches!(&err, Error::Conflict { index: 1, op } if **op == batch.ops()[1]), "{err}");
        assert_eq!(state.asked, ["offset <a>", "process <p> <i>"]);
    }

    #[test]
    fn duplicate_event_is_not_a_conflict() {
        let mut state = State::default();
        state.events.push("<dup>".into());
        let batch = Batch::from(vec![Operation::SaveEvent(Envelope {
            message_id: "<dup>".into(),
            ..Envelope::default()
        })]);
        assert!(
            matches!(evaluate(&batch, &mut state), Err(Error::DuplicateEvent { message_id }) if message_id == "<dup>")
        );
    }

    /// docs/batches.md#queue-messages: insert needs revision 0 and absence; update needs the
    /// stored, non-zero revision.
    #[test]
    fn queue_save_rules() {
        let mut state = State::default();
        state.queue.insert("<present>".into(), 2);
        let save = |id: &str, revision: u64| {
            let mut m = timeout(id, "", "");
            m.revision = revision;
            Batch::from(vec![Operation::SaveQueueMessage(m)])
        };
        assert!(matches!(evaluate(&save("<absent>", 0), &mut state).unwrap()[0], Effect::InsertQueue { .. }));
        assert!(evaluate(&save("<absent>", 1), &mut state).unwrap_err().is_conflict());
        assert!(matches!(
            evaluate(&save("<present>", 2), &mut state).unwrap()[0],
            Effect::UpdateQueue { revision: 3, .. }
        ));
        for stale in [0, 1, 3] {
            assert!(evaluate(&save("<present>", stale), &mut state).unwrap_err().is_conflict());
        }
    }

    #[test]
    fn removing_an_absent_process_conflicts_for_any_revision() {
        let mut state = State::default();
        for revision in [0, 1, 100] {
            let batch = Batch::from(vec![Operation::RemoveProcessInstance(instance(revision))]);
            assert!(evaluate(&batch, &mut state).unwrap_err().is_conflict());
        }
    }

    #[test]
    fn revision_at_max_cannot_advance() {
        let mut state = State::default();
        state.processes.insert(("<p>".into(), "<i>".into()), u64::MAX);
        let batch = Batch::from(vec![Operation::SaveProcessInstance(instance(u64::MAX))]);
        assert!(evaluate(&batch, &mut state).unwrap_err().is_conflict());
    }
}
