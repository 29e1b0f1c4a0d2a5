//! The embedded vellum provider, on [redb](https://www.redb.org): the default for engines that do
//! not run a database server.
//!
//! A [`RedbProvider`] works over a directory holding one redb file per application key, so
//! processes can host different applications from one directory. Opening a key is exclusive
//! (docs/locking.md#redb): while a store is open, a second open in this process, or in another
//! process (through redb's file lock), returns [`Error::Locked`] at once, whatever name (symbolic
//! links resolved) it reaches the file by; the lock goes with `close`, with the store, or with
//! the process. An open in this process of a key whose store was just closed or dropped waits
//! for that store's writer to let go of the file, instead of returning `Locked`. A store whose
//! file is removed or replaced under it is fenced: it refuses every further write with
//! [`ErrorKind::Fenced`](vellum_core::ErrorKind::Fenced) (docs/locking.md#fencing).
//!
//! Only a missing file is created (race-free: it appears complete, under its name, at once). An
//! existing file that is empty, truncated, not a redb file or not this application's is refused
//! with an error naming it ([`ErrorKind::Corrupt`](vellum_core::ErrorKind::Corrupt) for damage),
//! and left as it is: a damaged store is never replaced by a new, empty one.
//!
//! Writes are durable when `persist` returns. Concurrent `persist` calls share one write
//! transaction and one fsync (group commit), each batch still succeeding or failing on its own.
//! Reads use indexes: by-type and by-source event queries and the queue head never scan
//! everything. Stores implement [`BulkStore`](vellum_core::BulkStore) (export and import for
//! backup and copying between providers) and emit the [`observe`] tracing spans.
//! ARCHITECTURE.md at the repository root documents the on-disk layout.
//!
//! ```
//! use vellum_core::{Batch, DataStore, EventRepository, Operation, Persister, Provider};
//! use vellum_redb::RedbProvider;
//!
//! # let dir = tempfile::tempdir().unwrap();
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let provider = RedbProvider::new(dir.path());
//! let store = provider.open("billing").await?;
//! let batch = Batch::from(vec![Operation::SaveOffset {
//!     application_key: "orders".into(),
//!     current_offset: 0,
//!     next_offset: 7,
//! }]);
//! store.persist(batch).await?;
//! assert_eq!(store.next_event_offset().await?, 0);
//! store.close().await?;
//! # Ok::<(), vellum_core::Error>(())
//! # }).unwrap();
//! ```

mod bulk;
mod file;
mod layout;
mod migrate;
mod reader;
mod records;
mod store;
mod tables;
mod verify;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::oneshot;
use tracing::Instrument as _;
use vellum_core::provider::observe;
use vellum_core::provider::{WriteQueue, block_on};
use vellum_core::{Error, Provider, Result};
use writer::RedbExecutor;

pub use reader::RedbReader;
pub use store::RedbStore;

/// The layout version of the files this crate writes; files of a higher version are refused.
pub const LAYOUT_VERSION: u64 = layout::LAYOUT_VERSION;

/// This provider's name in the `provider` field of its tracing spans ([`observe`]).
pub(crate) const PROVIDER: &str = "redb";

/// The default size of each open file's page cache.
pub const DEFAULT_CACHE_SIZE: usize = 256 * 1024 * 1024;

/// A provider whose stores are redb files in one directory, one per application key.
///
/// Provider values are cheap to clone and hold nothing open: every open store holds its own file.
#[derive(Debug, Clone)]
pub struct RedbProvider {
    dir: PathBuf,
    options: file::Options,
}

