//! A batch of operations committed atomically, and its validation (docs/batches.md#validation).

use std::collections::HashMap;

use crate::error::{Error, InvalidBatch};
use crate::operation::Operation;
use crate::time::Micros;

/// An ordered list of operations that a store commits all-or-nothing.
///
/// ```
/// use vellum_core::{Batch, Operation};
///
/// let batch = Batch::from(vec![Operation::SaveOffset {
///     application_key: "billing".into(),
///     current_offset: 0,
///     next_offset: 1,
/// }]);
/// assert!(batch.validate().is_ok());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    ops: Vec<Operation>,
}

impl Batch {
    /// An empty batch; valid, and commits nothing.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an operation.
    pub fn push(&mut self, op: Operation) -> &mut Self {
        self.ops.push(op);
        self
    }

    /// The operations, in batch order.
    #[must_use]
    pub fn ops(&self) -> &[Operation] {
        &self.ops
    }

    /// Iterates over the operations in batch order.
    pub fn iter(&self) -> std::slice::Iter<'_, Operation> {
        self.ops.iter()
    }

    /// Takes the operations out of the batch.
    #[must_use]
    pub fn into_ops(self) -> Vec<Operation> {
        self.ops
    }

    /// The number of operations.
    #[must_use]
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch has no operations.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Checks the batch without touching storage: no two operations may share an entity
    /// (docs/batches.md#entity-keys), and every queue time must fit the stored microsecond range
    /// (docs/queue.md#time-precision-and-range).
    pub fn validate(&self) -> Result<(), Error> {
        let mut seen = HashMap::with_capacity(self.ops.len());
        for (index, op) in self.ops.iter().enumerate() {
            let entity = op.entity();
            if let Some(first) = seen.insert(entity, index) {
                return Err(Error::InvalidBatch(InvalidBatch::DuplicateEntity {
                    entity: entity.to_string(),
                    first,
                    second: index,
                }));
            }
            if let Operation::SaveQueueMessage(m) = op
                && Micros::from_system_time(m.next_attempt_at).is_none()
            {
                return Err(Error::InvalidBatch(InvalidBatch::TimeOutOfRange {
                    index,
                    message_id: m.id().to_owned(),
                }));
            }
        }
        Ok(())
    }
}

impl From<Vec<Operation>> for Batch {
    fn from(ops: Vec<Operation>) -> Self {
        Self { ops }
    }
}

impl FromIterator<Operation> for Batch {
    fn from_iter<I: IntoIterator<Item = Operation>>(iter: I) -> Self {
        Self { ops: iter.into_iter().collect() }
    }
}

impl IntoIterator for Batch {
    type Item = Operation;
    type IntoIter = std::vec::IntoIter<Operation>;

    fn into_iter(self) -> Self::IntoIter {
        self.ops.into_iter()
    }
}

impl<'a> IntoIterator for &'a Batch {
    type Item = &'a Operation;
    type IntoIter = std::slice::Iter<'a, Operation>;

