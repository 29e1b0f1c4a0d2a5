//! [`DataStoreSet`]: lazily opened, cached stores for several applications (docs/close-and-cancellation.md#data-store-sets).

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::error::{Error, Result};
use crate::repository::{DataStore, Provider};

/// Opens each application's store on first use and hands out the same store afterwards.
///
/// One mutex serialises `get` (including the provider's `open`) and `close`, so an application
/// is never opened twice. Callers must not close stores obtained here; close the set instead.
///
/// A store that lost its lock ([`DataStore::is_fenced`]) is never handed out again: `get` closes
/// it and opens the application afresh, which is what an engine's recovery loop relies on
/// (docs/failover.md#an-engines-recovery-loop):
///
/// ```
/// use std::time::Duration;
/// use vellum_core::{Batch, DataStoreSet, ErrorKind, PersistResult, Persister, Provider, Result};
///
/// /// Persists `make()`'s batch, retrying what may succeed later.
/// async fn persist_with_retry<P: Provider>(
///     stores: &DataStoreSet<P>,
///     app_key: &str,
///     make: impl Fn() -> Batch,
/// ) -> Result<PersistResult> {
///     let mut pause = Duration::from_millis(10);
///     loop {
///         // A fenced store is dropped here and the application opened again.
///         let outcome = match stores.get(app_key).await {
///             Ok(store) => store.persist(make()).await,
///             Err(e) => Err(e),
///         };
///         match outcome {
///             // Locked: another engine holds the application (we are the standby now).
///             // Unavailable: the server is restarting or unreachable. Fenced: our store lost
///             // its lock; the next `get` reopens it. All may succeed later.
///             Err(e) if e.is_retryable() || e.kind() == ErrorKind::Fenced => {
///                 tokio::time::sleep(pause).await;
///                 pause = (pause * 2).min(Duration::from_secs(1));
///             }
///             // Conflict, duplicate event, invalid input, corrupt data: not a matter of time.
///             other => return other,
///         }
///     }
/// }
/// # fn main() {}
/// ```
pub struct DataStoreSet<P: Provider> {
    provider: P,
    stores: Mutex<HashMap<String, Arc<P::Store>>>,
}

impl<P: Provider> DataStoreSet<P> {
    /// An empty set over `provider`.
    pub fn new(provider: P) -> Self {
        Self { provider, stores: Mutex::new(HashMap::new()) }
    }

    /// The provider stores are opened through.
    pub fn provider(&self) -> &P {
        &self.provider
    }

    /// The store of `app_key`, opening it if needed. Open errors are returned, not cached.
    ///
    /// # Cancel safety
    /// Dropping the future part-way caches nothing new and leaves no lock behind (an `open` cut
    /// short releases what it took, see [`Provider::open`]); a later `get` opens the store again.
    ///
    /// A cached store that is fenced ([`DataStore::is_fenced`]) is closed and forgotten first,
    /// so the application is opened afresh (or the open's error, such as `Locked` while another
    /// engine holds it, is returned and the next `get` tries again).
    pub async fn get(&self, app_key: &str) -> Result<Arc<P::Store>> {
        let mut stores = self.stores.lock().await;
        if let Some(store) = stores.get(app_key) {
            if !store.is_fenced() {
                return Ok(Arc::clone(store));
            }
            if let Some(fenced) = stores.remove(app_key) {
                // Closing a fenced store only stops its writer; holders of other `Arc`s see
                // `Closed` from now on rather than writing through a store without its lock.
                let _ = fenced.close().await;
            }
        }
        let store = Arc::new(self.provider.open(app_key).await?);
        stores.insert(app_key.to_owned(), Arc::clone(&store));
        Ok(store)
    }

