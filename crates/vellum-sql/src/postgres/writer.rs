//! The lock connection and the group-commit writer that runs on it.
//!
//! Each open store owns one dedicated connection (not a pooled one). It holds the store's
//! session-level advisory lock for the store's lifetime and is the only connection that writes
//! the store's rows. Because the writes go through the very session that holds the lock, a
//! store whose lock is lost (the session ended) can write nothing more: the connection is gone.
//! The store also marks itself fenced as soon as it sees the connection end, so later writes
//! fail with a clear error at once (docs/locking.md#fencing).

use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

use tokio::task::JoinHandle;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};
use vellum_core::provider::{
    Counters, Planned, QueueState, Snapshot, StateKeys, Write, first_touches, plan_group,
};
use vellum_core::provider::{Executor, Work};
use vellum_core::{Batch, Error, ErrorKind, Operation, PersistResult, Result};

use super::simple::{Shape, Simple};
use super::sql::{DIVISION_BY_ZERO, STALE, Sql, UNIQUE_VIOLATION};
use super::storage;
use crate::lease::Lease;
use crate::schema::{from_db, to_db};
use crate::sums::{Rows, write as sum};

/// A store's dedicated connection: either connected by vellum from a URL's configuration, or
/// detached from a caller's pool.
pub(crate) enum Conn {
    /// Connected by vellum; its connection task is watched (and aborted when fenced).
    Own(Client, tokio::task::AbortHandle),
    /// Taken out of a caller-owned pool (`Object::take`); closed when dropped.
    Pooled(deadpool_postgres::ClientWrapper),
}

/// The connection that holds a store's advisory lock and commits its groups.
pub(crate) struct LockConn {
    conn: Conn,
    /// The advisory lock key (known once the application's lock id is read).
    pub key: i64,
    /// Set when the connection's task ended or the store gave the session up: the lock is
    /// (or may be) gone.
    fenced: Arc<AtomicBool>,
}

impl LockConn {
    /// A connection vellum made: `connection` is its spawned task, which marks the store
    /// fenced when it ends, whatever ended it.
    pub(crate) fn watched(client: Client, connection: JoinHandle<PgResult<()>>) -> Self {
        let fenced = Arc::new(AtomicBool::new(false));
        let abort = connection.abort_handle();
        let flag = Arc::clone(&fenced);
        tokio::spawn(async move {
            let _ = connection.await;
            flag.store(true, Ordering::Release);
        });
        Self { conn: Conn::Own(client, abort), key: 0, fenced }
    }

    /// A connection detached from a caller's pool.
    pub(crate) fn detached(client: deadpool_postgres::ClientWrapper) -> Self {
        Self { conn: Conn::Pooled(client), key: 0, fenced: Arc::default() }
    }

    pub(crate) fn client(&self) -> &Client {
        match &self.conn {
            Conn::Own(client, _) => client,
            Conn::Pooled(wrapper) => wrapper,
        }
    }

    /// Whether the lock may have been lost: the connection ended, or was given up.
    pub(crate) fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::Acquire) || self.client().is_closed()
    }

    /// Gives the session up for good: never written through again, and (when vellum owns it)
    /// its socket closed, so nothing still buffered is sent.
    pub(crate) fn fence(&self) {
        self.fenced.store(true, Ordering::Release);
        if let Conn::Own(_, task) = &self.conn {
            task.abort();
        }
    }

    /// Releases the lock explicitly (so the key can be reopened at once); errors are ignored,
    /// a dead session holds no lock.
    pub(crate) async fn unlock(&self) {
        if !self.is_fenced() {
            let _ = self.client().execute("SELECT pg_advisory_unlock($1)", &[&self.key]).await;
        }
    }
}

/// The writer's prepared statements, prepared once on the lock connection.
struct Prepared {
    read_counters: Statement,
    read_aggregates: Statement,
    read_processes: Statement,
    read_queue: Statement,
    read_offsets: Statement,
    read_events: Statement,
    verify: Statement,
    insert_events: Statement,
    upsert_aggregates: Statement,
    upsert_offsets: Statement,
    upsert_process: Statement,
    delete_process: Statement,
    delete_timeouts: Statement,
    insert_queue: Statement,
    update_queue: Statement,
    delete_queue: Statement,
    store_counters: Statement,
    notify: Statement,
}

