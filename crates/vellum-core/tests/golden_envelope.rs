//! Wire compatibility of [`Envelope`] with an independent protobuf implementation.
//!
//! The golden `.bin` files in `testdata/envelope/` were encoded by Google's Python protobuf
//! runtime (upb backend) from `testdata/envelope/envelope.proto`, a transcription of
//! interopspec v0.5.4's envelope.proto; `testdata/envelope/cases.txt` lists them with lengths,
//! hashes and hex dumps. Each test builds the expected envelope in Rust, checks that prost
//! decodes the golden bytes to exactly that value, and that re-encoding reproduces the golden
//! bytes byte for byte.
//!
//! To regenerate the bytes (see the header of `generate.py` for the package versions used):
//!
//! ```text
//! python3 -m venv /tmp/pb-venv
//! /tmp/pb-venv/bin/pip install protobuf grpcio-tools
//! /tmp/pb-venv/bin/python crates/vellum-core/testdata/envelope/generate.py
//! ```

use vellum_core::{Envelope, Identity};

const FULL: &[u8] = include_bytes!("../testdata/envelope/full.bin");
const SOURCE_SITE: &[u8] = include_bytes!("../testdata/envelope/source_site.bin");
const HANDLER_ABSENT: &[u8] = include_bytes!("../testdata/envelope/handler_absent.bin");
const HANDLER_EMPTY: &[u8] = include_bytes!("../testdata/envelope/handler_empty.bin");
const DEFAULT: &[u8] = include_bytes!("../testdata/envelope/default.bin");
const EMPTY_STRINGS: &[u8] = include_bytes!("../testdata/envelope/empty_strings.bin");
const LARGE_DATA: &[u8] = include_bytes!("../testdata/envelope/large_data.bin");

/// Length of the `large_data` payload; must match `LARGE_DATA_LEN` in `generate.py`.
const LARGE_DATA_LEN: usize = 100 * 1024;

/// Asserts that `golden` decodes to `expected` and that `expected` encodes to `golden`.
fn assert_golden(case: &str, golden: &[u8], expected: &Envelope) {
    let decoded = match Envelope::from_bytes(golden) {
        Ok(env) => env,
        Err(err) => panic!("{case}: golden bytes do not decode: {err}"),
    };
    assert!(decoded == *expected, "{case}: decoded envelope differs from the expected one");
    assert_same_bytes(case, "re-encoded decoded envelope", &decoded.to_bytes(), golden);
    assert_same_bytes(case, "encoded expected envelope", &expected.to_bytes(), golden);
}

/// Compares encodings without dumping 100 KiB on failure: reports lengths and the first
/// differing offset.
fn assert_same_bytes(case: &str, what: &str, actual: &[u8], golden: &[u8]) {
    if actual != golden {
        let first =
            actual.iter().zip(golden).position(|(a, g)| a != g).unwrap_or(actual.len().min(golden.len()));
        panic!(
            "{case}: {what} differs from the golden bytes: {} vs {} bytes, first difference at offset \
             {first} (ours {:02x?}, golden {:02x?})",
            actual.len(),
            golden.len(),
            &actual[first..actual.len().min(first + 16)],
            &golden[first..golden.len().min(first + 16)],
        );
    }
}

/// The command shared by the `handler_absent` and `handler_empty` cases, without a handler.
fn root_command() -> Envelope {
    Envelope {
        message_id: "cmd-1".into(),
        causation_id: "cmd-1".into(),
        correlation_id: "cmd-1".into(),
        source_application: Some(Identity::new("app", "app-key")),
        created_at: "2023-01-02T03:04:05.123456789Z".into(),
        portable_name: "Cmd".into(),
        media_type: "application/json; type=Cmd".into(),
        data: b"{}".to_vec(),
        ..Envelope::default()
    }
}

#[test]
fn full_envelope_with_all_thirteen_fields_matches_golden() {
    let mut data = vec![0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff];
    data.extend_from_slice("{\"name\":\"Zoë\"}".as_bytes());
    data.extend_from_slice(&[0x00, 0xff]);
    let expected = Envelope {
        message_id: "0d5a3c1e-6f1b-4b7e-9c2a-8e4f1a2b3c4d".into(),
        causation_id: "7b2f9e10-3a4c-4d5e-8f60-718293a4b5c6".into(),
        correlation_id: "c0ffee00-0000-4000-8000-000000000001".into(),
        source_application: Some(Identity::new("bank-app ✓", "b1a2c3d4-0000-4000-8000-00000000aaaa")),
        source_handler: Some(Identity::new("account-aggregate", "a9b8c7d6-0000-4000-8000-00000000bbbb")),
        source_instance_id: "account-Ünïcødé-42".into(),
        created_at: "2024-02-29T23:59:59.123456789Z".into(),
        scheduled_for: "2024-03-01T00:00:00.000000001+01:00".into(),
        description: "Überweisung über 5 € — 日本語 🚀".into(),
        portable_name: "bank.AccountOpened".into(),
        media_type: "application/json; type=bank.AccountOpened".into(),
        data,
        source_site: Some(Identity::new("eu-west-1 🌍", "517e0000-0000-4000-8000-00000000cccc")),
    };
    assert!(expected.is_timeout());
    assert_golden("full", FULL, &expected);
}

