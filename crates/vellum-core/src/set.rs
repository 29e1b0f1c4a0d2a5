//! [`DataStoreSet`]: lazily opened, cached stores for several applications (SPEC §5.5).

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::error::{Error, Result};
use crate::repository::{DataStore, Provider};

/// Opens each application's store on first use and hands out the same store afterwards.
///
/// One mutex serialises `get` (including the provider's `open`) and `close`, so an application
/// is never opened twice. Callers must not close stores obtained here; close the set instead.
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
    pub async fn get(&self, app_key: &str) -> Result<Arc<P::Store>> {
        let mut stores = self.stores.lock().await;
        if let Some(store) = stores.get(app_key) {
            return Ok(Arc::clone(store));
        }
        let store = Arc::new(self.provider.open(app_key).await?);
        stores.insert(app_key.to_owned(), Arc::clone(&store));
        Ok(store)
    }

    /// Closes every cached store and empties the set, which stays usable. Every close error is
    /// returned (one as itself, several as [`Error::Multiple`]).
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
