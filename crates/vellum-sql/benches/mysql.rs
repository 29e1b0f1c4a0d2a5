//! MySQL/MariaDB write benchmark: one-event engine batches (`SaveEvent` +
//! `SaveAggregateMetaData` of a fresh aggregate) through the provider, with 1 and 16 concurrent
//! writers, against two hand-written `mysql_async` loops doing the same writes in the same run:
//!
//! - (a) one transaction per batch taking its offset from a per-app counter row
//!   (`UPDATE … SET next_offset = LAST_INSERT_ID(next_offset + 1)`): dense, the naive design;
//! - (b) the same without the counter row: offsets from `AUTO_INCREMENT`, not dense.
//!
//! `VELLUM_MYSQL_URL` names the server (the benchmark makes and drops its own database);
//! `VELLUM_BENCH_MS` (default 1500) is the length of one measurement and `VELLUM_BENCH_RUNS`
//! (default 9) how many are taken of each. The three loops take turns (in a rotating order) so
//! that drift in the machine's fsync speed hits them alike; medians are printed with the ratios
//! provider/(a) and provider/(b), both as ratios of the medians and as medians of the per-run
//! ratios. Run with `cargo bench -p vellum-sql --bench mysql`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, TxOpts, Value};
use vellum_core::{AggregateMetaData, Batch, DataStore, Envelope, Identity, Operation, Persister, Provider};
use vellum_sql::mysql::{MysqlProvider, create_schema};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn envelope(id: &str) -> Envelope {
    Envelope {
        message_id: id.to_owned(),
        causation_id: id.to_owned(),
        correlation_id: id.to_owned(),
        source_application: Some(Identity::new("bench", "5f2b8c1e-bench-app")),
        source_handler: Some(Identity::new("account", "7d1a0e3c-bench-handler")),
        source_instance_id: format!("instance-{id}"),
        created_at: "2026-11-26T13:00:00.123456789Z".to_owned(),
        portable_name: "AccountCredited".to_owned(),
        media_type: "application/json; type=AccountCredited".to_owned(),
        data: vec![b'x'; 100],
        ..Envelope::default()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Provider,
    CounterRow,
    AutoIncrement,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Self::Provider => "provider",
            Self::CounterRow => "(a) counter row",
            Self::AutoIncrement => "(b) auto-increment",
        }
    }
}

static IDS: AtomicU64 = AtomicU64::new(0);

fn next_id() -> String {
    format!("m-{}", IDS.fetch_add(1, Ordering::Relaxed))
}