/// Commits a store's groups on its lock connection.
pub(crate) struct PgWriter {
    pub(super) app_key: String,
    pub(super) conn: Arc<LockConn>,
    lease: Lease,
    st: Prepared,
    /// The app's counters after the last commit, if known (this writer is their only writer).
    counters: Option<Counters>,
    /// The channel a commit that appends events notifies (`listen::channel`).
    channel: String,
    /// The schema the tables are in.
    schema: String,
    /// The statements of simple groups, by shape, prepared when first needed.
    simple: HashMap<Shape, Statement>,
}

pub(super) type PgResult<T> = std::result::Result<T, tokio_postgres::Error>;
pub(super) type Pending<'a> = Pin<Box<dyn Future<Output = PgResult<u64>> + Send + 'a>>;

/// Runs statements pipelined on one connection: every future is polled in order, so their
/// requests go out in order in one round trip. Returns the first error in statement order,
/// after every statement has answered: the connection task delivers answers while this polls,
/// so a later statement's error (say, "transaction aborted" after a failed check) can be seen
/// before the earlier one that caused it, and the cause is what the caller acts on.
pub(super) async fn pipeline(futures: Vec<Pending<'_>>) -> PgResult<()> {
    let mut slots: Vec<Option<Pending<'_>>> = futures.into_iter().map(Some).collect();
    let mut errors: Vec<Option<tokio_postgres::Error>> = slots.iter().map(|_| None).collect();
    let mut remaining = slots.len();
    poll_fn(|cx| {
        for (slot, error) in slots.iter_mut().zip(&mut errors) {
            if let Some(future) = slot
                && let Poll::Ready(result) = future.as_mut().poll(cx)
            {
                *error = result.err();
                *slot = None;
                remaining -= 1;
            }
        }
        if remaining == 0 { Poll::Ready(()) } else { Poll::Pending }
    })
    .await;
    errors.into_iter().flatten().next().map_or(Ok(()), Err)
}

impl PgWriter {
    /// Prepares the writer's statements on `conn` (pipelined).
    pub(crate) async fn new(
        app_key: String,
        conn: Arc<LockConn>,
        sql: &Arc<Sql>,
        lease: Lease,
    ) -> Result<Self> {
        let c = conn.client();
        let texts = [
            &sql.read_counters,
            &sql.read_aggregates,
            &sql.read_processes,
            &sql.read_queue,
            &sql.read_offsets,
            &sql.read_events,
            &sql.verify,
            &sql.insert_events,
            &sql.upsert_aggregates,
            &sql.upsert_offsets,
            &sql.upsert_process,
            &sql.delete_process,
            &sql.delete_timeouts,
            &sql.insert_queue,
            &sql.update_queue,
            &sql.delete_queue,
            &sql.store_counters,
            &sql.notify,
        ];
        let prepared = futures_util::future::try_join_all(texts.iter().map(|t| c.prepare(t)))
            .await
            .map_err(|e| storage(&app_key, "preparing the writer's statements", e))?;
        let mut it = prepared.into_iter();
        let mut next = || it.next().ok_or_else(|| Error::storage("postgres", "missing prepared statement"));
        let st = Prepared {
            read_counters: next()?,
            read_aggregates: next()?,
            read_processes: next()?,
            read_queue: next()?,
            read_offsets: next()?,
            read_events: next()?,
            verify: next()?,
            insert_events: next()?,
            upsert_aggregates: next()?,
            upsert_offsets: next()?,
            upsert_process: next()?,
            delete_process: next()?,
            delete_timeouts: next()?,
            insert_queue: next()?,
            update_queue: next()?,
            delete_queue: next()?,
            store_counters: next()?,
            notify: next()?,
        };
        let channel = super::listen::channel(conn.key);
        let schema = sql.schema.clone();
        Ok(Self { app_key, conn, lease, st, counters: None, channel, schema, simple: HashMap::new() })
    }

    fn fenced_error(&self) -> Error {
        self.fenced_because("the lock connection is closed")
    }

    fn fenced_because(&self, reason: &str) -> Error {
        Error::storage_kind(
            ErrorKind::Fenced,
            format!(
                "postgres: the store of application {:?} lost its lock connection (advisory lock {}); \
                 it accepts no more writes, close and reopen it",
                self.app_key, self.conn.key
            ),
            reason.to_owned(),
        )
    }