    /// Closes every cached store and empties the set, which stays usable. Every close error is
    /// returned (one as itself, several as [`Error::Multiple`]).
    ///
    /// # Cancel safety
    /// Dropped while waiting for the set's mutex, it does nothing. Dropped later, the set is empty
    /// anyway: the store being closed finishes closing on its own ([`DataStore::close`]), those
    /// not reached yet are dropped unclosed (which releases their locks once no other `Arc` holds
    /// them), and the close errors collected so far are lost.
    pub async fn close(&self) -> Result<()> {
        let mut stores = self.stores.lock().await;
        let mut errors = Vec::new();
        for (_, store) in stores.drain() {
            if let Err(e) = store.close().await {
                errors.push(e);
            }
        }
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(Error::Multiple(errors)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::{
        AggregateMetaData, AggregateRepository, Batch, EventCursor, EventRepository, OffsetRepository,
        PersistResult, Persister, ProcessInstance, ProcessRepository, QueueMessage, QueueRepository,
    };

    /// A provider that counts opens and refuses the key "<locked>".
    #[derive(Default)]
    struct Counting {
        opens: AtomicUsize,
        closes: Arc<AtomicUsize>,
    }

    struct Store(String, Arc<AtomicUsize>, Arc<std::sync::atomic::AtomicBool>);

    impl AggregateRepository for Store {
        async fn load_aggregate_meta_data(&self, hk: &str, id: &str) -> Result<AggregateMetaData> {
            Ok(AggregateMetaData::new(hk, id))
        }
    }
    impl ProcessRepository for Store {
        async fn load_process_instance(&self, hk: &str, id: &str) -> Result<ProcessInstance> {
            Ok(ProcessInstance::new(hk, id))
        }
    }
    impl OffsetRepository for Store {
        async fn load_offset(&self, _: &str) -> Result<u64> {
            Ok(0)
        }
    }
    impl QueueRepository for Store {
        async fn load_queue_messages(&self, _: usize) -> Result<Vec<QueueMessage>> {
            Ok(Vec::new())
        }
    }
    impl EventRepository for Store {
        async fn next_event_offset(&self) -> Result<u64> {
            Ok(0)
        }
        async fn load_all_events(&self, _: u64) -> Result<EventCursor> {
            Err(Error::Closed)
        }
        async fn load_events_by_type(&self, _: &[&str], _: u64) -> Result<EventCursor> {
            Err(Error::Closed)
        }
        async fn load_events_by_source(&self, _: &str, _: &str) -> Result<EventCursor> {
            Err(Error::Closed)
        }
    }
    impl Persister for Store {
        async fn persist(&self, _: Batch) -> Result<PersistResult> {
            Ok(PersistResult::default())
        }
    }
    impl DataStore for Store {
        fn app_key(&self) -> &str {
            &self.0
        }
        async fn close(&self) -> Result<()> {
            self.1.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn is_fenced(&self) -> bool {
            self.2.load(Ordering::SeqCst)
        }
    }

    /// Readers play no part in a set.
    struct NoReader;
    impl EventRepository for NoReader {
        async fn next_event_offset(&self) -> Result<u64> {
            Err(Error::Closed)
        }
        async fn load_all_events(&self, _: u64) -> Result<EventCursor> {
            Err(Error::Closed)
        }
        async fn load_events_by_type(&self, _: &[&str], _: u64) -> Result<EventCursor> {
            Err(Error::Closed)
        }
        async fn load_events_by_source(&self, _: &str, _: &str) -> Result<EventCursor> {
            Err(Error::Closed)
        }
    }
    impl crate::EventReader for NoReader {
        async fn close(&self) -> Result<()> {
            Err(Error::Closed)
        }
    }

    impl Provider for Counting {
        type Store = Store;
        type Reader = NoReader;
        async fn open_reader(&self, _: &str) -> Result<NoReader> {
            Ok(NoReader)
        }
        async fn open(&self, app_key: &str) -> Result<Store> {
            self.opens.fetch_add(1, Ordering::SeqCst);
            if app_key == "<locked>" {
                return Err(Error::Locked { app_key: app_key.into() });
            }
            Ok(Store(app_key.into(), Arc::clone(&self.closes), Arc::default()))
        }
    }

    /// docs/close-and-cancellation.md#data-store-sets.
    #[tokio::test]
    async fn opens_once_caches_and_does_not_cache_errors() {
        let set = DataStoreSet::new(Counting::default());
        let a = set.get("<a>").await.unwrap();
        let again = set.get("<a>").await.unwrap();
        assert!(Arc::ptr_eq(&a, &again));
        assert_eq!(set.provider().opens.load(Ordering::SeqCst), 1);

        assert!(matches!(set.get("<locked>").await, Err(Error::Locked { .. })));
        assert!(matches!(set.get("<locked>").await, Err(Error::Locked { .. })));
        assert_eq!(set.provider().opens.load(Ordering::SeqCst), 3, "errors are not cached");

        set.get("<b>").await.unwrap();
        set.close().await.unwrap();
        assert_eq!(set.provider().closes.load(Ordering::SeqCst), 2);
        let reopened = set.get("<a>").await.unwrap();
        assert!(!Arc::ptr_eq(&a, &reopened), "the set is usable again after close");
    }

    /// docs/failover.md#an-engines-recovery-loop: a fenced store is closed and replaced.
    #[tokio::test]
    async fn a_fenced_store_is_closed_and_opened_afresh() {
        let set = DataStoreSet::new(Counting::default());
        let first = set.get("<a>").await.unwrap();
        assert!(Arc::ptr_eq(&first, &set.get("<a>").await.unwrap()), "healthy: cached");
        first.2.store(true, Ordering::SeqCst);
        let second = set.get("<a>").await.unwrap();
        assert!(!Arc::ptr_eq(&first, &second), "fenced: opened afresh");
        assert_eq!(set.provider().opens.load(Ordering::SeqCst), 2);
        assert_eq!(set.provider().closes.load(Ordering::SeqCst), 1, "the fenced store was closed");
        assert!(Arc::ptr_eq(&second, &set.get("<a>").await.unwrap()));
    }
}
