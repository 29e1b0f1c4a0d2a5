//! Archives: one application's whole store as a single file or stream, for backups and
//! restores (`vellum export` / `vellum import`; `docs/archive.md`).
//!
//! [`export`] streams a store's [`bulk`](crate::bulk) export into any [`Write`]; [`import`]
//! restores an archive into an *empty* store, after checking the whole archive first, and then
//! verifies the store against the archive's checksum, as [`bulk::copy`](crate::bulk::copy) does.
//! [`verify`] checks an archive without a store; [`read_header`] reads only its header.
//!
//! # Format, version 1
//!
//! All integers are big-endian.
//!
//! ```text
//! archive  = magic version header-frame record-frame* trailer-frame   (then end of input)
//! magic    = "VELLUMAR"                        8 bytes
//! version  = u32                               1 (VERSION)
//! frame    = kind:u8 length:u32 body:length-bytes crc:u32
//! ```
//!
//! `crc` is the CRC-32 (IEEE, as zlib and gzip use) of `kind`, `length` and `body`, so a
//! changed byte anywhere in a frame, its length included, is detected. `length` is at most
//! [`MAX_FRAME`]. Every body is a protobuf message (prost; unknown fields are ignored, so any
//! change that adds information to the format bumps `version`):
//!
//! | kind | frame | body fields (tag: type) |
//! |---|---|---|
//! | `0x00` | header | 1 app key: string, 2 origin (e.g. the provider): string, 3-7 the source's `StoreStats` in section order (aggregates, processes, offsets, queue, events): uint64 |
//! | `0x01` | aggregate | 1 handler key, 2 instance ID: string, 3 revision: uint64, 4 last event ID: string |
//! | `0x02` | process | 1 handler key, 2 instance ID: string, 3 revision: uint64, 4 media type: string, 5 data: bytes |
//! | `0x03` | offset | 1 source application key: string, 2 next offset: uint64 |
//! | `0x04` | queue | 1 enqueue sequence, 2 revision, 3 failure count: uint64, 4 `next_attempt_at` in µs since the epoch: sint64, 5 envelope: bytes |
//! | `0x05` | event | 1 offset: uint64, 2 envelope: bytes |
//! | `0xFF` | trailer | 1 record count: uint64, 2 the records' [`Digest`] as 32 hex digits: string |
//!
//! Envelopes are their protobuf encoding ([`Envelope::to_bytes`]). Records come in section
//! order (aggregates, processes, offsets, queue, events), the queue in queue order and events in
//! offset order, as [`Export`] returns them; the trailer's digest is the one `vellum copy`
//! verifies and `vellum inspect stats --checksum` prints.
//!
//! # What an archive must satisfy
//!
//! [`verify`] (and the first pass of [`import`]) refuses an archive, with
//! [`ErrorKind::Corrupt`] and a message naming the byte offset and the record (numbered from 0
//! in file order; the header and trailer are named as such), when: the magic is wrong; a frame's
//! checksum does not match; a length exceeds [`MAX_FRAME`]; the input ends before the trailer
//! (truncated) or continues after it; a frame kind is unknown or out of place; a body does not
//! decode; sections are out of order; a record could not be imported into an empty store
//! ([`check_import`]: a repeated key, revision 0, an event off the dense log, an unstorable
//! queue time or sequence); the per-section counts differ from the header's, the record count
//! from the trailer's, or the recomputed digest from the trailer's. A version this build does
//! not know is [`ErrorKind::Misconfigured`] (use the newer vellum that wrote it).
//!
//! Reading never allocates for a frame before its bytes have arrived: a body is read in
//! chunks, so a damaged length costs at most the bytes actually present.
//!
//! I/O is blocking [`std::io`]: these functions are `async` for the store's calls, and block
//! the calling thread while they read or write the archive.

use std::collections::HashSet;
use std::fmt;
use std::io::{Read, Seek, SeekFrom, Write};

use prost::Message as _;

use crate::bulk::{
    BulkStore, Digest, Export, ImportError, Record, Section, StoreStats, check_import, checksum,
};
use crate::envelope::Envelope;
use crate::error::{Error, ErrorKind, Result};
use crate::eval::PreBatchState;
use crate::hash::fnv1a_128;
use crate::model::{AggregateMetaData, Event, Packet, ProcessInstance, QueueMessage};
use crate::time::Micros;

/// The first eight bytes of every archive.
pub const MAGIC: [u8; 8] = *b"VELLUMAR";

