//! An executable model of the contract (docs/): plain vectors, linear scans, every rule written
//! out directly.
//!
//! It shares no evaluation code with the providers (not `vellum_core::eval`, not the memory
//! provider), so the differential test compares two independent readings of the contract. Speed
//! does not matter here; being obviously right does.

use std::collections::HashMap;
use std::time::SystemTime;

use vellum_core::time::Micros;
use vellum_core::{
    AggregateMetaData, Batch, Envelope, Event, Operation, PersistResult, ProcessInstance, QueueMessage,
};

/// How a batch failed, as far as providers must agree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelError {
    /// Two operations touch one entity (docs/batches.md#entity-keys).
    InvalidBatch,
    /// The operation at `index` failed its precondition (docs/batches.md#optimistic-concurrency).
    Conflict {
        /// Position of the first conflicting operation.
        index: usize,
    },
    /// An event with this ID is already in the log (docs/batches.md#events-and-duplicate-message-ids).
    DuplicateEvent(String),
}

#[derive(Debug, Clone)]
struct Queued {
    message: QueueMessage,
    micros: i64,
    /// Position of the first enqueue; ties in time are broken by it (docs/queue.md#queue-order).
    sequence: u64,
}

/// The whole state of one application's store.
#[derive(Debug, Clone, Default)]
pub struct Model {
    aggregates: Vec<AggregateMetaData>,
    processes: Vec<ProcessInstance>,
    events: Vec<Envelope>,
    queue: Vec<Queued>,
    offsets: Vec<(String, u64)>,
    next_sequence: u64,
}

impl Model {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies a batch all-or-nothing, as the contract says a provider must
    /// (docs/batches.md#atomicity).
    pub fn persist(&mut self, batch: &Batch) -> Result<PersistResult, ModelError> {
        let ops = batch.ops();
        for i in 0..ops.len() {
            for j in 0..i {
                if same_entity(&ops[i], &ops[j]) {
                    return Err(ModelError::InvalidBatch);
                }
            }
        }
        // docs/batches.md#evaluation-order: every precondition against the state before the batch,
        // first failure wins.
        for (index, op) in ops.iter().enumerate() {
            self.check(index, op)?;
        }
        let mut result = PersistResult::default();
        for op in ops {
            self.apply(op, &mut result);
        }
        Ok(result)
    }

    fn check(&self, index: usize, op: &Operation) -> Result<(), ModelError> {
        let ok = match op {
            Operation::SaveAggregateMetaData(m) => {
                self.load_aggregate_meta_data(&m.handler_key, &m.instance_id).revision == m.revision
            }
            Operation::SaveProcessInstance(p) => {
                self.load_process_instance(&p.handler_key, &p.instance_id).revision == p.revision
            }
            Operation::RemoveProcessInstance(p) => {
                let stored = self.load_process_instance(&p.handler_key, &p.instance_id).revision;
                stored != 0 && stored == p.revision
            }
            Operation::SaveEvent(e) => {
                if self.events.iter().any(|x| x.message_id == e.message_id) {
                    return Err(ModelError::DuplicateEvent(e.message_id.clone()));
                }
                true
            }
            Operation::SaveQueueMessage(m) => match self.find_queued(m.id()) {
                None => m.revision == 0,
                Some(q) => m.revision != 0 && q.message.revision == m.revision,
            },
            Operation::RemoveQueueMessage(m) => {
                self.find_queued(m.id()).is_some_and(|q| q.message.revision == m.revision)
            }
            Operation::SaveOffset { application_key, current_offset, .. } => {
                self.load_offset(application_key) == *current_offset
            }
        };
        if ok { Ok(()) } else { Err(ModelError::Conflict { index }) }
    }

    fn apply(&mut self, op: &Operation, result: &mut PersistResult) {
        match op {
            Operation::SaveAggregateMetaData(m) => {
                self.aggregates
                    .retain(|x| !(x.handler_key == m.handler_key && x.instance_id == m.instance_id));
                self.aggregates.push(AggregateMetaData { revision: m.revision + 1, ..m.clone() });
            }
            Operation::SaveProcessInstance(p) => {
                self.processes
                    .retain(|x| !(x.handler_key == p.handler_key && x.instance_id == p.instance_id));
                self.processes.push(ProcessInstance { revision: p.revision + 1, ..p.clone() });
            }
            Operation::RemoveProcessInstance(p) => {
                self.processes
                    .retain(|x| !(x.handler_key == p.handler_key && x.instance_id == p.instance_id));
                self.queue.retain(|q| {
                    let e = &q.message.envelope;
                    let owned = !e.scheduled_for.is_empty()
                        && e.source_handler.as_ref().map_or("", |h| h.key.as_str()) == p.handler_key
                        && e.source_instance_id == p.instance_id;
                    !owned
                });
            }
            Operation::SaveEvent(e) => {
                result.event_offsets.insert(e.message_id.clone(), self.events.len() as u64);
                self.events.push(e.clone());
            }
            Operation::SaveQueueMessage(m) => {
                let micros =
                    Micros::from_system_time(m.next_attempt_at).expect("validated by the generator").0;
                if let Some(q) = self.queue.iter_mut().find(|q| q.message.id() == m.id()) {
                    q.message.revision += 1;
                    q.message.failure_count = m.failure_count;
                    q.message.next_attempt_at = Micros(micros).to_system_time();
                    q.micros = micros;
                } else if m.revision == 0 {
                    let message = QueueMessage {
                        revision: 1,
                        next_attempt_at: Micros(micros).to_system_time(),
                        ..m.clone()
                    };
                    self.queue.push(Queued { message, micros, sequence: self.next_sequence });
                    self.next_sequence += 1;
                }
                // Otherwise the message was present before the batch and an earlier op of this
                // batch (a process removal's timeout cascade) removed it: the update is moot.
            }
            Operation::RemoveQueueMessage(m) => self.queue.retain(|q| q.message.id() != m.id()),
            Operation::SaveOffset { application_key, next_offset, .. } => {
                self.offsets.retain(|(k, _)| k != application_key);
                self.offsets.push((application_key.clone(), *next_offset));
            }
        }
    }

