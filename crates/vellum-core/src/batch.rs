//! A batch of operations committed atomically, and its validation (SPEC §3, D3).

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
    /// (SPEC §3), and every queue time must fit the stored microsecond range (SPEC D6).
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
