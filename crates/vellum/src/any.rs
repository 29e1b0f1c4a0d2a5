//! [`AnyProvider`] and [`AnyStore`]: a provider chosen at run time (from a URL), as enums that
//! forward each call to the concrete provider without boxing a future per call.

use std::time::Duration;

use vellum_core::bulk::{BulkStore, ExportFrom, Record, StoreStats};
use vellum_core::verify::Report;
use vellum_core::{
    AggregateMetaData, AggregateRepository, Batch, DataStore, Error, EventCursor, EventReader,
    EventRepository, OffsetRepository, PersistResult, Persister, ProcessInstance, ProcessRepository,
    Provider, QueueMessage, QueueRepository, Result,
};

/// Expands `$body` once per enabled provider variant, with `$inner` bound to the variant's value.
macro_rules! dispatch {
    ($enum:ident, $value:expr, $inner:ident => $body:expr) => {
        match $value {
            #[cfg(feature = "memory")]
            $enum::Memory($inner) => $body,
            #[cfg(feature = "redb")]
            $enum::Redb($inner) => $body,
            #[cfg(feature = "sqlite")]
            $enum::Sqlite($inner) => $body,
            #[cfg(feature = "postgres")]
            $enum::Postgres($inner) => $body,
            #[cfg(feature = "mysql")]
            $enum::Mysql($inner) => $body,
        }
    };
}

/// Like [`dispatch!`] for the SQL variants only; the others get [`AnyProvider::no_schema`].
macro_rules! sql_dispatch {
    ($value:expr, $inner:ident => $body:expr) => {
        match $value {
            #[cfg(feature = "sqlite")]
            AnyProvider::Sqlite($inner) => $body,
            #[cfg(feature = "postgres")]
            AnyProvider::Postgres($inner) => $body,
            #[cfg(feature = "mysql")]
            AnyProvider::Mysql($inner) => $body,
            #[allow(unreachable_patterns)]
            other => Err(other.no_schema()),
        }
    };
}

/// Any of the providers this build has, as [`connect`](crate::connect) returns.
///
/// [`Provider::open`] forwards to the chosen provider, with that provider's cancel safety (see
/// the trait).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum AnyProvider {
    /// In memory.
    #[cfg(feature = "memory")]
    Memory(vellum_memory::MemoryProvider),
    /// Embedded redb files.
    #[cfg(feature = "redb")]
    Redb(vellum_redb::RedbProvider),
    /// SQLite.
    #[cfg(feature = "sqlite")]
    Sqlite(vellum_sql::sqlite::SqliteProvider),
    /// PostgreSQL.
    #[cfg(feature = "postgres")]
    Postgres(vellum_sql::postgres::PostgresProvider),
    /// MySQL or MariaDB.
    #[cfg(feature = "mysql")]
    Mysql(vellum_sql::mysql::MysqlProvider),
}

/// An event-log reader opened through an [`AnyProvider`] ([`Provider::open_reader`]).
#[non_exhaustive]
pub enum AnyReader {
    /// In memory.
    #[cfg(feature = "memory")]
    Memory(vellum_memory::MemoryReader),
    /// Embedded redb files.
    #[cfg(feature = "redb")]
    Redb(vellum_redb::RedbReader),
    /// SQLite.
    #[cfg(feature = "sqlite")]
    Sqlite(vellum_sql::sqlite::SqliteReader),
    /// PostgreSQL.
    #[cfg(feature = "postgres")]
    Postgres(vellum_sql::postgres::PostgresReader),
    /// MySQL or MariaDB.
    #[cfg(feature = "mysql")]
    Mysql(vellum_sql::mysql::MysqlReader),
}

impl std::fmt::Debug for AnyReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        dispatch!(Self, self, r => std::fmt::Debug::fmt(r, f))
    }
}

impl EventRepository for AnyReader {
    async fn next_event_offset(&self) -> Result<u64> {
        dispatch!(Self, self, r => r.next_event_offset().await)
    }

    async fn load_all_events(&self, min_offset: u64) -> Result<EventCursor> {
        dispatch!(Self, self, r => r.load_all_events(min_offset).await)
    }

    async fn load_events_by_type(&self, portable_names: &[&str], min_offset: u64) -> Result<EventCursor> {
        dispatch!(Self, self, r => r.load_events_by_type(portable_names, min_offset).await)
    }

    async fn load_events_by_source(&self, handler_key: &str, instance_id: &str) -> Result<EventCursor> {
        dispatch!(Self, self, r => r.load_events_by_source(handler_key, instance_id).await)
    }
}