/// Batches per second for one measurement.
async fn measure(kind: Kind, opts: &Opts, writers: usize, millis: u64, run: usize) -> f64 {
    let app = format!("bench-{}-{writers}-{run}", kind.label().split(' ').next().unwrap_or("x"));
    let deadline = Instant::now() + Duration::from_millis(millis);
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    match kind {
        Kind::Provider => {
            let provider = MysqlProvider::from_opts(opts.clone());
            let store = Arc::new(provider.open(&app).await.expect("open the store"));
            for _ in 0..writers {
                let store = Arc::clone(&store);
                let count = Arc::clone(&count);
                tasks.push(tokio::spawn(async move {
                    while Instant::now() < deadline {
                        let id = next_id();
                        let batch = Batch::from(vec![
                            Operation::SaveEvent(envelope(&id)),
                            Operation::SaveAggregateMetaData(AggregateMetaData {
                                last_event_id: id.clone(),
                                ..AggregateMetaData::new("7d1a0e3c-bench-handler", format!("instance-{id}"))
                            }),
                        ]);
                        store.persist(batch).await.expect("persist");
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }));
            }
            for task in tasks.drain(..) {
                task.await.expect("writer");
            }
            let elapsed = started.elapsed();
            store.close().await.expect("close");
            return rate(&count, elapsed);
        }
        Kind::CounterRow | Kind::AutoIncrement => {
            if kind == Kind::CounterRow {
                let mut conn = Conn::new(opts.clone()).await.expect("connect");
                conn.exec_drop(
                    "INSERT INTO vellum_app (app_key, next_offset, next_sequence, checksum) VALUES (?, 0, 0, 0)",
                    (app.as_bytes(),),
                )
                .await
                .expect("counter row");
                conn.disconnect().await.expect("disconnect");
            }
            for _ in 0..writers {
                let count = Arc::clone(&count);
                let opts = opts.clone();
                let app = app.clone();
                tasks.push(tokio::spawn(async move {
                    let mut conn = Conn::new(opts).await.expect("connect");
                    while Instant::now() < deadline {
                        raw_batch(&mut conn, kind, &app).await;
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    conn.disconnect().await.expect("disconnect");
                }));
            }
        }
    }
    for task in tasks {
        task.await.expect("writer");
    }
    rate(&count, started.elapsed())
}

/// One batch of a raw loop: one transaction, awaiting each statement.
async fn raw_batch(conn: &mut Conn, kind: Kind, app: &str) {
    let id = next_id();
    let env = envelope(&id);
    let mut tx = conn.start_transaction(TxOpts::default()).await.expect("begin");
    let event = |offset: Option<i64>| {
        let mut row = vec![Value::from(app.as_bytes())];
        if let Some(offset) = offset {
            row.push(Value::Int(offset));
        }
        row.extend([
            Value::from(id.as_bytes()),
            Value::from(env.portable_name.as_bytes()),
            Value::from(env.source_handler_key().as_bytes()),
            Value::from(env.source_instance_id.as_bytes()),
            Value::Bytes(env.to_bytes()),
        ]);
        row
    };
    if kind == Kind::CounterRow {
        tx.exec_drop(
            "UPDATE vellum_app SET next_offset = LAST_INSERT_ID(next_offset + 1) WHERE app_key = ?",
            (app.as_bytes(),),
        )
        .await
        .expect("counter");
        let offset = tx.last_insert_id().and_then(|v| i64::try_from(v).ok()).expect("LAST_INSERT_ID") - 1;
        tx.exec_drop(
            // The naive loop computes no record checksums (vellum's do): it stores 0.
            "INSERT INTO vellum_event (app_key, event_offset, message_id, portable_name, handler_key, \
             instance_id, envelope, checksum) VALUES (?, ?, ?, ?, ?, ?, ?, 0)",
            event(Some(offset)),
        )
        .await
        .expect("event");
    } else {
        tx.exec_drop(
            "INSERT INTO raw_event (app_key, message_id, portable_name, handler_key, instance_id, envelope) \
             VALUES (?, ?, ?, ?, ?, ?)",
            event(None),
        )
        .await
        .expect("event");
    }
    tx.exec_drop(
        "INSERT INTO vellum_aggregate (app_key, handler_key, instance_id, revision, last_event_id, checksum) \
         VALUES (?, ?, ?, 1, ?, 0) ON DUPLICATE KEY UPDATE revision = revision + 1, \
         last_event_id = VALUES(last_event_id)",
        (
            app.as_bytes(),
            env.source_handler_key().as_bytes(),
            env.source_instance_id.as_bytes(),
            id.as_bytes(),
        ),
    )
    .await
    .expect("aggregate");
    tx.commit().await.expect("commit");
}

fn rate(count: &AtomicU64, elapsed: Duration) -> f64 {
    f64::from(u32::try_from(count.load(Ordering::Relaxed)).unwrap_or(u32::MAX)) / elapsed.as_secs_f64()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let Ok(url) = std::env::var("VELLUM_MYSQL_URL") else {
        eprintln!("VELLUM_MYSQL_URL is not set; skipping the MySQL benchmark");
        return;
    };
    let millis = env_u64("VELLUM_BENCH_MS", 1500);
    let runs = env_u64("VELLUM_BENCH_RUNS", 9) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let base = Opts::from_url(&url).expect("VELLUM_MYSQL_URL parses");
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let db = format!("vellum_bench_{:x}_{}", nanos, std::process::id());
        let mut admin = Conn::new(base.clone()).await.expect("connect");
        admin.query_drop(format!("CREATE DATABASE `{db}`")).await.expect("create the bench database");
        let opts: Opts = OptsBuilder::from_opts(base).db_name(Some(&db)).into();
        let mut conn = Conn::new(opts.clone()).await.expect("connect");
        create_schema(&mut conn).await.expect("schema");
        conn.query_drop(
            "CREATE TABLE raw_event (
                app_key VARBINARY(512) NOT NULL,
                event_offset BIGINT NOT NULL AUTO_INCREMENT,
                message_id VARBINARY(512) NOT NULL,
                portable_name VARBINARY(512) NOT NULL,
                handler_key VARBINARY(512) NOT NULL,
                instance_id VARBINARY(512) NOT NULL,
                envelope LONGBLOB NOT NULL,
                PRIMARY KEY (event_offset),
                UNIQUE KEY by_message_id (app_key, message_id),
                KEY by_type (app_key, portable_name, event_offset),
                KEY by_source (app_key, handler_key, instance_id, event_offset)
            ) ENGINE=InnoDB ROW_FORMAT=DYNAMIC",
        )
        .await
        .expect("raw table");
        conn.disconnect().await.expect("disconnect");

        println!("MySQL/MariaDB one-event batches, {runs} runs of {millis} ms each, medians in batches/s");
        for writers in [1, 16] {
            let kinds = [Kind::Provider, Kind::CounterRow, Kind::AutoIncrement];
            let mut results: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
            for run in 0..runs {
                for turn in 0..kinds.len() {
                    let i = (run + turn) % kinds.len();
                    results[i].push(measure(kinds[i], &opts, writers, millis, run).await);
                }
            }
            let per_run =
                |other: usize| median(results[0].iter().zip(&results[other]).map(|(p, o)| p / o).collect());
            let (per_run_a, per_run_b) = (per_run(1), per_run(2));
            let medians: Vec<f64> = results.into_iter().map(median).collect();
            for (kind, m) in kinds.iter().zip(&medians) {
                println!("  {writers:>2} writer(s)  {:<20} {m:>9.0}/s", kind.label());
            }
            println!(
                "  {writers:>2} writer(s)  provider/(a) = {:.2}   provider/(b) = {:.2}   \
                 (medians of per-run ratios: {per_run_a:.2}, {per_run_b:.2})",
                medians[0] / medians[1],
                medians[0] / medians[2]
            );
        }
        admin.query_drop(format!("DROP DATABASE `{db}`")).await.expect("drop the bench database");
        admin.disconnect().await.expect("disconnect");
    });
}
