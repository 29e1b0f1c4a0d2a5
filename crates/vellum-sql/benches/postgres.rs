//! PostgreSQL benchmark: one-event engine batches (`SaveEvent` + `SaveAggregateMetaData` of a
//! new aggregate) with 1 and 16 concurrent writers through the provider, in the same run as two
//! hand-written raw `tokio-postgres` loops doing the same writes, one connection per writer:
//!
//! - (a) one transaction per batch taking its offset from a per-app counter row (dense offsets,
//!   the naive design): `BEGIN` + `UPDATE … RETURNING` pipelined, then the event insert, the
//!   aggregate insert and `COMMIT` pipelined (two round trips);
//! - (b) the same without the counter row, offsets from a `BIGSERIAL` (not dense): `BEGIN`, both
//!   inserts and `COMMIT` pipelined in one round trip.
//!
//! Every mode speaks plain TCP: the raw loops connect without TLS, so the provider's URL gets
//! `sslmode=disable` (whatever the given URL says). Under vellum's default `prefer` the
//! provider would encrypt where the raw loops do not, which at one writer cost it about 0.025 ms
//! of client and server CPU per batch: a transport difference, not the engine's.
//!
//! Each run alternates the three modes in short slices (`VELLUM_BENCH_SLICES`, default 6) so
//! that load changes on a shared machine hit every mode alike. Prints the median batches/s of
//! several runs per mode, and the ratios provider/(a) and provider/(b) as the median of each
//! run's own ratio. Environment: `VELLUM_POSTGRES_URL` (required), `VELLUM_BENCH_SECS` (seconds
//! per run, default 3), `VELLUM_BENCH_RUNS` (runs per mode, default 5), `VELLUM_BENCH_WRITERS`
//! (comma-separated writer counts, default `1,16`), `VELLUM_BENCH_RT=current` (a current-thread
//! runtime instead of the multi-threaded one).
//!
//! Run: `cargo bench -p vellum-sql --bench postgres`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls, Statement};
use vellum_core::{AggregateMetaData, Batch, DataStore, Envelope, Identity, Operation, Persister, Provider};
use vellum_sql::postgres::{PostgresOptions, PostgresProvider, PostgresStore, drop_schema};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn envelope(id: &str, instance: &str) -> Envelope {
    Envelope {
        message_id: id.to_owned(),
        causation_id: id.to_owned(),
        correlation_id: id.to_owned(),
        source_application: Some(Identity::new("bench-app", "bench-app-key")),
        source_handler: Some(Identity::new("bench-aggregate", "bench-aggregate-key")),
        source_instance_id: instance.to_owned(),
        created_at: "2026-11-26T10:11:12.123456789Z".to_owned(),
        description: "bench event".to_owned(),
        portable_name: "BenchEvent".to_owned(),
        media_type: "application/json".to_owned(),
        data: br#"{"amount":100,"currency":"EUR","note":"benchmark payload"}"#.to_vec(),
        ..Envelope::default()
    }
}

static IDS: AtomicU64 = AtomicU64::new(0);

fn next_id(prefix: &str) -> String {
    format!("{prefix}-{}", IDS.fetch_add(1, Ordering::Relaxed))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Provider,
    CounterRow,
    Sequence,
}

/// `url` with `sslmode=disable`, replacing any `sslmode` it has: the transport of the raw loops.
fn plain(url: &str) -> String {
    if !url.contains("://") {
        // A `key=value` connection string: a later key wins.
        return format!("{url} sslmode=disable");
    }
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut params: Vec<&str> =
        query.split('&').filter(|p| !p.is_empty() && !p.starts_with("sslmode=")).collect();
    params.push("sslmode=disable");
    format!("{base}?{}", params.join("&"))
}

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(connection);
    client
}

/// Runs `f` on `writers` tasks (each returns its batch count); returns the total batches and
/// the seconds taken.
async fn timed<F, Fut>(writers: usize, f: F) -> (u64, f64)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = u64> + Send + 'static,
{
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers).map(|w| tokio::spawn(f(w))).collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("writer task");
    }
    (total, started.elapsed().as_secs_f64())
}

async fn run_provider(store: &Arc<PostgresStore>, writers: usize, duration: Duration) -> (u64, f64) {
    let deadline = Instant::now() + duration;
    timed(writers, |_| {
        let store = Arc::clone(store);
        async move {
            let mut n = 0;
            while Instant::now() < deadline {
                let id = next_id("p");
                let ops = vec![
                    Operation::SaveEvent(envelope(&id, &id)),
                    Operation::SaveAggregateMetaData(AggregateMetaData::new(
                        "bench-aggregate-key",
                        id.clone(),
                    )),
                ];
                store.persist(Batch::from(ops)).await.expect("persist");
                n += 1;
            }
            n
        }
    })
    .await
}

type Pending<'a> = Pin<Box<dyn Future<Output = Result<u64, tokio_postgres::Error>> + Send + 'a>>;

/// Sends every statement at once (in order: `try_join_all` polls small sets in order).
async fn pipeline(steps: Vec<Pending<'_>>) -> Vec<u64> {
    futures_util::future::try_join_all(steps).await.expect("raw statement")
}

