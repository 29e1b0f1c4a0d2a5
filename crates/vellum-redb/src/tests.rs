//! Tests of what is particular to this provider: file names and keys, bad files, group commit.
//! The behaviour every provider shares is checked by the conformance suite (see `lib.rs`);
//! locking across processes and crash safety are in `tests/`.

use std::path::Path;
use std::sync::Arc;

use vellum_core::{
    Batch, DataStore, Envelope, Error, ErrorKind, EventRepository, OffsetRepository, Operation, Persister,
    Provider, QueueMessage, QueueRepository, Result,
};

use crate::layout::{META, META_LAYOUT_VERSION};
use crate::{RedbProvider, RedbStore};

/// A message ID whose `SaveEvent` fails with a storage error while being written (test builds only).
pub(crate) const INJECT_STORAGE_FAILURE: &str = "<inject-storage-failure>";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn event(id: &str) -> Envelope {
    Envelope {
        message_id: id.to_owned(),
        portable_name: "T".into(),
        media_type: "application/json; type=\"T\"".into(),
        data: id.as_bytes().to_vec(),
        ..Envelope::default()
    }
}

fn save_offset(app: &str, current: u64, next: u64) -> Operation {
    Operation::SaveOffset { application_key: app.into(), current_offset: current, next_offset: next }
}

/// Fills a store with events, queue messages and offsets, and closes it.
async fn fill(provider: &RedbProvider, key: &str, batches: usize) {
    let store = provider.open(key).await.unwrap();
    for b in 0..batches {
        let mut ops: Vec<Operation> =
            (0..10).map(|e| Operation::SaveEvent(event(&format!("e{b}-{e}")))).collect();
        ops.push(Operation::SaveQueueMessage(QueueMessage {
            revision: 0,
            failure_count: 0,
            next_attempt_at: std::time::UNIX_EPOCH,
            envelope: event(&format!("q{b}")),
        }));
        ops.push(save_offset("src", b as u64, b as u64 + 1));
        store.persist(Batch::from(ops)).await.unwrap();
    }
    store.close().await.unwrap();
}

/// Every read, and a write; each must be Ok or a storage error naming `path`.
async fn exercise(store: &RedbStore, path: &Path) {
    let named = |what: &str, r: Result<()>| match r {
        Ok(()) => {}
        Err(e @ Error::Storage { .. }) => {
            assert!(
                e.to_string().contains(&path.display().to_string()),
                "{what}: {e} does not name the file"
            );
        }
        Err(e) => panic!("{what}: expected Ok or Storage, got {e:?}"),
    };
    named("next_event_offset", store.next_event_offset().await.map(drop));
    named("load_offset", store.load_offset("src").await.map(drop));
    named("load_queue_messages", store.load_queue_messages(1000).await.map(drop));
    let events = match store.load_events_by_type(&["T"], 0).await {
        Ok(cursor) => cursor.collect().await.map(drop),
        Err(e) => Err(e),
    };
    named("load_events_by_type", events);
    named("persist", store.persist(Batch::from(vec![Operation::SaveEvent(event("new"))])).await.map(drop));
}

thread_local! {
    /// The kinds of the damage errors `open_damaged` saw on this thread.
    static DAMAGE_KINDS: std::cell::RefCell<Vec<vellum_core::ErrorKind>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Opens `key`; the outcome must be a store or a storage error naming the file, never a panic.
async fn open_damaged(provider: &RedbProvider, key: &str) -> Option<RedbStore> {
    let path = provider.file_path(key);
    let canonical = std::fs::canonicalize(&path).unwrap();
    match provider.open(key).await {
        Ok(store) => {
            exercise(&store, &canonical).await;
            Some(store)
        }
        Err(e @ Error::Storage { .. }) => {
            let text = e.to_string();
            assert!(text.contains(&canonical.display().to_string()), "{text} does not name the file");
            // Damage is Corrupt (give up, restore a backup); never something worth retrying.
            assert!(!e.is_retryable(), "{e:?}");
            DAMAGE_KINDS.with(|kinds| kinds.borrow_mut().push(e.kind()));
            None
        }
        Err(e) => panic!("expected a store or a storage error, got {e:?}"),
    }
}

#[test]
fn empty_unicode_and_odd_keys_work_and_are_isolated() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let provider = RedbProvider::new(dir.path());
        let keys = ["", "日本語 🎉", "a/b\\c", "'\"; DROP TABLE", "A", "a", ".", "..", &"k".repeat(500)];
        let mut stores = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let store = provider.open(key).await.unwrap();
            assert_eq!(store.app_key(), *key);
            store.persist(Batch::from(vec![save_offset("src", 0, i as u64 + 10)])).await.unwrap();
            stores.push(store);
        }
        let files: std::collections::HashSet<_> = stores.iter().map(|s| s.path().to_owned()).collect();
        assert_eq!(files.len(), keys.len());
        assert!(files.iter().all(|f| f.parent() == Some(&std::fs::canonicalize(dir.path()).unwrap())));
        for store in &stores {
            store.close().await.unwrap();
        }
        let again = RedbProvider::new(dir.path());
        for (i, key) in keys.iter().enumerate() {
            let store = again.open(key).await.unwrap();
            assert_eq!(store.load_offset("src").await.unwrap(), i as u64 + 10, "key {key:?}");
            store.close().await.unwrap();
        }
    });
}

