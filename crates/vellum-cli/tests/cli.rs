//! Runs the `vellum` binary as a user would: demo, inspect, copy across every provider, bench,
//! schema, and the errors a user meets.

// Helpers outside `#[test]` functions fail the test on any error, as the tests do.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// Runs `vellum` with `args` in `dir`, without any `VELLUM_*` variable from the environment.
fn vellum(dir: &Path, args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_vellum"))
        .args(args)
        .current_dir(dir)
        .env_remove("VELLUM_URL")
        .env_remove("VELLUM_APP")
        .env_remove("RUST_LOG")
        .output()
        .expect("run the vellum binary");
    eprintln!(
        "$ vellum {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs `vellum` and returns its stdout, failing the test if it fails.
fn ok(dir: &Path, args: &[&str]) -> String {
    let output = vellum(dir, args);
    assert!(output.status.success(), "vellum {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("stdout is UTF-8")
}

/// Runs `vellum`, expects it to fail, and returns its stderr.
fn fails(dir: &Path, args: &[&str]) -> String {
    let output = vellum(dir, args);
    assert_eq!(output.status.code(), Some(1), "vellum {args:?} should fail with status 1");
    assert!(output.stdout.is_empty(), "a failure prints nothing on stdout");
    String::from_utf8(output.stderr).expect("stderr is UTF-8")
}

fn json(dir: &Path, args: &[&str]) -> Value {
    serde_json::from_str(&ok(dir, args)).expect("valid JSON")
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).expect("a clock after 1970").as_nanos();
    format!("{prefix}-{}-{nanos:x}", std::process::id())
}

/// `vellum demo` on the embedded default, then every `inspect` view of its result.
#[test]
fn demo_then_inspect() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // No --url: the embedded default, ./vellum-data.
    let summary = ok(dir, &["demo", "--commands", "200", "--workers", "8", "--accounts", "16"]);
    assert!(summary.contains("vellum demo finished"), "{summary}");
    assert!(summary.contains("commands handled           200"), "{summary}");
    assert!(summary.contains("p50"), "{summary}");
    assert!(dir.join("vellum-data").is_dir(), "the default store is ./vellum-data");

    let stats = json(dir, &["inspect", "stats", "--json"]);
    // 200 deposits, and 20 of them (every 10th) flagged with a second event.
    assert_eq!(stats["events"], 220, "{stats}");
    assert_eq!(stats["aggregates"], 16);
    assert_eq!(stats["queue"], 0, "every command, flag and timeout was handled");
    assert_eq!(stats["processes"], 0, "every review ended");
    assert_eq!(stats["offsets"], 1);
    assert!(stats["size_bytes"].as_u64().unwrap() > 0);
    let table = ok(dir, &["inspect", "stats"]);
    assert!(table.contains("events           220"), "{table}");

    let deposits =
        json(dir, &["inspect", "events", "--type", "demo.FundsDeposited", "--limit", "5", "--json"]);
    let deposits = deposits.as_array().unwrap();
    assert_eq!(deposits.len(), 5);
    let offsets: Vec<u64> = deposits.iter().map(|e| e["offset"].as_u64().unwrap()).collect();
    assert!(offsets.is_sorted(), "{offsets:?}");
    assert!(deposits.iter().all(|e| e["envelope"]["portable_name"] == "demo.FundsDeposited"));
    let table = ok(dir, &["inspect", "events", "--from", "10", "--to", "13"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "a header and offsets 10, 11, 12: {table}");
    assert!(lines[0].starts_with("offset") && lines[1].starts_with("10 "), "{table}");

    let by_source = json(dir, &["inspect", "events", "--source", "demo.account", "account-3", "--json"]);
    // (16 accounts for 200 deposits: every account has events.)
    let by_source = by_source.as_array().unwrap();
    assert!(!by_source.is_empty());
    assert!(by_source.iter().all(|e| e["envelope"]["source_instance_id"] == "account-3"));

    assert_eq!(ok(dir, &["inspect", "queue"]), "(the queue is empty)\n");
    assert_eq!(json(dir, &["inspect", "queue", "--json"]), Value::Array(vec![]));
    let offsets = json(dir, &["inspect", "offsets", "--json"]);
    assert_eq!(offsets[0]["application_key"], "demo");
    assert!(offsets[0]["next_offset"].as_u64().unwrap() > 0, "the projection advanced: {offsets}");
    let aggregate = json(dir, &["inspect", "aggregate", "demo.account", "account-3", "--json"]);
    assert!(aggregate["revision"].as_u64().unwrap() > 0, "{aggregate}");
    let process = ok(dir, &["inspect", "process", "demo.review", "no-such-review"]);
    assert!(process.contains("0 (not stored)"), "{process}");
}

/// Queue view: overdue and future messages in queue order, as a table and JSON.
#[test]
fn inspect_queue_shows_due_and_future_messages() {
    use vellum::{Batch, DataStore as _, Envelope, Operation, Persister as _, Provider as _, QueueMessage};
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("redb://{}/q", tmp.path().display());
    let now = SystemTime::now();
    let message = |id: &str, at: SystemTime| {
        let envelope =
            Envelope { message_id: id.into(), portable_name: "demo.Thing".into(), ..Envelope::default() };
        Operation::SaveQueueMessage(QueueMessage {
            revision: 0,
            failure_count: 0,
            next_attempt_at: at,
            envelope,
        })
    };
    let hour = std::time::Duration::from_secs(3600);
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
        let store = vellum::connect(&url).unwrap().open("queue-app").await.unwrap();
        store
            .persist(Batch::from(vec![message("later", now + hour), message("late", now - hour)]))
            .await
            .unwrap();
        store.close().await.unwrap();
    });
    let table = ok(tmp.path(), &["inspect", "--url", &url, "--app", "queue-app", "queue"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    // Seconds after a word in a table row; the test may run slowly, so compare loosely.
    let seconds = |line: &str, word: &str| -> f64 {
        let rest = &line[line.find(word).unwrap_or_else(|| panic!("{word:?} in {line:?}")) + word.len()..];
        rest.split_whitespace().next().unwrap().parse().unwrap()
    };
    assert!(lines[1].contains("late"), "{table}");
    assert!((3600.0..3660.0).contains(&seconds(lines[1], "overdue ")), "{table}");
    assert!(lines[2].contains("later"), "{table}");
    assert!((3540.0..=3600.0).contains(&seconds(lines[2], " in ")), "{table}");
    let queue = json(tmp.path(), &["inspect", "--url", &url, "--app", "queue-app", "queue", "--json"]);
    assert_eq!(queue[0]["envelope"]["message_id"], "late");
    assert_eq!(queue[0]["due"], true);
    assert_eq!(queue[1]["due"], false);
}

/// `vellum copy` moves a store redb -> sqlite -> redb; the last store equals the first (counts
/// and checksum).
#[test]
fn copy_across_embedded_providers_round_trips() {
    copy_round_trips_through(&[]);
}

/// `vellum copy` moves a store redb -> sqlite -> postgres -> mysql -> redb; the last store
/// equals the first (counts and checksum).
#[test]
#[cfg_attr(
    not(all(vellum_postgres, vellum_mysql)),
    ignore = "VELLUM_POSTGRES_URL and VELLUM_MYSQL_URL are not both set"
)]
fn copy_across_every_provider_round_trips() {
    let servers = ["VELLUM_POSTGRES_URL", "VELLUM_MYSQL_URL"]
        .map(|var| std::env::var(var).unwrap_or_else(|_| panic!("{var} is not set")));
    copy_round_trips_through(&servers);
}

