//! `vellum export` and `vellum import` as a user runs them: a demo store to an archive file (or
//! stdout) and back into SQLite (and PostgreSQL / MySQL when their URLs are set), compared with
//! `vellum inspect stats --checksum`; damaged archives and foreign destinations refused.

// Helpers outside `#[test]` functions fail the test on any error, as the tests do.
#![allow(clippy::unwrap_used)]

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// Runs `vellum` with `args` in `dir`, feeding `stdin`, without any `VELLUM_*` variable from
/// the environment.
fn vellum_with_input(dir: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vellum"))
        .args(args)
        .current_dir(dir)
        .env_remove("VELLUM_URL")
        .env_remove("VELLUM_APP")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the vellum binary");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let output = child.wait_with_output().unwrap();
    let shown = if output.stdout.starts_with(b"VELLUMAR") {
        format!("({} bytes of archive)\n", output.stdout.len())
    } else {
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    eprintln!("$ vellum {}\n{shown}{}", args.join(" "), String::from_utf8_lossy(&output.stderr));
    output
}

fn vellum(dir: &Path, args: &[&str]) -> Output {
    vellum_with_input(dir, args, b"")
}

/// Runs `vellum` and returns its stdout, failing the test if it fails.
fn ok(dir: &Path, args: &[&str]) -> String {
    String::from_utf8(ok_bytes(dir, args, b"")).expect("stdout is UTF-8")
}

fn ok_bytes(dir: &Path, args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let output = vellum_with_input(dir, args, stdin);
    assert!(output.status.success(), "vellum {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    output.stdout
}

/// Runs `vellum`, expects it to fail, and returns its stderr.
fn fails(dir: &Path, args: &[&str]) -> String {
    let output = vellum(dir, args);
    assert_eq!(output.status.code(), Some(1), "vellum {args:?} should fail with status 1");
    assert!(output.stdout.is_empty(), "a failure prints nothing on stdout");
    let err = String::from_utf8(output.stderr).expect("stderr is UTF-8");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    err
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).expect("a clock after 1970").as_nanos();
    format!("{prefix}-{}-{nanos:x}", std::process::id())
}

/// `inspect stats --checksum` as JSON, without the size (which differs between providers).
fn stats(dir: &Path, url: &str, app: &str) -> Value {
    let out = ok(dir, &["inspect", "--url", url, "--app", app, "stats", "--checksum", "--json"]);
    let mut value: Value = serde_json::from_str(&out).unwrap();
    value.as_object_mut().unwrap().remove("size_bytes");
    value
}

/// A demo store in redb with work left over (a queued message tied with another, a running
/// process), so every section has records.
fn demo_store(dir: &Path, app: &str) -> String {
    use vellum::{
        Batch, DataStore as _, Envelope, Operation, Packet, Persister as _, ProcessInstance, Provider as _,
        QueueMessage,
    };
    let url = format!("redb://{}/source", dir.display());
    ok(dir, &["demo", "--url", &url, "--app", app, "--commands", "60", "--workers", "4"]);
    let at = UNIX_EPOCH + std::time::Duration::from_micros(1_900_000_000_123_456);
    let message = |id: &str| {
        let envelope =
            Envelope { message_id: id.into(), portable_name: "demo.Later".into(), ..Envelope::default() };
        Operation::SaveQueueMessage(QueueMessage {
            revision: 0,
            failure_count: 0,
            next_attempt_at: at,
            envelope,
        })
    };
    let process = ProcessInstance {
        packet: Packet::new("application/json", b"{\"open\":true}".to_vec()),
        ..ProcessInstance::new("demo.review", "open-review")
    };
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
        let store = vellum::connect(&url).unwrap().open(app).await.unwrap();
        let batch = vec![message("tie-z"), message("tie-a"), Operation::SaveProcessInstance(process)];
        store.persist(Batch::from(batch)).await.unwrap();
        store.close().await.unwrap();
    });
    url
}

/// Exports a demo store to a file, imports it into `destination`, and compares the two with
/// `inspect stats --checksum`.
fn round_trip_into(destination: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let app = unique("archive");
    let source = demo_store(dir, &app);
    let file = dir.join("backup.vellum");
    let file = file.to_str().unwrap();
    let out = ok(dir, &["export", &source, "--app", &app, "-o", file, "--page-size", "17"]);
    assert!(out.starts_with("exported"), "{out}");
    let original = stats(dir, &source, &app);
    let checksum = original["checksum"].as_str().unwrap();
    assert!(out.contains(&format!("checksum {checksum}")), "the export prints the store's checksum: {out}");
    assert!(out.contains("66 events"), "{out}");

    let out = ok(dir, &["import", file, destination, "--app", &app, "--page-size", "23"]);
    assert!(out.starts_with("imported") && out.contains("counts equal, checksum equal"), "{out}");
    assert!(out.contains(&format!("checksum {checksum}")), "{out}");
    let restored = stats(dir, destination, &app);
    assert_eq!(restored, original, "counts and checksum");
    assert_eq!((original["queue"].as_u64(), original["processes"].as_u64()), (Some(2), Some(1)));
    let queue = |url: &str| ok(dir, &["inspect", "--url", url, "--app", &app, "queue", "--json"]);
    assert_eq!(queue(destination), queue(&source), "the queue head, ties included");

    // The same store again is refused: import only fills an empty store.
    let err = fails(dir, &["import", file, destination, "--app", &app]);
    assert!(err.contains("not empty") && err.contains("import only fills an empty store"), "{err}");
    assert_eq!(stats(dir, destination, &app), restored);
}

