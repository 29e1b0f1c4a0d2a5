//! The records a store keeps.

use std::collections::HashMap;
use std::time::SystemTime;

use crate::envelope::Envelope;

/// A marshaled value: a MIME type (with a `type` parameter) and the encoded bytes.
///
/// An empty packet (empty media type and no data) is a meaningful value: the engine uses it for a
/// stateless process root, and every provider round-trips it as empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Packet {
    /// The MIME type of `data`.
    pub media_type: String,
    /// The encoded value.
    pub data: Vec<u8>,
}

impl Packet {
    /// Builds a packet.
    pub fn new(media_type: impl Into<String>, data: impl Into<Vec<u8>>) -> Self {
        Self { media_type: media_type.into(), data: data.into() }
    }

    /// Whether both the media type and the data are empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.media_type.is_empty() && self.data.is_empty()
    }
}

/// Meta-data about an aggregate instance (docs/batches.md#aggregate-meta-data).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct AggregateMetaData {
    /// Identity key of the aggregate's handler.
    pub handler_key: String,
    /// The aggregate instance ID.
    pub instance_id: String,
    /// Optimistic-concurrency version; 0 means "never persisted".
    pub revision: u64,
    /// ID of the newest event recorded for the instance; empty when none.
    pub last_event_id: String,
}

impl AggregateMetaData {
    /// The value a never-saved instance loads as: its keys, revision 0, no last event.
    pub fn new(handler_key: impl Into<String>, instance_id: impl Into<String>) -> Self {
        Self { handler_key: handler_key.into(), instance_id: instance_id.into(), ..Self::default() }
    }
}

/// The state of a process instance (docs/batches.md#process-instances).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ProcessInstance {
    /// Identity key of the process handler.
    pub handler_key: String,
    /// The process instance ID.
    pub instance_id: String,
    /// Optimistic-concurrency version; 0 means "not persisted".
    pub revision: u64,
    /// The marshaled process root.
    pub packet: Packet,
}

impl ProcessInstance {
    /// The value a missing instance loads as: its keys, revision 0, an empty packet.
    pub fn new(handler_key: impl Into<String>, instance_id: impl Into<String>) -> Self {
        Self { handler_key: handler_key.into(), instance_id: instance_id.into(), ..Self::default() }
    }
}

/// A message on the application's durable queue (docs/queue.md#queue-messages).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QueueMessage {
    /// Optimistic-concurrency version; 0 means "not on the queue".
    pub revision: u64,
    /// How many attempts to handle the message have failed.
    pub failure_count: u64,
    /// When the message should next be attempted; the queue's priority key. Stored with
    /// microsecond precision (truncated towards the past).
    pub next_attempt_at: SystemTime,
    /// The message. Immutable once enqueued: updates change only the two fields above.
    pub envelope: Envelope,
}

impl QueueMessage {
    /// The message ID, taken from the envelope.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.envelope.message_id
    }
}

/// A persisted event: its offset in the application's log and its envelope (docs/events.md#offsets).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Event {
    /// Position in the application's event log: dense, from 0, in commit order.
    pub offset: u64,
    /// The event message.
    pub envelope: Envelope,
}

impl Event {
    /// The message ID, taken from the envelope.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.envelope.message_id
    }
}

/// The outcome of a successful `persist` (docs/batches.md#results).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PersistResult {
    /// The offset given to each event of the batch, keyed by message ID.
    pub event_offsets: HashMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/queue.md#queue-messages: IDs come from the envelope.
    #[test]
    fn ids_come_from_the_envelope() {
        let envelope = Envelope { message_id: "<id>".into(), ..Envelope::default() };
        let event = Event { offset: 4, envelope: envelope.clone() };
        assert_eq!(event.id(), "<id>");
        let message =
            QueueMessage { revision: 1, failure_count: 0, next_attempt_at: SystemTime::UNIX_EPOCH, envelope };
        assert_eq!(message.id(), "<id>");
    }

    #[test]
    fn empty_packet_is_empty() {
        assert!(Packet::default().is_empty());
        assert!(!Packet::new("", vec![0]).is_empty());
        assert!(!Packet::new("a/b", Vec::new()).is_empty());
    }
}
