//! Group commit, shared by every dialect: concurrent `persist` calls queue up, and one writer
//! per store commits every waiting batch in one transaction (DESIGN §3).
//!
//! A lone batch is committed at once; batches that arrive while a transaction is in flight form
//! the next group. A batch whose `persist` future was dropped while it was still queued is
//! skipped (never committed); one dropped after the writer took it commits whole or not at all
//! with its group (SPEC D10). Dropping never blocks. If a group's transaction fails as a whole
//! (a storage error, not a conflict), its batches are retried one per transaction so only the
//! culprit fails.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use vellum_core::{Batch, Error, PersistResult, Result};

/// The most batches one transaction takes; bounds transaction size and latency.
pub const MAX_GROUP: usize = 256;

/// What a dialect implements to commit groups.
pub trait GroupWriter: Send + 'static {
    /// Commits `batches` in one transaction and returns one outcome per batch. `Err` means the
    /// transaction failed as a whole and nothing was committed. (Shared, not owned, so the
    /// committer can retry them one by one without copying every group on the hot path.)
    fn commit(
        &mut self,
        batches: Arc<[Batch]>,
    ) -> impl Future<Output = Result<Vec<Result<PersistResult>>>> + Send;
}

struct Pending {
    batch: Batch,
    reply: oneshot::Sender<Result<PersistResult>>,
}

/// The sending side of a store's group-commit writer.
#[derive(Debug)]
pub struct Committer {
    sender: mpsc::UnboundedSender<Pending>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("ops", &self.batch.len()).finish_non_exhaustive()
    }
}

impl Committer {
    /// Starts the writer task for one store. Must be called within a tokio runtime.
    pub fn spawn<W: GroupWriter>(writer: W) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(writer, receiver));
        Self { sender, task }
    }

    /// Queues a batch and waits for its outcome. Dropping the future before the writer takes the
    /// batch cancels it; after that, it commits whole or not at all (SPEC D10).
    pub async fn persist(&self, batch: Batch) -> Result<PersistResult> {
        let (reply, outcome) = oneshot::channel();
        self.sender.send(Pending { batch, reply }).map_err(|_| Error::Closed)?;
        outcome.await.map_err(|_| Error::Closed)?
    }

    /// Stops accepting batches and waits until every queued batch has been committed.
    pub async fn shutdown(self) {
        drop(self.sender);
        // A panicking writer has already failed its callers; nothing more to report here.
        let _ = self.task.await;
    }
}

async fn run<W: GroupWriter>(mut writer: W, mut receiver: mpsc::UnboundedReceiver<Pending>) {
    let mut group = Vec::new();
    while receiver.recv_many(&mut group, MAX_GROUP).await > 0 {
        // A closed reply channel means the caller dropped its `persist`: nobody wants the batch.
        group.retain(|p| !p.reply.is_closed());
        if group.is_empty() {
            continue;
        }
        let (batches, replies): (Vec<_>, Vec<_>) = group.drain(..).map(|p| (p.batch, p.reply)).unzip();
        let batches: Arc<[Batch]> = batches.into();
        match writer.commit(Arc::clone(&batches)).await {
            Ok(outcomes) => send_all(replies, outcomes),
            Err(e) if batches.len() == 1 => send_all(replies, vec![Err(e)]),
            Err(_) => {
                // Find the culprit: one transaction per batch (copies only on this rare path).
                for (batch, reply) in batches.iter().zip(replies) {
                    let outcome = writer
                        .commit(Arc::from([batch.clone()]))
                        .await
                        .and_then(|mut o| o.pop().unwrap_or_else(|| Err(missing())));
                    let _ = reply.send(outcome);
                }
            }
        }
        let_answered_callers_queue_up().await;
    }
}

/// Callers just answered usually persist again at once; yielding lets them queue up so the next
/// group takes them all rather than the first comer alone (costs microseconds, and nothing for
/// a batch that arrives while the writer is idle).
async fn let_answered_callers_queue_up() {
    for _ in 0..2 {
        tokio::task::yield_now().await;
    }
}

fn send_all(replies: Vec<oneshot::Sender<Result<PersistResult>>>, outcomes: Vec<Result<PersistResult>>) {
    let mut outcomes = outcomes.into_iter();
    for reply in replies {
        // A caller that dropped its future no longer wants the answer.
        let _ = reply.send(outcomes.next().unwrap_or_else(|| Err(missing())));
    }
}

fn missing() -> Error {
    Error::storage("group commit", "the writer returned fewer outcomes than batches")
}
