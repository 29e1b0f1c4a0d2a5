//! Archives through a real store (the memory provider): a round trip restores the same store,
//! and a damaged, truncated or foreign archive is refused with the destination left empty.

#![allow(clippy::unwrap_used)]

use std::io::Cursor;
use std::time::{Duration, UNIX_EPOCH};

use vellum_core::archive::{self, Phase};
use vellum_core::bulk::{self, BulkStore, Record};
use vellum_core::{
    AggregateMetaData, Envelope, ErrorKind, Event, EventRepository, Identity, Packet, ProcessInstance,
    Provider, QueueMessage, QueueRepository,
};
use vellum_memory::{MemoryProvider, MemoryStore};

fn envelope(id: &str) -> Envelope {
    Envelope {
        message_id: id.into(),
        portable_name: "test.Thing".into(),
        source_application: Some(Identity::new("", "")),
        data: id.as_bytes().to_vec(),
        ..Envelope::default()
    }
}

/// A store holding `n` records of each section (the queue tied on time, out of ID order).
async fn source(n: u64) -> MemoryStore {
    let store = MemoryProvider::new().open("app").await.unwrap();
    let at = UNIX_EPOCH + Duration::from_micros(1_900_000_000_000_001);
    let mut records = Vec::new();
    for i in 0..n {
        records.push(Record::Aggregate(AggregateMetaData {
            revision: i + 1,
            last_event_id: format!("e-{i}"),
            ..AggregateMetaData::new("agg", format!("a-{i}"))
        }));
        records.push(Record::Process(ProcessInstance {
            revision: 1,
            packet: Packet::new("application/octet-stream", vec![i as u8; i as usize]),
            ..ProcessInstance::new("proc", format!("p-{i}"))
        }));
        records.push(Record::Offset { application_key: format!("upstream-{i}"), next_offset: i * 10 });
        records.push(Record::Queue {
            sequence: 100 - i,
            message: QueueMessage {
                revision: 1,
                failure_count: i,
                next_attempt_at: at,
                envelope: envelope(&format!("q-{i}")),
            },
        });
        records.push(Record::Event(Event { offset: i, envelope: envelope(&format!("e-{i}")) }));
    }
    store.import(records).await.unwrap();
    store
}

async fn destination() -> MemoryStore {
    MemoryProvider::new().open("app").await.unwrap()
}

async fn export(store: &MemoryStore) -> Vec<u8> {
    let mut bytes = Vec::new();
    archive::export_with_origin(store, "memory", &mut bytes, 3, |_| {}).await.unwrap();
    bytes
}

#[tokio::test]
async fn a_round_trip_restores_the_same_store() {
    let source = source(5).await;
    let mut bytes = Vec::new();
    let mut reported = Vec::new();
    let written =
        archive::export_with_origin(&source, "memory", &mut bytes, 3, |n| reported.push(n)).await.unwrap();
    assert_eq!(reported.last(), Some(&25));
    assert_eq!(written.records, 25);
    assert_eq!(written.bytes, bytes.len() as u64);
    assert_eq!(written.header.origin, "memory");
    assert_eq!(written.digest, bulk::checksum(&source, 7).await.unwrap());

    let destination = destination().await;
    let mut phases = Vec::new();
    let read =
        archive::import(Cursor::new(&bytes), &destination, "app", 4, |phase, n| phases.push((phase, n)))
            .await
            .unwrap();
    assert_eq!(read, written);
    assert_eq!(destination.stats().await.unwrap(), source.stats().await.unwrap());
    assert_eq!(bulk::checksum(&destination, 7).await.unwrap(), written.digest);
    assert_eq!(phases.last(), Some(&(Phase::Importing, 25)));
    assert!(phases.contains(&(Phase::Verifying, 25)), "{phases:?}");
    assert_eq!(phases.iter().filter(|(p, _)| *p == Phase::Importing).count(), 7, "pages of 4: {phases:?}");
    // The restored store behaves like the source: same queue head, and exports the same bytes.
    assert_eq!(
        destination.load_queue_messages(10).await.unwrap(),
        source.load_queue_messages(10).await.unwrap()
    );
    assert_eq!(destination.next_event_offset().await.unwrap(), 5);
    assert_eq!(export(&destination).await, bytes);
}

#[tokio::test]
async fn an_empty_store_round_trips() {
    let bytes = export(&destination().await).await;
    let restored = destination().await;
    let summary = archive::import(Cursor::new(bytes), &restored, "app", 10, |_, _| {}).await.unwrap();
    assert_eq!(summary.records, 0);
    assert!(restored.stats().await.unwrap().is_empty());
}

#[tokio::test]
async fn every_changed_byte_leaves_the_destination_empty() {
    let bytes = export(&source(2).await).await;
    let destination = destination().await;
    for position in 0..bytes.len() {
        for flip in [0x01, 0xFF] {
            let mut damaged = bytes.clone();
            damaged[position] ^= flip;
            let e =
                archive::import(Cursor::new(damaged), &destination, "app", 1, |_, _| {}).await.unwrap_err();
            assert!(
                matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::Misconfigured | ErrorKind::InvalidInput),
                "byte {position} ^ {flip:#x}: {e:?}"
            );
            assert!(destination.stats().await.unwrap().is_empty(), "byte {position} ^ {flip:#x} wrote");
        }
    }
}

#[tokio::test]
async fn every_truncation_leaves_the_destination_empty() {
    let bytes = export(&source(2).await).await;
    let destination = destination().await;
    for length in 0..bytes.len() {
        let e = archive::import(Cursor::new(&bytes[..length]), &destination, "app", 1, |_, _| {})
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{length} bytes: {e:?}");
        assert!(e.to_string().starts_with("invalid archive at byte offset "), "{e}");
        assert!(destination.stats().await.unwrap().is_empty(), "{length} bytes wrote");
    }
}

#[tokio::test]
async fn another_application_is_refused() {
    let bytes = export(&source(1).await).await;
    let other = MemoryProvider::new().open("other").await.unwrap();
    let e = archive::import(Cursor::new(&bytes), &other, "other", 10, |_, _| {}).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let text = format!("{e}: {}", std::error::Error::source(&e).unwrap());
    assert!(text.contains("the archive holds application \"app\""), "{text}");
    assert!(other.stats().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_non_empty_destination_is_refused_and_kept() {
    let bytes = export(&source(1).await).await;
    let destination = source(2).await;
    let before = bulk::checksum(&destination, 10).await.unwrap();
    let e = archive::import(Cursor::new(&bytes), &destination, "app", 10, |_, _| {}).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let text = format!("{e}: {}", std::error::Error::source(&e).unwrap());
    assert!(text.contains("not empty (10 records)"), "{text}");
    assert_eq!(bulk::checksum(&destination, 10).await.unwrap(), before);
}

#[tokio::test]
async fn import_starts_where_the_reader_is() {
    // An archive inside a larger file: the second pass rewinds to the first byte of the archive.
    let mut bytes = b"prefix".to_vec();
    bytes.extend(export(&source(3).await).await);
    let mut reader = Cursor::new(bytes);
    reader.set_position(6);
    let destination = destination().await;
    let summary = archive::import(&mut reader, &destination, "app", 2, |_, _| {}).await.unwrap();
    assert_eq!(summary.records, 15);
    assert_eq!(bulk::checksum(&destination, 10).await.unwrap(), summary.digest);
}
