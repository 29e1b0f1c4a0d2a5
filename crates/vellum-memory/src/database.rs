//! One application's data, and how a plan is written to it.

use std::collections::HashMap;

use vellum_core::provider::PreBatchState;
use vellum_core::provider::{Counters, Plan, Write};
use vellum_core::{AggregateMetaData, Packet, ProcessInstance, Result};

use crate::keyed::Keyed2;
use crate::log::EventLog;
use crate::queue::Queue;

#[derive(Debug, Default)]
pub(crate) struct Database {
    pub(crate) aggregates: Keyed2<(u64, String)>,
    pub(crate) processes: Keyed2<(u64, Packet)>,
    pub(crate) events: EventLog,
    pub(crate) queue: Queue,
    pub(crate) offsets: HashMap<String, u64>,
}

impl Database {
    pub(crate) fn aggregate(&self, handler_key: &str, instance_id: &str) -> AggregateMetaData {
        let mut md = AggregateMetaData::new(handler_key, instance_id);
        if let Some((revision, last_event_id)) = self.aggregates.get(handler_key, instance_id) {
            md.revision = *revision;
            md.last_event_id.clone_from(last_event_id);
        }
        md
    }

    pub(crate) fn process(&self, handler_key: &str, instance_id: &str) -> ProcessInstance {
        let mut instance = ProcessInstance::new(handler_key, instance_id);
        if let Some((revision, packet)) = self.processes.get(handler_key, instance_id) {
            instance.revision = *revision;
            instance.packet.clone_from(packet);
        }
        instance
    }

    pub(crate) fn offset(&self, application_key: &str) -> u64 {
        self.offsets.get(application_key).copied().unwrap_or(0)
    }

    /// The application's counters as they stand.
    pub(crate) fn counters(&self) -> Counters {
        Counters { next_offset: self.events.next_offset(), next_sequence: self.queue.next_sequence() }
    }

    /// Applies a plan: the one write path of persists and imports alike.
    pub(crate) fn apply(&mut self, plan: &Plan<'_>) {
        for write in &plan.writes {
            match *write {
                Write::PutAggregate { meta, revision } => self.aggregates.insert(
                    &meta.handler_key,
                    &meta.instance_id,
                    (revision, meta.last_event_id.clone()),
                ),
                Write::PutProcess { instance, revision } => self.processes.insert(
                    &instance.handler_key,
                    &instance.instance_id,
                    (revision, instance.packet.clone()),
                ),
                Write::RemoveProcess { handler_key, instance_id } => {
                    self.processes.remove(handler_key, instance_id);
                    self.queue.remove_timeouts(handler_key, instance_id);
                }
                Write::AppendEvent { offset, envelope } => self.events.append(offset, envelope),
                Write::InsertQueue { message, revision, sequence, next_attempt_at } => {
                    self.queue.put(sequence, revision, message, next_attempt_at);
                }
                Write::UpdateQueue { message_id, revision, failure_count, next_attempt_at } => {
                    self.queue.update(message_id, revision, failure_count, next_attempt_at);
                }
                Write::RemoveQueue { message_id } => self.queue.remove(message_id),
                Write::PutOffset { application_key, next_offset } => {
                    self.offsets.insert(application_key.to_owned(), next_offset);
                }
            }
        }
        self.queue.advance_sequence(plan.after.next_sequence);
    }
}

impl PreBatchState for Database {
    fn aggregate_revision(&mut self, handler_key: &str, instance_id: &str) -> Result<u64> {
        Ok(self.aggregates.get(handler_key, instance_id).map_or(0, |(r, _)| *r))
    }

    fn process_revision(&mut self, handler_key: &str, instance_id: &str) -> Result<Option<u64>> {
        Ok(self.processes.get(handler_key, instance_id).map(|(r, _)| *r))
    }

    fn queue_revision(&mut self, message_id: &str) -> Result<Option<u64>> {
        Ok(self.queue.revision(message_id))
    }

    fn timeouts_of(&mut self, handler_key: &str, instance_id: &str) -> Result<Vec<String>> {
        Ok(self.queue.timeouts_of(handler_key, instance_id))
    }

    fn offset(&mut self, application_key: &str) -> Result<u64> {
        Ok(Database::offset(self, application_key))
    }

    fn event_exists(&mut self, message_id: &str) -> Result<bool> {
        Ok(self.events.contains(message_id))
    }
}