/// The format version this build writes, and the newest it reads.
pub const VERSION: u32 = 1;

/// The largest frame body, in bytes: 1 GiB (2^30). PostgreSQL stores at most 1 GB in one field
/// and MySQL/MariaDB accept packets of at most 1 GiB, so no record a SQL provider holds comes
/// near it; a larger record (possible in memory or redb) is refused by [`export`] with
/// [`ErrorKind::InvalidInput`] rather than written into an archive that [`import`] would refuse.
pub const MAX_FRAME: u32 = 1 << 30;

const KIND_HEADER: u8 = 0x00;
const KIND_TRAILER: u8 = 0xFF;
/// How much of a frame body is read (and allocated) at a time.
const CHUNK: usize = 64 * 1024;
/// How often (in records) `verify` reports progress.
const VERIFY_PROGRESS_EVERY: u64 = 1024;

/// What an archive's header says: which application, where it came from, and how many records
/// of each section follow.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ArchiveHeader {
    /// The format version of the archive.
    pub version: u32,
    /// The application key of the exported store.
    pub app_key: String,
    /// Where the store came from, as the exporter labelled it (the CLI writes the provider
    /// name, e.g. `redb`); empty when not given.
    pub origin: String,
    /// The record counts of the exported store.
    pub stats: StoreStats,
}

/// What an archive holds, as [`export`] wrote it or [`verify`] / [`import`] read it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ArchiveSummary {
    /// The archive's header.
    pub header: ArchiveHeader,
    /// The number of records (equal to `header.stats.total()`).
    pub records: u64,
    /// The archive's length in bytes.
    pub bytes: u64,
    /// The checksum of the records, equal to the store's [`checksum`].
    pub digest: Digest,
}

/// Which pass of [`import`] a progress report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The first pass: the whole archive is being checked; nothing is written yet.
    Verifying,
    /// The second pass: records are being imported into the destination.
    Importing,
}

/// Writes every record of `store` as an archive to `writer`, reading the store `page_size`
/// records at a time; `progress` is called with the number of records written so far. The
/// header's origin is empty: see [`export_with_origin`].
///
/// The trailer is written last, only once every record is out and the counts agree with the
/// store's `stats()`, so an export that fails part-way leaves an archive that [`verify`] and
/// [`import`] refuse as truncated. `writer` is flushed at the end; pass a buffered writer.
///
/// ```
/// use vellum_core::archive;
/// # use vellum_core::{DataStore, Provider};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> vellum_core::Result<()> {
/// let source = vellum_memory::MemoryProvider::new().open("billing").await?;
/// let mut bytes = Vec::new();
/// let written = archive::export(&source, &mut bytes, 1000, |_| {}).await?;
///
/// let destination = vellum_memory::MemoryProvider::new().open("billing").await?;
/// let archive = std::io::Cursor::new(bytes);
/// let read = archive::import(archive, &destination, "billing", 1000, |_, _| {}).await?;
/// assert_eq!(read.digest, written.digest);
/// # Ok(()) }
/// ```
///
/// # Errors
/// Whatever the store returns; a storage error if `writer` fails; [`ErrorKind::InvalidInput`]
/// for a record larger than [`MAX_FRAME`]; a storage error if the store changed during the
/// export (its counts differ from the header's; no trailer is written).
///
/// # Cancel safety
/// Not resumable. Dropped part-way, `writer` holds an archive without a trailer, which every
/// reader refuses; the store is only read.
pub async fn export<S: BulkStore, W: Write>(
    store: &S,
    writer: W,
    page_size: usize,
    progress: impl FnMut(u64),
) -> Result<ArchiveSummary> {
    export_with_origin(store, "", writer, page_size, progress).await
}

/// [`export`], recording `origin` (where the store came from, e.g. a provider name) in the
/// header. Do not put secrets in it, such as a URL with a password: it is stored in clear.
///
/// # Errors
/// As [`export`].
///
/// # Cancel safety
/// As [`export`].
pub async fn export_with_origin<S: BulkStore, W: Write>(
    store: &S,
    origin: &str,
    writer: W,
    page_size: usize,
    mut progress: impl FnMut(u64),
) -> Result<ArchiveSummary> {
    let stats = store.stats().await?;
    let header = ArchiveHeader {
        version: VERSION,
        app_key: store.app_key().to_owned(),
        origin: origin.to_owned(),
        stats,
    };
    let mut out = ArchiveWriter::begin(writer, header)?;
    let mut export = Export::new(store, page_size);
    while let Some(page) = export.next_page().await? {
        for record in &page {
            out.write(record)?;
        }
        progress(out.records);
    }
    out.finish()
}