#[test]
fn future_layout_version_is_refused_naming_the_file() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let provider = RedbProvider::new(dir.path());
        fill(&provider, "app", 1).await;
        let path = std::fs::canonicalize(provider.file_path("app")).unwrap();
        {
            let db = redb::Database::open(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert(META_LAYOUT_VERSION, 99u64.to_be_bytes().as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        let err = provider.open("app").await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::Storage { .. }), "{err:?}");
        assert!(text.contains(&path.display().to_string()) && text.contains("layout version 99"), "{text}");
        // Refusing released the key: a correct file opens again.
        {
            let db = redb::Database::open(&path).unwrap();
            let txn = db.begin_write().unwrap();
            let version = crate::LAYOUT_VERSION.to_be_bytes();
            txn.open_table(META).unwrap().insert(META_LAYOUT_VERSION, version.as_slice()).unwrap();
            txn.commit().unwrap();
        }
        provider.open("app").await.unwrap().close().await.unwrap();
    });
}

#[test]
fn a_file_of_another_key_or_program_is_refused() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let provider = RedbProvider::new(dir.path());
        fill(&provider, "first", 1).await;
        std::fs::copy(provider.file_path("first"), provider.file_path("second")).unwrap();
        let text = provider.open("second").await.unwrap_err().to_string();
        assert!(text.contains("belongs to application \"first\", not \"second\""), "{text}");
        assert!(text.contains("app.second.redb"), "{text}");

        let other = provider.file_path("other");
        {
            let db = redb::Database::create(&other).unwrap();
            let txn = db.begin_write().unwrap();
            let def: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("theirs");
            txn.open_table(def).unwrap().insert(1, 2).unwrap();
            txn.commit().unwrap();
        }
        let text = provider.open("other").await.unwrap_err().to_string();
        assert!(text.contains("app.other.redb") && text.contains("something else"), "{text}");

        std::fs::write(provider.file_path("text"), b"this is not a database at all, just text\n".repeat(50))
            .unwrap();
        assert!(open_damaged(&provider, "text").await.is_none());
    });
}

#[test]
fn truncated_files_give_storage_errors_naming_the_file() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let provider = RedbProvider::new(dir.path());
        fill(&provider, "full", 40).await;
        let original = std::fs::read(provider.file_path("full")).unwrap();
        for keep in [original.len() / 2, original.len() * 3 / 4, original.len() - 1, 4096, 600, 100, 1] {
            std::fs::write(provider.file_path("full"), &original[..keep]).unwrap();
            if let Some(store) = open_damaged(&provider, "full").await {
                store.close().await.ok();
            }
        }
    });
}

