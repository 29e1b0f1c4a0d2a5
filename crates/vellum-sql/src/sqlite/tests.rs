//! Tests of the SQLite dialect: the conformance suite, exclusivity across processes, hostile
//! input, the schema, and crash safety under SIGKILL.
//!
//! Tests that need a second process re-execute this test binary with `VELLUM_SQLITE_CHILD` set,
//! which turns [`child_entry`] into the child's main function.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tempfile::TempDir;
use vellum_conformance::fixtures::{
    DEFAULT_HANDLER_KEY, aggregate, by_source, by_type, command, event, process, queue_message, save_offset,
    timeout,
};
use vellum_core::{
    AggregateMetaData, AggregateRepository, Batch, DataStore, Error, EventRepository, Identity,
    OffsetRepository, Operation, Packet, Persister, ProcessRepository, Provider, QueueMessage,
    QueueRepository,
};

use super::{SqliteOptions, SqliteProvider, create_schema, drop_schema};
use crate::schema::SCHEMA_VERSION;

mod conformance {
    use std::path::PathBuf;

    use tempfile::TempDir;
    use vellum_conformance::{Backend, Skip};

    use crate::sqlite::SqliteProvider;

    /// A temporary directory with one database file; each provider is a new value over it.
    pub(super) struct Sqlite {
        _dir: TempDir,
        path: PathBuf,
    }

    impl Backend for Sqlite {
        type Provider = SqliteProvider;

        async fn provider(&self) -> SqliteProvider {
            SqliteProvider::new(&self.path).expect("a provider over the test database")
        }
    }

    #[allow(clippy::unused_async)]
    async fn backend() -> Result<Sqlite, Skip> {
        let dir = tempfile::tempdir().map_err(|e| Skip(format!("no temporary directory: {e}")))?;
        let path = dir.path().join("vellum.db");
        Ok(Sqlite { _dir: dir, path })
    }

    vellum_conformance::conformance_tests!(backend);
}

/// The suite again through a caller-owned connection ([`SqliteProvider::from_connection`]).
mod conformance_from_connection {
    use std::sync::{Arc, Mutex};

    use tempfile::TempDir;
    use vellum_conformance::{Backend, Skip};

    use crate::sqlite::{SqliteOptions, SqliteProvider};

    /// One connection to a database file in a temporary directory, which the test owns; every
    /// provider is a new value over that connection.
    struct SqliteConnection {
        conn: Arc<Mutex<rusqlite::Connection>>,
        _dir: TempDir,
    }

    impl Backend for SqliteConnection {
        type Provider = SqliteProvider;

        async fn provider(&self) -> SqliteProvider {
            SqliteProvider::from_connection(Arc::clone(&self.conn), SqliteOptions::default())
                .expect("a provider over the test connection")
        }
    }

    #[allow(clippy::unused_async)]
    async fn backend() -> Result<SqliteConnection, Skip> {
        let dir = tempfile::tempdir().map_err(|e| Skip(format!("no temporary directory: {e}")))?;
        let conn = rusqlite::Connection::open(dir.path().join("vellum.db")).expect("open the test database");
        // What vellum's own connections use (see `from_connection`).
        let mode: String = conn.pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0)).unwrap();
        assert!(mode.eq_ignore_ascii_case("wal"), "journal mode {mode}");
        conn.pragma_update(None, "synchronous", "FULL").unwrap();
        Ok(SqliteConnection { conn: Arc::new(Mutex::new(conn)), _dir: dir })
    }

    vellum_conformance::conformance_tests!(backend);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn temp_db() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vellum.db");
    (dir, path)
}

// ---------------------------------------------------------------------------------------------
// Child processes

const CHILD_ENV: &str = "VELLUM_SQLITE_CHILD";
const PATH_ENV: &str = "VELLUM_SQLITE_PATH";
const KEY_ENV: &str = "VELLUM_SQLITE_KEY";
const TRIAL_ENV: &str = "VELLUM_SQLITE_TRIAL";

/// A child process, killed when dropped (so a failing test leaves no orphan behind).
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts this test binary as a child running [`child_entry`] in `mode`.
fn spawn_child(mode: &str, path: &Path, key: &str, trial: usize) -> ChildGuard {
    ChildGuard(
        Command::new(std::env::current_exe().unwrap())
            .args(["sqlite::tests::child_entry", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, mode)
            .env(PATH_ENV, path)
            .env(KEY_ENV, key)
            .env(TRIAL_ENV, trial.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    )
}

/// Reads the child's stdout on a thread, collecting lines; returns the lines and a receiver
/// that gets a message when `ready` is printed.
fn collect_lines(
    child: &mut Child,
    ready: &'static str,
) -> (Arc<Mutex<Vec<String>>>, std::sync::mpsc::Receiver<()>, std::thread::JoinHandle<()>) {
    let stdout = child.stdout.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let collected = Arc::clone(&lines);
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // libtest prints "test <name> ... " before the child's first line.
            if line.ends_with(ready) {
                let _ = tx.send(());
            }
            collected.lock().unwrap().push(line);
        }
    });
    (lines, rx, reader)
}

