//! Stored values with their checksums: each record is sealed with the sum of its kind
//! ([`vellum_core::provider::integrity`]) when written and checked when read, so a damaged
//! record is an [`ErrorKind::Corrupt`](vellum_core::ErrorKind::Corrupt) error naming the file,
//! the application and the record, never a wrong value (docs/integrity.md).

use std::fmt;
use std::path::Path;

use prost::Message;
use vellum_core::provider::integrity::{self, seal, unseal};
use vellum_core::{Envelope, Error, Result};

use crate::PROVIDER;
use crate::layout::{AggregateRecord, Links, ProcessRecord, QueueRecord};

/// Seals and opens one file's records; knows the file and application to name in errors and
/// to sum into every record.
#[derive(Clone, Copy)]
pub(crate) struct Codec<'a> {
    pub(crate) file: &'a Path,
    pub(crate) app_key: &'a str,
}

/// How errors name the file.
struct Place<'a>(&'a Path);

impl fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "redb file {}", self.0.display())
    }
}

impl Codec<'_> {
    /// A corrupt-kind error naming `record` and what is wrong with it.
    pub(crate) fn corrupt(&self, record: &dyn fmt::Display, what: impl Into<String>) -> Error {
        integrity::corrupt(PROVIDER, &Place(self.file), self.app_key, record, what)
    }

    /// Splits a sealed value and checks its sum against `sum(bytes)`.
    fn open<'v>(
        &self,
        value: &'v [u8],
        record: &dyn fmt::Display,
        sum: impl FnOnce(&[u8]) -> u32,
    ) -> Result<&'v [u8]> {
        let (bytes, stored) =
            unseal(value).ok_or_else(|| self.corrupt(record, "value too short to hold its checksum"))?;
        integrity::check(stored, sum(bytes), PROVIDER, &Place(self.file), self.app_key, record)?;
        Ok(bytes)
    }

    fn decode<M: Message + Default>(&self, bytes: &[u8], record: &dyn fmt::Display) -> Result<M> {
        M::decode(bytes).map_err(|e| self.corrupt(record, format!("does not decode: {e}")))
    }

    /// The stored value of an event: its envelope, then its links, sealed.
    pub(crate) fn seal_event(&self, offset: u64, envelope: &Envelope, links: Links) -> Vec<u8> {
        self.seal_event_bytes(offset, envelope.to_bytes(), links)
    }

    /// The stored value of an event whose envelope is already encoded.
    pub(crate) fn seal_event_bytes(&self, offset: u64, mut bytes: Vec<u8>, links: Links) -> Vec<u8> {
        // One growth for the links and the sum, not one each.
        bytes.reserve_exact(Links::LEN + 4);
        bytes.extend_from_slice(&links.to_bytes());
        let sum = integrity::event(self.app_key, offset, &bytes);
        seal(bytes, sum)
    }

    /// The event stored at `offset`, and its links.
    pub(crate) fn event(&self, offset: u64, value: &[u8]) -> Result<(Envelope, Links)> {
        let record = format_args!("event at offset {offset}");
        let bytes = self.open(value, &record, |b| integrity::event(self.app_key, offset, b))?;
        let split = bytes
            .len()
            .checked_sub(Links::LEN)
            .ok_or_else(|| self.corrupt(&record, "too short for its links"))?;
        let (envelope, links) = bytes.split_at(split);
        let links = Links::from_bytes(links.try_into().map_err(|_| self.corrupt(&record, "bad links"))?);
        Ok((self.decode(envelope, &record)?, links))
    }

    /// The stored value of an aggregate's meta-data.
    pub(crate) fn seal_aggregate(
        &self,
        handler_key: &str,
        instance_id: &str,
        record: &AggregateRecord,
    ) -> Vec<u8> {
        seal(record.encode_to_vec(), self.aggregate_sum(handler_key, instance_id, record))
    }

    /// The aggregate meta-data stored under `(handler_key, instance_id)`.
    pub(crate) fn aggregate(
        &self,
        handler_key: &str,
        instance_id: &str,
        value: &[u8],
    ) -> Result<AggregateRecord> {
        let what = format_args!("aggregate {handler_key:?}/{instance_id:?}");
        self.open_decoded(value, &what, |r| self.aggregate_sum(handler_key, instance_id, r))
    }

    fn aggregate_sum(&self, handler_key: &str, instance_id: &str, r: &AggregateRecord) -> u32 {
        integrity::aggregate(self.app_key, handler_key, instance_id, r.revision, &r.last_event_id)
    }

    /// The stored value of a process instance.
    pub(crate) fn seal_process(
        &self,
        handler_key: &str,
        instance_id: &str,
        record: &ProcessRecord,
    ) -> Vec<u8> {
        seal(record.encode_to_vec(), self.process_sum(handler_key, instance_id, record))
    }

    /// The process instance stored under `(handler_key, instance_id)`.
    pub(crate) fn process(
        &self,
        handler_key: &str,
        instance_id: &str,
        value: &[u8],
    ) -> Result<ProcessRecord> {
        let what = format_args!("process {handler_key:?}/{instance_id:?}");
        self.open_decoded(value, &what, |r| self.process_sum(handler_key, instance_id, r))
    }

    fn process_sum(&self, handler_key: &str, instance_id: &str, r: &ProcessRecord) -> u32 {
        integrity::process(self.app_key, handler_key, instance_id, r.revision, &r.media_type, &r.data)
    }

    /// Decodes a sealed record, then checks its stored sum against `sum` of what decoded (these
    /// records' sums cover their fields, not their encoding).
    fn open_decoded<M: Message + Default>(
        &self,
        value: &[u8],
        record: &dyn fmt::Display,
        sum: impl FnOnce(&M) -> u32,
    ) -> Result<M> {
        let (bytes, stored) =
            unseal(value).ok_or_else(|| self.corrupt(record, "value too short to hold its checksum"))?;
        let decoded: M = self.decode(bytes, record)?;
        integrity::check(stored, sum(&decoded), PROVIDER, &Place(self.file), self.app_key, record)?;
        Ok(decoded)
    }

    /// The stored value of a queued message: the record sealed with the sum of its envelope
    /// part, then with the sum of its state part (the two sums every provider keeps).
    pub(crate) fn seal_queue(&self, message_id: &str, record: &QueueRecord) -> Vec<u8> {
        let envelope_sum =
            integrity::queue_envelope(self.app_key, message_id, record.sequence, &record.envelope);
        let state_sum = self.queue_state_sum(message_id, record);
        seal(seal(record.encode_to_vec(), envelope_sum), state_sum)
    }

    fn queue_state_sum(&self, message_id: &str, record: &QueueRecord) -> u32 {
        integrity::queue_state(
            self.app_key,
            message_id,
            record.revision,
            record.failure_count,
            record.next_attempt_at,
        )
    }

    /// The queued message stored under `message_id`, and its decoded envelope.
    pub(crate) fn queue(&self, message_id: &str, value: &[u8]) -> Result<(QueueRecord, Envelope)> {
        let what = format_args!("queue message {message_id:?}");
        let short = || self.corrupt(&what, "value too short to hold its checksums");
        let (rest, state_sum) = unseal(value).ok_or_else(short)?;
        let (bytes, envelope_sum) = unseal(rest).ok_or_else(short)?;
        let record: QueueRecord = self.decode(bytes, &what)?;
        let place = Place(self.file);
        let computed = integrity::queue_envelope(self.app_key, message_id, record.sequence, &record.envelope);
        integrity::check(envelope_sum, computed, PROVIDER, &place, self.app_key, &what)?;
        integrity::check(
            state_sum,
            self.queue_state_sum(message_id, &record),
            PROVIDER,
            &place,
            self.app_key,
            &what,
        )?;
        let envelope: Envelope = self.decode(&record.envelope, &what)?;
        if envelope.message_id != message_id {
            return Err(self.corrupt(&what, format!("holds message {:?}", envelope.message_id)));
        }
        Ok((record, envelope))
    }

    /// The stored value of a consumer offset.
    pub(crate) fn seal_offset(&self, source: &str, next_offset: u64) -> Vec<u8> {
        seal(next_offset.to_le_bytes().to_vec(), integrity::offset(self.app_key, source, next_offset))
    }

    /// The consumer offset stored under `source`.
    pub(crate) fn offset(&self, source: &str, value: &[u8]) -> Result<u64> {
        let what = format_args!("offset of application {source:?}");
        let (bytes, stored) =
            unseal(value).ok_or_else(|| self.corrupt(&what, "value too short to hold its checksum"))?;
        let bytes: [u8; 8] = bytes.try_into().map_err(|_| self.corrupt(&what, "value is not 8 bytes"))?;
        let next_offset = u64::from_le_bytes(bytes);
        integrity::check(
            stored,
            integrity::offset(self.app_key, source, next_offset),
            PROVIDER,
            &Place(self.file),
            self.app_key,
            &what,
        )?;
        Ok(next_offset)
    }

    /// The sum stored beside the counters.
    pub(crate) fn counters_sum(&self, next_offset: u64, next_sequence: u64) -> u64 {
        u64::from(integrity::counters(self.app_key, next_offset, next_sequence))
    }

    /// Checks the counters against their stored sum.
    pub(crate) fn check_counters(
        &self,
        next_offset: u64,
        next_sequence: u64,
        stored: Option<u64>,
    ) -> Result<()> {
        let computed = self.counters_sum(next_offset, next_sequence);
        if stored == Some(computed) {
            return Ok(());
        }
        Err(self.corrupt(
            &"counters",
            format!(
                "next offset {next_offset} and next sequence {next_sequence} do not match their \
                 checksum ({stored:?}, computed {computed})"
            ),
        ))
    }
}
