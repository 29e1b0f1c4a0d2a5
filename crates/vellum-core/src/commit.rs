//! The commit engine: one writer per store, group commit, imports in queue order, draining on
//! close. Written once; a provider supplies an [`Executor`] that runs one unit of [`Work`] in
//! one transaction (`docs/close-and-cancellation.md`).
//!
//! - Concurrent `persist` calls queue up. The writer takes every waiting batch (at most
//!   [`MAX_GROUP`]) and commits them as one group; a lone batch commits at once.
//! - After a commit the writer lets the callers it answered queue their next batches, so the
//!   next group takes them too: a writer on the runtime yields; one on a thread of its own
//!   ([`block_on`]) waits for them, briefly and only when the store is contended
//!   (`own_thread.rs`, docs/close-and-cancellation.md#group-commit).
//! - In a queue made by [`WriteQueue::spawn`] (executors that never block their thread), a
//!   batch that finds the writer idle and nothing queued commits on its caller's own task: no
//!   hand-off to the writer task and back, which costs a lone writer two task wake-ups per
//!   batch. Whoever commits holds the writer's seat (an async mutex), so units of work still run
//!   one at a time and in queue order.
//! - A batch whose caller dropped its future before the writer took it is skipped, never
//!   committed; once taken it commits whole or not at all with its group. Dropping never blocks.
//! - A group whose transaction fails as a whole (a storage error, not a conflict) is retried
//!   one batch per transaction, so only the culprit fails.
//! - An import commits after the batches queued before it and before those queued after, in a
//!   transaction of its own.
//! - Closing stops the queue; the writer commits what was queued, then releases the store's
//!   lock ([`Executor::release`]). Because the writer itself releases, a `close` whose future
//!   is dropped part-way still ends with the lock released once the queue is drained.
//! - While idle, the writer runs the executor's keep-alive when its idle timer fires (server
//!   locks held as leases, docs/failover.md#leases). The first unit or keep-alive that fails
//!   with `ErrorKind::Fenced` marks the queue fenced ([`WriteQueue::is_fenced`]).
//! - After each committed unit, and when it ends, the writer bumps [`WriteQueue::commits`]: the
//!   data-free wake-up of event followers (docs/events.md#following-the-log).
//!
//! The engine is a future ([`WriteQueue::new`] returns it): an async provider has
//! [`WriteQueue::spawn`] run it on the current tokio runtime, a provider with blocking storage
//! runs it on a thread of its own with [`block_on`]. The store keeps the [`WriteQueue`].

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{Instrument as _, Span};

use crate::batch::Batch;
use crate::bulk::Record;
use crate::error::{Error, ErrorKind, Result};
use crate::eval::PreBatchState;
use crate::model::PersistResult;
use crate::observe;
use crate::plan::{Counters, Planned, StateKeys, plan_group, plan_import};

mod direct;
mod own_thread;
use direct::{Direct, DirectCommit, Seated};
pub use own_thread::block_on;

/// The most batches one group (one transaction) takes; bounds transaction size and latency.
pub const MAX_GROUP: usize = 256;

/// One unit of work for an [`Executor`]: one transaction. Shared, so an executor that runs it
/// on another thread can keep it ([`Work::to_shared`]) without copying.
#[derive(Debug, Clone, Copy)]
pub enum Work<'a> {
    /// Commit these batches as one group (see [`Work::plan`]).
    Persist(&'a Arc<[Batch]>),
    /// Import these records (see [`Work::plan`]).
    Import(&'a Arc<[Record]>),
}

/// A [`Work`] that owns its share of the batches or records.
#[derive(Debug, Clone)]
pub enum SharedWork {
    /// See [`Work::Persist`].
    Persist(Arc<[Batch]>),
    /// See [`Work::Import`].
    Import(Arc<[Record]>),
}

impl SharedWork {
    /// The work, borrowed.
    #[must_use]
    pub fn as_work(&self) -> Work<'_> {
        match self {
            Self::Persist(batches) => Work::Persist(batches),
            Self::Import(records) => Work::Import(records),
        }
    }
}

impl<'a> Work<'a> {
    /// The work with its own share of the batches or records (no copy).
    #[must_use]
    pub fn to_shared(self) -> SharedWork {
        match self {
            Self::Persist(batches) => SharedWork::Persist(Arc::clone(batches)),
            Self::Import(records) => SharedWork::Import(Arc::clone(records)),
        }
    }

