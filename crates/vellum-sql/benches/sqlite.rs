//! SQLite benchmark: one-event engine batches (`SaveEvent` + `SaveAggregateMetaData` of a
//! distinct aggregate) through the provider with 1 and 16 concurrent writers, against two
//! hand-written rusqlite loops doing the same writes with one `BEGIN IMMEDIATE` transaction per
//! batch (WAL, `synchronous=FULL`):
//!
//! - (a) offsets from a per-app counter row (dense: the naive design);
//! - (b) offsets from an `INTEGER PRIMARY KEY AUTOINCREMENT` column (not dense), no counter row.
//!
//! Each run alternates the three in short slices (`VELLUM_BENCH_SLICES`, default 6), so that
//! load changes on a shared machine and a disk whose sync time drifts hit every mode alike.
//! A slice counts the batches committed before it ends and divides by its length, so a raw
//! writer still asleep in SQLite's busy handler (up to 100 ms) does not stretch it. Stores and
//! connections stay open for the whole run.
//!
//! Prints the median throughput of several runs, and the ratios provider/(a), provider/(b) as
//! the median of each run's own ratio. Environment: `VELLUM_BENCH_MILLIS` (length of one run per
//! mode, default 1500), `VELLUM_BENCH_RUNS` (runs per configuration, default 5),
//! `VELLUM_BENCH_WRITERS` (comma-separated, default `1,16`), `VELLUM_BENCH_VERBOSE` (set: also
//! print every run), `VELLUM_BENCH_DIR` (where the databases go, default the system temporary
//! directory; a tmpfs such as `/dev/shm` takes `fsync` out of the picture and shows the
//! provider's CPU overhead alone).
//!
//! Run: `cargo bench -p vellum-sql --bench sqlite`.
#![allow(clippy::unwrap_used, clippy::cast_precision_loss, missing_docs)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rusqlite::{Connection, TransactionBehavior, params};
use vellum_core::{
    AggregateMetaData, AggregateRepository, Batch, DataStore, Envelope, Identity, Operation, Persister,
    Provider,
};
use vellum_sql::sqlite::{SqliteProvider, create_schema};

const APP: &str = "bench-app";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn envelope(id: &str) -> Envelope {
    Envelope {
        message_id: id.to_owned(),
        causation_id: id.to_owned(),
        correlation_id: id.to_owned(),
        source_application: Some(Identity::new("bench", APP)),
        source_handler: Some(Identity::new("aggregate", "handler-key")),
        source_instance_id: format!("instance-{id}"),
        created_at: "2026-11-26T10:11:12.123456789Z".to_owned(),
        portable_name: "BenchEvent".to_owned(),
        media_type: "application/json; type=\"BenchEvent\"".to_owned(),
        data: br#"{"amount":100,"currency":"EUR","note":"one event of a benchmark batch"}"#.to_vec(),
        ..Envelope::default()
    }
}

/// Batch `i` of writer `w`: one event and the meta-data of a new aggregate.
fn batch(w: usize, i: u64) -> Batch {
    let id = format!("w{w}-{i}");
    let env = envelope(&id);
    Batch::from(vec![
        Operation::SaveAggregateMetaData(AggregateMetaData {
            handler_key: "handler-key".into(),
            instance_id: env.source_instance_id.clone(),
            revision: 0,
            last_event_id: id.clone(),
        }),
        Operation::SaveEvent(env),
    ])
}

/// The provider's side of a run: a runtime and a store kept open across slices.
struct ProviderLoop {
    rt: tokio::runtime::Runtime,
    store: Arc<vellum_sql::sqlite::SqliteStore>,
}

