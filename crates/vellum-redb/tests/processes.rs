//! Tests that need a second process: exclusivity across processes (docs/locking.md#redb) and
//! crash safety under SIGKILL.
//!
//! The child is this test binary itself, re-run with `--exact child` and `VELLUM_REDB_CHILD`
//! naming what to do; without that variable the `child` test does nothing.
#![cfg(unix)]
// Test code: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vellum_core::{
    AggregateMetaData, AggregateRepository, Batch, DataStore, Envelope, Error, EventRepository, Identity,
    OffsetRepository, Operation, Persister, Provider, QueueMessage, QueueRepository,
};
use vellum_redb::RedbProvider;

const CHILD: &str = "VELLUM_REDB_CHILD";
const KEY: &str = "a96fefa1-2630-467a-b756-db2e428a56fd";
const TASKS: u64 = 8;
const PROMPTLY: Duration = Duration::from_secs(5);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// The child's entry point; a no-op in a normal test run.
#[test]
fn child() {
    let Ok(mode) = std::env::var(CHILD) else { return };
    let (what, dir) = mode.split_once(':').expect("mode:dir");
    // End the harness's "test child ... " line, so that every line we print stands alone.
    say("");
    match what {
        "hold" => runtime().block_on(hold(Path::new(dir))),
        "crash" => runtime().block_on(crash_writer(Path::new(dir))),
        "race" => runtime().block_on(race(Path::new(dir))),
        other => panic!("unknown child mode {other}"),
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

/// Child: opens [`KEY`], says `OPEN`, then obeys `close` / `open` lines on stdin.
async fn hold(dir: &Path) {
    let provider = RedbProvider::new(dir);
    let mut store = Some(provider.open(KEY).await.unwrap());
    say("OPEN");
    for line in std::io::stdin().lock().lines() {
        match line.unwrap().as_str() {
            "close" => {
                store.take().unwrap().close().await.unwrap();
                say("CLOSED");
            }
            "open" => match provider.open(KEY).await {
                Ok(s) => {
                    store = Some(s);
                    say("OPEN");
                }
                Err(Error::Locked { .. }) => say("LOCKED"),
                Err(e) => say(&format!("ERROR {e}")),
            },
            other => panic!("unknown command {other}"),
        }
    }
}

/// Child: on a line on stdin, opens [`KEY`] (whose file may not exist yet) and says `OPEN`,
/// `LOCKED` or `ERROR ...`; an open store gets one event and is closed (`CLOSED`).
async fn race(dir: &Path) {
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    match RedbProvider::new(dir).open(KEY).await {
        Ok(store) => {
            say("OPEN");
            let event = Envelope {
                message_id: format!("e-{}", std::process::id()),
                portable_name: "T".into(),
                ..Envelope::default()
            };
            store.persist(Batch::from(vec![Operation::SaveEvent(event)])).await.unwrap();
            store.close().await.unwrap();
            say("CLOSED");
        }
        Err(Error::Locked { .. }) => say("LOCKED"),
        Err(e) => say(&format!("ERROR {e}")),
    }
}

/// A child process and its stdout lines, read on a thread.
struct Kid {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Kid {
    fn spawn(mode: &str, dir: &Path) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child", "--nocapture", "--test-threads", "1"])
            .env(CHILD, format!("{mode}:{}", dir.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Self { child, stdin, lines }
    }

    /// Waits for a line that starts with one of `wanted` (skipping the test harness's output).
    fn expect(&self, wanted: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if wanted.iter().any(|w| line.starts_with(w)) => return line,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => panic!("child said none of {wanted:?} in time"),
                Err(RecvTimeoutError::Disconnected) => panic!("child exited before saying any of {wanted:?}"),
            }
        }
    }

    fn tell(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{command}").unwrap();
        stdin.flush().unwrap();
    }

    /// SIGKILL, then every line the child printed before dying.
    fn kill(mut self) -> Vec<String> {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        drop(self.stdin.take());
        self.lines.iter().collect()
    }
}

/// Opens [`KEY`] in this process, which must fail with `Locked` promptly.
async fn expect_locked(provider: &RedbProvider) {
    let started = Instant::now();
    match provider.open(KEY).await {
        Err(Error::Locked { app_key }) => assert_eq!(app_key, KEY),
        Err(e) => panic!("expected Locked, got {e:?}"),
        Ok(_) => panic!("opened a key another process holds"),
    }
    assert!(started.elapsed() < PROMPTLY, "Locked took {:?}", started.elapsed());
}

/// docs/locking.md#locks-die-with-their-holder: a key held by another process is `Locked` here,
/// promptly; other keys are not; after the holder is killed (SIGKILL) the key opens and its data
/// is there.
#[test]
fn key_held_by_another_process_is_locked_until_it_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let kid = Kid::spawn("hold", dir.path());
    kid.expect(&["OPEN"]);
    runtime().block_on(async {
        let provider = RedbProvider::new(dir.path());
        expect_locked(&provider).await;
        expect_locked(&RedbProvider::new(dir.path())).await;
        let other = provider.open("other-app").await.unwrap();
        other.close().await.unwrap();
    });
    let _ = kid.kill();
    runtime().block_on(async {
        let store = RedbProvider::new(dir.path()).open(KEY).await.expect("the key opens after SIGKILL");
        store.persist(Batch::from(vec![save_offset("s", 0, 1)])).await.unwrap();
        store.close().await.unwrap();
    });
}

/// docs/locking.md#locks-die-with-their-holder: when the holding process closes its store the key
/// opens here while it lives on; and while this process holds the key, the other process gets
/// `Locked`.
#[test]
fn key_closed_by_another_process_opens_and_locks_in_both_directions() {
    let dir = tempfile::tempdir().unwrap();
    let mut kid = Kid::spawn("hold", dir.path());
    kid.expect(&["OPEN"]);
    runtime().block_on(async {
        let provider = RedbProvider::new(dir.path());
        expect_locked(&provider).await;
        kid.tell("close");
        kid.expect(&["CLOSED"]);
        let store = provider.open(KEY).await.expect("the key opens after the holder closed it");
        kid.tell("open");
        assert_eq!(kid.expect(&["OPEN", "LOCKED", "ERROR"]), "LOCKED");
        store.close().await.unwrap();
        kid.tell("open");
        assert_eq!(kid.expect(&["OPEN", "LOCKED", "ERROR"]), "OPEN");
        expect_locked(&provider).await;
    });
    let _ = kid.kill();
}

/// docs/locking.md#redb: a key held by another process through a symbolic link to the directory
/// is `Locked` here through the real directory, and through a symbolic link to the file; and the
/// other way round once the holder reopened it through the real directory.
#[test]
fn a_symlink_reaches_the_lock_another_process_holds() {
    use std::os::unix::fs::symlink;
    let root = tempfile::tempdir().unwrap();
    let real = root.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let linked = root.path().join("linked");
    symlink(&real, &linked).unwrap();
    let mut kid = Kid::spawn("hold", &linked);
    kid.expect(&["OPEN"]);
    let file_dir = root.path().join("file-link");
    std::fs::create_dir(&file_dir).unwrap();
    let name = RedbProvider::new(&real).file_path(KEY);
    symlink(&name, file_dir.join(name.file_name().unwrap())).unwrap();
    runtime().block_on(async {
        expect_locked(&RedbProvider::new(&real)).await;
        expect_locked(&RedbProvider::new(&file_dir)).await;
        kid.tell("close");
        kid.expect(&["CLOSED"]);
        let store = RedbProvider::new(&file_dir).open(KEY).await.unwrap();
        kid.tell("open");
        assert_eq!(kid.expect(&["OPEN", "LOCKED", "ERROR"]), "LOCKED");
        store.close().await.unwrap();
    });
    let _ = kid.kill();
}

/// Processes that open the same missing file at once each create it or open the one another
/// created (the file lock then admits one at a time): none ever finds a half-made file and
/// reports it as damaged, and the directory ends with the one complete file.
#[test]
fn processes_creating_one_file_at_once_never_see_it_half_made() {
    for _ in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let mut kids: Vec<Kid> = (0..4).map(|_| Kid::spawn("race", dir.path())).collect();
        // Let every child start up (a few ms each) before they all open at once.
        std::thread::sleep(Duration::from_millis(300));
        for kid in &mut kids {
            kid.tell("go");
        }
        let mut opened = 0;
        for kid in &kids {
            match kid.expect(&["OPEN", "LOCKED", "ERROR"]).as_str() {
                "OPEN" => {
                    kid.expect(&["CLOSED"]);
                    opened += 1;
                }
                "LOCKED" => {}
                error => panic!("a racing open failed: {error}"),
            }
        }
        assert!(opened >= 1);
        for kid in kids {
            let _ = kid.kill();
        }
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
        runtime().block_on(async {
            let store = RedbProvider::new(dir.path()).open(KEY).await.unwrap();
            assert_eq!(store.next_event_offset().await.unwrap(), opened);
            store.close().await.unwrap();
        });
    }
}

