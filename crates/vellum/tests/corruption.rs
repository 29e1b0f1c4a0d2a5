//! The corruption test: damage a store that was written and closed, then read everything back.
//!
//! Every provider gets the same realistic workload (240 events of 5 types from 10 sources,
//! aggregates, processes (one removed with its timeout), a queue of commands and timeouts with
//! updates and removals, consumer offsets). Its content, read back through every read the
//! contract offers, is the reference. Then, one damage at a time on a fresh copy:
//!
//! - redb and SQLite: a single byte flipped at ~70 positions spread over the closed file (header
//!   region, evenly spaced, seeded pseudo-random, tail), and 6 truncations;
//! - PostgreSQL and MySQL (when `VELLUM_POSTGRES_URL` / `VELLUM_MYSQL_URL` is set): ~25 changes
//!   made with SQL to a copy of the store under another application key (payload bytes, index
//!   columns, revisions, queue times and sequences, counters, deleted rows).
//!
//! After each damage the store is opened (a failure counts as detected at open, and must name
//! the file), every read is compared with the reference (right, an error of kind `Corrupt`,
//! another error, or **silently wrong**), and `verify` runs (problems found count as detected
//! by verify; `Unsupported` is counted as "verify not available"). A table per provider is
//! printed (`cargo test -p vellum --test corruption -- --nocapture`), every silently wrong read
//! and every other error verbatim. Every test fails on any panic, any damage that reads detect
//! or get wrong but verify reports clean, and any open error that does not name the damaged
//! file. redb's tests also fail on any silently wrong read. The SQL dialects have a known gap
//! (docs/integrity.md#what-a-read-cannot-see): a record whose index columns were changed, or
//! whose row or page was lost, is missed by reads that verify still catches. Their
//! `*_reads_are_never_wrong` tests hold them to zero silently wrong reads; they fail today and
//! are ignored with that reason (`cargo test -p vellum --test corruption -- --ignored`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vellum::bulk::Export;
use vellum::{
    AggregateMetaData, Batch, BulkStore, DataStore, Envelope, Error, ErrorKind, Event, Identity, Operation,
    Packet, Persister, ProcessInstance, Provider, QueueMessage, Record, StoreStats,
};

/// The application key of every reference store.
const APP: &str = "corrupt-test";

const TYPES: [&str; 5] = ["OrderPlaced", "OrderShipped", "PaymentTaken", "StockReserved", "CustomerNotified"];

const SOURCES: [(&str, &str); 10] = [
    ("orders", "o-1"),
    ("orders", "o-2"),
    ("orders", "o-3"),
    ("orders", "o-4"),
    ("payments", "p-1"),
    ("payments", "p-2"),
    ("payments", "p-3"),
    ("stock", "s-1"),
    ("stock", "s-2"),
    ("stock", "s-3"),
];

/// The process handler owning every process instance and timeout.
const PROCESS: &str = "fulfilment";

/// Batches in the workload; each appends 8 events.
const BATCHES: usize = 30;

/// The offset from which one of the by-type reads starts.
const MID_OFFSET: u64 = 120;

// ---------------------------------------------------------------------------------------------
// The workload
// ---------------------------------------------------------------------------------------------

/// What the reads ask for: every key the workload wrote, plus one absent key of each kind.
#[derive(Debug, Default)]
struct Keys {
    sources: Vec<(String, String)>,
    aggregates: Vec<(String, String)>,
    processes: Vec<(String, String)>,
    offsets: Vec<String>,
}

/// A time in 2027, `secs` seconds and `micros` µs after the workload's epoch.
fn at(secs: u64, micros: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs) + Duration::from_micros(micros)
}

/// Deterministic JSON-ish payload bytes of about `size` bytes.
fn payload(seed: &str, size: usize) -> Vec<u8> {
    let mut text = format!("{{\"id\":\"{seed}\",\"pad\":\"");
    let mut x = seed.bytes().fold(0x9e37_79b9_u32, |h, b| h.rotate_left(5) ^ u32::from(b));
    while text.len() < size {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        text.push(char::from(b'a' + (x % 26) as u8));
    }
    text.push_str("\"}");
    text.into_bytes()
}

fn envelope(
    id: &str,
    portable_name: &str,
    source: (&str, &str),
    size: usize,
    created: SystemTime,
) -> Envelope {
    Envelope {
        message_id: id.to_owned(),
        causation_id: format!("cause-{id}"),
        correlation_id: format!("corr-{}", id.len()),
        source_application: Some(Identity::new("shop", "5c1c0b7e-shop")),
        source_handler: Some(Identity::new(source.0.to_uppercase(), source.0)),
        source_instance_id: source.1.to_owned(),
        created_at: vellum::time::rfc3339(created),
        scheduled_for: String::new(),
        description: format!("{portable_name} {id}"),
        portable_name: portable_name.to_owned(),
        media_type: format!("application/json; type={portable_name:?}"),
        data: payload(id, size),
        source_site: None,
    }
}

