//! The event log with by-type and by-source indexes, so neither query scans the whole log.

use std::collections::HashMap;

use vellum_core::verify::{Checker, Fact};
use vellum_core::{Envelope, Event, EventQuery};

use crate::keyed::Keyed2;

#[derive(Debug, Default)]
pub(crate) struct EventLog {
    /// The envelope at offset `i` is `events[i]`.
    events: Vec<Envelope>,
    /// Message ID -> offset.
    ids: HashMap<String, u64>,
    by_type: HashMap<String, Vec<u64>>,
    by_source: Keyed2<Vec<u64>>,
}

impl EventLog {
    pub(crate) fn next_offset(&self) -> u64 {
        self.events.len() as u64
    }

    pub(crate) fn contains(&self, message_id: &str) -> bool {
        self.ids.contains_key(message_id)
    }

    /// Appends an event; `offset` is the log's next offset (plans assign offsets densely).
    pub(crate) fn append(&mut self, offset: u64, envelope: &Envelope) {
        debug_assert_eq!(offset, self.next_offset(), "plans append at the next offset");
        self.ids.insert(envelope.message_id.clone(), offset);
        match self.by_type.get_mut(&envelope.portable_name) {
            Some(offsets) => offsets.push(offset),
            None => {
                self.by_type.insert(envelope.portable_name.clone(), vec![offset]);
            }
        }
        self.by_source
            .get_mut_or_default(envelope.source_handler_key(), &envelope.source_instance_id)
            .push(offset);
        self.events.push(envelope.clone());
    }

    /// Up to `limit` events from offset `from` on, whatever their type.
    pub(crate) fn slice(&self, from: u64, limit: usize) -> Vec<Event> {
        let start = usize::try_from(from).unwrap_or(usize::MAX).min(self.events.len());
        (start..)
            .zip(self.events[start..].iter().take(limit))
            .map(|(offset, envelope)| Event { offset: offset as u64, envelope: envelope.clone() })
            .collect()
    }

    /// Up to `limit` matching events with `offset >= from`, ascending.
    pub(crate) fn page(&self, query: &EventQuery, from: u64, limit: usize) -> Vec<Event> {
        let mut offsets: Vec<u64> = match query {
            EventQuery::All => return self.slice(from, limit),
            EventQuery::ByType(names) => {
                let mut merged: Vec<u64> = names
                    .iter()
                    .filter_map(|name| self.by_type.get(name))
                    .flat_map(|list| tail(list, from).iter().take(limit).copied())
                    .collect();
                merged.sort_unstable();
                merged
            }
            EventQuery::BySource { handler_key, instance_id } => self
                .by_source
                .get(handler_key, instance_id)
                .map(|list| tail(list, from).iter().take(limit).copied().collect())
                .unwrap_or_default(),
        };
        offsets.truncate(limit);
        offsets
            .into_iter()
            .map(|offset| Event { offset, envelope: self.events[offset as usize].clone() })
            .collect()
    }
}

impl EventLog {
    /// Feeds every event and index entry to `checker` (`BulkStore::verify`), calling `tick`
    /// after each event.
    pub(crate) fn verify(&self, checker: &mut Checker, tick: &mut impl FnMut(&Checker)) {
        for (offset, e) in (0_u64..).zip(&self.events) {
            checker.fact(Fact::Event {
                offset,
                message_id: &e.message_id,
                portable_name: &e.portable_name,
                handler_key: e.source_handler_key(),
                instance_id: &e.source_instance_id,
            });
            tick(checker);
        }
        for (message_id, &offset) in &self.ids {
            checker.fact(Fact::EventId { message_id, offset });
        }
        for (portable_name, offsets) in &self.by_type {
            for &offset in offsets {
                checker.fact(Fact::ByType { portable_name, offset });
            }
        }
        for (handler_key, instance_id, offsets) in self.by_source.iter() {
            for &offset in offsets {
                checker.fact(Fact::BySource { handler_key, instance_id, offset });
            }
        }
    }
}

/// Damage for tests of `verify`: the indexes changed behind the log's back.
#[cfg(test)]
impl EventLog {
    pub(crate) fn by_type_mut(&mut self) -> &mut HashMap<String, Vec<u64>> {
        &mut self.by_type
    }

    pub(crate) fn ids_mut(&mut self) -> &mut HashMap<String, u64> {
        &mut self.ids
    }
}

/// The part of an ascending offset list at or after `from`.
fn tail(list: &[u64], from: u64) -> &[u64] {
    &list[list.partition_point(|&o| o < from)..]
}