fn save_offset(app: &str, current: u64, next: u64) -> Operation {
    Operation::SaveOffset { application_key: app.into(), current_offset: current, next_offset: next }
}

fn task_key(t: u64) -> String {
    format!("task-{t}")
}

fn envelope(id: String, t: u64) -> Envelope {
    Envelope {
        message_id: id,
        causation_id: "<cause>".into(),
        correlation_id: "<correlation>".into(),
        source_application: Some(Identity::new("<app>", KEY)),
        source_handler: Some(Identity::new("<handler>", task_key(t))),
        source_instance_id: "x".into(),
        portable_name: "Crash".into(),
        media_type: "application/octet-stream".into(),
        data: vec![7; 100],
        ..Envelope::default()
    }
}

/// Batch `i` of task `t`: two events, the task's aggregate at revision `i`, its offset `i -> i+1`,
/// a queue message for this batch and the removal of the previous batch's.
fn crash_batch(t: u64, i: u64) -> Batch {
    let queued = |i: u64, revision: u64| QueueMessage {
        revision,
        failure_count: 0,
        next_attempt_at: UNIX_EPOCH + Duration::from_secs(i),
        envelope: envelope(format!("t{t}-{i}-q"), t),
    };
    let mut ops = vec![
        Operation::SaveEvent(envelope(format!("t{t}-{i}-a"), t)),
        Operation::SaveEvent(envelope(format!("t{t}-{i}-b"), t)),
        Operation::SaveAggregateMetaData(AggregateMetaData {
            revision: i,
            last_event_id: format!("t{t}-{i}-b"),
            ..AggregateMetaData::new(task_key(t), "x")
        }),
        save_offset(&task_key(t), i, i + 1),
        Operation::SaveQueueMessage(queued(i, 0)),
    ];
    if i > 0 {
        ops.push(Operation::RemoveQueueMessage(queued(i - 1, 1)));
    }
    Batch::from(ops)
}

