//! The follow workloads of `vellum bench`: commit-to-delivery latency to a follower in this
//! process and to `vellum tail` in another, and the queries idle followers make.

use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use vellum::{
    AnyProvider, AnyStore, Batch, Error, EventReader, EventRepository, Operation, Persister, Provider,
    Result, StoreUrl,
};

use super::{Measured, event};

/// The portable type of the followed events (the tail follows only these).
const TYPE: &str = "bench.Follow";

/// One writer persists awaited one-event batches while a follower of the store receives
/// them: latencies from the persist call, and from the commit.
pub(super) async fn in_process(store: &Arc<AnyStore>, duration: Duration) -> Result<(Measured, Measured)> {
    let from = store.next_event_offset().await?;
    let mut follower = store.load_events_by_type(&[TYPE], from).await?.follow();
    let received = async move || {
        // Cancel safe: a dropped `next` loses nothing.
        let event = follower.next().await?;
        Ok((event.envelope.message_id, Instant::now()))
    };
    deliveries(store, duration, "", received).await
}

/// As [`in_process`], followed by `vellum tail` in a child process; each latency ends when the
/// event's line reaches this process. Skipped for `memory:` (no other process can see it) and
/// for `redb://…?readers=false` (no reader can open the file beside the store).
pub(super) async fn other_process(
    url: &str,
    app: &str,
    store: &Arc<AnyStore>,
    duration: Duration,
) -> Result<(Measured, Measured)> {
    if !other_processes_read(url) {
        let skipped = || Measured { skipped: true, ..Measured::default() };
        return Ok((skipped(), skipped()));
    }
    let from = store.next_event_offset().await?;
    let (mut child, mut lines) = spawn_tail(url, app, from)?;
    // The child is following once the warm-up event reaches it.
    let result = async {
        deliveries(store, Duration::ZERO, "warm-up-", async || next_line(&mut lines).await).await?;
        deliveries(store, duration, "other-", async || next_line(&mut lines).await).await
    }
    .await;
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let _ = child.wait();
    result
}

/// Whether another process can read the store at `url` beside its store.
fn other_processes_read(url: &str) -> bool {
    match StoreUrl::parse(url) {
        Ok(StoreUrl::Memory) => false,
        Ok(StoreUrl::Redb { params, .. }) => params.readers != Some(false),
        _ => true,
    }
}

/// `vellum tail URL --app APP --json --type bench.Follow --from FROM`, and a channel of its
/// lines with the instant each was read.
fn spawn_tail(
    url: &str,
    app: &str,
    from: u64,
) -> Result<(Child, mpsc::UnboundedReceiver<(String, Instant)>)> {
    let failed = |e: std::io::Error| Error::storage("bench: starting vellum tail", e);
    let exe = std::env::current_exe().map_err(failed)?;
    let mut child = Command::new(exe)
        .args(["tail", url, "--app", app, "--json", "--type", TYPE, "--from", &from.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(failed)?;
    let stdout = child.stdout.take().ok_or_else(|| Error::storage("bench: vellum tail", "no stdout"))?;
    let (sender, lines) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(std::io::Result::ok) {
            if sender.send((line, Instant::now())).is_err() {
                return;
            }
        }
    });
    Ok((child, lines))
}

/// The message ID of the next line `vellum tail --json` printed, and when it was read.
async fn next_line(lines: &mut mpsc::UnboundedReceiver<(String, Instant)>) -> Result<(String, Instant)> {
    let (line, at) = lines.recv().await.ok_or_else(|| Error::storage("bench: vellum tail", "it stopped"))?;
    let value: serde_json::Value =
        serde_json::from_str(&line).map_err(|e| Error::storage("bench: a line of vellum tail", e))?;
    let id = value["envelope"]["message_id"].as_str().unwrap_or_default().to_owned();
    Ok((id, at))
}

/// When one followed event was persisted, acknowledged and received.
struct Times {
    called: Instant,
    acknowledged: Instant,
}

