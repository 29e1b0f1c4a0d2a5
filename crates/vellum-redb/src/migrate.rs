//! Upgrades a file written in an older layout to [`LAYOUT_VERSION`], at open, in one write
//! transaction: a crash part-way leaves the file as it was.
//!
//! Layout 1 to 2 seals every record with its checksum (`records.rs`): each table of records is
//! copied, sealed, to a scratch table and back (redb has no in-place update while iterating, and
//! this keeps memory flat however large the file), consumer offsets move from `offsets` (plain
//! `u64`) to `consumer_offsets`, and the counters get their checksum. Records that do not decode
//! stop the upgrade with a corrupt error naming them; nothing is changed then.

use std::cell::RefCell;
use std::collections::HashMap;

use prost::Message;
use redb::{Database, Key, ReadableTable, TableDefinition, TableHandle, WriteTransaction};
use vellum_core::{Envelope, Result};

use crate::file::OrStorage;
use crate::layout::{
    AGGREGATES, AggregateRecord, COUNTERS, COUNTERS_CHECKSUM, EVENTS, LAYOUT_VERSION, Links, META,
    META_LAYOUT_VERSION, NEXT_OFFSET, NEXT_SEQUENCE, OFFSETS, PROCESSES, ProcessRecord, QUEUE, QueueRecord,
    SOURCE_HEADS, TYPE_HEADS,
};
use crate::records::Codec;

/// Layout 1's consumer offsets: source application key -> next offset.
pub(crate) const V1_OFFSETS: TableDefinition<&str, u64> = TableDefinition::new("offsets");

/// Upgrades the file from layout `version` (below [`LAYOUT_VERSION`]).
pub(crate) fn upgrade(db: &Database, codec: Codec<'_>, version: u64) -> Result<()> {
    let path = codec.file;
    let txn = db.begin_write().or_storage(path)?;
    if version < 2 {
        seal_records(&txn, codec)?;
    }
    txn.open_table(META)
        .or_storage(path)?
        .insert(META_LAYOUT_VERSION, LAYOUT_VERSION.to_be_bytes().as_slice())
        .or_storage(path)?;
    txn.commit().or_storage(path)?;
    tracing::info!(file = %path.display(), from = version, to = LAYOUT_VERSION, "vellum-redb: upgraded the file's layout");
    Ok(())
}

/// Layout 1 to 2.
fn seal_records(txn: &WriteTransaction, codec: Codec<'_>) -> Result<()> {
    let path = codec.file;
    // Events in offset order, each linked to the previous of its type and source.
    let heads = RefCell::new((HashMap::<String, u64>::new(), HashMap::<(String, String), u64>::new()));
    reseal(txn, codec, EVENTS, |offset, bytes| {
        let envelope = Envelope::from_bytes(bytes).map_err(|e| {
            codec.corrupt(
                &format_args!("event at offset {offset}"),
                format!("does not decode in the layout-1 file: {e}"),
            )
        })?;
        let (types, sources) = &mut *heads.borrow_mut();
        let source = (envelope.source_handler_key().to_owned(), envelope.source_instance_id.clone());
        let links = Links {
            by_type: types.insert(envelope.portable_name.clone(), offset),
            by_source: sources.insert(source, offset),
        };
        Ok(codec.seal_event_bytes(offset, bytes.to_vec(), links))
    })?;
    let (types, sources) = heads.into_inner();
    let mut type_heads = txn.open_table(TYPE_HEADS).or_storage(path)?;
    for (name, offset) in &types {
        type_heads.insert(name.as_str(), offset).or_storage(path)?;
    }
    let mut source_heads = txn.open_table(SOURCE_HEADS).or_storage(path)?;
    for ((h, i), offset) in &sources {
        source_heads.insert((h.as_str(), i.as_str()), offset).or_storage(path)?;
    }
    drop((type_heads, source_heads));
    reseal(txn, codec, AGGREGATES, |(h, i), bytes| {
        let record = decode::<AggregateRecord>(codec, bytes, &format_args!("aggregate {h:?}/{i:?}"))?;
        Ok(codec.seal_aggregate(h, i, &record))
    })?;
    reseal(txn, codec, PROCESSES, |(h, i), bytes| {
        let record = decode::<ProcessRecord>(codec, bytes, &format_args!("process {h:?}/{i:?}"))?;
        Ok(codec.seal_process(h, i, &record))
    })?;
    reseal(txn, codec, QUEUE, |id, bytes| {
        let record = decode::<QueueRecord>(codec, bytes, &format_args!("queue message {id:?}"))?;
        Ok(codec.seal_queue(id, &record))
    })?;
    {
        let old = txn.open_table(V1_OFFSETS).or_storage(path)?;
        let mut new = txn.open_table(OFFSETS).or_storage(path)?;
        for entry in old.iter().or_storage(path)? {
            let (source, next_offset) = entry.or_storage(path)?;
            new.insert(source.value(), codec.seal_offset(source.value(), next_offset.value()).as_slice())
                .or_storage(path)?;
        }
    }
    txn.delete_table(V1_OFFSETS).or_storage(path)?;
    let mut counters = txn.open_table(COUNTERS).or_storage(path)?;
    let counter =
        |name: &str| -> Result<u64> { Ok(counters.get(name).or_storage(path)?.map_or(0, |v| v.value())) };
    let (next_offset, next_sequence) = (counter(NEXT_OFFSET)?, counter(NEXT_SEQUENCE)?);
    counters.insert(NEXT_OFFSET, next_offset).or_storage(path)?;
    counters.insert(NEXT_SEQUENCE, next_sequence).or_storage(path)?;
    counters.insert(COUNTERS_CHECKSUM, codec.counters_sum(next_offset, next_sequence)).or_storage(path)?;
    Ok(())
}