impl EventReader for AnyReader {
    async fn close(&self) -> Result<()> {
        dispatch!(Self, self, r => r.close().await)
    }
}

/// A store opened through an [`AnyProvider`].
///
/// Every method forwards to the concrete store, so each has the cancel safety its trait
/// documents ([`DataStore`], [`Persister`], [`BulkStore`], the repository traits).
#[non_exhaustive]
pub enum AnyStore {
    /// In memory.
    #[cfg(feature = "memory")]
    Memory(vellum_memory::MemoryStore),
    /// Embedded redb files.
    #[cfg(feature = "redb")]
    Redb(vellum_redb::RedbStore),
    /// SQLite.
    #[cfg(feature = "sqlite")]
    Sqlite(vellum_sql::sqlite::SqliteStore),
    /// PostgreSQL.
    #[cfg(feature = "postgres")]
    Postgres(vellum_sql::postgres::PostgresStore),
    /// MySQL or MariaDB.
    #[cfg(feature = "mysql")]
    Mysql(vellum_sql::mysql::MysqlStore),
}

impl AnyProvider {
    /// The provider's name: `memory`, `redb`, `sqlite`, `postgres` or `mysql`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            #[cfg(feature = "memory")]
            Self::Memory(_) => "memory",
            #[cfg(feature = "redb")]
            Self::Redb(_) => "redb",
            #[cfg(feature = "sqlite")]
            Self::Sqlite(_) => "sqlite",
            #[cfg(feature = "postgres")]
            Self::Postgres(_) => "postgres",
            #[cfg(feature = "mysql")]
            Self::Mysql(_) => "mysql",
        }
    }
}

/// vellum's SQL schema, for the SQL providers (`vellum schema`).
impl AnyProvider {
    /// Creates vellum's tables if missing (idempotent).
    ///
    /// # Errors
    /// [`Error::Unsupported`] for a provider without a schema; the database's error otherwise.
    ///
    /// # Cancel safety
    /// Run it to completion. SQLite finishes a dropped call on its blocking thread. Dropped
    /// part-way, PostgreSQL and MySQL may put back into their pool a connection still holding
    /// the schema lock (PostgreSQL: perhaps in an open transaction; MySQL: with some tables made),
    /// which stalls later schema creations, and opens that must create the schema, until it closes.
    #[allow(clippy::unused_async)] // without SQL features every arm is an error
    pub async fn create_schema(&self) -> Result<()> {
        sql_dispatch!(self, p => p.create_schema().await)
    }

    /// Drops vellum's tables and all their data, if present.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for a provider without a schema; the database's error otherwise.
    ///
    /// # Cancel safety
    /// Dropping the future may not stop the drop: SQLite finishes it on its blocking thread, and
    /// a server runs the statement once it was sent. Call it again to be sure: it is idempotent.
    #[allow(clippy::unused_async)] // without SQL features every arm is an error
    pub async fn drop_schema(&self) -> Result<()> {
        sql_dispatch!(self, p => p.drop_schema().await)
    }

    /// The schema version stored in the database, `None` when it has no vellum schema.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for a provider without a schema; the database's error otherwise.
    ///
    /// # Cancel safety
    /// Dropping the future part-way loses nothing and changes nothing: it is a read.
    #[allow(clippy::unused_async)] // without SQL features every arm is an error
    pub async fn schema_version(&self) -> Result<Option<i64>> {
        sql_dispatch!(self, p => p.schema_version().await)
    }

    #[allow(dead_code)]
    fn no_schema(&self) -> Error {
        Error::Unsupported(format!(
            "the {} provider has no SQL schema; schema commands take sqlite://, postgres:// or mysql:// URLs",
            self.kind()
        ))
    }
}

impl std::fmt::Debug for AnyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnyStore").field("app_key", &self.app_key()).finish_non_exhaustive()
    }
}

impl Provider for AnyProvider {
    type Store = AnyStore;
    type Reader = AnyReader;

    async fn open_reader(&self, app_key: &str) -> Result<AnyReader> {
        Ok(match self {
            #[cfg(feature = "memory")]
            Self::Memory(p) => AnyReader::Memory(p.open_reader(app_key).await?),
            #[cfg(feature = "redb")]
            Self::Redb(p) => AnyReader::Redb(p.open_reader(app_key).await?),
            #[cfg(feature = "sqlite")]
            Self::Sqlite(p) => AnyReader::Sqlite(p.open_reader(app_key).await?),
            #[cfg(feature = "postgres")]
            Self::Postgres(p) => AnyReader::Postgres(p.open_reader(app_key).await?),
            #[cfg(feature = "mysql")]
            Self::Mysql(p) => AnyReader::Mysql(p.open_reader(app_key).await?),
        })
    }

