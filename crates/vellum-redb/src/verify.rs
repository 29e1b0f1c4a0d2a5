//! `BulkStore::verify` for redb: every table read in one read transaction (one snapshot) and
//! fed to the shared [`Checker`] (docs/verify.md). Records are opened with the same codec as
//! every read, so a record that fails its checksum here fails every read too.
//!
//! redb's own check (`Database::check_integrity`, every page checksum) needs the file to itself,
//! so it runs at open: a store opened with `with_integrity_check(true)` (or
//! `redb://DIR?integrity_check=true`, which `vellum verify` uses) reports it as its engine check.

use std::collections::{HashMap, HashSet};

use redb::ReadableTable;
use vellum_core::Envelope;
use vellum_core::verify::{Checker, Damaged, Fact, Index, Problem, Report};
use vellum_core::{Error, Result};

use crate::file::OrStorage;
use crate::layout::{
    AGGREGATES, EVENT_IDS, EVENTS, EVENTS_BY_SOURCE, EVENTS_BY_TYPE, Links, OFFSETS, PROCESSES, QUEUE,
    QUEUE_ORDER, QUEUE_TIMEOUTS, SOURCE_HEADS, TYPE_HEADS,
};
use crate::tables::Reader;

/// How often (in records) progress is reported.
const PROGRESS_EVERY: u64 = 4096;

/// Every index this provider keeps beside its records.
const INDEXES: [Index; 5] =
    [Index::ByType, Index::BySource, Index::EventIds, Index::QueueOrder, Index::TimeoutOwners];

