//! The in-memory vellum provider.
//!
//! Fast and not durable: for tests, and for engines that need no durability. Data lives as long
//! as the [`MemoryProvider`] (and its clones, which share it), survives closing and reopening a
//! store, and is indexed so that by-type, by-source and queue-head reads never scan everything.
//!
//! ```
//! use vellum_core::{Batch, DataStore, EventRepository, Operation, Persister, Provider};
//! use vellum_memory::MemoryProvider;
//!
//! # tokio_test_block_on(async {
//! let provider = MemoryProvider::new();
//! let store = provider.open("billing").await?;
//! let batch = Batch::from(vec![Operation::SaveOffset {
//!     application_key: "orders".into(),
//!     current_offset: 0,
//!     next_offset: 7,
//! }]);
//! store.persist(batch).await?;
//! assert_eq!(store.next_event_offset().await?, 0);
//! store.close().await?;
//! # Ok::<(), vellum_core::Error>(())
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     let waker = std::task::Waker::noop();
//! #     let mut cx = std::task::Context::from_waker(&waker);
//! #     let mut f = std::pin::pin!(f);
//! #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
//! # }
//! ```

mod bulk;
mod database;
mod keyed;
mod log;
mod queue;
mod reader;
mod store;
mod verify;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use parking_lot::{Mutex, RwLock};
use vellum_core::{Error, Provider, Result};

use database::Database;
pub use reader::MemoryReader;
pub use store::MemoryStore;

/// One application's database and whether a store holds it open.
#[derive(Debug, Default)]
struct AppDb {
    open: AtomicBool,
    data: RwLock<Database>,
    /// Bumped after each committed batch and when a store closes: the wake-up of the followers
    /// of every store and reader of the application.
    commits: tokio::sync::watch::Sender<u64>,
}

impl AppDb {
    fn committed(&self) {
        self.commits.send_modify(|n| *n += 1);
    }
}

/// A provider whose stores live in memory. Clones share the same data and locks.
#[derive(Debug, Clone, Default)]
pub struct MemoryProvider {
    apps: Arc<Mutex<HashMap<String, Arc<AppDb>>>>,
}

impl MemoryProvider {
    /// An empty provider.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn open_sync(&self, app_key: &str) -> Result<MemoryStore> {
        let db = Arc::clone(self.apps.lock().entry(app_key.to_owned()).or_default());
        if db.open.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return Err(Error::Locked { app_key: app_key.to_owned() });
        }
        Ok(MemoryStore::new(app_key.to_owned(), db))
    }
}

impl Provider for MemoryProvider {
    type Store = MemoryStore;
    type Reader = MemoryReader;

    /// A reader of the application's log in this provider (and its clones); its followers wake
    /// on every commit. An application never opened reads as empty.
    async fn open_reader(&self, app_key: &str) -> Result<MemoryReader> {
        let db = Arc::clone(self.apps.lock().entry(app_key.to_owned()).or_default());
        Ok(MemoryReader::new(app_key.to_owned(), db))
    }

    async fn open(&self, app_key: &str) -> Result<MemoryStore> {
        let span = vellum_core::provider::observe::open_span("memory", app_key);
        let _entered = span.enter();
        vellum_core::provider::observe::record(&span, self.open_sync(app_key))
    }
}

#[cfg(test)]
mod conformance {
    use vellum_conformance::{Backend, Skip};

    use super::MemoryProvider;

    /// Every provider value of one test shares one data set, as clones of one provider do.
    struct Memory(MemoryProvider);

    impl Backend for Memory {
        type Provider = MemoryProvider;

        async fn provider(&self) -> MemoryProvider {
            self.0.clone()
        }
    }

    #[allow(clippy::unused_async)]
    async fn backend() -> Result<Memory, Skip> {
        Ok(Memory(MemoryProvider::new()))
    }

    vellum_conformance::conformance_tests!(backend);
}
