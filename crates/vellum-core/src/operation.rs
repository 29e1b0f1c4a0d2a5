//! The closed set of write operations (docs/batches.md#what-a-batch-is) and the entity each one
//! touches (docs/batches.md#entity-keys).

use std::fmt;

use crate::envelope::Envelope;
use crate::model::{AggregateMetaData, ProcessInstance, QueueMessage};

/// One write in a [`Batch`](crate::Batch). An exhaustive `match` replaces Go's visitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// Create or update aggregate meta-data; `revision` must equal the stored revision.
    SaveAggregateMetaData(AggregateMetaData),
    /// Append an event to the application's log. No precondition but a new message ID.
    SaveEvent(Envelope),
    /// Create or update a process instance; `revision` must equal the stored revision.
    SaveProcessInstance(ProcessInstance),
    /// Remove an existing process instance and every timeout it owns.
    RemoveProcessInstance(ProcessInstance),
    /// Enqueue a message (revision 0) or update its retry state (current revision).
    SaveQueueMessage(QueueMessage),
    /// Remove a message from the queue; `revision` must equal the stored revision.
    RemoveQueueMessage(QueueMessage),
    /// Move the consumer position in another application's event stream.
    SaveOffset {
        /// Identity key of the source application.
        application_key: String,
        /// The offset the caller believes is stored (0 when none is).
        current_offset: u64,
        /// The next offset to consume.
        next_offset: u64,
    },
}

impl Operation {
    /// The operation's name, as used in error messages.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::SaveAggregateMetaData(_) => "SaveAggregateMetaData",
            Self::SaveEvent(_) => "SaveEvent",
            Self::SaveProcessInstance(_) => "SaveProcessInstance",
            Self::RemoveProcessInstance(_) => "RemoveProcessInstance",
            Self::SaveQueueMessage(_) => "SaveQueueMessage",
            Self::RemoveQueueMessage(_) => "RemoveQueueMessage",
            Self::SaveOffset { .. } => "SaveOffset",
        }
    }

    /// The entity this operation touches; no two operations of a batch may share one.
    #[must_use]
    pub fn entity(&self) -> EntityKey<'_> {
        match self {
            Self::SaveAggregateMetaData(m) => EntityKey::Handler(&m.handler_key, &m.instance_id),
            Self::SaveProcessInstance(p) | Self::RemoveProcessInstance(p) => {
                EntityKey::Handler(&p.handler_key, &p.instance_id)
            }
            Self::SaveEvent(e) => EntityKey::Event(&e.message_id),
            Self::SaveQueueMessage(m) | Self::RemoveQueueMessage(m) => EntityKey::Queue(m.id()),
            Self::SaveOffset { application_key, .. } => EntityKey::Offset(application_key),
        }
    }
}

/// The entity an operation touches (docs/batches.md#entity-keys). Aggregates and processes
/// share the handler namespace, as in Go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntityKey<'a> {
    /// An aggregate or process instance: handler key and instance ID.
    Handler(&'a str, &'a str),
    /// An event, by message ID.
    Event(&'a str),
    /// A queue message, by message ID.
    Queue(&'a str),
    /// A consumer offset, by source application key.
    Offset(&'a str),
}

impl fmt::Display for EntityKey<'_> {
    /// Formats as Go does: kind and parts joined by spaces, trailing blanks trimmed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Self::Handler(hk, id) => format!("handler {hk} {id}"),
            Self::Event(id) => format!("event {id}"),
            Self::Queue(id) => format!("queue {id}"),
            Self::Offset(ak) => format!("offset {ak}"),
        };
        f.write_str(text.trim_end())
    }
}