    /// Plans the work against the stored `state` and `counters`: [`plan_group`] or
    /// [`plan_import`]. `Err`: a storage error, or a refused import; nothing is to be written.
    pub fn plan<S: PreBatchState + ?Sized>(self, state: &mut S, counters: Counters) -> Result<Planned<'a>> {
        match self {
            Self::Persist(batches) => plan_group(batches, state, counters),
            Self::Import(records) => {
                Ok(Planned { outcomes: Vec::new(), plan: plan_import(records, state, counters)? })
            }
        }
    }

    /// The stored rows planning this work reads.
    #[must_use]
    pub fn keys(self) -> StateKeys {
        match self {
            Self::Persist(batches) => StateKeys::of(batches),
            Self::Import(records) => StateKeys::of_records(records),
        }
    }
}

/// Runs units of work against one store's storage; a provider implements it once.
pub trait Executor: Send + 'static {
    /// The provider's name in tracing spans.
    const PROVIDER: &'static str;

    /// The application key of the store.
    fn app_key(&self) -> &str;

    /// Runs `work` in one transaction and returns one outcome per batch (none for an import).
    /// `Err` means the transaction failed as a whole and nothing of it was committed.
    fn execute(&mut self, work: Work<'_>) -> impl Future<Output = Result<Vec<Result<PersistResult>>>> + Send;

    /// Called once, after the last unit of work: releases the store's lock and connections.
    fn release(self) -> impl Future<Output = ()> + Send;

    /// Resolves when a writer that has been idle since the call should run
    /// [`Executor::keep_alive`]. The default never resolves: a store whose lock needs no upkeep
    /// (a file lock) has nothing to do while idle. The engine drops it when work arrives.
    fn idle(&self) -> impl Future<Output = ()> + Send + 'static {
        std::future::pending()
    }

    /// Keeps the store's lock alive while no work comes (a heartbeat on a server session whose
    /// idle timeout frees the lock, docs/failover.md#leases); run to completion, never
    /// cancelled. An error of kind [`ErrorKind::Fenced`](crate::ErrorKind::Fenced) fences the
    /// store; other errors are ignored (the next unit of work meets them).
    fn keep_alive(&mut self) -> impl Future<Output = Result<()>> + Send {
        std::future::ready(Ok(()))
    }
}

/// A batch or an import waiting for the writer.
enum Job {
    Persist { batch: Batch, reply: oneshot::Sender<Result<PersistResult>> },
    Import { records: Vec<Record>, reply: oneshot::Sender<Result<()>>, span: Span },
}

impl Job {
    /// Whether the caller still waits for the outcome (it drops the receiver with its future).
    fn is_wanted(&self) -> bool {
        match self {
            Self::Persist { reply, .. } => !reply.is_closed(),
            Self::Import { reply, .. } => !reply.is_closed(),
        }
    }
}

/// A store's queue to its writer: what `persist`, bulk import and `close` go through.
/// Dropping it closes the queue like [`WriteQueue::close`], without waiting.
#[derive(Debug)]
pub struct WriteQueue {
    provider: &'static str,
    app_key: Arc<str>,
    /// `None` once closed.
    open: Mutex<Option<Open>>,
    /// Set by the writer the first time its executor reports [`ErrorKind::Fenced`].
    fenced: Arc<AtomicBool>,
    /// Bumped by the writer after each committed unit of work and once when it ends: the
    /// wake-up of event followers (docs/events.md#following-the-log). Carries no data.
    commits: watch::Sender<u64>,
    /// Jobs sent to the writer that it has not finished: a caller commits directly only at 0.
    pending: Arc<AtomicUsize>,
    /// The direct path of a queue made by [`WriteQueue::spawn`].
    direct: Option<Box<dyn Direct>>,
}

#[derive(Debug)]
struct Open {
    sender: mpsc::UnboundedSender<Job>,
    /// Fires when the writer has drained the queue and released the store.
    done: oneshot::Receiver<()>,
}

