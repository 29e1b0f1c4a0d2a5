//! Store URLs: which provider a URL names, and where its data lives.

use std::path::PathBuf;

use vellum_core::{Error, Result};

/// A parsed store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreUrl {
    /// `memory:` — a new, empty in-memory provider.
    Memory,
    /// `redb://dir` (relative) or `redb:///abs/dir` — one redb file per application in `dir`.
    Redb(PathBuf),
    /// `sqlite://file` (relative) or `sqlite:///abs/file`.
    Sqlite(PathBuf),
    /// `postgres://…` or `postgresql://…`, as libpq and tokio-postgres read it.
    Postgres(String),
    /// `mysql://…` or `mariadb://…`.
    Mysql(String),
}

/// The schemes [`StoreUrl::parse`] accepts, for error messages and `--help`.
pub const SCHEMES: &str = "memory:, redb://DIR, sqlite://FILE, postgres://…, mysql://…";

impl StoreUrl {
    /// Parses a store URL.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] naming the URL and what is wrong with it.
    pub fn parse(url: &str) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidUrl { url: url.to_owned(), reason };
        let Some((scheme, rest)) = url.split_once(':') else {
            return Err(invalid(format!("no scheme; expected one of {SCHEMES}")));
        };
        let path = |rest: &str| -> Result<PathBuf> {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(invalid(format!("no path after {scheme}://")));
            }
            Ok(PathBuf::from(path))
        };
        match scheme.to_ascii_lowercase().as_str() {
            "memory" if rest.trim_start_matches('/').is_empty() => Ok(Self::Memory),
            "memory" => Err(invalid("memory: takes no path".to_owned())),
            "redb" => path(rest).map(Self::Redb),
            "sqlite" => path(rest).map(Self::Sqlite),
            "postgres" | "postgresql" => Ok(Self::Postgres(url.to_owned())),
            "mysql" => Ok(Self::Mysql(url.to_owned())),
            "mariadb" => Ok(Self::Mysql(format!("mysql:{rest}"))),
            other => Err(invalid(format!("unknown scheme {other:?}; expected one of {SCHEMES}"))),
        }
    }

    /// The provider's name as logs and `vellum bench` print it.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Redb(_) => "redb",
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
            Self::Mysql(_) => "mysql",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_map_to_providers() {
        assert_eq!(StoreUrl::parse("memory:").unwrap(), StoreUrl::Memory);
        assert_eq!(StoreUrl::parse("redb://data").unwrap(), StoreUrl::Redb("data".into()));
        assert_eq!(StoreUrl::parse("redb:///tmp/x").unwrap(), StoreUrl::Redb("/tmp/x".into()));
        assert_eq!(StoreUrl::parse("sqlite://a/b.db").unwrap(), StoreUrl::Sqlite("a/b.db".into()));
        let pg = "postgresql://postgres@127.0.0.1/test";
        assert_eq!(StoreUrl::parse(pg).unwrap(), StoreUrl::Postgres(pg.into()));
        assert_eq!(
            StoreUrl::parse("mariadb://root@h/db").unwrap(),
            StoreUrl::Mysql("mysql://root@h/db".into())
        );
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        for (url, says) in [
            ("data", "no scheme"),
            ("ftp://x", "unknown scheme \"ftp\""),
            ("redb://", "no path"),
            ("memory://x", "takes no path"),
        ] {
            let err = StoreUrl::parse(url).unwrap_err().to_string();
            assert!(err.contains(url) && err.contains(says), "{url}: {err}");
        }
    }
}