/// Checks a whole archive without a store: every frame's checksum, the header, the trailer,
/// the counts and the digest, and that its records could be imported into an empty store (see
/// the [module documentation](self)). `progress` is called with the number of records checked
/// so far, every 1024 records and at the end.
///
/// # Errors
/// [`ErrorKind::Corrupt`] naming the byte offset and record of the first problem;
/// [`ErrorKind::Misconfigured`] for a newer format version; a storage error if reading fails.
pub fn verify<R: Read>(reader: R, progress: impl FnMut(u64)) -> Result<ArchiveSummary> {
    verify_inner(reader, None, progress)
}

/// Reads an archive's magic, version and header, and nothing more.
///
/// # Errors
/// As [`verify`], for the header only.
pub fn read_header<R: Read>(reader: R) -> Result<ArchiveHeader> {
    ArchiveReader::open(reader).map(|archive| archive.header)
}

/// Restores an archive into the empty store `destination`, all or nothing as far as the
/// archive goes: a first pass checks the whole archive ([`verify`], and that it holds
/// application `app_key`) before anything is written, then `reader` is rewound to where it was
/// and a second pass imports the records, `page_size` per [`BulkStore::import`] call. Last,
/// the destination's `stats()` and [`checksum`] must equal the archive's, as
/// [`bulk::copy`](crate::bulk::copy) checks. `progress` is called with the pass and the number
/// of records that pass has done.
///
/// `app_key` is the application the caller expects the archive to hold (normally
/// `destination.app_key()`).
///
/// # Errors
/// [`ErrorKind::InvalidInput`] if `destination` is not empty or the archive holds another
/// application; as [`verify`] for a damaged archive (nothing is written); whatever the
/// destination returns; a storage error if the destination does not verify afterwards or the
/// archive changed between the passes.
///
/// # Cancel safety
/// Not resumable. Dropped during the first pass, nothing is written. Dropped during the second,
/// the destination keeps the pages imported so far, each whole, as with
/// [`bulk::copy`](crate::bulk::copy). The same holds if the destination refuses a page (a
/// provider limit, such as MySQL's key length): a `page_size` of at least the record count
/// makes the import one transaction.
pub async fn import<D: BulkStore, R: Read + Seek>(
    mut reader: R,
    destination: &D,
    app_key: &str,
    page_size: usize,
    mut progress: impl FnMut(Phase, u64),
) -> Result<ArchiveSummary> {
    let context = || format!("importing an archive into application {:?}", destination.app_key());
    let existing = destination.stats().await?;
    if !existing.is_empty() {
        return Err(Error::storage_kind(
            ErrorKind::InvalidInput,
            context(),
            format!(
                "the destination store is not empty ({} records); import only fills an empty store",
                existing.total()
            ),
        ));
    }
    let start = reader.stream_position().map_err(|e| Error::storage("reading the archive", e))?;
    let checked = verify_inner(&mut reader, Some(app_key), |done| progress(Phase::Verifying, done))?;
    reader.seek(SeekFrom::Start(start)).map_err(|e| Error::storage("rewinding the archive", e))?;

    let page_size = page_size.max(1);
    let mut archive = ArchiveReader::open(&mut reader)?;
    let mut page = Vec::with_capacity(page_size.min(4096));
    let mut imported = 0;
    loop {
        let record = archive.next()?;
        let end = record.is_none();
        page.extend(record);
        if page.len() >= page_size || (end && !page.is_empty()) {
            imported += page.len() as u64;
            destination.import(std::mem::take(&mut page)).await?;
            progress(Phase::Importing, imported);
        }
        if end {
            break;
        }
    }
    let summary = archive.summary();
    if summary != checked {
        return Err(Error::storage(
            context(),
            "the archive changed between the checking and the importing pass",
        ));
    }
    let written = destination.stats().await?;
    let digest = checksum(destination, page_size).await?;
    if written != summary.header.stats || digest != summary.digest {
        return Err(Error::storage(
            context(),
            format!(
                "the import does not verify: the archive holds {} with checksum {}, the destination {} \
                 with checksum {}",
                counts(&summary.header.stats),
                summary.digest.hex(),
                counts(&written),
                digest.hex()
            ),
        ));
    }
    Ok(summary)
}

