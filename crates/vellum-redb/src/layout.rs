//! The on-disk layout: file names, tables, records and the layout version.
//!
//! One redb file holds one application's data, so no key carries the application key (isolation
//! holds by construction, docs/events.md#isolation-per-application). ARCHITECTURE.md describes
//! the same layout for readers of the repository; change both together, and bump
//! [`LAYOUT_VERSION`] on any incompatible change.

use redb::TableDefinition;

/// The version of the layout this crate writes. A file with a higher version is refused; one
/// with a lower version is migrated at open (`migrate.rs`).
///
/// - 1: records without checksums; consumer offsets in `offsets` as plain `u64`s.
/// - 2: every record sealed with its checksum (`records.rs`); consumer offsets in
///   `consumer_offsets`; the counters' checksum under [`COUNTERS_CHECKSUM`]; each event links to
///   the previous event of its type and of its source, and [`TYPE_HEADS`] and [`SOURCE_HEADS`]
///   hold the newest of each, so a read through an index notices a lost entry.
pub(crate) const LAYOUT_VERSION: u64 = 2;

/// `meta`: key -> bytes. Holds [`META_LAYOUT_VERSION`] (u64 big-endian) and [`META_APP_KEY`].
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// The `meta` key of the layout version.
pub(crate) const META_LAYOUT_VERSION: &str = "layout_version";
/// The `meta` key of the application key the file belongs to.
pub(crate) const META_APP_KEY: &str = "app_key";

/// `counters`: name -> u64. [`NEXT_OFFSET`], [`NEXT_SEQUENCE`] and [`COUNTERS_CHECKSUM`].
pub(crate) const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
/// The offset the next event gets (= number of events).
pub(crate) const NEXT_OFFSET: &str = "next_offset";
/// The enqueue sequence the next new queue message gets.
pub(crate) const NEXT_SEQUENCE: &str = "next_sequence";
/// The checksum of the two counters (`integrity::counters`), rewritten with them.
pub(crate) const COUNTERS_CHECKSUM: &str = "checksum";

/// `events`: offset -> encoded envelope, then [`Links`], sealed with its checksum.
pub(crate) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// `event_ids`: message ID -> offset (duplicate detection, docs/batches.md#events-and-duplicate-message-ids).
pub(crate) const EVENT_IDS: TableDefinition<&str, u64> = TableDefinition::new("event_ids");
/// `events_by_type`: (portable name, offset) -> ().
pub(crate) const EVENTS_BY_TYPE: TableDefinition<(&str, u64), ()> = TableDefinition::new("events_by_type");
/// `events_by_source`: (handler key, instance ID, offset) -> ().
pub(crate) const EVENTS_BY_SOURCE: TableDefinition<(&str, &str, u64), ()> =
    TableDefinition::new("events_by_source");
/// `type_heads`: portable name -> offset of the newest event of that type.
pub(crate) const TYPE_HEADS: TableDefinition<&str, u64> = TableDefinition::new("type_heads");
/// `source_heads`: (handler key, instance ID) -> offset of the newest event from that source.
pub(crate) const SOURCE_HEADS: TableDefinition<(&str, &str), u64> = TableDefinition::new("source_heads");

/// Where an event sits in its two index chains: the offset of the previous event of its type
/// and of its source (`None` for the first). Stored after the envelope, inside the checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Links {
    /// The previous event of the same portable name.
    pub(crate) by_type: Option<u64>,
    /// The previous event of the same source handler instance.
    pub(crate) by_source: Option<u64>,
}

impl Links {
    /// The encoded size: two u64s, `u64::MAX` for `None`.
    pub(crate) const LEN: usize = 16;

    /// The encoded links.
    pub(crate) fn to_bytes(self) -> [u8; Self::LEN] {
        let mut bytes = [0; Self::LEN];
        bytes[..8].copy_from_slice(&self.by_type.unwrap_or(u64::MAX).to_le_bytes());
        bytes[8..].copy_from_slice(&self.by_source.unwrap_or(u64::MAX).to_le_bytes());
        bytes
    }

    /// Decodes links written by [`Links::to_bytes`].
    pub(crate) fn from_bytes(bytes: [u8; Self::LEN]) -> Self {
        let link = |b: &[u8]| {
            let value = u64::from_le_bytes(b.try_into().unwrap_or([0xff; 8]));
            (value != u64::MAX).then_some(value)
        };
        Self { by_type: link(&bytes[..8]), by_source: link(&bytes[8..]) }
    }
}

