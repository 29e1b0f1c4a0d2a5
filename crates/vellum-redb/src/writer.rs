//! The writer thread of one store, and group commit.
//!
//! Every `persist` sends its batch here. The thread takes the first waiting batch, drains every
//! other batch already waiting (up to [`MAX_GROUP`]), and commits them in ONE durable write
//! transaction: each batch is evaluated against the transaction's current state (so it sees the
//! batches before it in the group) and its effects are written only if it passed, so a
//! conflicting batch fails alone. A lone batch commits at once; nothing waits for company.
//! If the transaction fails (a storage error or a panic in redb), the group is retried one batch
//! per transaction, so only the culprit fails.
//!
//! Bulk imports come through the same channel and get a transaction of their own between groups,
//! so they never interleave with batches and the counters stay the writer's alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};

use tokio::sync::oneshot;
use tracing::Span;
use vellum_core::eval::evaluate;
use vellum_core::{Batch, Error, PersistResult, Record, Result, observe};

use crate::PROVIDER;
use crate::file::{OpenFile, OrStorage, guarded};
use crate::tables::WriteTables;

/// The most batches one transaction takes.
const MAX_GROUP: usize = 1024;

/// A batch to commit and where its outcome goes.
pub(crate) struct Request {
    pub(crate) batch: Batch,
    pub(crate) reply: oneshot::Sender<Result<PersistResult>>,
    pub(crate) ticket: Arc<Ticket>,
}

/// A bulk import to commit in a transaction of its own, and where its outcome goes.
pub(crate) struct ImportRequest {
    pub(crate) records: Vec<Record>,
    pub(crate) reply: oneshot::Sender<Result<()>>,
    pub(crate) ticket: Arc<Ticket>,
    /// The caller's `vellum.import` span, entered while the writer works on the import.
    pub(crate) span: Span,
}

/// Whether a queued batch is still wanted, shared by the writer and the `persist` future.
///
/// A `persist` future dropped while its batch is still queued cancels it: it is never
/// committed. Dropped once the writer has taken it into a transaction, the batch commits whole
/// or not at all with that transaction. Either way no batch is ever partly applied (D10), and
/// dropping never blocks.
#[derive(Debug, Default)]
pub(crate) struct Ticket(AtomicU8);

const QUEUED: u8 = 0;
const TAKEN: u8 = 1;
const CANCELLED: u8 = 2;

impl Ticket {
    /// Called by the writer before evaluating the batch: false if its caller is gone.
    fn take(&self) -> bool {
        self.0.compare_exchange(QUEUED, TAKEN, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Called when the `persist` future is dropped before its outcome arrived.
    pub(crate) fn cancel(&self) {
        let _ = self.0.compare_exchange(QUEUED, CANCELLED, Ordering::AcqRel, Ordering::Acquire);
    }
}

/// What the writer thread is sent.
pub(crate) enum Msg {
    /// Commit a batch.
    Persist(Request),
    /// Import records, after the group in flight and before any later batch.
    Import(ImportRequest),
    /// Finish the group in flight, close the file handle, then acknowledge. Batches sent after
    /// this are dropped unanswered, which their callers report as [`Error::Closed`].
    Stop(oneshot::Sender<()>),
}

/// The sending end of a writer.
pub(crate) type WriterHandle = Sender<Msg>;

/// Runs the writer loop until stopped or until every sender is gone.
pub(crate) fn run(file: Arc<OpenFile>, rx: Receiver<Msg>) {
    let mut stop = None;
    // A message met while draining a group that cannot join it; it is served next.
    let mut next = None;
    loop {
        let Some(msg) = next.take().or_else(|| rx.recv().ok()) else { break };
        match msg {
            Msg::Stop(ack) => {
                stop = Some(ack);
                break;
            }
            Msg::Import(request) => {
                if request.ticket.take() {
                    let work = || guarded(&file.path, || crate::bulk::import(&file, &request.records));
                    let outcome = request.span.in_scope(work);
                    let _ = request.reply.send(outcome);
                }
            }
            Msg::Persist(request) => {
                if !request.ticket.take() {
                    continue;
                }
                let mut group = vec![request];
                while group.len() < MAX_GROUP {
                    match rx.try_recv() {
                        Ok(Msg::Persist(request)) => {
                            if request.ticket.take() {
                                group.push(request);
                            }
                        }
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                    }
                }
                commit_group(&file, group);
            }
        }
    }
    // Release the file before acknowledging, so `close` returns with the lock released.
    drop(file);
    drop(rx);
    if let Some(ack) = stop {
        let _ = ack.send(());
    }
}

/// Commits a group and answers every caller.
fn commit_group(file: &OpenFile, group: Vec<Request>) {
    let batches: Vec<&Batch> = group.iter().map(|r| &r.batch).collect();
    match traced_commit(file, &batches) {
        Ok(outcomes) => {
            for (request, outcome) in group.into_iter().zip(outcomes) {
                let _ = request.reply.send(outcome);
            }
        }
        Err(e) if group.len() == 1 => {
            if let Some(request) = group.into_iter().next() {
                let _ = request.reply.send(Err(e));
            }
        }
        Err(_) => {
            // Find the culprit: one transaction per batch.
            for request in group {
                let outcome = traced_commit(file, &[&request.batch])
                    .and_then(|mut outcomes| outcomes.pop().unwrap_or(Err(Error::Closed)));
                let _ = request.reply.send(outcome);
            }
        }
    }
}

/// [`commit`] under the redb panic guard, inside a `vellum.commit` span recording the
/// transaction's outcome.
fn traced_commit(file: &OpenFile, batches: &[&Batch]) -> Result<Vec<Result<PersistResult>>> {
    let span = observe::commit_span(PROVIDER, &file.app_key, batches.len());
    let outcome = span.in_scope(|| guarded(&file.path, || commit(file, batches)));
    observe::record(&span, outcome)
}

/// Evaluates and writes `batches` in one transaction and commits it if any passed. The outer
/// error aborts the whole transaction; the inner results are each batch's own outcome.
fn commit(file: &OpenFile, batches: &[&Batch]) -> Result<Vec<Result<PersistResult>>> {
    let path = file.path.as_path();
    let txn = file.db.begin_write().or_storage(path)?;
    let mut outcomes = Vec::with_capacity(batches.len());
    {
        let mut tables = WriteTables::open(&txn, path)?;
        for batch in batches {
            match evaluate(batch, &mut tables) {
                Ok(effects) => outcomes.push(Ok(tables.apply(&effects)?)),
                Err(e @ Error::Storage { .. }) => return Err(e),
                Err(e) => outcomes.push(Err(e)),
            }
        }
        tables.finish()?;
    }
    if outcomes.iter().any(Result::is_ok) {
        txn.commit().or_storage(path)?;
        file.commits.fetch_add(1, Ordering::Relaxed);
    } else {
        txn.abort().or_storage(path)?;
    }
    Ok(outcomes)
}