/// Copies a demo store (with work left queued) from redb through SQLite, then through each of
/// `servers` (store URLs), back to redb, and checks the last store equals the first.
fn copy_round_trips_through(servers: &[String]) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let app = unique("copy");
    let first = format!("redb://{}/first", dir.display());
    ok(dir, &["demo", "--url", &first, "--app", &app, "--commands", "120", "--workers", "4"]);
    leave_work_queued(&first, &app);
    let mut chain = vec![first.clone(), format!("sqlite://{}/hop.db", dir.display())];
    chain.extend_from_slice(servers);
    let last = format!("redb://{}/last", dir.display());
    chain.push(last.clone());
    for hop in chain.windows(2) {
        let out = ok(dir, &["copy", &hop[0], &hop[1], "--app", &app, "--page-size", "37"]);
        assert!(out.contains("counts equal, checksum"), "{out}");
    }
    let stats = |url: &str| {
        let mut v = json(dir, &["inspect", "--url", url, "--app", &app, "stats", "--checksum", "--json"]);
        v.as_object_mut().unwrap().remove("size_bytes");
        v
    };
    let (a, b) = (stats(&first), stats(&last));
    assert_eq!(a, b);
    assert_eq!(a["events"], 132, "{a}");
    assert_eq!((a["queue"].as_u64(), a["processes"].as_u64()), (Some(4), Some(1)), "{a}");
    let queue = json(dir, &["inspect", "--url", &last, "--app", &app, "queue", "--json"]);
    let ids: Vec<&str> =
        queue.as_array().unwrap().iter().map(|m| m["envelope"]["message_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["tie-z", "tie-a", "tie-m", "timeout"], "FIFO ties survive every hop");
    assert!(a["checksum"].as_str().is_some_and(|c| c.len() == 32), "{a}");
    // The copy behaves like the original: same queue head, same events.
    for view in [["queue", "--json"], ["events", "--json"]] {
        let original = json(dir, &[&["inspect", "--url", &first, "--app", &app][..], &view[..]].concat());
        let copied = json(dir, &[&["inspect", "--url", &last, "--app", &app][..], &view[..]].concat());
        assert_eq!(original, copied);
    }

    // A destination that holds anything is refused, and keeps what it had.
    let err = fails(dir, &["copy", &first, &last, "--app", &app]);
    assert!(
        err.starts_with("vellum: error: copy failed: destination store") && err.contains("not empty"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert_eq!(stats(&last), a);
}

/// Adds what a demo run leaves behind empty: queued messages tied on time (enqueued in an
/// order that is not their ID order, and one retried), a running process and its timeout.
fn leave_work_queued(url: &str, app: &str) {
    use vellum::{
        Batch, DataStore as _, Envelope, Operation, Packet, Persister as _, ProcessInstance, Provider as _,
        QueueMessage,
    };
    let at = UNIX_EPOCH + std::time::Duration::from_micros(1_900_000_000_123_456);
    let message = |id: &str, revision: u64| {
        let envelope =
            Envelope { message_id: id.into(), portable_name: "demo.Later".into(), ..Envelope::default() };
        QueueMessage { revision, failure_count: revision, next_attempt_at: at, envelope }
    };
    let mut timeout = message("timeout", 0);
    timeout.envelope.source_handler = Some(vellum::Identity::new("review", "demo.review"));
    timeout.envelope.source_instance_id = "open-review".into();
    timeout.envelope.scheduled_for = "2030-03-17T17:46:40.123456Z".into();
    timeout.next_attempt_at = at + std::time::Duration::from_secs(60);
    let process = ProcessInstance {
        revision: 0,
        packet: Packet::new("application/json", b"{\"open\":true}".to_vec()),
        ..ProcessInstance::new("demo.review", "open-review")
    };
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
        let store = vellum::connect(url).unwrap().open(app).await.unwrap();
        let batch = vec![
            Operation::SaveQueueMessage(message("tie-z", 0)),
            Operation::SaveQueueMessage(message("tie-a", 0)),
            Operation::SaveQueueMessage(message("tie-m", 0)),
            Operation::SaveQueueMessage(timeout),
            Operation::SaveProcessInstance(process),
        ];
        store.persist(Batch::from(batch)).await.unwrap();
        // A retry of the first: same time, revision 2; it keeps its place among the ties.
        store.persist(Batch::from(vec![Operation::SaveQueueMessage(message("tie-z", 1))])).await.unwrap();
        store.close().await.unwrap();
    });
}

/// `vellum bench` for a moment on memory and redb, side by side.
#[test]
fn bench_compares_memory_and_redb() {
    let tmp = tempfile::tempdir().unwrap();
    let redb = format!("redb://{}/bench", tmp.path().display());
    let out =
        ok(tmp.path(), &["bench", "--compare", "memory:", &redb, "--duration", "0.3", "--concurrency", "4"]);
    assert!(out.contains("durable syncs/s"), "{out}");
    for needle in [
        "workload",
        "memory",
        "redb",
        "persist x1",
        "persist x4",
        "queue head",
        "events by type",
        "events by source",
        "follow",
        "open + close",
        "ratio to memory",
    ] {
        assert!(out.contains(needle), "missing {needle:?}:\n{out}");
    }
    let persist = out.lines().find(|l| l.starts_with("persist x1")).unwrap();
    assert_eq!(persist.matches("/s").count(), 2, "one cell per provider: {persist}");
}

/// `vellum schema` on SQLite: status, create, status, drop, status.
#[test]
fn schema_create_status_drop() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/schema.db", tmp.path().display());
    assert!(ok(tmp.path(), &["schema", "status", &url]).contains("no vellum schema"));
    assert!(ok(tmp.path(), &["schema", "create", &url]).contains("vellum schema version 3 is in place"));
    assert!(ok(tmp.path(), &["schema", "status", &url]).contains("vellum schema version 3 (current)"));
    assert!(ok(tmp.path(), &["schema", "drop", &url]).contains("dropped"));
    assert!(ok(tmp.path(), &["schema", "status", &url]).contains("no vellum schema"));
    let err = fails(tmp.path(), &["schema", "status", "memory:"]);
    assert!(err.contains("the memory provider has no SQL schema"), "{err}");
}

