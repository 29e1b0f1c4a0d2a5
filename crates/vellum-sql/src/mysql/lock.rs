//! Exclusivity (docs/locking.md#mysql-and-mariadb): a server-wide named lock per (database, application key).
//!
//! `GET_LOCK(name, 0)` is taken on the store's dedicated connection and held for the store's
//! lifetime; it returns 0 at once when another session holds it, which becomes
//! [`Error::Locked`](vellum_core::Error::Locked). The server releases the lock when that session
//! ends, so a killed process frees its keys (and, through the session's `wait_timeout`, an
//! engine the server cannot hear, docs/failover.md#leases); a store whose connection dies cannot
//! write (the writer uses the same connection) and refuses further writes as `Fenced`.
//!
//! Lock names are server-wide (not per database) and at most 64 characters, so the name is
//! `vellum:` followed by 56 hex digits of a SHA-256 of the database name and the key.

use std::fmt::Write;

use sha2::{Digest, Sha256};

/// The `GET_LOCK` name for `key` of kind `scope` (`"app"`, `"schema"`) in `database`.
#[must_use]
pub fn lock_name(database: &str, scope: &str, key: &str) -> String {
    let mut hash = Sha256::new();
    for part in [database, scope, key] {
        // Length-prefixed, so no two (database, scope, key) triples hash the same input.
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    let digest = hash.finalize();
    let mut name = String::from("vellum:");
    for byte in &digest[..28] {
        let _ = write!(name, "{byte:02x}");
    }
    name
}

#[cfg(test)]
mod tests {
    use super::lock_name;

    #[test]
    fn names_fit_and_differ() {
        let a = lock_name("db", "app", "a");
        assert_eq!(a.len(), 63);
        assert_ne!(a, lock_name("db", "app", "a "));
        assert_ne!(a, lock_name("db2", "app", "a"));
        assert_ne!(lock_name("d", "app", "ba"), lock_name("db", "app", "a"));
        assert_eq!(a, lock_name("db", "app", "a"));
    }
}