fn verify_inner<R: Read>(
    reader: R,
    app_key: Option<&str>,
    mut progress: impl FnMut(u64),
) -> Result<ArchiveSummary> {
    let mut archive = ArchiveReader::open(reader)?;
    if let Some(expected) = app_key.filter(|key| *key != archive.header.app_key) {
        return Err(Error::storage_kind(
            ErrorKind::InvalidInput,
            format!("importing an archive into application {expected:?}"),
            format!("the archive holds application {:?}", archive.header.app_key),
        ));
    }
    while archive.next()?.is_some() {
        if archive.records.is_multiple_of(VERIFY_PROGRESS_EVERY) {
            progress(archive.records);
        }
    }
    progress(archive.records);
    Ok(archive.summary())
}

/// Record counts in words, for messages.
fn counts(s: &StoreStats) -> String {
    format!(
        "{} aggregates, {} processes, {} offsets, {} queued messages, {} events",
        s.aggregates, s.processes, s.offsets, s.queue, s.events
    )
}

/// The frame kind of a section's records.
fn section_kind(section: Section) -> u8 {
    section as u8 + 1
}

/// The section whose records have frame kind `kind`.
fn kind_section(kind: u8) -> Option<Section> {
    Section::ALL.get(usize::from(kind).checked_sub(1)?).copied()
}

fn frame_crc(kind: u8, length: u32, body: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[kind]);
    crc.update(&length.to_be_bytes());
    crc.update(body);
    crc.finalize()
}