    /// Reads the pre-group state: counters and every row the group's preconditions look at,
    /// all pipelined in one round trip.
    pub(super) async fn snapshot(&self, keys: &StateKeys) -> PgResult<(Snapshot, Option<i64>)> {
        let c = self.conn.client();
        let st = &self.st;
        let app: &str = &self.app_key;
        let (agg_h, agg_i): (Vec<&str>, Vec<&str>) =
            keys.aggregates.iter().map(|(h, i)| (h.as_str(), i.as_str())).unzip();
        let (proc_h, proc_i): (Vec<&str>, Vec<&str>) =
            keys.processes.iter().map(|(h, i)| (h.as_str(), i.as_str())).unzip();
        let queue = &keys.queue;
        let offsets = &keys.offsets;
        let events = &keys.events;
        let (counters, aggregates, processes, queue_rows, offset_rows, event_rows) = tokio::try_join!(
            async { c.query_opt(&st.read_counters, &[&app]).await },
            async {
                if agg_h.is_empty() {
                    return Ok(Vec::new());
                }
                c.query(&st.read_aggregates, &[&app, &agg_h, &agg_i]).await
            },
            async {
                if proc_h.is_empty() {
                    return Ok(Vec::new());
                }
                c.query(&st.read_processes, &[&app, &proc_h, &proc_i]).await
            },
            async {
                if queue.is_empty() {
                    return Ok(Vec::new());
                }
                c.query(&st.read_queue, &[&app, queue]).await
            },
            async {
                if offsets.is_empty() {
                    return Ok(Vec::new());
                }
                c.query(&st.read_offsets, &[&app, offsets]).await
            },
            async {
                if events.is_empty() {
                    return Ok(Vec::new());
                }
                c.query(&st.read_events, &[&app, events]).await
            },
        )?;
        let mut s = Snapshot::default();
        let mut counters_sum = None;
        if let Some(row) = counters {
            s.counters =
                Counters { next_offset: from_db(row.try_get(0)?), next_sequence: from_db(row.try_get(1)?) };
            counters_sum = Some(row.try_get(2)?);
        }
        // One row per key asked, with a NULL revision when absent.
        for row in aggregates {
            if let Some(revision) = row.try_get::<_, Option<i64>>(2)? {
                s.aggregates.insert((row.try_get(0)?, row.try_get(1)?), from_db(revision));
            }
        }
        for row in processes {
            if let Some(revision) = row.try_get::<_, Option<i64>>(2)? {
                s.processes.insert((row.try_get(0)?, row.try_get(1)?), from_db(revision));
            }
        }
        for row in queue_rows {
            let handler: Option<String> = row.try_get(2)?;
            let instance: Option<String> = row.try_get(3)?;
            let timeout_owner = handler.map(|h| (h, instance.unwrap_or_default()));
            s.queue.insert(row.try_get(0)?, QueueState { revision: from_db(row.try_get(1)?), timeout_owner });
        }
        for row in offset_rows {
            s.offsets.insert(row.try_get(0)?, from_db(row.try_get(1)?));
        }
        for row in event_rows {
            s.events.insert(row.try_get(0)?);
        }
        Ok((s, counters_sum))
    }

    /// Runs a unit of work: a group through the one-round-trip path when the counters are
    /// known, otherwise (and when its assumptions did not hold) by reading the state first.
    async fn try_execute(&mut self, work: Work<'_>) -> Result<Vec<Result<PersistResult>>> {
        if let Work::Persist(batches) = work {
            if batches.iter().all(Batch::is_empty) {
                return Ok(batches.iter().map(|_| Ok(PersistResult::default())).collect());
            }
            // Forget the counters until this group's outcome is known.
            if let Some(counters) = self.counters.take() {
                match self.commit_assumed(batches, counters).await {
                    Ok(Some(outcomes)) => return Ok(outcomes),
                    Ok(None) => {} // stale assumptions: nothing was written; read and retry
                    Err(e) => return Err(storage(&self.app_key, "committing a group of batches", e)),
                }
            }
        }
        let known = self.counters.take();
        let (mut snapshot, counters_sum) = self
            .snapshot(&work.keys())
            .await
            .map_err(|e| storage(&self.app_key, "reading the state to plan against", e))?;
        let before = snapshot.counters;
        if let Some(sum) = counters_sum {
            // Offsets and sequences are handed out from these: damage must stop the writer.
            let rows = Rows { provider: super::PROVIDER, app_key: &self.app_key };
            rows.counters(to_db(before.next_offset), to_db(before.next_sequence), sum)?;
        }
        let Planned { outcomes, plan } = match work.plan(&mut snapshot, before) {
            Ok(planned) => planned,
            Err(e) => {
                // Refused before anything was sent (an import's check).
                self.counters = known.or(Some(before));
                return Err(e);
            }
        };
        if plan.is_empty() {
            self.counters = Some(before);
            return Ok(outcomes);
        }
        let writes = Writes::of(&self.app_key, &plan.writes);
        self.send_writes(&writes, plan.counters_changed().then_some(plan.after), None)
            .await
            .map_err(|e| storage(&self.app_key, "committing", e))?;
        self.counters = Some(plan.after);
        Ok(outcomes)
    }