/// `vellum schema status` on PostgreSQL.
#[test]
#[cfg_attr(not(vellum_postgres), ignore = "VELLUM_POSTGRES_URL is not set")]
fn schema_status_on_postgres() {
    let tmp = tempfile::tempdir().unwrap();
    let pg = std::env::var("VELLUM_POSTGRES_URL").expect("VELLUM_POSTGRES_URL is set");
    assert!(ok(tmp.path(), &["schema", "status", &pg]).contains("vellum schema"));
}

/// `-v` shows the providers' spans: opens, persists with their size and outcome, commits with
/// their group size; `-vv` adds queries.
#[test]
fn verbose_shows_provider_spans() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/spans.db", tmp.path().display());
    let output = vellum(tmp.path(), &["-v", "demo", "--url", &url, "--commands", "5", "--workers", "1"]);
    assert!(output.status.success());
    let spans = String::from_utf8_lossy(&output.stderr);
    for needle in [
        r#"vellum.open{provider="sqlite" app_key="demo" outcome="ok"}"#,
        r#"vellum.persist{provider="sqlite" app_key="demo" ops=3 outcome="ok"}"#,
        r#"vellum.commit{provider="sqlite" app_key="demo" batches=1 outcome="ok"}"#,
        "time.busy=",
    ] {
        assert!(spans.contains(needle), "missing {needle}:\n{spans}");
    }
    assert!(!spans.contains("vellum.query"), "queries are trace level");
    let output = vellum(tmp.path(), &["-vv", "inspect", "--url", &url, "queue"]);
    let spans = String::from_utf8_lossy(&output.stderr);
    assert!(spans.contains(r#"vellum.query{provider="sqlite" app_key="demo" query="queue"}"#), "{spans}");
}

/// Errors are one line naming what failed, with exit status 1.
#[test]
fn errors_are_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let err = fails(dir, &["inspect", "--url", "ftp://host/x", "stats"]);
    assert!(err.contains("invalid store URL \"ftp://host/x\": unknown scheme \"ftp\""), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    let err = fails(dir, &["inspect", "--url", "postgres://postgres@127.0.0.1:1/test", "stats"]);
    assert!(err.contains("postgres") && err.to_lowercase().contains("connect"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    let err = fails(dir, &["inspect", "--url", "mysql://root@127.0.0.1:1/test", "stats"]);
    assert!(err.contains("mysql") || err.contains("MySQL"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    // Reading a file-based store that does not exist creates nothing and says so.
    let missing = format!("redb://{}/nothing-here", dir.display());
    let err = fails(dir, &["inspect", "--url", &missing, "--app", "typo", "stats"]);
    assert!(err.contains("there is no store for application \"typo\""), "{err}");
    let err = fails(dir, &["copy", &missing, "memory:", "--app", "typo"]);
    assert!(err.contains("there is no store for application \"typo\""), "{err}");
    assert_eq!(std::fs::read_dir(dir.join("nothing-here")).unwrap().count(), 0, "no file was created");

    // A store another process holds open is locked, promptly.
    let url = format!("redb://{}/held", dir.display());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let holder = runtime.block_on(async {
        use vellum::Provider as _;
        vellum::connect(&url).unwrap().open("held-app").await.unwrap()
    });
    let err = fails(dir, &["inspect", "--url", &url, "--app", "held-app", "stats"]);
    assert!(err.contains("\"held-app\" is locked"), "{err}");
    runtime.block_on(async {
        use vellum::DataStore as _;
        holder.close().await.unwrap();
    });

    let usage = vellum(dir, &["copy", "memory:"]);
    assert_eq!(usage.status.code(), Some(2), "usage errors exit with 2");
    for command in ["demo", "inspect", "copy", "bench", "schema"] {
        let help = ok(dir, &[command, "--help"]);
        assert!(help.contains("Usage: vellum"), "{help}");
    }
}
