//! Group commit, shared by every dialect: concurrent `persist` calls queue up, and one writer
//! per store commits every waiting batch in one transaction (DESIGN §3).
//!
//! A lone batch is committed at once; batches that arrive while a transaction is in flight form
//! the next group. A batch whose `persist` future was dropped while it was still queued is
//! skipped (never committed); one dropped after the writer took it commits whole or not at all
//! with its group (SPEC D10). Dropping never blocks. If a group's transaction fails as a whole
//! (a storage error, not a conflict), its batches are retried one per transaction so only the
//! culprit fails.
//!
//! Bulk imports ([`Committer::import`]) travel the same queue: the writer commits the batches
//! queued before an import, then the import in its own transaction, then what came after. So an
//! import never interleaves with a persist, and whatever the writer caches (e.g. PostgreSQL's
//! expected counters) is updated by the writer itself.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::Instrument as _;
use vellum_core::{Batch, Error, PersistResult, Record, Result, observe};

/// The most batches one transaction takes; bounds transaction size and latency.
pub const MAX_GROUP: usize = 256;

/// What a dialect implements to commit groups.
pub trait GroupWriter: Send + 'static {
    /// The provider's name in tracing spans (`sqlite`, `postgres`, `mysql`).
    const PROVIDER: &'static str;

    /// The application key of the store this writer writes.
    fn app_key(&self) -> &str;

    /// Commits `batches` in one transaction and returns one outcome per batch. `Err` means the
    /// transaction failed as a whole and nothing was committed. (Shared, not owned, so the
    /// committer can retry them one by one without copying every group on the hot path.)
    fn commit(
        &mut self,
        batches: Arc<[Batch]>,
    ) -> impl Future<Output = Result<Vec<Result<PersistResult>>>> + Send;

    /// Writes a bulk import in one transaction, after `vellum_core::bulk::check_import`
    /// accepted it against the stored state; on error nothing is written.
    fn import(&mut self, records: Vec<Record>) -> impl Future<Output = Result<()>> + Send;
}

struct Pending {
    batch: Batch,
    reply: oneshot::Sender<Result<PersistResult>>,
}

/// An import waiting for the writer.
struct PendingImport {
    records: Vec<Record>,
    reply: oneshot::Sender<Result<()>>,
}

/// What the writer task receives.
enum Job {
    Persist(Pending),
    Import(PendingImport),
}

/// The sending side of a store's group-commit writer.
#[derive(Debug)]
pub struct Committer {
    sender: mpsc::UnboundedSender<Job>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Persist(p) => {
                f.debug_struct("Persist").field("ops", &p.batch.len()).finish_non_exhaustive()
            }
            Self::Import(i) => {
                f.debug_struct("Import").field("records", &i.records.len()).finish_non_exhaustive()
            }
        }
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
        self.sender.send(Job::Persist(Pending { batch, reply })).map_err(|_| Error::Closed)?;
        outcome.await.map_err(|_| Error::Closed)?
    }

    /// Queues an import behind every batch queued so far and waits for its outcome. Like a
    /// batch, it is skipped if its future is dropped before the writer takes it, and otherwise
    /// commits whole or not at all.
    pub async fn import(&self, records: Vec<Record>) -> Result<()> {
        let (reply, outcome) = oneshot::channel();
        self.sender.send(Job::Import(PendingImport { records, reply })).map_err(|_| Error::Closed)?;
        outcome.await.map_err(|_| Error::Closed)?
    }

    /// Stops accepting batches and waits until every queued batch has been committed.
    pub async fn shutdown(self) {
        drop(self.sender);
        // A panicking writer has already failed its callers; nothing more to report here.
        let _ = self.task.await;
    }
}

async fn run<W: GroupWriter>(mut writer: W, mut receiver: mpsc::UnboundedReceiver<Job>) {
    let mut jobs = Vec::new();
    let mut group = Vec::new();
    while receiver.recv_many(&mut jobs, MAX_GROUP).await > 0 {
        for job in jobs.drain(..) {
            match job {
                // A closed reply channel means the caller dropped its future: nobody wants it.
                Job::Persist(p) if !p.reply.is_closed() => group.push(p),
                Job::Persist(_) => {}
                Job::Import(import) => {
                    // Batches queued before the import commit before it.
                    commit_group(&mut writer, &mut group).await;
                    if !import.reply.is_closed() {
                        let _ = import.reply.send(writer.import(import.records).await);
                    }
                }
            }
        }
        commit_group(&mut writer, &mut group).await;
        let_answered_callers_queue_up().await;
    }
}

/// Commits the batches in `group` (emptying it) and answers their callers.
async fn commit_group<W: GroupWriter>(writer: &mut W, group: &mut Vec<Pending>) {
    if group.is_empty() {
        return;
    }
    let (batches, replies): (Vec<_>, Vec<_>) = group.drain(..).map(|p| (p.batch, p.reply)).unzip();
    let batches: Arc<[Batch]> = batches.into();
    match transaction(writer, Arc::clone(&batches)).await {
        Ok(outcomes) => send_all(replies, outcomes),
        Err(e) if batches.len() == 1 => send_all(replies, vec![Err(e)]),
        Err(_) => {
            // Find the culprit: one transaction per batch (copies only on this rare path).
            for (batch, reply) in batches.iter().zip(replies) {
                let outcome = transaction(writer, Arc::from([batch.clone()]))
                    .await
                    .and_then(|mut o| o.pop().unwrap_or_else(|| Err(missing())));
                let _ = reply.send(outcome);
            }
        }
    }
}

/// One group transaction inside its `vellum.commit` span.
async fn transaction<W: GroupWriter>(
    writer: &mut W,
    batches: Arc<[Batch]>,
) -> Result<Vec<Result<PersistResult>>> {
    let span = observe::commit_span(W::PROVIDER, writer.app_key(), batches.len());
    let result = writer.commit(batches).instrument(span.clone()).await;
    observe::record(&span, result)
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Records what the committer asks of it.
    struct Log(Arc<Mutex<Vec<String>>>);

    impl Log {
        fn push(&self, entry: String) {
            self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(entry);
        }
    }

    impl GroupWriter for Log {
        const PROVIDER: &'static str = "test";

        fn app_key(&self) -> &'static str {
            "app"
        }

        async fn commit(&mut self, batches: Arc<[Batch]>) -> Result<Vec<Result<PersistResult>>> {
            self.push(format!("commit {}", batches.len()));
            Ok(batches.iter().map(|_| Ok(PersistResult::default())).collect())
        }

        async fn import(&mut self, records: Vec<Record>) -> Result<()> {
            self.push(format!("import {}", records.len()));
            Ok(())
        }
    }

    #[tokio::test]
    async fn an_import_splits_the_queue_and_never_shares_a_transaction() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let committer = Committer::spawn(Log(Arc::clone(&log)));
        let batch = || Batch::from(Vec::new());
        // Polled in order: two batches, an import and a batch are queued before the writer runs.
        let (a, b, import, c) = tokio::join!(
            committer.persist(batch()),
            committer.persist(batch()),
            committer.import(Vec::new()),
            committer.persist(batch()),
        );
        assert!(a.is_ok() && b.is_ok() && import.is_ok() && c.is_ok());
        committer.shutdown().await;
        let log = log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        assert_eq!(log, ["commit 2", "import 0", "commit 1"]);
    }
}