    /// The one-round-trip path: plans the group against the state its batches expect (each
    /// key as the first batch touching it expects it, the counters as this writer left them),
    /// and sends `BEGIN`, a statement that verifies exactly that state (raising `STALE`
    /// otherwise, which aborts the transaction), the writes and `COMMIT` in one pipeline. If
    /// the verification held, the plan is the one the stored state gives. `Ok(None)`: it did
    /// not hold and nothing was written.
    async fn commit_assumed(
        &mut self,
        batches: &[Batch],
        counters: Counters,
    ) -> PgResult<Option<Vec<Result<PersistResult>>>> {
        let (mut snapshot, expected) = Expected::of(batches, counters);
        // The assumed snapshot answers every question, so planning cannot fail.
        let Ok(Planned { outcomes, plan }) = plan_group(batches, &mut snapshot, counters) else {
            return Ok(None);
        };
        if plan.is_empty() {
            // Every batch failed against assumed state: let the read path decide.
            return Ok(None);
        }
        let after = plan.after;
        let writes = Writes::of(&self.app_key, &plan.writes);
        let changed = plan.counters_changed();
        let simple = batches.iter().flat_map(Batch::iter).all(|op| {
            matches!(
                op,
                Operation::SaveEvent(_) | Operation::SaveAggregateMetaData(_) | Operation::SaveOffset { .. }
            )
        });
        let result = if simple {
            self.execute_simple(&writes, after, &expected).await
        } else {
            self.send_writes(&writes, changed.then_some(after), Some(&expected)).await
        };
        match result {
            Ok(()) => {
                self.counters = Some(after);
                Ok(Some(outcomes))
            }
            Err(e)
                if e.code()
                    .is_some_and(|c| [STALE, DIVISION_BY_ZERO, UNIQUE_VIOLATION].contains(&c.code())) =>
            {
                // The pipelined COMMIT ended the aborted transaction; make sure of it.
                let _ = self.conn.client().batch_execute("ROLLBACK").await;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Commits a group of only events, aggregates and consumer offsets, with its checks and
    /// the counters, as ONE statement in its own transaction (`simple.rs`).
    async fn execute_simple(
        &mut self,
        writes: &Writes<'_>,
        after: Counters,
        expected: &Expected<'_>,
    ) -> PgResult<()> {
        let Some(simple) = Simple::new(&self.app_key, &self.channel, writes, after, expected) else {
            // Planning writes only keys it was asked about; should that ever not hold, the
            // pipelined path checks everything itself.
            return self.send_writes(writes, Some(after), Some(expected)).await;
        };
        let statement = if let Some(statement) = self.simple.get(&simple.shape) {
            statement.clone()
        } else {
            let statement = self.conn.client().prepare(&simple.shape.text(&self.schema)).await?;
            self.simple.insert(simple.shape, statement.clone());
            statement
        };
        self.conn.client().execute(&statement, &simple.params()).await.map(drop)
    }

    /// Sends `BEGIN`, every write in order, the counters and `COMMIT` in one pipeline.
    async fn send_writes(
        &self,
        w: &Writes<'_>,
        counters: Option<Counters>,
        expected: Option<&Expected<'_>>,
    ) -> PgResult<()> {
        let c = self.conn.client();
        let st = &self.st;
        let app: &str = &self.app_key;
        let mut steps: Vec<Pending<'_>> = Vec::with_capacity(8 + w.ordered.len());
        steps.push(Box::pin(async move { c.batch_execute("BEGIN").await.map(|()| 0) }));
        if let Some(expected) = expected {
            steps.push(expected.verify(c, &st.verify, app));
        }
        if !w.events.offsets.is_empty() {
            let e = &w.events;
            steps.push(Box::pin(async move {
                c.execute(
                    &st.insert_events,
                    &[&app, &e.offsets, &e.ids, &e.names, &e.handlers, &e.instances, &e.envelopes, &e.sums],
                )
                .await
            }));
            // Delivered to the listeners only if the transaction commits.
            steps.push(Box::pin(async move { c.execute(&st.notify, &[&self.channel]).await }));
        }
        if !w.aggregates.handlers.is_empty() {
            let a = &w.aggregates;
            steps.push(Box::pin(async move {
                c.execute(
                    &st.upsert_aggregates,
                    &[&app, &a.handlers, &a.instances, &a.revisions, &a.last_ids, &a.sums],
                )
                .await
            }));
        }
        if !w.offsets.sources.is_empty() {
            let o = &w.offsets;
            steps.push(Box::pin(async move {
                c.execute(&st.upsert_offsets, &[&app, &o.sources, &o.values, &o.sums]).await
            }));
        }
        for step in &w.ordered {
            match step {
                Ordered::PutProcess { handler, instance, revision, media_type, data, sum } => {
                    steps.push(Box::pin(async move {
                        c.execute(
                            &st.upsert_process,
                            &[&app, handler, instance, revision, media_type, data, sum],
                        )
                        .await
                    }));
                }
                Ordered::RemoveProcess { handler, instance } => {
                    steps.push(Box::pin(async move {
                        c.execute(&st.delete_process, &[&app, handler, instance]).await
                    }));
                    steps.push(Box::pin(async move {
                        c.execute(&st.delete_timeouts, &[&app, handler, instance]).await
                    }));
                }
                Ordered::Enqueue(q) => {
                    steps.push(Box::pin(async move {
                        c.execute(
                            &st.insert_queue,
                            &[
                                &app,
                                &q.ids,
                                &q.revisions,
                                &q.failures,
                                &q.times,
                                &q.sequences,
                                &q.handlers,
                                &q.instances,
                                &q.envelopes,
                                &q.envelope_sums,
                                &q.state_sums,
                            ],
                        )
                        .await
                    }));
                }
                Ordered::UpdateQueue { id, revision, failure_count, next_attempt_at, sum } => {
                    steps.push(Box::pin(async move {
                        c.execute(
                            &st.update_queue,
                            &[&app, id, revision, failure_count, next_attempt_at, sum],
                        )
                        .await
                    }));
                }
                Ordered::RemoveQueue { id } => {
                    steps.push(Box::pin(async move { c.execute(&st.delete_queue, &[&app, id]).await }));
                }
            }
        }
        if let Some(Counters { next_offset, next_sequence }) = counters {
            let counters_sum = sum::counters(app, next_offset, next_sequence);
            let (next_offset, next_sequence) = (to_db(next_offset), to_db(next_sequence));
            steps.push(Box::pin(async move {
                c.execute(&st.store_counters, &[&app, &next_offset, &next_sequence, &counters_sum]).await
            }));
        }
        steps.push(Box::pin(async move { c.batch_execute("COMMIT").await.map(|()| 0) }));
        pipeline(steps).await
    }
}

impl Executor for PgWriter {
    const PROVIDER: &'static str = super::PROVIDER;

    fn app_key(&self) -> &str {
        &self.app_key
    }

    async fn execute(&mut self, work: Work<'_>) -> Result<Vec<Result<PersistResult>>> {
        if self.conn.is_fenced() {
            return Err(self.fenced_error());
        }
        let deadline = self.lease.unit_deadline();
        let Ok(result) = tokio::time::timeout(deadline, self.try_execute(work)).await else {
            // The outcome is unknown, as with any lost connection; the session may be gone.
            self.conn.fence();
            return Err(self.fenced_because(&format!("the server did not answer within {deadline:?}")));
        };
        self.settle(result).await
    }

    async fn release(self) {
        self.conn.unlock().await;
    }

    fn idle(&self) -> impl Future<Output = ()> + Send + 'static {
        self.lease.idle()
    }

    /// A heartbeat (an empty query) on the lock session, so the server's idle timeout does not
    /// end it; unanswered within the lease's deadline, the session is given up.
    async fn keep_alive(&mut self) -> Result<()> {
        if self.conn.is_fenced() {
            return Err(self.fenced_error());
        }
        let deadline = self.lease.heartbeat_deadline();
        match tokio::time::timeout(deadline, self.conn.client().simple_query("")).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                let e = storage(&self.app_key, "sending a heartbeat on the lock connection", e);
                self.settle::<()>(Err(e)).await
            }
            Err(_) => {
                self.conn.fence();
                Err(self.fenced_because(&format!("a heartbeat went unanswered for {deadline:?}")))
            }
        }
    }
}