fn decode<M: Message + Default>(codec: Codec<'_>, bytes: &[u8], record: &dyn std::fmt::Display) -> Result<M> {
    M::decode(bytes).map_err(|e| codec.corrupt(record, format!("does not decode in the layout-1 file: {e}")))
}

/// Rewrites every value of `table` as `seal(key, value)`, through a scratch table.
fn reseal<K: Key + 'static>(
    txn: &WriteTransaction,
    codec: Codec<'_>,
    table: TableDefinition<'static, K, &'static [u8]>,
    seal: impl Fn(K::SelfType<'_>, &[u8]) -> Result<Vec<u8>>,
) -> Result<()> {
    let path = codec.file;
    let scratch_name = format!("{}.upgrading", table.name());
    let scratch: TableDefinition<'_, K, &[u8]> = TableDefinition::new(&scratch_name);
    copy(txn, codec, table, scratch, seal)?;
    txn.delete_table(table).or_storage(path)?;
    copy(txn, codec, scratch, table, |_, bytes| Ok(bytes.to_vec()))?;
    txn.delete_table(scratch).or_storage(path)?;
    Ok(())
}

fn copy<K: Key + 'static>(
    txn: &WriteTransaction,
    codec: Codec<'_>,
    from: TableDefinition<'_, K, &'static [u8]>,
    to: TableDefinition<'_, K, &'static [u8]>,
    map: impl Fn(K::SelfType<'_>, &[u8]) -> Result<Vec<u8>>,
) -> Result<()> {
    let path = codec.file;
    let source = txn.open_table(from).or_storage(path)?;
    let mut dest = txn.open_table(to).or_storage(path)?;
    for entry in source.iter().or_storage(path)? {
        let (key, value) = entry.or_storage(path)?;
        let mapped = map(key.value(), value.value())?;
        dest.insert(key.value(), mapped.as_slice()).or_storage(path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use redb::{Database, ReadableDatabase};
    use vellum_core::{
        AggregateRepository, DataStore, Envelope, EventRepository, OffsetRepository, ProcessRepository,
        Provider, QueueRepository,
    };

    use super::*;
    use crate::RedbProvider;
    use crate::layout::{
        EVENT_IDS, EVENTS_BY_SOURCE, EVENTS_BY_TYPE, QUEUE_ORDER, QUEUE_TIMEOUTS, file_name,
    };

    fn envelope(id: &str) -> Envelope {
        Envelope { message_id: id.into(), portable_name: "T".into(), data: id.into(), ..Envelope::default() }
    }

    /// Writes a file as layout 1 laid it out: records without checksums, offsets as `u64`s.
    fn write_layout_1(path: &std::path::Path, app: &str) {
        let db = Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn.open_table(META).unwrap();
            meta.insert(META_LAYOUT_VERSION, 1u64.to_be_bytes().as_slice()).unwrap();
            meta.insert(crate::layout::META_APP_KEY, app.as_bytes()).unwrap();
            let mut counters = txn.open_table(COUNTERS).unwrap();
            counters.insert(NEXT_OFFSET, 2).unwrap();
            counters.insert(NEXT_SEQUENCE, 1).unwrap();
            let mut events = txn.open_table(EVENTS).unwrap();
            let mut ids = txn.open_table(EVENT_IDS).unwrap();
            let mut by_type = txn.open_table(EVENTS_BY_TYPE).unwrap();
            let mut by_source = txn.open_table(EVENTS_BY_SOURCE).unwrap();
            for (offset, id) in [(0u64, "e0"), (1, "e1")] {
                events.insert(offset, envelope(id).to_bytes().as_slice()).unwrap();
                ids.insert(id, offset).unwrap();
                by_type.insert(("T", offset), ()).unwrap();
                by_source.insert(("", "", offset), ()).unwrap();
            }
            let aggregate = AggregateRecord { revision: 3, last_event_id: "e1".into() };
            txn.open_table(AGGREGATES)
                .unwrap()
                .insert(("agg", "a1"), aggregate.encode_to_vec().as_slice())
                .unwrap();
            let process = ProcessRecord { revision: 2, media_type: "m".into(), data: b"state".to_vec() };
            txn.open_table(PROCESSES)
                .unwrap()
                .insert(("proc", "p1"), process.encode_to_vec().as_slice())
                .unwrap();
            let queued = QueueRecord {
                revision: 1,
                failure_count: 4,
                next_attempt_at: 5_000_000,
                sequence: 0,
                envelope: envelope("q0").to_bytes(),
            };
            txn.open_table(QUEUE).unwrap().insert("q0", queued.encode_to_vec().as_slice()).unwrap();
            txn.open_table(QUEUE_ORDER).unwrap().insert((5_000_000, 0, "q0"), ()).unwrap();
            txn.open_table(QUEUE_TIMEOUTS).unwrap();
            txn.open_table(V1_OFFSETS).unwrap().insert("src", 7).unwrap();
        }
        txn.commit().unwrap();
    }

    #[test]
    fn a_layout_1_file_is_upgraded_at_open_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let app = "old-app";
        write_layout_1(&dir.path().join(file_name(app)), app);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let store = RedbProvider::new(dir.path()).open(app).await.unwrap();
            assert_eq!(store.next_event_offset().await.unwrap(), 2);
            let mut cursor = store.load_events_by_type(&["T"], 0).await.unwrap();
            let mut ids = Vec::new();
            while let Some(event) = cursor.next().await.unwrap() {
                ids.push(event.envelope.message_id);
            }
            assert_eq!(ids, ["e0", "e1"]);
            let meta = store.load_aggregate_meta_data("agg", "a1").await.unwrap();
            assert_eq!((meta.revision, meta.last_event_id.as_str()), (3, "e1"));
            let process = store.load_process_instance("proc", "p1").await.unwrap();
            assert_eq!((process.revision, process.packet.data.as_slice()), (2, &b"state"[..]));
            let head = store.load_queue_messages(10).await.unwrap();
            assert_eq!(head.len(), 1);
            assert_eq!(
                (head[0].failure_count, head[0].next_attempt_at),
                (4, UNIX_EPOCH + Duration::from_secs(5))
            );
            assert_eq!(store.load_offset("src").await.unwrap(), 7);
            store.close().await.unwrap();
        });
        // The upgrade was committed: the file now says layout 2.
        let db = Database::open(dir.path().join(file_name(app))).unwrap();
        let txn = db.begin_read().unwrap();
        let version =
            txn.open_table(META).unwrap().get(META_LAYOUT_VERSION).unwrap().unwrap().value().to_vec();
        assert_eq!(version, LAYOUT_VERSION.to_be_bytes());
    }

    #[test]
    fn an_undecodable_layout_1_record_stops_the_upgrade_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let app = "old-app";
        let path = dir.path().join(file_name(app));
        write_layout_1(&path, app);
        {
            let db = Database::open(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(AGGREGATES)
                .unwrap()
                .insert(("agg", "bad"), [0xff_u8, 0xff, 0xff].as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let error = rt.block_on(RedbProvider::new(dir.path()).open(app)).err().unwrap();
        assert_eq!(error.kind(), vellum_core::ErrorKind::Corrupt, "{error}");
        assert!(error.to_string().contains("\"agg\"/\"bad\""), "{error}");
        let db = Database::open(&path).unwrap();
        let txn = db.begin_read().unwrap();
        let version =
            txn.open_table(META).unwrap().get(META_LAYOUT_VERSION).unwrap().unwrap().value().to_vec();
        assert_eq!(version, 1u64.to_be_bytes(), "the failed upgrade changed nothing");
    }
}