/// A store file damaged while closed (emptied, truncated, its first bytes overwritten) is
/// refused at open, with or without the integrity check: a `Corrupt` error naming the file, and
/// the file left exactly as it was; never a new, empty store in its place. Put back, it opens with
/// its data.
#[test]
fn damaged_files_are_refused_at_open_and_left_unchanged() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let plain = RedbProvider::new(dir.path());
        let checked = RedbProvider::new(dir.path()).with_integrity_check(true);
        fill(&plain, "app", 40).await;
        let path = plain.file_path("app");
        let canonical = std::fs::canonicalize(&path).unwrap();
        let original = std::fs::read(&path).unwrap();
        let mut overwritten = original.clone();
        overwritten[..16].copy_from_slice(b"\0\0 garbage bytes");
        let damage: [(&str, Vec<u8>, &str); 5] = [
            ("emptied", Vec::new(), "is empty (0 bytes)"),
            ("truncated to 100 bytes", original[..100].to_vec(), "shorter than a redb file header"),
            ("truncated to 4096 bytes", original[..4096].to_vec(), "is damaged"),
            ("truncated to half", original[..original.len() / 2].to_vec(), "is damaged"),
            ("first bytes overwritten", overwritten, "does not start with redb's magic number"),
        ];
        for (what, bytes, says) in &damage {
            for provider in [&plain, &checked] {
                std::fs::write(&path, bytes).unwrap();
                let err = provider.open("app").await.map(drop).unwrap_err();
                let text = err.to_string();
                eprintln!("{what}: {text}");
                assert_eq!(err.kind(), vellum_core::ErrorKind::Corrupt, "{what}: {err:?}");
                assert!(
                    text.contains(&canonical.display().to_string()),
                    "{what}: {text} does not name the file"
                );
                assert!(text.contains(says), "{what}: {text} does not say {says:?}");
                assert!(std::fs::read(&path).unwrap() == *bytes, "{what}: the failed open changed the file");
            }
        }
        // Nothing but the store file is left in the directory (no temporary files).
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [path.file_name().unwrap()], "{names:?}");

        std::fs::write(&path, &original).unwrap();
        let store = plain.open("app").await.unwrap();
        assert_eq!(store.next_event_offset().await.unwrap(), 400);
        store.close().await.unwrap();
    });
}

/// Only a missing file is created, complete under its name: the directory holds nothing else
/// afterwards, and the new store is empty and keeps what is written to it.
#[test]
fn a_missing_file_is_created_as_a_new_store() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let provider = RedbProvider::new(dir.path().join("new"));
        let store = provider.open("app").await.unwrap();
        assert_eq!(store.next_event_offset().await.unwrap(), 0);
        store.persist(Batch::from(vec![Operation::SaveEvent(event("e"))])).await.unwrap();
        store.close().await.unwrap();
        let names: Vec<_> =
            std::fs::read_dir(dir.path().join("new")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["app.app.redb"], "{names:?}");
        let store = provider.open("app").await.unwrap();
        assert_eq!(store.next_event_offset().await.unwrap(), 1);
        store.close().await.unwrap();
    });
}

#[test]
fn corrupted_files_give_storage_errors_naming_the_file_never_panics() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let plain = RedbProvider::new(dir.path());
        let checked = RedbProvider::new(dir.path()).with_integrity_check(true);
        fill(&plain, "app", 40).await;
        let path = plain.file_path("app");
        let original = std::fs::read(&path).unwrap();
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut random = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (mut refused, mut checked_refused) = (0, 0);
        for _ in 0..24 {
            let mut bytes = original.clone();
            let at = (random() % bytes.len() as u64) as usize;
            let len = 1 + (random() % 512) as usize;
            for b in bytes.iter_mut().skip(at).take(len) {
                *b = random() as u8;
            }
            for (provider, count) in [(&plain, &mut refused), (&checked, &mut checked_refused)] {
                std::fs::write(&path, &bytes).unwrap();
                match open_damaged(provider, "app").await {
                    Some(store) => store.close().await.ok().unwrap_or(()),
                    None => *count += 1,
                }
            }
        }
        eprintln!(
            "corruption refused at open: {refused}/24 plain, {checked_refused}/24 with integrity check"
        );
        let kinds = DAMAGE_KINDS.with(std::cell::RefCell::take);
        eprintln!("damage error kinds: {kinds:?}");
        assert!(
            kinds.contains(&vellum_core::ErrorKind::Corrupt),
            "a damaged file that redb detects is reported as Corrupt: {kinds:?}"
        );
    });
}