impl PgWriter {
    /// After a unit of work: a failure that ended the session fences the store; any other
    /// failure leaves the session out of its (aborted) transaction.
    async fn settle<T>(&mut self, result: Result<T>) -> Result<T> {
        match result {
            Ok(value) => Ok(value),
            // Refused before anything was sent.
            Err(e @ Error::InvalidImport(_)) => Err(e),
            Err(e) if e.kind() == ErrorKind::Fenced => Err(e),
            Err(e) if self.conn.is_fenced() || ends_session(&e) => {
                // The session is gone (or going): so is the lock. Never write again.
                self.conn.fence();
                Err(self.fenced_error())
            }
            Err(e) => {
                // The transaction is aborted (COMMIT of an aborted transaction rolls back);
                // make sure the session is out of it before the next group.
                let _ = self.conn.client().batch_execute("ROLLBACK").await;
                Err(e)
            }
        }
    }
}

/// Whether a failed commit means the lock session ended: the connection closed, or the server
/// reported a fatal error, operator intervention (`pg_terminate_backend`, shutdown) or a
/// connection exception.
fn ends_session(error: &Error) -> bool {
    let Some(pg) = std::error::Error::source(error).and_then(|s| s.downcast_ref::<tokio_postgres::Error>())
    else {
        return false;
    };
    if pg.is_closed()
        || std::error::Error::source(pg).is_some_and(<dyn std::error::Error>::is::<std::io::Error>)
    {
        return true;
    }
    pg.as_db_error().is_some_and(|db| {
        let class = &db.code().code()[..2];
        matches!(db.severity(), "FATAL" | "PANIC") || class == "57" || class == "08"
    })
}

