//! Bulk export and import of a whole application store: backup, restore, and moving a store
//! between providers (`vellum copy`).
//!
//! Ordinary batches cannot do this: they assign revisions, offsets and queue sequences
//! themselves. A bulk [`Record`] carries them verbatim, so an export imported into an empty
//! store of any provider reads back identically, including the queue's tie order, and behaves
//! identically afterwards (the next revision, offset and enqueue sequence follow on).
//!
//! Export is paged by section ([`ExportFrom`]); each provider returns a section in its own
//! key order, except that the queue comes in queue order and events in offset order. Import is
//! atomic per call and insert-only: [`check_import`], shared by every provider, refuses a record
//! whose key is already stored, an event that does not continue the log, and duplicates
//! within the call.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::future::Future;

use prost::Message as _;

pub use crate::error::ImportError;
use crate::error::{Error, Result};
use crate::eval::PreBatchState;
use crate::hash::fnv1a_128;
use crate::model::{AggregateMetaData, Event, ProcessInstance, QueueMessage};
use crate::repository::DataStore;
use crate::time::Micros;
use crate::verify::Report;

/// One stored item of an application, with the bookkeeping an ordinary batch cannot set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Aggregate meta-data with its stored revision (never 0).
    Aggregate(AggregateMetaData),
    /// A process instance with its stored revision (never 0).
    Process(ProcessInstance),
    /// A consumer offset in another application's stream.
    Offset {
        /// The source application key.
        application_key: String,
        /// The stored next offset.
        next_offset: u64,
    },
    /// A queued message and the enqueue sequence that orders it among equal
    /// `next_attempt_at`s (docs/queue.md#queue-order).
    Queue {
        /// The store's enqueue sequence of the message; kept verbatim by import.
        sequence: u64,
        /// The message with its stored revision (never 0), failure count and time.
        message: QueueMessage,
    },
    /// An event at its offset.
    Event(Event),
}

impl Record {
    /// The section this record belongs to.
    #[must_use]
    pub fn section(&self) -> Section {
        match self {
            Self::Aggregate(_) => Section::Aggregates,
            Self::Process(_) => Section::Processes,
            Self::Offset { .. } => Section::Offsets,
            Self::Queue { .. } => Section::Queue,
            Self::Event(_) => Section::Events,
        }
    }

    /// A short description naming the record's key, for errors and logs.
    #[must_use]
    pub fn describe(&self) -> String {
        match self {
            Self::Aggregate(m) => format!("aggregate {}/{}", m.handler_key, m.instance_id),
            Self::Process(p) => format!("process {}/{}", p.handler_key, p.instance_id),
            Self::Offset { application_key, .. } => format!("offset of application {application_key:?}"),
            Self::Queue { message, .. } => format!("queue message {:?}", message.id()),
            Self::Event(e) => format!("event {:?} at offset {}", e.id(), e.offset),
        }
    }
}

/// The parts of a store, in the order an export walks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Section {
    /// Aggregate meta-data.
    Aggregates,
    /// Process instances.
    Processes,
    /// Consumer offsets.
    Offsets,
    /// The message queue, in queue order.
    Queue,
    /// The event log, in offset order.
    Events,
}

impl Section {
    /// Every section, in export order.
    pub const ALL: [Self; 5] = [Self::Aggregates, Self::Processes, Self::Offsets, Self::Queue, Self::Events];

    /// The section after this one in export order.
    #[must_use]
    pub fn next(self) -> Option<Self> {
        Self::ALL.iter().position(|s| *s == self).and_then(|i| Self::ALL.get(i + 1)).copied()
    }

    /// The position at the start of this section.
    #[must_use]
    pub fn start(self) -> ExportFrom {
        match self {
            Self::Aggregates => ExportFrom::Aggregates(None),
            Self::Processes => ExportFrom::Processes(None),
            Self::Offsets => ExportFrom::Offsets(None),
            Self::Queue => ExportFrom::Queue(None),
            Self::Events => ExportFrom::Events(0),
        }
    }
}

/// Where an export page starts: a section, and the key of the last record already returned
/// from it (`None`: the section's start). Records come in ascending key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportFrom {
    /// Aggregates after this `(handler_key, instance_id)`.
    Aggregates(Option<(String, String)>),
    /// Processes after this `(handler_key, instance_id)`.
    Processes(Option<(String, String)>),
    /// Offsets after this source application key.
    Offsets(Option<String>),
    /// Queue messages after this key, in queue order.
    Queue(Option<QueueKey>),
    /// Events from this offset on.
    Events(u64),
}

