//! The SQLite dialect (feature `sqlite`), on `rusqlite` with a bundled SQLite.
//!
//! # Choices
//!
//! - **Durability and concurrency.** The database runs in WAL mode with `synchronous=FULL`, so
//!   an acknowledged batch survives a crash or power loss, and readers never wait for the
//!   writer. Each write transaction is `BEGIN IMMEDIATE` (takes the write lock up front, so it
//!   never fails half-way with `SQLITE_BUSY`), and every connection has a busy timeout, so
//!   writers of other applications in the same file, in this process or another, queue up
//!   instead of failing (docs/locking.md#sqlite).
//! - **Group commit.** Each store has one writer connection driven by the shared commit
//!   engine (`vellum_core::commit`): concurrent `persist` calls queue up and each group
//!   commits in one transaction with one counter-row update and one `fsync`. On a
//!   multi-threaded runtime a lone batch's transaction runs in `block_in_place` on the thread
//!   that commits it (usually its caller's), whose other tasks move to another worker first;
//!   groups, and everything on a current-thread runtime, go to a blocking thread
//!   (`spawn_blocking`). Either way no runtime is ever blocked by SQLite or the disk.
//! - **Reads** run inline on a small pool of the store's own `query_only` connections: they are
//!   indexed point lookups or one bounded page and take microseconds, less than a hop to a
//!   blocking thread. Event cursors page by offset and hold no connection between pages (docs/events.md#cursors).
//! - **Statements** are prepared once per connection (`prepare_cached`) and take only bound
//!   parameters; no SQL is ever built from data.
//! - **Exclusivity** (docs/locking.md#sqlite) is an OS lock on a sidecar lock file per (database file, application
//!   key), taken without waiting; see `lock.rs`. It dies with the process. The database file is
//!   named by its canonical path, so a symbolic link to it takes the same lock. An open in this
//!   process of a key whose store was just closed or dropped waits for that store's writer to
//!   release the lock instead of returning `Locked`. If the lock file or the database file is
//!   removed or replaced under an open store, the store is fenced: every further write fails with
//!   [`ErrorKind::Fenced`] (docs/locking.md#fencing).
//! - **Schema**: see [`create_schema`]. Opening a store creates or checks it
//!   ([`SqliteOptions::migrate`]); a database at a newer schema version is refused.
//! - **The file**: only a missing database file is created (race-free: it appears complete, in
//!   WAL mode, under its name at once). An existing file that is empty, truncated or not an SQLite
//!   database, as far as its header and length tell, is refused at open with
//!   [`ErrorKind::Corrupt`] naming it, and left as it is; never initialised as a new database.
//! - **Errors** name the database file (and the application): every SQLite failure is mapped by
//!   one function, `kind_of` giving its kind (`SQLITE_CORRUPT` and `SQLITE_NOTADB` are
//!   [`ErrorKind::Corrupt`], busy and locked are [`ErrorKind::Unavailable`]).
//!
//! ```no_run
//! use vellum_core::{DataStore, Provider};
//! use vellum_sql::sqlite::SqliteProvider;
//!
//! # async fn demo() -> vellum_core::Result<()> {
//! let provider = SqliteProvider::from_url("sqlite://data/engine.db")?;
//! let store = provider.open("billing").await?;
//! store.close().await?;
//! # Ok(())
//! # }
//! ```

mod bulk;
mod file;
mod lock;
mod reads;
mod schema;
mod verify;
mod writer;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tracing::Instrument as _;
use vellum_core::provider::observe;
use vellum_core::{Error, ErrorKind, Provider, Result};

pub use reads::SqliteReads;
pub use schema::{create_schema, drop_schema};

/// An open store of one application in a SQLite database.
pub type SqliteStore = crate::SqlStore<SqliteReads>;

/// A reader of one application's event log in a SQLite database (its followers poll).
pub type SqliteReader = crate::SqlReader<SqliteReads>;