/// The pre-group state a group's batches expect, as a snapshot to plan against and as the
/// arrays of the statement that verifies it.
#[derive(Default)]
pub(super) struct Expected<'a> {
    pub(super) events: Vec<&'a str>,
    pub(super) agg_h: Vec<&'a str>,
    pub(super) agg_i: Vec<&'a str>,
    pub(super) agg_r: Vec<i64>,
    proc_h: Vec<&'a str>,
    proc_i: Vec<&'a str>,
    proc_r: Vec<i64>,
    queue_ids: Vec<&'a str>,
    queue_r: Vec<i64>,
    queue_th: Vec<Option<&'a str>>,
    queue_ti: Vec<Option<&'a str>>,
    pub(super) offset_src: Vec<&'a str>,
    pub(super) offset_r: Vec<i64>,
    pub(super) counters: Counters,
}

impl<'a> Expected<'a> {
    /// The statement that verifies this state, raising `STALE` if it does not hold.
    fn verify<'s>(&'s self, c: &'s Client, statement: &'s Statement, app: &'s str) -> Pending<'s> {
        Box::pin(async move {
            let (offset, sequence) = (to_db(self.counters.next_offset), to_db(self.counters.next_sequence));
            let params: [&(dyn ToSql + Sync); 16] = [
                &app,
                &self.events,
                &self.agg_h,
                &self.agg_i,
                &self.agg_r,
                &self.proc_h,
                &self.proc_i,
                &self.proc_r,
                &self.queue_ids,
                &self.queue_r,
                &self.queue_th,
                &self.queue_ti,
                &self.offset_src,
                &self.offset_r,
                &offset,
                &sequence,
            ];
            c.execute(statement, &params).await
        })
    }

