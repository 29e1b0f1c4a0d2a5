//! Exclusive open per application key (docs/locking.md#sqlite): an OS lock on a sidecar lock file.
//!
//! Each (database file, application key) pair has its own lock file in the directory
//! `<database file>.vellum-locks/`, named after the key (hex-encoded when short, else a 128-bit
//! FNV-1a hash of it, so any key makes a valid file name). The database file is named by its
//! canonical path ([`canonical`]: symbolic links resolved), so every name of one file, a symbolic
//! link included, maps to the same lock file. The lock is taken with
//! [`std::fs::File::try_lock`], which never waits: a held lock is reported as `Locked` at once.
//! The OS releases it when the file is closed or the process dies, so a crashed engine never
//! leaves a stale lock behind. Lock files themselves are left in place (removing them would race
//! with a concurrent open).
//!
//! `try_lock` uses `flock` on Unix and `LockFileEx` on Windows, both of which belong to an open
//! file description rather than to the process, so a second open in the same process conflicts
//! too. An in-process registry is kept as well, so that guarantee does not depend on the
//! platform's lock flavour (`fcntl` locks, used on some systems, do not conflict in-process).
//!
//! The registry also knows which locks are being released: a store that was closed or dropped
//! ([`Release::start`]) keeps its lock until its writer has drained its queue, and an open of
//! that key in this process waits for the release instead of failing with `Locked`
//! (docs/close-and-cancellation.md#dropping-a-store). A key held by a live store is `Locked` at
//! once.
//!
//! A lock can be sidestepped while it is held: if its lock file is removed or replaced, another
//! process creates a new one and locks that. [`AppLock::check`] notices (one `stat` of the lock
//! file per unit of work, compared with the file the lock is on), and the writer then refuses
//! every further unit with [`ErrorKind::Fenced`] (docs/locking.md#fencing).

use std::collections::HashMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;
pub(crate) use vellum_core::provider::files::{self, FileId};
use vellum_core::{Error, ErrorKind, Result};

/// Keys at most this long are hex-encoded into the file name; longer ones are hashed.
const MAX_PLAIN_KEY: usize = 96;

/// The locks held by this process, by lock file path (derived from the canonical database path).
static HELD: Mutex<Option<HashMap<PathBuf, Entry>>> = Mutex::new(None);

/// A lock in [`HELD`].
#[derive(Debug)]
struct Entry {
    /// Set once the store holding the lock was closed or dropped ([`Release::start`]).
    releasing: Arc<AtomicBool>,
    /// Closed (its sender dropped) once the lock is released and out of the registry.
    released: watch::Receiver<()>,
}

/// A held lock on one application key of one database file. Dropping it releases the lock.
#[derive(Debug)]
pub(crate) struct AppLock {
    path: PathBuf,
    /// The canonical database path; `None` for an in-memory database.
    database: Option<PathBuf>,
    file: Option<File>,
    /// The identity of the lock file when it was locked (`None`: not checked on this platform).
    id: Option<FileId>,
    releasing: Arc<AtomicBool>,
    /// Dropped last, after the registry entry is gone: wakes the opens waiting for the release.
    _released: watch::Sender<()>,
}

/// A handle that tells the registry a store is letting go of its lock (closed or dropped): an
/// open of the key in this process then waits for the release instead of returning `Locked`.
#[derive(Debug, Clone)]
pub(crate) struct Release(Arc<AtomicBool>);

impl Release {
    /// Marks the lock as being released. Call only once the store admits no more work.
    pub(crate) fn start(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// The canonical path of the database file at `path` (`provider::files::canonical`), so every
/// name of one file maps to the same lock (docs/locking.md#sqlite) and the store opens the file
/// it locked.
pub(crate) fn canonical(path: &Path) -> Result<PathBuf> {
    files::canonical(path).map_err(|e| {
        Error::storage_kind(io_kind(&e), format!("sqlite: resolving the database path {}", path.display()), e)
    })
}

fn io_kind(e: &std::io::Error) -> ErrorKind {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
            ErrorKind::Misconfigured
        }
        _ => ErrorKind::Storage,
    }
}

