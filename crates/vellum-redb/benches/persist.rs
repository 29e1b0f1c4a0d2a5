//! Write benchmark: one-event engine batches (`SaveEvent` + `SaveAggregateMetaData`)
//! through the provider with 1, 16 and 64 concurrent writers, and the same writes as a
//! hand-written raw redb loop (one durable transaction per batch), in one run.
//!
//! `cargo bench -p vellum-redb --bench persist`; `VELLUM_BENCH_BATCHES` (default 3000) batches per
//! measurement, `VELLUM_BENCH_RUNS` (default 5) runs, `VELLUM_BENCH_WRITERS` (comma-separated
//! writer counts, default `1,16,64`), `VELLUM_BENCH_RAW=off` (skip the raw loop, e.g. under
//! `perf` or `strace`, where only the provider's writer thread is of interest); medians are
//! printed.
#![allow(clippy::unwrap_used, clippy::cast_precision_loss, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use redb::{ReadableTable, TableDefinition};
use vellum_core::{AggregateMetaData, Batch, Envelope, Identity, Operation, Persister, Provider};
use vellum_redb::{DEFAULT_CACHE_SIZE, RedbProvider};

// The provider's tables, as `layout.rs` defines them.
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const EVENT_IDS: TableDefinition<&str, u64> = TableDefinition::new("event_ids");
const EVENTS_BY_TYPE: TableDefinition<(&str, u64), ()> = TableDefinition::new("events_by_type");
const EVENTS_BY_SOURCE: TableDefinition<(&str, &str, u64), ()> = TableDefinition::new("events_by_source");
const AGGREGATES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("aggregates");

#[derive(Clone, PartialEq, prost::Message)]
struct AggregateRecord {
    #[prost(uint64, tag = "1")]
    revision: u64,
    #[prost(string, tag = "2")]
    last_event_id: String,
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn envelope(writer: usize, k: usize) -> Envelope {
    Envelope {
        message_id: format!("w{writer}-e{k}-0b6f3d2e-8d1c-4a55-9a53-6f1c2f0d9e7a"),
        causation_id: "c4a3f2d1-0000-4000-8000-000000000001".into(),
        correlation_id: "c4a3f2d1-0000-4000-8000-000000000002".into(),
        source_application: Some(Identity::new("bank", "a96fefa1-2630-467a-b756-db2e428a56fd")),
        source_handler: Some(Identity::new("account", "16c7843f-c94f-4fd1-ba80-fd59cab793ff")),
        source_instance_id: format!("account-{writer}"),
        created_at: "2026-11-26T12:00:00.123456789Z".into(),
        portable_name: "AccountCredited".into(),
        media_type: "application/json; type=\"AccountCredited\"".into(),
        data: br#"{"account_id":"acc-1","amount":1250,"currency":"EUR"}"#.to_vec(),
        ..Envelope::default()
    }
}

fn engine_batch(writer: usize, k: usize) -> Batch {
    let envelope = envelope(writer, k);
    let meta = AggregateMetaData {
        revision: k as u64,
        last_event_id: envelope.message_id.clone(),
        ..AggregateMetaData::new("16c7843f-c94f-4fd1-ba80-fd59cab793ff", format!("account-{writer}"))
    };
    Batch::from(vec![Operation::SaveEvent(envelope), Operation::SaveAggregateMetaData(meta)])
}

/// Batches per second through the provider with `writers` concurrent writers.
fn provider_rate(rt: &tokio::runtime::Runtime, batches: usize, writers: usize) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let store = Arc::new(RedbProvider::new(dir.path()).open("bench").await.unwrap());
        let per_writer = batches / writers;
        let started = Instant::now();
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    for k in 0..per_writer {
                        store.persist(engine_batch(w, k)).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let elapsed = started.elapsed();
        let transactions = store.write_transactions();
        let n = (per_writer * writers) as f64;
        vellum_core::DataStore::close(&*store).await.unwrap();
        (n / elapsed.as_secs_f64(), n / transactions.max(1) as f64)
    })
}

