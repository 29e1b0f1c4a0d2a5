//! Read benchmark over a store holding `VELLUM_BENCH_EVENTS` events (default
//! 1,000,000) in 10 types and as many queued messages: `load_all_events` from offset 0 (the
//! whole log, a scan), `load_events_by_type` for 1 type of 10 from offset 0 (and its first
//! page), `load_events_by_source` for one instance,
//! `load_queue_messages(100)`, `next_event_offset`, and opening the store.
//!
//! `cargo bench -p vellum-redb --bench reads`; `VELLUM_BENCH_RUNS` (default 5) runs; medians.
#![allow(clippy::unwrap_used, clippy::cast_precision_loss, missing_docs)]

use std::time::{Duration, Instant, UNIX_EPOCH};

use vellum_core::{
    Batch, DataStore, Envelope, EventRepository, Identity, Operation, Persister, Provider, QueueMessage,
    QueueRepository,
};
use vellum_redb::RedbProvider;

const TYPES: u64 = 10;
const INSTANCES: u64 = 1000;
const PER_BATCH: u64 = 1000;
const KEY: &str = "a96fefa1-2630-467a-b756-db2e428a56fd";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn envelope(id: String, k: u64) -> Envelope {
    let portable_name = format!("Type{}", k % TYPES);
    Envelope {
        message_id: id,
        causation_id: "c4a3f2d1-0000-4000-8000-000000000001".into(),
        correlation_id: "c4a3f2d1-0000-4000-8000-000000000002".into(),
        source_application: Some(Identity::new("bank", KEY)),
        source_handler: Some(Identity::new("account", "16c7843f-c94f-4fd1-ba80-fd59cab793ff")),
        source_instance_id: format!("account-{}", k % INSTANCES),
        created_at: "2026-11-26T12:00:00.123456789Z".into(),
        media_type: format!("application/json; type=\"{portable_name}\""),
        portable_name,
        data: br#"{"account_id":"acc-1","amount":1250,"currency":"EUR"}"#.to_vec(),
        ..Envelope::default()
    }
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn time<T>(runs: u64, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut times = Vec::new();
    let mut last = None;
    for _ in 0..runs {
        let started = Instant::now();
        last = Some(f());
        times.push(started.elapsed());
    }
    (median(times), last.unwrap())
}

fn main() {
    let events = env_or("VELLUM_BENCH_EVENTS", 1_000_000);
    let runs = env_or("VELLUM_BENCH_RUNS", 5);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let provider = RedbProvider::new(dir.path());
    println!(
        "read benchmark: {events} events in {TYPES} types and {events} queued messages, median of {runs} runs"
    );

    let started = Instant::now();
    rt.block_on(async {
        let store = provider.open(KEY).await.unwrap();
        for first in (0..events).step_by(PER_BATCH as usize) {
            let mut ops = Vec::with_capacity(2 * PER_BATCH as usize);
            for k in first..(first + PER_BATCH).min(events) {
                ops.push(Operation::SaveEvent(envelope(format!("event-{k}"), k)));
                ops.push(Operation::SaveQueueMessage(QueueMessage {
                    revision: 0,
                    failure_count: 0,
                    // Spread over ~11 days, not in insertion order.
                    next_attempt_at: UNIX_EPOCH + Duration::from_secs(1_800_000_000 + (k * 7919) % 1_000_000),
                    envelope: envelope(format!("command-{k}"), k),
                }));
            }
            store.persist(Batch::from(ops)).await.unwrap();
        }
        store.close().await.unwrap();
    });
    let size = std::fs::metadata(provider.file_path(KEY)).unwrap().len();
    println!("built in {:.1} s; file {:.0} MiB", started.elapsed().as_secs_f64(), size as f64 / 1_048_576.0);

    let (open, ()) = time(runs, || {
        rt.block_on(async { provider.open(KEY).await.unwrap().close().await.unwrap() });
    });
    println!("open + close of the store:              {:>10.2} ms", open.as_secs_f64() * 1e3);

    rt.block_on(async {
        let store = provider.open(KEY).await.unwrap();
        let (t, n) = time(runs, || futures_block(store.next_event_offset()).unwrap());
        assert_eq!(n, events);
        println!("next_event_offset:                      {:>10.3} ms", t.as_secs_f64() * 1e3);
        let (t, head) = time(runs, || futures_block(store.load_queue_messages(100)).unwrap());
        assert_eq!(head.len(), 100.min(events as usize));
        println!("load_queue_messages(100), {events} queued: {:>10.3} ms", t.as_secs_f64() * 1e3);
        scan(&store, runs, events);
        let (t, first) = time(runs, || {
            futures_block(async {
                store.load_events_by_type(&["Type3"], 0).await.unwrap().next().await.unwrap()
            })
        });
        assert!(first.is_some());
        println!("load_events_by_type, first event:       {:>10.3} ms", t.as_secs_f64() * 1e3);
        let (t, n) = time(runs, || {
            futures_block(async {
                store.load_events_by_type(&["Type3"], 0).await.unwrap().collect().await.unwrap().len()
            })
        });
        assert_eq!(n as u64, events / TYPES);
        println!(
            "load_events_by_type, 1 type of 10:     {:>10.1} ms for {n} events ({:.2} µs/event)",
            t.as_secs_f64() * 1e3,
            t.as_secs_f64() * 1e6 / n as f64
        );
        let (t, n) = time(runs, || {
            futures_block(async {
                let cursor = store.load_events_by_source("16c7843f-c94f-4fd1-ba80-fd59cab793ff", "account-7");
                cursor.await.unwrap().collect().await.unwrap().len()
            })
        });
        assert_eq!(n as u64, events / INSTANCES);
        println!(
            "load_events_by_source, 1 instance:     {:>10.2} ms for {n} events ({:.2} µs/event)",
            t.as_secs_f64() * 1e3,
            t.as_secs_f64() * 1e6 / n as f64
        );
        store.close().await.unwrap();
    });

    // The by-type read touches a page per matching event across a file larger than the default
    // page cache; with a cache that holds the file it is mostly cache hits.
    let big = RedbProvider::new(dir.path()).with_cache_size(2 << 30);
    rt.block_on(async {
        let store = big.open(KEY).await.unwrap();
        let (t, n) = time(runs, || {
            futures_block(async {
                store.load_events_by_type(&["Type3"], 0).await.unwrap().collect().await.unwrap().len()
            })
        });
        println!(
            "load_events_by_type, 2 GiB cache:      {:>10.1} ms for {n} events ({:.2} µs/event)",
            t.as_secs_f64() * 1e3,
            t.as_secs_f64() * 1e6 / n as f64
        );
        store.close().await.unwrap();
    });
}

/// The whole log from offset 0 through one cursor (without a runtime: no read-ahead).
fn scan(store: &vellum_redb::RedbStore, runs: u64, events: u64) {
    let (t, n) = time(runs, || {
        futures_block(async {
            let mut cursor = store.load_all_events(0).await.unwrap();
            let mut n = 0u64;
            while cursor.next().await.unwrap().is_some() {
                n += 1;
            }
            n
        })
    });
    assert_eq!(n, events);
    println!(
        "load_all_events, the whole log:         {:>10.1} ms for {n} events ({:.0} events/s)",
        t.as_secs_f64() * 1e3,
        n as f64 / t.as_secs_f64()
    );
}

/// Runs a future that never waits on anything but the store (reads complete inline).
fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}