/// The lock file name of `app_key`: `k<hex of the key>` or `h<hash>` for long keys.
fn file_name(app_key: &str) -> String {
    use std::fmt::Write;
    if app_key.len() <= MAX_PLAIN_KEY {
        app_key.bytes().fold(String::from("k"), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        }) + ".lock"
    } else {
        format!("h{:032x}.lock", vellum_core::provider::hash::fnv1a_128(app_key.as_bytes()))
    }
}

/// The directory holding the lock files of `database`.
fn lock_dir(database: &Path) -> PathBuf {
    let mut name = database.file_name().map(ToOwned::to_owned).unwrap_or_default();
    name.push(".vellum-locks");
    database.with_file_name(name)
}

/// A registry slot claimed for `path`: the lock is not taken yet, but no one else in this
/// process may take it. Dropping it without [`Claim::into_lock`] frees the slot.
struct Claim {
    path: PathBuf,
    releasing: Arc<AtomicBool>,
    released: Option<watch::Sender<()>>,
    /// Whether the claim waited for a store of this process to release the lock.
    waited: bool,
}

impl Claim {
    /// Claims `path` in the registry: `Ok(None)` if a live store holds it. If the store holding
    /// it is letting go (closed or dropped), waits until it has, then claims it.
    async fn take(path: &Path) -> Option<Self> {
        let mut waited = false;
        loop {
            let mut released = {
                let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
                let held = held.get_or_insert_with(HashMap::new);
                match held.get(path) {
                    None => {
                        let (sender, receiver) = watch::channel(());
                        let releasing = Arc::new(AtomicBool::new(false));
                        let entry = Entry { releasing: Arc::clone(&releasing), released: receiver };
                        held.insert(path.to_owned(), entry);
                        let released = Some(sender);
                        return Some(Self { path: path.to_owned(), releasing, released, waited });
                    }
                    Some(entry) if entry.releasing.load(Ordering::Acquire) => entry.released.clone(),
                    Some(_) => return None,
                }
            };
            // Ends (with an error) once the sender is dropped, after the entry was removed.
            while released.changed().await.is_ok() {}
            waited = true;
        }
    }

    fn into_lock(mut self, database: Option<&Path>, file: Option<File>, id: Option<FileId>) -> AppLock {
        let released = self.released.take().unwrap_or_else(|| watch::channel(()).0);
        AppLock {
            path: std::mem::take(&mut self.path),
            database: database.map(Path::to_owned),
            file,
            id,
            releasing: Arc::clone(&self.releasing),
            _released: released,
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        // Handed over to an `AppLock`, which removes the entry itself.
        if self.released.is_some() {
            unregister(&self.path);
        }
    }
}

fn unregister(path: &Path) {
    let mut held = HELD.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(held) = held.as_mut() {
        held.remove(path);
    }
}

impl AppLock {
    /// Takes the lock of `app_key` for a caller's connection: on the file behind it if there is
    /// one, else (an in-memory database, visible to this process only) in this process only.
    pub(crate) async fn acquire_for_connection<T>(
        database: Option<&Path>,
        conn: &Arc<T>,
        app_key: &str,
    ) -> Result<Self> {
        if let Some(database) = database {
            return Self::acquire(&canonical(database)?, app_key).await;
        }
        let path = PathBuf::from(format!("memory-{:p}", Arc::as_ptr(conn))).join(file_name(app_key));
        let claim = Claim::take(&path).await.ok_or_else(|| Error::Locked { app_key: app_key.to_owned() })?;
        Ok(claim.into_lock(None, None, None))
    }

