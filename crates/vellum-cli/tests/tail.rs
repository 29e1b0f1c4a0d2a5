//! `vellum tail` in another process beside the engine that writes (docs/events.md#reading-beside-the-engine):
//! 16 writers in this process, a follower of a reader in this process, and `vellum tail` in a
//! child process; both followers see every offset once, in order, and Ctrl-C ends the tail with
//! exit status 0.

// Helpers outside `#[test]` functions fail the test on any error, as the tests do.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vellum::{Batch, DataStore, Envelope, EventReader, EventRepository, Operation, Persister, Provider};

const WRITERS: usize = 16;
const EACH: usize = 20;

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}-{}-{nanos:x}", std::process::id())
}

fn event(id: &str) -> Operation {
    Operation::SaveEvent(Envelope {
        message_id: id.to_owned(),
        portable_name: "tail.Test".to_owned(),
        media_type: "application/json".to_owned(),
        data: b"{}".to_vec(),
        ..Envelope::default()
    })
}

/// `vellum tail URL --app APP --json` with stdout piped.
fn spawn_tail(url: &str, app: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_vellum"))
        .args(["tail", url, "--app", app, "--json", "--poll-cap", "0.05"])
        .env_remove("VELLUM_URL")
        .env_remove("VELLUM_APP")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run vellum tail")
}

/// The whole scenario against `url`.
fn follow_across_processes(url: &str) {
    let app = unique("tail");
    let total = (1 + WRITERS * EACH) as u64;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let provider = vellum::connect(url).unwrap();
    let store = Arc::new(runtime.block_on(provider.open(&app)).unwrap());
    // The application exists (a redb file, a schema) before the tail starts.
    runtime.block_on(store.persist(Batch::from(vec![event("first")]))).unwrap();

    let mut child = spawn_tail(url, &app);
    let stdout = child.stdout.take().unwrap();
    let lines = std::thread::spawn(move || {
        let mut offsets = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let value: serde_json::Value =
                serde_json::from_str(&line.unwrap()).expect("one JSON object per line");
            offsets.push(value["offset"].as_u64().expect("an offset"));
            if offsets.len() as u64 == total {
                break;
            }
        }
        offsets
    });

    let reader = runtime.block_on(provider.open_reader(&app)).unwrap();
    let in_process = runtime.spawn(async move {
        let cursor = reader.load_all_events(0).await.unwrap();
        let mut follower = cursor.follow().with_poll_cap(Duration::from_millis(50));
        let mut offsets = Vec::new();
        while (offsets.len() as u64) < total {
            offsets.push(follower.next().await.unwrap().offset);
        }
        reader.close().await.unwrap();
        offsets
    });

    // Give the child a moment to start following, so most events arrive live.
    std::thread::sleep(Duration::from_millis(300));
    runtime.block_on(async {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let store = Arc::clone(&store);
                tokio::spawn(async move {
                    for i in 0..EACH {
                        store.persist(Batch::from(vec![event(&format!("w{w}-e{i}"))])).await.unwrap();
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
    });

    let started = Instant::now();
    let expected: Vec<u64> = (0..total).collect();
    let followed =
        runtime.block_on(async { tokio::time::timeout(Duration::from_secs(30), in_process).await });
    assert_eq!(followed.expect("the in-process follower stalled").unwrap(), expected, "in-process follower");
    while !lines.is_finished() && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(lines.is_finished(), "vellum tail stalled");
    assert_eq!(lines.join().unwrap(), expected, "vellum tail in another process");

    // Ctrl-C: the tail exits cleanly, with status 0.
    let interrupted = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(interrupted.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "vellum tail exits 0 on Ctrl-C");
    runtime.block_on(store.close()).unwrap();
}

#[test]
fn tail_follows_a_redb_store_in_another_process() {
    let tmp = tempfile::tempdir().unwrap();
    follow_across_processes(&format!("redb://{}", tmp.path().display()));
}

#[test]
fn tail_follows_a_sqlite_store_in_another_process() {
    let tmp = tempfile::tempdir().unwrap();
    follow_across_processes(&format!("sqlite://{}/tail.db", tmp.path().display()));
}

#[test]
#[cfg_attr(not(vellum_postgres), ignore = "VELLUM_POSTGRES_URL is not set")]
fn tail_follows_a_postgres_store_in_another_process() {
    follow_across_processes(&std::env::var("VELLUM_POSTGRES_URL").unwrap());
}

#[test]
#[cfg_attr(not(vellum_mysql), ignore = "VELLUM_MYSQL_URL is not set")]
fn tail_follows_a_mysql_store_in_another_process() {
    follow_across_processes(&std::env::var("VELLUM_MYSQL_URL").unwrap());
}