impl RedbProvider {
    /// A provider over `dir`, which is created when the first store is opened.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            options: file::Options { cache_size: DEFAULT_CACHE_SIZE, check_integrity: false, readers: true },
        }
    }

    /// Sets the page-cache size of each open file, in bytes (default [`DEFAULT_CACHE_SIZE`]).
    #[must_use]
    pub fn with_cache_size(mut self, bytes: usize) -> Self {
        self.options.cache_size = bytes;
        self
    }

    /// Has redb check the whole file each time it is opened (default off; the URL parameter
    /// `integrity_check=true`).
    ///
    /// On: redb verifies the checksum of every page of the file's committed trees and rebuilds
    /// its allocator state before the open returns, and commits the result. The cost is
    /// proportional to the file's size (the whole file is read), paid at every open. A file with
    /// a damaged page is refused at open with [`ErrorKind::Corrupt`](vellum_core::ErrorKind::Corrupt)
    /// naming the file.
    ///
    /// Off: redb runs that check only on a file that was not closed cleanly (after a crash).
    /// Ordinary reads do not verify page checksums, so a byte damaged outside redb (disk,
    /// copying, another program) is not noticed by redb and can be served as data; vellum's
    /// own record checksums catch a damaged record when it is read. Either way, an empty,
    /// truncated or foreign file is refused at open, and never replaced by a new store.
    #[must_use]
    pub fn with_integrity_check(mut self, enabled: bool) -> Self {
        self.options.check_integrity = enabled;
        self
    }

    /// Whether readers ([`Provider::open_reader`], `vellum tail`) may open an application's
    /// file beside its store, in this process or another (default on; the URL parameter
    /// `readers=false` turns it off).
    ///
    /// On: the store opens its file in redb's single-writer sharing mode, where every commit
    /// takes two syncs instead of one (so a reader never follows a commit whose pages are not on
    /// disk yet): with one writer about twice the syncs per batch; group commit shares them
    /// among concurrent writers. Off: the store locks its file whole, commits with one sync,
    /// and readers fail with `Locked` while it is open.
    #[must_use]
    pub fn with_readers(mut self, enabled: bool) -> Self {
        self.options.readers = enabled;
        self
    }

    /// Whether readers may open a file beside its store ([`Self::with_readers`]).
    #[must_use]
    pub fn readers(&self) -> bool {
        self.options.readers
    }

    /// The page-cache size of each open file, in bytes.
    #[must_use]
    pub fn cache_size(&self) -> usize {
        self.options.cache_size
    }

    /// Whether redb checks the whole file when it opens it ([`Self::with_integrity_check`]).
    #[must_use]
    pub fn integrity_check(&self) -> bool {
        self.options.check_integrity
    }

    /// The directory holding the files.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of the file that holds (or will hold) `app_key`'s data.
    #[must_use]
    pub fn file_path(&self, app_key: &str) -> PathBuf {
        self.dir.join(layout::file_name(app_key))
    }
}

impl Provider for RedbProvider {
    type Store = RedbStore;
    type Reader = RedbReader;

    /// Opens the application's file read-only beside its store (redb's single-writer sharing
    /// mode: any number of readers in any process, one writer). The file must exist: an
    /// application never opened has none ([`ErrorKind::Misconfigured`](vellum_core::ErrorKind)).
    async fn open_reader(&self, app_key: &str) -> Result<RedbReader> {
        let span = observe::open_span(PROVIDER, app_key);
        let _entered = span.enter();
        let opened = file::open_read_only(&self.dir, app_key, self.options.cache_size)
            .map(|(path, db)| RedbReader::new(app_key.to_owned(), path, db));
        observe::record(&span, opened)
    }

    async fn open(&self, app_key: &str) -> Result<RedbStore> {
        let span = observe::open_span(PROVIDER, app_key);
        let opened = self.open_store(app_key).instrument(span.clone()).await;
        observe::record(&span, opened)
    }
}

impl RedbProvider {
    /// Opens `app_key`'s store on a new writer thread (see [`Provider::open`]).
    async fn open_store(&self, app_key: &str) -> Result<RedbStore> {
        let (dir, key, options) = (self.dir.clone(), app_key.to_owned(), self.options);
        let (opened, outcome) = oneshot::channel();
        // The store's writer thread opens the file (which may take a while after a crash) and
        // then serves the store. If this future is dropped meanwhile, the thread finds nobody
        // to hand the store to and closes the file again.
        // Opening runs on the writer thread: carry the open span there, so its work is inside.
        let span = tracing::Span::current();
        std::thread::Builder::new()
            .name(format!("vellum-redb {app_key:?}"))
            .spawn(move || match span.in_scope(|| file::open(&dir, &key, options)) {
                Ok(file) => {
                    let file = Arc::new(file);
                    let (queue, writer) =
                        WriteQueue::new(RedbExecutor { file: Arc::clone(&file), fenced: None });
                    if opened.send(Ok((file, queue))).is_ok() {
                        block_on(writer);
                    }
                }
                Err(e) => {
                    let _ = opened.send(Err(e));
                }
            })
            .map_err(|e| Error::storage("cannot start the redb writer thread", e))?;
        let (file, queue) = outcome
            .await
            .map_err(|e| Error::storage("the redb writer thread stopped while opening", e))??;
        Ok(RedbStore::new(app_key.to_owned(), file, queue))
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod conformance {
    use tempfile::TempDir;
    use vellum_conformance::{Backend, Skip};

    use super::RedbProvider;

    /// A temporary directory; every provider value is a new `RedbProvider` over it.
    struct Redb(TempDir);

    impl Backend for Redb {
        type Provider = RedbProvider;

        async fn provider(&self) -> RedbProvider {
            RedbProvider::new(self.0.path())
        }
    }

    #[allow(clippy::unused_async)]
    async fn backend() -> Result<Redb, Skip> {
        tempfile::tempdir().map(Redb).map_err(|e| Skip(format!("no temporary directory: {e}")))
    }

    vellum_conformance::conformance_tests!(backend);
}