    /// Each key as the first operation touching it expects it (revision 0: absent; events:
    /// absent), with the given counters.
    pub(super) fn of(batches: &'a [Batch], counters: Counters) -> (Snapshot, Self) {
        let mut x = Expected { counters, ..Expected::default() };
        for op in first_touches(batches) {
            match op {
                Operation::SaveAggregateMetaData(m) => {
                    x.agg_h.push(&m.handler_key);
                    x.agg_i.push(&m.instance_id);
                    x.agg_r.push(to_db(m.revision));
                }
                Operation::SaveProcessInstance(p) | Operation::RemoveProcessInstance(p) => {
                    x.proc_h.push(&p.handler_key);
                    x.proc_i.push(&p.instance_id);
                    x.proc_r.push(to_db(p.revision));
                }
                Operation::SaveEvent(e) => x.events.push(&e.message_id),
                Operation::SaveQueueMessage(m) | Operation::RemoveQueueMessage(m) => {
                    let owner = Write::timeout_owner(m);
                    x.queue_ids.push(m.id());
                    x.queue_r.push(to_db(m.revision));
                    x.queue_th.push(owner.map(|o| o.0));
                    x.queue_ti.push(owner.map(|o| o.1));
                }
                Operation::SaveOffset { application_key, current_offset, .. } => {
                    x.offset_src.push(application_key);
                    x.offset_r.push(to_db(*current_offset));
                }
            }
        }
        (Snapshot::assumed(batches, counters), x)
    }
}

/// The events of a group as column arrays.
#[derive(Default)]
pub(super) struct EventRows<'a> {
    pub(super) offsets: Vec<i64>,
    pub(super) ids: Vec<&'a str>,
    pub(super) names: Vec<&'a str>,
    pub(super) handlers: Vec<&'a str>,
    pub(super) instances: Vec<&'a str>,
    pub(super) envelopes: Vec<Vec<u8>>,
    pub(super) sums: Vec<i64>,
}

/// The last aggregate write per instance, as column arrays.
#[derive(Default)]
pub(super) struct AggregateRows<'a> {
    pub(super) handlers: Vec<&'a str>,
    pub(super) instances: Vec<&'a str>,
    pub(super) revisions: Vec<i64>,
    pub(super) last_ids: Vec<&'a str>,
    pub(super) sums: Vec<i64>,
}

/// The last consumer-offset write per source, as column arrays.
#[derive(Default)]
pub(super) struct OffsetRows<'a> {
    pub(super) sources: Vec<&'a str>,
    pub(super) values: Vec<i64>,
    pub(super) sums: Vec<i64>,
}

/// Consecutive enqueues, as column arrays.
#[derive(Default)]
struct QueueRows<'a> {
    ids: Vec<&'a str>,
    revisions: Vec<i64>,
    failures: Vec<i64>,
    times: Vec<i64>,
    sequences: Vec<i64>,
    handlers: Vec<Option<&'a str>>,
    instances: Vec<Option<&'a str>>,
    envelopes: Vec<Vec<u8>>,
    envelope_sums: Vec<i64>,
    state_sums: Vec<i64>,
}

/// Process and queue writes, which interact (the timeout cascade) and so keep their order.
enum Ordered<'a> {
    PutProcess {
        handler: &'a str,
        instance: &'a str,
        revision: i64,
        media_type: &'a str,
        data: &'a [u8],
        sum: i64,
    },
    RemoveProcess {
        handler: &'a str,
        instance: &'a str,
    },
    Enqueue(QueueRows<'a>),
    UpdateQueue {
        id: &'a str,
        revision: i64,
        failure_count: i64,
        next_attempt_at: i64,
        sum: i64,
    },
    RemoveQueue {
        id: &'a str,
    },
}

/// A group's writes arranged for set-based statements. Events, aggregates and consumer offsets
/// touch only their own rows, so each becomes one statement (the last write per key wins, as
/// applying them in order would); process and queue writes stay in plan order.
#[derive(Default)]
pub(super) struct Writes<'a> {
    pub(super) events: EventRows<'a>,
    pub(super) aggregates: AggregateRows<'a>,
    pub(super) offsets: OffsetRows<'a>,
    ordered: Vec<Ordered<'a>>,
}