/// Batches waiting together share one transaction; in it, a batch conflicting with an earlier
/// batch of the same group fails alone.
#[test]
fn group_commit_isolates_conflicts() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(RedbProvider::new(dir.path()).open("app").await.unwrap());
        let n = 200;
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    // All race for offset 0 -> 1 of one source; each also appends an event.
                    let ops = vec![save_offset("src", 0, 1), Operation::SaveEvent(event(&format!("e{i}")))];
                    let contended = store.persist(Batch::from(ops)).await;
                    let own = store
                        .persist(Batch::from(vec![Operation::SaveEvent(event(&format!("own{i}")))]))
                        .await;
                    (contended, own)
                })
            })
            .collect();
        let mut won = 0;
        for task in tasks {
            let (contended, own) = task.await.unwrap();
            match contended {
                Ok(result) => {
                    won += 1;
                    assert_eq!(result.event_offsets.len(), 1);
                }
                Err(e) => assert!(e.is_conflict(), "{e:?}"),
            }
            own.unwrap();
        }
        assert_eq!(won, 1, "exactly one batch takes offset 0 -> 1");
        assert_eq!(store.next_event_offset().await.unwrap(), n + 1);
        let offsets: Vec<u64> = store
            .load_events_by_type(&["T"], 0)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap()
            .iter()
            .map(|e| e.offset)
            .collect();
        assert_eq!(offsets, (0..=n).collect::<Vec<_>>());
        let transactions = store.write_transactions();
        assert!(
            transactions < n + 1,
            "{transactions} transactions for {} committed batches: no grouping",
            n + 1
        );
        eprintln!("{} committed batches in {transactions} transactions", n + 1);
        store.close().await.unwrap();
    });
}

/// A storage failure while writing one batch of a group fails that batch alone: the group is
/// retried one batch per transaction.
#[test]
fn storage_failure_in_a_group_fails_only_the_culprit() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(RedbProvider::new(dir.path()).open("app").await.unwrap());
        for round in 0..5 {
            let tasks: Vec<_> = (0..32)
                .map(|i| {
                    let store = Arc::clone(&store);
                    let id =
                        if i == 16 { INJECT_STORAGE_FAILURE.to_owned() } else { format!("r{round}-e{i}") };
                    tokio::spawn(async move {
                        store.persist(Batch::from(vec![Operation::SaveEvent(event(&id))])).await
                    })
                })
                .collect();
            for (i, task) in tasks.into_iter().enumerate() {
                match task.await.unwrap() {
                    Ok(_) => assert_ne!(i, 16),
                    Err(e @ Error::Storage { .. }) => assert_eq!(i, 16, "{e}"),
                    Err(e) => panic!("{e:?}"),
                }
            }
            assert_eq!(store.next_event_offset().await.unwrap(), 31 * (round + 1));
        }
        store.close().await.unwrap();
    });
}

/// `close` releases the file: the same process can open it again at once, through redb itself.
#[test]
fn close_and_drop_release_the_file() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let provider = RedbProvider::new(dir.path());
        let store = provider.open("app").await.unwrap();
        let cursor = store.load_events_by_type(&["T"], 0).await.unwrap();
        store.close().await.unwrap();
        // The cursor does not hold the file open.
        drop(redb::Database::open(provider.file_path("app")).unwrap());
        drop(cursor);
        let store = provider.open("app").await.unwrap();
        assert!(matches!(provider.open("app").await, Err(Error::Locked { .. })));
        drop(store);
        // Dropping releases too; an open meanwhile waits for the writer to let go.
        provider.open("app").await.expect("a dropped store releases its key").close().await.unwrap();
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
/// finish and close the file (it never sees `Locked`), and every acknowledged batch is there; the
/// batch in flight at the drop is there whole or not at all.
#[test]
fn a_dropped_store_opens_again_at_once_with_its_data() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let provider = RedbProvider::new(dir.path());
        let mut waits = Vec::new();
        for round in 0..5_u64 {
            let store = provider.open("app").await.unwrap();
            for b in 0..5 {
                let ops = vec![save_offset(&format!("r{round}"), b, b + 1)];
                store.persist(Batch::from(ops)).await.unwrap();
            }
            // In rounds 0-2, a large batch queued and taken by the writer, then abandoned with
            // the store; in rounds 3-4 the queue is empty when the store is dropped.
            if round < 3 {
                let big: Vec<Operation> =
                    (0..2_000).map(|e| Operation::SaveEvent(event(&format!("big{round}-{e}")))).collect();
                let in_flight = poll_once(Box::pin(store.persist(Batch::from(big)))).await;
                std::thread::sleep(std::time::Duration::from_millis(2));
                drop(in_flight);
            }
            drop(store);
            let started = std::time::Instant::now();
            let store = provider.open("app").await.expect("a dropped store's key opens again at once");
            waits.push(started.elapsed());
            for r in 0..=round {
                assert_eq!(store.load_offset(&format!("r{r}")).await.unwrap(), 5);
            }
            let events = store.load_events_by_type(&["T"], 0).await.unwrap().collect().await.unwrap();
            let big =
                events.iter().filter(|e| e.envelope.message_id.starts_with(&format!("big{round}-"))).count();
            assert!(big == 0 || big == 2_000, "a batch is never partly applied: {big} events");
            let in_flight = match (round < 3, big) {
                (false, _) => "none",
                (true, 0) => "skipped",
                (true, _) => "committed",
            };
            let waited = waits[usize::try_from(round).unwrap()];
            println!("round {round}: reopened after the drop in {waited:?}; batch in flight: {in_flight}");
            store.close().await.unwrap();
        }
        // For comparison: an open when nothing is being released.
        let started = std::time::Instant::now();
        let store = provider.open("app").await.unwrap();
        let open = started.elapsed();
        store.close().await.unwrap();
        println!("reopen after drop: {waits:?}; an open after a close: {open:?}");
    });
}