impl ExportFrom {
    /// The section this position is in.
    #[must_use]
    pub fn section(&self) -> Section {
        match self {
            Self::Aggregates(_) => Section::Aggregates,
            Self::Processes(_) => Section::Processes,
            Self::Offsets(_) => Section::Offsets,
            Self::Queue(_) => Section::Queue,
            Self::Events(_) => Section::Events,
        }
    }

    /// The position just after `record`, in its section.
    ///
    /// # Errors
    /// A queue message whose time cannot be stored (no provider exports one).
    pub fn after(record: &Record) -> Result<Self> {
        Ok(match record {
            Record::Aggregate(m) => Self::Aggregates(Some((m.handler_key.clone(), m.instance_id.clone()))),
            Record::Process(p) => Self::Processes(Some((p.handler_key.clone(), p.instance_id.clone()))),
            Record::Offset { application_key, .. } => Self::Offsets(Some(application_key.clone())),
            Record::Queue { sequence, message } => {
                let next_attempt_at = queue_time(message, record)?;
                let message_id = message.id().to_owned();
                Self::Queue(Some(QueueKey { next_attempt_at, sequence: *sequence, message_id }))
            }
            Record::Event(e) => Self::Events(e.offset.saturating_add(1)),
        })
    }
}

/// A message's place in queue order: `(next_attempt_at, sequence, message ID)`.
///
/// The message ID makes the key unique even if an import into a non-empty store gave two
/// messages one sequence, so a page never skips the second of them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct QueueKey {
    /// When the message is next attempted.
    pub next_attempt_at: Micros,
    /// Its enqueue sequence.
    pub sequence: u64,
    /// Its message ID.
    pub message_id: String,
}

/// Record counts of one store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Aggregate instances with stored meta-data.
    pub aggregates: u64,
    /// Process instances.
    pub processes: u64,
    /// Stored consumer offsets.
    pub offsets: u64,
    /// Queued messages.
    pub queue: u64,
    /// Events, which is also the next event offset (offsets are dense).
    pub events: u64,
}

impl StoreStats {
    /// Whether the store holds nothing at all.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The total number of records.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.aggregates + self.processes + self.offsets + self.queue + self.events
    }
}

/// A store that can be exported and imported in bulk. Every vellum provider's store is one.
pub trait BulkStore: DataStore {
    /// How many records of each kind the store holds.
    ///
    /// # Cancel safety
    /// Dropping the future part-way loses nothing and changes nothing: it is a read.
    fn stats(&self) -> impl Future<Output = Result<StoreStats>> + Send;

    /// Up to `limit` records of `from`'s section, in ascending key order, starting just after
    /// `from`'s key. Fewer than `limit` means the section is exhausted.
    ///
    /// # Cancel safety
    /// Dropping the future part-way loses nothing and changes nothing: it is a read.
    fn export_page(&self, from: ExportFrom, limit: usize)
    -> impl Future<Output = Result<Vec<Record>>> + Send;

    /// Writes `records` in one atomic transaction, keeping revisions, offsets and queue
    /// sequences verbatim, after [`check_import`] accepted them; on error nothing is written.
    /// Later batches continue from the imported state (next offset, next enqueue sequence).
    ///
    /// # Cancel safety
    /// As [`Persister::persist`](crate::Persister::persist): dropped before the store's writer
    /// took the import, nothing is written; dropped after, it commits whole or not at all.
    fn import(&self, records: Vec<Record>) -> impl Future<Output = Result<()>> + Send;