impl WriteQueue {
    /// A queue and the writer that serves it. The writer must be run (spawned on a runtime,
    /// or on a thread with [`block_on`]); it ends once the queue is closed or dropped and
    /// drained, after calling [`Executor::release`].
    pub fn new<E: Executor>(executor: E) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (queue, seat, writer) = Self::with_seat(executor);
        drop(seat);
        (queue, writer)
    }

    /// A queue whose writer runs on the current tokio runtime, and whose lone batches commit on
    /// their callers' tasks while the writer is idle (see the module docs). For executors whose
    /// `execute` never blocks its thread. A batch whose caller drops its future mid-commit is
    /// finished on the runtime, so it still commits whole or not at all.
    ///
    /// # Panics
    /// Outside a tokio runtime, like `tokio::spawn`.
    pub fn spawn<E: Executor>(executor: E) -> Self {
        let runtime = Handle::current();
        let (mut queue, seat, writer) = Self::with_seat(executor);
        queue.direct =
            Some(Box::new(Seated { seat, pending: Arc::clone(&queue.pending), runtime: runtime.clone() }));
        runtime.spawn(writer);
        queue
    }

    fn with_seat<E: Executor>(executor: E) -> (Self, Seat<E>, impl Future<Output = ()> + Send + 'static) {
        let app_key = Arc::from(executor.app_key());
        let (sender, receiver) = mpsc::unbounded_channel();
        let (finished, done) = oneshot::channel();
        let fenced = Arc::new(AtomicBool::new(false));
        let commits = watch::Sender::new(0);
        let pending = Arc::new(AtomicUsize::new(0));
        let writer = Writer { executor, fenced: Arc::clone(&fenced), commits: commits.clone() };
        let seat = Arc::new(tokio::sync::Mutex::new(Some(writer)));
        let engine = {
            let (seat, pending, commits) = (Arc::clone(&seat), Arc::clone(&pending), commits.clone());
            async move {
                run(&seat, &pending, &commits, receiver).await;
                // Followers wake up to find the store closed.
                commits.send_modify(|n| *n += 1);
                let _ = finished.send(());
            }
        };
        let open = Mutex::new(Some(Open { sender, done }));
        let queue = Self { provider: E::PROVIDER, app_key, open, fenced, commits, pending, direct: None };
        (queue, seat, engine)
    }

    /// Wake-ups after every committed unit of work (and when the writer ends): how an event
    /// follower learns, without polling, that there may be new events. They report every commit
    /// to the application until the store is fenced (then another process may write).
    #[must_use]
    pub fn commits(&self) -> crate::Wakeups {
        crate::Wakeups::unless(self.commits.subscribe(), Arc::clone(&self.fenced))
    }

    /// Whether the queue was closed.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.lock().is_none()
    }

    /// Whether the store lost its exclusive lock: its executor reported an error of kind
    /// [`ErrorKind::Fenced`] (on a unit of work or a keep-alive). A fenced store writes nothing
    /// ever again; close it and open the application afresh (docs/locking.md#fencing).
    #[must_use]
    pub fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Open>> {
        // The guarded value is only ever replaced whole, so a poisoned lock holds a valid one.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn send(&self, job: Job) -> Result<()> {
        let open = self.lock();
        let open = open.as_ref().ok_or(Error::Closed)?;
        self.pending.fetch_add(1, Ordering::AcqRel);
        open.sender.send(job).map_err(|_| {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            Error::Closed
        })
    }

    /// The batch's commit on the caller's task, if this queue has a direct path and the writer
    /// is idle with nothing queued; otherwise the batch back, for the queue.
    fn direct_commit(&self, batch: Batch) -> std::result::Result<DirectCommit, Batch> {
        match &self.direct {
            Some(direct) if !self.is_closed() => direct.try_commit(batch),
            _ => Err(batch),
        }
    }

    /// Queues a batch and waits for its outcome, inside a `vellum.persist` span. An empty batch
    /// commits nothing and succeeds (unless the queue is closed).
    ///
    /// # Cancel safety
    /// Dropping the future before the writer took the batch cancels it: it is never committed.
    /// Dropped later, the batch commits whole or not at all with its group.
    pub async fn persist(&self, batch: Batch) -> Result<PersistResult> {
        let span = observe::persist_span(self.provider, &self.app_key, batch.len());
        let outcome = async {
            if batch.is_empty() {
                return if self.is_closed() { Err(Error::Closed) } else { Ok(PersistResult::default()) };
            }
            let batch = match self.direct_commit(batch) {
                Ok(commit) => return commit.await,
                Err(batch) => batch,
            };
            let (reply, outcome) = oneshot::channel();
            self.send(Job::Persist { batch, reply })?;
            outcome.await.map_err(|_| Error::Closed)?
        };
        let outcome = outcome.instrument(span.clone()).await;
        observe::record(&span, outcome)
    }

    /// Queues an import behind every batch queued so far and waits for its outcome, inside a
    /// `vellum.import` span (which the writer enters while it works on it).
    ///
    /// # Cancel safety
    /// As [`WriteQueue::persist`]: skipped if dropped before the writer takes it, otherwise
    /// committed whole or not at all.
    pub async fn import(&self, records: Vec<Record>) -> Result<()> {
        let span = observe::bulk_span(self.provider, &self.app_key, true, records.len());
        let outcome = async {
            let (reply, outcome) = oneshot::channel();
            self.send(Job::Import { records, reply, span: Span::current() })?;
            outcome.await.map_err(|_| Error::Closed)?
        };
        let outcome = outcome.instrument(span.clone()).await;
        observe::record(&span, outcome)
    }

    /// Closes the queue and waits until everything queued is committed and the executor has
    /// released the store. The first call succeeds; later ones return [`Error::Closed`].
    ///
    /// # Cancel safety
    /// The queue is closed when the future is first polled. Dropping it after that changes
    /// nothing: the writer drains the queue and releases the store on its own.
    pub async fn close(&self) -> Result<()> {
        let Open { sender, done } = self.lock().take().ok_or(Error::Closed)?;
        drop(sender);
        // An error means the writer is gone already (it panicked, or its runtime shut down).
        let _ = done.await;
        Ok(())
    }
}

