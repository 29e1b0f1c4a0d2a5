//! The store's executor: runs each unit of work of the commit engine
//! ([`vellum_core::commit`]) in one durable redb write transaction, on the store's own thread.
//!
//! A unit (a group of batches or an import) is planned against the transaction's tables and the
//! plan is applied to them; the transaction commits if the plan writes anything. A storage
//! error or a redb panic aborts the transaction, and the engine retries a group batch by batch.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use vellum_core::provider::{Executor, Work};
use vellum_core::{PersistResult, Result};

use crate::PROVIDER;
use crate::file::{OpenFile, OrStorage, guarded};
use crate::tables::WriteTables;

/// Runs a store's units of work; owns the store's handle on its file until released.
pub(crate) struct RedbExecutor {
    pub(crate) file: Arc<OpenFile>,
}

impl Executor for RedbExecutor {
    const PROVIDER: &'static str = PROVIDER;

    fn app_key(&self) -> &str {
        &self.file.app_key
    }

    async fn execute(&mut self, work: Work<'_>) -> Result<Vec<Result<PersistResult>>> {
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