    fn into_iter(self) -> Self::IntoIter {
        self.ops.iter()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::*;
    use crate::{AggregateMetaData, EntityKey, Envelope, Packet, ProcessInstance, QueueMessage};

    fn message(id: &str) -> QueueMessage {
        QueueMessage {
            revision: 0,
            failure_count: 0,
            next_attempt_at: UNIX_EPOCH,
            envelope: Envelope { message_id: id.into(), ..Envelope::default() },
        }
    }

    fn process(hk: &str, id: &str) -> ProcessInstance {
        ProcessInstance { packet: Packet::default(), ..ProcessInstance::new(hk, id) }
    }

    /// docs/batches.md#entity-keys: save and remove of one queue message is invalid, named `queue <X>`.
    #[test]
    fn save_and_remove_of_one_message_is_invalid() {
        let batch = Batch::from(vec![
            Operation::SaveQueueMessage(message("<id>")),
            Operation::RemoveQueueMessage(message("<id>")),
        ]);
        let err = batch.validate().unwrap_err();
        assert!(matches!(
            &err,
            Error::InvalidBatch(InvalidBatch::DuplicateEntity { entity, first: 0, second: 1 }) if entity == "queue <id>"
        ));
        assert!(err.to_string().contains("(queue <id>)"), "{err}");
    }

    /// docs/batches.md#entity-keys: the engine's usual mix of entities is valid.
    #[test]
    fn engine_shaped_batch_is_valid() {
        let batch = Batch::from(vec![
            Operation::SaveAggregateMetaData(AggregateMetaData::new("<aggregate-key>", "<instance>")),
            Operation::SaveEvent(Envelope { message_id: "<id-1>".into(), ..Envelope::default() }),
            Operation::SaveProcessInstance(process("<process-key>", "<instance>")),
            Operation::SaveQueueMessage(message("<id-1>")),
            Operation::RemoveQueueMessage(message("<id-2>")),
            Operation::SaveProcessInstance(process("<process-key>", "<instance-a>")),
            Operation::RemoveProcessInstance(process("<process-key>", "<instance-b>")),
            Operation::SaveOffset { application_key: "<app>".into(), current_offset: 0, next_offset: 1 },
        ]);
        assert!(batch.validate().is_ok());
    }

    /// Aggregates and processes share the handler namespace (docs/batches.md#entity-keys), as do save
    /// and remove.
    #[test]
    fn handler_namespace_is_shared() {
        let cases = [
            Operation::SaveAggregateMetaData(AggregateMetaData::new("<k>", "<i>")),
            Operation::SaveProcessInstance(process("<k>", "<i>")),
            Operation::RemoveProcessInstance(process("<k>", "<i>")),
        ];
        for a in &cases {
            for b in &cases {
                let err = Batch::from(vec![a.clone(), b.clone()]).validate().unwrap_err();
                assert!(err.to_string().contains("(handler <k> <i>)"), "{err}");
            }
        }
        let other_instance =
            Batch::from(vec![cases[0].clone(), Operation::SaveProcessInstance(process("<k>", "<j>"))]);
        assert!(other_instance.validate().is_ok());
    }

    /// Trailing blanks of the entity text are trimmed, as Go does.
    #[test]
    fn entity_text_trims_trailing_blanks() {
        assert_eq!(EntityKey::Handler("<k>", "").to_string(), "handler <k>");
        assert_eq!(EntityKey::Offset("").to_string(), "offset");
    }

    #[test]
    fn duplicate_events_and_offsets_are_invalid() {
        let event = Operation::SaveEvent(Envelope { message_id: "<e>".into(), ..Envelope::default() });
        assert!(Batch::from(vec![event.clone(), event]).validate().is_err());
        let offset =
            Operation::SaveOffset { application_key: "<a>".into(), current_offset: 0, next_offset: 1 };
        assert!(Batch::from(vec![offset.clone(), offset]).validate().is_err());
    }

    /// An event and a queue message may share a message ID (docs/batches.md#entity-keys).
    #[test]
    fn event_and_queue_message_may_share_an_id() {
        let batch = Batch::from(vec![
            Operation::SaveEvent(Envelope { message_id: "<x>".into(), ..Envelope::default() }),
            Operation::SaveQueueMessage(message("<x>")),
        ]);
        assert!(batch.validate().is_ok());
    }

    #[test]
    fn empty_batch_is_valid() {
        assert!(Batch::new().validate().is_ok());
    }

    /// A time beyond the i64 microsecond range is rejected, not wrapped.
    #[test]
    fn unstorable_time_is_invalid() {
        let far = UNIX_EPOCH + Duration::from_secs(u64::from(u32::MAX) * 100_000);
        let mut m = message("<far>");
        m.next_attempt_at = far;
        let err = Batch::from(vec![Operation::SaveQueueMessage(m)]).validate().unwrap_err();
        assert!(matches!(err, Error::InvalidBatch(InvalidBatch::TimeOutOfRange { index: 0, .. })), "{err}");
        let mut ok = message("<now>");
        ok.next_attempt_at = SystemTime::now();
        assert!(Batch::from(vec![Operation::SaveQueueMessage(ok)]).validate().is_ok());
    }
}
