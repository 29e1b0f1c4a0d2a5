//! What a provider crate supplies to run the suite, and the runner each generated test calls.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use vellum_core::{BulkStore, DataStore, Provider};

use crate::fixtures::DEFAULT_APP_KEY;

/// A provider's storage under test: a temporary directory, a database schema, or nothing.
///
/// Every call to [`Backend::provider`] returns a *new provider value over the same storage*,
/// so the suite can check durability (data survives a new provider) and exclusivity (a second
/// provider cannot open a key the first holds). For the memory provider, that is a clone that
/// shares the data.
pub trait Backend: Send + Sync + 'static {
    /// The provider under test.
    type Provider: Provider<Store: BulkStore> + 'static;

    /// A new provider value over this backend's storage.
    fn provider(&self) -> impl Future<Output = Self::Provider> + Send;

    /// Whether a second provider value can see data and locks of the first. False only for a
    /// backend whose providers share nothing (none of vellum's).
    fn providers_share_storage(&self) -> bool {
        true
    }

    /// Releases the storage (drops a schema, removes files). Called after each test that passed.
    fn teardown(self) -> impl Future<Output = ()> + Send
    where
        Self: Sized,
    {
        async {}
    }
}

/// Why a backend cannot run here (e.g. no temporary directory can be made); the test prints it
/// and passes. A backend whose server is not configured is not skipped but ignored, with the
/// reason, through the attributes `conformance_tests!` takes.
#[derive(Debug, Clone)]
pub struct Skip(pub String);

/// How long one conformance test may take before it fails (the Go suite uses 10 s; CI is slower).
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A fresh multi-threaded runtime, as each generated test uses.
#[must_use]
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("cannot build a tokio runtime")
}

/// Runs one conformance test: builds the backend, runs `test` under [`TEST_TIMEOUT`], tears the
/// backend down. The generated tests call this; it is public for hand-written ones.
pub fn run<B, M, MF, T, TF>(name: &str, make: M, test: T)
where
    B: Backend,
    M: FnOnce() -> MF,
    MF: Future<Output = Result<B, Skip>>,
    T: FnOnce(Arc<B>) -> TF,
    TF: Future<Output = ()> + Send + 'static,
{
    runtime().block_on(async {
        let backend = match make().await {
            Ok(backend) => Arc::new(backend),
            Err(Skip(reason)) => {
                eprintln!("skipped {name}: {reason}");
                return;
            }
        };
        let task = tokio::spawn(test(Arc::clone(&backend)));
        match tokio::time::timeout(TEST_TIMEOUT, task).await {
            Ok(Ok(())) => {}
            Ok(Err(join)) => std::panic::resume_unwind(join.into_panic()),
            Err(tokio::time::error::Elapsed { .. }) => {
                panic!("{name} did not finish within {TEST_TIMEOUT:?}")
            }
        }
        if let Ok(backend) = Arc::try_unwrap(backend) {
            backend.teardown().await;
        }
    });
}

/// A provider with the default application's store open, as most tests start.
pub struct Harness<B: Backend> {
    /// The provider the store was opened through.
    pub provider: B::Provider,
    /// The store of [`DEFAULT_APP_KEY`], shared so tests can persist from several tasks.
    pub store: Arc<<B::Provider as Provider>::Store>,
}

impl<B: Backend> Harness<B> {
    /// Opens [`DEFAULT_APP_KEY`] on a new provider of `backend`.
    pub async fn open(backend: &B) -> Self {
        let provider = backend.provider().await;
        let store = Arc::new(provider.open(DEFAULT_APP_KEY).await.expect("open the default store"));
        Self { provider, store }
    }

    /// Closes the store (it must close cleanly).
    pub async fn close(self) {
        self.store.close().await.expect("close the default store");
    }
}