/// The workload's batches and the keys to read back.
fn workload() -> (Vec<Batch>, Keys) {
    let mut batches = Vec::new();
    let mut aggregates: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut processes: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut queue: BTreeMap<String, QueueMessage> = BTreeMap::new();
    let mut offsets: BTreeMap<String, u64> = BTreeMap::new();
    for k in 0..BATCHES {
        let source = SOURCES[k % SOURCES.len()];
        let mut ops = Vec::new();
        let mut last = String::new();
        for j in 0..8 {
            let id = format!("evt-{k:02}-{j}");
            let portable_name = TYPES[(k * 3 + j * 2) % TYPES.len()];
            let size = 40 + (k * 37 + j * 53) % 400;
            ops.push(Operation::SaveEvent(envelope(
                &id,
                portable_name,
                source,
                size,
                at(k as u64 * 60 + j as u64, 7),
            )));
            last = id;
        }
        let key = (source.0.to_owned(), source.1.to_owned());
        let revision = aggregates.entry(key.clone()).or_insert(0);
        ops.push(Operation::SaveAggregateMetaData(AggregateMetaData {
            handler_key: key.0,
            instance_id: key.1,
            revision: *revision,
            last_event_id: last,
        }));
        *revision += 1;

        if k % 2 == 0 {
            let key = (PROCESS.to_owned(), format!("f-{}", (k / 2) % 7));
            let revision = processes.entry(key.clone()).or_insert(0);
            ops.push(Operation::SaveProcessInstance(ProcessInstance {
                handler_key: key.0,
                instance_id: key.1,
                revision: *revision,
                packet: Packet::new(
                    "application/json; type=\"Fulfilment\"",
                    payload(&format!("proc-{k}"), 60 + k * 5),
                ),
            }));
            *revision += 1;
        }
        if k == 21 {
            // Removes f-3 and its timeout tmo-09.
            let key = (PROCESS.to_owned(), "f-3".to_owned());
            let revision = processes.remove(&key).expect("f-3 was saved");
            ops.push(Operation::RemoveProcessInstance(ProcessInstance {
                handler_key: key.0,
                instance_id: key.1,
                revision,
                packet: Packet::default(),
            }));
        }

        for j in 0..2 {
            let id = format!("cmd-{k:02}-{j}");
            let name = if j == 0 { "ShipOrder" } else { "ChargeCard" };
            let message = QueueMessage {
                revision: 0,
                failure_count: 0,
                // Three batches share a time: ties ordered by enqueue sequence.
                next_attempt_at: at((k / 3) as u64 * 10, 250),
                envelope: envelope(&id, name, (PROCESS, "f-0"), 30 + k * 11, at(k as u64 * 60, 9)),
            };
            ops.push(Operation::SaveQueueMessage(message.clone()));
            queue.insert(id, QueueMessage { revision: 1, ..message });
        }
        if k % 3 == 0 {
            let owner = format!("f-{}", (k / 3) % 7);
            let when = at(5000 + k as u64 * 13, 0);
            let mut env = envelope(&format!("tmo-{k:02}"), "FulfilmentTimeout", (PROCESS, &owner), 50, when);
            env.scheduled_for = vellum::time::rfc3339(when);
            ops.push(Operation::SaveQueueMessage(QueueMessage {
                revision: 0,
                failure_count: 0,
                next_attempt_at: when,
                envelope: env,
            }));
        }
        if k >= 4 {
            let message = queue.get_mut(&format!("cmd-{:02}-0", k - 4)).expect("enqueued");
            let updated = QueueMessage {
                failure_count: message.failure_count + 1,
                next_attempt_at: at(1000 + k as u64, 123),
                ..message.clone()
            };
            ops.push(Operation::SaveQueueMessage(updated.clone()));
            *message = QueueMessage { revision: updated.revision + 1, ..updated };
        }
        if k >= 6 {
            let message = queue.remove(&format!("cmd-{:02}-1", k - 6)).expect("enqueued");
            ops.push(Operation::RemoveQueueMessage(message));
        }

        let application_key = format!("upstream-{}", k % 5);
        let current = offsets.get(&application_key).copied().unwrap_or(0);
        let next = current + 3 + k as u64;
        ops.push(Operation::SaveOffset {
            application_key: application_key.clone(),
            current_offset: current,
            next_offset: next,
        });
        offsets.insert(application_key, next);

        batches.push(Batch::from(ops));
    }

    let mut sources: Vec<(String, String)> =
        SOURCES.iter().map(|(h, i)| ((*h).to_owned(), (*i).to_owned())).collect();
    sources.push(("orders".to_owned(), "o-404".to_owned()));
    let mut aggregates: Vec<(String, String)> = aggregates.into_keys().collect();
    aggregates.push(("orders".to_owned(), "o-404".to_owned()));
    let mut processes: Vec<(String, String)> =
        (0..7).map(|i| (PROCESS.to_owned(), format!("f-{i}"))).collect();
    processes.push((PROCESS.to_owned(), "f-404".to_owned()));
    let mut offsets: Vec<String> = offsets.into_keys().collect();
    offsets.push("upstream-404".to_owned());
    let keys = Keys { sources, aggregates, processes, offsets };
    (batches, keys)
}

/// Writes the workload into a new store of `provider` and closes it.
async fn write_workload<P: Provider>(provider: &P, app: &str, batches: &[Batch]) {
    let store = provider.open(app).await.expect("open the reference store");
    for (i, batch) in batches.iter().enumerate() {
        store.persist(batch.clone()).await.unwrap_or_else(|e| panic!("persist batch {i}: {e}"));
    }
    store.close().await.expect("close the reference store");
}

// ---------------------------------------------------------------------------------------------
// Reading everything back
// ---------------------------------------------------------------------------------------------

/// One read's result.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Offset(u64),
    Events(Vec<Event>),
    Queue(Vec<QueueMessage>),
    Aggregate(AggregateMetaData),
    Process(ProcessInstance),
    Records(Vec<Record>),
    Stats(StoreStats),
}

async fn events(cursor: impl Future<Output = vellum::Result<vellum::EventCursor>>) -> vellum::Result<Value> {
    Ok(Value::Events(cursor.await?.with_page_size(50).collect().await?))
}

async fn export<S: BulkStore>(store: &S) -> vellum::Result<Value> {
    let mut export = Export::new(store, 64);
    let mut records = Vec::new();
    while let Some(page) = export.next_page().await? {
        records.extend(page);
    }
    Ok(Value::Records(records))
}