    /// Checks the whole store for damage and repairs nothing: every record's checksum, every
    /// index against the records in both directions, the counters against the contents, and
    /// the storage engine's own integrity check, if it has one ([`verify`](crate::verify),
    /// `docs/verify.md`). A provider feeds what it reads to a
    /// [`Checker`](crate::verify::Checker) and returns its report. Damage found is in the
    /// [`Report`], not an error.
    ///
    /// `progress` is called from the verifying task now and then, and once at the end, with
    /// the number of records checked so far (damaged ones included), for a progress bar whose
    /// length is [`stats`](Self::stats)`().total()`. Keep it quick: a provider may call it
    /// while it holds a read transaction or lock.
    ///
    /// # Errors
    /// [`Error::Closed`]; a storage
    /// error that stopped the check itself (I/O, a lost connection). Data that does not decode
    /// is a [`Problem`](crate::verify::Problem) in the report, not an error.
    ///
    /// # Cancel safety
    /// Dropping the future part-way loses nothing and changes nothing: it is a read.
    fn verify(&self, progress: &mut (dyn FnMut(u64) + Send)) -> impl Future<Output = Result<Report>> + Send;
}

/// Checks an import against the destination's state before anything is written: every key
/// must be new (to the store and within `records`), revisions non-zero, queue times storable,
/// and events must continue the log densely from `next_event_offset`.
///
/// # Errors
/// [`Error::InvalidImport`] naming the first offending record, or a storage error from `state`.
pub fn check_import<S: PreBatchState + ?Sized>(
    records: &[Record],
    next_event_offset: u64,
    state: &mut S,
) -> Result<()> {
    let mut seen = Seen::default();
    let mut expected_offset = next_event_offset;
    for (index, record) in records.iter().enumerate() {
        let describe = || record.describe();
        if let Some(first) = seen.insert(record, index) {
            return Err(ImportError::Repeated { index, first, record: describe() }.into());
        }
        let stored = match record {
            Record::Aggregate(m) => {
                nonzero(m.revision, index, record)?;
                state.aggregate_revision(&m.handler_key, &m.instance_id)? != 0
            }
            Record::Process(p) => {
                nonzero(p.revision, index, record)?;
                state.process_revision(&p.handler_key, &p.instance_id)?.is_some()
            }
            Record::Offset { application_key, .. } => state.offset(application_key)? != 0,
            Record::Queue { message, sequence } => {
                nonzero(message.revision, index, record)?;
                if *sequence == u64::MAX {
                    return Err(ImportError::SequenceOutOfRange { index, record: describe() }.into());
                }
                if Micros::from_system_time(message.next_attempt_at).is_none() {
                    return Err(ImportError::TimeOutOfRange { index, record: describe() }.into());
                }
                state.queue_revision(message.id())?.is_some()
            }
            Record::Event(e) => {
                if e.offset != expected_offset {
                    let expected = expected_offset;
                    return Err(ImportError::OffsetGap { index, record: describe(), expected }.into());
                }
                expected_offset += 1;
                state.event_exists(e.id())?
            }
        };
        if stored {
            return Err(ImportError::AlreadyStored { index, record: describe() }.into());
        }
    }
    Ok(())
}

fn nonzero(revision: u64, index: usize, record: &Record) -> Result<()> {
    if revision == 0 {
        return Err(ImportError::ZeroRevision { index, record: record.describe() }.into());
    }
    Ok(())
}

/// The storable time of an exported queue message (providers only export storable times).
fn queue_time(message: &QueueMessage, record: &Record) -> Result<Micros> {
    Micros::from_system_time(message.next_attempt_at).ok_or_else(|| {
        Error::storage(
            format!("exporting {}", record.describe()),
            "its next_attempt_at is outside the storable range",
        )
    })
}

/// The keys an import has used so far, by kind, with the index that used each.
#[derive(Default)]
struct Seen {
    keys: HashMap<(Section, String, String), usize>,
}

impl Seen {
    /// Records the key; returns the index of an earlier record with the same key.
    fn insert(&mut self, record: &Record, index: usize) -> Option<usize> {
        let key = match record {
            Record::Aggregate(m) => (m.handler_key.clone(), m.instance_id.clone()),
            Record::Process(p) => (p.handler_key.clone(), p.instance_id.clone()),
            Record::Offset { application_key, .. } => (application_key.clone(), String::new()),
            Record::Queue { message, .. } => (message.id().to_owned(), String::new()),
            // An event's offset is checked against the log; its ID must be unique.
            Record::Event(e) => (e.id().to_owned(), String::new()),
        };
        match self.keys.entry((record.section(), key.0, key.1)) {
            Entry::Occupied(first) => Some(*first.get()),
            Entry::Vacant(slot) => {
                slot.insert(index);
                None
            }
        }
    }
}

