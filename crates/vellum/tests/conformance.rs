//! The conformance suite through the facade: every provider [`vellum::connect`] builds here runs
//! the whole suite as an [`AnyProvider`] with [`vellum::AnyStore`] stores, so the dispatch of every
//! trait method is checked, not only the concrete providers.
//!
//! The SQLite suite needs the `sqlite` feature; `cargo test --workspace` has it, as the CLI
//! depends on this crate with `full` (cargo unifies the features of a workspace build).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[cfg(feature = "memory")]
mod memory {
    use vellum::AnyProvider;
    use vellum_conformance::{Backend, Skip};

    /// One `connect("memory:")` per test; every provider value is a clone of it, sharing its data
    /// (each `connect("memory:")` starts empty).
    struct Memory(AnyProvider);

    impl Backend for Memory {
        type Provider = AnyProvider;

        async fn provider(&self) -> AnyProvider {
            self.0.clone()
        }
    }

    #[allow(clippy::unused_async)]
    async fn backend() -> Result<Memory, Skip> {
        let provider = vellum::connect("memory:").map_err(|e| Skip(format!("connect(\"memory:\"): {e}")))?;
        assert_eq!(provider.kind(), "memory");
        Ok(Memory(provider))
    }

    vellum_conformance::conformance_tests!(backend);
}

/// A temporary directory and a URL into it; every provider value is a new `connect(url)`.
#[cfg(any(feature = "redb", feature = "sqlite"))]
struct ByUrl {
    _dir: tempfile::TempDir,
    url: String,
    kind: &'static str,
}

#[cfg(any(feature = "redb", feature = "sqlite"))]
impl vellum_conformance::Backend for ByUrl {
    type Provider = vellum::AnyProvider;

    async fn provider(&self) -> vellum::AnyProvider {
        let provider = vellum::connect(&self.url).unwrap_or_else(|e| panic!("connect({:?}): {e}", self.url));
        assert_eq!(provider.kind(), self.kind);
        provider
    }
}

/// A fresh temporary directory, with the store URL `url(dir)` naming storage in it.
#[cfg(any(feature = "redb", feature = "sqlite"))]
fn url_backend(
    kind: &'static str,
    url: impl FnOnce(&std::path::Path) -> String,
) -> Result<ByUrl, vellum_conformance::Skip> {
    let dir =
        tempfile::tempdir().map_err(|e| vellum_conformance::Skip(format!("no temporary directory: {e}")))?;
    let url = url(dir.path());
    Ok(ByUrl { _dir: dir, url, kind })
}

#[cfg(feature = "redb")]
mod redb {
    use vellum_conformance::Skip;

    use super::{ByUrl, url_backend};

    #[allow(clippy::unused_async)]
    async fn backend() -> Result<ByUrl, Skip> {
        url_backend("redb", |dir| format!("redb://{}", dir.display()))
    }

    vellum_conformance::conformance_tests!(backend);
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use vellum_conformance::Skip;

    use super::{ByUrl, url_backend};

    #[allow(clippy::unused_async)]
    async fn backend() -> Result<ByUrl, Skip> {
        url_backend("sqlite", |dir| format!("sqlite://{}", dir.join("db.sqlite").display()))
    }

    vellum_conformance::conformance_tests!(backend);
}
