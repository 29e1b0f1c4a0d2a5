//! The format without a store: what is written reads back, and every kind of damage is refused
//! with its position. (Round trips through a store: `tests/archive.rs`.)

use std::io::Cursor;
use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::Identity;

fn envelope(id: &str) -> Envelope {
    Envelope {
        message_id: id.into(),
        portable_name: "test.Thing".into(),
        source_handler: Some(Identity::new("h", "handler-key")),
        data: vec![0, 1, 2, 255],
        ..Envelope::default()
    }
}

/// One record of every section, in section order.
fn records() -> Vec<Record> {
    let at = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
    vec![
        Record::Aggregate(AggregateMetaData {
            revision: 3,
            last_event_id: "e-1".into(),
            ..AggregateMetaData::new("agg", "a-1")
        }),
        Record::Aggregate(AggregateMetaData { revision: 1, ..AggregateMetaData::new("agg", "a-2") }),
        Record::Process(ProcessInstance {
            revision: 2,
            packet: Packet::new("application/json", b"{}".to_vec()),
            ..ProcessInstance::new("proc", "p-1")
        }),
        Record::Offset { application_key: "other".into(), next_offset: 42 },
        Record::Queue {
            sequence: 7,
            message: QueueMessage {
                revision: 2,
                failure_count: 1,
                next_attempt_at: at,
                envelope: envelope("q-1"),
            },
        },
        Record::Event(Event { offset: 0, envelope: envelope("e-0") }),
        Record::Event(Event { offset: 1, envelope: envelope("e-1") }),
    ]
}

fn stats_of(records: &[Record]) -> StoreStats {
    let mut stats = StoreStats::default();
    for record in records {
        *section_count(&mut stats, record.section()) += 1;
    }
    stats
}

fn header(records: &[Record]) -> ArchiveHeader {
    ArchiveHeader { version: VERSION, app_key: "app".into(), origin: "test".into(), stats: stats_of(records) }
}

/// An archive of `records`, written as `export` writes one.
fn archive(records: &[Record]) -> Vec<u8> {
    let mut buffer = Vec::new();
    let mut out = ArchiveWriter::begin(&mut buffer, header(records)).unwrap();
    for record in records {
        out.write(record).unwrap();
    }
    let summary = out.finish().unwrap();
    assert_eq!(summary.bytes, buffer.len() as u64);
    buffer
}

/// A frame with a correct checksum, for hand-made archives.
fn frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let length = u32::try_from(body.len()).unwrap();
    let mut out = vec![kind];
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(&frame_crc(kind, length, body).to_be_bytes());
    out
}

/// An archive of `records` framed by hand: the header claims `stats`, the trailer `count` and
/// `digest` (`None`: the real ones). Nothing is checked while writing.
fn crafted(records: &[Record], stats: StoreStats, count: Option<u64>, digest: Option<&str>) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&VERSION.to_be_bytes());
    let header = ArchiveHeader { version: VERSION, app_key: "app".into(), origin: String::new(), stats };
    out.extend(frame(KIND_HEADER, &HeaderBody::new(&header).encode_to_vec()));
    let mut real = Digest::default();
    for record in records {
        out.extend(frame(section_kind(record.section()), &encode_record(record).unwrap()));
        real.add(record);
    }
    let trailer = TrailerBody {
        records: count.unwrap_or(records.len() as u64),
        digest: digest.map_or_else(|| real.hex(), str::to_owned),
    };
    out.extend(frame(KIND_TRAILER, &trailer.encode_to_vec()));
    out
}

fn refused(bytes: &[u8]) -> Error {
    match verify(bytes, |_| {}) {
        Ok(summary) => panic!("accepted a bad archive: {summary:?}"),
        Err(e) => e,
    }
}

/// The error's whole text: context and source.
fn text(e: &Error) -> String {
    let source = std::error::Error::source(e).map(ToString::to_string).unwrap_or_default();
    format!("{e}: {source}")
}

/// The byte offset where each frame starts: header, records, trailer.
fn frame_starts(bytes: &[u8]) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut at = MAGIC.len() + 4;
    while at < bytes.len() {
        starts.push(at);
        let length = u32::from_be_bytes(bytes[at + 1..at + 5].try_into().unwrap()) as usize;
        at += 1 + 4 + length + 4;
    }
    starts
}

