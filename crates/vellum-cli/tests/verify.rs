//! `vellum verify` as a user runs it: the summary, `--json`, and the exit status.

// Helpers outside `#[test]` functions fail the test on any error, as the tests do.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

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

/// The summary's rows, the JSON document, and exit status 0 for a clean store. (A memory store
/// lives only as long as the process, so this one is empty; the demo test below fills one.)
#[test]
fn verify_prints_a_summary_or_json() {
    let tmp = tempfile::tempdir().unwrap();
    let summary = ok(tmp.path(), &["verify", "memory:", "--app", "empty"]);
    assert!(summary.contains("verified       application \"empty\" at memory:"), "{summary}");
    assert!(summary.contains("records        0 intact"), "{summary}");
    assert!(summary.contains("engine check   none"), "{summary}");
    assert!(summary.contains("problems       none found"), "{summary}");
    let report: Value =
        serde_json::from_str(&ok(tmp.path(), &["verify", "memory:", "--app", "empty", "--json"])).unwrap();
    assert_eq!(report["clean"], true, "{report}");
    assert_eq!(report["app_key"], "empty");
    assert_eq!(report["records"], 0);
    assert_eq!(report["problems"], Value::Array(vec![]));
}

/// A store that does not exist is an error, not an empty clean store.
#[test]
fn verify_refuses_a_missing_store() {
    let tmp = tempfile::tempdir().unwrap();
    let output = vellum(tmp.path(), &["verify", "redb://nowhere", "--app", "demo"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty(), "an error prints no report");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("there is no store for application \"demo\""), "{stderr}");
    assert!(!tmp.path().join("nowhere").join("app.demo.redb").exists(), "verify created no store");
}

/// The demo's store on the embedded default verifies clean: every record, every index entry,
/// redb's own check. (Needs the redb provider's `BulkStore::verify`.)
#[test]
fn verify_after_demo_is_clean() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(dir, &["demo", "--commands", "200", "--workers", "8", "--accounts", "16"]);
    let summary = ok(dir, &["verify", "redb://vellum-data", "--app", "demo"]);
    assert!(summary.contains("problems       none found"), "{summary}");
    let report: Value =
        serde_json::from_str(&ok(dir, &["verify", "redb://vellum-data", "--app", "demo", "--json"])).unwrap();
    assert_eq!(report["clean"], true, "{report}");
    // 220 events, 16 aggregates and one consumer offset (see cli.rs's demo_then_inspect).
    assert_eq!(report["records"], 237, "{report}");
    assert!(report["index_entries"].as_u64().unwrap() >= 3 * 220, "{report}");
    assert!(report["engine_check"].is_string(), "redb runs its own check: {report}");
}

/// A flipped payload byte in the demo's redb file: verify exits 1 naming the event's offset, and
/// reading the events fails naming it too (never a changed event).
#[test]
fn a_flipped_byte_fails_verify_and_inspect_naming_the_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    ok(dir, &["demo", "--commands", "200", "--workers", "8", "--accounts", "16"]);
    let events: Value =
        serde_json::from_str(&ok(dir, &["inspect", "--json", "events", "--from", "5", "--limit", "1"]))
            .unwrap();
    let id = events[0]["envelope"]["message_id"].as_str().unwrap().to_owned();
    let file = dir.join("vellum-data").join("app.demo.redb");
    let mut bytes = std::fs::read(&file).unwrap();
    let needle = id.as_bytes();
    let hits: Vec<usize> = (0..bytes.len() - needle.len())
        .filter(|&i| &bytes[i..i + needle.len()] == needle && !bytes[i + needle.len()].is_ascii_digit())
        .collect();
    assert!(!hits.is_empty(), "the message ID {id:?} is in the file");
    for i in hits {
        bytes[i + needle.len() - 1] ^= 0x01;
    }
    std::fs::write(&file, bytes).unwrap();

    let output = vellum(dir, &["verify", "redb://vellum-data", "--app", "demo"]);
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.contains("event at offset 5: checksum mismatch"), "{stdout}");

    let output = vellum(dir, &["inspect", "events"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("damaged event at offset 5") && stderr.contains("app.demo.redb"), "{stderr}");
}