/// An order-independent checksum of a set of records: equal for equal contents whatever
/// order a provider exports a section in. Queue order is covered because each queue record
/// carries its time and sequence, and event order because each event carries its offset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Digest {
    sum: u128,
    count: u64,
}

impl Digest {
    /// Adds one record.
    pub fn add(&mut self, record: &Record) {
        self.sum = self.sum.wrapping_add(fnv1a_128(&canonical_bytes(record)));
        self.count += 1;
    }

    /// Adds every record of `records`.
    pub fn add_all<'r>(&mut self, records: impl IntoIterator<Item = &'r Record>) {
        for record in records {
            self.add(record);
        }
    }

    /// The number of records added.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The checksum as 32 hex digits.
    #[must_use]
    pub fn hex(&self) -> String {
        format!("{:032x}", self.sum)
    }
}

/// A self-delimiting encoding of every field of a record.
fn canonical_bytes(record: &Record) -> Vec<u8> {
    fn put(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    let mut out = vec![record.section() as u8];
    match record {
        Record::Aggregate(m) => {
            put(&mut out, m.handler_key.as_bytes());
            put(&mut out, m.instance_id.as_bytes());
            put(&mut out, &m.revision.to_be_bytes());
            put(&mut out, m.last_event_id.as_bytes());
        }
        Record::Process(p) => {
            put(&mut out, p.handler_key.as_bytes());
            put(&mut out, p.instance_id.as_bytes());
            put(&mut out, &p.revision.to_be_bytes());
            put(&mut out, p.packet.media_type.as_bytes());
            put(&mut out, &p.packet.data);
        }
        Record::Offset { application_key, next_offset } => {
            put(&mut out, application_key.as_bytes());
            put(&mut out, &next_offset.to_be_bytes());
        }
        Record::Queue { sequence, message } => {
            let micros = Micros::from_system_time(message.next_attempt_at).map_or(i64::MIN, |m| m.0);
            put(&mut out, &sequence.to_be_bytes());
            put(&mut out, &message.revision.to_be_bytes());
            put(&mut out, &message.failure_count.to_be_bytes());
            put(&mut out, &micros.to_be_bytes());
            put(&mut out, &message.envelope.encode_to_vec());
        }
        Record::Event(e) => {
            put(&mut out, &e.offset.to_be_bytes());
            put(&mut out, &e.envelope.encode_to_vec());
        }
    }
    out
}

/// Walks every section of a store's export, a page at a time.
///
/// ```
/// # async fn demo(store: &impl vellum_core::BulkStore) -> vellum_core::Result<()> {
/// let mut export = vellum_core::bulk::Export::new(store, 1000);
/// while let Some(page) = export.next_page().await? {
///     println!("{} records", page.len());
/// }
/// # Ok(()) }
/// ```
pub struct Export<'a, S> {
    store: &'a S,
    from: Option<ExportFrom>,
    /// The last section to walk.
    last: Section,
    page_size: usize,
}

impl<'a, S: BulkStore> Export<'a, S> {
    /// An export of `store` from its first section, `page_size` records per page (at least 1).
    pub fn new(store: &'a S, page_size: usize) -> Self {
        Self {
            store,
            from: Some(Section::Aggregates.start()),
            last: Section::Events,
            page_size: page_size.max(1),
        }
    }

    /// An export of one section of `store` only.
    pub fn section(store: &'a S, section: Section, page_size: usize) -> Self {
        Self { store, from: Some(section.start()), last: section, page_size: page_size.max(1) }
    }

    /// The next non-empty page, or `None` when every section is done.
    ///
    /// # Errors
    /// Whatever the store's `export_page` returns. The export stays where it was, so calling
    /// again retries the same page.
    ///
    /// # Cancel safety
    /// Dropping the future part-way loses nothing: the export's position only moves when a page
    /// is returned (or an empty section is passed), so the next call fetches the same page.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Record>>> {
        while let Some(from) = self.from.clone() {
            let section = from.section();
            // Read before the page: every event below it was committed before the page was
            // read, so a page that ends short of it has lost events (docs/integrity.md).
            let next_offset = match from {
                ExportFrom::Events(_) => Some(self.store.next_event_offset().await?),
                _ => None,
            };
            let page = self.store.export_page(from.clone(), self.page_size).await?;
            if let (Some(next_offset), ExportFrom::Events(first)) = (next_offset, &from) {
                check_log_end(self.store.app_key(), *first, &page, self.page_size, next_offset)?;
            }
            self.from = match page.last() {
                Some(last) if page.len() >= self.page_size => Some(ExportFrom::after(last)?),
                _ if section == self.last => None,
                _ => section.next().map(Section::start),
            };
            if !page.is_empty() {
                return Ok(Some(page));
            }
        }
        Ok(None)
    }
}

