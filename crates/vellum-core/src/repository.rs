//! The traits a store implements, split as in Go so each engine component asks for only what
//! it needs. Methods are native async and every future is `Send`.

use std::future::Future;
use std::time::Duration;

use crate::batch::Batch;
use crate::cursor::EventCursor;
use crate::error::Result;
use crate::model::{AggregateMetaData, PersistResult, ProcessInstance, QueueMessage};

/// Reads aggregate meta-data.
pub trait AggregateRepository: Send + Sync {
    /// The stored meta-data, or `{handler_key, instance_id, 0, ""}` for a never-saved instance.
    ///
    /// # Cancel safety
    /// Dropping the future part-way loses nothing and changes nothing: it is a read.
    fn load_aggregate_meta_data(
        &self,
        handler_key: &str,
        instance_id: &str,
    ) -> impl Future<Output = Result<AggregateMetaData>> + Send;
}

/// Reads the application's event log.
pub trait EventRepository: Send + Sync {
    /// The number of events in the log: the offset the next event will get.
    ///
    /// # Cancel safety
    /// Dropping the future part-way loses nothing and changes nothing: it is a read.
    fn next_event_offset(&self) -> impl Future<Output = Result<u64>> + Send;

    /// Every event from `min_offset` on, ascending: the whole log (a projection rebuilding, a
    /// tail, a scan).
    ///
    /// # Cancel safety
    /// Dropping the future part-way loses nothing and changes nothing: it is a read, and no
    /// cursor is left behind.
    fn load_all_events(&self, min_offset: u64) -> impl Future<Output = Result<EventCursor>> + Send;

    /// Events whose portable name is one of `portable_names`, from `min_offset` on, ascending.
    /// An empty filter matches nothing.
    ///
    /// # Cancel safety
    /// Dropping the future part-way loses nothing and changes nothing: it is a read, and no
    /// cursor is left behind.
    fn load_events_by_type(
        &self,
        portable_names: &[&str],
        min_offset: u64,
    ) -> impl Future<Output = Result<EventCursor>> + Send;

    /// Events produced by one handler instance (exact match on both keys), from offset 0.
    ///
    /// # Cancel safety
    /// Dropping the future part-way loses nothing and changes nothing: it is a read, and no
    /// cursor is left behind.
    fn load_events_by_source(
        &self,
        handler_key: &str,
        instance_id: &str,
    ) -> impl Future<Output = Result<EventCursor>> + Send;
}

/// Reads consumer positions in other applications' event streams.
pub trait OffsetRepository: Send + Sync {
    /// The next offset to consume from `application_key`'s stream, 0 when none is stored.
    ///
    /// # Cancel safety
    /// Dropping the future part-way loses nothing and changes nothing: it is a read.
    fn load_offset(&self, application_key: &str) -> impl Future<Output = Result<u64>> + Send;
}

/// Reads process instances.
pub trait ProcessRepository: Send + Sync {
    /// The stored instance, or `{handler_key, instance_id, 0, empty packet}` when absent.
    ///
    /// # Cancel safety
    /// Dropping the future part-way loses nothing and changes nothing: it is a read.
    fn load_process_instance(
        &self,
        handler_key: &str,
        instance_id: &str,
    ) -> impl Future<Output = Result<ProcessInstance>> + Send;
}

/// Reads the message queue.
pub trait QueueRepository: Send + Sync {
    /// Up to `n` messages with the earliest `next_attempt_at`, due or not; ties in enqueue order,
    /// then by message ID. `n == 0` returns nothing.
    ///
    /// # Cancel safety
    /// Dropping the future part-way loses nothing and changes nothing: it is a read.
    fn load_queue_messages(&self, n: usize) -> impl Future<Output = Result<Vec<QueueMessage>>> + Send;
}

/// Commits batches.
pub trait Persister: Send + Sync {
    /// Validates and commits `batch` atomically. On any error nothing from the batch is applied.
    ///
    /// # Cancel safety
    /// Dropped before the store's writer took the batch, it is never committed. Dropped after,
    /// it commits whole with its group or not at all, never partly, and the caller cannot tell
    /// which (reload to find out). Dropping never blocks and leaves the store usable.
    fn persist(&self, batch: Batch) -> impl Future<Output = Result<PersistResult>> + Send;
}

