//! `BulkStore::verify` for every SQL dialect: the store's rows are read in pages, raw, and fed
//! to the shared [`Checker`] (docs/verify.md). A dialect only fetches pages ([`Dialect::verify_page`])
//! and, where its engine offers them, runs its own check and reads its indexes
//! ([`Dialect::engine_check`]).
//!
//! In SQL the index keys of the log and the queue are columns of the rows themselves
//! (`portable_name`, `handler_key`, `message_id`, `next_attempt_at`, the timeout owner), so each
//! row's columns are checked against its envelope: a column that disagrees is an index entry
//! that names the wrong record. Whether the database's own index structures agree with the
//! table is the engine's check (SQLite's `PRAGMA integrity_check`).

use vellum_core::verify::{Checker, Damaged, Fact, Problem, Report};
use vellum_core::{Envelope, Result};

use crate::schema::from_db;
use crate::store::Dialect;
use crate::sums::{QueueRow, Rows};

/// Rows per page.
pub(crate) const PAGE: usize = 1000;

/// Which page of rows to fetch.
#[derive(Debug, Clone)]
pub enum VerifyPage {
    /// Events from this offset on, in offset order.
    Events(i64),
    /// Queue messages after this message ID (all when `None`), in message ID order.
    Queue(Option<String>),
    /// Aggregates after this key.
    Aggregates(Option<(String, String)>),
    /// Processes after this key.
    Processes(Option<(String, String)>),
    /// Consumer offsets after this source.
    Offsets(Option<String>),
}

/// One row as stored, before any check.
#[derive(Debug, Clone)]
pub enum RawRow {
    /// A `vellum_event` row.
    Event {
        offset: i64,
        envelope: Vec<u8>,
        sum: i64,
        message_id: String,
        portable_name: String,
        handler_key: String,
        instance_id: String,
    },
    /// A `vellum_queue` row.
    Queue {
        message_id: String,
        revision: i64,
        failure_count: i64,
        next_attempt_at: i64,
        sequence: i64,
        envelope: Vec<u8>,
        envelope_sum: i64,
        state_sum: i64,
        timeout_owner: (Option<String>, Option<String>),
    },
    /// A `vellum_aggregate` row.
    Aggregate { handler_key: String, instance_id: String, revision: i64, last_event_id: String, sum: i64 },
    /// A `vellum_process` row.
    Process {
        handler_key: String,
        instance_id: String,
        revision: i64,
        media_type: String,
        data: Vec<u8>,
        sum: i64,
    },
    /// A `vellum_offset` row.
    Offset { source: String, next_offset: i64, sum: i64 },
}

/// Reads every row of the store's application and returns the checker's report.
pub(crate) async fn verify<D: Dialect>(
    dialect: &D,
    progress: &mut (dyn FnMut(u64) + Send),
) -> Result<Report> {
    let rows = Rows { provider: D::PROVIDER, app_key: dialect.app_key() };
    let mut checker = Checker::new(&dialect.verify_indexes());
    let mut next = Some(VerifyPage::Events(0));
    while let Some(page) = next.take() {
        let raw = dialect.verify_page(page.clone()).await?;
        next = following(&page, raw.last(), raw.len());
        for row in &raw {
            feed(&mut checker, rows, row);
        }
        progress(checker.read());
    }
    match dialect.verify_counters().await? {
        Some((next_offset, next_sequence, sum)) => match rows.counters(next_offset, next_sequence, sum) {
            Ok(()) => checker.fact(Fact::Counters {
                next_offset: from_db(next_offset),
                next_sequence: from_db(next_sequence),
            }),
            Err(e) => checker.damaged(Damaged::Counters, Problem::from_error("counters", &e)),
        },
        // The counter row is written with the first write: none is an application with nothing
        // stored. If records exist, the checker reports them against next offset 0.
        None => checker.fact(Fact::Counters { next_offset: 0, next_sequence: 0 }),
    }
    dialect.engine_check(&mut checker).await?;
    progress(checker.read());
    Ok(checker.finish())
}

/// The page after `page`, whose last row is `last`; `None` when `page` was the last of its
/// table and no table follows.
fn following(page: &VerifyPage, last: Option<&RawRow>, len: usize) -> Option<VerifyPage> {
    let full = len >= PAGE;
    let next_table = match page {
        VerifyPage::Events(_) => VerifyPage::Queue(None),
        VerifyPage::Queue(_) => VerifyPage::Aggregates(None),
        VerifyPage::Aggregates(_) => VerifyPage::Processes(None),
        VerifyPage::Processes(_) => VerifyPage::Offsets(None),
        VerifyPage::Offsets(_) => return full.then(|| after(last)).flatten(),
    };
    if full { after(last) } else { Some(next_table) }
}

