//! Which file a path names: the canonical path every name of one file maps to, and a file's
//! identity, to notice it was removed or replaced under an open store. Shared by the providers
//! that lock files (redb, SQLite; docs/locking.md).

use std::path::{Path, PathBuf};

/// How many symbolic links [`canonical`] follows before giving up (Linux's own limit).
pub const MAX_LINKS: usize = 40;

/// The canonical path of the file at `path`, so every name of one file maps to one lock:
/// symbolic links, in the directories or as the file itself, are resolved. A file that does not
/// exist yet is named by its canonical directory and its file name. A dangling symbolic link is
/// followed: the path is that of the file it points to, which is where the file is then created,
/// so the link and its target share one lock.
pub fn canonical(path: &Path) -> std::io::Result<PathBuf> {
    let mut current = path.to_owned();
    for _ in 0..MAX_LINKS {
        match std::fs::canonicalize(&current) {
            Ok(resolved) => return Ok(resolved),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let parent = match current.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        match std::fs::symlink_metadata(&current) {
            // A dangling link: go on with its target.
            Ok(meta) if meta.file_type().is_symlink() => {
                current = parent.join(std::fs::read_link(&current)?);
                continue;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let name =
            current.file_name().ok_or_else(|| std::io::Error::other("the path does not name a file"))?;
        return Ok(std::fs::canonicalize(&parent)?.join(name));
    }
    Err(std::io::Error::other(format!("more than {MAX_LINKS} symbolic links")))
}

/// The (device, inode) of a file: what a path must still name for a lock to guard it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    /// The identity in `meta`; `None` on platforms without inode numbers (checks are skipped).
    #[cfg(unix)]
    #[allow(clippy::unnecessary_wraps)]
    #[must_use]
    pub fn of(meta: &std::fs::Metadata) -> Option<Self> {
        use std::os::unix::fs::MetadataExt as _;
        Some(Self { dev: meta.dev(), ino: meta.ino() })
    }

    /// The identity in `meta`; `None` on platforms without inode numbers (checks are skipped).
    #[cfg(not(unix))]
    #[must_use]
    pub fn of(_meta: &std::fs::Metadata) -> Option<Self> {
        None
    }

    /// Whether `path` still names the file `expected` (one `stat`): `Ok(None)` if it does,
    /// `Ok(Some(what happened))` if it names another file or nothing, `Err` if it cannot be told.
    pub fn differs(expected: Option<Self>, path: &Path) -> std::io::Result<Option<&'static str>> {
        let Some(expected) = expected else { return Ok(None) };
        match std::fs::metadata(path) {
            Ok(meta) if Self::of(&meta) == Some(expected) => Ok(None),
            Ok(_) => Ok(Some("was replaced by another file")),
            Err(e)
                if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) =>
            {
                Ok(Some("was removed (or its directory was)"))
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn every_name_of_a_file_is_one_path_and_replacement_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let root = canonical(dir.path()).unwrap();
        let real = root.join("real.db");
        std::fs::write(&real, b"x").unwrap();
        symlink(&real, root.join("link.db")).unwrap();
        symlink(&root, root.join("dir")).unwrap();
        symlink(root.join("later.db"), root.join("dangling.db")).unwrap();
        assert_eq!(canonical(&root.join("link.db")).unwrap(), real);
        assert_eq!(canonical(&root.join("dir/real.db")).unwrap(), real);
        assert_eq!(canonical(&root.join("dir/new.db")).unwrap(), root.join("new.db"), "not there yet");
        assert_eq!(canonical(&root.join("dangling.db")).unwrap(), root.join("later.db"), "the link's target");

        let id = FileId::of(&std::fs::metadata(&real).unwrap());
        assert_eq!(FileId::differs(id, &real).unwrap(), None);
        std::fs::rename(&real, root.join("moved.db")).unwrap();
        assert_eq!(FileId::differs(id, &real).unwrap(), Some("was removed (or its directory was)"));
        std::fs::write(&real, b"y").unwrap();
        assert_eq!(FileId::differs(id, &real).unwrap(), Some("was replaced by another file"));
    }
}