use lock::AppLock;
use reads::Readers;
use vellum_core::provider::WriteQueue;
use writer::SqliteExecutor;

/// The provider's name in tracing spans.
const PROVIDER: &str = "sqlite";

/// How a [`SqliteProvider`] opens stores.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqliteOptions {
    /// Create (or upgrade) the schema when a store is opened. When off, opening a database
    /// without the schema is an error. Default: on.
    pub migrate: bool,
    /// How long a connection waits for another connection's write lock (other applications in
    /// the same file) before failing. Default: 10 s.
    pub busy_timeout: Duration,
    /// How many idle read connections each store keeps. Default: 4.
    pub read_connections: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self { migrate: true, busy_timeout: Duration::from_secs(10), read_connections: 4 }
    }
}

impl SqliteOptions {
    /// Turns automatic schema creation at open on or off.
    #[must_use]
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// Sets the busy timeout of every connection.
    #[must_use]
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// Sets how many idle read connections each store keeps.
    #[must_use]
    pub fn read_connections(mut self, n: usize) -> Self {
        self.read_connections = n;
        self
    }
}

/// Where a provider's stores keep their data.
#[derive(Debug)]
enum Source {
    /// A database file; each store opens its own connections.
    File(PathBuf),
    /// A connection the caller owns, shared by every store (never closed by vellum).
    Connection {
        conn: Arc<Mutex<Connection>>,
        /// The file behind the connection (for the sidecar locks), or `None` for an in-memory
        /// or temporary database, which only this process can see.
        path: Option<PathBuf>,
    },
}

/// Opens application stores in one SQLite database.
///
/// Clones share the same configuration. Every store of every provider value over the same
/// file is exclusive per application key, across processes too.
#[derive(Debug, Clone)]
pub struct SqliteProvider {
    source: Arc<Source>,
    options: SqliteOptions,
}

/// Makes `path` absolute (through its canonical parent directory, which must exist), so that
/// every spelling of one file maps to the same lock files.
fn absolute(path: &Path) -> Result<PathBuf> {
    let io = |e| Error::storage(format!("sqlite: resolving the database path {}", path.display()), e);
    let file_name = path.file_name().ok_or_else(|| {
        Error::storage(
            format!("sqlite: resolving the database path {}", path.display()),
            "the path does not name a file",
        )
    })?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    Ok(parent.canonicalize().map_err(io)?.join(file_name))
}

impl SqliteProvider {
    /// A provider over the database file at `path` (created on first open) with default options.
    /// The parent directory must exist.
    pub fn new(path: impl AsRef<Path>) -> Result<Self> {
        Self::with_options(path, SqliteOptions::default())
    }

    /// A provider over the database file at `path` with the given options.
    pub fn with_options(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self> {
        Ok(Self { source: Arc::new(Source::File(absolute(path.as_ref())?)), options })
    }

    /// A provider from a URL: `sqlite://relative/path` or `sqlite:///absolute/path` (no
    /// parameters).
    pub fn from_url(url: &str) -> Result<Self> {
        Self::from_url_with(url, SqliteOptions::default())
    }

    /// A provider from a URL (see [`SqliteProvider::from_url`]) with the given options.
    pub fn from_url_with(url: &str, options: SqliteOptions) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidUrl { url: url.to_owned(), reason: reason.to_owned() };
        let path = url
            .strip_prefix("sqlite://")
            .filter(|p| !p.is_empty())
            .ok_or_else(|| invalid("expected sqlite://relative/path or sqlite:///absolute/path"))?;
        let path = match path.split_once('?') {
            Some((path, "")) => path,
            Some(_) => return Err(invalid("sqlite:// takes no parameters")),
            None => path,
        };
        Self::with_options(path, options)
    }

