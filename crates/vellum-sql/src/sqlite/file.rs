//! The database file itself, before SQLite opens it: refusing a file that is damaged or not an
//! SQLite database (SQLite would start a new database in an empty file, and open some damaged
//! ones read-only or as if nothing were wrong), and creating a missing one race-free.

use std::io::Read as _;
use std::path::Path;

use rusqlite::Connection;
use vellum_core::provider::publish;
use vellum_core::{Error, ErrorKind, Result};

/// The length of SQLite's database header.
const HEADER_LEN: usize = 100;

/// The first 16 bytes of every SQLite database file.
const MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Refuses an existing database file that cannot be a sound SQLite database, reading only its
/// 100-byte header and its length (see <https://www.sqlite.org/fileformat.html>): an empty
/// file, one shorter than a header or a page, a wrong magic string, a page size, file format
/// version, reserved space or payload fraction SQLite never writes, or, while no connection has
/// the file open, a length that is not a whole number of pages or is shorter than the header
/// says. The error is [`ErrorKind::Corrupt`] naming the file; the file is not touched.
///
/// It cannot see damage past the header (that is SQLite's `SQLITE_CORRUPT` when a read meets
/// it, which is [`ErrorKind::Corrupt`] too); `PRAGMA quick_check` would, at the cost of reading
/// the whole file at every open.
pub(super) fn check(path: &Path) -> Result<()> {
    let mut file = std::fs::File::open(path).map_err(|e| io_error(path, "opening", e))?;
    let len = file.metadata().map_err(|e| io_error(path, "reading the metadata of", e))?.len();
    if len == 0 {
        return Err(damaged(
            path,
            "is empty (0 bytes): it is not a vellum database, or it was truncated. It is not opened \
             as a new database; restore it from a backup, or remove it to start an empty one",
        ));
    }
    if len < HEADER_LEN as u64 {
        return Err(damaged(
            path,
            &format!(
                "is {len} bytes long, shorter than an SQLite header ({HEADER_LEN} bytes): it was \
                 truncated, or it is not an SQLite database"
            ),
        ));
    }
    let mut header = [0; HEADER_LEN];
    file.read_exact(&mut header).map_err(|e| io_error(path, "reading", e))?;
    if &header[..16] != MAGIC {
        return Err(damaged(
            path,
            "does not start with \"SQLite format 3\": it is not an SQLite database, or its header \
             is damaged",
        ));
    }
    let bad = |what: String| Err(damaged(path, &format!("has a damaged header: {what}")));
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65536,
        n => u64::from(n),
    };
    if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
        return bad(format!("the page size is {page_size}, not a power of two from 512 to 65536"));
    }
    let (write_version, read_version) = (header[18], header[19]);
    if !matches!(write_version, 1 | 2) || !matches!(read_version, 1 | 2) {
        // SQLite opens a file whose write version it does not know read-only ("attempt to write
        // a readonly database" at the first write) and one whose read version it does not know
        // not at all.
        return bad(format!(
            "the file format versions are {write_version} (write) and {read_version} (read); \
             SQLite writes 1 and 2 only"
        ));
    }
    if page_size - u64::from(header[20]) < 480 {
        return bad(format!("{} reserved bytes per page leave fewer than 480 usable", header[20]));
    }
    if header[21..24] != [64, 32, 32] {
        return bad(format!(
            "the payload fractions are {}, {}, {}; SQLite writes 64, 32, 32",
            header[21], header[22], header[23]
        ));
    }
    if len < page_size {
        return Err(damaged(
            path,
            &format!("is {len} bytes long, shorter than one page ({page_size} bytes): it was truncated"),
        ));
    }
    // While a connection has the file open (a `-wal` file, or a rollback journal, is there) it
    // may be checkpointing, which writes the first page (and its page count) before it extends
    // the file: the length is only compared with the header while no connection is there. Else
    // SQLite makes the same comparison under its locks, as `SQLITE_CORRUPT` (Corrupt) at the
    // first read.
    if publish::with_suffix(path, "-wal").exists() || publish::with_suffix(path, "-journal").exists() {
        return Ok(());
    }
    if len % page_size != 0 {
        return Err(damaged(
            path,
            &format!("is {len} bytes long, not a whole number of {page_size}-byte pages: it was truncated"),
        ));
    }
    let word = |at: usize| u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
    let (pages, change_counter, valid_for) = (word(28), word(24), word(92));
    // The page count is valid when it is not 0 and the change counter matches "version valid for".
    if pages != 0 && change_counter == valid_for && len < u64::from(pages) * page_size {
        return Err(damaged(
            path,
            &format!(
                "is {len} bytes long, but its header says {pages} pages of {page_size} bytes: it \
                 was truncated"
            ),
        ));
    }
    Ok(())
}

/// Creates the new database file at `path`, which did not exist: SQLite creates it (in WAL
/// mode) under a temporary name, and only then does it appear at `path`
/// ([`publish::create_complete`]), so a concurrent opener (of any application of the file, in
/// this process or another) never finds an empty file, which it would refuse as damaged.
pub(super) fn create(path: &Path) -> Result<()> {
    publish::create_complete(path, &["-wal", "-shm", "-journal"], |temp| {
        let sqlite = |e: rusqlite::Error| {
            super::storage_error(Some(path), None, "creating the database (under a temporary name)", e)
        };
        let conn = Connection::open(temp).map_err(sqlite)?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "wal", |r| r.get(0)).map_err(sqlite)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::storage(
                format!("sqlite: creating the database {}", path.display()),
                format!("cannot switch to WAL mode (the journal mode is {mode})"),
            ));
        }
        conn.close().map_err(|(_, e)| sqlite(e))
    })
}

/// A file system error on `path`.
fn io_error(path: &Path, what: &str, e: std::io::Error) -> Error {
    let kind = if e.kind() == std::io::ErrorKind::PermissionDenied {
        ErrorKind::Misconfigured
    } else {
        ErrorKind::Storage
    };
    Error::storage_kind(kind, format!("sqlite: {what} {}", path.display()), e)
}

/// A database file that is damaged or not an SQLite database.
fn damaged(path: &Path, what: &str) -> Error {
    Error::storage_kind(
        ErrorKind::Corrupt,
        format!("sqlite: the database file {} {what}", path.display()),
        Damaged(what.to_owned()),
    )
}

/// What is wrong with a damaged file (the source of its error).
#[derive(Debug)]
struct Damaged(String);

impl std::fmt::Display for Damaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Damaged {}