#[test]
fn what_is_written_reads_back() {
    let records = records();
    let bytes = archive(&records);
    assert_eq!(&bytes[..8], b"VELLUMAR");
    let summary = verify(bytes.as_slice(), |_| {}).unwrap();
    let mut digest = Digest::default();
    digest.add_all(&records);
    assert_eq!(summary.digest, digest);
    assert_eq!(summary.records, records.len() as u64);
    assert_eq!(summary.bytes, bytes.len() as u64);
    assert_eq!(summary.header, header(&records));
    assert_eq!(read_header(bytes.as_slice()).unwrap(), header(&records));

    let mut reader = ArchiveReader::open(bytes.as_slice()).unwrap();
    let mut read = Vec::new();
    while let Some(record) = reader.next().unwrap() {
        read.push(record);
    }
    assert_eq!(read, records, "every field survives, the envelope's identities included");
    assert_eq!(frame_starts(&bytes).len(), records.len() + 2);
}

#[test]
fn an_empty_store_is_a_header_and_a_trailer() {
    let bytes = archive(&[]);
    let summary = verify(bytes.as_slice(), |_| {}).unwrap();
    assert_eq!((summary.records, summary.header.stats), (0, StoreStats::default()));
}

#[test]
fn every_changed_byte_is_refused() {
    let bytes = archive(&records());
    for position in 0..bytes.len() {
        for flip in [0x01, 0x80, 0xFF] {
            let mut damaged = bytes.clone();
            damaged[position] ^= flip;
            let e = refused(&damaged);
            let expected = if (8..12).contains(&position) && damaged[8..12] != [0; 4] {
                ErrorKind::Misconfigured // a version this build does not know
            } else {
                ErrorKind::Corrupt
            };
            assert_eq!(e.kind(), expected, "byte {position} ^ {flip:#x}: {}", text(&e));
        }
    }
}

#[test]
fn a_changed_byte_is_reported_at_its_frame() {
    let bytes = archive(&records());
    let starts = frame_starts(&bytes);
    // starts[0] is the header, starts[1 + n] record n, the last the trailer.
    for (n, at) in [(0, "record 0"), (3, "record 3"), (6, "record 6")] {
        let start = starts[1 + n];
        let mut damaged = bytes.clone();
        damaged[start + 7] ^= 0x10;
        let e = refused(&damaged);
        assert_eq!(e.to_string(), format!("invalid archive at byte offset {start} ({at})"), "{}", text(&e));
        assert!(text(&e).contains("checksum does not match"), "{}", text(&e));
    }
    let trailer = *starts.last().unwrap();
    let mut damaged = bytes.clone();
    damaged[trailer + 6] ^= 0x10;
    assert_eq!(refused(&damaged).to_string(), format!("invalid archive at byte offset {trailer} (trailer)"));
    let mut damaged = bytes;
    damaged[starts[0] + 6] ^= 0x10;
    assert_eq!(
        refused(&damaged).to_string(),
        format!("invalid archive at byte offset {} (header)", starts[0])
    );
}

#[test]
fn every_truncation_is_refused() {
    let bytes = archive(&records());
    for length in 0..bytes.len() {
        let e = refused(&bytes[..length]);
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{length} bytes: {}", text(&e));
        assert!(text(&e).contains("truncated"), "{length} bytes: {}", text(&e));
        assert!(e.to_string().contains(&format!("byte offset {length} (")), "{length} bytes: {}", text(&e));
    }
    let starts = frame_starts(&bytes);
    let e = refused(&bytes[..starts[3]]);
    assert_eq!(e.to_string(), format!("invalid archive at byte offset {} (record 2)", starts[3]));
}

#[test]
fn anything_after_the_trailer_is_refused() {
    let mut bytes = archive(&records());
    let end = bytes.len();
    bytes.push(0);
    let e = refused(&bytes);
    assert_eq!(e.to_string(), format!("invalid archive at byte offset {end} (trailer)"));
    assert!(text(&e).contains("bytes follow the trailer"), "{}", text(&e));
}

#[test]
fn other_files_and_versions_are_refused() {
    let e = refused(b"PK\x03\x04 a zip file");
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    assert!(text(&e).contains("not a vellum archive"), "{}", text(&e));
    let mut newer = archive(&[]);
    newer[8..12].copy_from_slice(&2u32.to_be_bytes());
    let e = refused(&newer);
    assert_eq!(e.kind(), ErrorKind::Misconfigured);
    assert!(text(&e).contains("version 2") && text(&e).contains("newer vellum"), "{}", text(&e));
}

