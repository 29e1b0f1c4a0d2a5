//! The message queue: messages by ID, an ordered index (time, enqueue sequence, ID) and a timeout
//! index by owner. Updates move one index entry; nothing is ever re-sorted.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

use vellum_core::time::Micros;
use vellum_core::verify::{Checker, Fact};
use vellum_core::{Envelope, QueueKey, QueueMessage};

use crate::keyed::Keyed2;

#[derive(Debug)]
struct Entry {
    revision: u64,
    failure_count: u64,
    next_attempt_at: Micros,
    sequence: u64,
    envelope: Envelope,
}

#[derive(Debug, Default)]
pub(crate) struct Queue {
    messages: HashMap<String, Entry>,
    order: BTreeSet<(Micros, u64, String)>,
    timeouts: Keyed2<BTreeSet<String>>,
    next_sequence: u64,
}

impl Queue {
    pub(crate) fn revision(&self, id: &str) -> Option<u64> {
        self.messages.get(id).map(|e| e.revision)
    }

    pub(crate) fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// Moves the next enqueue sequence to at least `next` (a plan's counters after it).
    pub(crate) fn advance_sequence(&mut self, next: u64) {
        self.next_sequence = self.next_sequence.max(next);
    }

    pub(crate) fn timeouts_of(&self, handler_key: &str, instance_id: &str) -> Vec<String> {
        self.timeouts
            .get(handler_key, instance_id)
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Stores a message with a given enqueue sequence and revision (bulk import); later
    /// enqueues get higher sequences.
    pub(crate) fn put(
        &mut self,
        sequence: u64,
        revision: u64,
        message: &QueueMessage,
        next_attempt_at: Micros,
    ) {
        self.next_sequence = self.next_sequence.max(sequence.saturating_add(1));
        let id = message.id().to_owned();
        let env = &message.envelope;
        if env.is_timeout() {
            self.timeouts
                .get_mut_or_default(env.source_handler_key(), &env.source_instance_id)
                .insert(id.clone());
        }
        self.order.insert((next_attempt_at, sequence, id.clone()));
        let entry = Entry {
            revision,
            failure_count: message.failure_count,
            next_attempt_at,
            sequence,
            envelope: env.clone(),
        };
        self.messages.insert(id, entry);
    }

    pub(crate) fn update(&mut self, id: &str, revision: u64, failure_count: u64, next_attempt_at: Micros) {
        let Some(entry) = self.messages.get_mut(id) else { return };
        if entry.next_attempt_at != next_attempt_at {
            let key = (entry.next_attempt_at, entry.sequence, id.to_owned());
            self.order.remove(&key);
            self.order.insert((next_attempt_at, key.1, key.2));
            entry.next_attempt_at = next_attempt_at;
        }
        entry.revision = revision;
        entry.failure_count = failure_count;
    }

    /// Removes a message if present (idempotent, see `Effect::RemoveQueue`).
    pub(crate) fn remove(&mut self, id: &str) {
        let Some(entry) = self.messages.remove(id) else { return };
        self.order.remove(&(entry.next_attempt_at, entry.sequence, id.to_owned()));
        let env = &entry.envelope;
        let (hk, instance) = (env.source_handler_key(), env.source_instance_id.as_str());
        if env.is_timeout()
            && let Some(ids) = self.timeouts.get_mut(hk, instance)
            && ids.remove(id)
            && ids.is_empty()
        {
            self.timeouts.remove(hk, instance);
        }
    }

    /// Removes every timeout owned by a process instance.
    pub(crate) fn remove_timeouts(&mut self, handler_key: &str, instance_id: &str) {
        for id in self.timeouts.remove(handler_key, instance_id).unwrap_or_default() {
            if let Some(entry) = self.messages.remove(&id) {
                self.order.remove(&(entry.next_attempt_at, entry.sequence, id));
            }
        }
    }

    pub(crate) fn head(&self, n: usize) -> Vec<QueueMessage> {
        self.after(None, n).into_iter().map(|(_, message)| message).collect()
    }

    /// Up to `n` messages in queue order after `after`, with their sequences.
    pub(crate) fn after(&self, after: Option<&QueueKey>, n: usize) -> Vec<(u64, QueueMessage)> {
        let start = match after {
            Some(k) => Bound::Excluded((k.next_attempt_at, k.sequence, k.message_id.clone())),
            None => Bound::Unbounded,
        };
        self.order
            .range((start, Bound::Unbounded))
            .take(n)
            .filter_map(|(_, sequence, id)| Some((*sequence, self.messages.get(id)?)))
            .map(|(sequence, e)| {
                let message = QueueMessage {
                    revision: e.revision,
                    failure_count: e.failure_count,
                    next_attempt_at: e.next_attempt_at.to_system_time(),
                    envelope: e.envelope.clone(),
                };
                (sequence, message)
            })
            .collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.messages.len()
    }

    /// Feeds every message and index entry to `checker` (`BulkStore::verify`), calling `tick`
    /// after each message.
    pub(crate) fn verify(&self, checker: &mut Checker, tick: &mut impl FnMut(&Checker)) {
        for (message_id, e) in &self.messages {
            let env = &e.envelope;
            let timeout_owner =
                env.is_timeout().then(|| (env.source_handler_key(), env.source_instance_id.as_str()));
            checker.fact(Fact::Queue {
                message_id,
                sequence: e.sequence,
                next_attempt_at: e.next_attempt_at.0,
                timeout_owner,
            });
            tick(checker);
        }
        for (next_attempt_at, sequence, message_id) in &self.order {
            checker.fact(Fact::QueueOrder {
                next_attempt_at: next_attempt_at.0,
                sequence: *sequence,
                message_id,
            });
        }
        for (handler_key, instance_id, ids) in self.timeouts.iter() {
            for message_id in ids {
                checker.fact(Fact::TimeoutOwner { handler_key, instance_id, message_id });
            }
        }
    }
}

/// Damage for tests of `verify`: the indexes and counter changed behind the queue's back.
#[cfg(test)]
impl Queue {
    pub(crate) fn order_mut(&mut self) -> &mut BTreeSet<(Micros, u64, String)> {
        &mut self.order
    }

    pub(crate) fn set_next_sequence(&mut self, next: u64) {
        self.next_sequence = next;
    }
}
