//! Checking a whole application store for damage ([`BulkStore::verify`](crate::BulkStore::verify),
//! what `vellum verify` runs; `docs/verify.md`). Nothing is ever repaired.
//!
//! A provider reads everything it stores and feeds a [`Checker`] raw facts: each record that
//! decoded and passed its checksum ([`Fact::Event`], [`Fact::Queue`], [`Fact::Record`]), each
//! entry of the indexes it keeps beside its records ([`Fact::ByType`] and the others, for the
//! [`Index`]es it declares), its counters ([`Fact::Counters`]), every record that did not check
//! out ([`Checker::damaged`], [`Checker::problem`]) and the result of its storage engine's own
//! check ([`Checker::engine_check`]). [`Checker::finish`] then cross-checks the facts, the same
//! way for every provider:
//!
//! - event offsets are dense from 0, none stored twice, and `next_offset` is one past the last;
//! - no two events share a message ID;
//! - every declared index holds exactly the entries its records imply, checked in both
//!   directions: an entry missing for a record, an entry naming a record that is not stored or
//!   that says something else, and an entry stored twice are each a [`Problem`];
//! - no two queue messages share an ID or an enqueue sequence, and every sequence is below
//!   `next_sequence`.
//!
//! Index entries naming a record that is damaged are not judged: the record's own problem says
//! what is wrong, once.
//!
//! The checker keeps the keys of every event and queue message and every index entry until
//! [`Checker::finish`] (strings interned, no envelopes): measured, about 230 bytes per event
//! with a 32-character message ID and three index entries (230 MB and 4 s for a million).
//!
//! ```
//! use vellum_core::verify::{Checker, Fact, Index};
//!
//! let mut checker = Checker::new(&[Index::ByType]);
//! checker.fact(Fact::Event {
//!     offset: 0,
//!     message_id: "m-1",
//!     portable_name: "OrderPlaced",
//!     handler_key: "orders",
//!     instance_id: "o-1",
//! });
//! checker.fact(Fact::ByType { portable_name: "OrderPlaced", offset: 0 });
//! checker.fact(Fact::ByType { portable_name: "OrderPlaced", offset: 7 });
//! checker.fact(Fact::Counters { next_offset: 1, next_sequence: 0 });
//! let report = checker.finish();
//! assert_eq!(report.records, 1);
//! assert_eq!(report.problems.len(), 1);
//! assert_eq!(
//!     report.problems[0].to_string(),
//!     "events_by_type index entry (\"OrderPlaced\", 7): names no event: there is no event at offset 7"
//! );
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// One thing wrong with a store, and where it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Problem {
    /// Where: a record (`event at offset 17`, `queue message "m-3"`), an index entry
    /// (`events_by_type index entry ("OrderPlaced", 17)`), `counters`, or a place the storage
    /// engine's check names.
    pub location: String,
    /// What is wrong there.
    pub what: String,
}

impl Problem {
    /// A problem at `location`.
    #[must_use]
    pub fn new(location: impl Into<String>, what: impl Into<String>) -> Self {
        Self { location: location.into(), what: what.into() }
    }

    /// A problem at `location` described by `error`'s innermost cause (the error's own context
    /// names the record, which `location` already does).
    #[must_use]
    pub fn from_error(location: impl Into<String>, error: &(dyn std::error::Error + 'static)) -> Self {
        let mut cause = error;
        while let Some(next) = cause.source() {
            cause = next;
        }
        Self::new(location, cause.to_string())
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.what)
    }
}

/// What a verification found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Records read that decoded and passed their checksum (a damaged record is a problem
    /// instead).
    pub records: u64,
    /// Index entries read and compared with the records.
    pub index_entries: u64,
    /// Everything found wrong: damaged records first, then the storage engine's findings, then
    /// the cross-checks'. Empty for an undamaged store.
    pub problems: Vec<Problem>,
    /// The storage engine's own check that ran (e.g. `redb check_integrity`), if the provider
    /// has one; several are joined with `, `.
    pub engine_check: Option<String>,
}

impl Report {
    /// Whether no problem was found.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// An index a provider keeps beside its records, whose entries it can feed as facts.
///
/// A provider declares the indexes it feeds ([`Checker::new`]). One whose database engine keeps
/// an index itself (a SQL index) need not declare it: the engine's own check covers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Index {
    /// Events by portable name: [`Fact::ByType`].
    ByType,
    /// Events by source handler and instance: [`Fact::BySource`].
    BySource,
    /// Event offsets by message ID: [`Fact::EventId`].
    EventIds,
    /// The queue in order of time, enqueue sequence and ID: [`Fact::QueueOrder`].
    QueueOrder,
    /// Timeouts by owning process instance: [`Fact::TimeoutOwner`].
    TimeoutOwners,
}

impl Index {
    /// Every index.
    pub const ALL: [Self; 5] =
        [Self::ByType, Self::BySource, Self::EventIds, Self::QueueOrder, Self::TimeoutOwners];

    /// The index's name in problems: `events_by_type`, `events_by_source`, `event_ids`,
    /// `queue_order` or `queue_timeouts`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::ByType => "events_by_type",
            Self::BySource => "events_by_source",
            Self::EventIds => "event_ids",
            Self::QueueOrder => "queue_order",
            Self::TimeoutOwners => "queue_timeouts",
        }
    }
}