/// One writer persists awaited one-event batches (IDs `{prefix}follow-N`) for `duration` (at
/// least one), while `received` yields each event's ID and when it arrived. Two latencies per
/// event: from the persist call (commit plus delivery), and from the writer's acknowledgement,
/// that is from the commit on (0 when the follower had it first).
async fn deliveries(
    store: &Arc<AnyStore>,
    duration: Duration,
    prefix: &'static str,
    mut received: impl AsyncFnMut() -> Result<(String, Instant)>,
) -> Result<(Measured, Measured)> {
    let started = Instant::now();
    let mut writer = {
        let store = Arc::clone(store);
        tokio::spawn(async move {
            let mut times = Vec::new();
            while times.is_empty() || started.elapsed() < duration {
                let mut event = event(format!("{prefix}follow-{}", times.len()), 0, "follower");
                TYPE.clone_into(&mut event.portable_name);
                let called = Instant::now();
                store.persist(Batch::from(vec![Operation::SaveEvent(event)])).await?;
                times.push(Times { called, acknowledged: Instant::now() });
                // As an engine's handler would, let other tasks (the follower) run.
                tokio::task::yield_now().await;
            }
            Ok::<_, Error>(times)
        })
    };
    let mut arrivals = Vec::new();
    // Every event written, once the writer is done.
    let mut written: Option<Vec<Times>> = None;
    while written.as_ref().is_none_or(|all| arrivals.len() < all.len()) {
        tokio::select! {
            got = received() => {
                let (id, at) = got?;
                let index = id.strip_prefix(prefix).and_then(|id| id.strip_prefix("follow-"));
                arrivals.push((index.and_then(|n| n.parse::<usize>().ok()), at));
            }
            done = &mut writer, if written.is_none() => {
                written = Some(done.map_err(|e| Error::storage("the bench writer task failed", e))??);
            }
        }
    }
    let times = written.unwrap_or_default();
    let elapsed = started.elapsed();
    let mut from_call = Measured { ops: arrivals.len() as u64, elapsed, ..Measured::default() };
    let mut from_commit = Measured { ops: arrivals.len() as u64, elapsed, ..Measured::default() };
    for (index, at) in arrivals {
        if let Some(t) = index.and_then(|i| times.get(i)) {
            from_call.latencies.add(at.saturating_duration_since(t.called));
            from_commit.latencies.add(at.saturating_duration_since(t.acknowledged));
        }
    }
    Ok((from_call, from_commit))
}

/// How many readers [`idle_readers`] opens.
const READERS: usize = 10;

/// How long [`idle_readers`] lets a polling follower's interval grow to its cap.
const SETTLE: Duration = Duration::from_secs(1);

/// Ten readers, each with a follower at the end of the log, while nothing is written: after a
/// second to settle (a polling follower's interval grows to its cap), the looks at the store
/// they make in `duration`, per second. Skipped where no reader can open the store beside it.
pub(super) async fn idle_readers(
    url: &str,
    provider: &AnyProvider,
    app: &str,
    duration: Duration,
) -> Result<Measured> {
    if matches!(StoreUrl::parse(url), Ok(StoreUrl::Redb { params, .. }) if params.readers == Some(false)) {
        return Ok(Measured { skipped: true, ..Measured::default() });
    }
    let mut tasks = Vec::with_capacity(READERS);
    for _ in 0..READERS {
        let reader = provider.open_reader(app).await?;
        let end = reader.next_event_offset().await?;
        let mut follower = reader.load_all_events(end).await?.follow();
        tasks.push(tokio::spawn(async move {
            let mut looks = 0;
            for (phase, length) in [SETTLE, duration].into_iter().enumerate() {
                let before = follower.looks();
                tokio::select! {
                    next = follower.next() => return Err(next.map_or_else(|e| e, |_| {
                        Error::storage("bench: idle readers", "an event was written meanwhile")
                    })),
                    () = tokio::time::sleep(length) => {}
                }
                if phase == 1 {
                    // Less the look each call of `next` makes as it starts: a consumer calls
                    // it once, this loop twice.
                    looks = (follower.looks() - before).saturating_sub(1);
                }
            }
            Ok::<_, Error>((looks, reader))
        }));
    }
    let mut measured = Measured { elapsed: duration, ..Measured::default() };
    let mut readers = Vec::with_capacity(READERS);
    for task in tasks {
        let (looks, reader) = task.await.map_err(|e| Error::storage("an idle reader task failed", e))??;
        measured.ops += looks;
        readers.push(reader);
    }
    // Closed only now: closing a reader may wake the others' followers.
    for reader in readers {
        reader.close().await?;
    }
    Ok(measured)
}