/// Batches per second for the same writes in a raw redb loop: one durable transaction per batch.
fn raw_rate(batches: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let db =
        redb::Builder::new().set_cache_size(DEFAULT_CACHE_SIZE).create(dir.path().join("raw.redb")).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(COUNTERS).unwrap().insert("next_offset", 0).unwrap();
    txn.commit().unwrap();
    let started = Instant::now();
    for k in 0..batches {
        let envelope = envelope(0, k);
        let txn = db.begin_write().unwrap();
        {
            let mut counters = txn.open_table(COUNTERS).unwrap();
            let mut events = txn.open_table(EVENTS).unwrap();
            let mut ids = txn.open_table(EVENT_IDS).unwrap();
            let mut by_type = txn.open_table(EVENTS_BY_TYPE).unwrap();
            let mut by_source = txn.open_table(EVENTS_BY_SOURCE).unwrap();
            let mut aggregates = txn.open_table(AGGREGATES).unwrap();
            // The same checks the engine's batch needs: a duplicate event, the aggregate revision.
            assert!(ids.get(envelope.message_id.as_str()).unwrap().is_none());
            let key = ("16c7843f-c94f-4fd1-ba80-fd59cab793ff", envelope.source_instance_id.as_str());
            let revision = aggregates
                .get(key)
                .unwrap()
                .map_or(0, |v| AggregateRecord::decode(v.value()).unwrap().revision);
            assert_eq!(revision, k as u64);
            let offset = counters.get("next_offset").unwrap().unwrap().value();
            events.insert(offset, envelope.encode_to_vec().as_slice()).unwrap();
            ids.insert(envelope.message_id.as_str(), offset).unwrap();
            by_type.insert((envelope.portable_name.as_str(), offset), ()).unwrap();
            by_source.insert((key.0, key.1, offset), ()).unwrap();
            let record =
                AggregateRecord { revision: revision + 1, last_event_id: envelope.message_id.clone() };
            aggregates.insert(key, record.encode_to_vec().as_slice()).unwrap();
            counters.insert("next_offset", offset + 1).unwrap();
        }
        txn.commit().unwrap();
    }
    batches as f64 / started.elapsed().as_secs_f64()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let batches = env_or("VELLUM_BENCH_BATCHES", 3000);
    let runs = env_or("VELLUM_BENCH_RUNS", 5);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    println!("persist benchmark: {batches} one-event engine batches per measurement, median of {runs} runs");
    let mut raw = Vec::new();
    let mut by_writers: Vec<(usize, Vec<f64>, Vec<f64>)> = std::env::var("VELLUM_BENCH_WRITERS")
        .unwrap_or_else(|_| "1,16,64".to_owned())
        .split(',')
        .filter_map(|w| w.trim().parse().ok())
        .map(|w| (w, Vec::new(), Vec::new()))
        .collect();
    let raw_loop = !std::env::var("VELLUM_BENCH_RAW").is_ok_and(|v| v == "off");
    for run in 0..runs {
        // Interleave the workloads so that machine noise hits them alike.
        if raw_loop {
            raw.push(raw_rate(batches));
        }
        for (writers, rates, groups) in &mut by_writers {
            let (rate, group) = provider_rate(&rt, batches, *writers);
            rates.push(rate);
            groups.push(group);
        }
        eprintln!("run {run} done");
        std::thread::sleep(Duration::from_millis(100));
    }
    let raw = if raw.is_empty() { f64::NAN } else { median(raw) };
    println!("raw redb loop, 1 writer:   {raw:>9.0} batches/s");
    let mut medians = Vec::new();
    for (writers, rates, groups) in by_writers {
        let (rate, group) = (median(rates), median(groups));
        println!(
            "provider, {writers:>2} writers:      {rate:>9.0} batches/s  ({group:.1} batches per transaction)"
        );
        medians.push((writers, rate));
    }
    let rate = |w: usize| medians.iter().find(|(writers, _)| *writers == w).map_or(f64::NAN, |(_, r)| *r);
    println!("ratio 64 writers / 1 writer:    {:.1} (target >= 15)", rate(64) / rate(1));
    // The raw loop commits in one phase (one sync); the provider's file is shared with readers,
    // so redb commits it in two (ARCHITECTURE.md, "redb files in the single-writer sharing mode").
    println!("ratio provider / raw, 1 writer: {:.2} (two syncs per commit against one)", rate(1) / raw);
}