impl fmt::Display for Index {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One raw fact a provider read from its storage, for [`Checker::fact`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fact<'a> {
    /// An event record that decoded and passed its checksum.
    Event {
        /// Its offset.
        offset: u64,
        /// Its envelope's message ID.
        message_id: &'a str,
        /// Its envelope's portable name.
        portable_name: &'a str,
        /// Its envelope's source handler key (`""` when none).
        handler_key: &'a str,
        /// Its envelope's source instance ID.
        instance_id: &'a str,
    },
    /// An entry of the by-type index ([`Index::ByType`]).
    ByType {
        /// The portable name.
        portable_name: &'a str,
        /// The event offset it lists.
        offset: u64,
    },
    /// An entry of the by-source index ([`Index::BySource`]).
    BySource {
        /// The source handler key.
        handler_key: &'a str,
        /// The source instance ID.
        instance_id: &'a str,
        /// The event offset it lists.
        offset: u64,
    },
    /// An entry of the message-ID index of the log ([`Index::EventIds`]).
    EventId {
        /// The message ID.
        message_id: &'a str,
        /// The offset it names.
        offset: u64,
    },
    /// A queue message record that decoded and passed its checksum.
    Queue {
        /// Its message ID.
        message_id: &'a str,
        /// Its enqueue sequence.
        sequence: u64,
        /// Its `next_attempt_at`, in microseconds since the epoch ([`Micros`](crate::time::Micros)).
        next_attempt_at: i64,
        /// Its owner `(handler key, instance ID)` when it is a timeout
        /// ([`Envelope::is_timeout`](crate::Envelope::is_timeout)), else `None`.
        timeout_owner: Option<(&'a str, &'a str)>,
    },
    /// An entry of the queue-order index ([`Index::QueueOrder`]).
    QueueOrder {
        /// The time, in microseconds since the epoch.
        next_attempt_at: i64,
        /// The enqueue sequence.
        sequence: u64,
        /// The message ID.
        message_id: &'a str,
    },
    /// An entry of the timeout index ([`Index::TimeoutOwners`]).
    TimeoutOwner {
        /// The owner's handler key.
        handler_key: &'a str,
        /// The owner's instance ID.
        instance_id: &'a str,
        /// The timeout's message ID.
        message_id: &'a str,
    },
    /// The store's counters; exactly one per store.
    Counters {
        /// The offset the next event gets.
        next_offset: u64,
        /// The enqueue sequence the next new queue message gets.
        next_sequence: u64,
    },
    /// Any other record that decoded and passed its checksum (aggregate, process, consumer
    /// offset): only counted.
    Record,
}

/// A damaged record whose key is still known, for [`Checker::damaged`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damaged<'a> {
    /// The event at this offset.
    Event {
        /// The event's offset.
        offset: u64,
    },
    /// The queue message with this ID.
    Queue {
        /// The message ID.
        message_id: &'a str,
    },
    /// The counters.
    Counters,
}

/// An interned string.
type Sym = u32;

/// Interned strings: each distinct handler key, instance ID, portable name and message ID once.
#[derive(Default)]
struct Names {
    ids: HashMap<Arc<str>, Sym>,
    names: Vec<Arc<str>>,
}

impl Names {
    fn intern(&mut self, name: &str) -> Sym {
        if let Some(&sym) = self.ids.get(name) {
            return sym;
        }
        let sym = Sym::try_from(self.names.len()).expect("fewer than 2^32 distinct strings");
        let name: Arc<str> = Arc::from(name);
        self.names.push(Arc::clone(&name));
        self.ids.insert(name, sym);
        sym
    }

    fn get(&self, sym: Sym) -> &str {
        &self.names[sym as usize]
    }
}

#[derive(Clone, Copy)]
struct EventRow {
    offset: u64,
    id: Sym,
    portable_name: Sym,
    handler_key: Sym,
    instance_id: Sym,
}

#[derive(Clone, Copy)]
struct QueueRow {
    id: Sym,
    sequence: u64,
    at: i64,
    owner: Option<(Sym, Sym)>,
}

/// Collects a provider's facts about one store and cross-checks them ([module docs](self)).
///
/// Facts may come in any order. A provider typically reads every table once, calling
/// [`fact`](Self::fact) per record and index entry, [`damaged`](Self::damaged) or
/// [`problem`](Self::problem) per record that fails its checksum or does not decode, and
/// [`engine_check`](Self::engine_check) once, then returns [`finish`](Self::finish)'s report.
pub struct Checker {
    /// Which [`Index`]es are compared with the records, by `Index as usize`.
    indexes: [bool; 5],
    names: Names,
    events: Vec<EventRow>,
    damaged_events: Vec<u64>,
    queue: Vec<QueueRow>,
    damaged_queue: Vec<Sym>,
    damaged_counters: bool,
    by_type: Vec<(u64, Sym)>,
    by_source: Vec<(u64, Sym, Sym)>,
    event_ids: Vec<(Sym, u64)>,
    queue_order: Vec<(i64, u64, Sym)>,
    timeouts: Vec<(Sym, Sym, Sym)>,
    counters: Vec<(u64, u64)>,
    records: u64,
    /// Calls of `damaged` and `problem`.
    damaged: u64,
    index_entries: u64,
    problems: Vec<Problem>,
    engine_problems: Vec<Problem>,
    engine_check: Option<String>,
}

impl fmt::Debug for Checker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checker")
            .field("records", &self.records)
            .field("index_entries", &self.index_entries)
            .field("problems", &(self.problems.len() + self.engine_problems.len()))
            .finish_non_exhaustive()
    }
}

impl Checker {
    /// A checker for a provider that feeds the entries of `indexes`. Entries of an index not
    /// listed are compared all the same, as if it were listed.
    #[must_use]
    pub fn new(indexes: &[Index]) -> Self {
        let mut declared = [false; 5];
        for index in indexes {
            declared[*index as usize] = true;
        }
        Self {
            indexes: declared,
            names: Names::default(),
            events: Vec::new(),
            damaged_events: Vec::new(),
            queue: Vec::new(),
            damaged_queue: Vec::new(),
            damaged_counters: false,
            by_type: Vec::new(),
            by_source: Vec::new(),
            event_ids: Vec::new(),
            queue_order: Vec::new(),
            timeouts: Vec::new(),
            counters: Vec::new(),
            records: 0,
            damaged: 0,
            index_entries: 0,
            problems: Vec::new(),
            engine_problems: Vec::new(),
            engine_check: None,
        }
    }