impl Reader<'_> {
    /// Feeds every record, index entry and the counters to a checker.
    pub(crate) fn verify(
        &self,
        integrity_checked: bool,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<Report> {
        let mut checker = Checker::new(&INDEXES);
        if integrity_checked {
            checker.engine_check("redb check_integrity (run when the store was opened)", Vec::new());
        }
        let mut tick = |checker: &Checker| {
            if checker.read().is_multiple_of(PROGRESS_EVERY) {
                progress(checker.read());
            }
        };
        self.verify_events(&mut checker, &mut tick)?;
        self.verify_queue(&mut checker, &mut tick)?;
        self.verify_others(&mut checker, &mut tick)?;
        match self.counters() {
            Ok(c) => {
                checker.fact(Fact::Counters { next_offset: c.next_offset, next_sequence: c.next_sequence });
            }
            Err(e) => checker.damaged(Damaged::Counters, Problem::from_error("counters", &e)),
        }
        progress(checker.read());
        Ok(checker.finish())
    }

    fn verify_events(&self, checker: &mut Checker, tick: &mut dyn FnMut(&Checker)) -> Result<()> {
        let file = self.file;
        let mut chains = Chains::default();
        for entry in self.txn.open_table(EVENTS).or_storage(file)?.iter().or_storage(file)? {
            let (key, value) = entry.or_storage(file)?;
            let offset = key.value();
            match self.codec.event(offset, value.value()) {
                Ok((e, links)) => {
                    for p in chains.follow(offset, &e, links) {
                        checker.problem(p);
                    }
                    checker.fact(Fact::Event {
                        offset,
                        message_id: &e.message_id,
                        portable_name: &e.portable_name,
                        handler_key: e.source_handler_key(),
                        instance_id: &e.source_instance_id,
                    });
                }
                Err(e) => {
                    chains.damaged.insert(offset);
                    checker.damaged(
                        Damaged::Event { offset },
                        Problem::from_error(format!("event at offset {offset}"), &e),
                    );
                }
            }
            tick(checker);
        }
        for entry in self.txn.open_table(TYPE_HEADS).or_storage(file)?.iter().or_storage(file)? {
            let (key, value) = entry.or_storage(file)?;
            chains.stored_types.insert(key.value().to_owned(), value.value());
        }
        for entry in self.txn.open_table(SOURCE_HEADS).or_storage(file)?.iter().or_storage(file)? {
            let (key, value) = entry.or_storage(file)?;
            let (h, i) = key.value();
            chains.stored_sources.insert((h.to_owned(), i.to_owned()), value.value());
        }
        for p in chains.heads() {
            checker.problem(p);
        }
        for entry in self.txn.open_table(EVENTS_BY_TYPE).or_storage(file)?.iter().or_storage(file)? {
            let (key, ()) = (entry.or_storage(file)?.0, ());
            let (portable_name, offset) = key.value();
            checker.fact(Fact::ByType { portable_name, offset });
        }
        for entry in self.txn.open_table(EVENTS_BY_SOURCE).or_storage(file)?.iter().or_storage(file)? {
            let key = entry.or_storage(file)?.0;
            let (handler_key, instance_id, offset) = key.value();
            checker.fact(Fact::BySource { handler_key, instance_id, offset });
        }
        for entry in self.txn.open_table(EVENT_IDS).or_storage(file)?.iter().or_storage(file)? {
            let (key, value) = entry.or_storage(file)?;
            checker.fact(Fact::EventId { message_id: key.value(), offset: value.value() });
        }
        Ok(())
    }

    fn verify_queue(&self, checker: &mut Checker, tick: &mut dyn FnMut(&Checker)) -> Result<()> {
        let file = self.file;
        for entry in self.txn.open_table(QUEUE).or_storage(file)?.iter().or_storage(file)? {
            let (key, value) = entry.or_storage(file)?;
            let message_id = key.value();
            match self.codec.queue(message_id, value.value()) {
                Ok((record, envelope)) => checker.fact(Fact::Queue {
                    message_id,
                    sequence: record.sequence,
                    next_attempt_at: record.next_attempt_at,
                    timeout_owner: envelope
                        .is_timeout()
                        .then(|| (envelope.source_handler_key(), envelope.source_instance_id.as_str())),
                }),
                Err(e) => checker.damaged(
                    Damaged::Queue { message_id },
                    Problem::from_error(format!("queue message {message_id:?}"), &e),
                ),
            }
            tick(checker);
        }
        for entry in self.txn.open_table(QUEUE_ORDER).or_storage(file)?.iter().or_storage(file)? {
            let key = entry.or_storage(file)?.0;
            let (next_attempt_at, sequence, message_id) = key.value();
            checker.fact(Fact::QueueOrder { next_attempt_at, sequence, message_id });
        }
        for entry in self.txn.open_table(QUEUE_TIMEOUTS).or_storage(file)?.iter().or_storage(file)? {
            let key = entry.or_storage(file)?.0;
            let (handler_key, instance_id, message_id) = key.value();
            checker.fact(Fact::TimeoutOwner { handler_key, instance_id, message_id });
        }
        Ok(())
    }

    /// Aggregates, processes and consumer offsets: only their checksums.
    fn verify_others(&self, checker: &mut Checker, tick: &mut dyn FnMut(&Checker)) -> Result<()> {
        let file = self.file;
        for entry in self.txn.open_table(AGGREGATES).or_storage(file)?.iter().or_storage(file)? {
            let (key, value) = entry.or_storage(file)?;
            let (h, i) = key.value();
            match self.codec.aggregate(h, i, value.value()) {
                Ok(_) => checker.fact(Fact::Record),
                Err(e) => checker.problem(Problem::from_error(format!("aggregate {h:?}/{i:?}"), &e)),
            }
            tick(checker);
        }
        for entry in self.txn.open_table(PROCESSES).or_storage(file)?.iter().or_storage(file)? {
            let (key, value) = entry.or_storage(file)?;
            let (h, i) = key.value();
            match self.codec.process(h, i, value.value()) {
                Ok(_) => checker.fact(Fact::Record),
                Err(e) => checker.problem(Problem::from_error(format!("process {h:?}/{i:?}"), &e)),
            }
            tick(checker);
        }
        for entry in self.txn.open_table(OFFSETS).or_storage(file)?.iter().or_storage(file)? {
            let (key, value) = entry.or_storage(file)?;
            match self.codec.offset(key.value(), value.value()) {
                Ok(_) => checker.fact(Fact::Record),
                Err(e) => checker
                    .problem(Problem::from_error(format!("offset of application {:?}", key.value()), &e)),
            }
            tick(checker);
        }
        Ok(())
    }
}