#[derive(Clone, PartialEq, prost::Message)]
struct HeaderBody {
    #[prost(string, tag = "1")]
    app_key: String,
    #[prost(string, tag = "2")]
    origin: String,
    #[prost(uint64, tag = "3")]
    aggregates: u64,
    #[prost(uint64, tag = "4")]
    processes: u64,
    #[prost(uint64, tag = "5")]
    offsets: u64,
    #[prost(uint64, tag = "6")]
    queue: u64,
    #[prost(uint64, tag = "7")]
    events: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TrailerBody {
    #[prost(uint64, tag = "1")]
    records: u64,
    #[prost(string, tag = "2")]
    digest: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct AggregateBody {
    #[prost(string, tag = "1")]
    handler_key: String,
    #[prost(string, tag = "2")]
    instance_id: String,
    #[prost(uint64, tag = "3")]
    revision: u64,
    #[prost(string, tag = "4")]
    last_event_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ProcessBody {
    #[prost(string, tag = "1")]
    handler_key: String,
    #[prost(string, tag = "2")]
    instance_id: String,
    #[prost(uint64, tag = "3")]
    revision: u64,
    #[prost(string, tag = "4")]
    media_type: String,
    #[prost(bytes = "vec", tag = "5")]
    data: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct OffsetBody {
    #[prost(string, tag = "1")]
    application_key: String,
    #[prost(uint64, tag = "2")]
    next_offset: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct QueueBody {
    #[prost(uint64, tag = "1")]
    sequence: u64,
    #[prost(uint64, tag = "2")]
    revision: u64,
    #[prost(uint64, tag = "3")]
    failure_count: u64,
    #[prost(sint64, tag = "4")]
    next_attempt_at: i64,
    #[prost(bytes = "vec", tag = "5")]
    envelope: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct EventBody {
    #[prost(uint64, tag = "1")]
    offset: u64,
    #[prost(bytes = "vec", tag = "2")]
    envelope: Vec<u8>,
}

impl HeaderBody {
    fn new(header: &ArchiveHeader) -> Self {
        let s = header.stats;
        Self {
            app_key: header.app_key.clone(),
            origin: header.origin.clone(),
            aggregates: s.aggregates,
            processes: s.processes,
            offsets: s.offsets,
            queue: s.queue,
            events: s.events,
        }
    }

    fn into_header(self, version: u32) -> ArchiveHeader {
        let stats = StoreStats {
            aggregates: self.aggregates,
            processes: self.processes,
            offsets: self.offsets,
            queue: self.queue,
            events: self.events,
        };
        ArchiveHeader { version, app_key: self.app_key, origin: self.origin, stats }
    }
}

/// The body of a record's frame.
fn encode_record(record: &Record) -> Result<Vec<u8>> {
    Ok(match record {
        Record::Aggregate(m) => AggregateBody {
            handler_key: m.handler_key.clone(),
            instance_id: m.instance_id.clone(),
            revision: m.revision,
            last_event_id: m.last_event_id.clone(),
        }
        .encode_to_vec(),
        Record::Process(p) => ProcessBody {
            handler_key: p.handler_key.clone(),
            instance_id: p.instance_id.clone(),
            revision: p.revision,
            media_type: p.packet.media_type.clone(),
            data: p.packet.data.clone(),
        }
        .encode_to_vec(),
        Record::Offset { application_key, next_offset } => {
            OffsetBody { application_key: application_key.clone(), next_offset: *next_offset }.encode_to_vec()
        }
        Record::Queue { sequence, message } => {
            let micros = Micros::from_system_time(message.next_attempt_at).ok_or_else(|| {
                Error::storage_kind(
                    ErrorKind::InvalidInput,
                    format!("exporting {}", record.describe()),
                    "its next_attempt_at is outside the storable range",
                )
            })?;
            QueueBody {
                sequence: *sequence,
                revision: message.revision,
                failure_count: message.failure_count,
                next_attempt_at: micros.0,
                envelope: message.envelope.to_bytes(),
            }
            .encode_to_vec()
        }
        Record::Event(e) => EventBody { offset: e.offset, envelope: e.envelope.to_bytes() }.encode_to_vec(),
    })
}

/// Decodes a record's frame body; the error says what is wrong with it.
fn decode_record(section: Section, body: &[u8]) -> std::result::Result<Record, String> {
    fn decoded<M: prost::Message + Default>(body: &[u8], what: &str) -> std::result::Result<M, String> {
        M::decode(body).map_err(|e| format!("the {what} record does not decode: {e}"))
    }
    fn envelope(bytes: &[u8], what: &str) -> std::result::Result<Envelope, String> {
        Envelope::from_bytes(bytes).map_err(|e| format!("the {what} record's envelope does not decode: {e}"))
    }
    Ok(match section {
        Section::Aggregates => {
            let b: AggregateBody = decoded(body, "aggregate")?;
            Record::Aggregate(AggregateMetaData {
                handler_key: b.handler_key,
                instance_id: b.instance_id,
                revision: b.revision,
                last_event_id: b.last_event_id,
            })
        }
        Section::Processes => {
            let b: ProcessBody = decoded(body, "process")?;
            Record::Process(ProcessInstance {
                handler_key: b.handler_key,
                instance_id: b.instance_id,
                revision: b.revision,
                packet: Packet { media_type: b.media_type, data: b.data },
            })
        }
        Section::Offsets => {
            let b: OffsetBody = decoded(body, "offset")?;
            Record::Offset { application_key: b.application_key, next_offset: b.next_offset }
        }
        Section::Queue => {
            let b: QueueBody = decoded(body, "queue")?;
            let message = QueueMessage {
                revision: b.revision,
                failure_count: b.failure_count,
                next_attempt_at: Micros(b.next_attempt_at).to_system_time(),
                envelope: envelope(&b.envelope, "queue")?,
            };
            Record::Queue { sequence: b.sequence, message }
        }
        Section::Events => {
            let b: EventBody = decoded(body, "event")?;
            Record::Event(Event { offset: b.offset, envelope: envelope(&b.envelope, "event")? })
        }
    })
}

/// Writes an archive frame by frame, counting what it wrote.
struct ArchiveWriter<W> {
    out: W,
    header: ArchiveHeader,
    bytes: u64,
    records: u64,
    counts: StoreStats,
    digest: Digest,
    section: Section,
}

impl<W: Write> ArchiveWriter<W> {
    /// Writes the magic, the version and the header.
    fn begin(out: W, header: ArchiveHeader) -> Result<Self> {
        let mut writer = Self {
            out,
            header,
            bytes: 0,
            records: 0,
            counts: StoreStats::default(),
            digest: Digest::default(),
            section: Section::Aggregates,
        };
        writer.put(&MAGIC)?;
        writer.put(&writer.header.version.to_be_bytes())?;
        let body = HeaderBody::new(&writer.header).encode_to_vec();
        writer.frame(KIND_HEADER, &body, || "the archive header".to_owned())?;
        Ok(writer)
    }

    /// Writes one record, which must not come from an earlier section than the last one.
    fn write(&mut self, record: &Record) -> Result<()> {
        let section = record.section();
        if section < self.section {
            return Err(Error::storage(
                format!("exporting {}", record.describe()),
                format!("the store returned a {section:?} record after {:?} records", self.section),
            ));
        }
        self.section = section;
        let body = encode_record(record)?;
        self.frame(section_kind(section), &body, || record.describe())?;
        *section_count(&mut self.counts, section) += 1;
        self.digest.add(record);
        self.records += 1;
        Ok(())
    }

    /// Writes the trailer, if the records written match the header's counts, and flushes.
    fn finish(mut self) -> Result<ArchiveSummary> {
        if self.counts != self.header.stats {
            return Err(Error::storage(
                format!("exporting application {:?}", self.header.app_key),
                format!(
                    "the store changed during the export: it held {}, the export returned {}; the \
                     archive has no trailer and will be refused",
                    counts(&self.header.stats),
                    counts(&self.counts)
                ),
            ));
        }
        let body = TrailerBody { records: self.records, digest: self.digest.hex() }.encode_to_vec();
        self.frame(KIND_TRAILER, &body, || "the archive trailer".to_owned())?;
        self.out.flush().map_err(|e| Error::storage("writing the archive", e))?;
        Ok(ArchiveSummary {
            header: self.header,
            records: self.records,
            bytes: self.bytes,
            digest: self.digest,
        })
    }

    fn frame(&mut self, kind: u8, body: &[u8], what: impl Fn() -> String) -> Result<()> {
        let length = u32::try_from(body.len()).ok().filter(|l| *l <= MAX_FRAME).ok_or_else(|| {
            Error::storage_kind(
                ErrorKind::InvalidInput,
                format!("exporting {}", what()),
                format!("it encodes to {} bytes, more than an archive frame holds ({MAX_FRAME})", body.len()),
            )
        })?;
        self.put(&[kind])?;
        self.put(&length.to_be_bytes())?;
        self.put(body)?;
        self.put(&frame_crc(kind, length, body).to_be_bytes())
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes).map_err(|e| Error::storage("writing the archive", e))?;
        self.bytes += bytes.len() as u64;
        Ok(())
    }
}

fn section_count(stats: &mut StoreStats, section: Section) -> &mut u64 {
    match section {
        Section::Aggregates => &mut stats.aggregates,
        Section::Processes => &mut stats.processes,
        Section::Offsets => &mut stats.offsets,
        Section::Queue => &mut stats.queue,
        Section::Events => &mut stats.events,
    }
}

/// Where in an archive a problem is.
#[derive(Debug, Clone, Copy)]
enum At {
    Header,
    Record(u64),
    Trailer,
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Header => f.write_str("header"),
            Self::Record(n) => write!(f, "record {n}"),
            Self::Trailer => f.write_str("trailer"),
        }
    }
}

/// A damaged archive: `Corrupt`, naming the byte offset and the part of the archive.
fn damaged(offset: u64, at: At, what: impl Into<String>) -> Error {
    Error::storage_kind(
        ErrorKind::Corrupt,
        format!("invalid archive at byte offset {offset} ({at})"),
        what.into(),
    )
}

fn truncated(offset: u64, at: At) -> Error {
    damaged(offset, at, "the archive ends here: it is truncated")
}

/// A frame as read, its checksum verified.
struct Frame {
    kind: u8,
    body: Vec<u8>,
    /// The byte offset of its first byte.
    start: u64,
}

/// Reads an archive, checking it as it goes.
struct ArchiveReader<R> {
    input: R,
    /// Bytes read so far.
    offset: u64,
    header: ArchiveHeader,
    records: u64,
    counts: StoreStats,
    digest: Digest,
    section: Section,
    keys: Keys,
    done: bool,
}

impl<R: Read> ArchiveReader<R> {
    /// Reads and checks the magic, the version and the header.
    fn open(input: R) -> Result<Self> {
        let mut archive = Self {
            input,
            offset: 0,
            header: ArchiveHeader {
                version: 0,
                app_key: String::new(),
                origin: String::new(),
                stats: StoreStats::default(),
            },
            records: 0,
            counts: StoreStats::default(),
            digest: Digest::default(),
            section: Section::Aggregates,
            keys: Keys::default(),
            done: false,
        };
        let mut magic = [0; MAGIC.len()];
        let got = archive.fill(&mut magic)?;
        if magic[..got] != MAGIC[..got] {
            return Err(damaged(
                0,
                At::Header,
                "this is not a vellum archive: it does not start with \"VELLUMAR\"",
            ));
        }
        if got < magic.len() {
            return Err(truncated(archive.offset, At::Header));
        }
        let mut version = [0; 4];
        if archive.fill(&mut version)? < version.len() {
            return Err(truncated(archive.offset, At::Header));
        }
        let version = u32::from_be_bytes(version);
        if version == 0 {
            return Err(damaged(8, At::Header, "format version 0 does not exist"));
        }
        if version > VERSION {
            return Err(Error::storage_kind(
                ErrorKind::Misconfigured,
                format!("reading an archive of format version {version}"),
                format!(
                    "this build of vellum reads versions up to {VERSION}; use the newer vellum that wrote it"
                ),
            ));
        }
        let Some(frame) = archive.frame(At::Header)? else {
            return Err(truncated(archive.offset, At::Header));
        };
        if frame.kind != KIND_HEADER {
            let what = format!("expected the header frame (kind 0x00), found kind {:#04x}", frame.kind);
            return Err(damaged(frame.start, At::Header, what));
        }
        let body = HeaderBody::decode(frame.body.as_slice())
            .map_err(|e| damaged(frame.start, At::Header, format!("the header does not decode: {e}")))?;
        archive.header = body.into_header(version);
        Ok(archive)
    }

    /// The next record, or `None` once the trailer has been read and checked and the input has
    /// ended.
    fn next(&mut self) -> Result<Option<Record>> {
        if self.done {
            return Ok(None);
        }
        let at = At::Record(self.records);
        let Some(frame) = self.frame(at)? else {
            return Err(damaged(
                self.offset,
                at,
                "the archive ends here, without a trailer: it is truncated",
            ));
        };
        let section = match frame.kind {
            KIND_TRAILER => {
                self.trailer(&frame)?;
                self.done = true;
                return Ok(None);
            }
            KIND_HEADER => return Err(damaged(frame.start, at, "a second header")),
            kind => kind_section(kind)
                .ok_or_else(|| damaged(frame.start, at, format!("unknown frame kind {kind:#04x}")))?,
        };
        if section < self.section {
            let what =
                format!("a {section:?} record after {:?} records: sections out of order", self.section);
            return Err(damaged(frame.start, at, what));
        }
        self.section = section;
        let record = decode_record(section, &frame.body).map_err(|e| damaged(frame.start, at, e))?;
        self.keys
            .check(&record, self.counts.events)
            .map_err(|e| damaged(frame.start, at, format!("{} {e}", record.describe())))?;
        *section_count(&mut self.counts, section) += 1;
        self.digest.add(&record);
        self.records += 1;
        Ok(Some(record))
    }

    /// Checks the trailer against what was read, and that nothing follows it.
    fn trailer(&mut self, frame: &Frame) -> Result<()> {
        let at = At::Trailer;
        let trailer = TrailerBody::decode(frame.body.as_slice())
            .map_err(|e| damaged(frame.start, at, format!("the trailer does not decode: {e}")))?;
        if trailer.records != self.records {
            let what =
                format!("the trailer counts {} records, the archive holds {}", trailer.records, self.records);
            return Err(damaged(frame.start, at, what));
        }
        if self.counts != self.header.stats {
            let what = format!(
                "the header counts {}, the archive holds {}",
                counts(&self.header.stats),
                counts(&self.counts)
            );
            return Err(damaged(frame.start, at, what));
        }
        if trailer.digest != self.digest.hex() {
            let what =
                format!("the records' checksum is {}, the trailer's {:?}", self.digest.hex(), trailer.digest);
            return Err(damaged(frame.start, at, what));
        }
        let end = self.offset;
        if self.fill(&mut [0])? > 0 {
            return Err(damaged(end, at, "bytes follow the trailer"));
        }
        Ok(())
    }

    fn summary(&self) -> ArchiveSummary {
        ArchiveSummary {
            header: self.header.clone(),
            records: self.records,
            bytes: self.offset,
            digest: self.digest,
        }
    }

    /// Reads one frame and checks its checksum; `None` if the input ends before its first byte.
    fn frame(&mut self, at: At) -> Result<Option<Frame>> {
        let start = self.offset;
        let mut head = [0; 5];
        let got = self.fill(&mut head)?;
        if got == 0 {
            return Ok(None);
        }
        let at = if head[0] == KIND_TRAILER { At::Trailer } else { at };
        if got < head.len() {
            return Err(truncated(self.offset, at));
        }
        let kind = head[0];
        let length = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        if length > MAX_FRAME {
            let what = format!("the frame length {length} exceeds the limit of {MAX_FRAME} bytes");
            return Err(damaged(start, at, what));
        }
        let body = self.read_body(length as usize)?;
        if body.len() < length as usize {
            return Err(truncated(self.offset, at));
        }
        let mut crc = [0; 4];
        if self.fill(&mut crc)? < crc.len() {
            return Err(truncated(self.offset, at));
        }
        let (stored, computed) = (u32::from_be_bytes(crc), frame_crc(kind, length, &body));
        if stored != computed {
            let what =
                format!("the frame checksum does not match (stored {stored:08x}, computed {computed:08x})");
            return Err(damaged(start, at, what));
        }
        Ok(Some(Frame { kind, body, start }))
    }

    /// Up to `length` bytes, fewer if the input ends; allocates only for bytes that arrived.
    fn read_body(&mut self, length: usize) -> Result<Vec<u8>> {
        let mut body = Vec::with_capacity(length.min(CHUNK));
        while body.len() < length {
            let start = body.len();
            let want = (length - start).min(CHUNK);
            body.resize(start + want, 0);
            let got = self.fill(&mut body[start..])?;
            body.truncate(start + got);
            if got < want {
                break;
            }
        }
        Ok(body)
    }

    /// Fills `buf` from the input; fewer bytes only at the end of the input.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.input.read(&mut buf[done..]) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::storage("reading the archive", e)),
            }
        }
        self.offset += done as u64;
        Ok(done)
    }
}