/// docs/locking.md#redb: the registry of open files is keyed by canonical path, so a store
/// reached through a symbolic link to its directory or to its file is the same store: `Locked`
/// while it is open, the same data after. A dangling link is followed to the file it names.
#[cfg(unix)]
#[test]
fn a_symlinked_directory_or_file_reaches_the_same_lock() {
    use std::os::unix::fs::symlink;
    runtime().block_on(async {
        let root = tempfile::tempdir().unwrap();
        let real = root.path().join("real");
        let provider = RedbProvider::new(&real);
        let store = provider.open("app").await.unwrap();
        store.persist(Batch::from(vec![save_offset("s", 0, 1)])).await.unwrap();

        let linked_dir = root.path().join("linked-dir");
        symlink(&real, &linked_dir).unwrap();
        let other_dir = root.path().join("other");
        std::fs::create_dir(&other_dir).unwrap();
        symlink(provider.file_path("app"), other_dir.join(crate::layout::file_name("app"))).unwrap();
        for via in [&linked_dir, &other_dir] {
            let started = std::time::Instant::now();
            match RedbProvider::new(via).open("app").await {
                Err(Error::Locked { app_key }) => assert_eq!(app_key, "app"),
                other => panic!("open through {} while the store is open: {other:?}", via.display()),
            }
            assert!(started.elapsed() < std::time::Duration::from_secs(1));
        }
        store.close().await.unwrap();
        for via in [&linked_dir, &other_dir] {
            let store = RedbProvider::new(via).open("app").await.unwrap();
            assert_eq!(store.path(), std::fs::canonicalize(provider.file_path("app")).unwrap());
            assert_eq!(store.load_offset("s").await.unwrap(), 1);
            store.close().await.unwrap();
        }

        // A dangling link: the file is created where it points, and both names share the lock.
        let target = real.join("target.redb");
        symlink(&target, other_dir.join(crate::layout::file_name("new"))).unwrap();
        let store = RedbProvider::new(&other_dir).open("new").await.unwrap();
        assert_eq!(store.path(), std::fs::canonicalize(&target).unwrap());
        assert!(std::fs::symlink_metadata(&target).unwrap().is_file());
        assert!(matches!(RedbProvider::new(&other_dir).open("new").await, Err(Error::Locked { .. })));
        store.close().await.unwrap();
    });
}