/// Every read of the contract, over every key the workload wrote (and absent ones).
async fn read_all<S: BulkStore>(store: &S, keys: &Keys) -> Vec<(String, vellum::Result<Value>)> {
    let mut reads = Vec::new();
    reads.push(("next_event_offset".to_owned(), store.next_event_offset().await.map(Value::Offset)));
    for t in TYPES {
        reads.push((format!("events by type {t}"), events(store.load_events_by_type(&[t], 0)).await));
    }
    reads.push(("events by all types".to_owned(), events(store.load_events_by_type(&TYPES, 0)).await));
    reads.push((
        format!("events by types 0,2 from {MID_OFFSET}"),
        events(store.load_events_by_type(&[TYPES[0], TYPES[2]], MID_OFFSET)).await,
    ));
    for (h, i) in &keys.sources {
        reads.push((format!("events by source {h}/{i}"), events(store.load_events_by_source(h, i)).await));
    }
    for n in [1, 7, 1000] {
        reads.push((format!("queue head {n}"), store.load_queue_messages(n).await.map(Value::Queue)));
    }
    for (h, i) in &keys.aggregates {
        reads.push((
            format!("aggregate {h}/{i}"),
            store.load_aggregate_meta_data(h, i).await.map(Value::Aggregate),
        ));
    }
    for (h, i) in &keys.processes {
        reads.push((format!("process {h}/{i}"), store.load_process_instance(h, i).await.map(Value::Process)));
    }
    for a in &keys.offsets {
        reads.push((format!("offset of {a}"), store.load_offset(a).await.map(Value::Offset)));
    }
    reads.push(("stats".to_owned(), store.stats().await.map(Value::Stats)));
    reads.push(("bulk export".to_owned(), export(store).await));
    reads
}

/// A short description of how `got` differs from `want`.
fn difference(want: &Value, got: &Value) -> String {
    fn first_diff<T: PartialEq>(a: &[T], b: &[T]) -> usize {
        a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()))
    }
    fn event(e: Option<&Event>) -> String {
        e.map_or_else(
            || "nothing".to_owned(),
            |e| format!("offset {} {:?} ({})", e.offset, e.id(), e.envelope.portable_name),
        )
    }
    fn record(r: Option<&Record>) -> String {
        r.map_or_else(|| "nothing".to_owned(), |r| format!("{r:?}").chars().take(300).collect())
    }
    match (want, got) {
        (Value::Events(a), Value::Events(b)) => {
            let i = first_diff(a, b);
            format!(
                "expected {} events, got {}; first difference at index {i}: expected {}, got {}",
                a.len(),
                b.len(),
                event(a.get(i)),
                event(b.get(i))
            )
        }
        (Value::Records(a), Value::Records(b)) => {
            let i = first_diff(a, b);
            format!(
                "expected {} records, got {}; first difference at index {i}: expected {}, got {}",
                a.len(),
                b.len(),
                record(a.get(i)),
                record(b.get(i))
            )
        }
        (Value::Queue(a), Value::Queue(b)) => {
            let i = first_diff(a, b);
            let q = |m: Option<&QueueMessage>| format!("{m:?}").chars().take(300).collect::<String>();
            format!(
                "expected {} messages, got {}; first difference at index {i}: expected {}, got {}",
                a.len(),
                b.len(),
                q(a.get(i)),
                q(b.get(i))
            )
        }
        _ => {
            let short = |v: &Value| format!("{v:?}").chars().take(300).collect::<String>();
            format!("expected {}, got {}", short(want), short(got))
        }
    }
}

/// An error with its sources, on one line.
fn chain(e: &Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let _ = write!(text, ": {s}");
        source = s.source();
    }
    text
}

// ---------------------------------------------------------------------------------------------
// Examining a damaged store
// ---------------------------------------------------------------------------------------------

/// How one read compared with the reference.
#[derive(Debug)]
enum Verdict {
    Right,
    Corrupt(String),
    Other(ErrorKind, String),
    Wrong(String),
}

/// What verify said.
#[derive(Debug)]
enum Verified {
    Clean,
    Problems(Vec<String>),
    /// Verify failed with a `Corrupt` error: it saw the damage.
    Corrupt(String),
    Unsupported,
    Failed(ErrorKind, String),
    NotRun,
}

/// What one damage led to.
#[derive(Debug)]
struct Outcome {
    open: Result<(), (ErrorKind, String)>,
    reads: Vec<(String, Verdict)>,
    verify: Verified,
}

/// The reference: every read's value on the pristine store.
type Expected = Vec<(String, Value)>;

/// Opens `app` through `provider`, reads everything, compares with `expected`, verifies, closes.
async fn examine<P>(provider: P, app: String, keys: Arc<Keys>, expected: Arc<Expected>) -> Outcome
where
    P: Provider,
    P::Store: BulkStore,
{
    let store = match provider.open(&app).await {
        Ok(store) => store,
        Err(e) => {
            return Outcome { open: Err((e.kind(), chain(&e))), reads: Vec::new(), verify: Verified::NotRun };
        }
    };
    let got = read_all(&store, &keys).await;
    assert_eq!(got.len(), expected.len());
    let mut reads: Vec<(String, Verdict)> = expected
        .iter()
        .zip(got)
        .map(|((name, want), (_, got))| {
            let verdict = match got {
                Ok(got) if got == *want => Verdict::Right,
                Ok(got) => Verdict::Wrong(difference(want, &got)),
                Err(e) if e.kind() == ErrorKind::Corrupt => Verdict::Corrupt(chain(&e)),
                Err(e) => Verdict::Other(e.kind(), chain(&e)),
            };
            (name.clone(), verdict)
        })
        .collect();
    let verify = match store.verify(&mut |_| {}).await {
        Ok(report) if report.is_clean() => Verified::Clean,
        Ok(report) => Verified::Problems(report.problems.iter().map(ToString::to_string).collect()),
        Err(e) if e.kind() == ErrorKind::Unsupported => Verified::Unsupported,
        Err(e) if e.kind() == ErrorKind::Corrupt => Verified::Corrupt(chain(&e)),
        Err(e) => Verified::Failed(e.kind(), chain(&e)),
    };
    let closed = match store.close().await {
        Ok(()) => Verdict::Right,
        Err(e) if e.kind() == ErrorKind::Corrupt => Verdict::Corrupt(chain(&e)),
        Err(e) => Verdict::Other(e.kind(), chain(&e)),
    };
    reads.push(("close".to_owned(), closed));
    Outcome { open: Ok(()), reads, verify }
}