/// The child's main function: does nothing unless `VELLUM_SQLITE_CHILD` is set.
///
/// - `hold`: opens the key, prints `HOLDING`, sleeps until killed.
/// - `crash`: opens the key, prints `READY`, persists batches from many tasks and prints
///   `ACK <task> <j>` for each acknowledged batch until killed.
/// - `race`: waits for the file `<path>.go`, then opens the key, stores offset 1 of source `s`,
///   closes, and prints `RACED OK` or `RACED ERR <error>`.
#[test]
fn child_entry() {
    let Ok(mode) = std::env::var(CHILD_ENV) else { return };
    let path = PathBuf::from(std::env::var(PATH_ENV).unwrap());
    let key = std::env::var(KEY_ENV).unwrap();
    let trial: usize = std::env::var(TRIAL_ENV).unwrap().parse().unwrap();
    if mode == "race" {
        let go = path.with_extension("go");
        while !go.exists() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let outcome = runtime().block_on(async {
            let store = SqliteProvider::new(&path)?.open(&key).await?;
            store.persist(Batch::from(vec![save_offset("s", 0, 1)])).await?;
            store.close().await
        });
        match outcome {
            Ok(()) => println!("RACED OK"),
            Err(e) => println!("RACED ERR {e}"),
        }
        std::io::stdout().flush().unwrap();
        return;
    }
    runtime().block_on(async move {
        let provider = SqliteProvider::new(&path).unwrap();
        let store = Arc::new(provider.open(&key).await.unwrap());
        match mode.as_str() {
            "hold" => {
                println!("HOLDING");
                std::io::stdout().flush().unwrap();
                tokio::time::sleep(Duration::from_secs(120)).await;
            }
            "crash" => {
                println!("READY");
                std::io::stdout().flush().unwrap();
                let tasks: Vec<_> = (0..CRASH_TASKS)
                    .map(|task| {
                        let store = Arc::clone(&store);
                        tokio::spawn(async move {
                            for j in 0.. {
                                store.persist(crash_batch(trial, task, j)).await.unwrap();
                                let mut out = std::io::stdout().lock();
                                writeln!(out, "ACK {task} {j}").unwrap();
                                out.flush().unwrap();
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.unwrap();
                }
            }
            other => panic!("unknown child mode {other:?}"),
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Exclusivity (docs/locking.md#sqlite)

#[test]
fn second_open_in_this_process_is_locked_until_close() {
    let (_dir, path) = temp_db();
    runtime().block_on(async {
        let first = SqliteProvider::new(&path).unwrap();
        let store = first.open("app").await.unwrap();
        for provider in [
            first.clone(),
            SqliteProvider::new(&path).unwrap(),
            SqliteProvider::new(path.parent().unwrap().join(".").join("vellum.db")).unwrap(),
        ] {
            let start = Instant::now();
            assert!(matches!(provider.open("app").await, Err(Error::Locked { app_key }) if app_key == "app"));
            assert!(start.elapsed() < Duration::from_secs(1));
        }
        store.close().await.unwrap();
        let store = SqliteProvider::new(&path).unwrap().open("app").await.unwrap();
        store.close().await.unwrap();
    });
}

/// Polls `future` once (so a `persist` queues its batch) and hands it back.
async fn poll_once<F: std::future::Future + Unpin>(mut future: F) -> F {
    std::future::poll_fn(|cx| {
        let _ = std::pin::Pin::new(&mut future).poll(cx);
        std::task::Poll::Ready(())
    })
    .await;
    future
}

/// docs/close-and-cancellation.md#dropping-a-store: a store dropped without `close`, with a
/// group still being committed, can be opened again at once: the open waits for the writer to
/// drain and release the lock (it never sees `Locked`), and every acknowledged batch is there;
/// the batch in flight at the drop is there whole or not at all.
#[test]
fn a_dropped_store_opens_again_at_once_with_its_data() {
    let (_dir, path) = temp_db();
    runtime().block_on(async {
        let provider = SqliteProvider::new(&path).unwrap();
        let mut waits = Vec::new();
        for round in 0..5_u64 {
            let store = provider.open("app").await.unwrap();
            for b in 0..5 {
                store.persist(Batch::from(vec![save_offset(&format!("r{round}"), b, b + 1)])).await.unwrap();
            }
            // In rounds 0-2, a large batch queued and taken by the writer, then abandoned with
            // the store; in rounds 3-4 the queue is empty when the store is dropped.
            if round < 3 {
                let big: Vec<Operation> = (0..2_000)
                    .map(|e| Operation::SaveEvent(event(&format!("big{round}-{e}"), "A")))
                    .collect();
                let in_flight = poll_once(Box::pin(store.persist(Batch::from(big)))).await;
                tokio::time::sleep(Duration::from_millis(2)).await;
                drop(in_flight);
            }
            drop(store);
            let started = Instant::now();
            let store = provider.open("app").await.expect("a dropped store's key opens again at once");
            let waited = started.elapsed();
            waits.push(waited);
            for r in 0..=round {
                assert_eq!(store.load_offset(&format!("r{r}")).await.unwrap(), 5);
            }
            let events = store.load_events_by_type(&["EventStub[TypeA]"], 0).await.unwrap();
            let events = events.collect().await.unwrap();
            let prefix = format!("big{round}-");
            let big = events.iter().filter(|e| e.envelope.message_id.starts_with(&prefix)).count();
            assert!(big == 0 || big == 2_000, "a batch is never partly applied: {big} events");
            let in_flight = match (round < 3, big) {
                (false, _) => "none",
                (true, 0) => "skipped",
                (true, _) => "committed",
            };
            println!("round {round}: reopened after the drop in {waited:?}; batch in flight: {in_flight}");
            store.close().await.unwrap();
        }
        // A live store's key is still `Locked` at once.
        let store = provider.open("app").await.unwrap();
        let started = Instant::now();
        assert!(matches!(provider.open("app").await, Err(Error::Locked { .. })));
        assert!(started.elapsed() < Duration::from_secs(1));
        store.close().await.unwrap();
        let started = Instant::now();
        provider.open("app").await.unwrap().close().await.unwrap();
        println!("reopen after drop: {waits:?}; open and close after a close: {:?}", started.elapsed());
    });
}

/// docs/locking.md#sqlite: the lock belongs to the database file, not to the name it was opened
/// by: through a symbolic link to the file or to its directory, the key is `Locked` while the
/// store is open, and the lock files sit beside the real file. A dangling link is followed to
/// where it points, and the database is created there.
#[cfg(unix)]
#[test]
fn a_symlink_to_the_database_takes_the_same_lock() {
    use std::os::unix::fs::symlink;
    let (dir, path) = temp_db();
    let link = dir.path().join("link.db");
    symlink(&path, &link).unwrap();
    let linked_dir = dir.path().join("linked-dir");
    symlink(dir.path(), &linked_dir).unwrap();
    runtime().block_on(async {
        let store = SqliteProvider::new(&path).unwrap().open("app").await.unwrap();
        store.persist(Batch::from(vec![save_offset("s", 0, 1)])).await.unwrap();
        for via in [&link, &linked_dir.join("vellum.db"), &linked_dir.join("link.db")] {
            let start = Instant::now();
            match SqliteProvider::new(via).unwrap().open("app").await {
                Err(Error::Locked { app_key }) => assert_eq!(app_key, "app"),
                other => panic!("open through {} while the store is open: {other:?}", via.display()),
            }
            assert!(start.elapsed() < Duration::from_secs(1));
        }
        store.close().await.unwrap();
        // The other way round: held through the link, locked through the file itself.
        let store = SqliteProvider::new(&link).unwrap().open("app").await.unwrap();
        assert_eq!(store.load_offset("s").await.unwrap(), 1);
        assert!(matches!(SqliteProvider::new(&path).unwrap().open("app").await, Err(Error::Locked { .. })));
        store.close().await.unwrap();
        let names = entries(dir.path());
        assert!(names.contains(&"vellum.db.vellum-locks".to_owned()), "{names:?}");
        assert!(!names.contains(&"link.db.vellum-locks".to_owned()), "{names:?}");

        // A dangling link: the database is created where it points; both names share the lock.
        let target = dir.path().join("new.db");
        let dangling = dir.path().join("dangling.db");
        symlink(&target, &dangling).unwrap();
        let store = SqliteProvider::new(&dangling).unwrap().open("app").await.unwrap();
        assert!(std::fs::symlink_metadata(&target).unwrap().is_file());
        // The schema commands create through a dangling link too.
        let (target2, dangling2) = (dir.path().join("new2.db"), dir.path().join("dangling2.db"));
        symlink(&target2, &dangling2).unwrap();
        SqliteProvider::new(&dangling2).unwrap().create_schema().await.unwrap();
        assert!(std::fs::symlink_metadata(&target2).unwrap().is_file());
        let version = SqliteProvider::new(&target2).unwrap().schema_version().await.unwrap();
        assert_eq!(version, Some(SCHEMA_VERSION));
        assert!(matches!(SqliteProvider::new(&target).unwrap().open("app").await, Err(Error::Locked { .. })));
        store.close().await.unwrap();
    });
}

/// docs/locking.md#sqlite: across processes too, a symbolic link to the database reaches the
/// lock the other process holds through the file's real name.
#[cfg(unix)]
#[test]
fn a_symlink_reaches_the_lock_another_process_holds() {
    let (dir, path) = temp_db();
    let link = dir.path().join("link.db");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    runtime().block_on(async {
        SqliteProvider::new(&path).unwrap().open("other").await.unwrap().close().await.unwrap();
    });
    for (held, opened) in [(&path, &link), (&link, &path)] {
        let mut child = spawn_child("hold", held, "app", 0);
        let (_lines, ready, reader) = collect_lines(&mut child.0, "HOLDING");
        ready.recv_timeout(Duration::from_secs(30)).expect("the child never reported holding the key");
        runtime().block_on(async {
            let start = Instant::now();
            match SqliteProvider::new(opened).unwrap().open("app").await {
                Err(Error::Locked { app_key }) => assert_eq!(app_key, "app"),
                other => panic!(
                    "open through {} while another process holds {}: {other:?}",
                    opened.display(),
                    held.display()
                ),
            }
            assert!(start.elapsed() < Duration::from_secs(1), "Locked must be prompt");
        });
        child.0.kill().unwrap();
        child.0.wait().unwrap();
        reader.join().unwrap();
    }
}

/// docs/locking.md#fencing: a lock file removed under an open store lets another process create
/// a new one and open the application. The store notices before its next unit of work: that
/// persist and every later one fail with kind `Fenced`, so the two never both write. The fenced
/// store closes normally.
#[cfg(unix)]
#[test]
fn a_removed_lock_file_fences_the_store_and_a_second_store_opens() {
    let (_dir, path) = temp_db();
    runtime().block_on(async {
        let store = SqliteProvider::new(&path).unwrap().open("app").await.unwrap();
        store.persist(Batch::from(vec![save_offset("s", 0, 1)])).await.unwrap();
        let locks = path.with_file_name("vellum.db.vellum-locks");
        let lock_files: Vec<_> = std::fs::read_dir(&locks).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(lock_files.len(), 1);
        std::fs::remove_file(&lock_files[0]).unwrap();

        // Another process now opens the application: it finds no lock file and makes a new one.
        let mut child = spawn_child("hold", &path, "app", 0);
        let (_lines, ready, reader) = collect_lines(&mut child.0, "HOLDING");
        ready.recv_timeout(Duration::from_secs(30)).expect("the second store did not open");

        let e = store.persist(Batch::from(vec![save_offset("s", 1, 2)])).await.unwrap_err();
        assert_eq!(e.kind(), vellum_core::ErrorKind::Fenced, "{e:?}");
        let text = e.to_string();
        assert!(text.contains(&path.display().to_string()) && text.contains("\"app\""), "{text}");
        println!("{text}");
        assert!(!e.is_retryable());
        assert!(vellum_core::DataStore::is_fenced(&store), "the store says it is fenced");
        // For good, whatever comes next.
        let e = store.persist(Batch::from(vec![save_offset("t", 0, 1)])).await.unwrap_err();
        assert_eq!(e.kind(), vellum_core::ErrorKind::Fenced);
        store.close().await.unwrap();
        child.0.kill().unwrap();
        child.0.wait().unwrap();
        reader.join().unwrap();

        let store = SqliteProvider::new(&path).unwrap().open("app").await.unwrap();
        assert_eq!(store.load_offset("s").await.unwrap(), 1, "the fenced store wrote nothing more");
        assert_eq!(store.load_offset("t").await.unwrap(), 0);
        store.close().await.unwrap();
    });
}

/// docs/locking.md#fencing: a database file replaced under an open store (the store would write
/// to a file no longer under its name) fences the store too; so does a lock file replaced by
/// another file.
#[cfg(unix)]
#[test]
fn a_replaced_database_or_lock_file_fences_the_store() {
    let (_dir, path) = temp_db();
    runtime().block_on(async {
        let provider = SqliteProvider::new(&path).unwrap();
        let store = provider.open("app").await.unwrap();
        store.persist(Batch::from(vec![save_offset("s", 0, 1)])).await.unwrap();
        let moved = path.with_extension("moved");
        std::fs::rename(&path, &moved).unwrap();
        std::fs::copy(&moved, &path).unwrap();
        let e = store.persist(Batch::from(vec![save_offset("s", 1, 2)])).await.unwrap_err();
        assert_eq!(e.kind(), vellum_core::ErrorKind::Fenced, "{e:?}");
        assert!(e.to_string().contains("database file was replaced"), "{e}");
        store.close().await.unwrap();

        // (The copy may lack what was still in the write-ahead log: use another source.)
        let store = provider.open("app").await.unwrap();
        store.persist(Batch::from(vec![save_offset("t", 0, 1)])).await.unwrap();
        let locks = path.with_file_name("vellum.db.vellum-locks");
        let lock_file = std::fs::read_dir(&locks).unwrap().next().unwrap().unwrap().path();
        std::fs::rename(&lock_file, locks.join("old")).unwrap();
        std::fs::write(&lock_file, b"").unwrap();
        let e = store.persist(Batch::from(vec![save_offset("t", 1, 2)])).await.unwrap_err();
        assert_eq!(e.kind(), vellum_core::ErrorKind::Fenced, "{e:?}");
        assert!(e.to_string().contains("lock file"), "{e}");
        store.close().await.unwrap();
    });
}

/// The fencing check is two `stat`s (lock file and database file) per unit of work: prints
/// their cost next to that of a durable one-batch commit.
#[test]
fn the_fencing_check_costs_microseconds() {
    let (_dir, path) = temp_db();
    runtime().block_on(async {
        let store = SqliteProvider::new(&path).unwrap().open("app").await.unwrap();
        let locks = path.with_file_name("vellum.db.vellum-locks");
        let lock_file = std::fs::read_dir(&locks).unwrap().next().unwrap().unwrap().path();
        let n = 10_000_u32;
        let started = Instant::now();
        for _ in 0..n {
            std::hint::black_box(std::fs::metadata(&path).unwrap());
            std::hint::black_box(std::fs::metadata(&lock_file).unwrap());
        }
        let check = started.elapsed() / n;
        let commits = 100_u32;
        let started = Instant::now();
        for i in 0..u64::from(commits) {
            store.persist(Batch::from(vec![save_offset("s", i, i + 1)])).await.unwrap();
        }
        let commit = started.elapsed() / commits;
        println!("fencing check (two stats): {check:?} per unit of work; a one-batch persist: {commit:?}");
        assert!(check < Duration::from_millis(1), "{check:?}");
        store.close().await.unwrap();
    });
}

#[test]
fn second_process_is_locked_and_killing_the_holder_frees_the_key() {
    let (_dir, path) = temp_db();
    let key = "a'b\";% _应用";
    // Create the schema first so the child's open is quick.
    runtime().block_on(async {
        SqliteProvider::new(&path).unwrap().open("other").await.unwrap().close().await.unwrap();
    });
    let mut child = spawn_child("hold", &path, key, 0);
    let (_lines, ready, reader) = collect_lines(&mut child.0, "HOLDING");
    ready.recv_timeout(Duration::from_secs(30)).expect("the child never reported holding the key");
    runtime().block_on(async {
        let provider = SqliteProvider::new(&path).unwrap();
        let start = Instant::now();
        match provider.open(key).await {
            Err(Error::Locked { app_key }) => assert_eq!(app_key, key),
            other => panic!("open while another process holds the key: {other:?}"),
        }
        assert!(start.elapsed() < Duration::from_secs(1), "Locked must be prompt");
        // Other keys are free.
        provider.open("free").await.unwrap().close().await.unwrap();
        child.0.kill().unwrap();
        child.0.wait().unwrap();
        let store = provider.open(key).await.expect("the lock dies with its process");
        store.close().await.unwrap();
    });
    reader.join().unwrap();
}

// ---------------------------------------------------------------------------------------------
// The database file: damaged files are refused, missing ones created race-free

/// Names of the entries of `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A database file damaged while closed (emptied, truncated, its first bytes overwritten, a
/// header byte flipped) is refused when a store opens (and by the schema commands): a `Corrupt`
/// error naming the file, which is left exactly as it was; never a new, empty database in its
/// place. Put back, it opens with its data.
#[test]
fn damaged_database_files_are_refused_at_open_and_left_unchanged() {
    let (dir, path) = temp_db();
    runtime().block_on(async {
        let store = SqliteProvider::new(&path).unwrap().open("app").await.unwrap();
        for i in 0..20 {
            let events: Vec<_> =
                (0..50).map(|e| Operation::SaveEvent(event(&format!("e{i}-{e}"), "A"))).collect();
            store.persist(Batch::from(events)).await.unwrap();
        }
        store.close().await.unwrap();
    });
    assert_eq!(entries(dir.path()), ["vellum.db", "vellum.db.vellum-locks"], "closing left side files");
    let original = std::fs::read(&path).unwrap();
    let page_size = usize::from(u16::from_be_bytes([original[16], original[17]]));
    assert!(original.len() > 8 * page_size, "the test database has {} bytes", original.len());
    let with = |at: usize, bytes: &[u8]| {
        let mut damaged = original.clone();
        damaged[at..at + bytes.len()].copy_from_slice(bytes);
        damaged
    };
    let damage: Vec<(&str, Vec<u8>, &str)> = vec![
        ("emptied", Vec::new(), "is empty (0 bytes)"),
        ("truncated to 50 bytes", original[..50].to_vec(), "shorter than an SQLite header"),
        ("truncated to 100 bytes", original[..100].to_vec(), "shorter than one page"),
        ("truncated to half", original[..original.len() / page_size / 2 * page_size].to_vec(), "pages of"),
        ("truncated by a byte", original[..original.len() - 1].to_vec(), "not a whole number of"),
        (
            "first bytes overwritten",
            with(0, b"\0\0 garbage bytes"),
            "does not start with \"SQLite format 3\"",
        ),
        // Without the check SQLite opens this one read-only: "attempt to write a readonly database".
        ("write version flipped", with(18, &[3]), "file format versions are 3 (write)"),
        ("read version flipped", with(19, &[7]), "file format versions are 2 (write) and 7 (read)"),
        ("page size flipped", with(16, &[0x30]), "page size is"),
        ("payload fraction flipped", with(21, &[0x44]), "payload fractions"),
    ];
    let shown = path.display().to_string();
    runtime().block_on(async {
        for (what, bytes, says) in &damage {
            std::fs::write(&path, bytes).unwrap();
            let provider = SqliteProvider::new(&path).unwrap();
            let err = provider.open("app").await.map(drop).unwrap_err();
            let text = err.to_string();
            assert_eq!(err.kind(), vellum_core::ErrorKind::Corrupt, "{what}: {err:?}");
            assert!(text.contains(&shown), "{what}: {text} does not name the file");
            assert!(text.contains(says), "{what}: {text} does not say {says:?}");
            let err = provider.schema_version().await.unwrap_err();
            assert_eq!(err.kind(), vellum_core::ErrorKind::Corrupt, "{what}: {err:?}");
            assert!(std::fs::read(&path).unwrap() == *bytes, "{what}: the failed open changed the file");
            assert_eq!(entries(dir.path()), ["vellum.db", "vellum.db.vellum-locks"], "{what}");
        }
        std::fs::write(&path, &original).unwrap();
        let store = SqliteProvider::new(&path).unwrap().open("app").await.unwrap();
        assert_eq!(store.next_event_offset().await.unwrap(), 1000);
        store.close().await.unwrap();
    });
}

/// Damage past the header, which SQLite meets only when it reads there, fails those reads and
/// writes with storage errors naming the database file (`SQLITE_CORRUPT`: `Corrupt`), never a
/// panic or a wrong answer.
#[test]
fn damage_met_by_reads_and_writes_names_the_database_file() {
    let (_dir, path) = temp_db();
    runtime().block_on(async {
        let store = SqliteProvider::new(&path).unwrap().open("app").await.unwrap();
        for i in 0..20 {
            let mut ops: Vec<_> =
                (0..50).map(|e| Operation::SaveEvent(event(&format!("e{i}-{e}"), "A"))).collect();
            ops.push(Operation::SaveQueueMessage(queue_message(
                command(&format!("q{i}"), "A"),
                SystemTime::UNIX_EPOCH,
            )));
            store.persist(Batch::from(ops)).await.unwrap();
        }
        store.close().await.unwrap();
    });
    let original = std::fs::read(&path).unwrap();
    let page_size = usize::from(u16::from_be_bytes([original[16], original[17]]));
    let pages = original.len() / page_size;
    let shown = path.display().to_string();
    let (mut kinds, mut reads_failed) = (Vec::new(), false);
    runtime().block_on(async {
        // Every page but the first (the header, which the open checks), overwritten in turn.
        for page in 1..pages {
            let mut damaged = original.clone();
            damaged[page * page_size..(page + 1) * page_size].fill(0x5a);
            std::fs::write(&path, &damaged).unwrap();
            let store = match SqliteProvider::new(&path).unwrap().open("app").await {
                Ok(store) => store,
                Err(e) => {
                    assert!(e.to_string().contains(&shown), "page {page}: {e} does not name the file");
                    kinds.push(e.kind());
                    continue;
                }
            };
            let mut outcomes: Vec<vellum_core::Result<()>> = vec![
                store.next_event_offset().await.map(drop),
                store.load_queue_messages(100).await.map(drop),
                store.load_offset("s").await.map(drop),
            ];
            outcomes.push(match store.load_events_by_type(&["EventStub[TypeA]"], 0).await {
                Ok(cursor) => cursor.collect().await.map(drop),
                Err(e) => Err(e),
            });
            outcomes.push(store.persist(Batch::from(vec![save_offset("s", 0, 1)])).await.map(drop));
            for outcome in outcomes {
                match outcome {
                    Ok(()) => {}
                    Err(e @ Error::Storage { .. }) => {
                        assert!(e.to_string().contains(&shown), "page {page}: {e} does not name the file");
                        if !reads_failed {
                            eprintln!("for example: {e}");
                            reads_failed = true;
                        }
                        kinds.push(e.kind());
                    }
                    Err(e) => panic!("page {page}: expected a storage error, got {e:?}"),
                }
            }
            let _ = store.close().await;
        }
    });
    let mut counts: HashMap<String, usize> = HashMap::new();
    for kind in &kinds {
        *counts.entry(format!("{kind:?}")).or_default() += 1;
    }
    eprintln!("{} pages damaged in turn; errors by kind: {counts:?}", pages - 1);
    assert!(kinds.contains(&vellum_core::ErrorKind::Corrupt), "{counts:?}");
}

/// Only a missing database file is created, complete under its name; processes opening
/// applications of the same new file at once all succeed (none finds a half-made file and
/// refuses it as damaged), and nothing but the database and its side files is left.
#[test]
fn a_missing_database_file_is_created_race_free() {
    for round in 0..3 {
        let (dir, path) = temp_db();
        let children: Vec<_> = (0..4)
            .map(|i| {
                let mut child = spawn_child("race", &path, &format!("app-{i}"), round);
                let (lines, _, reader) = collect_lines(&mut child.0, "RACED");
                (child, lines, reader)
            })
            .collect();
        // Let every child start up before they all open at once.
        std::thread::sleep(Duration::from_millis(300));
        std::fs::write(path.with_extension("go"), b"").unwrap();
        for (mut child, lines, reader) in children {
            child.0.wait().unwrap();
            reader.join().unwrap();
            let lines = lines.lock().unwrap();
            assert!(lines.iter().any(|l| l.ends_with("RACED OK")), "round {round}: {lines:?}");
        }
        std::fs::remove_file(path.with_extension("go")).unwrap();
        assert_eq!(entries(dir.path()), ["vellum.db", "vellum.db.vellum-locks"], "round {round}");
        runtime().block_on(async {
            let provider = SqliteProvider::new(&path).unwrap();
            for i in 0..4 {
                let store = provider.open(&format!("app-{i}")).await.unwrap();
                assert_eq!(store.load_offset("s").await.unwrap(), 1);
                store.close().await.unwrap();
            }
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile input

const HOSTILE: [&str; 14] = [
    "",
    "'",
    "''; DROP TABLE vellum_event; --",
    "\"quoted\"",
    "a;b;c",
    "%",
    "_",
    "%_%",
    "a",
    "A",
    "a ",
    "应用-🚀-ü",
    "back\\slash",
    "nul\0byte",
];

#[test]
fn hostile_keys_and_data_round_trip_verbatim() {
    let (_dir, path) = temp_db();
    runtime().block_on(async {
        let provider = SqliteProvider::new(&path).unwrap();
        let big: Vec<u8> =
            (0..1024 * 1024).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
        let at = SystemTime::now();
        for (n, app_key) in HOSTILE.iter().enumerate() {
            let store = provider.open(app_key).await.unwrap();
            let mut ops = Vec::new();
            let mut envelopes = Vec::new();
            for (i, text) in HOSTILE.iter().enumerate() {
                let mut env = event(&format!("{text}#{i}"), "A");
                env.portable_name = (*text).to_owned();
                env.source_handler = Some(Identity::new(*text, *text));
                env.source_instance_id = (*text).to_owned();
                env.description = (*text).to_owned();
                env.data = if i == 0 { big.clone() } else { text.as_bytes().to_vec() };
                envelopes.push(env.clone());
                ops.push(Operation::SaveEvent(env));
                ops.push(Operation::SaveAggregateMetaData(AggregateMetaData {
                    last_event_id: (*text).to_owned(),
                    ..aggregate(text, text, 0)
                }));
                ops.push(Operation::SaveProcessInstance(process(
                    &format!("p{text}"),
                    text,
                    0,
                    Packet::new(*text, if i == 0 { big.clone() } else { text.as_bytes().to_vec() }),
                )));
                ops.push(save_offset(text, 0, i as u64 + 1));
                let mut cmd = command(text, "A");
                cmd.data = if i == 0 { big.clone() } else { Vec::new() };
                ops.push(Operation::SaveQueueMessage(queue_message(cmd, at + Duration::from_secs(i as u64))));
            }
            let result = store.persist(Batch::from(ops)).await.unwrap();
            assert_eq!(result.event_offsets.len(), HOSTILE.len());
            for (i, text) in HOSTILE.iter().enumerate() {
                let md = store.load_aggregate_meta_data(text, text).await.unwrap();
                assert_eq!((md.revision, md.last_event_id.as_str()), (1, *text));
                let p = store.load_process_instance(&format!("p{text}"), text).await.unwrap();
                assert_eq!(p.packet.media_type, *text);
                assert_eq!(p.packet.data.len(), if i == 0 { big.len() } else { text.len() });
                assert_eq!(store.load_offset(text).await.unwrap(), i as u64 + 1);
                let events = by_type(&store, &[text], 0).await;
                assert_eq!(events.len(), 1, "events of type {text:?}");
                assert_eq!(events[0].envelope, envelopes[i]);
                let events = by_source(&store, text, text).await;
                assert_eq!(events.len(), 1, "events of source {text:?}");
                assert_eq!(events[0].envelope, envelopes[i]);
            }
            let q = store.load_queue_messages(100).await.unwrap();
            assert_eq!(q.len(), HOSTILE.len());
            assert_eq!(q[0].envelope.data, big);
            let ids: Vec<&str> = q.iter().map(QueueMessage::id).collect();
            assert_eq!(ids, HOSTILE);
            assert_eq!(store.next_event_offset().await.unwrap(), HOSTILE.len() as u64);
            // Every other application is untouched by this one's keys.
            if n > 0 {
                assert_eq!(store.load_offset(HOSTILE[0]).await.unwrap(), 1);
            }
            store.close().await.unwrap();
        }
        // Still one set of data per app key, none leaked or dropped.
        for app_key in HOSTILE {
            let store = provider.open(app_key).await.unwrap();
            assert_eq!(store.next_event_offset().await.unwrap(), HOSTILE.len() as u64, "app {app_key:?}");
            store.close().await.unwrap();
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Schema

fn connect(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

fn table_count(conn: &rusqlite::Connection) -> i64 {
    conn.query_row(
        "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name LIKE 'vellum\\_%' ESCAPE '\\'",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

#[test]
fn create_and_drop_schema_are_idempotent() {
    let (_dir, path) = temp_db();
    let mut conn = connect(&path);
    create_schema(&mut conn).unwrap();
    create_schema(&mut conn).unwrap();
    assert_eq!(table_count(&conn), 7);
    let version: i64 = conn.query_row("SELECT version FROM vellum_schema", [], |r| r.get(0)).unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    drop_schema(&mut conn).unwrap();
    drop_schema(&mut conn).unwrap();
    assert_eq!(table_count(&conn), 0);
    create_schema(&mut conn).unwrap();
    assert_eq!(table_count(&conn), 7);
}

#[test]
fn open_migrates_automatically_and_keeps_data() {
    let (_dir, path) = temp_db();
    runtime().block_on(async {
        let store = SqliteProvider::new(&path).unwrap().open("app").await.unwrap();
        store.persist(Batch::from(vec![Operation::SaveEvent(event("e", "A"))])).await.unwrap();
        store.close().await.unwrap();
        // Opening again (migration is idempotent) keeps the data.
        let store = SqliteProvider::new(&path).unwrap().open("app").await.unwrap();
        assert_eq!(store.next_event_offset().await.unwrap(), 1);
        store.close().await.unwrap();
    });
    assert_eq!(table_count(&connect(&path)), 7);
}

#[test]
fn open_without_migration_and_without_schema_is_a_clear_error() {
    let (_dir, path) = temp_db();
    runtime().block_on(async {
        let options = SqliteOptions::default().migrate(false);
        let provider = SqliteProvider::with_options(&path, options.clone()).unwrap();
        let err = provider.open("app").await.unwrap_err();
        let text = format!("{err}: {}", std::error::Error::source(&err).unwrap());
        assert!(text.contains("no vellum schema") && text.contains("create_schema"), "{text}");
        // The failed open released its lock; with the schema in place the same options work.
        create_schema(&mut connect(&path)).unwrap();
        provider.open("app").await.unwrap().close().await.unwrap();
    });
}

#[test]
fn newer_schema_version_is_refused() {
    let (_dir, path) = temp_db();
    let mut conn = connect(&path);
    create_schema(&mut conn).unwrap();
    conn.execute("UPDATE vellum_schema SET version = ?1", [SCHEMA_VERSION + 1]).unwrap();
    let text = |err: Error| format!("{err}: {}", std::error::Error::source(&err).unwrap());
    let err = text(create_schema(&mut conn).unwrap_err());
    assert!(
        err.contains(&format!("version {}", SCHEMA_VERSION + 1))
            && err.contains(&format!("version {SCHEMA_VERSION}")),
        "{err}"
    );
    runtime().block_on(async {
        for options in [SqliteOptions::default(), SqliteOptions::default().migrate(false)] {
            let err = SqliteProvider::with_options(&path, options).unwrap().open("app").await.unwrap_err();
            let err = text(err);
            assert!(err.contains(&format!("version {}", SCHEMA_VERSION + 1)), "{err}");
        }
    });
}

#[test]
fn urls_and_caller_owned_connections() {
    let (dir, path) = temp_db();
    assert!(SqliteProvider::from_url("postgres://x").is_err());
    assert!(SqliteProvider::from_url("sqlite://").is_err());
    let url = format!("sqlite://{}", path.display());
    assert!(url.starts_with("sqlite:///"));
    let provider = SqliteProvider::from_url(&url).unwrap();
    assert_eq!(provider.path().unwrap().file_name(), path.file_name());
    runtime().block_on(async {
        let store = provider.open("app").await.unwrap();
        store.persist(Batch::from(vec![save_offset("s", 0, 3)])).await.unwrap();
        store.close().await.unwrap();

        // A caller's connection: vellum uses it and leaves it open.
        let conn = Arc::new(Mutex::new(connect(&path)));
        let owned = SqliteProvider::from_connection(Arc::clone(&conn), SqliteOptions::default()).unwrap();
        let store = owned.open("app").await.unwrap();
        assert!(matches!(provider.open("app").await, Err(Error::Locked { .. })), "file locks apply");
        assert_eq!(store.load_offset("s").await.unwrap(), 3);
        store.persist(Batch::from(vec![save_offset("s", 3, 4)])).await.unwrap();
        store.close().await.unwrap();
        let n: i64 = conn
            .lock()
            .unwrap()
            .query_row("SELECT next_offset FROM vellum_offset", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 4, "the caller's connection is still open and sees the write");

        // An in-memory database: in-process exclusivity only.
        let memory = Arc::new(Mutex::new(rusqlite::Connection::open_in_memory().unwrap()));
        let owned = SqliteProvider::from_connection(memory, SqliteOptions::default()).unwrap();
        let store = owned.open("app").await.unwrap();
        assert!(matches!(owned.open("app").await, Err(Error::Locked { .. })));
        store.persist(Batch::from(vec![Operation::SaveEvent(event("e", "A"))])).await.unwrap();
        assert_eq!(store.next_event_offset().await.unwrap(), 1);
        store.close().await.unwrap();
        owned.open("app").await.unwrap().close().await.unwrap();
    });
    // A relative URL resolves against the working directory (nothing is created before open).
    let provider = SqliteProvider::from_url("sqlite://relative-name.db").unwrap();
    let cwd = std::env::current_dir().unwrap().canonicalize().unwrap();
    assert_eq!(provider.path().unwrap(), cwd.join("relative-name.db"));
    drop(dir);
}

#[test]
fn current_thread_runtime_works() {
    let (_dir, path) = temp_db();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let store = Arc::new(SqliteProvider::new(&path).unwrap().open("app").await.unwrap());
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    store
                        .persist(Batch::from(vec![Operation::SaveEvent(event(&format!("e{i}"), "A"))]))
                        .await
                        .unwrap()
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(store.next_event_offset().await.unwrap(), 16);
        let timeouts = vec![Operation::SaveQueueMessage(queue_message(
            timeout("t", DEFAULT_HANDLER_KEY, "<instance>", SystemTime::now()),
            SystemTime::now(),
        ))];
        store.persist(Batch::from(timeouts)).await.unwrap();
        store.close().await.unwrap();
    });
}

// ---------------------------------------------------------------------------------------------
// Crash safety

const CRASH_TASKS: usize = 8;
const CRASH_KEY: &str = "crash-app";
const CRASH_TYPE: &str = "CrashEvent";

fn crash_id(trial: usize, task: usize) -> String {
    format!("{trial}-{task}")
}

/// Batch `j` of `task` in `trial`: two events, the aggregate's meta-data at revision `j`, an
/// offset `j -> j+1` and a queue message, so a partial commit is detectable.
fn crash_batch(trial: usize, task: usize, j: u64) -> Batch {
    let id = crash_id(trial, task);
    let mut e0 = event(&format!("{id}-{j}-e0"), "A");
    e0.portable_name = CRASH_TYPE.into();
    let mut e1 = event(&format!("{id}-{j}-e1"), "A");
    e1.portable_name = CRASH_TYPE.into();
    Batch::from(vec![
        Operation::SaveEvent(e0),
        Operation::SaveEvent(e1),
        Operation::SaveAggregateMetaData(AggregateMetaData {
            last_event_id: format!("{id}-{j}-e1"),
            ..aggregate("crash", &id, j)
        }),
        save_offset(&id, j, j + 1),
        Operation::SaveQueueMessage(queue_message(command(&format!("{id}-{j}-q"), "A"), SystemTime::now())),
    ])
}

/// Checks the state after `trials` trials: every acknowledged batch present, no batch partial,
/// offsets dense.
async fn check_crash_state(path: &Path, trials: usize, acked: &HashMap<(usize, usize), u64>) -> u64 {
    let provider = SqliteProvider::new(path).unwrap();
    let store =
        provider.open(CRASH_KEY).await.expect("reopen after the crash (the lock died with the child)");
    let events = by_type(&store, &[CRASH_TYPE], 0).await;
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.offset, i as u64, "offsets are not dense");
    }
    assert_eq!(store.next_event_offset().await.unwrap(), events.len() as u64);
    let event_ids: HashSet<&str> = events.iter().map(|e| e.envelope.message_id.as_str()).collect();
    let q = store.load_queue_messages(usize::MAX).await.unwrap();
    let queued: HashSet<&str> = q.iter().map(QueueMessage::id).collect();
    let mut total = 0;
    for trial in 0..trials {
        for task in 0..CRASH_TASKS {
            let id = crash_id(trial, task);
            let md = store.load_aggregate_meta_data("crash", &id).await.unwrap();
            let committed = md.revision;
            assert_eq!(store.load_offset(&id).await.unwrap(), committed, "{id}: offset vs aggregate");
            if committed > 0 {
                assert_eq!(md.last_event_id, format!("{id}-{}-e1", committed - 1));
            }
            if let Some(&j) = acked.get(&(trial, task)) {
                assert!(committed > j, "{id}: batch {j} was acknowledged but is not (fully) present");
            }
            for j in 0..committed + 2 {
                let want = j < committed;
                for part in [format!("{id}-{j}-e0"), format!("{id}-{j}-e1")] {
                    assert_eq!(event_ids.contains(part.as_str()), want, "{part}: partial batch");
                }
                assert_eq!(
                    queued.contains(format!("{id}-{j}-q").as_str()),
                    want,
                    "{id}-{j}-q: partial batch"
                );
            }
            total += committed;
        }
    }
    assert_eq!(events.len() as u64, 2 * total, "events of no batch");
    assert_eq!(q.len() as u64, total, "queue messages of no batch");
    store.close().await.unwrap();
    total
}

/// A pseudo-random delay for trial `i`, mixed with the clock.
fn kill_delay(i: usize) -> Duration {
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().subsec_nanos();
    let x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(nanos);
    Duration::from_micros(x % 120_000)
}

fn crash_trials(trials: usize) {
    let (_dir, path) = temp_db();
    runtime().block_on(async {
        SqliteProvider::new(&path).unwrap().open(CRASH_KEY).await.unwrap().close().await.unwrap();
    });
    let mut acked: HashMap<(usize, usize), u64> = HashMap::new();
    let mut committed = 0;
    for trial in 0..trials {
        let mut child = spawn_child("crash", &path, CRASH_KEY, trial);
        let (lines, ready, reader) = collect_lines(&mut child.0, "READY");
        ready.recv_timeout(Duration::from_secs(30)).expect("the child never became ready");
        std::thread::sleep(kill_delay(trial));
        child.0.kill().unwrap();
        child.0.wait().unwrap();
        reader.join().unwrap();
        for line in lines.lock().unwrap().iter() {
            let Some(at) = line.find("ACK ") else { continue };
            let mut parts = line[at..].split(' ');
            if parts.next() == Some("ACK") {
                let task: usize = parts.next().unwrap().parse().unwrap();
                let j: u64 = parts.next().unwrap().parse().unwrap();
                let entry = acked.entry((trial, task)).or_insert(j);
                *entry = (*entry).max(j);
            }
        }
        committed = runtime().block_on(check_crash_state(&path, trial + 1, &acked));
    }
    let acknowledged: u64 = acked.values().map(|j| j + 1).sum();
    eprintln!("{trials} SIGKILL trials: {acknowledged} batches acknowledged, {committed} committed");
    assert!(committed >= acknowledged);
}

#[test]
fn crash_safety_under_sigkill() {
    crash_trials(30);
}

#[test]
#[ignore = "long: 300 SIGKILL trials"]
fn crash_safety_under_sigkill_long() {
    crash_trials(300);
}

/// The tables as schema version 1 laid them out: no checksum columns.
const SCHEMA_1: &str = "
CREATE TABLE vellum_schema (id INTEGER PRIMARY KEY CHECK (id = 0), version INTEGER NOT NULL) STRICT;
CREATE TABLE vellum_app (app_key TEXT NOT NULL PRIMARY KEY, next_offset INTEGER NOT NULL,
    next_sequence INTEGER NOT NULL) STRICT, WITHOUT ROWID;
CREATE TABLE vellum_event (app_key TEXT NOT NULL, event_offset INTEGER NOT NULL, message_id TEXT NOT NULL,
    portable_name TEXT NOT NULL, handler_key TEXT NOT NULL, instance_id TEXT NOT NULL, envelope BLOB NOT NULL,
    UNIQUE (app_key, event_offset), UNIQUE (app_key, message_id)) STRICT;
CREATE INDEX vellum_event_by_type ON vellum_event (app_key, portable_name, event_offset);
CREATE INDEX vellum_event_by_source ON vellum_event (app_key, handler_key, instance_id, event_offset);
CREATE TABLE vellum_aggregate (app_key TEXT NOT NULL, handler_key TEXT NOT NULL, instance_id TEXT NOT NULL,
    revision INTEGER NOT NULL, last_event_id TEXT NOT NULL, PRIMARY KEY (app_key, handler_key, instance_id))
    STRICT, WITHOUT ROWID;
CREATE TABLE vellum_process (app_key TEXT NOT NULL, handler_key TEXT NOT NULL, instance_id TEXT NOT NULL,
    revision INTEGER NOT NULL, media_type TEXT NOT NULL, data BLOB NOT NULL,
    UNIQUE (app_key, handler_key, instance_id)) STRICT;
CREATE TABLE vellum_queue (app_key TEXT NOT NULL, message_id TEXT NOT NULL, revision INTEGER NOT NULL,
    failure_count INTEGER NOT NULL, next_attempt_at INTEGER NOT NULL, sequence INTEGER NOT NULL,
    timeout_handler_key TEXT, timeout_instance_id TEXT, envelope BLOB NOT NULL, UNIQUE (app_key, message_id)) STRICT;
CREATE INDEX vellum_queue_by_time ON vellum_queue (app_key, next_attempt_at, sequence, message_id);
CREATE INDEX vellum_queue_by_owner ON vellum_queue (app_key, timeout_handler_key, timeout_instance_id)
    WHERE timeout_handler_key IS NOT NULL;
CREATE TABLE vellum_offset (app_key TEXT NOT NULL, source_app_key TEXT NOT NULL, next_offset INTEGER NOT NULL,
    PRIMARY KEY (app_key, source_app_key)) STRICT, WITHOUT ROWID;
INSERT INTO vellum_schema (id, version) VALUES (0, 1);
";

#[test]
fn a_schema_1_database_is_upgraded_with_checksums_and_reads_back() {
    use vellum_core::BulkStore;

    let (_dir, path) = temp_db();
    {
        let conn = connect(&path);
        conn.execute_batch(SCHEMA_1).unwrap();
        let e0 = event("e0", "A");
        let envelope = e0.to_bytes();
        conn.execute(
            "INSERT INTO vellum_event VALUES ('app', 0, 'e0', ?1, ?2, ?3, ?4)",
            rusqlite::params![e0.portable_name, e0.source_handler_key(), e0.source_instance_id, envelope],
        )
        .unwrap();
        conn.execute("INSERT INTO vellum_app VALUES ('app', 1, 0)", []).unwrap();
        conn.execute("INSERT INTO vellum_aggregate VALUES ('app', 'h', 'i', 3, 'e0')", []).unwrap();
        conn.execute("INSERT INTO vellum_offset VALUES ('app', 'src', 9)", []).unwrap();
    }
    runtime().block_on(async {
        let store = SqliteProvider::new(&path).unwrap().open("app").await.unwrap();
        assert_eq!(store.next_event_offset().await.unwrap(), 1);
        assert_eq!(store.load_aggregate_meta_data("h", "i").await.unwrap().revision, 3);
        assert_eq!(store.load_offset("src").await.unwrap(), 9);
        let mut cursor = store.load_events_by_type(&[&event("e0", "A").portable_name], 0).await.unwrap();
        assert_eq!(cursor.next().await.unwrap().unwrap().envelope, event("e0", "A"));
        let report = store.verify(&mut |_| {}).await.unwrap();
        assert!(report.is_clean(), "{:?}", report.problems);
        store.close().await.unwrap();
    });
    let version: i64 =
        connect(&path).query_row("SELECT version FROM vellum_schema", [], |r| r.get(0)).unwrap();
    assert_eq!(version, SCHEMA_VERSION);
}

#[test]
fn a_changed_row_is_a_corrupt_error_and_verify_names_it() {
    use vellum_core::{BulkStore, ErrorKind};

    let (_dir, path) = temp_db();
    let rt = runtime();
    let name = event("e0", "A").portable_name;
    rt.block_on(async {
        let store = SqliteProvider::new(&path).unwrap().open("app").await.unwrap();
        let events: Vec<Operation> =
            (0..5).map(|i| Operation::SaveEvent(event(&format!("e{i}"), "A"))).collect();
        store.persist(Batch::from(events)).await.unwrap();
        assert!(store.verify(&mut |_| {}).await.unwrap().is_clean());
        store.close().await.unwrap();
    });
    {
        let conn = connect(&path);
        // A flipped payload byte, and an index column moved to another type.
        let mut envelope: Vec<u8> = conn
            .query_row("SELECT envelope FROM vellum_event WHERE event_offset = 2", [], |r| r.get(0))
            .unwrap();
        envelope[3] ^= 0x01;
        conn.execute("UPDATE vellum_event SET envelope = ?1 WHERE event_offset = 2", [envelope]).unwrap();
        conn.execute("UPDATE vellum_event SET portable_name = 'Other' WHERE event_offset = 4", []).unwrap();
    }
    rt.block_on(async {
        let store = SqliteProvider::new(&path).unwrap().open("app").await.unwrap();
        let mut cursor = store.load_events_by_type(&[&name], 0).await.unwrap();
        let error = loop {
            match cursor.next().await {
                Ok(Some(e)) => assert!(e.offset < 2, "event {} was served", e.offset),
                Ok(None) => panic!("the damaged event was served"),
                Err(e) => break e,
            }
        };
        assert_eq!(error.kind(), ErrorKind::Corrupt, "{error}");
        assert!(
            error.to_string().contains("offset 2") && error.to_string().contains("vellum_event"),
            "{error}"
        );
        let mut other = store.load_events_by_type(&["Other"], 0).await.unwrap();
        assert_eq!(other.next().await.unwrap_err().kind(), ErrorKind::Corrupt);
        let report = store.verify(&mut |_| {}).await.unwrap();
        let problems: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
        assert!(
            problems.iter().any(|p| p.starts_with("event at offset 2") && p.contains("checksum")),
            "{problems:#?}"
        );
        assert!(
            problems.iter().any(|p| p.starts_with("event at offset 4") && p.contains("portable_name")),
            "{problems:#?}"
        );
        assert_eq!(report.engine_check.as_deref(), Some("SQLite PRAGMA integrity_check"));
        store.close().await.unwrap();
    });
}

#[test]
fn a_store_with_nothing_written_verifies_clean() {
    use vellum_core::BulkStore;

    let (_dir, path) = temp_db();
    runtime().block_on(async {
        let store = SqliteProvider::new(&path).unwrap().open("empty").await.unwrap();
        let report = store.verify(&mut |_| {}).await.unwrap();
        assert!(report.is_clean(), "{:?}", report.problems);
        store.close().await.unwrap();
    });
}