    /// Adds one fact read from storage.
    pub fn fact(&mut self, fact: Fact<'_>) {
        let n = &mut self.names;
        match fact {
            Fact::Event { offset, message_id, portable_name, handler_key, instance_id } => {
                self.records += 1;
                self.events.push(EventRow {
                    offset,
                    id: n.intern(message_id),
                    portable_name: n.intern(portable_name),
                    handler_key: n.intern(handler_key),
                    instance_id: n.intern(instance_id),
                });
            }
            Fact::Queue { message_id, sequence, next_attempt_at, timeout_owner } => {
                self.records += 1;
                let owner = timeout_owner.map(|(h, i)| (n.intern(h), n.intern(i)));
                self.queue.push(QueueRow { id: n.intern(message_id), sequence, at: next_attempt_at, owner });
            }
            Fact::Record => self.records += 1,
            Fact::Counters { next_offset, next_sequence } => self.counters.push((next_offset, next_sequence)),
            Fact::ByType { portable_name, offset } => {
                self.by_type.push((offset, n.intern(portable_name)));
                self.entry(Index::ByType);
            }
            Fact::BySource { handler_key, instance_id, offset } => {
                self.by_source.push((offset, n.intern(handler_key), n.intern(instance_id)));
                self.entry(Index::BySource);
            }
            Fact::EventId { message_id, offset } => {
                self.event_ids.push((n.intern(message_id), offset));
                self.entry(Index::EventIds);
            }
            Fact::QueueOrder { next_attempt_at, sequence, message_id } => {
                self.queue_order.push((next_attempt_at, sequence, n.intern(message_id)));
                self.entry(Index::QueueOrder);
            }
            Fact::TimeoutOwner { handler_key, instance_id, message_id } => {
                let key = (n.intern(handler_key), n.intern(instance_id), n.intern(message_id));
                self.timeouts.push(key);
                self.entry(Index::TimeoutOwners);
            }
        }
    }

    fn entry(&mut self, index: Index) {
        self.indexes[index as usize] = true;
        self.index_entries += 1;
    }

    /// A record that failed its checksum or did not decode, and whose key the cross-checks
    /// need not know (an aggregate, a process, a consumer offset, or a key that is itself
    /// unreadable). The problem is reported as given.
    pub fn problem(&mut self, problem: Problem) {
        self.damaged += 1;
        self.problems.push(problem);
    }

    /// A record that failed its checksum or did not decode, but whose key is known. The
    /// problem is reported as given; the record counts as present (no gap in the log, no
    /// missing counters) and index entries naming it are not judged.
    pub fn damaged(&mut self, record: Damaged<'_>, problem: Problem) {
        match record {
            Damaged::Event { offset } => self.damaged_events.push(offset),
            Damaged::Queue { message_id } => {
                let id = self.names.intern(message_id);
                self.damaged_queue.push(id);
            }
            Damaged::Counters => self.damaged_counters = true,
        }
        self.damaged += 1;
        self.problems.push(problem);
    }

    /// The storage engine's own check, named as a user would look it up (e.g.
    /// `redb check_integrity`, `SQLite PRAGMA integrity_check`), and what it found.
    pub fn engine_check(&mut self, name: impl Into<String>, problems: Vec<Problem>) {
        let name = name.into();
        self.engine_check = Some(match self.engine_check.take() {
            Some(earlier) => format!("{earlier}, {name}"),
            None => name,
        });
        self.engine_problems.extend(problems);
    }

    /// The records fed so far, intact or damaged (each [`Fact::Event`], [`Fact::Queue`] and
    /// [`Fact::Record`], and each call of [`damaged`](Self::damaged) and
    /// [`problem`](Self::problem)): what a provider reports as progress.
    #[must_use]
    pub fn read(&self) -> u64 {
        self.records + self.damaged
    }

    /// Cross-checks everything fed ([module docs](self)) and returns the report.
    #[must_use]
    pub fn finish(self) -> Report {
        let Self {
            indexes,
            names,
            mut events,
            mut damaged_events,
            mut queue,
            mut damaged_queue,
            damaged_counters,
            by_type,
            by_source,
            event_ids,
            queue_order,
            timeouts,
            counters,
            records,
            damaged: _,
            index_entries,
            mut problems,
            engine_problems,
            engine_check,
        } = self;
        problems.extend(engine_problems);

        events.sort_unstable_by_key(|e| e.offset);
        damaged_events.sort_unstable();
        damaged_events.dedup();
        queue.sort_unstable_by_key(|q| q.id);
        damaged_queue.sort_unstable();
        damaged_queue.dedup();
        let mut ids: Vec<(Sym, u64)> = events.iter().map(|e| (e.id, e.offset)).collect();
        ids.sort_unstable();
        let store = Store { names: &names, events, damaged_events, ids, queue, damaged_queue };
        let mut out = Vec::new();

        let counters = counters_of(&counters, damaged_counters, &mut out);
        store.check_log(counters.map(|c| c.0), &mut out);
        store.check_event_ids_unique(&mut out);
        store.check_queue(counters.map(|c| c.1), &mut out);
        let declared = |index: Index| indexes[index as usize];
        if declared(Index::ByType) {
            store.check_by_type(by_type, &mut out);
        }
        if declared(Index::BySource) {
            store.check_by_source(by_source, &mut out);
        }
        if declared(Index::EventIds) {
            store.check_event_ids(event_ids, &mut out);
        }
        if declared(Index::QueueOrder) {
            store.check_queue_order(queue_order, &mut out);
        }
        if declared(Index::TimeoutOwners) {
            store.check_timeouts(timeouts, &mut out);
        }
        problems.extend(out);
        Report { records, index_entries, problems, engine_check }
    }
}

