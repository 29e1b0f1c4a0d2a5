//! The differential property test: random sequences of batches applied both to a provider and to
//! [`Model`], with identical results and identical reads required after every step.
//!
//! Keys come from a small universe so that batches collide: revisions are mostly the current
//! ones (so batches succeed and state grows) and sometimes stale (conflicts); events reuse IDs
//! (duplicates); ops share entities (invalid batches); queue times tie and straddle seconds; and
//! the engine-shaped batch of a process ending while handling its own timeout
//! (docs/batches.md#process-removal-and-timeouts) is generated explicitly. Each case opens a
//! fresh application key on one provider, relying on per-application isolation
//! (docs/events.md#isolation-per-application).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use vellum_core::{
    Batch, DataStore, Envelope, Error, Identity, Operation, Packet, PersistResult, Persister, Provider,
    QueueMessage,
};

use crate::fixtures::{aggregate, drain, process};
use crate::harness::{Backend, Skip, runtime};
use crate::model::{Model, ModelError};

#[doc(hidden)]
#[macro_export]
macro_rules! __differential_tests {
    ($make:expr $(, $(#[$attr:meta])*)?) => {
        $($(#[$attr])*)?
        #[test]
        fn differential_against_model() {
            $crate::differential::run("differential_against_model", $make);
        }
    };
}

const HANDLERS: [&str; 3] = ["h1", "h2", ""];
const INSTANCES: [&str; 3] = ["a", "b", ""];
const IDS: [&str; 7] = ["m0", "m1", "m2", "m3", "m4", "m5", "é'\";%"];
const TYPES: [&str; 3] = ["T1", "T2", "T3"];
const APPS: [&str; 3] = ["s1", "s2", ""];

/// A revision as the generator chooses it: mostly the stored one, sometimes another.
#[derive(Debug, Clone, Copy)]
enum Rev {
    Current,
    Other(u64),
}

#[derive(Debug, Clone)]
enum OpSpec {
    SaveAggregate { h: usize, i: usize, rev: Rev, last: usize },
    SaveProcess { h: usize, i: usize, rev: Rev, packet: usize },
    RemoveProcess { h: usize, i: usize, rev: Rev },
    SaveEvent { id: usize, ty: usize, h: usize, i: usize, site: bool },
    SaveQueue { id: usize, rev: Rev, at: usize, failures: u64, owner: Option<(usize, usize)> },
    RemoveQueue { id: usize, rev: Rev },
    SaveOffset { app: usize, current: Rev, next: u64 },
}

#[derive(Debug, Clone)]
enum Step {
    Batch(Vec<OpSpec>),
    /// `[RemoveProcessInstance(P), RemoveQueueMessage(T)]` for a timeout T of P
    /// (docs/batches.md#process-removal-and-timeouts).
    EngineEnd {
        h: usize,
        i: usize,
        timeout: usize,
        reverse: bool,
    },
}

fn rev() -> impl Strategy<Value = Rev> {
    prop_oneof![12 => Just(Rev::Current), 1 => (0u64..4).prop_map(Rev::Other)]
}

fn op() -> impl Strategy<Value = OpSpec> {
    let (h, i, id) = (0..HANDLERS.len(), 0..INSTANCES.len(), 0..IDS.len());
    let save_aggregate = (h.clone(), i.clone(), rev(), 0..3usize)
        .prop_map(|(h, i, rev, last)| OpSpec::SaveAggregate { h, i, rev, last });
    let save_process = (h.clone(), i.clone(), rev(), 0..3usize)
        .prop_map(|(h, i, rev, packet)| OpSpec::SaveProcess { h, i, rev, packet });
    let remove_process =
        (h.clone(), i.clone(), rev()).prop_map(|(h, i, rev)| OpSpec::RemoveProcess { h, i, rev });
    let save_event = (id.clone(), 0..TYPES.len(), h.clone(), i.clone(), any::<bool>())
        .prop_map(|(id, ty, h, i, site)| OpSpec::SaveEvent { id, ty, h, i, site });
    let save_queue = (id.clone(), rev(), 0..TIMES.len(), 0u64..3, proptest::option::of((h, i)))
        .prop_map(|(id, rev, at, failures, owner)| OpSpec::SaveQueue { id, rev, at, failures, owner });
    let remove_queue = (id, rev()).prop_map(|(id, rev)| OpSpec::RemoveQueue { id, rev });
    let save_offset = (0..APPS.len(), rev(), 0u64..5).prop_map(|(app, current, next)| OpSpec::SaveOffset {
        app,
        current,
        next,
    });
    prop_oneof![
        3 => save_aggregate,
        3 => save_process,
        1 => remove_process,
        4 => save_event,
        5 => save_queue,
        1 => remove_queue,
        2 => save_offset,
    ]
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        1 => Just(Step::Batch(Vec::new())),
        12 => proptest::collection::vec(op(), 1..4).prop_map(Step::Batch),
        1 => (0..HANDLERS.len(), 0..INSTANCES.len(), 0..IDS.len(), any::<bool>())
            .prop_map(|(h, i, timeout, reverse)| Step::EngineEnd { h, i, timeout, reverse }),
    ];
    proptest::collection::vec(step, 1..16)
}

/// Queue times: ties, whole vs fractional seconds, sub-microsecond parts, before 1970.
const TIMES: [(i64, u32); 7] = [
    (1_767_225_600, 0),
    (1_767_225_600, 0),
    (1_767_225_600, 500_000_000),
    (1_767_225_601, 0),
    (1_767_225_600, 120_000_999),
    (1_767_222_000, 0),
    (-86_400, 250),
];

fn time(index: usize) -> SystemTime {
    let (secs, nanos) = TIMES[index];
    let whole = Duration::from_secs(secs.unsigned_abs());
    let base = if secs >= 0 { UNIX_EPOCH + whole } else { UNIX_EPOCH - whole };
    base + Duration::from_nanos(u64::from(nanos))
}

fn envelope(id: &str, portable_name: &str, handler: Option<(usize, usize)>) -> Envelope {
    Envelope {
        message_id: id.to_owned(),
        causation_id: "<cause>".into(),
        correlation_id: "<correlation>".into(),
        source_application: Some(Identity::new("<app>", "<app-key>")),
        source_handler: handler.map(|(h, _)| Identity::new("<handler>", HANDLERS[h])),
        source_instance_id: handler.map_or("", |(_, i)| INSTANCES[i]).to_owned(),
        portable_name: portable_name.to_owned(),
        media_type: format!("application/json; type=\"{portable_name}\""),
        data: id.as_bytes().to_vec(),
        ..Envelope::default()
    }
}

fn resolve(rev: Rev, current: u64) -> u64 {
    match rev {
        Rev::Current => current,
        Rev::Other(n) => n,
    }
}

fn build(spec: &OpSpec, model: &Model) -> Operation {
    match *spec {
        OpSpec::SaveAggregate { h, i, rev, last } => {
            let current = model.load_aggregate_meta_data(HANDLERS[h], INSTANCES[i]).revision;
            let mut md = aggregate(HANDLERS[h], INSTANCES[i], resolve(rev, current));
            ["", "e1", "e2"][last].clone_into(&mut md.last_event_id);
            Operation::SaveAggregateMetaData(md)
        }
        OpSpec::SaveProcess { h, i, rev, packet } => {
            let current = model.load_process_instance(HANDLERS[h], INSTANCES[i]).revision;
            let packets =
                [Packet::default(), Packet::new("a/b", b"x".to_vec()), Packet::new("", vec![0, 255])];
            let packet = packets[packet].clone();
            Operation::SaveProcessInstance(process(HANDLERS[h], INSTANCES[i], resolve(rev, current), packet))
        }
        OpSpec::RemoveProcess { h, i, rev } => {
            let current = model.load_process_instance(HANDLERS[h], INSTANCES[i]).revision;
            Operation::RemoveProcessInstance(process(
                HANDLERS[h],
                INSTANCES[i],
                resolve(rev, current),
                Packet::default(),
            ))
        }
        OpSpec::SaveEvent { id, ty, h, i, site } => {
            let mut env = envelope(IDS[id], TYPES[ty], (h < 2).then_some((h, i)));
            env.source_site = site.then(|| Identity::new("<site>", "<site-key>"));
            Operation::SaveEvent(env)
        }
        OpSpec::SaveQueue { id, rev, at, failures, owner } => {
            let current = model.queue_revision(IDS[id]);
            let mut env = envelope(IDS[id], "Command", owner);
            if owner.is_some() {
                env.scheduled_for = "2026-01-01T00:00:00Z".into();
            }
            // An update's envelope differs from the stored one; providers must ignore it.
            env.causation_id = format!("<cause-{current}>");
            Operation::SaveQueueMessage(QueueMessage {
                revision: resolve(rev, current),
                failure_count: failures,
                next_attempt_at: time(at),
                envelope: env,
            })
        }
        OpSpec::RemoveQueue { id, rev } => {
            let current = model.queue_revision(IDS[id]);
            Operation::RemoveQueueMessage(QueueMessage {
                revision: resolve(rev, current),
                failure_count: 0,
                next_attempt_at: UNIX_EPOCH,
                envelope: envelope(IDS[id], "Command", None),
            })
        }
        OpSpec::SaveOffset { app, current, next } => Operation::SaveOffset {
            application_key: APPS[app].to_owned(),
            current_offset: resolve(current, model.load_offset(APPS[app])),
            next_offset: next,
        },
    }
}

fn batch_for(step: &Step, model: &Model) -> Batch {
    match step {
        Step::Batch(specs) => specs.iter().map(|s| build(s, model)).collect(),
        Step::EngineEnd { h, i, timeout, reverse } => {
            // Prefer a process that exists, so the batch can succeed.
            let existing: Vec<(usize, usize)> = (0..HANDLERS.len())
                .flat_map(|h| (0..INSTANCES.len()).map(move |i| (h, i)))
                .filter(|&(h, i)| model.load_process_instance(HANDLERS[h], INSTANCES[i]).revision != 0)
                .collect();
            let (h, i) = if existing.is_empty() { (*h, *i) } else { existing[(h * 3 + i) % existing.len()] };
            let remove_process = build(&OpSpec::RemoveProcess { h, i, rev: Rev::Current }, model);
            // Prefer a timeout the process really owns, so the cascade and the explicit removal meet.
            let owned: Vec<usize> = (0..IDS.len())
                .filter(|&id| {
                    model.queued().get(IDS[id]).is_some_and(|m| {
                        m.envelope.is_timeout()
                            && m.envelope.source_handler_key() == HANDLERS[h]
                            && m.envelope.source_instance_id == INSTANCES[i]
                    })
                })
                .collect();
            let id = if owned.is_empty() { *timeout } else { owned[*timeout % owned.len()] };
            let remove_timeout = build(&OpSpec::RemoveQueue { id, rev: Rev::Current }, model);
            if *reverse { vec![remove_timeout, remove_process] } else { vec![remove_process, remove_timeout] }
                .into()
        }
    }
}

fn same_outcome(
    batch: &Batch,
    got: &Result<PersistResult, Error>,
    want: &Result<PersistResult, ModelError>,
) -> bool {
    match (got, want) {
        (Ok(a), Ok(b)) => a == b,
        (Err(Error::InvalidBatch(_)), Err(ModelError::InvalidBatch)) => true,
        (Err(Error::Conflict { index, op }), Err(ModelError::Conflict { index: want })) => {
            index == want && **op == batch.ops()[*want]
        }
        (Err(Error::DuplicateEvent { message_id }), Err(ModelError::DuplicateEvent(want))) => {
            message_id == want
        }
        _ => false,
    }
}

macro_rules! ensure_eq {
    ($got:expr, $want:expr, $($what:tt)+) => {{
        let (got, want) = ($got, $want);
        if got != want {
            return Err(TestCaseError::fail(format!("{}: provider {:?} != model {:?}", format!($($what)+), got, want)));
        }
    }};
}

/// Every repository read over the whole key universe, compared with the model.
async fn compare_reads<S: DataStore>(store: &S, model: &Model) -> Result<(), TestCaseError> {
    let read = |e: Error| TestCaseError::fail(format!("read failed: {e}"));
    for hk in HANDLERS {
        for id in INSTANCES {
            ensure_eq!(
                store.load_aggregate_meta_data(hk, id).await.map_err(read)?,
                model.load_aggregate_meta_data(hk, id),
                "aggregate {hk:?}/{id:?}"
            );
            ensure_eq!(
                store.load_process_instance(hk, id).await.map_err(read)?,
                model.load_process_instance(hk, id),
                "process {hk:?}/{id:?}"
            );
            let events = drain(store.load_events_by_source(hk, id).await.map_err(read)?).await;
            ensure_eq!(events, model.load_events_by_source(hk, id), "events by source {hk:?}/{id:?}");
        }
    }
    let next = store.next_event_offset().await.map_err(read)?;
    ensure_eq!(next, model.next_event_offset(), "next_event_offset");
    for types in [&TYPES[..1], &TYPES[1..2], &TYPES[..2], &TYPES[..]] {
        for min in [0, 1, next.saturating_sub(1), next + 3] {
            let events = drain(store.load_events_by_type(types, min).await.map_err(read)?).await;
            ensure_eq!(events, model.load_events_by_type(types, min), "events by type {types:?} from {min}");
        }
    }
    for app in APPS {
        ensure_eq!(store.load_offset(app).await.map_err(read)?, model.load_offset(app), "offset {app:?}");
    }
    for n in [0, 1, 2, 5, 100] {
        ensure_eq!(
            store.load_queue_messages(n).await.map_err(read)?,
            model.load_queue_messages(n),
            "queue head {n}"
        );
    }
    Ok(())
}

async fn check_case<P: Provider>(provider: &P, app_key: &str, steps: &[Step]) -> Result<(), TestCaseError> {
    let store = provider.open(app_key).await.map_err(|e| TestCaseError::fail(format!("open: {e}")))?;
    let mut model = Model::new();
    for (n, step) in steps.iter().enumerate() {
        let batch = batch_for(step, &model);
        let want = model.persist(&batch);
        let got = store.persist(batch.clone()).await;
        if !same_outcome(&batch, &got, &want) {
            return Err(TestCaseError::fail(format!(
                "step {n}: {batch:?}\nprovider: {got:?}\nmodel: {want:?}"
            )));
        }
        compare_reads(&store, &model)
            .await
            .map_err(|e| TestCaseError::fail(format!("after step {n}: {e}")))?;
    }
    store.close().await.map_err(|e| TestCaseError::fail(format!("close: {e}")))?;
    Ok(())
}

/// The number of cases: `PROPTEST_CASES` if set, else 256.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
}

/// Runs the differential test against the backend `make` builds.
pub fn run<B, M, MF>(name: &str, make: M)
where
    B: Backend,
    M: FnOnce() -> MF,
    MF: Future<Output = Result<B, Skip>>,
{
    let rt = runtime();
    let backend = match rt.block_on(make()) {
        Ok(backend) => backend,
        Err(Skip(reason)) => {
            eprintln!("skipped {name}: {reason}");
            return;
        }
    };
    let provider = rt.block_on(backend.provider());
    let counter = AtomicU64::new(0);
    let config = Config { cases: cases(), failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new(config);
    let outcome = runner.run(&steps(), |steps| {
        let app_key = format!("differential-{}", counter.fetch_add(1, Ordering::Relaxed));
        rt.block_on(check_case(&provider, &app_key, &steps))
    });
    drop(provider);
    rt.block_on(backend.teardown());
    if let Err(e) = outcome {
        panic!("{name}: {e}");
    }
}