/// The executor and the flag the store reads to learn it is fenced.
struct Writer<E> {
    executor: E,
    fenced: Arc<AtomicBool>,
    commits: watch::Sender<u64>,
}

impl<E: Executor> Writer<E> {
    /// Wakes the followers after a unit that committed (an `Err` committed nothing).
    fn committed<T>(&self, result: &Result<T>) {
        if result.is_ok() {
            self.commits.send_modify(|n| *n += 1);
        }
    }

    /// Notes a fenced store (its executor keeps failing every later unit itself).
    fn watch<T>(&self, result: &Result<T>) {
        if let Err(e) = result
            && e.kind() == ErrorKind::Fenced
            && !self.fenced.swap(true, Ordering::AcqRel)
        {
            // Another process may write from now on: followers must start polling.
            self.commits.send_modify(|n| *n += 1);
        }
    }
}

/// The writer's state, behind the lock whoever runs a unit of work holds: the writer task, or
/// a caller committing directly. `None` once released.
type Seat<E> = Arc<tokio::sync::Mutex<Option<Writer<E>>>>;

async fn run<E: Executor>(
    seat: &Seat<E>,
    pending: &AtomicUsize,
    commits: &watch::Sender<u64>,
    mut receiver: mpsc::UnboundedReceiver<Job>,
) {
    let mut jobs = Vec::new();
    let mut group = Vec::new();
    loop {
        // Jobs gathered after the last commit commit now; otherwise wait for some.
        if jobs.is_empty() {
            let idle = {
                let seat = seat.lock().await;
                let Some(writer) = seat.as_ref() else { return };
                // A fenced store has no lock left to keep alive.
                (!writer.fenced.load(Ordering::Acquire)).then(|| writer.executor.idle())
            };
            let commits_before = *commits.borrow();
            match next_jobs(idle, &mut receiver, &mut jobs).await {
                Next::Jobs(0) => break,
                Next::Jobs(_) => {}
                // A direct commit since the timer started: the store was not idle after all.
                Next::Idle if *commits.borrow() != commits_before => {}
                Next::Idle => {
                    let mut seat = seat.lock().await;
                    let Some(writer) = seat.as_mut() else { return };
                    let kept = writer.executor.keep_alive().await;
                    writer.watch(&kept);
                }
            }
            if jobs.is_empty() {
                continue;
            }
        }
        let taken = jobs.len();
        let started = Instant::now();
        let mut others = Others { pending, taken, queued: 0 };
        {
            let mut seat = seat.lock().await;
            let Some(writer) = seat.as_mut() else { return };
            for job in jobs.drain(..).filter(Job::is_wanted) {
                match job {
                    Job::Persist { batch, reply } => group.push((batch, reply)),
                    Job::Import { records, reply, span } => {
                        // Batches queued before the import commit before it.
                        commit_group(writer, &mut group, &mut others).await;
                        let records = Arc::from(records);
                        let outcome = writer.executor.execute(Work::Import(&records)).instrument(span).await;
                        writer.watch(&outcome);
                        writer.committed(&outcome);
                        others.count();
                        let _ = reply.send(outcome.map(drop));
                    }
                }
            }
            commit_group(writer, &mut group, &mut others).await;
            // Still seated: a caller cannot commit directly ahead of a job taken here.
            pending.fetch_sub(taken, Ordering::AcqRel);
        }
        let_answered_callers_queue_up(&mut receiver, &mut jobs, &others, started.elapsed()).await;
    }
    let released = seat.lock().await.take();
    if let Some(writer) = released {
        writer.executor.release().await;
    }
}