    /// A provider over a connection the caller owns and keeps; vellum never closes it.
    ///
    /// Every store of this provider writes and reads through this one connection (taking the
    /// mutex for each transaction or read), so the caller must not hold a transaction open on
    /// it. The caller chooses its journal mode and `synchronous` level; WAL with
    /// `synchronous=FULL` is what vellum itself uses. Exclusivity uses the sidecar locks of the
    /// connection's file, or only an in-process lock for an in-memory database.
    pub fn from_connection(conn: Arc<Mutex<Connection>>, options: SqliteOptions) -> Result<Self> {
        let path = {
            let guard = conn.lock().map_err(|_| {
                Error::storage("sqlite: using a caller's connection", "the connection mutex is poisoned")
            })?;
            guard.path().filter(|p| !p.is_empty()).map(|p| absolute(Path::new(p))).transpose()?
        };
        Ok(Self { source: Arc::new(Source::Connection { conn, path }), options })
    }

    /// The database file, if any.
    #[must_use]
    pub fn path(&self) -> Option<&Path> {
        match &*self.source {
            Source::File(path) => Some(path),
            Source::Connection { path, .. } => path.as_deref(),
        }
    }

    /// Creates vellum's tables in the database if missing ([`create_schema`]).
    pub async fn create_schema(&self) -> Result<()> {
        self.with_connection(create_schema).await
    }

    /// Drops vellum's tables with all their data, if present ([`drop_schema`]).
    pub async fn drop_schema(&self) -> Result<()> {
        self.with_connection(drop_schema).await
    }

    /// The vellum schema version stored in the database, `None` when it has none.
    pub async fn schema_version(&self) -> Result<Option<i64>> {
        self.with_connection(|conn| schema::stored_version(conn)).await
    }