/// Child: persists batches from [`TASKS`] tasks, resuming where the last run stopped, and prints
/// `ACK t i offset_a offset_b` after each persist returned Ok, until it is killed.
async fn crash_writer(dir: &Path) {
    let store = Arc::new(RedbProvider::new(dir).open(KEY).await.unwrap());
    say("READY");
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut i = store.load_offset(&task_key(t)).await.unwrap();
                loop {
                    let result = store.persist(crash_batch(t, i)).await.unwrap();
                    let offset = |x: &str| result.event_offsets[&format!("t{t}-{i}-{x}")];
                    say(&format!("ACK {t} {i} {} {}", offset("a"), offset("b")));
                    i += 1;
                }
            })
        })
        .collect();
    // The tasks never end: this process ends by SIGKILL.
    futures_never(tasks).await;
}

async fn futures_never(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for task in tasks {
        task.await.unwrap();
    }
}

/// Checks the store after a crash against every acknowledged batch; returns the batches per task.
async fn check_after_crash(dir: &Path, acked: &HashMap<(u64, u64), (u64, u64)>) -> Vec<u64> {
    let store = RedbProvider::new(dir).open(KEY).await.expect("reopen after SIGKILL");
    let mut committed = Vec::new();
    let mut total = 0;
    let queue: BTreeMap<String, QueueMessage> = store
        .load_queue_messages(usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.id().to_owned(), m))
        .collect();
    for t in 0..TASKS {
        // The offset says how many of the task's batches committed; everything else must agree.
        let n = store.load_offset(&task_key(t)).await.unwrap();
        let events = store.load_events_by_source(&task_key(t), "x").await.unwrap().collect().await.unwrap();
        let ids: Vec<&str> = events.iter().map(vellum_core::Event::id).collect();
        let want: Vec<String> = (0..n).flat_map(|i| [format!("t{t}-{i}-a"), format!("t{t}-{i}-b")]).collect();
        assert_eq!(ids, want, "task {t}: events of exactly batches 0..{n}, none partial");
        let meta = store.load_aggregate_meta_data(&task_key(t), "x").await.unwrap();
        assert_eq!(meta.revision, n, "task {t}: aggregate revision");
        let mine: Vec<&String> = queue.keys().filter(|id| id.starts_with(&format!("t{t}-"))).collect();
        let want_queue: Vec<String> =
            n.checked_sub(1).map(|last| format!("t{t}-{last}-q")).into_iter().collect();
        assert_eq!(mine, want_queue.iter().collect::<Vec<_>>(), "task {t}: queue");
        for (&(task, i), &(a, b)) in acked.iter().filter(|((task, _), _)| *task == t) {
            assert!(i < n, "task {task}: batch {i} was acknowledged but is not committed ({n} are)");
            let at = |k: usize| events[k].offset;
            assert_eq!(
                (at(2 * i as usize), at(2 * i as usize + 1)),
                (a, b),
                "task {task} batch {i}: offsets"
            );
        }
        committed.push(n);
        total += 2 * n;
    }
    assert_eq!(store.next_event_offset().await.unwrap(), total, "next_event_offset");
    let offsets: Vec<u64> = store
        .load_events_by_type(&["Crash"], 0)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap()
        .iter()
        .map(|e| e.offset)
        .collect();
    assert_eq!(offsets, (0..total).collect::<Vec<_>>(), "offsets are dense");
    store.close().await.unwrap();
    committed
}