/// What the idle writer woke up for.
enum Next {
    /// This many jobs arrived (0: the queue is closed and drained).
    Jobs(usize),
    /// The executor's idle timer fired.
    Idle,
}

/// Waits for jobs, or for the executor's idle timer (if any), whichever comes first.
async fn next_jobs(
    idle: Option<impl Future<Output = ()>>,
    receiver: &mut mpsc::UnboundedReceiver<Job>,
    jobs: &mut Vec<Job>,
) -> Next {
    let mut idle = pin!(idle);
    let mut arrivals = pin!(receiver.recv_many(jobs, MAX_GROUP));
    std::future::poll_fn(|cx| {
        // Jobs first: work that is waiting beats a keep-alive.
        if let Poll::Ready(n) = arrivals.as_mut().poll(cx) {
            return Poll::Ready(Next::Jobs(n));
        }
        match idle.as_mut().as_pin_mut() {
            Some(idle) => idle.poll(cx).map(|()| Next::Idle),
            None => Poll::Pending,
        }
    })
    .await
}

type Reply = oneshot::Sender<Result<PersistResult>>;

/// The jobs queued behind those the writer took, counted before it answers any caller (an
/// answered caller may queue again at once, and is not another caller).
struct Others<'a> {
    /// Jobs sent to the writer and not finished.
    pending: &'a AtomicUsize,
    /// Of those, the jobs the writer took.
    taken: usize,
    /// The jobs queued behind them when the writer last answered.
    queued: usize,
}

impl Others<'_> {
    fn count(&mut self) {
        self.queued = self.pending.load(Ordering::Acquire).saturating_sub(self.taken);
    }

    /// Whether the store is contended: more than one caller answered, or other jobs queued. A
    /// lone writer (one answered, nothing queued) is not.
    fn contended(&self) -> bool {
        self.taken > 1 || self.queued > 0
    }

    /// How many jobs the next group would hold if every answered caller came back.
    fn with_answered_back(&self) -> usize {
        (self.queued + self.taken).min(MAX_GROUP)
    }
}

/// Commits the batches in `group` (emptying it) and answers their callers, counting the
/// `others` queued meanwhile first.
async fn commit_group<E: Executor>(
    writer: &mut Writer<E>,
    group: &mut Vec<(Batch, Reply)>,
    others: &mut Others<'_>,
) {
    if group.is_empty() {
        return;
    }
    let (batches, replies): (Vec<_>, Vec<_>) = group.drain(..).unzip();
    let batches: Arc<[Batch]> = batches.into();
    let outcome = transaction(writer, &batches).await;
    others.count();
    match outcome {
        Ok(outcomes) => send_all(replies, outcomes),
        Err(e) if batches.len() == 1 => send_all(replies, vec![Err(e)]),
        Err(_) => {
            // Find the culprit: one transaction per batch (copies only on this rare path).
            for (batch, reply) in batches.iter().zip(replies) {
                let outcome = transaction(writer, &Arc::from([batch.clone()])).await;
                send_all(vec![reply], outcome.unwrap_or_else(|e| vec![Err(e)]));
            }
        }
    }
}

/// One group transaction inside its `vellum.commit` span.
async fn transaction<E: Executor>(
    writer: &mut Writer<E>,
    batches: &Arc<[Batch]>,
) -> Result<Vec<Result<PersistResult>>> {
    let span = observe::commit_span(E::PROVIDER, writer.executor.app_key(), batches.len());
    let result = writer.executor.execute(Work::Persist(batches)).instrument(span.clone()).await;
    writer.watch(&result);
    writer.committed(&result);
    observe::record(&span, result)
}