    fn find_queued(&self, id: &str) -> Option<&Queued> {
        self.queue.iter().find(|q| q.message.id() == id)
    }

    /// docs/batches.md#aggregate-meta-data.
    #[must_use]
    pub fn load_aggregate_meta_data(&self, hk: &str, id: &str) -> AggregateMetaData {
        self.aggregates
            .iter()
            .find(|x| x.handler_key == hk && x.instance_id == id)
            .cloned()
            .unwrap_or_else(|| AggregateMetaData::new(hk, id))
    }

    /// docs/batches.md#process-instances.
    #[must_use]
    pub fn load_process_instance(&self, hk: &str, id: &str) -> ProcessInstance {
        self.processes
            .iter()
            .find(|x| x.handler_key == hk && x.instance_id == id)
            .cloned()
            .unwrap_or_else(|| ProcessInstance::new(hk, id))
    }

    /// docs/batches.md#consumer-offsets.
    #[must_use]
    pub fn load_offset(&self, application_key: &str) -> u64 {
        self.offsets.iter().find(|(k, _)| k == application_key).map_or(0, |(_, o)| *o)
    }

    /// docs/events.md#next-event-offset.
    #[must_use]
    pub fn next_event_offset(&self) -> u64 {
        self.events.len() as u64
    }

    /// docs/events.md#queries-by-type.
    #[must_use]
    pub fn load_events_by_type(&self, types: &[&str], min_offset: u64) -> Vec<Event> {
        self.events_where(|e| types.contains(&e.portable_name.as_str()))
            .into_iter()
            .filter(|e| e.offset >= min_offset)
            .collect()
    }

    /// docs/events.md#queries-by-source.
    #[must_use]
    pub fn load_events_by_source(&self, hk: &str, id: &str) -> Vec<Event> {
        self.events_where(|e| {
            e.source_handler.as_ref().map_or("", |h| h.key.as_str()) == hk && e.source_instance_id == id
        })
    }

    fn events_where(&self, keep: impl Fn(&Envelope) -> bool) -> Vec<Event> {
        let mut found = Vec::new();
        for (offset, envelope) in self.events.iter().enumerate() {
            if keep(envelope) {
                found.push(Event { offset: offset as u64, envelope: envelope.clone() });
            }
        }
        found
    }

    /// docs/queue.md#loading-the-head: earliest first, ties by first enqueue, then by ID.
    #[must_use]
    pub fn load_queue_messages(&self, n: usize) -> Vec<QueueMessage> {
        let mut all = self.queue.clone();
        all.sort_by(|a, b| {
            (a.micros, a.sequence, a.message.id()).cmp(&(b.micros, b.sequence, b.message.id()))
        });
        all.into_iter().take(n).map(|q| q.message).collect()
    }

    /// The stored revision of a queue message, 0 when absent.
    #[must_use]
    pub fn queue_revision(&self, id: &str) -> u64 {
        self.find_queued(id).map_or(0, |q| q.message.revision)
    }

    /// Every queued message, keyed by ID.
    #[must_use]
    pub fn queued(&self) -> HashMap<String, QueueMessage> {
        self.queue.iter().map(|q| (q.message.id().to_owned(), q.message.clone())).collect()
    }

    /// The time a queued message is stored with (truncated to microseconds).
    #[must_use]
    pub fn stored_time(t: SystemTime) -> SystemTime {
        vellum_core::time::truncate_to_micros(t)
    }
}

fn same_entity(a: &Operation, b: &Operation) -> bool {
    use Operation as O;
    let handler = |op: &Operation| match op {
        O::SaveAggregateMetaData(m) => Some((m.handler_key.clone(), m.instance_id.clone())),
        O::SaveProcessInstance(p) | O::RemoveProcessInstance(p) => {
            Some((p.handler_key.clone(), p.instance_id.clone()))
        }
        _ => None,
    };
    let queue = |op: &Operation| match op {
        O::SaveQueueMessage(m) | O::RemoveQueueMessage(m) => Some(m.id().to_owned()),
        _ => None,
    };
    match (a, b) {
        (O::SaveEvent(x), O::SaveEvent(y)) => x.message_id == y.message_id,
        (O::SaveOffset { application_key: x, .. }, O::SaveOffset { application_key: y, .. }) => x == y,
        _ => {
            (handler(a).is_some() && handler(a) == handler(b)) || (queue(a).is_some() && queue(a) == queue(b))
        }
    }
}