/// docs/locking.md#fencing: if the store's file is replaced or removed under it (another store
/// could then open a new file under the path), the next persist fails with kind `Fenced`, and so
/// does every later one, even once the file is back; close succeeds and the key opens again.
#[cfg(unix)]
#[test]
fn a_replaced_or_removed_file_fences_the_store() {
    runtime().block_on(async {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("files");
        let provider = RedbProvider::new(&dir);

        // Renamed away and replaced by a copy.
        let store = provider.open("app").await.unwrap();
        let path = store.path().to_owned();
        persist(&store, 0).await.unwrap();
        let moved = path.with_extension("moved");
        std::fs::rename(&path, &moved).unwrap();
        std::fs::copy(&moved, &path).unwrap();
        let e = persist(&store, 1).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Fenced, "{e:?}");
        let text = e.to_string();
        assert!(text.contains(&path.display().to_string()) && text.contains("\"app\""), "{text}");
        println!("{text}");
        assert!(store.is_fenced(), "the store says it is fenced");
        // Fenced for good, even with the original file back under its name.
        std::fs::rename(&moved, &path).unwrap();
        assert_eq!(persist(&store, 1).await.unwrap_err().kind(), ErrorKind::Fenced);
        store.close().await.unwrap();
        let store = provider.open("app").await.unwrap();
        assert_eq!(store.load_offset("s").await.unwrap(), 1);
        persist(&store, 1).await.unwrap();

        // The whole directory removed.
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(persist(&store, 2).await.unwrap_err().kind(), ErrorKind::Fenced);
        store.close().await.unwrap();
        let store = provider.open("app").await.unwrap();
        assert_eq!(store.load_offset("s").await.unwrap(), 0, "a new, empty store");
        store.close().await.unwrap();
    });
}

/// Persists offset `n` -> `n + 1` of source `s`.
async fn persist(store: &RedbStore, n: u64) -> Result<vellum_core::PersistResult> {
    store.persist(Batch::from(vec![save_offset("s", n, n + 1)])).await
}

/// The fencing check is one `stat` of the file per unit of work: prints its cost next to that
/// of a durable one-batch commit.
#[test]
fn the_fencing_check_costs_microseconds() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbProvider::new(dir.path()).open("app").await.unwrap();
        let n = 10_000_u32;
        let started = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(std::fs::metadata(store.path()).unwrap());
        }
        let stat = started.elapsed() / n;
        let commits = 100_u32;
        let started = std::time::Instant::now();
        for i in 0..u64::from(commits) {
            store.persist(Batch::from(vec![save_offset("s", i, i + 1)])).await.unwrap();
        }
        let commit = started.elapsed() / commits;
        println!("fencing check (one stat): {stat:?} per unit of work; a one-batch persist: {commit:?}");
        assert!(stat < std::time::Duration::from_millis(1), "{stat:?}");
        store.close().await.unwrap();
    });
}

#[test]
fn a_flipped_payload_byte_is_a_corrupt_error_naming_the_offset_never_a_wrong_value() {
    let dir = tempfile::tempdir().unwrap();
    let provider = RedbProvider::new(dir.path());
    let rt = runtime();
    rt.block_on(fill(&provider, "app", 5));
    let path = dir.path().join(crate::layout::file_name("app"));
    let mut bytes = std::fs::read(&path).unwrap();
    // Every copy of the payload "e3-7" (the event at offset 37): the live one is among them.
    let needle = b"e3-7";
    let hits: Vec<usize> = (0..bytes.len() - needle.len()).filter(|&i| &bytes[i..i + 4] == needle).collect();
    assert!(!hits.is_empty());
    for i in hits {
        bytes[i + 3] ^= 0x01;
    }
    std::fs::write(&path, bytes).unwrap();
    rt.block_on(async {
        let store = provider.open("app").await.unwrap();
        let mut cursor = store.load_events_by_type(&["T"], 0).await.unwrap();
        let error = loop {
            match cursor.next().await {
                Ok(Some(event)) => assert_ne!(event.offset, 37, "a damaged event was served"),
                Ok(None) => panic!("every event was served, the damaged one too"),
                Err(e) => break e,
            }
        };
        assert_eq!(error.kind(), vellum_core::ErrorKind::Corrupt, "{error}");
        let text = error.to_string();
        assert!(text.contains("offset 37") && text.contains(&path.display().to_string()), "{text}");
        store.close().await.unwrap();
    });
}