/// `aggregates`: (handler key, instance ID) -> [`AggregateRecord`], sealed.
pub(crate) const AGGREGATES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("aggregates");
/// `processes`: (handler key, instance ID) -> [`ProcessRecord`], sealed.
pub(crate) const PROCESSES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("processes");
/// `queue`: message ID -> [`QueueRecord`], sealed with its envelope sum, then its state sum.
pub(crate) const QUEUE: TableDefinition<&str, &[u8]> = TableDefinition::new("queue");
/// `queue_order`: (`next_attempt_at` µs, enqueue sequence, message ID) -> (), the queue's order
/// (docs/queue.md#queue-order).
pub(crate) const QUEUE_ORDER: TableDefinition<(i64, u64, &str), ()> = TableDefinition::new("queue_order");
/// `queue_timeouts`: (owner handler key, owner instance ID, message ID) -> (), for the cascade of
/// `RemoveProcessInstance` (docs/batches.md#process-removal-and-timeouts).
pub(crate) const QUEUE_TIMEOUTS: TableDefinition<(&str, &str, &str), ()> =
    TableDefinition::new("queue_timeouts");
/// `consumer_offsets`: source application key -> next offset to consume (u64 little-endian),
/// sealed.
pub(crate) const OFFSETS: TableDefinition<&str, &[u8]> = TableDefinition::new("consumer_offsets");

/// An aggregate's stored meta-data.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct AggregateRecord {
    /// The revision, at least 1.
    #[prost(uint64, tag = "1")]
    pub revision: u64,
    /// ID of the newest event recorded for the instance.
    #[prost(string, tag = "2")]
    pub last_event_id: String,
}

/// A process instance's stored state.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ProcessRecord {
    /// The revision, at least 1.
    #[prost(uint64, tag = "1")]
    pub revision: u64,
    /// The packet's media type.
    #[prost(string, tag = "2")]
    pub media_type: String,
    /// The packet's data.
    #[prost(bytes = "vec", tag = "3")]
    pub data: Vec<u8>,
}

/// A queued message.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct QueueRecord {
    /// The revision, at least 1.
    #[prost(uint64, tag = "1")]
    pub revision: u64,
    /// Failed attempts so far.
    #[prost(uint64, tag = "2")]
    pub failure_count: u64,
    /// `next_attempt_at` in µs since the Unix epoch.
    #[prost(sint64, tag = "3")]
    pub next_attempt_at: i64,
    /// The enqueue sequence, given at first enqueue and kept on update (FIFO ties,
    /// docs/queue.md#queue-order).
    #[prost(uint64, tag = "4")]
    pub sequence: u64,
    /// The encoded envelope, immutable once enqueued.
    #[prost(bytes = "vec", tag = "5")]
    pub envelope: Vec<u8>,
}

/// The file name of an application's database inside the provider's directory.
///
/// A key made only of `[a-z0-9_-]` (1 to 64 characters, e.g. a lower-case UUID) is used as is:
/// `app.<key>.redb`. Any other key (empty, upper case, unicode, `/`, quotes, long) becomes
/// `app.<sanitised prefix, or _>.<128-bit FNV-1a hash>.redb`. The two forms differ in their number of
/// dots, so they never collide with each other, and names are equal only for equal keys or equal
/// hashes; the key stored inside the file is checked on open, so even a hash collision is an
/// error, never shared data. Lower case only, so case-insensitive file systems behave the same.
pub(crate) fn file_name(app_key: &str) -> String {
    let plain = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-';
    if !app_key.is_empty() && app_key.len() <= 64 && app_key.chars().all(plain) {
        return format!("app.{app_key}.redb");
    }
    let prefix: String = app_key
        .chars()
        .take(32)
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if plain(c) { c } else { '_' }
        })
        .collect();
    let prefix = if prefix.is_empty() { "_".to_owned() } else { prefix };
    format!("app.{prefix}.{:032x}.redb", vellum_core::provider::hash::fnv1a_128(app_key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn plain_keys_are_used_as_is() {
        assert_eq!(
            file_name("a96fefa1-2630-467a-b756-db2e428a56fd"),
            "app.a96fefa1-2630-467a-b756-db2e428a56fd.redb"
        );
        assert_eq!(file_name("billing_2"), "app.billing_2.redb");
    }

    #[test]
    fn other_keys_are_sanitised_and_hashed() {
        let keys =
            ["", "A", "a", "<app-key>", "../etc/passwd", "é'\";%", "a/b", "a.b", "日本", &"x".repeat(300)];
        let names: Vec<String> = keys.iter().map(|k| file_name(k)).collect();
        for name in &names {
            let extension = std::path::Path::new(name).extension();
            assert!(name.starts_with("app.") && extension == Some("redb".as_ref()), "{name}");
            let stem = &name[4..name.len() - 5];
            assert!(stem.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)), "{name}");
            assert!(name.len() < 120, "{name}");
            assert!(!name.contains('/') && !name.contains(".."), "{name}");
        }
        let unique: HashSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        assert_eq!(file_name(""), "app._.6c62272e07bb014262b821756295c58d.redb");
    }

    #[test]
    fn names_are_stable() {
        // Changing the hash would orphan every existing file: this pins it.
        assert_eq!(
            format!("{:032x}", vellum_core::provider::hash::fnv1a_128(b"")),
            "6c62272e07bb014262b821756295c58d"
        );
        assert_eq!(
            format!("{:032x}", vellum_core::provider::hash::fnv1a_128(b"a")),
            "d228cb696f1a8caf78912b704e4a8964"
        );
    }
}