/// Runs [`examine`] as its own task, so that a panic is caught and reported as one.
async fn examine_task<P>(
    provider: P,
    app: String,
    keys: &Arc<Keys>,
    expected: &Arc<Expected>,
) -> Result<Outcome, String>
where
    P: Provider + 'static,
    P::Store: BulkStore,
{
    tokio::spawn(examine(provider, app, Arc::clone(keys), Arc::clone(expected))).await.map_err(|e| {
        if e.is_panic() {
            let payload = e.into_panic();
            payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a panic".to_owned())
        } else {
            format!("the task failed: {e}")
        }
    })
}

/// What a provider's reads guarantee under damage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reads {
    /// Every read is right or an error: the target for every provider.
    NeverWrong,
    /// Reads may miss a record whose index columns were changed or whose row or page was lost
    /// (a known gap of the SQL dialects, docs/integrity.md#what-a-read-cannot-see); verify must
    /// still report every such damage. The `*_reads_are_never_wrong` tests hold these providers
    /// to the target and fail today.
    MayMissRecordsVerifySees,
}

/// The counts a provider's run reports.
#[derive(Debug, Default)]
struct Tally {
    provider: String,
    damages: usize,
    detected_at_open: usize,
    detected_at_read: usize,
    detected_by_verify: usize,
    verify_unavailable: usize,
    harmless: usize,
    silently_wrong: usize,
    other_errors: usize,
    /// Damages that reads saw (corrupt or wrong) while an available verify reported clean.
    verify_missed: usize,
    /// Open errors that do not name the damaged file.
    open_unnamed: usize,
    /// Open errors of another kind than `Corrupt` (still detected; reported for the kinds).
    open_not_corrupt: usize,
    panics: usize,
    /// Every silently wrong read, other error, verify miss, unnamed open error and panic.
    findings: Vec<String>,
    /// One line per damage.
    lines: Vec<String>,
    started: Option<Instant>,
}

impl Tally {
    fn new(provider: &str) -> Self {
        Self { provider: provider.to_owned(), started: Some(Instant::now()), ..Self::default() }
    }

    /// Counts one damage's outcome. `file` is the name an open error must contain, if any.
    fn add(&mut self, damage: &str, outcome: Result<Outcome, String>, file: Option<&str>) {
        self.damages += 1;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(panic) => {
                self.panics += 1;
                self.findings.push(format!("PANIC [{damage}]: {panic}"));
                self.lines.push(format!("{damage}: PANIC"));
                return;
            }
        };
        if let Err((kind, text)) = &outcome.open {
            self.detected_at_open += 1;
            if *kind != ErrorKind::Corrupt {
                self.open_not_corrupt += 1;
            }
            if let Some(file) = file.filter(|f| !text.contains(f)) {
                self.open_unnamed += 1;
                self.findings.push(format!("OPEN ERROR NOT NAMING {file} [{damage}]: {kind:?}: {text}"));
            }
            self.lines.push(format!("{damage}: open failed ({kind:?}): {}", truncate(text, 160)));
            return;
        }
        let mut corrupt = 0;
        let mut wrong = 0;
        let mut other = 0;
        let mut first_corrupt = None;
        for (read, verdict) in &outcome.reads {
            match verdict {
                Verdict::Right => {}
                Verdict::Corrupt(text) => {
                    corrupt += 1;
                    first_corrupt.get_or_insert_with(|| format!("{read}: {}", truncate(text, 160)));
                }
                Verdict::Wrong(what) => {
                    wrong += 1;
                    self.findings.push(format!("SILENTLY WRONG [{damage}] {read}: {what}"));
                }
                Verdict::Other(kind, text) => {
                    other += 1;
                    self.findings.push(format!("OTHER ERROR [{damage}] {read}: {kind:?}: {text}"));
                }
            }
        }
        let verify = match &outcome.verify {
            Verified::Clean => "verify clean".to_owned(),
            Verified::Problems(problems) => {
                format!("verify: {} problem(s), first: {}", problems.len(), truncate(&problems[0], 160))
            }
            Verified::Corrupt(text) => format!("verify failed Corrupt: {}", truncate(text, 160)),
            Verified::Unsupported => "verify not available".to_owned(),
            Verified::Failed(kind, text) => {
                other += 1;
                self.findings.push(format!("OTHER ERROR [{damage}] verify: {kind:?}: {text}"));
                format!("verify failed {kind:?}")
            }
            Verified::NotRun => unreachable!("the store opened"),
        };
        let verify_saw = matches!(outcome.verify, Verified::Problems(_) | Verified::Corrupt(_));
        if verify_saw {
            self.detected_by_verify += 1;
        }
        if matches!(outcome.verify, Verified::Unsupported) {
            self.verify_unavailable += 1;
        }
        if corrupt > 0 {
            self.detected_at_read += 1;
        }
        if wrong > 0 {
            self.silently_wrong += 1;
        }
        if other > 0 {
            self.other_errors += 1;
        }
        if corrupt + wrong > 0 && matches!(outcome.verify, Verified::Clean) {
            self.verify_missed += 1;
            self.findings.push(format!(
                "VERIFY MISSED [{damage}]: {corrupt} read(s) corrupt, {wrong} read(s) wrong, but verify is clean"
            ));
        }
        if corrupt + wrong + other == 0 && !verify_saw {
            self.harmless += 1;
        }
        let reads = format!(
            "{} reads: {} right, {corrupt} corrupt, {wrong} WRONG, {other} other",
            outcome.reads.len(),
            outcome.reads.len() - corrupt - wrong - other
        );
        let first = first_corrupt.map(|c| format!(" | first corrupt: {c}")).unwrap_or_default();
        self.lines.push(format!("{damage}: opened; {reads}; {verify}{first}"));
    }

    /// The table and the findings, as printed.
    fn report(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "\n=== corruption: {} ===", self.provider);
        for line in &self.lines {
            let _ = writeln!(out, "  {line}");
        }
        let _ = writeln!(out, "\n  {:<44}{:>6}", "provider", self.provider);
        for (name, n) in [
            ("damages", self.damages),
            ("detected at open", self.detected_at_open),
            ("  of which not of kind Corrupt", self.open_not_corrupt),
            ("detected at read (some read Corrupt)", self.detected_at_read),
            ("detected by verify", self.detected_by_verify),
            ("verify not available (Unsupported)", self.verify_unavailable),
            ("harmless (nothing observable)", self.harmless),
            ("SILENTLY WRONG (some read wrong, no error)", self.silently_wrong),
            ("other errors (not Corrupt)", self.other_errors),
            ("verify missed (reads saw it, verify clean)", self.verify_missed),
            ("open errors not naming the file", self.open_unnamed),
            ("panics", self.panics),
        ] {
            let _ = writeln!(out, "  {name:<44}{n:>6}");
        }
        if let Some(started) = self.started {
            let _ = writeln!(out, "  {:<44}{:>5.1}s", "time", started.elapsed().as_secs_f64());
        }
        for finding in &self.findings {
            let _ = writeln!(out, "  {finding}");
        }
        out
    }

    /// Asserts what the provider guarantees: no panic, open errors naming the file, verify
    /// seeing every damage a read saw or got wrong, and with [`Reads::NeverWrong`] no read
    /// returning wrong data without an error.
    fn assert_ok(&self, reads: Reads) {
        println!("{}", self.report());
        assert_eq!(
            self.panics, 0,
            "{}: damage made the provider panic (see the findings above)",
            self.provider
        );
        if reads == Reads::NeverWrong {
            assert_eq!(
                self.silently_wrong, 0,
                "{}: reads returned wrong data without an error (see above)",
                self.provider
            );
        }
        assert_eq!(
            self.verify_missed, 0,
            "{}: verify reported clean stores that reads saw damaged",
            self.provider
        );
        assert_eq!(self.open_unnamed, 0, "{}: open errors that do not name the damaged file", self.provider);
    }
}