/// The keys of the records read so far, as 128-bit hashes (16 bytes a record, whatever the key
/// length); the stored state [`check_import`] asks about, as if importing into an empty store.
/// A hash collision could only refuse a good archive, never accept a bad one.
#[derive(Default)]
struct Keys {
    aggregates: HashSet<u128>,
    processes: HashSet<u128>,
    offsets: HashSet<u128>,
    queue: HashSet<u128>,
    events: HashSet<u128>,
}

fn key(parts: &[&str]) -> u128 {
    let mut bytes = Vec::new();
    for part in parts {
        bytes.extend_from_slice(&(part.len() as u64).to_be_bytes());
        bytes.extend_from_slice(part.as_bytes());
    }
    fnv1a_128(&bytes)
}

impl Keys {
    /// Whether `record` could be imported after the records seen so far; if so, remembers it.
    /// The error says why not.
    fn check(&mut self, record: &Record, next_event_offset: u64) -> std::result::Result<(), String> {
        match check_import(std::slice::from_ref(record), next_event_offset, self) {
            Ok(()) => {}
            Err(Error::InvalidImport(e)) => return Err(reason(&e)),
            Err(e) => return Err(e.to_string()),
        }
        match record {
            Record::Aggregate(m) => self.aggregates.insert(key(&[&m.handler_key, &m.instance_id])),
            Record::Process(p) => self.processes.insert(key(&[&p.handler_key, &p.instance_id])),
            Record::Offset { application_key, .. } => self.offsets.insert(key(&[application_key])),
            Record::Queue { message, .. } => self.queue.insert(key(&[message.id()])),
            Record::Event(e) => self.events.insert(key(&[e.id()])),
        };
        Ok(())
    }
}

