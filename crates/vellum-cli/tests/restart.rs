//! A follower across a PostgreSQL restart (docs/events.md#reading-beside-the-engine): `vellum
//! tail` in another process and a reader's follower in this one see every event committed
//! before and after the server restarts, each exactly once, in order. Its own test binary, so
//! the restart disturbs no other test (cargo runs test binaries one at a time). Needs
//! `VELLUM_POSTGRES_URL` and `VELLUM_PG_RESTART`, a shell command that restarts the server and
//! returns once it accepts connections (`.ci/run` sets both).

// Helpers outside `#[test]` functions fail the test on any error, as the tests do.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vellum::{Batch, DataStore, Envelope, EventReader, EventRepository, Operation, Persister, Provider};

const BEFORE: u64 = 20;
const AFTER: u64 = 20;

fn event(id: &str) -> Batch {
    Batch::from(vec![Operation::SaveEvent(Envelope {
        message_id: id.to_owned(),
        portable_name: "restart.Test".to_owned(),
        ..Envelope::default()
    })])
}

#[test]
#[cfg_attr(
    not(all(vellum_postgres, vellum_pg_restart)),
    ignore = "VELLUM_POSTGRES_URL and VELLUM_PG_RESTART are not both set"
)]
fn followers_resume_across_a_postgres_restart() {
    let url = std::env::var("VELLUM_POSTGRES_URL").unwrap();
    let restart = std::env::var("VELLUM_PG_RESTART").unwrap();
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let app = format!("restart-{}-{nanos:x}", std::process::id());
    let total = 1 + BEFORE + AFTER;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let provider = vellum::connect(&url).unwrap();
    let store = runtime.block_on(provider.open(&app)).unwrap();
    runtime.block_on(store.persist(event("e0"))).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_vellum"))
        .args(["tail", &url, "--app", &app, "--json"])
        .env_remove("VELLUM_URL")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let tailed = std::thread::spawn(move || {
        let mut offsets = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let value: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
            offsets.push(value["offset"].as_u64().unwrap());
            if offsets.len() as u64 == total {
                break;
            }
        }
        offsets
    });
    let reader = runtime.block_on(provider.open_reader(&app)).unwrap();
    let in_process = runtime.spawn(async move {
        let mut follower = reader.load_all_events(0).await.unwrap().follow();
        let (mut offsets, mut errors) = (Vec::new(), 0);
        while (offsets.len() as u64) < total {
            match follower.next().await {
                Ok(event) => offsets.push(event.offset),
                // The server is restarting: the follower pauses and looks again.
                Err(e) if e.is_retryable() => errors += 1,
                Err(e) => panic!("the follower failed: {e}"),
            }
        }
        reader.close().await.unwrap();
        (offsets, errors)
    });

    std::thread::sleep(Duration::from_millis(300));
    for i in 1..=BEFORE {
        runtime.block_on(store.persist(event(&format!("before-{i}")))).unwrap();
    }
    let restarted = Instant::now();
    let status = Command::new("sh").args(["-c", &restart]).status().unwrap();
    assert!(status.success(), "{restart} failed");
    eprintln!("postgres restarted in {:?}", restarted.elapsed());
    // The engine's store lost its lock session with the server: it is fenced; reopen it.
    let _ = runtime.block_on(store.close());
    let store = runtime.block_on(provider.open_wait(&app, Duration::from_secs(30))).unwrap();
    for i in 1..=AFTER {
        runtime.block_on(store.persist(event(&format!("after-{i}")))).unwrap();
    }

    let expected: Vec<u64> = (0..total).collect();
    let (offsets, errors) = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(60), in_process).await })
        .unwrap()
        .unwrap();
    eprintln!("the in-process follower met {errors} read errors during the restart");
    assert_eq!(offsets, expected, "the in-process follower");
    let started = Instant::now();
    while !tailed.is_finished() && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(tailed.is_finished(), "vellum tail stalled after the restart");
    assert_eq!(tailed.join().unwrap(), expected, "vellum tail in another process");
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    runtime.block_on(store.close()).unwrap();
}