/// Refuses an events page that ends the log before `next_offset`, the offset the store's
/// counters give the next event: the events in between were lost.
fn check_log_end(
    app_key: &str,
    first: u64,
    page: &[Record],
    page_size: usize,
    next_offset: u64,
) -> Result<()> {
    if page.len() >= page_size {
        return Ok(());
    }
    let end = match page.last() {
        Some(Record::Event(e)) => e.offset + 1,
        _ => first,
    };
    if end >= next_offset {
        return Ok(());
    }
    Err(Error::storage_kind(
        crate::ErrorKind::Corrupt,
        format!("the event log of application {app_key:?} is damaged"),
        format!(
            "it ends at offset {end}, but the store's next offset is {next_offset}: events {end} to {} are missing",
            next_offset - 1
        ),
    ))
}

/// What a [`copy`] moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopySummary {
    /// Record counts, equal in source and destination.
    pub stats: StoreStats,
    /// The checksum of the source's export, equal to the destination's.
    pub digest: Digest,
}

/// Copies every record of `source` into the empty store `destination`, a page at a time,
/// then verifies that both hold the same counts and the same checksum. `progress` is called
/// with the number of records copied so far.
///
/// # Errors
/// [`Error::Copy`] if the destination is not empty or does not verify; any error of
/// either store.
///
/// # Cancel safety
/// Not resumable. Dropped part-way, the destination keeps the pages imported so far, each whole
/// (the one in flight commits entirely or not at all), and nothing is verified. A destination
/// that received a page is no longer empty, so a new `copy` into it is refused: use a fresh one.
pub async fn copy<S: BulkStore, D: BulkStore>(
    source: &S,
    destination: &D,
    page_size: usize,
    mut progress: impl FnMut(u64),
) -> Result<CopySummary> {
    let existing = destination.stats().await?;
    if !existing.is_empty() {
        return Err(Error::Copy(format!(
            "destination store {:?} is not empty ({} records); copy only fills an empty store",
            destination.app_key(),
            existing.total()
        )));
    }
    let mut digest = Digest::default();
    let mut export = Export::new(source, page_size);
    while let Some(page) = export.next_page().await? {
        digest.add_all(&page);
        destination.import(page).await?;
        progress(digest.count());
    }
    let (stats, written) = (source.stats().await?, destination.stats().await?);
    let copied = checksum(destination, page_size).await?;
    if stats != written || copied != digest || digest.count() != stats.total() {
        return Err(Error::Copy(format!(
            "copy does not verify: source {stats:?} checksum {}, destination {written:?} checksum {}",
            digest.hex(),
            copied.hex()
        )));
    }
    Ok(CopySummary { stats, digest })
}

