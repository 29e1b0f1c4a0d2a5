//! Creating a store's new file so that its name only ever holds a complete file.
//!
//! An embedded provider that finds an existing file at a store's path opens it and refuses it
//! if it is empty or damaged (docs/integrity.md), so a new file must never be visible half-made.
//! [`create_complete`] makes it under a unique temporary name beside the path and then
//! hard-links it to the path, which fails if the path exists: a concurrent opener, in this
//! process or another, never sees a half-made file, and of two creators one publishes its file
//! and both use that one. On a file system without hard links the file is renamed into place if
//! the path is still missing, which leaves a window in which two creators can both publish.

use std::ffi::OsString;
use std::io::ErrorKind as IoErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Makes the file at `path`, which did not exist: `make` creates and fills the file it is given
/// (a temporary path beside `path`), which is then published at `path`. Files named like the
/// temporary one plus each of `side_suffixes` (say SQLite's `-wal`) are removed with it.
///
/// Returns `Ok` also when another creator published `path` first: open that one.
pub fn create_complete(
    path: &Path,
    side_suffixes: &[&str],
    make: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    let temp = TempFile::reserve(path, side_suffixes)?;
    make(&temp.path)?;
    match std::fs::hard_link(&temp.path, path) {
        Ok(()) => sync_dir(path),
        // Another creator published its file first: use that one.
        Err(e) if e.kind() == IoErrorKind::AlreadyExists => Ok(()),
        // No hard links here (say, FAT): rename into place, unless the file has appeared meanwhile.
        Err(_) if exists(path)? => Ok(()),
        Err(_) => {
            std::fs::rename(&temp.path, path).map_err(|e| io_error(path, "cannot create", e))?;
            sync_dir(path)
        }
    }
}

/// Whether `path` exists; an error other than "not found" is an error naming it.
pub fn exists(path: &Path) -> Result<bool> {
    match std::fs::metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == IoErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_error(path, "cannot read the metadata of", e)),
    }
}

/// `path` with `suffix` appended to its file name (SQLite's `-wal`, `-shm`, `-journal`).
#[must_use]
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// A file reserved under a unique temporary name beside the path, removed on drop with its side
/// files (once linked or renamed to its real name, removing the temporary name loses nothing).
struct TempFile<'a> {
    path: PathBuf,
    side_suffixes: &'a [&'a str],
}

impl<'a> TempFile<'a> {
    fn reserve(path: &Path, side_suffixes: &'a [&'a str]) -> Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let mut name = OsString::from(".");
            name.push(path.file_name().unwrap_or_default());
            name.push(format!(".new-{}-{n}", std::process::id()));
            let temp = path.with_file_name(name);
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&temp) {
                Ok(_) => return Ok(Self { path: temp, side_suffixes }),
                // Left by a crashed process that had our process ID: take the next name.
                Err(e) if e.kind() == IoErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_error(&temp, "cannot create the temporary file", e)),
            }
        }
    }
}

impl Drop for TempFile<'_> {
    fn drop(&mut self) {
        for suffix in self.side_suffixes {
            let _ = std::fs::remove_file(with_suffix(&self.path, suffix));
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Makes the new directory entry of `path` durable (Unix; elsewhere the file system's own).
fn sync_dir(path: &Path) -> Result<()> {
    #[cfg(unix)]
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error(dir, "cannot sync the directory", e))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn io_error(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::storage(format!("{what} {}", path.display()), e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_made_file_appears_complete_and_leaves_nothing_behind() {
        let dir = std::env::temp_dir().join(format!("vellum-publish-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("store.db");
        let _ = std::fs::remove_file(&path);
        create_complete(&path, &["-wal"], |temp| {
            std::fs::write(with_suffix(temp, "-wal"), b"side").unwrap();
            std::fs::write(temp, b"complete").map_err(|e| Error::storage("write", e))
        })
        .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"complete");
        // A second creator finds the file published and leaves it as it is.
        create_complete(&path, &[], |temp| {
            std::fs::write(temp, b"other").map_err(|e| Error::storage("w", e))
        })
        .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"complete");
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, [std::ffi::OsString::from("store.db")], "temporary and side files are gone");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