/// The one counters fact, or `None` (with a problem unless the counters are known damaged).
fn counters_of(counters: &[(u64, u64)], damaged: bool, out: &mut Vec<Problem>) -> Option<(u64, u64)> {
    match counters {
        [] if damaged => None,
        [] => {
            out.push(Problem::new("counters", "not found"));
            None
        }
        [one] => Some(*one),
        [first, ..] => {
            out.push(Problem::new("counters", format!("stored {} times", counters.len())));
            Some(*first)
        }
    }
}

/// The records, sorted for look-ups.
struct Store<'n> {
    names: &'n Names,
    /// By offset.
    events: Vec<EventRow>,
    /// Offsets, sorted, unique.
    damaged_events: Vec<u64>,
    /// `(message ID, offset)` of every event, sorted.
    ids: Vec<(Sym, u64)>,
    /// By message ID.
    queue: Vec<QueueRow>,
    /// Message IDs, sorted, unique.
    damaged_queue: Vec<Sym>,
}

impl Store<'_> {
    fn name(&self, sym: Sym) -> &str {
        self.names.get(sym)
    }

    fn event_at(&self, offset: u64) -> Option<&EventRow> {
        let i = self.events.partition_point(|e| e.offset < offset);
        self.events.get(i).filter(|e| e.offset == offset)
    }

    fn event_damaged(&self, offset: u64) -> bool {
        self.damaged_events.binary_search(&offset).is_ok()
    }

    fn message(&self, id: Sym) -> Option<&QueueRow> {
        let i = self.queue.partition_point(|q| q.id < id);
        self.queue.get(i).filter(|q| q.id == id)
    }

    fn message_damaged(&self, id: Sym) -> bool {
        self.damaged_queue.binary_search(&id).is_ok()
    }

    /// Offsets dense from 0, none stored twice, `next_offset` one past the last.
    fn check_log(&self, next_offset: Option<u64>, out: &mut Vec<Problem>) {
        let mut offsets: Vec<u64> =
            self.events.iter().map(|e| e.offset).chain(self.damaged_events.iter().copied()).collect();
        offsets.sort_unstable();
        let (mut expected, mut last, mut reported) = (0_u64, None, None);
        for &offset in &offsets {
            if last == Some(offset) {
                if reported != Some(offset) {
                    out.push(Problem::new(format!("event at offset {offset}"), "stored more than once"));
                    reported = Some(offset);
                }
                continue;
            }
            if offset > expected {
                let location = if offset - expected == 1 {
                    format!("event at offset {expected}")
                } else {
                    format!("events at offsets {expected} to {}", offset - 1)
                };
                out.push(Problem::new(location, "missing: offsets are dense from 0"));
            }
            expected = offset.saturating_add(1);
            last = Some(offset);
        }
        if let Some(next_offset) = next_offset
            && next_offset != expected
        {
            let what = match last {
                Some(last) => format!(
                    "next_offset is {next_offset}, but the last event is at offset {last} (expected {expected})"
                ),
                None => format!("next_offset is {next_offset}, but the log is empty (expected 0)"),
            };
            out.push(Problem::new("counters", what));
        }
    }

    /// No two events share a message ID.
    fn check_event_ids_unique(&self, out: &mut Vec<Problem>) {
        let mut first: Option<(Sym, u64)> = None;
        for &(id, offset) in &self.ids {
            match first {
                Some((first_id, first_offset)) if first_id == id => out.push(Problem::new(
                    format!("event at offset {offset}"),
                    format!(
                        "its message ID {:?} is also that of the event at offset {first_offset}",
                        self.name(id)
                    ),
                )),
                _ => first = Some((id, offset)),
            }
        }
    }

    /// No two queue messages share an ID or a sequence; every sequence is below `next_sequence`.
    fn check_queue(&self, next_sequence: Option<u64>, out: &mut Vec<Problem>) {
        let location = |id: Sym| format!("queue message {:?}", self.name(id));
        for pair in self.queue.windows(2) {
            if pair[0].id == pair[1].id {
                out.push(Problem::new(location(pair[1].id), "stored more than once"));
            }
        }
        let mut sequences: Vec<(u64, Sym)> = self.queue.iter().map(|q| (q.sequence, q.id)).collect();
        sequences.sort_unstable();
        let mut first: Option<(u64, Sym)> = None;
        for &(sequence, id) in &sequences {
            match first {
                Some((first_sequence, first_id)) if first_sequence == sequence && first_id != id => {
                    out.push(Problem::new(
                        location(id),
                        format!(
                            "its enqueue sequence {sequence} is also that of queue message {:?}",
                            self.name(first_id)
                        ),
                    ));
                }
                Some((first_sequence, _)) if first_sequence == sequence => {}
                _ => first = Some((sequence, id)),
            }
            if let Some(next) = next_sequence
                && sequence >= next
            {
                out.push(Problem::new(
                    location(id),
                    format!(
                        "its enqueue sequence {sequence} is not below the counters' next_sequence {next}"
                    ),
                ));
            }
        }
    }

    fn check_by_type(&self, actual: Vec<(u64, Sym)>, out: &mut Vec<Problem>) {
        let expected = self.events.iter().map(|e| (e.offset, e.portable_name)).collect();
        let text = |&(offset, ty): &(u64, Sym)| format!("({:?}, {offset})", self.name(ty));
        let judge = |&(offset, _): &(u64, Sym)| match self.event_at(offset) {
            _ if self.event_damaged(offset) => None,
            Some(e) => Some(Judged::Mismatch(
                format!(
                    "does not match the event at offset {offset}, whose type is {:?}",
                    self.name(e.portable_name)
                ),
                (offset, e.portable_name),
            )),
            None => Some(Judged::Stray(format!("names no event: there is no event at offset {offset}"))),
        };
        let owner = |&(offset, _): &(u64, Sym)| format!("event at offset {offset}");
        compare(Index::ByType, expected, actual, text, owner, judge, out);
    }

    fn check_by_source(&self, actual: Vec<(u64, Sym, Sym)>, out: &mut Vec<Problem>) {
        let expected = self.events.iter().map(|e| (e.offset, e.handler_key, e.instance_id)).collect();
        let text =
            |&(offset, h, i): &(u64, Sym, Sym)| format!("({:?}, {:?}, {offset})", self.name(h), self.name(i));
        let judge = |&(offset, ..): &(u64, Sym, Sym)| match self.event_at(offset) {
            _ if self.event_damaged(offset) => None,
            Some(e) => Some(Judged::Mismatch(
                format!(
                    "does not match the event at offset {offset}, whose source is ({:?}, {:?})",
                    self.name(e.handler_key),
                    self.name(e.instance_id)
                ),
                (offset, e.handler_key, e.instance_id),
            )),
            None => Some(Judged::Stray(format!("names no event: there is no event at offset {offset}"))),
        };
        let owner = |&(offset, ..): &(u64, Sym, Sym)| format!("event at offset {offset}");
        compare(Index::BySource, expected, actual, text, owner, judge, out);
    }

    fn check_event_ids(&self, actual: Vec<(Sym, u64)>, out: &mut Vec<Problem>) {
        let text = |&(id, offset): &(Sym, u64)| format!("({:?}, {offset})", self.name(id));
        let judge = |&(id, offset): &(Sym, u64)| {
            if self.event_damaged(offset) {
                return None;
            }
            let same_id =
                self.ids[self.ids.partition_point(|(i, _)| *i < id)..].first().filter(|(i, _)| *i == id);
            Some(match (same_id, self.event_at(offset)) {
                (Some(&(_, at)), _) => Judged::Mismatch(
                    format!(
                        "does not match: the event with message ID {:?} is at offset {at}",
                        self.name(id)
                    ),
                    (id, at),
                ),
                (None, Some(e)) => Judged::Mismatch(
                    format!(
                        "does not match the event at offset {offset}, whose message ID is {:?}",
                        self.name(e.id)
                    ),
                    (e.id, offset),
                ),
                (None, None) => {
                    Judged::Stray(format!("names no event: none has this message ID or offset {offset}"))
                }
            })
        };
        let owner = |&(_, offset): &(Sym, u64)| format!("event at offset {offset}");
        compare(Index::EventIds, self.ids.clone(), actual, text, owner, judge, out);
    }

    fn check_queue_order(&self, actual: Vec<(i64, u64, Sym)>, out: &mut Vec<Problem>) {
        let expected = self.queue.iter().map(|q| (q.at, q.sequence, q.id)).collect();
        let text =
            |&(at, sequence, id): &(i64, u64, Sym)| format!("({at} µs, {sequence}, {:?})", self.name(id));
        let judge = |&(.., id): &(i64, u64, Sym)| match self.message(id) {
            _ if self.message_damaged(id) => None,
            Some(q) => Some(Judged::Mismatch(
                format!(
                    "does not match queue message {:?}, whose next_attempt_at is {} µs and enqueue sequence {}",
                    self.name(id),
                    q.at,
                    q.sequence
                ),
                (q.at, q.sequence, id),
            )),
            None => Some(Judged::Stray("names no queue message".to_owned())),
        };
        let owner = |&(.., id): &(i64, u64, Sym)| format!("queue message {:?}", self.name(id));
        compare(Index::QueueOrder, expected, actual, text, owner, judge, out);
    }

    fn check_timeouts(&self, actual: Vec<(Sym, Sym, Sym)>, out: &mut Vec<Problem>) {
        let expected = self.queue.iter().filter_map(|q| q.owner.map(|(h, i)| (h, i, q.id))).collect();
        let text = |&(h, i, id): &(Sym, Sym, Sym)| {
            format!("({:?}, {:?}, {:?})", self.name(h), self.name(i), self.name(id))
        };
        let judge = |&(.., id): &(Sym, Sym, Sym)| match self.message(id) {
            _ if self.message_damaged(id) => None,
            Some(&QueueRow { owner: Some((h, i)), .. }) => Some(Judged::Mismatch(
                format!(
                    "does not match queue message {:?}, a timeout of ({:?}, {:?})",
                    self.name(id),
                    self.name(h),
                    self.name(i)
                ),
                (h, i, id),
            )),
            Some(QueueRow { owner: None, .. }) => Some(Judged::Stray(format!(
                "names queue message {:?}, which is not a timeout",
                self.name(id)
            ))),
            None => Some(Judged::Stray("names no queue message".to_owned())),
        };
        let owner = |&(.., id): &(Sym, Sym, Sym)| format!("queue message {:?}", self.name(id));
        compare(Index::TimeoutOwners, expected, actual, text, owner, judge, out);
    }
}