fn truncate(text: &str, n: usize) -> String {
    if text.chars().count() <= n { text.to_owned() } else { text.chars().take(n).collect::<String>() + "…" }
}

/// Reads the pristine store: the reference. Every read must succeed, verify must be clean (or
/// unavailable), and the content must equal the memory provider's for the same workload.
async fn reference<P>(provider: &P, app: &str, keys: &Keys, memory: Option<&Expected>) -> Expected
where
    P: Provider,
    P::Store: BulkStore,
{
    let store = provider.open(app).await.expect("open the pristine store");
    let expected: Expected = read_all(&store, keys)
        .await
        .into_iter()
        .map(|(name, value)| {
            let value = value.unwrap_or_else(|e| panic!("pristine store: {name}: {}", chain(&e)));
            (name, value)
        })
        .collect();
    match store.verify(&mut |_| {}).await {
        Ok(report) => {
            assert!(report.is_clean(), "pristine store does not verify clean: {:?}", report.problems);
        }
        Err(e) => assert_eq!(e.kind(), ErrorKind::Unsupported, "verifying the pristine store: {}", chain(&e)),
    }
    store.close().await.expect("close the pristine store");
    if let Some(memory) = memory {
        for ((name, want), (_, got)) in memory.iter().zip(&expected) {
            assert!(want == got, "pristine store differs from memory: {name}: {}", difference(want, got));
        }
    }
    // Sanity: the workload is what the module docs say.
    let Some((_, Value::Offset(next))) = expected.first() else { panic!("next_event_offset first") };
    assert_eq!(*next, (BATCHES * 8) as u64);
    expected
}

/// The memory provider's reading of the workload: what every provider must store.
async fn memory_reference(batches: &[Batch], keys: &Keys) -> Expected {
    let provider = vellum::connect("memory:").unwrap();
    write_workload(&provider, APP, batches).await;
    reference(&provider, APP, keys, None).await
}

// ---------------------------------------------------------------------------------------------
// File damage (redb, SQLite)
// ---------------------------------------------------------------------------------------------

/// One damage to a closed file.
#[derive(Debug, Clone, Copy)]
enum FileDamage {
    /// XOR the byte at this position with the mask.
    Flip(u64, u8),
    /// Cut the file to this length.
    Truncate(u64),
}

impl std::fmt::Display for FileDamage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Flip(at, mask) => write!(f, "flip byte {at} ^{mask:02x}"),
            Self::Truncate(len) => write!(f, "truncate to {len} bytes"),
        }
    }
}

/// ~70 flips (header region, evenly spaced, seeded pseudo-random, tail) and 6 truncations of a
/// file of `len` bytes; deterministic.
fn file_damages(len: u64) -> Vec<FileDamage> {
    const MASKS: [u8; 5] = [0xff, 0x01, 0x80, 0x5a, 0x10];
    let mut positions: Vec<u64> = vec![0, 3, 16, 28, 40, 64, 92, 100, 200, 1000, 4096 + 8, 8192 + 100];
    positions.extend((1..32).map(|i| i * len / 32 + 17));
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for _ in 0..20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        positions.push(x % len);
    }
    positions.extend([len - 1, len - 8, len - 512, len.saturating_sub(4096) + 12]);
    positions.retain(|p| *p < len);
    positions.sort_unstable();
    positions.dedup();
    let mut damages: Vec<FileDamage> =
        positions.iter().enumerate().map(|(i, p)| FileDamage::Flip(*p, MASKS[i % MASKS.len()])).collect();
    damages.extend([0, 100, 4096, len / 2, len - 4096, len - 1].map(FileDamage::Truncate));
    damages
}