fn send_all(replies: Vec<Reply>, outcomes: Vec<Result<PersistResult>>) {
    let mut outcomes = outcomes.into_iter();
    for reply in replies {
        let outcome = outcomes.next().unwrap_or_else(|| {
            Err(Error::storage("group commit", "the executor returned fewer outcomes than batches"))
        });
        // A caller that dropped its future no longer wants the answer.
        let _ = reply.send(outcome);
    }
}

/// Callers just answered usually persist again at once; letting them queue up means the next
/// group takes them all rather than those that queued during the commit. On a tokio runtime,
/// yielding twice lets them run (microseconds). A writer on a thread of its own gathers them
/// instead ([`own_thread`]) when the store is contended ([`Others::contended`]): until the
/// answered callers are back or a budget of a quarter of the `commit`'s time ends.
async fn let_answered_callers_queue_up(
    receiver: &mut mpsc::UnboundedReceiver<Job>,
    jobs: &mut Vec<Job>,
    others: &Others<'_>,
    commit: Duration,
) {
    if !own_thread::on_own_thread() {
        for _ in 0..2 {
            YieldOnce(false).await;
        }
    } else if others.contended() {
        let deadline = Instant::now() + own_thread::gather_budget(commit);
        own_thread::gather(receiver, jobs, others.with_answered_back(), deadline).await;
    }
}