/// What is wrong with an index entry no record implies.
enum Judged<K> {
    /// It names no record.
    Stray(String),
    /// It names a record that implies another entry, `K`: if that one is missing, this
    /// problem says so already.
    Mismatch(String, K),
}

/// Compares the entries an index holds (`actual`) with those its records imply (`expected`),
/// and reports each difference once. `text` renders an entry's key, `owner` the record a
/// missing entry belongs to, and `judge` says what is wrong with an entry no record implies
/// (`None`: it names a damaged record, so it cannot be judged).
fn compare<K: Ord + Copy>(
    index: Index,
    expected: Vec<K>,
    actual: Vec<K>,
    text: impl Fn(&K) -> String,
    owner: impl Fn(&K) -> String,
    judge: impl Fn(&K) -> Option<Judged<K>>,
    out: &mut Vec<Problem>,
) {
    let diff = diff(expected, actual);
    let entry = |key: &K| format!("{index} index entry {}", text(key));
    let mut explained = Vec::new();
    for key in &diff.stray {
        let what = match judge(key) {
            None => continue,
            Some(Judged::Stray(what)) => what,
            Some(Judged::Mismatch(what, implied)) => {
                explained.push(implied);
                what
            }
        };
        out.push(Problem::new(entry(key), what));
    }
    explained.sort_unstable();
    for key in diff.missing.iter().filter(|key| explained.binary_search(key).is_err()) {
        out.push(Problem::new(owner(key), format!("missing from the {index} index: no entry {}", text(key))));
    }
    for key in &diff.repeated {
        out.push(Problem::new(entry(key), "stored more than once"));
    }
}

