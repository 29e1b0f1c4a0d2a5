//! The direct path of a queue made by [`WriteQueue::spawn`]: a lone batch that finds the
//! writer idle and nothing queued commits on its caller's task, holding the writer's seat.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::runtime::Handle;
use tokio::sync::OwnedMutexGuard;

#[cfg(doc)]
use super::WriteQueue;
use super::{Executor, Seat, Writer, transaction};
use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::model::PersistResult;

impl std::fmt::Debug for dyn Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Direct")
    }
}

/// A queue's way of committing a lone batch on the caller's task ([`WriteQueue::spawn`]).
pub(super) trait Direct: Send + Sync {
    /// The batch's commit, holding the writer's seat, if the writer is idle and nothing is
    /// queued; otherwise the batch back.
    fn try_commit(&self, batch: Batch) -> std::result::Result<DirectCommit, Batch>;
}

/// The seat of a spawned writer, and the runtime it runs on.
pub(super) struct Seated<E> {
    pub(super) seat: Seat<E>,
    pub(super) pending: Arc<AtomicUsize>,
    pub(super) runtime: Handle,
}

impl<E: Executor> Direct for Seated<E> {
    fn try_commit(&self, batch: Batch) -> std::result::Result<DirectCommit, Batch> {
        // Jobs queued first commit first (an import's place in line is part of the contract).
        if self.pending.load(Ordering::Acquire) != 0 {
            return Err(batch);
        }
        let Ok(seat) = Arc::clone(&self.seat).try_lock_owned() else { return Err(batch) };
        if seat.is_none() {
            return Err(batch); // released: the queue answers `Closed`
        }
        Ok(DirectCommit { commit: Some(Box::pin(commit_seated(seat, batch))), runtime: self.runtime.clone() })
    }
}

/// Commits one batch as its own unit of work, holding the seat until it is done.
async fn commit_seated<E: Executor>(
    mut seat: OwnedMutexGuard<Option<Writer<E>>>,
    batch: Batch,
) -> Result<PersistResult> {
    let writer = seat.as_mut().ok_or(Error::Closed)?;
    let outcomes = transaction(writer, &Arc::from([batch])).await?;
    outcomes.into_iter().next().unwrap_or_else(|| {
        Err(Error::storage("direct commit", "the executor returned no outcome for the batch"))
    })
}

/// A direct commit in progress. Dropped before it ends, it is finished on the runtime: once
/// started, a batch commits whole or not at all, and the seat is given back either way.
pub(super) struct DirectCommit {
    commit: Option<Pin<Box<dyn Future<Output = Result<PersistResult>> + Send>>>,
    runtime: Handle,
}

impl Future for DirectCommit {
    type Output = Result<PersistResult>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(commit) = self.commit.as_mut() else { return Poll::Ready(Err(Error::Closed)) };
        let outcome = std::task::ready!(commit.as_mut().poll(cx));
        self.commit = None;
        Poll::Ready(outcome)
    }
}

impl Drop for DirectCommit {
    fn drop(&mut self) {
        if let Some(commit) = self.commit.take() {
            self.runtime.spawn(async move {
                let _ = commit.await;
            });
        }
    }
}