/// Everything an engine needs from one application's store.
pub trait DataStore:
    AggregateRepository + EventRepository + OffsetRepository + ProcessRepository + QueueRepository + Persister
{
    /// The application key this store was opened for.
    fn app_key(&self) -> &str;

    /// Closes the store and releases its exclusive lock. The first call succeeds; every later
    /// call, and every other operation afterwards, returns [`Error::Closed`](crate::Error::Closed).
    ///
    /// # Cancel safety
    /// The store is closed, and new work refused, from the future's first poll. Dropped after
    /// that, the store's writer still commits the work queued before the close and then
    /// releases the lock on its own; a later `close` returns `Closed`.
    fn close(&self) -> impl Future<Output = Result<()>> + Send;

    /// Whether the store lost its exclusive lock and so refuses every write with an error of
    /// kind [`Fenced`](crate::ErrorKind::Fenced) (docs/locking.md#fencing): close it and open the
    /// application again. Learnt from a failed write, or sooner from the lock's keep-alive; a
    /// store whose lock cannot be lost always says `false`.
    fn is_fenced(&self) -> bool {
        false
    }
}

/// An application's event log opened for reading only, beside whichever engine holds its store
/// (in this process or another): made by [`Provider::open_reader`]. It takes no lock and
/// writes nothing. Its cursors [`follow`](EventCursor::follow) the log like a store's
/// (docs/events.md#reading-beside-the-engine).
pub trait EventReader: EventRepository {
    /// Closes the reader: its cursors and followers end with [`Error::Closed`](crate::Error::Closed).
    /// The first call succeeds; every later call, and every read afterwards, returns `Closed`.
    /// Dropping the reader closes it too.
    fn close(&self) -> impl Future<Output = Result<()>> + Send;
}

/// Opens application stores.
pub trait Provider: Send + Sync {
    /// The store type this provider opens.
    type Store: DataStore + 'static;

    /// The reader type [`Provider::open_reader`] opens.
    type Reader: EventReader + 'static;

    /// Opens the store of `app_key` for exclusive use; returns
    /// [`Error::Locked`](crate::Error::Locked) promptly if it is open elsewhere.
    ///
    /// # Cancel safety
    /// A dropped `open` leaves no store open and no lock held. SQLite releases its lock file as
    /// the future drops; redb's writer thread finishes opening the file, finds nobody to take it
    /// and closes it; PostgreSQL and MySQL close the half-opened lock connection in the
    /// background, and the server frees the lock when that session ends.
    fn open(&self, app_key: &str) -> impl Future<Output = Result<Self::Store>> + Send;

    /// Opens the store of `app_key`, waiting up to `timeout` for the engine holding it to let
    /// go: how a standby takes over (docs/failover.md#standby). Returns
    /// [`Error::Locked`](crate::Error::Locked) if the store is still held when `timeout` has
    /// passed, and any other error at once. Requires a tokio runtime with its timer enabled.
    ///
    /// The default retries [`Provider::open`] with back-off (5 ms doubling to 100 ms,
    /// [`provider::MAX_PAUSE`](crate::provider::MAX_PAUSE)), so a freed lock is taken within
    /// about 100 ms; server providers keep one connection and retry only the lock on it.
    ///
    /// # Cancel safety
    /// As [`Provider::open`]: every attempt takes the lock or fails at once, so a dropped wait
    /// holds nothing and leaves no request queued for the lock.
    fn open_wait(
        &self,
        app_key: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<Self::Store>> + Send {
        crate::standby::retry_locked(timeout, move || self.open(app_key))
    }

    /// Opens the event log of `app_key` for reading only, without its lock, so it works while
    /// an engine holds the store: how a projection, a tail or a consumer in another process
    /// reads and follows the log (docs/events.md#reading-beside-the-engine).
    ///
    /// Followers of a reader learn of new events by polling (adaptive, see
    /// [`Follower::with_poll_cap`](crate::Follower::with_poll_cap)), except where the provider
    /// can push: on PostgreSQL a `LISTEN` connection wakes them on every commit, and in memory
    /// the commits themselves do. Errors if the application's storage does not exist (a redb
    /// file never created), with the kind [`Misconfigured`](crate::ErrorKind::Misconfigured).
    ///
    /// # Cancel safety
    /// A dropped open leaves nothing open.
    fn open_reader(&self, app_key: &str) -> impl Future<Output = Result<Self::Reader>> + Send;
}