    async fn open(&self, app_key: &str) -> Result<AnyStore> {
        Ok(match self {
            #[cfg(feature = "memory")]
            Self::Memory(p) => AnyStore::Memory(p.open(app_key).await?),
            #[cfg(feature = "redb")]
            Self::Redb(p) => AnyStore::Redb(p.open(app_key).await?),
            #[cfg(feature = "sqlite")]
            Self::Sqlite(p) => AnyStore::Sqlite(p.open(app_key).await?),
            #[cfg(feature = "postgres")]
            Self::Postgres(p) => AnyStore::Postgres(p.open(app_key).await?),
            #[cfg(feature = "mysql")]
            Self::Mysql(p) => AnyStore::Mysql(p.open(app_key).await?),
        })
    }

    async fn open_wait(&self, app_key: &str, timeout: Duration) -> Result<AnyStore> {
        Ok(match self {
            #[cfg(feature = "memory")]
            Self::Memory(p) => AnyStore::Memory(p.open_wait(app_key, timeout).await?),
            #[cfg(feature = "redb")]
            Self::Redb(p) => AnyStore::Redb(p.open_wait(app_key, timeout).await?),
            #[cfg(feature = "sqlite")]
            Self::Sqlite(p) => AnyStore::Sqlite(p.open_wait(app_key, timeout).await?),
            #[cfg(feature = "postgres")]
            Self::Postgres(p) => AnyStore::Postgres(p.open_wait(app_key, timeout).await?),
            #[cfg(feature = "mysql")]
            Self::Mysql(p) => AnyStore::Mysql(p.open_wait(app_key, timeout).await?),
        })
    }
}

impl AggregateRepository for AnyStore {
    async fn load_aggregate_meta_data(
        &self,
        handler_key: &str,
        instance_id: &str,
    ) -> Result<AggregateMetaData> {
        dispatch!(Self, self, s => s.load_aggregate_meta_data(handler_key, instance_id).await)
    }
}

impl EventRepository for AnyStore {
    async fn next_event_offset(&self) -> Result<u64> {
        dispatch!(Self, self, s => s.next_event_offset().await)
    }

    async fn load_all_events(&self, min_offset: u64) -> Result<EventCursor> {
        dispatch!(Self, self, s => s.load_all_events(min_offset).await)
    }

    async fn load_events_by_type(&self, portable_names: &[&str], min_offset: u64) -> Result<EventCursor> {
        dispatch!(Self, self, s => s.load_events_by_type(portable_names, min_offset).await)
    }

    async fn load_events_by_source(&self, handler_key: &str, instance_id: &str) -> Result<EventCursor> {
        dispatch!(Self, self, s => s.load_events_by_source(handler_key, instance_id).await)
    }
}

impl OffsetRepository for AnyStore {
    async fn load_offset(&self, application_key: &str) -> Result<u64> {
        dispatch!(Self, self, s => s.load_offset(application_key).await)
    }
}

impl ProcessRepository for AnyStore {
    async fn load_process_instance(&self, handler_key: &str, instance_id: &str) -> Result<ProcessInstance> {
        dispatch!(Self, self, s => s.load_process_instance(handler_key, instance_id).await)
    }
}

impl QueueRepository for AnyStore {
    async fn load_queue_messages(&self, n: usize) -> Result<Vec<QueueMessage>> {
        dispatch!(Self, self, s => s.load_queue_messages(n).await)
    }
}

impl Persister for AnyStore {
    async fn persist(&self, batch: Batch) -> Result<PersistResult> {
        dispatch!(Self, self, s => s.persist(batch).await)
    }
}

impl DataStore for AnyStore {
    fn app_key(&self) -> &str {
        dispatch!(Self, self, s => s.app_key())
    }

    async fn close(&self) -> Result<()> {
        dispatch!(Self, self, s => s.close().await)
    }

    fn is_fenced(&self) -> bool {
        dispatch!(Self, self, s => s.is_fenced())
    }
}

impl BulkStore for AnyStore {
    async fn stats(&self) -> Result<StoreStats> {
        dispatch!(Self, self, s => s.stats().await)
    }

    async fn export_page(&self, from: ExportFrom, limit: usize) -> Result<Vec<Record>> {
        dispatch!(Self, self, s => s.export_page(from, limit).await)
    }

    async fn import(&self, records: Vec<Record>) -> Result<()> {
        dispatch!(Self, self, s => s.import(records).await)
    }

    async fn verify(&self, progress: &mut (dyn FnMut(u64) + Send)) -> Result<Report> {
        dispatch!(Self, self, s => s.verify(progress).await)
    }
}