struct Raw {
    client: Client,
    counter: Statement,
    insert_event: Statement,
    insert_event_seq: Statement,
    insert_aggregate: Statement,
}

impl Raw {
    async fn new(url: &str, schema: &str) -> Self {
        let client = connect(url).await;
        let counter = client
            .prepare(&format!(
                "UPDATE {schema}.raw_app SET next_offset = next_offset + 1 WHERE app_key = $1 \
                 RETURNING next_offset - 1"
            ))
            .await
            .expect("prepare a raw statement");
        let insert_event = client
            .prepare(&format!(
                "INSERT INTO {schema}.raw_event (app_key, event_offset, message_id, portable_name, \
                 handler_key, instance_id, envelope) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            ))
            .await
            .expect("prepare a raw statement");
        let insert_event_seq = client
            .prepare(&format!(
                "INSERT INTO {schema}.raw_event_seq (app_key, message_id, portable_name, handler_key, \
                 instance_id, envelope) VALUES ($1, $2, $3, $4, $5, $6)"
            ))
            .await
            .expect("prepare a raw statement");
        let insert_aggregate = client
            .prepare(&format!(
                "INSERT INTO {schema}.raw_aggregate (app_key, handler_key, instance_id, revision, last_event_id) \
                 VALUES ($1, $2, $3, 1, '') ON CONFLICT DO NOTHING"
            ))
            .await
            .expect("prepare a raw statement");
        Self { client, counter, insert_event, insert_event_seq, insert_aggregate }
    }

    /// (a): dense offsets from the counter row; two round trips per batch.
    async fn batch_counter(&self, app: &str) {
        let c = &self.client;
        let id = next_id("a");
        let env = envelope(&id, &id);
        let bytes = env.to_bytes();
        let handler = env.source_handler_key();
        let offset: i64 = {
            // `try_join` polls its first future first: BEGIN goes out before the UPDATE.
            let ((), row) = futures_util::future::try_join(c.batch_execute("BEGIN"), async {
                c.query_one(&self.counter, &[&app]).await
            })
            .await
            .expect("BEGIN + counter");
            row.get(0)
        };
        pipeline(vec![
            Box::pin(async {
                c.execute(
                    &self.insert_event,
                    &[
                        &app,
                        &offset,
                        &env.message_id,
                        &env.portable_name,
                        &handler,
                        &env.source_instance_id,
                        &bytes,
                    ],
                )
                .await
            }),
            Box::pin(async { c.execute(&self.insert_aggregate, &[&app, &handler, &id]).await }),
            Box::pin(async { c.batch_execute("COMMIT").await.map(|()| 0) }),
        ])
        .await;
    }

    /// (b): offsets from a sequence; one round trip per batch.
    async fn batch_sequence(&self, app: &str) {
        let c = &self.client;
        let id = next_id("b");
        let env = envelope(&id, &id);
        let bytes = env.to_bytes();
        let handler = env.source_handler_key();
        pipeline(vec![
            Box::pin(async { c.batch_execute("BEGIN").await.map(|()| 0) }),
            Box::pin(async {
                c.execute(
                    &self.insert_event_seq,
                    &[&app, &env.message_id, &env.portable_name, &handler, &env.source_instance_id, &bytes],
                )
                .await
            }),
            Box::pin(async { c.execute(&self.insert_aggregate, &[&app, &handler, &id]).await }),
            Box::pin(async { c.batch_execute("COMMIT").await.map(|()| 0) }),
        ])
        .await;
    }
}

/// Raw writers: one connection each, and the app key of their counter row.
async fn raw_writers(url: &str, schema: &str, writers: usize) -> (Vec<Arc<Raw>>, String) {
    let app = next_id("raw-app");
    let setup = connect(url).await;
    setup
        .execute(&format!("INSERT INTO {schema}.raw_app (app_key, next_offset) VALUES ($1, 0)"), &[&app])
        .await
        .expect("create the raw app's counter row");
    let mut raws = Vec::new();
    for _ in 0..writers {
        raws.push(Arc::new(Raw::new(url, schema).await));
    }
    (raws, app)
}

async fn run_raw(raws: &[Arc<Raw>], app: &str, mode: Mode, duration: Duration) -> (u64, f64) {
    let deadline = Instant::now() + duration;
    timed(raws.len(), |w| {
        let raw = Arc::clone(&raws[w]);
        let app = app.to_owned();
        async move {
            let mut n = 0;
            while Instant::now() < deadline {
                match mode {
                    Mode::CounterRow => raw.batch_counter(&app).await,
                    _ => raw.batch_sequence(&app).await,
                }
                n += 1;
            }
            n
        }
    })
    .await
}

async fn create_raw_tables(client: &Client, schema: &str) {
    let key = r#"TEXT COLLATE "C" NOT NULL"#;
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE {schema}.raw_app (app_key {key} PRIMARY KEY, next_offset BIGINT NOT NULL);
             CREATE TABLE {schema}.raw_event (app_key {key}, event_offset BIGINT NOT NULL, message_id {key},
               portable_name {key}, handler_key {key}, instance_id {key}, envelope BYTEA NOT NULL,
               PRIMARY KEY (app_key, event_offset), UNIQUE (app_key, message_id));
             CREATE INDEX ON {schema}.raw_event (app_key, portable_name, event_offset);
             CREATE INDEX ON {schema}.raw_event (app_key, handler_key, instance_id, event_offset);
             CREATE TABLE {schema}.raw_event_seq (app_key {key}, event_offset BIGSERIAL, message_id {key},
               portable_name {key}, handler_key {key}, instance_id {key}, envelope BYTEA NOT NULL,
               PRIMARY KEY (app_key, event_offset), UNIQUE (app_key, message_id));
             CREATE INDEX ON {schema}.raw_event_seq (app_key, portable_name, event_offset);
             CREATE INDEX ON {schema}.raw_event_seq (app_key, handler_key, instance_id, event_offset);
             CREATE TABLE {schema}.raw_aggregate (app_key {key}, handler_key {key}, instance_id {key},
               revision BIGINT NOT NULL, last_event_id {key}, PRIMARY KEY (app_key, handler_key, instance_id));"
        ))
        .await
        .expect("create the raw tables");
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let Ok(url) = std::env::var("VELLUM_POSTGRES_URL") else {
        eprintln!("VELLUM_POSTGRES_URL is not set; skipping the PostgreSQL benchmark");
        return;
    };
    let url = plain(&url);
    let duration = Duration::from_secs_f64(env_or("VELLUM_BENCH_SECS", 3.0));
    let runs: usize = env_or("VELLUM_BENCH_RUNS", 5);
    let slices: u32 = env_or("VELLUM_BENCH_SLICES", 6).max(1);
    let slice = duration / slices;
    let writer_counts: Vec<usize> = std::env::var("VELLUM_BENCH_WRITERS")
        .unwrap_or_else(|_| "1,16".to_owned())
        .split(',')
        .filter_map(|w| w.trim().parse().ok())
        .collect();
    // A current-thread runtime makes task hand-offs nearly free: comparing the two tells
    // client-side hand-off cost from server work.
    let mut builder = if std::env::var("VELLUM_BENCH_RT").is_ok_and(|v| v == "current") {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let rt = builder.enable_all().build().expect("runtime");
    rt.block_on(async {
        let schema = format!("vellum_bench_{}", std::process::id());
        let admin = connect(&url).await;
        drop_schema(&admin, &schema).await.expect("drop an old bench schema");
        let provider = PostgresProvider::from_url_with(&url, PostgresOptions::new().schema(&schema))
            .expect("build the provider");
        provider.create_schema().await.expect("create schema");
        create_raw_tables(&admin, &schema).await;
        println!(
            "PostgreSQL one-event batches (SaveEvent + SaveAggregateMetaData), {runs} runs x {:.1}s per mode \
             (in {slices} alternating slices), plain TCP, medians",
            duration.as_secs_f64()
        );
        for &writers in &writer_counts {
            let store = Arc::new(provider.open(&next_id("app")).await.expect("open"));
            let (raws, raw_app) = raw_writers(&url, &schema, writers).await;
            let mut rates = [Vec::new(), Vec::new(), Vec::new()];
            for _ in 0..runs {
                // Modes alternate in short slices, so load changes on a shared machine hit all alike.
                let mut sums = [(0, 0.0); 3];
                for _ in 0..slices {
                    for (i, mode) in [Mode::Provider, Mode::CounterRow, Mode::Sequence].into_iter().enumerate() {
                        let (n, secs) = match mode {
                            Mode::Provider => run_provider(&store, writers, slice).await,
                            _ => run_raw(&raws, &raw_app, mode, slice).await,
                        };
                        sums[i].0 += n;
                        sums[i].1 += secs;
                    }
                }
                for (i, (n, secs)) in sums.into_iter().enumerate() {
                    #[allow(clippy::cast_precision_loss)] // counts far below 2^52
                    rates[i].push(n as f64 / secs);
                }
            }
            store.close().await.expect("close");
            let all = |r: &[f64]| r.iter().map(|v| format!("{v:.0}")).collect::<Vec<_>>().join(" ");
            println!(
                "writers={writers:>2}  runs: provider [{}]  (a) [{}]  (b) [{}]",
                all(&rates[0]),
                all(&rates[1]),
                all(&rates[2])
            );
            // Each run's own ratio, then their median: the modes of one run share its load,
            // so this is steadier than a ratio of medians taken over different runs.
            let paired = |raw: &[f64]| {
                let mut ratios: Vec<f64> = rates[0].iter().zip(raw).map(|(p, r)| p / r).collect();
                median(&mut ratios)
            };
            let (pa, pb) = (paired(&rates[1]), paired(&rates[2]));
            let [p, a, b] = rates.map(|mut r| median(&mut r));
            println!(
                "writers={writers:>2}  provider {p:>8.0}/s  (a) counter row {a:>8.0}/s  (b) sequence {b:>8.0}/s  \
                 provider/(a) {pa:.2}  provider/(b) {pb:.2}"
            );
        }
        drop_schema(&admin, &schema).await.expect("drop the bench schema");
    });
}
