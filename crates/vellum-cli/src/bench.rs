//! `vellum bench`: the standard workloads against one or more store URLs in one
//! run, with throughput and latency percentiles, and the disk's durable-sync rate for context.
//!
//! Workloads, each run for `--duration` seconds:
//! - `persist x1`: one writer committing one-event engine batches (an event plus its
//!   aggregate's meta-data), each awaited before the next: the durable single-writer rate.
//! - `persist xN`: N concurrent writers of the same batches; group commit shares transactions.
//! - `queue head`: `load_queue_messages(100)` with 1,000 messages queued.
//! - `events by type`: the first 100 events of one type in ten, through a cursor.
//! - `events by source`: the first 100 events of one writer's aggregate instance.
//! - `follow`: one writer persisting one-event batches, each awaited, while a [`vellum::Follower`]
//!   of the store follows the log; the latency is from the persist call to the follower
//!   receiving the event (commit plus delivery: compare with `persist x1`). `follow, from
//!   commit`: the same events, from the writer's acknowledgement of the commit (0 when the
//!   follower had the event first): the delivery alone.
//! - `follow, other process` (and `from commit`): the same, followed by `vellum tail` in a child
//!   process (a reader: NOTIFY on PostgreSQL, polling elsewhere); each latency ends when the
//!   event's line reaches this process.
//! - `idle, 10 readers`: ten readers, each with a follower, while nothing is written: the
//!   queries per second their followers make (0 where commits are pushed).
//! - `open + close`: opening and closing the application's store.
//! - `scan` (with `--scan N`): a log of N events (application `bench-scan-N`, filled in batches
//!   of 1,000 unless an earlier run left it), read
//!   whole from offset 0 through one cursor: events/s, and the growth of the process's peak
//!   resident memory during the read (it must follow the page size, not the log's length).