/// How an index's entries differ from those its records imply.
struct Diff<K> {
    /// Implied by a record, not stored.
    missing: Vec<K>,
    /// Stored, implied by no record.
    stray: Vec<K>,
    /// Implied and stored more than once.
    repeated: Vec<K>,
}

/// Compares the entries records imply with those an index holds, both sorted here.
fn diff<K: Ord + Copy>(mut expected: Vec<K>, mut actual: Vec<K>) -> Diff<K> {
    expected.sort_unstable();
    expected.dedup();
    actual.sort_unstable();
    let mut repeated: Vec<K> = Vec::new();
    actual.dedup_by(|later, earlier| {
        let same = later == earlier;
        if same && repeated.last() != Some(&*earlier) {
            repeated.push(*earlier);
        }
        same
    });
    repeated.retain(|key| expected.binary_search(key).is_ok());
    let (mut missing, mut stray) = (Vec::new(), Vec::new());
    let (mut e, mut a) = (0, 0);
    while e < expected.len() || a < actual.len() {
        match (expected.get(e), actual.get(a)) {
            (Some(x), Some(y)) if x == y => {
                e += 1;
                a += 1;
            }
            (Some(x), Some(y)) if x < y => {
                missing.push(*x);
                e += 1;
            }
            (Some(x), None) => {
                missing.push(*x);
                e += 1;
            }
            (_, Some(y)) => {
                stray.push(*y);
                a += 1;
            }
            (None, None) => break,
        }
    }
    Diff { missing, stray, repeated }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small consistent store: three events, a message and a timeout, two other records.
    fn consistent() -> Vec<Fact<'static>> {
        let mut facts = Vec::new();
        for (offset, id, ty, instance) in [(0, "e0", "A", "1"), (1, "e1", "B", "2"), (2, "e2", "A", "1")] {
            facts.extend([
                Fact::Event {
                    offset,
                    message_id: id,
                    portable_name: ty,
                    handler_key: "h",
                    instance_id: instance,
                },
                Fact::ByType { portable_name: ty, offset },
                Fact::BySource { handler_key: "h", instance_id: instance, offset },
                Fact::EventId { message_id: id, offset },
            ]);
        }
        facts.extend([
            Fact::Queue { message_id: "q", sequence: 0, next_attempt_at: 100, timeout_owner: None },
            Fact::QueueOrder { next_attempt_at: 100, sequence: 0, message_id: "q" },
            Fact::Queue {
                message_id: "t",
                sequence: 1,
                next_attempt_at: -50,
                timeout_owner: Some(("p", "x")),
            },
            Fact::QueueOrder { next_attempt_at: -50, sequence: 1, message_id: "t" },
            Fact::TimeoutOwner { handler_key: "p", instance_id: "x", message_id: "t" },
            Fact::Counters { next_offset: 3, next_sequence: 2 },
            Fact::Record,
            Fact::Record,
        ]);
        facts
    }

    fn check(facts: &[Fact<'_>]) -> Report {
        let mut checker = Checker::new(&Index::ALL);
        for fact in facts {
            checker.fact(*fact);
        }
        checker.finish()
    }

    /// The consistent facts, changed by `change`, give exactly `expected` (as text).
    fn damaged(change: impl FnOnce(&mut Vec<Fact<'static>>), expected: &[&str]) {
        let mut facts = consistent();
        change(&mut facts);
        let report = check(&facts);
        let found: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
        assert_eq!(found, expected, "facts: {facts:#?}");
    }

    fn without(facts: &mut Vec<Fact<'static>>, fact: &Fact<'static>) {
        let before = facts.len();
        facts.retain(|f| f != fact);
        assert_eq!(facts.len(), before - 1, "{fact:?} was fed once");
    }

    fn replace(facts: &mut [Fact<'static>], old: &Fact<'static>, new: Fact<'static>) {
        let at = facts.iter().position(|f| f == old).expect("the fact to replace is fed");
        facts[at] = new;
    }

    fn event(offset: u64, id: &'static str, ty: &'static str, instance: &'static str) -> Fact<'static> {
        Fact::Event { offset, message_id: id, portable_name: ty, handler_key: "h", instance_id: instance }
    }

    #[test]
    fn consistent_facts_are_clean_in_any_order() {
        let report = check(&consistent());
        assert!(report.is_clean(), "{:?}", report.problems);
        assert_eq!((report.records, report.index_entries), (7, 12));
        assert_eq!(report.engine_check, None);
        let mut reversed = consistent();
        reversed.reverse();
        assert_eq!(check(&reversed), report);
    }

    #[test]
    fn an_empty_store_is_clean() {
        let report = check(&[Fact::Counters { next_offset: 0, next_sequence: 0 }]);
        assert!(report.is_clean(), "{:?}", report.problems);
        assert_eq!((report.records, report.index_entries), (0, 0));
    }

    #[test]
    fn gaps_in_the_log() {
        let e1 = event(1, "e1", "B", "2");
        damaged(
            |f| {
                without(f, &e1);
                without(f, &Fact::ByType { portable_name: "B", offset: 1 });
                without(f, &Fact::BySource { handler_key: "h", instance_id: "2", offset: 1 });
                without(f, &Fact::EventId { message_id: "e1", offset: 1 });
            },
            &["event at offset 1: missing: offsets are dense from 0"],
        );
        // Events 0 and 2 only, the first one missing too: both gaps, as ranges.
        damaged(
            |f| {
                f.retain(|f| {
                    !matches!(
                        f,
                        Fact::Event { .. }
                            | Fact::ByType { .. }
                            | Fact::BySource { .. }
                            | Fact::EventId { .. }
                    )
                });
                f.push(event(3, "e3", "A", "1"));
                f.push(event(6, "e6", "A", "1"));
                for offset in [3, 6] {
                    f.push(Fact::ByType { portable_name: "A", offset });
                    f.push(Fact::BySource { handler_key: "h", instance_id: "1", offset });
                }
                f.push(Fact::EventId { message_id: "e3", offset: 3 });
                f.push(Fact::EventId { message_id: "e6", offset: 6 });
                replace(
                    f,
                    &Fact::Counters { next_offset: 3, next_sequence: 2 },
                    Fact::Counters { next_offset: 7, next_sequence: 2 },
                );
            },
            &[
                "events at offsets 0 to 2: missing: offsets are dense from 0",
                "events at offsets 4 to 5: missing: offsets are dense from 0",
            ],
        );
    }

    #[test]
    fn an_offset_stored_twice() {
        damaged(
            |f| {
                f.push(event(2, "e2b", "A", "1"));
                f.push(Fact::EventId { message_id: "e2b", offset: 2 });
            },
            &["event at offset 2: stored more than once"],
        );
    }

    #[test]
    fn next_offset_must_follow_the_last_event() {
        let counters = Fact::Counters { next_offset: 3, next_sequence: 2 };
        damaged(
            |f| replace(f, &counters, Fact::Counters { next_offset: 5, next_sequence: 2 }),
            &["counters: next_offset is 5, but the last event is at offset 2 (expected 3)"],
        );
        damaged(
            |f| replace(f, &counters, Fact::Counters { next_offset: 2, next_sequence: 2 }),
            &["counters: next_offset is 2, but the last event is at offset 2 (expected 3)"],
        );
        let report = check(&[Fact::Counters { next_offset: 1, next_sequence: 0 }]);
        assert_eq!(
            report.problems,
            [Problem::new("counters", "next_offset is 1, but the log is empty (expected 0)")]
        );
    }

    #[test]
    fn counters_stored_once() {
        let counters = Fact::Counters { next_offset: 3, next_sequence: 2 };
        damaged(|f| without(f, &counters), &["counters: not found"]);
        damaged(|f| f.push(counters), &["counters: stored 2 times"]);
    }

    #[test]
    fn message_ids_are_unique_in_the_log() {
        damaged(
            |f| {
                replace(f, &event(1, "e1", "B", "2"), event(1, "e0", "B", "2"));
                replace(
                    f,
                    &Fact::EventId { message_id: "e1", offset: 1 },
                    Fact::EventId { message_id: "e0", offset: 1 },
                );
            },
            &["event at offset 1: its message ID \"e0\" is also that of the event at offset 0"],
        );
    }

    #[test]
    fn by_type_index_both_ways() {
        let entry = Fact::ByType { portable_name: "B", offset: 1 };
        damaged(
            |f| without(f, &entry),
            &["event at offset 1: missing from the events_by_type index: no entry (\"B\", 1)"],
        );
        damaged(
            |f| f.push(Fact::ByType { portable_name: "A", offset: 9 }),
            &["events_by_type index entry (\"A\", 9): names no event: there is no event at offset 9"],
        );
        damaged(
            |f| replace(f, &entry, Fact::ByType { portable_name: "A", offset: 1 }),
            &[
                "events_by_type index entry (\"A\", 1): does not match the event at offset 1, whose type is \"B\"",
            ],
        );
        damaged(|f| f.push(entry), &["events_by_type index entry (\"B\", 1): stored more than once"]);
    }

    #[test]
    fn by_source_index_both_ways() {
        let entry = Fact::BySource { handler_key: "h", instance_id: "2", offset: 1 };
        damaged(
            |f| without(f, &entry),
            &["event at offset 1: missing from the events_by_source index: no entry (\"h\", \"2\", 1)"],
        );
        damaged(
            |f| f.push(Fact::BySource { handler_key: "h", instance_id: "2", offset: 3 }),
            &[
                "events_by_source index entry (\"h\", \"2\", 3): names no event: there is no event at offset 3",
            ],
        );
        damaged(
            |f| replace(f, &entry, Fact::BySource { handler_key: "h", instance_id: "1", offset: 1 }),
            &[
                "events_by_source index entry (\"h\", \"1\", 1): does not match the event at offset 1, whose source is (\"h\", \"2\")",
            ],
        );
    }

    #[test]
    fn event_id_index_both_ways() {
        let entry = Fact::EventId { message_id: "e1", offset: 1 };
        damaged(
            |f| without(f, &entry),
            &["event at offset 1: missing from the event_ids index: no entry (\"e1\", 1)"],
        );
        damaged(
            |f| replace(f, &entry, Fact::EventId { message_id: "e1", offset: 2 }),
            &[
                "event_ids index entry (\"e1\", 2): does not match: the event with message ID \"e1\" is at offset 1",
            ],
        );
        damaged(
            |f| replace(f, &entry, Fact::EventId { message_id: "zz", offset: 1 }),
            &[
                "event_ids index entry (\"zz\", 1): does not match the event at offset 1, whose message ID is \"e1\"",
            ],
        );
        damaged(
            |f| f.push(Fact::EventId { message_id: "zz", offset: 8 }),
            &["event_ids index entry (\"zz\", 8): names no event: none has this message ID or offset 8"],
        );
    }

    #[test]
    fn queue_order_index_both_ways() {
        let entry = Fact::QueueOrder { next_attempt_at: 100, sequence: 0, message_id: "q" };
        damaged(
            |f| without(f, &entry),
            &["queue message \"q\": missing from the queue_order index: no entry (100 µs, 0, \"q\")"],
        );
        damaged(
            |f| f.push(Fact::QueueOrder { next_attempt_at: 1, sequence: 7, message_id: "gone" }),
            &["queue_order index entry (1 µs, 7, \"gone\"): names no queue message"],
        );
        damaged(
            |f| replace(f, &entry, Fact::QueueOrder { next_attempt_at: 99, sequence: 0, message_id: "q" }),
            &[
                "queue_order index entry (99 µs, 0, \"q\"): does not match queue message \"q\", whose next_attempt_at is 100 µs and enqueue sequence 0",
            ],
        );
    }

    #[test]
    fn timeout_index_both_ways() {
        let entry = Fact::TimeoutOwner { handler_key: "p", instance_id: "x", message_id: "t" };
        damaged(
            |f| without(f, &entry),
            &["queue message \"t\": missing from the queue_timeouts index: no entry (\"p\", \"x\", \"t\")"],
        );
        damaged(
            |f| f.push(Fact::TimeoutOwner { handler_key: "p", instance_id: "x", message_id: "q" }),
            &[
                "queue_timeouts index entry (\"p\", \"x\", \"q\"): names queue message \"q\", which is not a timeout",
            ],
        );
        damaged(
            |f| f.push(Fact::TimeoutOwner { handler_key: "p", instance_id: "x", message_id: "gone" }),
            &["queue_timeouts index entry (\"p\", \"x\", \"gone\"): names no queue message"],
        );
        damaged(
            |f| {
                replace(
                    f,
                    &entry,
                    Fact::TimeoutOwner { handler_key: "p", instance_id: "y", message_id: "t" },
                );
            },
            &[
                "queue_timeouts index entry (\"p\", \"y\", \"t\"): does not match queue message \"t\", a timeout of (\"p\", \"x\")",
            ],
        );
    }

    #[test]
    fn queue_ids_and_sequences_are_unique() {
        let q = Fact::Queue { message_id: "q", sequence: 0, next_attempt_at: 100, timeout_owner: None };
        damaged(|f| f.push(q), &["queue message \"q\": stored more than once"]);
        damaged(
            |f| {
                replace(
                    f,
                    &q,
                    Fact::Queue { message_id: "q", sequence: 1, next_attempt_at: 100, timeout_owner: None },
                );
                replace(
                    f,
                    &Fact::QueueOrder { next_attempt_at: 100, sequence: 0, message_id: "q" },
                    Fact::QueueOrder { next_attempt_at: 100, sequence: 1, message_id: "q" },
                );
            },
            &["queue message \"t\": its enqueue sequence 1 is also that of queue message \"q\""],
        );
    }

    #[test]
    fn sequences_are_below_next_sequence() {
        damaged(
            |f| {
                replace(
                    f,
                    &Fact::Counters { next_offset: 3, next_sequence: 2 },
                    Fact::Counters { next_offset: 3, next_sequence: 1 },
                );
            },
            &["queue message \"t\": its enqueue sequence 1 is not below the counters' next_sequence 1"],
        );
    }

    /// A damaged record is one problem: its index entries are not judged, and it fills its place.
    #[test]
    fn damaged_records_are_one_problem_each() {
        let mut checker = Checker::new(&Index::ALL);
        for fact in consistent() {
            if !matches!(
                fact,
                Fact::Event { offset: 1, .. } | Fact::Queue { message_id: "t", .. } | Fact::Counters { .. }
            ) {
                checker.fact(fact);
            }
        }
        checker.damaged(Damaged::Event { offset: 1 }, Problem::new("event at offset 1", "checksum mismatch"));
        checker.damaged(
            Damaged::Queue { message_id: "t" },
            Problem::new("queue message \"t\"", "does not decode"),
        );
        checker.damaged(Damaged::Counters, Problem::new("counters", "checksum mismatch"));
        checker.problem(Problem::new("aggregate h/1", "checksum mismatch"));
        let read = checker.read();
        let report = checker.finish();
        let found: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            found,
            [
                "event at offset 1: checksum mismatch",
                "queue message \"t\": does not decode",
                "counters: checksum mismatch",
                "aggregate h/1: checksum mismatch",
            ]
        );
        assert_eq!(report.records, 5);
        assert_eq!(read, 9, "progress counts damaged records too");
    }

    /// Only declared indexes (or those fed an entry) are compared.
    #[test]
    fn undeclared_indexes_are_left_to_the_engine() {
        let records = consistent().into_iter().filter(|f| {
            matches!(f, Fact::Event { .. } | Fact::Queue { .. } | Fact::Counters { .. } | Fact::Record)
        });
        let mut checker = Checker::new(&[Index::QueueOrder]);
        for fact in records {
            checker.fact(fact);
        }
        checker.engine_check("SQLite PRAGMA integrity_check", vec![]);
        checker.engine_check(
            "SQLite PRAGMA foreign_key_check",
            vec![Problem::new("table t", "row 4 has no parent")],
        );
        let report = checker.finish();
        assert_eq!(
            report.engine_check.as_deref(),
            Some("SQLite PRAGMA integrity_check, SQLite PRAGMA foreign_key_check")
        );
        let found: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            found,
            [
                "table t: row 4 has no parent",
                "queue message \"t\": missing from the queue_order index: no entry (-50 µs, 1, \"t\")",
                "queue message \"q\": missing from the queue_order index: no entry (100 µs, 0, \"q\")",
            ]
        );
        assert_eq!(report.index_entries, 0);
    }

    #[test]
    fn names_and_display() {
        assert_eq!(Problem::new("counters", "not found").to_string(), "counters: not found");
        let names: Vec<String> = Index::ALL.iter().map(ToString::to_string).collect();
        assert_eq!(
            names,
            ["events_by_type", "events_by_source", "event_ids", "queue_order", "queue_timeouts"]
        );
    }
}
