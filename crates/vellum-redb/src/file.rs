//! Opening one application's file: the in-process registry of open files, redb's cross-process
//! file lock, refusing a damaged file (empty, truncated, not redb) instead of starting it anew,
//! creating a missing file race-free, the layout-version and app-key checks, and the mapping of
//! redb failures (errors and panics alike) to [`Error::Storage`] naming the file.

use std::collections::BTreeMap;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redb::{
    Builder, ConcurrencyMode, Database, DatabaseError, ReadOnlyDatabase, ReadTransaction, ReadableDatabase,
    TableError, TableHandle,
};
use vellum_core::provider::files::{FileId, canonical};
use vellum_core::provider::publish;
use vellum_core::{Error, ErrorKind, Result};

use crate::layout::{
    AGGREGATES, COUNTERS, COUNTERS_CHECKSUM, EVENT_IDS, EVENTS, EVENTS_BY_SOURCE, EVENTS_BY_TYPE,
    LAYOUT_VERSION, META, META_APP_KEY, META_LAYOUT_VERSION, NEXT_OFFSET, NEXT_SEQUENCE, OFFSETS, PROCESSES,
    QUEUE, QUEUE_ORDER, QUEUE_TIMEOUTS, SOURCE_HEADS, TYPE_HEADS, file_name,
};
use crate::records::Codec;

/// The canonical paths of the files open in this process (docs/locking.md#redb, within a
/// process: redb's own lock is not guaranteed to exclude a second handle of the same process),
/// each with its flag "the store letting go of it was closed or dropped".
static OPEN_FILES: Mutex<BTreeMap<PathBuf, Arc<AtomicBool>>> = Mutex::new(BTreeMap::new());

/// Notified whenever a path leaves [`OPEN_FILES`].
static RELEASED: Condvar = Condvar::new();

/// A path's entry in [`OPEN_FILES`], removed on drop.
#[derive(Debug)]
pub(crate) struct Registration {
    path: PathBuf,
    releasing: Arc<AtomicBool>,
}

impl Registration {
    /// Registers `path`, or returns `None` if a live store of this process has it open. If the
    /// store that has it open was closed or dropped ([`OpenFile::release_started`]), waits
    /// (blocking: this runs on the new store's own thread) until that store's writer has
    /// drained its queue and closed the file.
    /// The flag says whether it waited.
    fn acquire(path: &Path) -> Option<(Self, bool)> {
        let mut open = OPEN_FILES.lock().unwrap_or_else(PoisonError::into_inner);
        let mut waited = false;
        loop {
            match open.get(path) {
                None => {
                    let releasing = Arc::new(AtomicBool::new(false));
                    open.insert(path.to_owned(), Arc::clone(&releasing));
                    return Some((Self { path: path.to_owned(), releasing }, waited));
                }
                Some(releasing) if releasing.load(Ordering::Acquire) => {
                    open = RELEASED.wait(open).unwrap_or_else(PoisonError::into_inner);
                    waited = true;
                }
                Some(_) => return None,
            }
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        OPEN_FILES.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.path);
        RELEASED.notify_all();
    }
}

/// An open application file. Dropping it closes the database and *then* unregisters the path
/// (fields drop in declaration order), so the path is never free while the file is still open.
pub(crate) struct OpenFile {
    pub(crate) db: Database,
    pub(crate) path: PathBuf,
    /// The application key the file belongs to (for the writer's tracing spans).
    pub(crate) app_key: String,
    /// Write transactions committed since open.
    pub(crate) commits: AtomicU64,
    /// Whether redb checked every page checksum when the file was opened.
    pub(crate) integrity_checked: bool,
    /// The identity of the file redb opened (`None`: not checked on this platform).
    id: Option<FileId>,
    registration: Registration,
}

