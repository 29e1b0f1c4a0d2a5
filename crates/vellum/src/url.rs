//! Store URLs: which provider a URL names, where its data lives, and (for redb) its options.

use std::path::PathBuf;

use vellum_core::{Error, Result};

/// A parsed store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreUrl {
    /// `memory:` — a new, empty in-memory provider.
    Memory,
    /// `redb://dir` (relative) or `redb:///abs/dir`, with optional parameters
    /// (`?integrity_check=true&cache_mb=64`) — one redb file per application in `dir`.
    Redb {
        /// The directory of the files.
        dir: PathBuf,
        /// The URL's parameters.
        params: RedbParams,
    },
    /// `sqlite://file` (relative) or `sqlite:///abs/file`; it takes no parameters.
    Sqlite(PathBuf),
    /// `postgres://…` or `postgresql://…`, as libpq and tokio-postgres read it.
    Postgres(String),
    /// `mysql://…` or `mariadb://…`.
    Mysql(String),
}

/// The parameters of a `redb://` URL (`redb://DIR?integrity_check=true&cache_mb=64`), each at
/// most once; any other parameter, or a value that is not valid, is an error naming it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedbParams {
    /// `integrity_check=true|false` (default `false`): redb verifies every page checksum of a
    /// file when it opens it, at a cost proportional to the file's size (see
    /// `RedbProvider::with_integrity_check`).
    pub integrity_check: bool,
    /// `cache_mb=N`: each open file's page cache, in MiB (default: `DEFAULT_CACHE_SIZE`,
    /// 256 MiB); `None` when the URL does not set it.
    pub cache_mb: Option<usize>,
    /// `readers=true|false` (default `true`): whether readers (`vellum tail`, another process's
    /// `open_reader`) can open a file beside its store; `false` locks the file whole and
    /// commits with one sync instead of two (see `RedbProvider::with_readers`). `None` when the
    /// URL does not set it.
    pub readers: Option<bool>,
}

/// The parameters a `redb://` URL takes, for error messages.
const REDB_PARAMS: &str = "integrity_check=true|false, cache_mb=N, readers=true|false";

/// The schemes [`StoreUrl::parse`] accepts, for error messages and `--help`.
pub const SCHEMES: &str = "memory:, redb://DIR, sqlite://FILE, postgres://…, mysql://…";

impl StoreUrl {
    /// Parses a store URL.
    ///
    /// # Errors
    /// [`Error::InvalidUrl`] (kind [`Misconfigured`](crate::ErrorKind::Misconfigured)) naming the
    /// URL and what is wrong with it: the scheme, the path, or a parameter (unknown, repeated, or
    /// with a bad value).
    pub fn parse(url: &str) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidUrl { url: url.to_owned(), reason };
        let Some((scheme, rest)) = url.split_once(':') else {
            return Err(invalid(format!("no scheme; expected one of {SCHEMES}")));
        };
        let scheme = scheme.to_ascii_lowercase();
        // The path, and the parameters after `?` (file-based schemes only).
        let path = || -> Result<(PathBuf, Option<&str>)> {
            let (path, query) = match rest.split_once('?') {
                Some((path, query)) => (path, Some(query)),
                None => (rest, None),
            };
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(invalid(format!("no path after {scheme}://")));
            }
            Ok((PathBuf::from(path), query))
        };
        match scheme.as_str() {
            "memory" if rest.trim_start_matches('/').is_empty() => Ok(Self::Memory),
            "memory" => Err(invalid("memory: takes no path".to_owned())),
            "redb" => {
                let (dir, query) = path()?;
                let params = RedbParams::parse(query.unwrap_or("")).map_err(invalid)?;
                Ok(Self::Redb { dir, params })
            }
            "sqlite" => {
                let (file, query) = path()?;
                match query.and_then(|query| params(query).next()) {
                    None => Ok(Self::Sqlite(file)),
                    Some((name, _)) => {
                        Err(invalid(format!("unknown parameter {name:?}: sqlite:// takes no parameters")))
                    }
                }
            }
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
            Self::Redb { .. } => "redb",
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
            Self::Mysql(_) => "mysql",
        }
    }
}

/// The `name=value` pairs of a query string (`value` is `None` without `=`); empty pairs (`a=1&&`)
/// are skipped.
fn params(query: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    query.split('&').filter(|pair| !pair.is_empty()).map(|pair| match pair.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (pair, None),
    })
}

/// A `true|false` parameter's value.
fn boolean(name: &str, value: &str) -> Result<bool, String> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!("parameter {name:?} must be true or false, not {other:?}")),
    }
}

impl RedbParams {
    /// Parses a `redb://` query string; the error is the reason, naming the parameter.
    fn parse(query: &str) -> Result<Self, String> {
        let mut parsed = Self::default();
        let mut seen: Vec<&str> = Vec::new();
        for (name, value) in params(query) {
            if seen.contains(&name) {
                return Err(format!("parameter {name:?} is given more than once"));
            }
            seen.push(name);
            let value = || value.ok_or_else(|| format!("parameter {name:?} has no value ({name}=...)"));
            match name {
                "integrity_check" => parsed.integrity_check = boolean(name, value()?)?,
                "readers" => parsed.readers = Some(boolean(name, value()?)?),
                "cache_mb" => {
                    let value = value()?;
                    let mb = value
                        .parse::<usize>()
                        .ok()
                        .filter(|mb| mb.checked_mul(1024 * 1024).is_some())
                        .ok_or_else(|| {
                        format!(
                            "parameter \"cache_mb\" must be a whole number of MiB (such as 64), \
                                 not {value:?}"
                        )
                    })?;
                    parsed.cache_mb = Some(mb);
                }
                other => {
                    return Err(format!("unknown parameter {other:?}; redb:// takes {REDB_PARAMS}"));
                }
            }
        }
        Ok(parsed)
    }