/// The page that continues after `last` in its own table.
fn after(last: Option<&RawRow>) -> Option<VerifyPage> {
    Some(match last? {
        RawRow::Event { offset, .. } => VerifyPage::Events(offset + 1),
        RawRow::Queue { message_id, .. } => VerifyPage::Queue(Some(message_id.clone())),
        RawRow::Aggregate { handler_key, instance_id, .. } => {
            VerifyPage::Aggregates(Some((handler_key.clone(), instance_id.clone())))
        }
        RawRow::Process { handler_key, instance_id, .. } => {
            VerifyPage::Processes(Some((handler_key.clone(), instance_id.clone())))
        }
        RawRow::Offset { source, .. } => VerifyPage::Offsets(Some(source.clone())),
    })
}

/// Checks one row and feeds what it says.
fn feed(checker: &mut Checker, rows: Rows<'_>, row: &RawRow) {
    match row {
        RawRow::Event { offset, envelope, sum, message_id, portable_name, handler_key, instance_id } => {
            let location = format!("event at offset {offset}");
            match rows.event(*offset, envelope, *sum, None) {
                Ok(event) => {
                    let e = &event.envelope;
                    let columns = [
                        ("message_id", message_id.as_str(), e.message_id.as_str()),
                        ("portable_name", portable_name, &e.portable_name),
                        ("handler_key", handler_key, e.source_handler_key()),
                        ("instance_id", instance_id, &e.source_instance_id),
                    ];
                    for (column, stored, actual) in columns {
                        if stored != actual {
                            checker.problem(Problem::new(
                                location.clone(),
                                format!(
                                    "column {column} is {stored:?} but the event's envelope says {actual:?}"
                                ),
                            ));
                        }
                    }
                    checker.fact(Fact::Event {
                        offset: event.offset,
                        message_id: &e.message_id,
                        portable_name: &e.portable_name,
                        handler_key: e.source_handler_key(),
                        instance_id: &e.source_instance_id,
                    });
                }
                Err(e) => checker
                    .damaged(Damaged::Event { offset: from_db(*offset) }, Problem::from_error(location, &e)),
            }
        }
        RawRow::Queue {
            message_id,
            revision,
            failure_count,
            next_attempt_at,
            sequence,
            envelope,
            envelope_sum,
            state_sum,
            timeout_owner,
        } => {
            let q = QueueRow {
                message_id,
                revision: *revision,
                failure_count: *failure_count,
                next_attempt_at: *next_attempt_at,
                sequence: *sequence,
                envelope,
                envelope_sum: *envelope_sum,
                state_sum: *state_sum,
            };
            let location = format!("queue message {message_id:?}");
            match rows.queue(&q) {
                Ok(envelope) => {
                    let owner = owner_of(&envelope);
                    let stored = (timeout_owner.0.as_deref(), timeout_owner.1.as_deref());
                    if stored != (owner.map(|o| o.0), owner.map(|o| o.1)) {
                        checker.problem(Problem::new(
                            location,
                            format!("timeout owner columns are {stored:?} but its envelope says {owner:?}"),
                        ));
                    }
                    checker.fact(Fact::Queue {
                        message_id,
                        sequence: from_db(*sequence),
                        next_attempt_at: *next_attempt_at,
                        timeout_owner: owner,
                    });
                }
                Err(e) => checker.damaged(Damaged::Queue { message_id }, Problem::from_error(location, &e)),
            }
        }
        RawRow::Aggregate { handler_key, instance_id, revision, last_event_id, sum } => {
            record(checker, rows.aggregate(handler_key, instance_id, *revision, last_event_id, *sum), || {
                format!("aggregate {handler_key:?}/{instance_id:?}")
            });
        }
        RawRow::Process { handler_key, instance_id, revision, media_type, data, sum } => {
            let outcome = rows.process(handler_key, instance_id, *revision, media_type, data, *sum);
            record(checker, outcome, || format!("process {handler_key:?}/{instance_id:?}"));
        }
        RawRow::Offset { source, next_offset, sum } => {
            record(checker, rows.offset(source, *next_offset, *sum), || {
                format!("offset of application {source:?}")
            });
        }
    }
}

fn owner_of(envelope: &Envelope) -> Option<(&str, &str)> {
    envelope.is_timeout().then(|| (envelope.source_handler_key(), envelope.source_instance_id.as_str()))
}

fn record(checker: &mut Checker, outcome: Result<()>, location: impl FnOnce() -> String) {
    match outcome {
        Ok(()) => checker.fact(Fact::Record),
        Err(e) => checker.problem(Problem::from_error(location(), &e)),
    }
}