/// Why a record cannot be imported, without `check_import`'s index (always 0 here).
fn reason(e: &ImportError) -> String {
    match e {
        ImportError::AlreadyStored { .. } | ImportError::Repeated { .. } => {
            "repeats the key of an earlier record".to_owned()
        }
        ImportError::OffsetGap { expected, .. } => {
            format!("does not continue the event log, whose next offset is {expected}")
        }
        ImportError::ZeroRevision { .. } => "has revision 0".to_owned(),
        ImportError::SequenceOutOfRange { .. } => "has enqueue sequence u64::MAX".to_owned(),
        ImportError::TimeOutOfRange { .. } => "has a next_attempt_at outside the storable range".to_owned(),
    }
}

impl PreBatchState for Keys {
    fn aggregate_revision(&mut self, handler_key: &str, instance_id: &str) -> Result<u64> {
        Ok(u64::from(self.aggregates.contains(&key(&[handler_key, instance_id]))))
    }
    fn process_revision(&mut self, handler_key: &str, instance_id: &str) -> Result<Option<u64>> {
        Ok(self.processes.contains(&key(&[handler_key, instance_id])).then_some(1))
    }
    fn queue_revision(&mut self, message_id: &str) -> Result<Option<u64>> {
        Ok(self.queue.contains(&key(&[message_id])).then_some(1))
    }
    fn timeouts_of(&mut self, _: &str, _: &str) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    fn offset(&mut self, application_key: &str) -> Result<u64> {
        Ok(u64::from(self.offsets.contains(&key(&[application_key]))))
    }
    fn event_exists(&mut self, message_id: &str) -> Result<bool> {
        Ok(self.events.contains(&key(&[message_id])))
    }
}

#[cfg(test)]
mod tests;