/// The chains of links the events form, followed in offset order, and the heads tables.
#[derive(Default)]
struct Chains {
    types: HashMap<String, u64>,
    sources: HashMap<(String, String), u64>,
    /// Offsets of damaged events: a link to one is not judged (its own problem is reported).
    damaged: HashSet<u64>,
    stored_types: HashMap<String, u64>,
    stored_sources: HashMap<(String, String), u64>,
}

impl Chains {
    /// Checks an event's links against the previous event of its type and of its source.
    fn follow(&mut self, offset: u64, e: &Envelope, links: Links) -> Vec<Problem> {
        let mut problems = Vec::new();
        let source = (e.source_handler_key().to_owned(), e.source_instance_id.clone());
        let expected_type = self.types.insert(e.portable_name.clone(), offset);
        let expected_source = self.sources.insert(source, offset);
        for (what, link, expected) in
            [("type", links.by_type, expected_type), ("source", links.by_source, expected_source)]
        {
            if link != expected && !link.is_some_and(|l| self.damaged.contains(&l)) {
                problems.push(Problem::new(
                    format!("event at offset {offset}"),
                    format!(
                        "links to offset {link:?} as the previous event of its {what}, which is {expected:?}"
                    ),
                ));
            }
        }
        problems
    }

    /// The heads tables against the newest event of each type and source, both ways.
    fn heads(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        compare(&self.types, &self.stored_types, "type_heads", &mut problems);
        compare(&self.sources, &self.stored_sources, "source_heads", &mut problems);
        problems
    }
}

fn compare<K: std::hash::Hash + Eq + std::fmt::Debug>(
    actual: &HashMap<K, u64>,
    stored: &HashMap<K, u64>,
    table: &str,
    problems: &mut Vec<Problem>,
) {
    for (key, newest) in actual {
        if stored.get(key) != Some(newest) {
            problems.push(Problem::new(
                format!("{table} entry {key:?}"),
                format!("is {:?}, but the newest event is at offset {newest}", stored.get(key)),
            ));
        }
    }
    for (key, head) in stored {
        if !actual.contains_key(key) {
            problems.push(Problem::new(
                format!("{table} entry {key:?}"),
                format!("names offset {head}, but no event has this key"),
            ));
        }
    }
}

impl crate::RedbProvider {
    /// Runs redb's own check of `app_key`'s file (every page checksum) on a scratch copy, so
    /// the file itself is never changed: redb's check repairs what it can, and verify repairs
    /// nothing. Returns the problems found (none for a sound file). The copy sits beside the
    /// file, is as large, and is removed afterwards.
    ///
    /// Run it on a closed store or one this process holds (the copy of a file another process
    /// is writing may catch a commit half-written).
    pub fn check_pages(&self, app_key: &str) -> Result<Vec<Problem>> {
        let path = self.file_path(app_key);
        let scratch = path.with_extension("redb.checking");
        let copy = std::fs::copy(&path, &scratch)
            .map_err(|e| Error::storage(format!("cannot copy redb file {} to check it", path.display()), e));
        let location = format!("redb file {}", path.display());
        let outcome = copy.map(|_| {
            crate::file::guarded(&scratch, || {
                let location = location.clone();
                let mut db = match redb::Database::open(&scratch) {
                    Ok(db) => db,
                    Err(e) => return Ok(vec![Problem::new(location, format!("redb cannot open it: {e}"))]),
                };
                Ok(match db.check_integrity() {
                    Ok(true) => Vec::new(),
                    Ok(false) => {
                        vec![Problem::new(location, "pages fail their checksums (redb could repair a copy)")]
                    }
                    Err(e) => vec![Problem::new(location, format!("redb's check failed: {e}"))],
                })
            })
            // A panic inside redb on a damaged file is a finding too.
            .unwrap_or_else(|e| vec![Problem::from_error(location.clone(), &e)])
        });
        let _ = std::fs::remove_file(&scratch);
        outcome
    }
}