/// The [`Digest`] of a store's whole export.
///
/// # Errors
/// Whatever the store's `export_page` returns.
///
/// # Cancel safety
/// Dropping the future part-way loses nothing and changes nothing: it is a read.
pub async fn checksum<S: BulkStore>(store: &S, page_size: usize) -> Result<Digest> {
    let mut digest = Digest::default();
    let mut export = Export::new(store, page_size);
    while let Some(page) = export.next_page().await? {
        digest.add_all(&page);
    }
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::Envelope;

    #[derive(Default)]
    struct State {
        aggregates: HashMap<(String, String), u64>,
        events: Vec<String>,
    }

    impl PreBatchState for State {
        fn aggregate_revision(&mut self, hk: &str, id: &str) -> Result<u64> {
            Ok(self.aggregates.get(&(hk.to_owned(), id.to_owned())).copied().unwrap_or(0))
        }
        fn process_revision(&mut self, _: &str, _: &str) -> Result<Option<u64>> {
            Ok(None)
        }
        fn queue_revision(&mut self, _: &str) -> Result<Option<u64>> {
            Ok(None)
        }
        fn timeouts_of(&mut self, _: &str, _: &str) -> Result<Vec<String>> {
            Ok(Vec::new())
        }
        fn offset(&mut self, _: &str) -> Result<u64> {
            Ok(0)
        }
        fn event_exists(&mut self, id: &str) -> Result<bool> {
            Ok(self.events.iter().any(|e| e == id))
        }
    }

    fn event(offset: u64, id: &str) -> Record {
        Record::Event(Event { offset, envelope: Envelope { message_id: id.into(), ..Envelope::default() } })
    }

    fn aggregate(id: &str, revision: u64) -> Record {
        Record::Aggregate(AggregateMetaData { revision, ..AggregateMetaData::new("h", id) })
    }

    fn import_error(result: Result<()>) -> ImportError {
        match result {
            Err(Error::InvalidImport(e)) => e,
            other => panic!("expected an import error, got {other:?}"),
        }
    }

    #[test]
    fn events_must_continue_the_log() {
        let mut state = State { events: vec!["a".into()], ..State::default() };
        check_import(&[event(1, "b"), event(2, "c")], 1, &mut state).unwrap();
        let gap = import_error(check_import(&[event(1, "b"), event(3, "c")], 1, &mut state));
        assert!(matches!(gap, ImportError::OffsetGap { index: 1, expected: 2, .. }), "{gap}");
        let stored = import_error(check_import(&[event(1, "a")], 1, &mut state));
        assert!(matches!(stored, ImportError::AlreadyStored { index: 0, .. }), "{stored}");
    }

    #[test]
    fn keys_are_new_and_revisions_nonzero() {
        let mut state = State::default();
        state.aggregates.insert(("h".into(), "x".into()), 3);
        let stored = import_error(check_import(&[aggregate("x", 1)], 0, &mut state));
        assert!(stored.to_string().contains("aggregate h/x"), "{stored}");
        let repeated = import_error(check_import(&[aggregate("y", 1), aggregate("y", 2)], 0, &mut state));
        assert!(matches!(repeated, ImportError::Repeated { index: 1, first: 0, .. }), "{repeated}");
        let zero = import_error(check_import(&[aggregate("z", 0)], 0, &mut state));
        assert!(matches!(zero, ImportError::ZeroRevision { .. }), "{zero}");
    }

    #[test]
    fn an_export_that_ends_before_the_next_offset_is_corrupt() {
        let event = |offset| Record::Event(Event { offset, envelope: crate::Envelope::default() });
        // A full page says nothing about the end; a short one must reach the next offset.
        assert!(check_log_end("app", 0, &[event(0), event(1)], 2, 10).is_ok());
        assert!(check_log_end("app", 0, &[event(0), event(1)], 5, 2).is_ok());
        assert!(check_log_end("app", 7, &[], 5, 7).is_ok());
        let e = check_log_end("app", 0, &[event(0), event(1)], 5, 4).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Corrupt);
        assert!(e.to_string().contains("\"app\""), "{e}");
        assert!(format!("{e:?}").contains("events 2 to 3 are missing"), "{e:?}");
        assert!(check_log_end("app", 3, &[], 5, 4).is_err());
    }

    #[test]
    fn digest_ignores_order_but_not_content() {
        let records = [aggregate("a", 1), aggregate("b", 2), event(0, "e")];
        let (mut forward, mut backward) = (Digest::default(), Digest::default());
        forward.add_all(&records);
        backward.add_all(records.iter().rev());
        assert_eq!(forward, backward);
        let mut changed = Digest::default();
        changed.add_all(&[aggregate("a", 1), aggregate("b", 3), event(0, "e")]);
        assert_ne!(forward, changed);
    }

    #[test]
    fn export_positions_follow_records() {
        let message = QueueMessage {
            revision: 1,
            failure_count: 0,
            next_attempt_at: UNIX_EPOCH + Duration::from_micros(7),
            envelope: Envelope::default(),
        };
        let queued = Record::Queue { sequence: 9, message };
        let key = QueueKey { next_attempt_at: Micros(7), sequence: 9, message_id: String::new() };
        assert_eq!(ExportFrom::after(&queued).unwrap(), ExportFrom::Queue(Some(key)));
        assert_eq!(ExportFrom::after(&event(4, "e")).unwrap(), ExportFrom::Events(5));
        assert_eq!(Section::Queue.next(), Some(Section::Events));
        assert_eq!(Section::Events.next(), None);
    }
}