use std::io::{Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vellum::{
    AggregateMetaData, AnyProvider, AnyStore, Batch, DataStore, Envelope, Error, EventRepository, Identity,
    Operation, Persister, Provider, QueueMessage, QueueRepository, Result, StoreUrl,
};

use crate::cli::BenchArgs;

mod follow;
mod scan;
use crate::report::{Latencies, Table, millis, rate};

const WRITER: &str = "bench.writer";
const TYPES: u64 = 10;

/// One workload's outcome on one provider.
#[derive(Default)]
struct Measured {
    ops: u64,
    elapsed: Duration,
    latencies: Latencies,
    /// The workload does not apply to this provider (another process cannot see memory).
    skipped: bool,
    /// How much the process's peak resident memory grew during the workload, in bytes.
    peak_growth: Option<u64>,
}

impl Measured {
    fn ops_per_sec(&self) -> f64 {
        rate(self.ops, self.elapsed)
    }
}

/// Runs the benchmark and prints the results.
pub async fn run(args: BenchArgs) -> Result<()> {
    let urls = if args.compare.is_empty() { vec![args.url.clone()] } else { args.compare.clone() };
    let duration = args.duration;
    let dir = args.sync_dir.clone().unwrap_or_else(|| sync_dir(&urls));
    let syncs = sync_rate(&dir)?;
    println!(
        "vellum bench: {:.1} s per workload, {} concurrent writers; disk: {:.0} durable syncs/s in {}",
        duration.as_secs_f64(),
        args.concurrency,
        syncs,
        dir.display()
    );
    let mut names = workload_names(args.concurrency);
    if let Some(events) = args.scan {
        names.push(format!("scan {events} events"));
    }
    let mut columns = Vec::new();
    for url in &urls {
        eprintln!("measuring {url} ...");
        columns.push((url.clone(), measure(url, duration, args.concurrency.max(1), args.scan).await?));
    }
    let mut header = vec!["workload".to_owned()];
    header.extend(columns.iter().map(|(url, _)| kind_of(url)));
    let mut t = Table::new(header);
    for (row, name) in names.iter().enumerate() {
        let mut cells = vec![name.clone()];
        for (_, results) in &mut columns {
            let m = &mut results[row];
            cells.push(if m.skipped {
                "n/a".to_owned()
            } else if let Some(grown) = m.peak_growth {
                format!("{:>9.0}/s  peak memory +{}", m.ops_per_sec(), crate::report::bytes(grown))
            } else if m.latencies.is_empty() {
                format!("{:>9.1}/s", m.ops_per_sec())
            } else {
                format!(
                    "{:>9.0}/s  p50 {}  p99 {}",
                    m.ops_per_sec(),
                    millis(m.latencies.percentile(50)),
                    millis(m.latencies.percentile(99))
                )
            });
        }
        t.row(cells);
    }
    print!("{t}");
    if columns.len() > 1 {
        print_ratios(&names, &columns);
    }
    Ok(())
}

/// Each provider's throughput relative to the first URL's, per workload.
fn print_ratios(names: &[String], columns: &[(String, Vec<Measured>)]) {
    let mut header = vec![format!("ratio to {}", kind_of(&columns[0].0))];
    header.extend(columns.iter().skip(1).map(|(url, _)| kind_of(url)));
    let mut t = Table::new(header);
    for (row, name) in names.iter().enumerate() {
        let base = columns[0].1[row].ops_per_sec();
        let mut cells = vec![name.clone()];
        cells.extend(
            columns
                .iter()
                .skip(1)
                .map(|(_, r)| if base > 0.0 { ratio(r[row].ops_per_sec() / base) } else { "-".to_owned() }),
        );
        t.row(cells);
    }
    print!("\n{t}");
}

/// A ratio with about three significant digits.
fn ratio(r: f64) -> String {
    match r {
        r if r >= 100.0 => format!("{r:.0}"),
        r if r >= 1.0 => format!("{r:.2}"),
        r if r >= 0.01 => format!("{r:.3}"),
        r => format!("{r:.5}"),
    }
}

fn workload_names(concurrency: usize) -> Vec<String> {
    [
        "persist x1",
        &format!("persist x{concurrency}"),
        "queue head",
        "events by type",
        "events by source",
        "follow",
        "follow, from commit",
        "follow, other process",
        "follow, other, from commit",
        "idle, 10 readers",
        "open + close",
    ]
    .map(str::to_owned)
    .to_vec()
}

fn kind_of(url: &str) -> String {
    StoreUrl::parse(url).map_or_else(|_| url.to_owned(), |u| u.kind().to_owned())
}

/// Runs every workload on one URL, in a fresh application store.
async fn measure(
    url: &str,
    duration: Duration,
    concurrency: usize,
    scan: Option<u64>,
) -> Result<Vec<Measured>> {
    let provider = vellum::connect(url)?;
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
    let app = format!("bench-{nanos:x}");
    let store = Arc::new(provider.open(&app).await?);
    let mut result = workloads(&store, duration, concurrency).await;
    if let Ok(results) = &mut result {
        match follow::other_process(url, &app, &store, duration).await {
            Ok((followed, delivered)) => results.extend([followed, delivered]),
            Err(e) => result = Err(e),
        }
    }
    let closed = store.close().await;
    let mut results = result?;
    closed?;
    results.push(follow::idle_readers(url, &provider, &app, duration).await?);
    results.push(open_close(&provider, &app, duration).await?);
    if let Some(events) = scan {
        // One store per size, kept: a later run reads it again instead of filling another.
        results.push(scan::scan(&provider, &format!("bench-scan-{events}"), events).await?);
    }
    Ok(results)
}

async fn workloads(store: &Arc<AnyStore>, duration: Duration, concurrency: usize) -> Result<Vec<Measured>> {
    let one = persist(store, 1, duration, 0).await?;
    let many = persist(store, concurrency, duration, 1).await?;
    fill_queue(store).await?;
    let queue_head = repeat(duration, || async { store.load_queue_messages(100).await.map(drop) }).await?;
    let by_type = repeat(duration, || async {
        let mut cursor = store.load_events_by_type(&["bench.Type3"], 0).await?;
        take(&mut cursor, 100).await
    })
    .await?;
    let by_source = repeat(duration, || async {
        let mut cursor = store.load_events_by_source(WRITER, "writer-0-0").await?;
        take(&mut cursor, 100).await
    })
    .await?;
    let (followed, delivered) = follow::in_process(store, duration).await?;
    Ok(vec![one, many, queue_head, by_type, by_source, followed, delivered])
}

async fn take(cursor: &mut vellum::EventCursor, n: usize) -> Result<()> {
    for _ in 0..n {
        if cursor.next().await?.is_none() {
            break;
        }
    }
    Ok(())
}

/// `writers` tasks persisting one-event batches until `duration` has passed.
async fn persist(store: &Arc<AnyStore>, writers: usize, duration: Duration, phase: u64) -> Result<Measured> {
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = Arc::clone(store);
            tokio::spawn(async move {
                let instance = format!("writer-{phase}-{w}");
                let mut meta = AggregateMetaData::new(WRITER, &instance);
                let mut latencies = Latencies::default();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let event = event(format!("{instance}-{n}"), n, &instance);
                    meta.last_event_id.clone_from(&event.message_id);
                    let batch = Batch::from(vec![
                        Operation::SaveAggregateMetaData(meta.clone()),
                        Operation::SaveEvent(event),
                    ]);
                    let t = Instant::now();
                    store.persist(batch).await?;
                    latencies.add(t.elapsed());
                    meta.revision += 1;
                    n += 1;
                }
                Ok::<_, Error>((n, latencies))
            })
        })
        .collect();
    let mut measured = Measured::default();
    for task in tasks {
        let (n, latencies) = task.await.map_err(|e| Error::storage("a bench writer task failed", e))??;
        measured.ops += n;
        measured.latencies.merge(latencies);
    }
    measured.elapsed = started.elapsed();
    Ok(measured)
}