impl OpenFile {
    /// The codec that seals and checks this file's records.
    pub(crate) fn codec(&self) -> Codec<'_> {
        Codec { file: &self.path, app_key: &self.app_key }
    }

    /// Tells the registry that the store is letting go of the file (it was closed or dropped and
    /// admits no more work): an open of the same file in this process then waits until the
    /// writer has drained the queue and closed the file, instead of returning `Locked`.
    pub(crate) fn release_started(&self) {
        self.registration.releasing.store(true, Ordering::Release);
    }

    /// Whether the lock still guards the application, that is whether the file's path still
    /// names the file redb opened (one `stat`): `Ok(None)` if it does; `Ok(Some(reason))` if
    /// the file, or its directory, was removed or replaced, so that another store may open a
    /// new file under the path; `Err` if the check itself failed. Always `Ok(None)` on
    /// platforms without inode numbers.
    pub(crate) fn lost(&self) -> std::io::Result<Option<String>> {
        Ok(FileId::differs(self.id, &self.path)?
            .map(|what| format!("the file {what} while the store had it open")))
    }

    /// Closes the database, reporting what dropping it would ignore.
    pub(crate) fn close(self) -> Result<()> {
        let Self { db, path, .. } = self;
        db.close().or_storage(&path)
    }
}

impl fmt::Debug for OpenFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenFile").field("path", &self.path).finish_non_exhaustive()
    }
}

/// How to open files.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Options {
    pub(crate) cache_size: usize,
    pub(crate) check_integrity: bool,
    /// Open the file so that readers can open it beside the store (`SHARING`), or lock it whole.
    pub(crate) readers: bool,
}

/// Opens (creating if needed) the file of `app_key` in `dir`, exclusively.
///
/// Only a missing file is created. An existing file is opened as it is, never initialised: one
/// that is empty, shorter than a redb header or without redb's magic number is refused
/// ([`check_header`]) with a [`ErrorKind::Corrupt`] error naming it, and left untouched.
pub(crate) fn open(dir: &Path, app_key: &str, options: Options) -> Result<OpenFile> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::storage(format!("cannot create directory {}", dir.display()), e))?;
    // Every name of the file (symbolic links resolved) is one entry of the registry.
    let named = dir.join(file_name(app_key));
    let path = canonical(&named).map_err(|e| io_error(&named, "cannot resolve the path of", e))?;
    let (registration, waited) =
        Registration::acquire(&path).ok_or_else(|| Error::Locked { app_key: app_key.to_owned() })?;
    let mut builder = Builder::new();
    builder
        .set_cache_size(options.cache_size)
        .set_check_integrity_on_open(options.check_integrity)
        .set_concurrency_mode(if options.readers { SHARING } else { ConcurrencyMode::ExclusiveWriter });
    let db = guarded(&path, || {
        if !publish::exists(&path)? {
            create(&builder, &path, app_key)?;
        }
        check_header(&path)?;
        open_db(&builder, &path, app_key, waited)
    })?;
    // The identity of the file just opened: the writer checks before each unit of work that the
    // path still names it (docs/locking.md#fencing).
    let id =
        FileId::of(&std::fs::metadata(&path).map_err(|e| io_error(&path, "cannot read the metadata of", e))?);
    guarded(&path, || check_or_init(&db, &path, app_key))?;
    Ok(OpenFile {
        db,
        path,
        app_key: app_key.to_owned(),
        commits: AtomicU64::new(0),
        integrity_checked: options.check_integrity,
        id,
        registration,
    })
}

/// How a store shares its file with other processes (unless told to lock it whole): it is the
/// only writer, and readers ([`open_read_only`]) in any process may open the file beside it
/// and follow its commits (docs/locking.md#redb). redb then commits in two phases (two syncs),
/// so that a reader never follows a commit whose pages are not yet written.
const SHARING: ConcurrencyMode = ConcurrencyMode::SingleWriter;