impl<'a> Writes<'a> {
    /// The writes of a plan, with the row checksums of `app_key`.
    #[allow(clippy::too_many_lines)] // one arm per kind of write
    pub(super) fn of(app_key: &str, writes: &[Write<'a>]) -> Self {
        let mut w = Self::default();
        let mut aggregate_index: HashMap<(&str, &str), usize> = HashMap::new();
        let mut offset_index: HashMap<&str, usize> = HashMap::new();
        // Consecutive enqueues become one statement.
        let mut enqueues: Option<QueueRows<'a>> = None;
        for write in writes {
            match *write {
                Write::AppendEvent { offset, envelope } => {
                    let e = &mut w.events;
                    e.offsets.push(to_db(offset));
                    e.ids.push(&envelope.message_id);
                    e.names.push(&envelope.portable_name);
                    e.handlers.push(envelope.source_handler_key());
                    e.instances.push(&envelope.source_instance_id);
                    let bytes = envelope.to_bytes();
                    e.sums.push(sum::event(app_key, offset, &bytes));
                    e.envelopes.push(bytes);
                }
                Write::InsertQueue { message, revision, sequence, next_attempt_at } => {
                    let q = enqueues.get_or_insert_with(QueueRows::default);
                    let owner = Write::timeout_owner(message);
                    q.ids.push(message.id());
                    q.revisions.push(to_db(revision));
                    q.failures.push(to_db(message.failure_count));
                    q.times.push(next_attempt_at.0);
                    q.sequences.push(to_db(sequence));
                    q.handlers.push(owner.map(|o| o.0));
                    q.instances.push(owner.map(|o| o.1));
                    let bytes = message.envelope.to_bytes();
                    q.envelope_sums.push(sum::queue_envelope(app_key, message.id(), sequence, &bytes));
                    q.state_sums.push(sum::queue_state(
                        app_key,
                        message.id(),
                        revision,
                        message.failure_count,
                        next_attempt_at.0,
                    ));
                    q.envelopes.push(bytes);
                }
                Write::PutAggregate { meta, revision } => {
                    let a = &mut w.aggregates;
                    let key = (meta.handler_key.as_str(), meta.instance_id.as_str());
                    let row_sum = sum::aggregate(app_key, key.0, key.1, revision, &meta.last_event_id);
                    if let Some(&i) = aggregate_index.get(&key) {
                        a.revisions[i] = to_db(revision);
                        a.last_ids[i] = &meta.last_event_id;
                        a.sums[i] = row_sum;
                    } else {
                        aggregate_index.insert(key, a.handlers.len());
                        a.handlers.push(key.0);
                        a.instances.push(key.1);
                        a.revisions.push(to_db(revision));
                        a.last_ids.push(&meta.last_event_id);
                        a.sums.push(row_sum);
                    }
                }
                Write::PutOffset { application_key, next_offset } => {
                    let o = &mut w.offsets;
                    let row_sum = sum::offset(app_key, application_key, next_offset);
                    if let Some(&i) = offset_index.get(application_key) {
                        o.values[i] = to_db(next_offset);
                        o.sums[i] = row_sum;
                    } else {
                        offset_index.insert(application_key, o.sources.len());
                        o.sources.push(application_key);
                        o.values.push(to_db(next_offset));
                        o.sums.push(row_sum);
                    }
                }
                // Process and queue writes interact (the timeout cascade): they keep their order,
                // after the enqueues that came before them.
                Write::PutProcess { instance, revision } => w.push_ordered(
                    &mut enqueues,
                    Ordered::PutProcess {
                        handler: &instance.handler_key,
                        instance: &instance.instance_id,
                        revision: to_db(revision),
                        media_type: &instance.packet.media_type,
                        data: &instance.packet.data,
                        sum: sum::process_instance(app_key, instance, revision),
                    },
                ),
                Write::RemoveProcess { handler_key, instance_id } => w.push_ordered(
                    &mut enqueues,
                    Ordered::RemoveProcess { handler: handler_key, instance: instance_id },
                ),
                Write::UpdateQueue { message_id, revision, failure_count, next_attempt_at } => w
                    .push_ordered(
                        &mut enqueues,
                        Ordered::UpdateQueue {
                            id: message_id,
                            revision: to_db(revision),
                            failure_count: to_db(failure_count),
                            next_attempt_at: next_attempt_at.0,
                            sum: sum::queue_state(
                                app_key,
                                message_id,
                                revision,
                                failure_count,
                                next_attempt_at.0,
                            ),
                        },
                    ),
                Write::RemoveQueue { message_id } => {
                    w.push_ordered(&mut enqueues, Ordered::RemoveQueue { id: message_id });
                }
            }
        }
        if let Some(q) = enqueues.take() {
            w.ordered.push(Ordered::Enqueue(q));
        }
        w
    }

    /// Appends a process or queue write after the enqueues collected so far.
    fn push_ordered(&mut self, enqueues: &mut Option<QueueRows<'a>>, step: Ordered<'a>) {
        if let Some(q) = enqueues.take() {
            self.ordered.push(Ordered::Enqueue(q));
        }
        self.ordered.push(step);
    }
}