    /// Runs `f` on a blocking thread with a connection to the database: a new one with the
    /// writer's settings for a file, or the caller's own.
    async fn with_connection<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let (source, options) = (Arc::clone(&self.source), self.options.clone());
        let database = self.path().map(Path::to_owned);
        let result = tokio::task::spawn_blocking(move || match &*source {
            // The same file a store would open: a dangling link is created through, as by `open`.
            Source::File(path) => f(&mut Self::open_writer(&lock::canonical(path)?, &options)?),
            Source::Connection { conn, .. } => {
                let mut guard = conn.lock().map_err(|_| {
                    Error::storage("sqlite: using a caller's connection", "the connection mutex is poisoned")
                })?;
                f(&mut guard)
            }
        })
        .await
        .map_err(|e| Error::storage("sqlite: the schema task failed", e))
        .and_then(|result| result);
        result.map_err(|e| name_database(e, database.as_deref()))
    }

    /// Opens the database file with the writer's settings, creating it if it is missing
    /// ([`file::create`]) and refusing it if it is damaged ([`file::check`]).
    fn open_writer(path: &Path, options: &SqliteOptions) -> Result<Connection> {
        if !vellum_core::provider::publish::exists(path)? {
            file::create(path)?;
        }
        file::check(path)?;
        let err = |e: rusqlite::Error| storage_error(Some(path), None, "opening the database", e);
        // Without `SQLITE_OPEN_CREATE`: a file removed since the check is an error, not a new database.
        let flags =
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(err)?;
        conn.busy_timeout(options.busy_timeout).map_err(err)?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0)).map_err(err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::storage(
                format!("sqlite: opening the database {}", path.display()),
                format!("cannot switch to WAL mode (the journal mode is {mode})"),
            ));
        }
        conn.pragma_update(None, "synchronous", "FULL").map_err(err)?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    }

    /// Creates or checks the schema; errors name `database`.
    fn prepare(conn: &mut Connection, options: &SqliteOptions, database: Option<&Path>) -> Result<()> {
        let prepared = if options.migrate { create_schema(conn) } else { schema::check(conn) };
        prepared.map_err(|e| name_database(e, database))
    }

    async fn open_store(&self, app_key: &str) -> Result<SqliteStore> {
        let key: Arc<str> = Arc::from(app_key);
        let options = self.options.clone();
        // The lock is taken first, by the canonical path of the database file, so every name of
        // the file (a symbolic link included) maps to one lock; the store then opens the very
        // file it locked (docs/locking.md#sqlite), and notes its identity, which the writer
        // checks before each unit of work (docs/locking.md#fencing).
        let (lock, database, conn, readers) = match &*self.source {
            Source::File(path) => {
                let database = lock::canonical(path)?;
                let lock = AppLock::acquire(&database, app_key).await?;
                let (writer_path, writer_key) = (database.clone(), Arc::clone(&key));
                let (conn, id) = tokio::task::spawn_blocking(move || {
                    let mut conn = Self::open_writer(&writer_path, &options)?;
                    Self::prepare(&mut conn, &options, Some(&writer_path))?;
                    Ok::<_, Error>((conn, identity(&writer_path, &writer_key)?))
                })
                .await
                .map_err(|e| {
                    let what = format!(
                        "sqlite: opening the store of {app_key:?} in database {}",
                        database.display()
                    );
                    Error::storage(what, e)
                })??;
                let readers = Readers::Pool {
                    path: database.clone(),
                    idle: Mutex::new(Vec::new()),
                    max_idle: self.options.read_connections,
                    busy_timeout: self.options.busy_timeout,
                };
                (lock, Some((database, id)), Arc::new(Mutex::new(conn)), readers)
            }
            Source::Connection { conn, path } => {
                let database = path.as_deref().map(lock::canonical).transpose()?;
                let lock = AppLock::acquire_for_connection(database.as_deref(), conn, app_key).await?;
                let (shared, named, writer_key) = (Arc::clone(conn), database.clone(), Arc::clone(&key));
                let id = tokio::task::spawn_blocking(move || {
                    let mut guard = shared.lock().map_err(|_| {
                        Error::storage(
                            "sqlite: using a caller's connection",
                            "the connection mutex is poisoned",
                        )
                    })?;
                    Self::prepare(&mut guard, &options, named.as_deref())?;
                    named.as_deref().map(|path| identity(path, &writer_key)).transpose()
                })
                .await
                .map_err(|e| Error::storage(format!("sqlite: opening the store of {app_key:?}"), e))??;
                let database = database.zip(id);
                (lock, database, Arc::clone(conn), Readers::Shared(Arc::clone(conn)))
            }
        };
        let release = lock.release_handle();
        let guard =
            Arc::new(writer::Guard { lock, database, app_key: Arc::clone(&key), fenced: Mutex::new(None) });
        let writes = WriteQueue::spawn(SqliteExecutor { app_key: Arc::clone(&key), conn, guard });
        // Every error of the store names the database file (reads and the writer report what
        // they were doing and for which application).
        let database = self.path().map(Path::to_owned);
        let errors: crate::store::ErrorMap = Box::new(move |e| name_database(e, database.as_deref()));
        Ok(crate::SqlStore::with_errors(
            SqliteReads { app_key: key, readers, release: Some(release) },
            writes,
            Some(errors),
        ))
    }
}

impl SqliteProvider {
    async fn open_reader_of(&self, app_key: &str) -> Result<SqliteReader> {
        let readers = match &*self.source {
            Source::File(path) => {
                let database = lock::canonical(path)?;
                let (check_path, busy_timeout) = (database.clone(), self.options.busy_timeout);
                tokio::task::spawn_blocking(move || {
                    let conn = reads::open_reader(&check_path, busy_timeout)
                        .map_err(|e| Error::storage("sqlite: opening a read connection", e))?;
                    schema::check_current(&conn)
                })
                .await
                .map_err(|e| Error::storage(format!("sqlite: opening a reader of {app_key:?}"), e))?
                .map_err(|e| name_database(e, Some(&database)))?;
                Readers::Pool {
                    path: database,
                    idle: Mutex::new(Vec::new()),
                    max_idle: self.options.read_connections,
                    busy_timeout: self.options.busy_timeout,
                }
            }
            Source::Connection { conn, .. } => Readers::Shared(Arc::clone(conn)),
        };
        let database = self.path().map(Path::to_owned);
        let errors: crate::store::ErrorMap = Box::new(move |e| name_database(e, database.as_deref()));
        let reads = SqliteReads { app_key: Arc::from(app_key), readers, release: None };
        Ok(crate::SqlReader::new(reads, Some(errors), None))
    }
}