/// Opens the existing file of `app_key` in `dir` for reading only, beside the store that may
/// have it open in this process or another. Refuses a missing file (the application has no store
/// yet), a damaged or foreign one, and a layout older than this build's (the store upgrades it
/// when it opens).
pub(crate) fn open_read_only(
    dir: &Path,
    app_key: &str,
    cache_size: usize,
) -> Result<(PathBuf, ReadOnlyDatabase)> {
    let named = dir.join(file_name(app_key));
    let path = canonical(&named).map_err(|e| io_error(&named, "cannot resolve the path of", e))?;
    if !publish::exists(&path)? {
        return Err(invalid(
            &path,
            ErrorKind::Misconfigured,
            &format!("does not exist: application {app_key:?} has no store in this directory yet"),
        ));
    }
    let db = guarded(&path, || {
        check_header(&path)?;
        let mut builder = Builder::new();
        builder.set_cache_size(cache_size).set_concurrency_mode(SHARING);
        builder.open_read_only(&path).map_err(|e| match e {
            DatabaseError::DatabaseAlreadyOpen => invalid(
                &path,
                ErrorKind::Locked,
                "is held whole by its store (opened with readers off, redb://DIR?readers=false): \
                 no reader can open it until that store closes",
            ),
            e => open_error(e, &path, app_key),
        })
    })?;
    guarded(&path, || {
        let txn = db.begin_read().or_storage(&path)?;
        match check_meta(&txn, &path, app_key)? {
            Some(LAYOUT_VERSION) => Ok(()),
            Some(version) => Err(invalid(
                &path,
                ErrorKind::Misconfigured,
                &format!(
                    "has layout version {version}, older than this vellum-redb's ({LAYOUT_VERSION}):                      open the application's store once, which upgrades it, then read it"
                ),
            )),
            None => Err(invalid(&path, ErrorKind::Corrupt, "has no vellum tables: not a vellum-redb file")),
        }
    })?;
    Ok((path, db))
}

/// How long [`open_db`] keeps trying after a release in this process.
const AFTER_RELEASE: Duration = Duration::from_millis(250);

/// Opens the existing file with redb. If `waited` (a store of this process just closed it), a
/// file redb reports as already open is tried again every 2 ms for up to [`AFTER_RELEASE`]: a
/// process forked meanwhile (say, by `std::process::Command`) shares the closed descriptor
/// until it execs, and redb's file lock with it.
fn open_db(builder: &Builder, path: &Path, app_key: &str, waited: bool) -> Result<Database> {
    let deadline = Instant::now() + AFTER_RELEASE;
    loop {
        match builder.open(path) {
            Err(DatabaseError::DatabaseAlreadyOpen) if waited && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2));
            }
            opened => return opened.map_err(|e| open_error(e, path, app_key)),
        }
    }
}

/// Creates `app_key`'s new file at `path`, which did not exist: redb initialises it and vellum
/// lays it out under a temporary name, and only then does it appear at `path`
/// ([`publish::create_complete`]), so a concurrent opener never finds a half-made file, which it
/// would refuse as damaged.
fn create(builder: &Builder, path: &Path, app_key: &str) -> Result<()> {
    publish::create_complete(path, &[], |temp| {
        let db = builder.create(temp).map_err(|e| open_error(e, path, app_key))?;
        init(&db, path, app_key)?;
        db.close().or_storage(path)
    })
}

/// The length of redb's file header (magic number, god byte, region layout and two 128-byte
/// commit slots): no redb file is shorter.
const REDB_HEADER_LEN: u64 = 320;

/// The magic number every redb file starts with.
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];

/// Refuses an existing file that cannot be a redb file, before redb sees it: empty, shorter than
/// redb's header, or not starting with redb's magic number. Reads the first bytes only; redb
/// checks the rest of the header, and that the file is as long as its header says, when it opens
/// the file.
fn check_header(path: &Path) -> Result<()> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path).map_err(|e| io_error(path, "cannot open", e))?;
    let len = file.metadata().map_err(|e| io_error(path, "cannot read the metadata of", e))?.len();
    if len == 0 {
        return Err(damaged(
            path,
            "is empty (0 bytes): it is not a vellum store, or it was truncated. It is not opened as \
             a new store; restore it from a backup, or remove it to start an empty store",
        ));
    }
    if len < REDB_HEADER_LEN {
        return Err(damaged(
            path,
            &format!(
                "is {len} bytes long, shorter than a redb file header ({REDB_HEADER_LEN} bytes): \
                 it was truncated, or it is not a redb file"
            ),
        ));
    }
    let mut magic = [0; REDB_MAGIC.len()];
    file.read_exact(&mut magic).map_err(|e| io_error(path, "cannot read", e))?;
    if magic != REDB_MAGIC {
        return Err(damaged(
            path,
            "does not start with redb's magic number: it is not a redb file, or its header is damaged",
        ));
    }
    Ok(())
}

