//! The store's executor: runs each unit of work of the commit engine
//! ([`vellum_core::commit`]) in one durable redb write transaction, on the store's own thread.
//!
//! A unit (a group of batches or an import) is planned against the transaction's tables and the
//! plan is applied to them; the transaction commits if the plan writes anything. A storage
//! error or a redb panic aborts the transaction, and the engine retries a group batch by batch.
//!
//! Before each unit the executor checks that the store's lock still guards its application:
//! that the file's path still names the file the store has open (one `stat`). If the file or
//! its directory was removed or replaced, another store could open a new file under the path,
//! so this store is fenced: that unit and every later one fail with [`ErrorKind::Fenced`] and
//! nothing is written again (docs/locking.md#fencing).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use vellum_core::provider::{Executor, Work};
use vellum_core::{Error, ErrorKind, PersistResult, Result};

use crate::PROVIDER;
use crate::file::{OpenFile, OrStorage, guarded};
use crate::tables::WriteTables;

/// Runs a store's units of work; owns the store's handle on its file until released.
pub(crate) struct RedbExecutor {
    pub(crate) file: Arc<OpenFile>,
    /// Why the store is fenced, once it is: it never writes again.
    pub(crate) fenced: Option<String>,
}

impl RedbExecutor {
    /// `Ok` while the store's lock guards its application; otherwise an error of kind
    /// [`ErrorKind::Fenced`] naming the file, the application and the reason, from then on for
    /// good; or a storage error if the check itself failed (nothing is written).
    fn check(&mut self) -> Result<()> {
        if self.fenced.is_none() {
            self.fenced = self.file.lost().map_err(|e| {
                Error::storage(
                    format!(
                        "cannot check that redb file {} of application {:?} is still the store's",
                        self.file.path.display(),
                        self.file.app_key
                    ),
                    e,
                )
            })?;
        }
        match &self.fenced {
            None => Ok(()),
            Some(reason) => Err(Error::storage_kind(
                ErrorKind::Fenced,
                format!(
                    "the store of application {:?} in redb file {} is fenced and writes no more: {reason}; \
                     another store may hold the application now. Close this store and open it again",
                    self.file.app_key,
                    self.file.path.display()
                ),
                reason.clone(),
            )),
        }
    }
}

impl Executor for RedbExecutor {
    const PROVIDER: &'static str = PROVIDER;

    fn app_key(&self) -> &str {
        &self.file.app_key
    }

    async fn execute(&mut self, work: Work<'_>) -> Result<Vec<Result<PersistResult>>> {
        self.check()?;
        guarded(&self.file.path, || execute(&self.file, work))
    }

    async fn release(self) {
        // The store closes the file once this last other handle is gone.
        drop(self.file);
    }
}

/// Plans `work` against one write transaction, applies the plan and commits.
fn execute(file: &OpenFile, work: Work<'_>) -> Result<Vec<Result<PersistResult>>> {
    let path = file.path.as_path();
    let txn = file.db.begin_write().or_storage(path)?;
    let outcomes = {
        let mut tables = WriteTables::open(&txn, file.codec())?;
        let counters = tables.counters()?;
        let planned = work.plan(&mut tables, counters)?;
        if planned.plan.is_empty() {
            drop(tables);
            txn.abort().or_storage(path)?;
            return Ok(planned.outcomes);
        }
        tables.apply(&planned.plan)?;
        planned.outcomes
    };
    txn.commit().or_storage(path)?;
    file.commits.fetch_add(1, Ordering::Relaxed);
    Ok(outcomes)
}