impl Provider for SqliteProvider {
    type Store = SqliteStore;
    type Reader = SqliteReader;

    /// A reader on read-only connections of its own (WAL: it never waits for the writer). The
    /// database must hold this build's schema; nothing is created.
    async fn open_reader(&self, app_key: &str) -> Result<SqliteReader> {
        let span = observe::open_span(PROVIDER, app_key);
        let result = self.open_reader_of(app_key).instrument(span.clone()).await;
        observe::record(&span, result)
    }

    async fn open(&self, app_key: &str) -> Result<SqliteStore> {
        let span = observe::open_span(PROVIDER, app_key);
        let result = self.open_store(app_key).instrument(span.clone()).await;
        observe::record(&span, result)
    }
}

/// The identity of the database file at `path`, just opened for `app_key`'s store.
fn identity(path: &Path, app_key: &str) -> Result<Option<lock::FileId>> {
    let meta = std::fs::metadata(path).map_err(|e| {
        Error::storage(
            format!(
                "sqlite: reading the metadata of database {} for application {app_key:?}",
                path.display()
            ),
            e,
        )
    })?;
    Ok(lock::FileId::of(&meta))
}

/// What kind of failure an SQLite error is: damaged data (`SQLITE_CORRUPT`, `SQLITE_NOTADB`, or
/// a stored value of the wrong type or range) is [`ErrorKind::Corrupt`]; a busy or locked
/// database [`ErrorKind::Unavailable`] (another connection held its lock past the busy timeout);
/// a database SQLite may not open or write (permissions, a read-only file system)
/// [`ErrorKind::Misconfigured`]; anything else [`ErrorKind::Storage`].
pub(crate) fn kind_of(e: &rusqlite::Error) -> ErrorKind {
    use rusqlite::ErrorCode;
    match e {
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::IntegralValueOutOfRange(..) => ErrorKind::Corrupt,
        _ => match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => ErrorKind::Corrupt,
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => ErrorKind::Unavailable,
            Some(ErrorCode::PermissionDenied | ErrorCode::ReadOnly | ErrorCode::CannotOpen) => {
                ErrorKind::Misconfigured
            }
            _ => ErrorKind::Storage,
        },
    }
}

/// The storage error of an SQLite failure while doing `what`: of kind [`kind_of`], naming the
/// database file (`None`: an in-memory database) and the application, if any. Every SQLite
/// error should be made by this function.
pub(crate) fn storage_error(
    database: Option<&Path>,
    app_key: Option<&str>,
    what: &str,
    e: rusqlite::Error,
) -> Error {
    let app = app_key.map(|key| format!(" for application {key:?}")).unwrap_or_default();
    let file = database.map(|path| format!(" in database {}", path.display())).unwrap_or_default();
    let context = format!("sqlite: {what}{app}{file}");
    Error::storage_kind(kind_of(&e), context, e)
}

/// `e` naming the database file (when it is a storage error that does not name it yet) and, when
/// it is of kind [`ErrorKind::Storage`] with an SQLite error as its source, of that error's
/// [`kind_of`]: for errors made without [`storage_error`].
pub(crate) fn name_database(e: Error, database: Option<&Path>) -> Error {
    let Error::Storage { kind, mut context, source } = e else { return e };
    let kind = match source.downcast_ref::<rusqlite::Error>() {
        Some(sqlite) if kind == ErrorKind::Storage => kind_of(sqlite),
        _ => kind,
    };
    if let Some(database) = database {
        let shown = database.display().to_string();
        if !context.contains(&shown) {
            context = format!("{context} in database {shown}");
        }
    }
    Error::storage_kind(kind, context, source)
}