#[test]
fn verify_is_clean_on_a_sound_file_and_names_each_damage() {
    use redb::{ReadableDatabase as _, ReadableTable as _};
    use vellum_core::BulkStore;

    let dir = tempfile::tempdir().unwrap();
    let provider = RedbProvider::new(dir.path()).with_integrity_check(true);
    let rt = runtime();
    rt.block_on(fill(&provider, "app", 3));
    let report = rt.block_on(async {
        let store = provider.open("app").await.unwrap();
        let report = store.verify(&mut |_| {}).await.unwrap();
        store.close().await.unwrap();
        report
    });
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.records, 3 * 11 + 1, "30 events, 3 queue messages, 1 offset");
    assert!(report.engine_check.is_some());

    // Lose one by-type entry and change one event's bytes behind vellum's back.
    let path = dir.path().join(crate::layout::file_name("app"));
    {
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(crate::layout::EVENTS_BY_TYPE).unwrap().remove(("T", 4)).unwrap();
        let mut events = txn.open_table(crate::layout::EVENTS).unwrap();
        let mut bytes = events.get(7).unwrap().unwrap().value().to_vec();
        bytes[2] ^= 0x40;
        events.insert(7, bytes.as_slice()).unwrap();
        drop(events);
        txn.commit().unwrap();
        let _ = db.begin_read().unwrap();
    }
    let report = rt.block_on(async {
        let store = RedbProvider::new(dir.path()).open("app").await.unwrap();
        let report = store.verify(&mut |_| {}).await.unwrap();
        store.close().await.unwrap();
        report
    });
    let problems: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(
        problems.iter().any(|p| p.starts_with("event at offset 7") && p.contains("checksum")),
        "{problems:#?}"
    );
    assert!(problems.iter().any(|p| p.contains("events_by_type") && p.contains('4')), "{problems:#?}");
    assert!(report.engine_check.is_none());
}

#[test]
fn a_lost_index_entry_is_a_corrupt_error_at_read_never_a_short_result() {
    use redb::ReadableDatabase as _;

    let rt = runtime();
    // The middle of a chain, its newest entry, and a by-source entry.
    let losses: [(&str, u64); 3] = [("by_type", 4), ("by_type", 29), ("by_source", 12)];
    for (index, offset) in losses {
        let dir = tempfile::tempdir().unwrap();
        let provider = RedbProvider::new(dir.path());
        rt.block_on(fill(&provider, "app", 3));
        {
            let db = redb::Database::open(dir.path().join(crate::layout::file_name("app"))).unwrap();
            let txn = db.begin_write().unwrap();
            if index == "by_type" {
                txn.open_table(crate::layout::EVENTS_BY_TYPE).unwrap().remove(("T", offset)).unwrap();
            } else {
                txn.open_table(crate::layout::EVENTS_BY_SOURCE).unwrap().remove(("", "", offset)).unwrap();
            }
            txn.commit().unwrap();
            let _ = db.begin_read().unwrap();
        }
        rt.block_on(async {
            let store = provider.open("app").await.unwrap();
            let mut cursor = if index == "by_type" {
                store.load_events_by_type(&["T"], 0).await.unwrap()
            } else {
                store.load_events_by_source("", "").await.unwrap()
            };
            let error = loop {
                match cursor.next().await {
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("{index} without offset {offset} was read as complete"),
                    Err(e) => break e,
                }
            };
            assert_eq!(error.kind(), vellum_core::ErrorKind::Corrupt, "{error}");
            store.close().await.unwrap();
        });
    }
}

/// docs/events.md#reading-beside-the-engine: a reader needs the application's file (none is
/// created for it), and a store opened with readers off holds its file whole, so a reader is
/// refused with `Locked` naming why until the store closes.
#[test]
fn readers_need_the_file_and_a_store_that_lets_them_in() {
    runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let provider = RedbProvider::new(dir.path());
        let missing = provider.open_reader("never-opened").await.unwrap_err();
        assert_eq!(missing.kind(), ErrorKind::Misconfigured, "{missing}");
        assert!(missing.to_string().contains("has no store in this directory yet"), "{missing}");
        assert!(!provider.file_path("never-opened").exists(), "a reader creates nothing");

        let exclusive = RedbProvider::new(dir.path()).with_readers(false);
        let store = exclusive.open("app").await.unwrap();
        store.persist(Batch::from(vec![Operation::SaveEvent(event("<e0>"))])).await.unwrap();
        let refused = provider.open_reader("app").await.unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::Locked, "{refused}");
        assert!(refused.to_string().contains("readers=false"), "{refused}");
        store.close().await.unwrap();
        let reader = provider.open_reader("app").await.unwrap();
        assert_eq!(reader.next_event_offset().await.unwrap(), 1);
        vellum_core::EventReader::close(&reader).await.unwrap();
    });
}
