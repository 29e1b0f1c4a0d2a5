//! Record checksums: how every durable provider proves that what it reads is what it wrote
//! (docs/integrity.md).
//!
//! A checksum covers a record's identity (the application, and the key or offset it is stored
//! under) as well as its contents, so a record that is intact but found under the wrong key,
//! offset or application fails as surely as one with a flipped byte. Each record kind has one
//! function here, so every provider sums the same fields the same way; the providers only store
//! the sum beside the record and call [`check`] when reading it back.
//!
//! The sum is CRC-32 (IEEE) over a length-prefixed encoding of the fields: it detects every
//! burst of damage up to 32 bits and any other damage with probability 1 - 2^-32, at several
//! GB/s, which keeps it well under the cost of the read that fetched the record.

use std::fmt;

use crate::error::{Error, ErrorKind};

/// A running checksum over a record's fields. Each field is length-prefixed (or fixed-width),
/// so field boundaries are part of the sum: `("ab", "c")` and `("a", "bc")` differ.
#[derive(Clone, Default)]
pub struct Sum(crc32fast::Hasher);

impl Sum {
    /// A sum over nothing yet, tagged with the record kind so different kinds never share sums.
    #[must_use]
    pub fn new(kind: RecordKind) -> Self {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&[kind as u8]);
        Self(hasher)
    }

    /// Adds a byte string.
    #[must_use]
    pub fn bytes(mut self, bytes: &[u8]) -> Self {
        self.0.update(&(bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }

    /// Adds a string.
    #[must_use]
    pub fn str(self, s: &str) -> Self {
        self.bytes(s.as_bytes())
    }

    /// Adds an unsigned integer.
    #[must_use]
    pub fn u64(mut self, value: u64) -> Self {
        self.0.update(&value.to_le_bytes());
        self
    }

    /// Adds a signed integer.
    #[must_use]
    pub fn i64(mut self, value: i64) -> Self {
        self.0.update(&value.to_le_bytes());
        self
    }

    /// Adds an optional string (absent and empty differ).
    #[must_use]
    pub fn opt_str(mut self, s: Option<&str>) -> Self {
        match s {
            None => {
                self.0.update(&[0]);
                self
            }
            Some(s) => {
                self.0.update(&[1]);
                self.str(s)
            }
        }
    }

    /// The checksum.
    #[must_use]
    pub fn finish(self) -> u32 {
        self.0.finalize()
    }
}

/// The kinds of stored record, each with its own checksum domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// An event envelope at its offset.
    Event = 1,
    /// Aggregate meta-data.
    Aggregate = 2,
    /// A process instance.
    Process = 3,
    /// A queued message's immutable part: its envelope and enqueue sequence.
    QueueEnvelope = 4,
    /// A queued message's mutable part: revision, failure count, next attempt.
    QueueState = 5,
    /// A consumer offset.
    Offset = 6,
    /// The application's counters (next offset, next enqueue sequence).
    Counters = 7,
    /// An index entry (its key is its whole content).
    IndexEntry = 8,
}

/// The sum of an event: its application, offset and encoded envelope.
#[must_use]
pub fn event(app_key: &str, offset: u64, envelope: &[u8]) -> u32 {
    Sum::new(RecordKind::Event).str(app_key).u64(offset).bytes(envelope).finish()
}

/// The sum of aggregate meta-data.
#[must_use]
pub fn aggregate(
    app_key: &str,
    handler_key: &str,
    instance_id: &str,
    revision: u64,
    last_event_id: &str,
) -> u32 {
    Sum::new(RecordKind::Aggregate)
        .str(app_key)
        .str(handler_key)
        .str(instance_id)
        .u64(revision)
        .str(last_event_id)
        .finish()
}

/// The sum of a process instance.
#[must_use]
pub fn process(
    app_key: &str,
    handler_key: &str,
    instance_id: &str,
    revision: u64,
    media_type: &str,
    data: &[u8],
) -> u32 {
    Sum::new(RecordKind::Process)
        .str(app_key)
        .str(handler_key)
        .str(instance_id)
        .u64(revision)
        .str(media_type)
        .bytes(data)
        .finish()
}

/// The sum of a queued message's immutable part, written once at enqueue.
#[must_use]
pub fn queue_envelope(app_key: &str, message_id: &str, sequence: u64, envelope: &[u8]) -> u32 {
    Sum::new(RecordKind::QueueEnvelope).str(app_key).str(message_id).u64(sequence).bytes(envelope).finish()
}