    /// The page-cache size `cache_mb` asks for, in bytes.
    #[must_use]
    pub fn cache_size(&self) -> Option<usize> {
        self.cache_mb.map(|mb| mb.saturating_mul(1024 * 1024))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_map_to_providers() {
        assert_eq!(StoreUrl::parse("memory:").unwrap(), StoreUrl::Memory);
        let redb = |dir: &str| StoreUrl::Redb { dir: dir.into(), params: RedbParams::default() };
        assert_eq!(StoreUrl::parse("redb://data").unwrap(), redb("data"));
        assert_eq!(StoreUrl::parse("redb:///tmp/x").unwrap(), redb("/tmp/x"));
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
            ("redb://?cache_mb=1", "no path"),
        ] {
            let err = StoreUrl::parse(url).unwrap_err().to_string();
            assert!(err.contains(url) && err.contains(says), "{url}: {err}");
        }
    }

    #[test]
    fn redb_parameters() {
        let parse = |url: &str| match StoreUrl::parse(url).unwrap() {
            StoreUrl::Redb { dir, params } => (dir, params),
            other => panic!("{url}: {other:?}"),
        };
        let (dir, params) = parse("redb://data?integrity_check=true&cache_mb=64");
        assert_eq!(dir, PathBuf::from("data"));
        assert!(params.integrity_check);
        assert_eq!(params.cache_mb, Some(64));
        assert_eq!(params.cache_size(), Some(64 * 1024 * 1024));

        let (dir, params) = parse("redb:///abs/dir?cache_mb=1");
        assert_eq!(dir, PathBuf::from("/abs/dir"));
        assert_eq!(params, RedbParams { integrity_check: false, cache_mb: Some(1), readers: None });
        assert_eq!(parse("redb://d?readers=false").1.readers, Some(false));
        assert_eq!(parse("redb://d?integrity_check=false").1, RedbParams::default());
        // An empty query, or empty pairs, set nothing.
        assert_eq!(parse("redb://d?").1, RedbParams::default());
        assert!(parse("redb://d?&integrity_check=true&").1.integrity_check);
        assert_eq!(parse("redb://d").1.cache_size(), None);
        assert_eq!(StoreUrl::parse("sqlite://a.db?").unwrap(), StoreUrl::Sqlite("a.db".into()));
    }

    #[test]
    fn bad_parameters_are_misconfigured_and_named() {
        for (url, says) in [
            ("redb://d?integrity=true", "unknown parameter \"integrity\"; redb:// takes integrity_check"),
            ("redb://d?cache_mb=64&verify", "unknown parameter \"verify\""),
            ("redb://d?integrity_check=yes", "\"integrity_check\" must be true or false, not \"yes\""),
            ("redb://d?integrity_check=TRUE", "\"integrity_check\" must be true or false"),
            ("redb://d?integrity_check", "parameter \"integrity_check\" has no value"),
            ("redb://d?integrity_check=", "must be true or false, not \"\""),
            (
                "redb://d?cache_mb=lots",
                "\"cache_mb\" must be a whole number of MiB (such as 64), not \"lots\"",
            ),
            ("redb://d?cache_mb=-1", "\"cache_mb\" must be a whole number"),
            ("redb://d?cache_mb=1.5", "\"cache_mb\" must be a whole number"),
            ("redb://d?cache_mb=99999999999999999999", "\"cache_mb\" must be a whole number"),
            ("redb://d?cache_mb=1&cache_mb=2", "parameter \"cache_mb\" is given more than once"),
            ("sqlite://a.db?mode=ro", "unknown parameter \"mode\": sqlite:// takes no parameters"),
        ] {
            let err = StoreUrl::parse(url).unwrap_err();
            assert_eq!(err.kind(), vellum_core::ErrorKind::Misconfigured, "{url}");
            let text = err.to_string();
            assert!(text.contains(url) && text.contains(says), "{url}: {text}");
        }
    }

    /// `connect` hands a redb URL's parameters to the provider, and refuses a bad one before it
    /// creates anything.
    #[cfg(feature = "redb")]
    #[test]
    fn connect_applies_redb_parameters() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let url = format!("redb://{}?integrity_check=true&cache_mb=64", dir.display());
        let crate::AnyProvider::Redb(provider) = crate::connect(&url).unwrap() else { panic!("not redb") };
        assert!(provider.integrity_check());
        assert_eq!(provider.cache_size(), 64 * 1024 * 1024);
        assert_eq!(provider.dir(), dir);
        let crate::AnyProvider::Redb(plain) = crate::connect(&format!("redb://{}", dir.display())).unwrap()
        else {
            panic!("not redb")
        };
        assert!(!plain.integrity_check());
        assert_eq!(plain.cache_size(), vellum_redb::DEFAULT_CACHE_SIZE);

        let other = tmp.path().join("other");
        let err = crate::connect(&format!("redb://{}?cache=64", other.display())).unwrap_err();
        assert_eq!(err.kind(), vellum_core::ErrorKind::Misconfigured);
        assert!(err.to_string().contains("unknown parameter \"cache\""), "{err}");
        assert!(!other.exists(), "a refused URL created its directory");
    }
}
