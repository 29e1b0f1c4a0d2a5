//! vellum: the persistence layer of a message-driven (Dogma-style) engine.
//!
//! For each application an engine runs, a store keeps aggregate meta-data, an append-only event
//! log with dense offsets, process state, a durable message queue and consumer offsets; every
//! write is an atomic [`Batch`] under optimistic concurrency, and each store is owned by one
//! engine at a time. This crate re-exports the contract ([`vellum_core`]) and the providers
//! (behind cargo features), and picks a provider at run time from a URL with [`connect`]:
//!
//! | URL | provider | feature |
//! |---|---|---|
//! | `memory:` | in memory, not durable | `memory` (default) |
//! | `redb://DIR` | one redb file per application in `DIR`, the embedded default; parameters `integrity_check=true` and `cache_mb=N` (see [`connect`]) | `redb` (default) |
//! | `sqlite://FILE` | SQLite | `sqlite` |
//! | `postgres://…` | PostgreSQL | `postgres` |
//! | `mysql://…` | MySQL / MariaDB | `mysql` |
//!
//! ```
//! use vellum::{Batch, DataStore, EventRepository, Operation, Persister, Provider};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> vellum::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! # let url = format!("redb://{}", dir.path().display());
//! let provider = vellum::connect(&url)?;             // e.g. "redb://vellum-data"
//! let store = provider.open("billing").await?;       // exclusive until closed
//! let mut event = vellum::Envelope::default();
//! event.message_id = "e-1".into();
//! event.portable_name = "InvoicePaid".into();
//! let result = store.persist(Batch::from(vec![Operation::SaveEvent(event)])).await?;
//! assert_eq!(result.event_offsets["e-1"], 0);
//! assert_eq!(store.next_event_offset().await?, 1);
//! store.close().await?;
//! # Ok(()) }
//! ```
//!
//! Whole stores move between providers with [`bulk::copy`] (what `vellum copy` runs), and to
//! and from a backup file with [`bulk::archive`] (`vellum export` / `vellum import`).
//!
//! This crate exports the API an engine uses. Writing a provider takes more (batch evaluation,
//! planning, the commit engine): see [`vellum_core::provider`].

mod any;
mod url;

pub use any::{AnyProvider, AnyReader, AnyStore};
pub use url::{RedbParams, SCHEMES, StoreUrl};
pub use vellum_core::time;
pub use vellum_core::{
    AggregateMetaData, AggregateRepository, Batch, BulkStore, DEFAULT_PAGE_SIZE, DataStore, DataStoreSet,
    EntityKey, Envelope, Error, ErrorKind, Event, EventCursor, EventQuery, EventReader, EventRepository,
    ExportFrom, Follower, Identity, InvalidBatch, OffsetRepository, Operation, Packet, PersistResult,
    Persister, ProcessInstance, ProcessRepository, Provider, QueueKey, QueueMessage, QueueRepository, Record,
    Result, Section, StoreStats,
};

pub mod bulk {
    //! Bulk export and import of whole stores: backup, restore, and copying a store between
    //! providers ([`copy`], what `vellum copy` runs); a whole store as one checksummed file
    //! ([`archive`], what `vellum export` and `vellum import` run).

    pub use vellum_core::archive;
    pub use vellum_core::bulk::{
        BulkStore, CopySummary, Digest, Export, ExportFrom, ImportError, QueueKey, Record, Section,
        StoreStats, checksum, copy,
    };
}

pub mod verify {
    //! Checking a whole store for damage: [`BulkStore::verify`](crate::BulkStore::verify)
    //! (what `vellum verify` runs) returns a [`Report`] listing each [`Problem`] with where it
    //! is. Provider authors feed the checker in [`vellum_core::verify`].

    pub use vellum_core::verify::{Problem, Report};
}

/// The in-memory provider.
#[cfg(feature = "memory")]
pub use vellum_memory as memory;
/// The embedded redb provider.
#[cfg(feature = "redb")]
pub use vellum_redb as redb;
/// The SQL providers (SQLite, PostgreSQL, MySQL/MariaDB), as enabled by features.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub use vellum_sql as sql;

/// A provider for a store URL (see the table above). Nothing is opened or connected yet: a
/// server that cannot be reached fails the first [`Provider::open`]. For `redb://` and
/// `sqlite://`, missing directories are created.
///
/// A `redb://` URL takes these parameters ([`RedbParams`]), each at most once:
///
/// | parameter | default | |
/// |---|---|---|
/// | `integrity_check=true\|false` | `false` | redb verifies the checksum of every page of a file when it opens it (the whole file is read, at every open; see `RedbProvider::with_integrity_check`) |
/// | `cache_mb=N` | 256 | each open file's page cache, in MiB |
/// | `readers=true\|false` | `true` | readers (`open_reader`, `vellum tail`) may open a file beside its store; `false` locks the file whole and commits with one sync instead of two (see `RedbProvider::with_readers`) |
///
/// For example `redb://vellum-data?integrity_check=true&cache_mb=64`. `sqlite://` takes none.
/// The SQL servers' URLs take their drivers' parameters.
///
/// # Errors
/// [`Error::InvalidUrl`] (kind [`Misconfigured`](ErrorKind::Misconfigured)) for a URL that names
/// no provider of this build, or has an unknown, repeated or invalid parameter (the error names
/// it); and a storage error naming the directory that cannot be created.
pub fn connect(url: &str) -> Result<AnyProvider> {
    let parsed = StoreUrl::parse(url)?;
    let disabled = || Error::InvalidUrl {
        url: url.to_owned(),
        reason: format!("this build of vellum has no {} provider (cargo feature)", parsed.kind()),
    };
    match &parsed {
        #[cfg(feature = "memory")]
        StoreUrl::Memory => Ok(AnyProvider::Memory(vellum_memory::MemoryProvider::new())),
        #[cfg(feature = "redb")]
        StoreUrl::Redb { dir, params } => {
            create_dir(dir)?;
            let mut provider =
                vellum_redb::RedbProvider::new(dir).with_integrity_check(params.integrity_check);
            if let Some(bytes) = params.cache_size() {
                provider = provider.with_cache_size(bytes);
            }
            if let Some(readers) = params.readers {
                provider = provider.with_readers(readers);
            }
            Ok(AnyProvider::Redb(provider))
        }
        #[cfg(feature = "sqlite")]
        StoreUrl::Sqlite(file) => {
            if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
                create_dir(parent)?;
            }
            vellum_sql::sqlite::SqliteProvider::new(file).map(AnyProvider::Sqlite)
        }
        #[cfg(feature = "postgres")]
        StoreUrl::Postgres(url) => {
            vellum_sql::postgres::PostgresProvider::from_url(url).map(AnyProvider::Postgres)
        }
        #[cfg(feature = "mysql")]
        StoreUrl::Mysql(url) => vellum_sql::mysql::MysqlProvider::from_url(url).map(AnyProvider::Mysql),
        #[allow(unreachable_patterns)]
        _ => Err(disabled()),
    }
}

#[cfg(any(feature = "redb", feature = "sqlite"))]
fn create_dir(dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::storage(format!("creating directory {}", dir.display()), e))
}