#[test]
fn huge_lengths_are_refused_without_allocating_them() {
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&VERSION.to_be_bytes());
    bytes.push(KIND_HEADER);
    bytes.extend_from_slice(&u32::MAX.to_be_bytes());
    let e = refused(&bytes);
    assert!(text(&e).contains("exceeds the limit"), "{}", text(&e));
    // At the limit, only the bytes present are read (and allocated): a truncation.
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&VERSION.to_be_bytes());
    bytes.push(KIND_HEADER);
    bytes.extend_from_slice(&MAX_FRAME.to_be_bytes());
    bytes.extend_from_slice(&[0; 100]);
    let e = refused(&bytes);
    assert!(text(&e).contains("truncated"), "{}", text(&e));
}

#[test]
fn well_framed_but_wrong_contents_are_refused() {
    let records = records();
    let stats = stats_of(&records);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (crafted(&records, StoreStats { events: 3, ..stats }, None, None), "the header counts"),
        (crafted(&records, stats, Some(6), None), "the trailer counts 6 records"),
        (crafted(&records, stats, None, Some("00000000000000000000000000000000")), "checksum"),
        (
            {
                let mut twice = records.clone();
                twice.insert(1, records[0].clone());
                crafted(&twice, StoreStats { aggregates: 3, ..stats }, None, None)
            },
            "aggregate agg/a-1 repeats the key of an earlier record",
        ),
        (
            {
                let mut swapped = records.clone();
                swapped.swap(5, 6);
                crafted(&swapped, stats, None, None)
            },
            "does not continue the event log, whose next offset is 0",
        ),
        (
            {
                let mut unordered = records.clone();
                unordered.swap(0, 4);
                crafted(&unordered, stats, None, None)
            },
            "sections out of order",
        ),
        (
            {
                let mut zero = records.clone();
                zero[1] = Record::Aggregate(AggregateMetaData::new("agg", "a-2"));
                crafted(&zero, stats, None, None)
            },
            "has revision 0",
        ),
    ];
    for (bytes, needle) in cases {
        let e = refused(&bytes);
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{}", text(&e));
        assert!(text(&e).contains(needle), "expected {needle:?}: {}", text(&e));
    }

    // Frames out of place: a second header, an unknown kind, a body that does not decode.
    let good = archive(&records);
    let offsets = frame_starts(&good);
    for (inserted, needle) in [
        (frame(KIND_HEADER, &[]), "a second header"),
        (frame(0x42, &[]), "unknown frame kind 0x42"),
        (frame(section_kind(Section::Events), &[0xFF]), "the event record does not decode"),
    ] {
        let mut bytes = good[..offsets[1]].to_vec();
        bytes.extend(inserted);
        bytes.extend_from_slice(&good[offsets[1]..]);
        let e = refused(&bytes);
        assert_eq!(e.to_string(), format!("invalid archive at byte offset {} (record 0)", offsets[1]));
        assert!(text(&e).contains(needle), "expected {needle:?}: {}", text(&e));
    }
}

#[test]
fn the_expected_application_is_checked_first() {
    let bytes = archive(&records());
    let e = verify_inner(bytes.as_slice(), Some("other-app"), |_| {}).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(text(&e).contains("the archive holds application \"app\""), "{}", text(&e));
    verify_inner(Cursor::new(&bytes), Some("app"), |_| {}).unwrap();
}

#[test]
fn the_writer_refuses_what_it_cannot_frame() {
    let records = records();
    let mut out = ArchiveWriter::begin(Vec::new(), header(&records)).unwrap();
    out.write(&records[4]).unwrap();
    let e = out.write(&records[0]).unwrap_err();
    assert!(text(&e).contains("after Queue records"), "{}", text(&e));
    // Counts that differ from the header: no trailer.
    let mut out = ArchiveWriter::begin(Vec::new(), header(&records)).unwrap();
    out.write(&records[0]).unwrap();
    let e = out.finish().unwrap_err();
    assert!(text(&e).contains("the store changed during the export"), "{}", text(&e));
    // A queue time no provider stores.
    let mut message = match &records[4] {
        Record::Queue { message, .. } => message.clone(),
        _ => unreachable!(),
    };
    message.next_attempt_at = UNIX_EPOCH + Duration::from_secs(u64::MAX / 2);
    let e = encode_record(&Record::Queue { sequence: 1, message }).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
}