    /// Takes the lock of `app_key` on `database` (its [`canonical`] path), or returns
    /// [`Error::Locked`] at once if another live store, in this process or another, holds it.
    /// If a store of this process that held it was closed or dropped, waits until that store's
    /// writer has drained its queue and let go.
    pub(crate) async fn acquire(database: &Path, app_key: &str) -> Result<Self> {
        let dir = lock_dir(database);
        let path = dir.join(file_name(app_key));
        let io = |what: &str, file: &Path| {
            let context = format!(
                "sqlite: {what} {} for application {app_key:?} of database {}",
                file.display(),
                database.display()
            );
            move |e: std::io::Error| Error::storage_kind(io_kind(&e), context, e)
        };
        std::fs::create_dir_all(&dir).map_err(io("creating the lock directory", &dir))?;
        let locked = || Error::Locked { app_key: app_key.to_owned() };

        let claim = Claim::take(&path).await.ok_or_else(locked)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io("opening the lock file", &path))?;
        let file = match file.try_lock() {
            Ok(()) => file,
            // The lock was just released by a store of this process; a process forked meanwhile
            // (say, by `std::process::Command`) shares the closed descriptor until it execs, and
            // the OS lock with it: try a little longer.
            Err(TryLockError::WouldBlock) if claim.waited => {
                let patient = tokio::task::spawn_blocking(move || lock_patiently(&file).map(|()| file))
                    .await
                    .map_err(|e| io("locking the lock file", &path)(std::io::Error::other(e)))?;
                match patient {
                    Ok(file) => file,
                    Err(TryLockError::WouldBlock) => return Err(locked()),
                    Err(TryLockError::Error(e)) => return Err(io("locking the lock file", &path)(e)),
                }
            }
            Err(TryLockError::WouldBlock) => return Err(locked()),
            Err(TryLockError::Error(e)) => return Err(io("locking the lock file", &path)(e)),
        };
        let id = FileId::of(&file.metadata().map_err(io("reading the metadata of the lock file", &path))?);
        Ok(claim.into_lock(Some(database), Some(file), id))
    }

    /// The handle a store uses to say it is letting go of this lock ([`Release::start`]).
    pub(crate) fn release_handle(&self) -> Release {
        Release(Arc::clone(&self.releasing))
    }

    /// Whether the lock still guards the key, that is whether its lock file is still the file
    /// at its path (one `stat`): `Ok(None)` if it is; `Ok(Some(reason))` if the lock file was
    /// removed or replaced, so that another store may hold a lock on a new file; `Err` if the
    /// check itself failed. Always `Ok(None)` for an in-memory database and on platforms without
    /// inode numbers.
    pub(crate) fn lost(&self) -> std::io::Result<Option<String>> {
        if self.database.is_none() {
            return Ok(None);
        }
        Ok(FileId::differs(self.id, &self.path)?
            .map(|what| format!("its lock file {} {what} while the store held it", self.path.display())))
    }
}

/// The error of a store whose lock no longer guards its application: kind [`ErrorKind::Fenced`],
/// naming the database file, the application and `reason`.
pub(crate) fn fenced(database: &Path, app_key: &str, reason: &str) -> Error {
    Error::storage_kind(
        ErrorKind::Fenced,
        format!(
            "sqlite: the store of application {app_key:?} in database {} is fenced and writes no more: \
             {reason}; another store may hold the application now. Close this store and open it again",
            database.display()
        ),
        reason.to_owned(),
    )
}

/// How long [`lock_patiently`] keeps trying.
const AFTER_RELEASE: Duration = Duration::from_millis(250);

/// Tries to lock `file` for up to [`AFTER_RELEASE`], every 2 ms (blocking).
fn lock_patiently(file: &File) -> std::result::Result<(), TryLockError> {
    let deadline = Instant::now() + AFTER_RELEASE;
    loop {
        match file.try_lock() {
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2));
            }
            other => return other,
        }
    }
}

impl Drop for AppLock {
    fn drop(&mut self) {
        // Close the file (releasing the OS lock) before forgetting the path, so a reopen in this
        // process that passes the registry check never finds the OS lock still taken. Waiting
        // opens wake when `_released` drops, after this.
        drop(self.file.take());
        unregister(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn file_names_are_distinct_and_safe() {
        let keys = ["", "a", "a ", "A", "../x", "应用", &"x".repeat(500), &"y".repeat(500)];
        let names: HashSet<String> = keys.iter().map(|k| file_name(k)).collect();
        assert_eq!(names.len(), keys.len());
        for name in &names {
            assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.'), "{name}");
            assert!(name.len() < 255);
        }
    }
}