impl ProviderLoop {
    fn open(dir: &Path) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let store = rt.block_on(async {
            let provider = SqliteProvider::new(dir.join("provider.db")).unwrap();
            Arc::new(provider.open(APP).await.unwrap())
        });
        Self { rt, store }
    }

    /// Batches `writers` concurrent tasks committed within `length`, and its seconds; `tag`
    /// keeps the batches' IDs apart from earlier slices'.
    fn slice(&self, tag: usize, writers: usize, length: Duration) -> (u64, f64) {
        self.rt.block_on(async {
            let done = Arc::new(AtomicU64::new(0));
            let start = Instant::now();
            let deadline = start + length;
            let tasks: Vec<_> = (0..writers)
                .map(|w| {
                    let store = Arc::clone(&self.store);
                    let done = Arc::clone(&done);
                    tokio::spawn(async move {
                        let mut i = 0;
                        while Instant::now() < deadline {
                            store.persist(batch(w + tag * 1000, i)).await.unwrap();
                            i += 1;
                            if Instant::now() <= deadline {
                                done.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            (done.load(Ordering::Relaxed), length.as_secs_f64())
        })
    }

    fn close(self) {
        self.rt.block_on(self.store.close()).unwrap();
    }
}

fn raw_connection(path: &Path) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(30)).unwrap();
    let _: String = conn.pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0)).unwrap();
    conn.pragma_update(None, "synchronous", "FULL").unwrap();
    conn
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Raw {
    /// Offsets from the per-app counter row (dense).
    Counter,
    /// Offsets from an autoincrement key (not dense).
    AutoIncrement,
}

fn raw_setup(path: &Path) {
    let mut conn = raw_connection(path);
    create_schema(&mut conn).unwrap();
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS raw_event (
            event_offset  INTEGER PRIMARY KEY AUTOINCREMENT,
            app_key       TEXT NOT NULL,
            message_id    TEXT NOT NULL,
            portable_name TEXT NOT NULL,
            handler_key   TEXT NOT NULL,
            instance_id   TEXT NOT NULL,
            envelope      BLOB NOT NULL,
            UNIQUE (app_key, message_id)
        ) STRICT;
        CREATE INDEX IF NOT EXISTS raw_event_by_type ON raw_event (app_key, portable_name, event_offset);
        CREATE INDEX IF NOT EXISTS raw_event_by_source
            ON raw_event (app_key, handler_key, instance_id, event_offset);
        INSERT INTO vellum_app (app_key, next_offset, next_sequence, checksum) VALUES ('bench-app', 0, 0, 0)
            ON CONFLICT DO NOTHING;",
    )
    .unwrap();
}

/// One raw transaction: (a) counter row + event + aggregate, or (b) event + aggregate.
fn raw_batch(conn: &mut Connection, kind: Raw, id: &str) {
    let env = envelope(id);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).unwrap();
    match kind {
        Raw::Counter => {
            let offset: i64 = tx
                .prepare_cached(
                    "UPDATE vellum_app SET next_offset = next_offset + 1 WHERE app_key = ?1 \
                     RETURNING next_offset - 1",
                )
                .unwrap()
                .query_row([APP], |r| r.get(0))
                .unwrap();
            tx.prepare_cached(
                // The naive loop computes no record checksums (vellum's do): it stores 0.
                "INSERT INTO vellum_event \
                 (app_key, event_offset, message_id, portable_name, handler_key, instance_id, envelope, checksum) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0)",
            )
            .unwrap()
            .execute(params![
                APP,
                offset,
                env.message_id,
                env.portable_name,
                env.source_handler_key(),
                env.source_instance_id,
                env.to_bytes()
            ])
            .unwrap();
        }
        Raw::AutoIncrement => {
            tx.prepare_cached(
                "INSERT INTO raw_event \
                 (app_key, message_id, portable_name, handler_key, instance_id, envelope) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .unwrap()
            .execute(params![
                APP,
                env.message_id,
                env.portable_name,
                env.source_handler_key(),
                env.source_instance_id,
                env.to_bytes()
            ])
            .unwrap();
        }
    }
    tx.prepare_cached(
        "INSERT INTO vellum_aggregate (app_key, handler_key, instance_id, revision, last_event_id, checksum) \
         VALUES (?1, ?2, ?3, 1, ?4, 0) ON CONFLICT (app_key, handler_key, instance_id) \
         DO UPDATE SET revision = excluded.revision, last_event_id = excluded.last_event_id",
    )
    .unwrap()
    .execute(params![APP, "handler-key", env.source_instance_id, id])
    .unwrap();
    tx.commit().unwrap();
}

fn raw_path(dir: &Path, kind: Raw) -> std::path::PathBuf {
    dir.join(if kind == Raw::Counter { "raw-a.db" } else { "raw-b.db" })
}

/// A raw loop's connections, one per writer, kept open across slices: closing the last
/// connection of a WAL database checkpoints it, which the provider's open store never does
/// mid-run either.
struct RawLoop {
    kind: Raw,
    conns: Vec<Connection>,
}

impl RawLoop {
    fn open(dir: &Path, kind: Raw, writers: usize) -> Self {
        let path = raw_path(dir, kind);
        raw_setup(&path);
        Self { kind, conns: (0..writers).map(|_| raw_connection(&path)).collect() }
    }

    /// Batches one thread per connection committed within `length`, and its seconds.
    fn slice(&mut self, tag: usize, length: Duration) -> (u64, f64) {
        let kind = self.kind;
        let start = Instant::now();
        let deadline = start + length;
        let done: u64 = std::thread::scope(|scope| {
            let threads: Vec<_> = self
                .conns
                .iter_mut()
                .enumerate()
                .map(|(w, conn)| {
                    scope.spawn(move || {
                        let mut i = 0u64;
                        let mut committed = 0;
                        while Instant::now() < deadline {
                            raw_batch(conn, kind, &format!("w{}-{i}", w + tag * 1000));
                            i += 1;
                            if Instant::now() <= deadline {
                                committed += 1;
                            }
                        }
                        committed
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).sum()
        });
        (done, length.as_secs_f64())
    }
}

/// Why reads run inline: the mean cost of a point read through the provider versus the mean
/// cost of an empty `spawn_blocking` round trip, in microseconds.
fn read_costs(dir: &Path) -> (f64, f64) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let provider = SqliteProvider::new(dir.join("reads.db")).unwrap();
        let store = provider.open(APP).await.unwrap();
        for i in 0..100 {
            store.persist(batch(0, i)).await.unwrap();
        }
        let n = 20_000u32;
        let start = Instant::now();
        for i in 0..n {
            let id = format!("instance-w0-{}", i % 100);
            let md = store.load_aggregate_meta_data("handler-key", &id).await.unwrap();
            assert_eq!(md.revision, 1);
        }
        let read = start.elapsed().as_secs_f64() * 1e6 / f64::from(n);
        let start = Instant::now();
        for _ in 0..n {
            tokio::task::spawn_blocking(|| ()).await.unwrap();
        }
        let hop = start.elapsed().as_secs_f64() * 1e6 / f64::from(n);
        store.close().await.unwrap();
        (read, hop)
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; other arguments (filters) are ignored.
    let length = Duration::from_millis(env_or("VELLUM_BENCH_MILLIS", 1500));
    let runs: usize = env_or("VELLUM_BENCH_RUNS", 5);
    let slices: usize = env_or("VELLUM_BENCH_SLICES", 6usize).max(1);
    let slices_u32 = u32::try_from(slices).unwrap();
    let writer_counts: Vec<usize> = std::env::var("VELLUM_BENCH_WRITERS")
        .unwrap_or_else(|_| "1,16".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    println!(
        "sqlite {}: one-event engine batches, {runs} runs of {length:?} per mode (in {slices} alternating \
         slices), medians in batches/s",
        rusqlite::version()
    );
    let base = std::env::var_os("VELLUM_BENCH_DIR").map_or_else(std::env::temp_dir, std::path::PathBuf::from);
    let tempdir = || tempfile::tempdir_in(&base).unwrap();
    let dir = tempdir();
    let (read, hop) = read_costs(dir.path());
    println!(
        "point read through the provider (inline) {read:.1} µs; empty spawn_blocking round trip {hop:.1} µs"
    );
    for writers in writer_counts {
        let dir = tempdir();
        let mut raw_a = RawLoop::open(dir.path(), Raw::Counter, writers);
        let mut raw_b = RawLoop::open(dir.path(), Raw::AutoIncrement, writers);
        let provider = ProviderLoop::open(dir.path());
        let (mut p, mut a, mut b) = (Vec::new(), Vec::new(), Vec::new());
        for run in 0..runs {
            // The three alternate in short slices, rotating their order, so drifting machine
            // load and the after-effects of one loop (checkpoints, write-back) hit all alike.
            let mut sums = [(0, 0.0); 3];
            for slice in 0..slices {
                let tag = run * slices + slice;
                for k in 0..3 {
                    let mode = (tag + k) % 3;
                    let (n, secs) = match mode {
                        0 => provider.slice(tag, writers, length / slices_u32),
                        1 => raw_a.slice(tag, length / slices_u32),
                        _ => raw_b.slice(tag, length / slices_u32),
                    };
                    sums[mode].0 += n;
                    sums[mode].1 += secs;
                }
            }
            let [sp, sa, sb] = sums.map(|(n, secs)| n as f64 / secs);
            p.push(sp);
            a.push(sa);
            b.push(sb);
        }
        provider.close();
        if std::env::var_os("VELLUM_BENCH_VERBOSE").is_some() {
            let show = |v: &[f64]| v.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(" ");
            println!("  runs: provider [{}]  raw(a) [{}]  raw(b) [{}]", show(&p), show(&a), show(&b));
        }
        // Each run's own ratio, then their median: the modes of one run share its load.
        let paired = |raw: &[f64]| median(p.iter().zip(raw).map(|(p, r)| p / r).collect());
        let (pa, pb) = (paired(&a), paired(&b));
        let (p, a, b) = (median(p), median(a), median(b));
        println!(
            "writers={writers:>2}  provider {p:>9.0}  raw(a) counter row {a:>9.0}  raw(b) autoincrement {b:>9.0}  \
             provider/(a) {pa:.2}  provider/(b) {pb:.2}"
        );
    }
}