/// A small xorshift generator; the seed is printed so a failure can be replayed.
struct Random(u64);

impl Random {
    fn new() -> Self {
        let seed = std::env::var("VELLUM_REDB_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64 | 1);
        eprintln!("crash test seed: {seed} (set VELLUM_REDB_CRASH_SEED to replay)");
        Self(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn crash_trials(trials: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut random = Random::new();
    let mut acked: HashMap<(u64, u64), (u64, u64)> = HashMap::new();
    let mut committed = vec![0; TASKS as usize];
    let mut early = 0;
    for trial in 0..trials {
        let kid = Kid::spawn("crash", dir.path());
        if random.below(5) == 0 {
            // Sometimes kill while it is still opening (possibly repairing after the last kill).
            early += 1;
            std::thread::sleep(Duration::from_millis(random.below(40)));
        } else {
            kid.expect(&["READY"]);
            std::thread::sleep(Duration::from_millis(random.below(150)));
        }
        for line in kid.kill() {
            let Some(ack) = line.strip_prefix("ACK ") else { continue };
            let n: Vec<u64> = ack.split(' ').map(|x| x.parse().unwrap()).collect();
            acked.insert((n[0], n[1]), (n[2], n[3]));
        }
        let now = runtime().block_on(check_after_crash(dir.path(), &acked));
        assert!(
            now.iter().zip(&committed).all(|(a, b)| a >= b),
            "trial {trial}: committed batches went back"
        );
        committed = now;
    }
    let batches: u64 = committed.iter().sum();
    eprintln!(
        "{trials} SIGKILL trials ({early} during open): {batches} batches committed, {} acknowledged, all consistent",
        acked.len()
    );
    assert!(batches > 0, "no batch was ever committed: the trials tested nothing");
}

/// SIGKILL a writer at random moments; every acknowledged batch survives whole, no batch is
/// partial, offsets stay dense.
#[test]
fn sigkill_never_loses_an_acknowledged_batch_nor_leaves_a_partial_one() {
    crash_trials(30);
}

/// The same, longer: `cargo test -p vellum-redb --release -- --ignored`.
#[test]
#[ignore = "long: 300 SIGKILL trials"]
fn sigkill_many_trials() {
    crash_trials(300);
}