/// Calls `op` until `duration` has passed.
async fn repeat<F, Fut>(duration: Duration, mut op: F) -> Result<Measured>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let started = Instant::now();
    let mut measured = Measured::default();
    while started.elapsed() < duration {
        let t = Instant::now();
        op().await?;
        measured.latencies.add(t.elapsed());
        measured.ops += 1;
    }
    measured.elapsed = started.elapsed();
    Ok(measured)
}

async fn open_close(provider: &AnyProvider, app: &str, duration: Duration) -> Result<Measured> {
    repeat(duration, || async {
        let store = provider.open(app).await?;
        store.close().await
    })
    .await
}

/// Queues 1,000 messages at spread-out times, 100 per batch.
async fn fill_queue(store: &AnyStore) -> Result<()> {
    let now = SystemTime::now();
    for chunk in 0..10u64 {
        let ops: Vec<Operation> = (0..100u64)
            .map(|i| {
                let n = chunk * 100 + i;
                let envelope = event(format!("queued-{n}"), n, "queue");
                let at = now + Duration::from_millis((n * 7919) % 1000);
                Operation::SaveQueueMessage(QueueMessage {
                    revision: 0,
                    failure_count: 0,
                    next_attempt_at: at,
                    envelope,
                })
            })
            .collect();
        store.persist(Batch::from(ops)).await?;
    }
    Ok(())
}

fn event(message_id: String, n: u64, instance: &str) -> Envelope {
    let portable_name = format!("bench.Type{}", n % TYPES);
    Envelope {
        causation_id: message_id.clone(),
        correlation_id: message_id.clone(),
        message_id,
        source_application: Some(Identity::new("bench", "bench")),
        source_handler: Some(Identity::new("writer", WRITER)),
        source_instance_id: instance.to_owned(),
        created_at: vellum::time::rfc3339(SystemTime::now()),
        media_type: format!("application/json; type=\"{portable_name}\""),
        portable_name,
        data: br#"{"amount":100,"currency":"EUR","note":"a typical small event payload"}"#.to_vec(),
        ..Envelope::default()
    }
}

/// The directory of the first file-based URL, else the current directory.
fn sync_dir(urls: &[String]) -> PathBuf {
    for url in urls {
        match StoreUrl::parse(url) {
            Ok(StoreUrl::Redb { dir, .. }) => return dir,
            Ok(StoreUrl::Sqlite(file)) => {
                return file
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .map_or_else(|| ".".into(), Path::to_owned);
            }
            _ => {}
        }
    }
    PathBuf::from(".")
}

/// How many write-and-`fdatasync` cycles of 4 KiB one file in `dir` completes per second,
/// measured for half a second: the ceiling for one-at-a-time durable commits on that disk.
fn sync_rate(dir: &Path) -> Result<f64> {
    let io = |e: std::io::Error| {
        Error::storage(format!("measuring the durable-sync rate in {}", dir.display()), e)
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut file = tempfile::tempfile_in(dir).map_err(io)?;
    let block = [0u8; 4096];
    let started = Instant::now();
    let mut syncs = 0u64;
    while started.elapsed() < Duration::from_millis(500) {
        // Rewrite one block in place, so each sync flushes data, not a growing file's metadata.
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(&block).map_err(io)?;
        file.sync_data().map_err(io)?;
        syncs += 1;
    }
    Ok(rate(syncs, started.elapsed()))
}