/// The sum of a queued message's mutable part, rewritten with every update.
#[must_use]
pub fn queue_state(
    app_key: &str,
    message_id: &str,
    revision: u64,
    failure_count: u64,
    next_attempt_at: i64,
) -> u32 {
    Sum::new(RecordKind::QueueState)
        .str(app_key)
        .str(message_id)
        .u64(revision)
        .u64(failure_count)
        .i64(next_attempt_at)
        .finish()
}

/// The sum of a consumer offset.
#[must_use]
pub fn offset(app_key: &str, source_app_key: &str, next_offset: u64) -> u32 {
    Sum::new(RecordKind::Offset).str(app_key).str(source_app_key).u64(next_offset).finish()
}

/// The sum of the application's counters.
#[must_use]
pub fn counters(app_key: &str, next_offset: u64, next_sequence: u64) -> u32 {
    Sum::new(RecordKind::Counters).str(app_key).u64(next_offset).u64(next_sequence).finish()
}

/// Checks a stored sum against the one computed from what was read.
///
/// `provider`, `place` (file or table) and `record` (its offset or key) name the record in the
/// error, which is of kind [`ErrorKind::Corrupt`].
pub fn check(
    stored: u32,
    computed: u32,
    provider: &str,
    place: &dyn fmt::Display,
    app_key: &str,
    record: &dyn fmt::Display,
) -> Result<(), Error> {
    if stored == computed {
        return Ok(());
    }
    Err(corrupt(
        provider,
        place,
        app_key,
        record,
        format!("checksum mismatch: stored {stored:08x}, computed {computed:08x}"),
    ))
}

/// An error of kind [`ErrorKind::Corrupt`] naming the provider, the file or table, the
/// application and the record, with what is wrong with it.
pub fn corrupt(
    provider: &str,
    place: &dyn fmt::Display,
    app_key: &str,
    record: &dyn fmt::Display,
    what: impl Into<String>,
) -> Error {
    Error::storage_kind(
        ErrorKind::Corrupt,
        format!("{provider}: damaged {record} of application {app_key:?} in {place}"),
        Damage(what.into()),
    )
}

/// What is wrong with a damaged record.
#[derive(Debug)]
struct Damage(String);

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Damage {}

/// Appends the checksum to a record's bytes (4 bytes, little-endian), for stores that keep a
/// record as one value.
#[must_use]
pub fn seal(mut bytes: Vec<u8>, sum: u32) -> Vec<u8> {
    bytes.extend_from_slice(&sum.to_le_bytes());
    bytes
}

/// Splits a sealed value into the record's bytes and its stored checksum; `None` when it is too
/// short to hold one.
#[must_use]
pub fn unseal(sealed: &[u8]) -> Option<(&[u8], u32)> {
    let split = sealed.len().checked_sub(4)?;
    let (bytes, sum) = sealed.split_at(split);
    Some((bytes, u32::from_le_bytes(sum.try_into().ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_boundaries_and_kinds_are_part_of_the_sum() {
        let a = Sum::new(RecordKind::Event).str("ab").str("c").finish();
        let b = Sum::new(RecordKind::Event).str("a").str("bc").finish();
        let c = Sum::new(RecordKind::Offset).str("ab").str("c").finish();
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_ne!(
            Sum::new(RecordKind::Event).opt_str(None).finish(),
            Sum::new(RecordKind::Event).opt_str(Some("")).finish()
        );
    }

    #[test]
    fn identity_is_part_of_the_sum() {
        assert_ne!(event("app", 1, b"x"), event("app", 2, b"x"));
        assert_ne!(event("app", 1, b"x"), event("other", 1, b"x"));
        assert_eq!(event("app", 1, b"x"), event("app", 1, b"x"));
    }

    #[test]
    fn the_sum_is_stable() {
        // Stored sums must stay valid across releases: this pins the encoding.
        assert_eq!(format!("{:08x}", event("app", 7, b"envelope")), "1b26cf3f");
    }

    #[test]
    fn unseal_round_trips_and_refuses_short_values() {
        let sealed = seal(b"record".to_vec(), 0xdead_beef);
        assert_eq!(unseal(&sealed), Some((&b"record"[..], 0xdead_beef)));
        assert_eq!(unseal(b"abc"), None);
        assert_eq!(unseal(&[0, 0, 0, 0]), Some((&b""[..], 0)));
    }

    #[test]
    fn a_mismatch_is_corrupt_and_names_the_record() {
        let e = check(1, 2, "redb", &"file /x", "app", &"event at offset 5").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        let text = e.to_string();
        assert!(
            text.contains("redb")
                && text.contains("/x")
                && text.contains("offset 5")
                && text.contains("\"app\""),
            "{text}"
        );
    }
}