fn apply_file_damage(file: &Path, damage: FileDamage) {
    match damage {
        FileDamage::Flip(at, mask) => {
            let mut bytes = std::fs::read(file).unwrap();
            bytes[at as usize] ^= mask;
            std::fs::write(file, bytes).unwrap();
        }
        FileDamage::Truncate(len) => {
            std::fs::OpenOptions::new().write(true).open(file).unwrap().set_len(len).unwrap();
        }
    }
}

/// Damages copies of the closed, pristine `file` one at a time; `provider(dir)` opens the copy
/// in `dir` (under the same file name).
async fn file_campaign<P>(
    name: &str,
    file: &Path,
    keys: &Arc<Keys>,
    expected: &Arc<Expected>,
    provider: impl Fn(&Path) -> P,
) -> Tally
where
    P: Provider + 'static,
    P::Store: BulkStore,
{
    let file_name = file.file_name().unwrap().to_str().unwrap().to_owned();
    let len = std::fs::metadata(file).unwrap().len();
    // A store must leave everything in the one file when closed (SQLite: no WAL left behind).
    for sidecar in ["-wal", "-journal"] {
        let path = PathBuf::from(format!("{}{sidecar}", file.display()));
        if let Ok(meta) = std::fs::metadata(&path) {
            assert_eq!(meta.len(), 0, "{} is left after close", path.display());
        }
    }
    let mut tally = Tally::new(name);
    tally.lines.push(format!("pristine file {file_name}: {len} bytes"));
    for damage in file_damages(len) {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join(&file_name);
        std::fs::copy(file, &copy).unwrap();
        apply_file_damage(&copy, damage);
        let outcome = examine_task(provider(dir.path()), APP.to_owned(), keys, expected).await;
        tally.add(&damage.to_string(), outcome, Some(&file_name));
    }
    tally
}