/// Returns `Pending` once (waking itself), then `Ready`: a runtime-independent yield.
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::task::Waker;

    use super::*;

    /// Records what the engine asks of it; a batch with 2 operations fails its transaction.
    struct Log(Arc<Mutex<Vec<String>>>);

    impl Log {
        fn push(&self, entry: String) {
            self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(entry);
        }
    }

    impl Executor for Log {
        const PROVIDER: &'static str = "test";

        fn app_key(&self) -> &'static str {
            "app"
        }

        async fn execute(&mut self, work: Work<'_>) -> Result<Vec<Result<PersistResult>>> {
            match work {
                Work::Persist(batches) => {
                    self.push(format!("commit {}", batches.len()));
                    if batches.iter().any(|b| b.len() == 2) {
                        return Err(Error::storage("test", "poisoned batch"));
                    }
                    Ok(batches.iter().map(|_| Ok(PersistResult::default())).collect())
                }
                Work::Import(records) => {
                    self.push(format!("import {}", records.len()));
                    Ok(Vec::new())
                }
            }
        }

        async fn release(self) {
            self.push("release".into());
        }
    }

    fn batch(ops: usize) -> Batch {
        let op = |i: usize| crate::Operation::SaveOffset {
            application_key: format!("a{i}"),
            current_offset: 0,
            next_offset: 1,
        };
        Batch::from((0..ops).map(op).collect::<Vec<_>>())
    }

    fn entries(log: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
        log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    #[test]
    fn imports_split_groups_culprits_fail_alone_and_close_releases() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let (queue, writer) = WriteQueue::new(Log(Arc::clone(&log)));
        let callers = async {
            // Polled in order on this one thread, so all are queued before the writer runs.
            let (a, b, import, c, bad) = tokio::join!(
                queue.persist(batch(1)),
                queue.persist(batch(1)),
                queue.import(Vec::new()),
                queue.persist(batch(1)),
                queue.persist(batch(2)),
            );
            assert!(a.is_ok() && b.is_ok() && import.is_ok() && c.is_ok());
            assert!(bad.unwrap_err().is_storage());
            queue.close().await.unwrap();
            assert!(queue.close().await.is_err());
        };
        block_on(async { tokio::join!(writer, callers) });
        let expected = ["commit 2", "import 0", "commit 2", "commit 1", "commit 1", "release"];
        assert_eq!(entries(&log), expected);
    }

    #[test]
    fn a_dropped_close_still_drains_and_releases() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let (queue, writer) = WriteQueue::new(Log(Arc::clone(&log)));
        let (reply, outcome) = oneshot::channel();
        queue.send(Job::Persist { batch: batch(1), reply }).unwrap();
        // Polled once (the queue closes), then dropped while it waits for the writer.
        let mut close = Box::pin(queue.close());
        assert!(close.as_mut().poll(&mut Context::from_waker(Waker::noop())).is_pending());
        drop(close);
        assert!(queue.is_closed());
        block_on(writer);
        assert!(block_on(outcome).unwrap().is_ok());
        assert_eq!(entries(&log), ["commit 1", "release"]);
    }

    #[test]
    fn a_batch_dropped_while_queued_is_never_committed() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let (queue, writer) = WriteQueue::new(Log(Arc::clone(&log)));
        let (reply, outcome) = oneshot::channel();
        queue.send(Job::Persist { batch: batch(1), reply }).unwrap();
        drop(outcome);
        drop(queue);
        block_on(writer);
        assert_eq!(entries(&log), ["release"]);
    }

    /// Each commit: its number of batches and the task it ran on.
    type Commits = Arc<Mutex<Vec<(usize, Option<tokio::task::Id>)>>>;

    /// Commits once it takes a permit from `gate`, noting the batches and the task it ran on.
    struct Gated {
        commits: Commits,
        gate: Arc<tokio::sync::Semaphore>,
    }

    impl Executor for Gated {
        const PROVIDER: &'static str = "test";

        fn app_key(&self) -> &'static str {
            "app"
        }

        async fn execute(&mut self, work: Work<'_>) -> Result<Vec<Result<PersistResult>>> {
            self.gate.acquire().await.map_err(|e| Error::storage("test", e))?.forget();
            let n = match work {
                Work::Persist(batches) => batches.len(),
                Work::Import(_) => 0,
            };
            self.commits
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((n, tokio::task::try_id()));
            Ok((0..n).map(|_| Ok(PersistResult::default())).collect())
        }

        async fn release(self) {}
    }

    fn gated() -> (Commits, Arc<tokio::sync::Semaphore>, Gated) {
        let (commits, gate) = (Arc::new(Mutex::new(Vec::new())), Arc::new(tokio::sync::Semaphore::new(0)));
        (Arc::clone(&commits), Arc::clone(&gate), Gated { commits, gate })
    }

    #[tokio::test]
    async fn a_lone_batch_commits_on_its_callers_task_and_others_queue_behind_it() {
        let (commits, gate, executor) = gated();
        let queue = Arc::new(WriteQueue::spawn(executor));
        let caller = |queue: &Arc<WriteQueue>| {
            let queue = Arc::clone(queue);
            tokio::spawn(async move { (tokio::task::id(), queue.persist(batch(1)).await) })
        };
        let lone = caller(&queue);
        // The lone batch is in its commit (waiting at the gate); these two find the seat taken.
        tokio::task::yield_now().await;
        let (second, third) = (caller(&queue), caller(&queue));
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        gate.add_permits(2);
        let (lone, outcome) = lone.await.unwrap();
        outcome.unwrap();
        let (second, outcome) = second.await.unwrap();
        outcome.unwrap();
        let (third, outcome) = third.await.unwrap();
        outcome.unwrap();
        let commits = commits.lock().unwrap().clone();
        assert_eq!(commits.len(), 2, "the lone batch, then one group of the two queued: {commits:?}");
        assert_eq!(commits[0], (1, Some(lone)), "the lone batch committed on its caller's task");
        assert_eq!(commits[1].0, 2);
        assert!(
            commits[1].1.is_some_and(|t| t != second && t != third),
            "the writer's task committed the group"
        );
        queue.close().await.unwrap();
    }

    #[tokio::test]
    async fn a_direct_commit_dropped_midway_still_commits_and_gives_the_seat_back() {
        let (commits, gate, executor) = gated();
        let queue = WriteQueue::spawn(executor);
        let woken = *queue.commits.borrow();
        let mut dropped = Box::pin(queue.persist(batch(1)));
        let cx = &mut Context::from_waker(Waker::noop());
        assert!(dropped.as_mut().poll(cx).is_pending(), "waiting at the gate, mid-commit");
        drop(dropped);
        gate.add_permits(2);
        // Queued behind the dropped batch's commit, which the runtime finishes.
        queue.persist(batch(1)).await.unwrap();
        let commits: Vec<_> = commits.lock().unwrap().iter().map(|c| c.0).collect();
        assert_eq!(commits, [1, 1], "the dropped batch committed, then the next");
        assert_eq!(*queue.commits.borrow(), woken + 2, "followers were woken for both");
        queue.close().await.unwrap();
        assert!(queue.persist(batch(1)).await.is_err_and(|e| matches!(e, Error::Closed)));
    }

    /// A lease-keeping executor: idle for 10 ms at a time; its third keep-alive finds the lock
    /// gone, and from then on every unit fails as fenced.
    struct Leased {
        log: Arc<Mutex<Vec<String>>>,
        keep_alives: usize,
    }

    impl Executor for Leased {
        const PROVIDER: &'static str = "test";

        fn app_key(&self) -> &'static str {
            "app"
        }

        async fn execute(&mut self, _: Work<'_>) -> Result<Vec<Result<PersistResult>>> {
            Log(Arc::clone(&self.log)).push("execute".into());
            if self.keep_alives >= 3 {
                return Err(Error::storage_kind(ErrorKind::Fenced, "test", "lock lost"));
            }
            Ok(vec![Ok(PersistResult::default())])
        }

        async fn release(self) {}

        fn idle(&self) -> impl Future<Output = ()> + Send + 'static {
            tokio::time::sleep(std::time::Duration::from_millis(10))
        }

        async fn keep_alive(&mut self) -> Result<()> {
            self.keep_alives += 1;
            Log(Arc::clone(&self.log)).push(format!("keep-alive {}", self.keep_alives));
            if self.keep_alives >= 3 {
                Err(Error::storage_kind(ErrorKind::Fenced, "test", "lock lost"))
            } else {
                Ok(())
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_writer_keeps_its_lease_and_a_lost_one_fences_the_store() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let (queue, writer) = WriteQueue::new(Leased { log: Arc::clone(&log), keep_alives: 0 });
        let writer = tokio::spawn(writer);
        queue.persist(batch(1)).await.unwrap();
        assert!(!queue.is_fenced());
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        assert_eq!(
            entries(&log),
            ["execute", "keep-alive 1", "keep-alive 2"],
            "one keep-alive per idle 10 ms"
        );
        assert!(!queue.is_fenced());
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        assert!(queue.is_fenced(), "a fenced keep-alive fences the store before any write fails");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(entries(&log).len(), 4, "no keep-alive once fenced");
        let err = queue.persist(batch(1)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Fenced);
        queue.close().await.unwrap();
        writer.await.unwrap();
    }

    /// Blocks its thread for 4 ms per unit of work (as a durable commit does) and notes the
    /// size of each group.
    struct Slow(Arc<Mutex<Vec<usize>>>);

    impl Executor for Slow {
        const PROVIDER: &'static str = "test";

        fn app_key(&self) -> &'static str {
            "app"
        }

        async fn execute(&mut self, work: Work<'_>) -> Result<Vec<Result<PersistResult>>> {
            std::thread::sleep(Duration::from_millis(4));
            let Work::Persist(batches) = work else { return Ok(Vec::new()) };
            self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(batches.len());
            Ok(batches.iter().map(|_| Ok(PersistResult::default())).collect())
        }

        async fn release(self) {}
    }

    #[test]
    fn a_writer_on_its_own_thread_gathers_the_callers_it_answered_into_one_group() {
        const CALLERS: usize = 8;
        const ROUNDS: usize = 20;
        let groups = Arc::new(Mutex::new(Vec::new()));
        let (queue, writer) = WriteQueue::new(Slow(Arc::clone(&groups)));
        let thread = std::thread::spawn(move || {
            // A budget no scheduling delay of a busy test machine reaches (the real one is at
            // most 1 ms): the test checks whom the writer waits for, not how fast callers wake.
            own_thread::TEST_BUDGET.set(Some(Duration::from_millis(100)));
            block_on(writer);
        });
        // Each caller on a thread of its own, all starting together, persisting again as soon
        // as it is answered.
        let start = std::sync::Barrier::new(CALLERS);
        std::thread::scope(|callers| {
            for _ in 0..CALLERS {
                callers.spawn(|| {
                    start.wait();
                    for _ in 0..ROUNDS {
                        block_on(queue.persist(batch(1))).unwrap();
                    }
                });
            }
        });
        block_on(queue.close()).unwrap();
        thread.join().unwrap();
        let groups = groups.lock().unwrap().clone();
        assert_eq!(groups.iter().sum::<usize>(), CALLERS * ROUNDS);
        // Gathered: the first arrival commits alone (the writer was idle), every later group
        // holds all callers. Without gathering the callers split into cohorts that commit in
        // turn (14 of 22 and 14 of 26 groups held them all in two runs).
        let whole = groups.iter().filter(|&&n| n == CALLERS).count();
        assert!(whole >= ROUNDS - 1, "groups of all {CALLERS} callers: {whole} of {groups:?}");
    }
}