/// Maps a failure of redb to open `path`.
fn open_error(e: DatabaseError, path: &Path, app_key: &str) -> Error {
    use std::io::ErrorKind as Io;
    let kind = match &e {
        DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
            return Error::Locked { app_key: app_key.to_owned() };
        }
        // redb reports a file too short for its layout, a bad header or bad pages as `Corrupted`,
        // and a file it cannot read as a redb file as `InvalidData` / `UnexpectedEof`.
        DatabaseError::Storage(redb::StorageError::Corrupted(_)) => ErrorKind::Corrupt,
        DatabaseError::Storage(redb::StorageError::Io(io))
            if matches!(io.kind(), Io::InvalidData | Io::UnexpectedEof) =>
        {
            ErrorKind::Corrupt
        }
        DatabaseError::Storage(redb::StorageError::Io(io)) if io.kind() == Io::PermissionDenied => {
            ErrorKind::Misconfigured
        }
        DatabaseError::UpgradeRequired(_) => ErrorKind::Misconfigured,
        _ => ErrorKind::Storage,
    };
    let context = if kind == ErrorKind::Corrupt {
        format!("redb file {} of application {app_key:?} is damaged: {e}", path.display())
    } else {
        format!("cannot open redb file {} of application {app_key:?}: {e}", path.display())
    };
    Error::storage_kind(kind, context, e)
}

/// A file system error on `path`.
fn io_error(path: &Path, what: &str, e: std::io::Error) -> Error {
    let kind = if e.kind() == std::io::ErrorKind::PermissionDenied {
        ErrorKind::Misconfigured
    } else {
        ErrorKind::Storage
    };
    Error::storage_kind(kind, format!("{what} {}: {e}", path.display()), e)
}

/// A file that is damaged or not a redb file at all.
fn damaged(path: &Path, what: &str) -> Error {
    Error::storage_kind(
        ErrorKind::Corrupt,
        format!("redb file {} {what}", path.display()),
        Invalid(what.to_owned()),
    )
}

/// Checks the layout version and app key of an existing file, or lays out a new one.
fn check_or_init(db: &Database, path: &Path, app_key: &str) -> Result<()> {
    let txn = db.begin_read().or_storage(path)?;
    let Some(version) = check_meta(&txn, path, app_key)? else {
        let foreign = txn.list_tables().or_storage(path)?.next().map(|t| t.name().to_owned());
        if let Some(table) = foreign {
            return Err(invalid(
                path,
                ErrorKind::Misconfigured,
                &format!("is a redb file of something else (it has table {table:?})"),
            ));
        }
        drop(txn);
        return init(db, path, app_key);
    };
    drop(txn);
    if version < LAYOUT_VERSION {
        return crate::migrate::upgrade(db, Codec { file: path, app_key }, version);
    }
    Ok(())
}

/// The layout version of a file laid out for `app_key` (`None`: no meta-data table, a new
/// file), refusing a file of another application, a damaged one, or a newer layout.
fn check_meta(txn: &ReadTransaction, path: &Path, app_key: &str) -> Result<Option<u64>> {
    let meta = match txn.open_table(META) {
        Ok(meta) => meta,
        Err(TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e).or_storage(path),
    };
    let version = meta.get(META_LAYOUT_VERSION).or_storage(path)?.map(|v| v.value().to_vec());
    let version = version
        .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| {
            invalid(path, ErrorKind::Corrupt, "has no valid layout version: not a vellum-redb file")
        })?;
    if version == 0 || version > LAYOUT_VERSION {
        return Err(invalid(
            path,
            if version == 0 { ErrorKind::Corrupt } else { ErrorKind::Misconfigured },
            &format!(
                "has layout version {version}, which this vellum-redb (layout version \
                 {LAYOUT_VERSION}) does not know; open it with the newer vellum that wrote it"
            ),
        ));
    }
    let stored = meta.get(META_APP_KEY).or_storage(path)?.map(|v| v.value().to_vec());
    if stored.as_deref() != Some(app_key.as_bytes()) {
        let (kind, what) = match stored {
            Some(s) => (
                ErrorKind::Misconfigured,
                format!("belongs to application {:?}, not {app_key:?}", String::from_utf8_lossy(&s)),
            ),
            None => (ErrorKind::Corrupt, "has no application key: not a vellum-redb file".to_owned()),
        };
        return Err(invalid(path, kind, &what));
    }
    Ok(Some(version))
}