/// Waits (up to 10 s) until SQLite's `-wal` file is gone or empty: the last connection
/// checkpoints it when it closes, which may finish just after `close` returned.
async fn wait_for_checkpoint(db: &Path) {
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0) && Instant::now() < deadline {
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn redb_campaign(integrity_check: bool) -> Tally {
    let (batches, keys) = workload();
    let keys = Arc::new(keys);
    let memory = memory_reference(&batches, &keys).await;
    let dir = tempfile::tempdir().unwrap();
    let make = move |dir: &Path| vellum::redb::RedbProvider::new(dir).with_integrity_check(integrity_check);
    write_workload(&make(dir.path()), APP, &batches).await;
    let expected = Arc::new(reference(&make(dir.path()), APP, &keys, Some(&memory)).await);
    let file = make(dir.path()).file_path(APP);
    let name = if integrity_check { "redb (integrity_check=true)" } else { "redb" };
    file_campaign(name, &file, &keys, &expected, make).await
}

/// redb opened with its page-checksum check on open (`integrity_check=true`): every damage must
/// be refused at open, or read right or `Corrupt`.
#[tokio::test]
async fn redb_with_integrity_check() {
    redb_campaign(true).await.assert_ok(Reads::NeverWrong);
}

/// redb opened as by default (no whole-file check on open).
#[tokio::test]
async fn redb() {
    redb_campaign(false).await.assert_ok(Reads::NeverWrong);
}

#[tokio::test]
async fn sqlite() {
    sqlite_campaign().await.assert_ok(Reads::MayMissRecordsVerifySees);
}

#[tokio::test]
#[ignore = "known gap: a damaged SQLite b-tree page can lose rows that key lookups then read as absent (docs/integrity.md)"]
async fn sqlite_reads_are_never_wrong() {
    sqlite_campaign().await.assert_ok(Reads::NeverWrong);
}

async fn sqlite_campaign() -> Tally {
    use vellum_sql::sqlite::SqliteProvider;
    let (batches, keys) = workload();
    let keys = Arc::new(keys);
    let memory = memory_reference(&batches, &keys).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("vellum.db");
    let make = |dir: &Path| SqliteProvider::new(dir.join("vellum.db")).expect("a SQLite provider");
    write_workload(&make(dir.path()), APP, &batches).await;
    wait_for_checkpoint(&db).await;
    let expected = Arc::new(reference(&make(dir.path()), APP, &keys, Some(&memory)).await);
    wait_for_checkpoint(&db).await;
    file_campaign("sqlite", &db, &keys, &expected, make).await
}

// ---------------------------------------------------------------------------------------------
// SQL damage (PostgreSQL, MySQL)
// ---------------------------------------------------------------------------------------------

/// How a server dialect writes the damage statements.
#[derive(Debug, Clone, Copy)]
enum Dialect {
    Postgres,
    Mysql,
}

impl Dialect {
    /// `column` with its byte at 0-based `index` (from the end when negative) flipped (XOR 0xff).
    fn flip(self, column: &str, index: i64) -> String {
        match (self, index >= 0) {
            (Self::Postgres, true) => {
                format!("set_byte({column}, {index}, get_byte({column}, {index}) # 255)")
            }
            (Self::Postgres, false) => {
                let at = format!("length({column}) - {}", -index);
                format!("set_byte({column}, {at}, get_byte({column}, {at}) # 255)")
            }
            (Self::Mysql, true) => {
                let pos = index + 1;
                format!("INSERT({column}, {pos}, 1, CHAR(ASCII(SUBSTRING({column}, {pos}, 1)) ^ 255))")
            }
            (Self::Mysql, false) => {
                let pos = format!("LENGTH({column}) + 1 - {}", -index);
                format!("INSERT({column}, {pos}, 1, CHAR(ASCII(SUBSTRING({column}, {pos}, 1)) ^ 255))")
            }
        }
    }

    /// `column` without its last byte.
    fn shorten(self, column: &str) -> String {
        match self {
            Self::Postgres => format!("substring({column} from 1 for length({column}) - 1)"),
            Self::Mysql => format!("SUBSTRING({column}, 1, LENGTH({column}) - 1)"),
        }
    }
}

/// The damages made with SQL to application `app`'s rows; `t` prefixes table names.
fn sql_damages(d: Dialect, t: &str, app: &str) -> Vec<(&'static str, Vec<String>)> {
    let ev = format!("{t}vellum_event");
    let q = format!("{t}vellum_queue");
    let w = format!("app_key = '{app}'");
    let upd =
        |table: &str, set: String, cond: &str| vec![format!("UPDATE {table} SET {set} WHERE {w} AND {cond}")];
    vec![
        ("event envelope: byte 5 flipped (offset 10)", upd(&ev, format!("envelope = {}", d.flip("envelope", 5)), "event_offset = 10")),
        ("event envelope: byte 60 flipped (offset 11)", upd(&ev, format!("envelope = {}", d.flip("envelope", 60)), "event_offset = 11")),
        ("event envelope: last byte flipped (offset 200)", upd(&ev, format!("envelope = {}", d.flip("envelope", -1)), "event_offset = 200")),
        ("event envelope: last byte cut (offset 33)", upd(&ev, format!("envelope = {}", d.shorten("envelope")), "event_offset = 33")),
        ("event envelope: replaced by another event's (offset 40 gets 41's)", vec![format!(
            "UPDATE {ev} SET envelope = (SELECT envelope FROM (SELECT envelope FROM {ev} WHERE {w} AND event_offset = 41) AS x) \
             WHERE {w} AND event_offset = 40"
        )]),
        ("event checksum column changed (offset 50)", upd(&ev, "checksum = checksum + 1".to_owned(), "event_offset = 50")),
        (
            "event portable_name changed (offset 17)",
            upd(&ev, "portable_name = CASE WHEN portable_name = 'OrderShipped' THEN 'OrderPlaced' ELSE 'OrderShipped' END".to_owned(), "event_offset = 17"),
        ),
        ("event portable_name changed to an unknown type (offset 18)", upd(&ev, "portable_name = 'NoSuchType'".to_owned(), "event_offset = 18")),
        (
            "event handler_key changed (offset 19)",
            upd(&ev, "handler_key = CASE WHEN handler_key = 'payments' THEN 'orders' ELSE 'payments' END".to_owned(), "event_offset = 19"),
        ),
        ("event instance_id changed (offset 22, o-3 -> o-1)", upd(&ev, "instance_id = 'o-1'".to_owned(), "event_offset = 22")),
        ("event event_offset moved past the end (offset 20 -> 1020)", upd(&ev, "event_offset = 1020".to_owned(), "event_offset = 20")),
        ("event event_offset moved to the next free offset (last -> next_offset)", upd(&ev, "event_offset = 240".to_owned(), "event_offset = 239")),
        (
            "events 30 and 31 swapped offsets",
            vec![
                format!("UPDATE {ev} SET event_offset = 100030 WHERE {w} AND event_offset = 30"),
                format!("UPDATE {ev} SET event_offset = 30 WHERE {w} AND event_offset = 31"),
                format!("UPDATE {ev} SET event_offset = 31 WHERE {w} AND event_offset = 100030"),
            ],
        ),
        ("event message_id column changed (offset 21)", upd(&ev, "message_id = 'evt-xx-x'".to_owned(), "event_offset = 21")),
        ("event row deleted (offset 100)", vec![format!("DELETE FROM {ev} WHERE {w} AND event_offset = 100")]),
        ("last event row deleted (offset 239)", vec![format!("DELETE FROM {ev} WHERE {w} AND event_offset = 239")]),
        ("queue envelope: byte 7 flipped (cmd-28-0)", upd(&q, format!("envelope = {}", d.flip("envelope", 7)), "message_id = 'cmd-28-0'")),
        ("queue envelope: last byte flipped (timeout tmo-12)", upd(&q, format!("envelope = {}", d.flip("envelope", -1)), "message_id = 'tmo-12'")),
        ("queue next_attempt_at changed by 1 µs (cmd-10-0)", upd(&q, "next_attempt_at = next_attempt_at + 1".to_owned(), "message_id = 'cmd-10-0'")),
        ("queue next_attempt_at moved to the front (cmd-29-0)", upd(&q, "next_attempt_at = 0".to_owned(), "message_id = 'cmd-29-0'")),
        ("queue sequence changed (cmd-27-1)", upd(&q, "sequence = sequence + 1000".to_owned(), "message_id = 'cmd-27-1'")),
        ("queue revision changed (cmd-26-1)", upd(&q, "revision = revision + 1".to_owned(), "message_id = 'cmd-26-1'")),
        ("queue failure_count changed (cmd-20-0)", upd(&q, "failure_count = failure_count + 1".to_owned(), "message_id = 'cmd-20-0'")),
        ("queue timeout owner changed (tmo-12: f-4 -> f-5)", upd(&q, "timeout_instance_id = 'f-5'".to_owned(), "message_id = 'tmo-12'")),
        ("queue timeout owner cleared (tmo-15)", upd(&q, "timeout_handler_key = NULL, timeout_instance_id = NULL".to_owned(), "message_id = 'tmo-15'")),
        ("process data: byte 3 flipped (f-1)", upd(&format!("{t}vellum_process"), format!("data = {}", d.flip("data", 3)), "instance_id = 'f-1'")),
        ("process media_type changed (f-2)", upd(&format!("{t}vellum_process"), "media_type = 'text/plain'".to_owned(), "instance_id = 'f-2'")),
        ("process revision changed (f-4)", upd(&format!("{t}vellum_process"), "revision = revision + 1".to_owned(), "instance_id = 'f-4'")),
        ("aggregate revision changed (orders/o-1)", upd(&format!("{t}vellum_aggregate"), "revision = revision + 1".to_owned(), "instance_id = 'o-1'")),
        ("aggregate last_event_id changed (stock/s-2)", upd(&format!("{t}vellum_aggregate"), "last_event_id = 'evt-00-0'".to_owned(), "instance_id = 's-2'")),
        ("consumer offset changed (upstream-2)", upd(&format!("{t}vellum_offset"), "next_offset = next_offset + 1".to_owned(), "source_app_key = 'upstream-2'")),
        ("vellum_app next_offset changed (+1)", upd(&format!("{t}vellum_app"), "next_offset = next_offset + 1".to_owned(), "1 = 1")),
        ("vellum_app next_offset changed (-1)", upd(&format!("{t}vellum_app"), "next_offset = next_offset - 1".to_owned(), "1 = 1")),
        ("vellum_app next_sequence changed (-5)", upd(&format!("{t}vellum_app"), "next_sequence = next_sequence - 5".to_owned(), "1 = 1")),
    ]
}

/// Copies the reference store `APP` into a fresh application per damage, damages the copy with
/// `exec`, and examines it.
async fn sql_campaign<P, F, Fut>(name: &str, provider: P, d: Dialect, t: &str, exec: F) -> Tally
where
    P: Provider + Clone + 'static,
    P::Store: BulkStore,
    F: Fn(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let (batches, keys) = workload();
    let keys = Arc::new(keys);
    let memory = memory_reference(&batches, &keys).await;
    write_workload(&provider, APP, &batches).await;
    let expected = Arc::new(reference(&provider, APP, &keys, Some(&memory)).await);
    let mut tally = Tally::new(name);
    let source = provider.open(APP).await.expect("open the reference store");
    for (i, (damage, _)) in sql_damages(d, t, "").into_iter().enumerate() {
        let app = format!("{APP}-d{i:02}");
        let copy = provider.open(&app).await.expect("open a copy");
        vellum::bulk::copy(&source, &copy, 100, |_| {}).await.expect("copy the reference store");
        copy.close().await.expect("close the copy");
        let (_, statements) = sql_damages(d, t, &app).swap_remove(i);
        for statement in statements {
            exec(statement).await;
        }
        let outcome = examine_task(provider.clone(), app, &keys, &expected).await;
        // A server store is no file: its errors need not name one.
        tally.add(damage, outcome, None);
    }
    source.close().await.expect("close the reference store");
    tally
}

#[tokio::test]
#[cfg_attr(not(vellum_postgres), ignore = "VELLUM_POSTGRES_URL is not set")]
async fn postgres() {
    postgres_campaign().await.assert_ok(Reads::MayMissRecordsVerifySees);
}

#[tokio::test]
#[ignore = "known gap: a row whose index columns were changed by SQL, or deleted, is missed by reads through the index (docs/integrity.md)"]
async fn postgres_reads_are_never_wrong() {
    postgres_campaign().await.assert_ok(Reads::NeverWrong);
}

async fn postgres_campaign() -> Tally {
    use std::hash::{BuildHasher as _, RandomState};
    use vellum_sql::postgres::{PostgresOptions, PostgresProvider};

    let url = std::env::var("VELLUM_POSTGRES_URL").expect("VELLUM_POSTGRES_URL is set");
    let schema = format!(
        "vellum_corrupt_{:016x}",
        RandomState::new().hash_one((std::process::id(), SystemTime::now()))
    );
    let provider = PostgresProvider::from_url_with(&url, PostgresOptions::new().schema(&schema)).unwrap();
    let pool = provider.pool().clone();
    let exec = |sql: String| {
        let pool = pool.clone();
        async move {
            let client = pool.get().await.expect("a connection");
            let changed = client.execute(sql.as_str(), &[]).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
            assert!(changed > 0, "the damage changed no row: {sql}");
        }
    };
    let tally =
        sql_campaign("postgres", provider.clone(), Dialect::Postgres, &format!("{schema}."), exec).await;
    provider.drop_schema().await.expect("drop the test schema");
    tally
}

#[tokio::test]
#[cfg_attr(not(vellum_mysql), ignore = "VELLUM_MYSQL_URL is not set")]
async fn mysql() {
    mysql_campaign().await.assert_ok(Reads::MayMissRecordsVerifySees);
}

#[tokio::test]
#[ignore = "known gap: a row whose index columns were changed by SQL, or deleted, is missed by reads through the index (docs/integrity.md)"]
async fn mysql_reads_are_never_wrong() {
    mysql_campaign().await.assert_ok(Reads::NeverWrong);
}

async fn mysql_campaign() -> Tally {
    use mysql_async::prelude::Queryable as _;
    use mysql_async::{Conn, Opts, OptsBuilder};
    use std::hash::{BuildHasher as _, RandomState};
    use vellum_sql::mysql::MysqlProvider;

    let url = std::env::var("VELLUM_MYSQL_URL").expect("VELLUM_MYSQL_URL is set");
    let base = Opts::from_url(&url).expect("VELLUM_MYSQL_URL parses");
    let db = format!(
        "vellum_corrupt_{:016x}",
        RandomState::new().hash_one((std::process::id(), SystemTime::now()))
    );
    let mut admin = Conn::new(base.clone()).await.expect("connect to VELLUM_MYSQL_URL");
    admin.query_drop(format!("CREATE DATABASE `{db}`")).await.expect("create the test database");
    let opts: Opts = OptsBuilder::from_opts(base).db_name(Some(&db)).into();
    let provider = MysqlProvider::from_opts(opts.clone());
    let exec = |sql: String| {
        let opts = opts.clone();
        async move {
            let mut conn = Conn::new(opts).await.expect("a connection");
            conn.query_drop(&sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
            assert!(conn.affected_rows() > 0, "the damage changed no row: {sql}");
            let _ = conn.disconnect().await;
        }
    };
    let tally = sql_campaign("mysql", provider.clone(), Dialect::Mysql, "", exec).await;
    let _ = provider.disconnect().await;
    admin.query_drop(format!("DROP DATABASE `{db}`")).await.expect("drop the test database");
    let _ = admin.disconnect().await;
    tally
}