#[test]
fn source_site_is_encoded_last_as_tag_13() {
    let expected = Envelope {
        message_id: "msg-1".into(),
        causation_id: "msg-0".into(),
        correlation_id: "msg-0".into(),
        source_application: Some(Identity::new("app", "app-key")),
        source_handler: Some(Identity::new("handler", "handler-key")),
        created_at: "2023-01-02T03:04:05.000000006Z".into(),
        portable_name: "Evt".into(),
        media_type: "application/json; type=Evt".into(),
        data: br#"{"x":1}"#.to_vec(),
        source_site: Some(Identity::new("site-a", "site-key-a")),
        ..Envelope::default()
    };
    assert_golden("source_site", SOURCE_SITE, &expected);
    // Tag 13, wire type 2 (0x6a), length 20, is the trailing field despite its declaration order.
    assert!(SOURCE_SITE.ends_with(b"\x6a\x14\x0a\x06site-a\x12\x0asite-key-a"));
}

#[test]
fn absent_source_handler_matches_golden() {
    let expected = root_command();
    assert_eq!(expected.source_handler, None);
    assert_golden("handler_absent", HANDLER_ABSENT, &expected);
}

#[test]
fn empty_source_handler_matches_golden() {
    let expected = Envelope { source_handler: Some(Identity::default()), ..root_command() };
    assert_golden("handler_empty", HANDLER_EMPTY, &expected);
}

#[test]
fn absent_and_empty_source_handler_stay_distinct() {
    let absent = Envelope::from_bytes(HANDLER_ABSENT).unwrap();
    let empty = Envelope::from_bytes(HANDLER_EMPTY).unwrap();
    assert_eq!(absent.source_handler, None);
    assert_eq!(empty.source_handler, Some(Identity::default()));
    assert_ne!(absent, empty);
    assert_eq!(absent.source_handler_key(), "");
    assert_eq!(empty.source_handler_key(), "");

    let (absent_bytes, empty_bytes) = (absent.to_bytes(), empty.to_bytes());
    assert_ne!(absent_bytes, empty_bytes);
    assert_eq!(absent_bytes, HANDLER_ABSENT);
    assert_eq!(empty_bytes, HANDLER_EMPTY);
    // The only difference is the empty tag-5 field (0x2a, length 0) after source_application.
    assert_eq!(empty_bytes.len(), absent_bytes.len() + 2);
    let at = 3 * 7 + 16; // three 5-byte IDs with 2-byte headers, then the 16-byte application.
    assert_eq!(&empty_bytes[at..at + 2], &[0x2a, 0x00]);
    assert_eq!([&empty_bytes[..at], &empty_bytes[at + 2..]].concat(), absent_bytes);
}

#[test]
fn default_envelope_is_empty_bytes() {
    assert!(DEFAULT.is_empty());
    assert_golden("default", DEFAULT, &Envelope::default());
}

#[test]
fn empty_strings_are_not_emitted() {
    let expected = Envelope { message_id: "only-id".into(), ..Envelope::default() };
    assert_golden("empty_strings", EMPTY_STRINGS, &expected);
    assert_eq!(EMPTY_STRINGS, b"\x0a\x07only-id");
}

#[test]
fn large_data_payload_matches_golden() {
    let data: Vec<u8> = (0..LARGE_DATA_LEN).map(|i| ((i * 31 + 7) % 256) as u8).collect();
    let expected = Envelope {
        message_id: "big-1".into(),
        causation_id: "big-1".into(),
        correlation_id: "big-1".into(),
        source_application: Some(Identity::new("app", "app-key")),
        created_at: "2023-06-07T08:09:10.111111111Z".into(),
        portable_name: "Blob".into(),
        media_type: "application/octet-stream; type=Blob".into(),
        data,
        ..Envelope::default()
    };
    assert_golden("large_data", LARGE_DATA, &expected);
    // Tag 12, wire type 2 (0x62), then the length 102400 as a 3-byte varint.
    let tail = LARGE_DATA.len() - LARGE_DATA_LEN;
    assert_eq!(&LARGE_DATA[tail - 4..tail], &[0x62, 0x80, 0xa0, 0x06]);
}