/// Writes the meta-data and creates every table of a new file.
fn init(db: &Database, path: &Path, app_key: &str) -> Result<()> {
    let txn = db.begin_write().or_storage(path)?;
    {
        let mut meta = txn.open_table(META).or_storage(path)?;
        meta.insert(META_LAYOUT_VERSION, LAYOUT_VERSION.to_be_bytes().as_slice()).or_storage(path)?;
        meta.insert(META_APP_KEY, app_key.as_bytes()).or_storage(path)?;
        let mut counters = txn.open_table(COUNTERS).or_storage(path)?;
        counters.insert(NEXT_OFFSET, 0).or_storage(path)?;
        counters.insert(NEXT_SEQUENCE, 0).or_storage(path)?;
        let sum = Codec { file: path, app_key }.counters_sum(0, 0);
        counters.insert(COUNTERS_CHECKSUM, sum).or_storage(path)?;
        txn.open_table(EVENTS).or_storage(path)?;
        txn.open_table(EVENT_IDS).or_storage(path)?;
        txn.open_table(EVENTS_BY_TYPE).or_storage(path)?;
        txn.open_table(EVENTS_BY_SOURCE).or_storage(path)?;
        txn.open_table(TYPE_HEADS).or_storage(path)?;
        txn.open_table(SOURCE_HEADS).or_storage(path)?;
        txn.open_table(AGGREGATES).or_storage(path)?;
        txn.open_table(PROCESSES).or_storage(path)?;
        txn.open_table(QUEUE).or_storage(path)?;
        txn.open_table(QUEUE_ORDER).or_storage(path)?;
        txn.open_table(QUEUE_TIMEOUTS).or_storage(path)?;
        txn.open_table(OFFSETS).or_storage(path)?;
    }
    txn.commit().or_storage(path)
}

/// A file whose content is not what vellum-redb expects: damaged (`Corrupt`), or another
/// program's or application's file, or a newer layout (`Misconfigured`).
fn invalid(path: &Path, kind: ErrorKind, what: &str) -> Error {
    Error::storage_kind(kind, format!("redb file {} {what}", path.display()), Invalid(what.to_owned()))
}

#[derive(Debug)]
struct Invalid(String);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Invalid {}

/// Maps redb errors to [`Error::Storage`] naming the file.
pub(crate) trait OrStorage<T> {
    /// The value, or a storage error naming `file`.
    fn or_storage(self, file: &Path) -> Result<T>;
}

impl<T, E: Into<redb::Error>> OrStorage<T> for std::result::Result<T, E> {
    fn or_storage(self, file: &Path) -> Result<T> {
        self.map_err(|e| {
            let e: redb::Error = e.into();
            // redb reports a damaged file as `Corrupted`; anything else (I/O, limits) is plain storage.
            let kind =
                if matches!(e, redb::Error::Corrupted(_)) { ErrorKind::Corrupt } else { ErrorKind::Storage };
            Error::storage_kind(kind, format!("redb storage error in file {}", file.display()), e)
        })
    }
}

/// Runs `f`, turning a panic inside redb (which a corrupted file can cause) into a storage error
/// naming the file.
pub(crate) fn guarded<T>(file: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        Err(Error::storage_kind(
            ErrorKind::Corrupt,
            format!("redb failed on file {} (is it corrupted?)", file.display()),
            Invalid(format!("redb panicked: {message}")),
        ))
    })
}