#[test]
fn export_then_import_into_sqlite() {
    let tmp = tempfile::tempdir().unwrap();
    round_trip_into(&format!("sqlite://{}/restored.db", tmp.path().display()));
}

#[test]
#[cfg_attr(not(vellum_postgres), ignore = "VELLUM_POSTGRES_URL is not set")]
fn export_then_import_into_postgres() {
    round_trip_into(&std::env::var("VELLUM_POSTGRES_URL").expect("VELLUM_POSTGRES_URL is set"));
}

#[test]
#[cfg_attr(not(vellum_mysql), ignore = "VELLUM_MYSQL_URL is not set")]
fn export_then_import_into_mysql() {
    round_trip_into(&std::env::var("VELLUM_MYSQL_URL").expect("VELLUM_MYSQL_URL is set"));
}

/// `-o -` writes the archive to stdout (the summary to stderr); `import -` reads it from stdin.
#[test]
fn export_to_stdout_then_import_from_stdin() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let app = unique("pipe");
    let source = demo_store(dir, &app);
    let archive = ok_bytes(dir, &["export", &source, "--app", &app, "-o", "-"], b"");
    assert!(archive.starts_with(b"VELLUMAR"), "stdout carries the archive alone");
    let destination = format!("redb://{}/restored", dir.display());
    let out =
        String::from_utf8(ok_bytes(dir, &["import", "-", &destination, "--app", &app], &archive)).unwrap();
    assert!(out.contains("stdin ->"), "{out}");
    assert_eq!(stats(dir, &destination, &app), stats(dir, &source, &app));
}

/// A damaged or truncated archive, or one of another application, is refused with one line
/// naming the position, and the destination is left empty.
#[test]
fn bad_archives_leave_the_destination_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let app = unique("bad");
    let source = demo_store(dir, &app);
    let file = dir.join("backup.vellum");
    ok(dir, &["export", &source, "--app", &app, "-o", file.to_str().unwrap()]);
    let archive = std::fs::read(&file).unwrap();
    let destination = format!("sqlite://{}/restored.db", dir.display());
    let empty = |dir: &Path| {
        let v = stats(dir, &destination, &app);
        for section in ["events", "aggregates", "processes", "queue", "offsets"] {
            assert_eq!(v[section], 0, "{section}: {v}");
        }
    };

    let truncated = dir.join("truncated.vellum");
    std::fs::write(&truncated, &archive[..archive.len() / 2]).unwrap();
    let err = fails(dir, &["import", truncated.to_str().unwrap(), &destination, "--app", &app]);
    assert!(
        err.starts_with("vellum: error: reading archive ")
            && err.contains(&format!("invalid archive at byte offset {} (record ", archive.len() / 2))
            && err.contains("truncated"),
        "{err}"
    );
    empty(dir);

    let mut damaged = archive.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x20;
    let damaged_file = dir.join("damaged.vellum");
    std::fs::write(&damaged_file, &damaged).unwrap();
    let err = fails(dir, &["import", damaged_file.to_str().unwrap(), &destination, "--app", &app]);
    assert!(err.contains("invalid archive at byte offset") && err.contains("(record "), "{err}");
    empty(dir);

    let err = fails(dir, &["import", file.to_str().unwrap(), &destination, "--app", "someone-else"]);
    assert!(err.contains(&format!("the archive holds application {app:?}")), "{err}");

    let err =
        fails(dir, &["import", dir.join("missing.vellum").to_str().unwrap(), &destination, "--app", &app]);
    assert!(err.contains("opening archive") && err.contains("missing.vellum"), "{err}");
    empty(dir);

    // The archive itself was fine all along.
    ok(dir, &["import", file.to_str().unwrap(), &destination, "--app", &app]);
    assert_eq!(stats(dir, &destination, &app), stats(dir, &source, &app));
}

/// An export that fails writes no file (and would not replace an existing one).
#[test]
fn a_failed_export_leaves_no_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let missing = format!("redb://{}/nothing-here", dir.display());
    let err = fails(dir, &["export", &missing, "--app", "typo", "-o", "out.vellum"]);
    assert!(err.contains("there is no store for application \"typo\""), "{err}");
    assert!(!dir.join("out.vellum").exists());
    for command in ["export", "import"] {
        assert!(ok(dir, &[command, "--help"]).contains("Usage: vellum"));
    }
}
