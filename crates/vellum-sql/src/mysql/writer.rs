//! The store's executor for the commit engine (`vellum_core::commit`): one transaction per unit
//! of work (a group of batches or an import) on the store's lock connection.
//!
//! Per unit: one `UNION ALL` query reads the counter row and every row planning looks at; the
//! plan (`vellum_core::plan`) decides every batch; the writes go out as multi-row statements (events,
//! aggregates and offsets in one statement each; process and queue writes coalesced per kind
//! as far as reordering cannot change the result); one counter update; one `COMMIT`. Once the
//! writer knows the counters it left, a group of event, aggregate and offset saves skips the
//! read: `assumed.rs` writes it with statements that check what its batches expect.
//!
//! The session runs with `autocommit = 0`, so the first statement opens the transaction and no
//! `BEGIN` round trip is needed; every path ends it with `COMMIT` or `ROLLBACK`.

use std::collections::HashSet;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, Value};
use vellum_core::provider::{Counters, Plan, Planned, QueueState, Snapshot, StateKeys, Write};
use vellum_core::provider::{Executor, Work};
use vellum_core::{Batch, Envelope, Error, ErrorKind, PersistResult, QueueMessage, Result};

use crate::lease::Lease;

use super::assumed::Assumed;
use super::reads::bytes;
use super::{get_i64, get_string, opt_i64, opt_string};
use crate::schema::{from_db, to_db};
use crate::sums::{Rows, write as sum};

/// The most rows (or keys) one statement takes.
const MAX_ROWS: usize = 128;
/// The most parameters one state query takes (the protocol allows 65535).
const MAX_STATE_PARAMS: usize = 8192;

/// The executor of one store: runs each unit of work on the store's lock connection.
pub(super) struct MysqlWriter {
    pub(super) app_key: String,
    /// The store's dedicated connection, which holds its `GET_LOCK` (out while a unit runs).
    conn: Option<Conn>,
    lock_name: String,
    /// Set when the connection (and with it the lock) is gone: every later unit fails.
    lost: Option<String>,
    /// Bytes of parameters one statement may carry (half the server's `max_allowed_packet`).
    budget: usize,
    /// The lock session's lease: heartbeats while idle, deadlines for the server's answers.
    lease: Lease,
    /// The counters this writer left after its last commit (it is the application's only
    /// writer while it holds the lock); `None` until a unit read them, and after a failure.
    counters: Option<Counters>,
}

impl MysqlWriter {
    pub(super) fn new(
        app_key: String,
        conn: Conn,
        lock_name: String,
        max_packet: usize,
        lease: Lease,
    ) -> Self {
        let budget = (max_packet / 2).max(64 << 10);
        Self { app_key, conn: Some(conn), lock_name, lost: None, budget, lease, counters: None }
    }

    /// Gives the lock session up for good (its connection is dropped, so its socket closes):
    /// the store is fenced from now on.
    fn give_up(&mut self, reason: String) -> Error {
        let error = self.fenced(&reason);
        self.lost = Some(reason);
        error
    }

    /// The error of every unit once the lock connection is gone: the store is fenced.
    fn fenced(&self, reason: &str) -> Error {
        Error::storage_kind(
            ErrorKind::Fenced,
            format!(
                "mysql: the store of application {:?} lost its lock connection and refuses further \
                 writes; close it and open it again",
                self.app_key
            ),
            reason.to_owned(),
        )
    }

    pub(super) fn err(&self, what: &str, e: mysql_async::Error) -> Error {
        super::storage_for(&self.app_key, what, e)
    }

    /// A transaction error; an I/O error means the connection is gone. (For any other error,
    /// `settle` probes the connection with a `ROLLBACK`.)
    pub(super) fn tx_err(&self, what: &str, e: mysql_async::Error) -> TxError {
        let dead = matches!(e, mysql_async::Error::Io(_));
        (self.err(what, e), dead)
    }
}

impl Executor for MysqlWriter {
    const PROVIDER: &'static str = super::PROVIDER;

    fn app_key(&self) -> &str {
        &self.app_key
    }

    async fn execute(&mut self, work: Work<'_>) -> Result<Vec<Result<PersistResult>>> {
        if let Some(reason) = &self.lost {
            return Err(self.fenced(reason));
        }
        if let Work::Persist(batches) = work
            && batches.iter().all(Batch::is_empty)
        {
            return Ok(batches.iter().map(|_| Ok(PersistResult::default())).collect());
        }
        // Out of `self` for the unit's length (its methods borrow `self` too); a unit whose
        // future was dropped mid-way left no connection behind, and so no lock.
        let Some(mut conn) = self.conn.take() else {
            return Err(self.fenced("the lock connection was lost in an interrupted transaction"));
        };
        let deadline = self.lease.unit_deadline();
        let unit = async {
            let result = self.transaction(&mut conn, work).await;
            self.settle(&mut conn, result).await
        };
        let Ok(result) = tokio::time::timeout(deadline, unit).await else {
            // The outcome is unknown, as with any lost connection; `conn` is dropped here.
            return Err(self.give_up(format!("the server did not answer within {deadline:?}")));
        };
        self.conn = Some(conn);
        result
    }

    fn idle(&self) -> impl Future<Output = ()> + Send + 'static {
        self.lease.idle()
    }

    /// A `COM_PING` on the lock session, so the server's `wait_timeout` does not end it;
    /// unanswered within the lease's deadline, the session is given up.
    async fn keep_alive(&mut self) -> Result<()> {
        if let Some(reason) = &self.lost {
            return Err(self.fenced(reason));
        }
        let Some(mut conn) = self.conn.take() else {
            return Err(self.give_up("the lock connection was lost in an interrupted transaction".into()));
        };
        let deadline = self.lease.heartbeat_deadline();
        match tokio::time::timeout(deadline, conn.ping()).await {
            Ok(Ok(())) => {
                self.conn = Some(conn);
                Ok(())
            }
            Ok(Err(e)) => Err(self.give_up(format!("a heartbeat failed: {e}"))),
            Err(_) => Err(self.give_up(format!("a heartbeat went unanswered for {deadline:?}"))),
        }
    }

    async fn release(self) {
        // Release the lock before the store's close returns, so the key can be reopened at
        // once; if the connection is already dead, the server has released it.
        if let Some(mut conn) = self.conn {
            let _ = conn.exec_drop("DO RELEASE_LOCK(?)", (self.lock_name.as_str(),)).await;
            let _ = conn.disconnect().await;
        }
    }
}

impl MysqlWriter {
    /// Ends a failed transaction with a `ROLLBACK`; if the connection is gone (or cannot roll
    /// back), the lock is gone with it and the store is fenced from now on.
    async fn settle<T>(&mut self, conn: &mut Conn, result: Result<T, TxError>) -> Result<T> {
        match result {
            Ok(value) => Ok(value),
            Err((e, dead)) => {
                if dead || conn.query_drop("ROLLBACK").await.is_err() {
                    self.lost = Some(e.to_string());
                    return Err(self.fenced(&e.to_string()));
                }
                Err(e)
            }
        }
    }
}

/// An error and whether the connection is known to be unusable.
pub(super) type TxError = (Error, bool);

impl MysqlWriter {
    /// Reads the state `work` looks at, plans it, writes the plan and commits.
    async fn transaction(
        &mut self,
        conn: &mut Conn,
        work: Work<'_>,
    ) -> Result<Vec<Result<PersistResult>>, TxError> {
        // Forgotten until this unit's outcome is known.
        let known = self.counters.take();
        if let (Work::Persist(batches), Some(counters)) = (work, known)
            && let Assumed::Committed(outcomes, after) = self.commit_assumed(conn, batches, counters).await?
        {
            self.counters = Some(after);
            return Ok(outcomes);
        }
        let (mut snapshot, counter_row) = self.read_state(conn, &work.keys()).await?;
        let counters = snapshot.counters;
        // A refused import or a conflict is not the connection's fault (`ROLLBACK` ends the read).
        let Planned { outcomes, plan } = work.plan(&mut snapshot, counters).map_err(|e| (e, false))?;
        if !plan.is_empty() {
            self.write(conn, &plan).await?;
            if plan.counters_changed() || !counter_row {
                self.store_counters(conn, counter_row, plan.after).await?;
            }
        }
        // Also ends the read-only transaction of a unit that writes nothing.
        self.commit(conn).await?;
        self.counters = Some(plan.after);
        Ok(outcomes)
    }

    /// Reads the counter row and the rows of `keys` into a snapshot; also returns whether the
    /// counter row exists.
    pub(super) async fn read_state(
        &self,
        conn: &mut Conn,
        keys: &StateKeys,
    ) -> Result<(Snapshot, bool), TxError> {
        let mut snapshot = Snapshot::default();
        let mut counter_row = false;
        for (sql, params) in state_queries(&self.app_key, keys) {
            let rows: Vec<Row> = conn
                .exec(sql, params)
                .await
                .map_err(|e| self.tx_err("reading the rows a group checks", e))?;
            for row in rows {
                counter_row |= fill(&self.app_key, &mut snapshot, row).map_err(|e| (e, false))?;
            }
        }
        Ok((snapshot, counter_row))
    }

    /// Stores the counters: creates the counter row if there was none, else updates it.
    async fn store_counters(
        &self,
        conn: &mut Conn,
        row_exists: bool,
        Counters { next_offset, next_sequence }: Counters,
    ) -> Result<(), TxError> {
        let (offset, sequence) = (Value::Int(to_db(next_offset)), Value::Int(to_db(next_sequence)));
        let checksum = Value::Int(sum::counters(&self.app_key, next_offset, next_sequence));
        if !row_exists {
            return conn
                .exec_drop(
                    "INSERT INTO vellum_app (app_key, next_offset, next_sequence, checksum) VALUES (?, ?, ?, ?)",
                    vec![bytes(&self.app_key), offset, sequence, checksum],
                )
                .await
                .map_err(|e| self.tx_err("creating the counter row", e));
        }
        // This connection holds the app's lock, so the row read before is still current.
        conn.exec_drop(
            "UPDATE vellum_app SET next_offset = ?, next_sequence = ?, checksum = ? WHERE app_key = ?",
            vec![offset, sequence, checksum, bytes(&self.app_key)],
        )
        .await
        .map_err(|e| self.tx_err("storing the counters", e))
    }

    /// `COMMIT`. A failed COMMIT that the server did not itself reject may have committed: the
    /// store must not retry it, so it stops writing.
    pub(super) async fn commit(&self, conn: &mut Conn) -> Result<(), TxError> {
        conn.query_drop("COMMIT").await.map_err(|e| {
            let dead = !matches!(e, mysql_async::Error::Server(_));
            (self.err("committing", e), dead)
        })
    }

    async fn write(&self, conn: &mut Conn, plan: &Plan<'_>) -> Result<(), TxError> {
        let GroupRows { events, aggregates, offsets, processes, queue } = GroupRows::of(&self.app_key, plan);
        let mut statements = Statements { conn, writer: self };
        statements
            .insert(
                "INSERT INTO vellum_event (app_key, event_offset, message_id, portable_name, handler_key, \
                 instance_id, envelope, checksum) VALUES ",
                "",
                events,
            )
            .await?;
        statements
            .insert(
                "INSERT INTO vellum_aggregate (app_key, handler_key, instance_id, revision, last_event_id, \
                 checksum) VALUES ",
                " ON DUPLICATE KEY UPDATE revision = VALUES(revision), last_event_id = VALUES(last_event_id), \
                 checksum = VALUES(checksum)",
                aggregates,
            )
            .await?;
        statements
            .insert(
                "INSERT INTO vellum_offset (app_key, source_app_key, next_offset, checksum) VALUES ",
                " ON DUPLICATE KEY UPDATE next_offset = VALUES(next_offset), checksum = VALUES(checksum)",
                offsets,
            )
            .await?;
        for step in processes.steps {
            statements.process_step(step).await?;
        }
        for step in queue.steps {
            statements.queue_step(step).await?;
        }
        Ok(())
    }
}

/// A group's writes as statement rows, in the order they must run.
struct GroupRows<'a> {
    events: Vec<Vec<Value>>,
    aggregates: Vec<Vec<Value>>,
    offsets: Vec<Vec<Value>>,
    processes: ProcessStream<'a>,
    queue: QueueStream<'a>,
}

impl<'a> GroupRows<'a> {
    fn of(app_key: &str, plan: &Plan<'a>) -> Self {
        let app = bytes(app_key);
        let mut events = Vec::new();
        let mut aggregates = Vec::new();
        let mut offsets = Vec::new();
        let mut processes = ProcessStream::default();
        let mut queue = QueueStream::default();
        for write in &plan.writes {
            match *write {
                Write::AppendEvent { offset, envelope } => events.push(event_row(app_key, offset, envelope)),
                Write::InsertQueue { message, revision, sequence, next_attempt_at } => {
                    let owner = Write::timeout_owner(message);
                    let row = queue_row(app_key, message, owner, revision, sequence, next_attempt_at.0);
                    queue.insert(message.id(), owner, row);
                }
                Write::PutAggregate { meta, revision } => aggregates.push(vec![
                    app.clone(),
                    bytes(&meta.handler_key),
                    bytes(&meta.instance_id),
                    Value::Int(to_db(revision)),
                    bytes(&meta.last_event_id),
                    Value::Int(sum::aggregate(
                        app_key,
                        &meta.handler_key,
                        &meta.instance_id,
                        revision,
                        &meta.last_event_id,
                    )),
                ]),
                Write::PutProcess { instance, revision } => {
                    let row = vec![
                        app.clone(),
                        bytes(&instance.handler_key),
                        bytes(&instance.instance_id),
                        Value::Int(to_db(revision)),
                        bytes(&instance.packet.media_type),
                        Value::Bytes(instance.packet.data.clone()),
                        Value::Int(sum::process_instance(app_key, instance, revision)),
                    ];
                    processes.put((&instance.handler_key, &instance.instance_id), row);
                }
                Write::RemoveProcess { handler_key, instance_id } => {
                    processes.remove((handler_key, instance_id));
                    queue.remove_timeouts((handler_key, instance_id));
                }
                Write::UpdateQueue { message_id, revision, failure_count, next_attempt_at } => {
                    let row = vec![
                        Value::Int(to_db(revision)),
                        Value::Int(to_db(failure_count)),
                        Value::Int(next_attempt_at.0),
                        Value::Int(sum::queue_state(
                            app_key,
                            message_id,
                            revision,
                            failure_count,
                            next_attempt_at.0,
                        )),
                        app.clone(),
                        bytes(message_id),
                    ];
                    queue.update(message_id, row);
                }
                Write::RemoveQueue { message_id } => queue.remove(message_id),
                Write::PutOffset { application_key, next_offset } => {
                    offsets.push(vec![
                        app.clone(),
                        bytes(application_key),
                        Value::Int(to_db(next_offset)),
                        Value::Int(sum::offset(app_key, application_key, next_offset)),
                    ]);
                }
            }
        }
        processes.flush();
        queue.flush();
        Self { events, aggregates, offsets, processes, queue }
    }
}

/// The `vellum_event` row of an event at `offset`.
pub(super) fn event_row(app_key: &str, offset: u64, envelope: &Envelope) -> Vec<Value> {
    let envelope_bytes = envelope.to_bytes();
    let checksum = sum::event(app_key, offset, &envelope_bytes);
    vec![
        bytes(app_key),
        Value::Int(to_db(offset)),
        bytes(&envelope.message_id),
        bytes(&envelope.portable_name),
        bytes(envelope.source_handler_key()),
        bytes(&envelope.source_instance_id),
        Value::Bytes(envelope_bytes),
        Value::Int(checksum),
    ]
}

/// The `vellum_queue` row of a new message (`next_attempt_at` in microseconds).
fn queue_row(
    app_key: &str,
    message: &QueueMessage,
    owner: Option<Key<'_>>,
    revision: u64,
    sequence: u64,
    next_attempt_at: i64,
) -> Vec<Value> {
    let (message_id, envelope_bytes) = (message.id(), message.envelope.to_bytes());
    let (hk, id) = owner.map_or((Value::NULL, Value::NULL), |(h, i)| (bytes(h), bytes(i)));
    let envelope_sum = sum::queue_envelope(app_key, message_id, sequence, &envelope_bytes);
    let state_sum = sum::queue_state(app_key, message_id, revision, message.failure_count, next_attempt_at);
    vec![
        bytes(app_key),
        bytes(message_id),
        Value::Int(to_db(revision)),
        Value::Int(to_db(message.failure_count)),
        Value::Int(next_attempt_at),
        Value::Int(to_db(sequence)),
        hk,
        id,
        Value::Bytes(envelope_bytes),
        Value::Int(envelope_sum),
        Value::Int(state_sum),
    ]
}

/// Reads one state row into the snapshot; returns whether it was the counter row.
fn fill(app_key: &str, snapshot: &mut Snapshot, mut row: Row) -> Result<bool> {
    match get_i64(&mut row, 0)? {
        0 => {
            let (offset, sequence) = (get_i64(&mut row, 4)?, get_i64(&mut row, 5)?);
            // Offsets and sequences are handed out from these: damage must stop the writer.
            Rows { provider: super::PROVIDER, app_key }.counters(offset, sequence, get_i64(&mut row, 6)?)?;
            snapshot.counters = Counters { next_offset: from_db(offset), next_sequence: from_db(sequence) };
            return Ok(true);
        }
        1 => {
            let key = (get_string(&mut row, 1)?, get_string(&mut row, 2)?);
            snapshot.aggregates.insert(key, from_db(get_i64(&mut row, 4)?));
        }
        2 => {
            let key = (get_string(&mut row, 1)?, get_string(&mut row, 2)?);
            snapshot.processes.insert(key, from_db(get_i64(&mut row, 4)?));
        }
        3 => {
            let id = get_string(&mut row, 1)?;
            let owner = opt_string(&mut row, 2)?.zip(opt_string(&mut row, 3)?);
            let revision = from_db(get_i64(&mut row, 4)?);
            snapshot.queue.insert(id, QueueState { revision, timeout_owner: owner });
        }
        4 => {
            let key = get_string(&mut row, 1)?;
            snapshot.offsets.insert(key, from_db(opt_i64(&mut row, 4)?.unwrap_or(0)));
        }
        _ => {
            snapshot.events.insert(get_string(&mut row, 1)?);
        }
    }
    Ok(false)
}

/// `n` rounded up to a power of two (so `IN` lists come in few shapes).
fn padded(n: usize) -> usize {
    n.next_power_of_two()
}

/// The state queries of a group: usually one `UNION ALL` of the counter row and each kind of
/// row, with `IN`/`OR` lists padded to powers of two by repeating the last key.
fn state_queries(app_key: &str, keys: &StateKeys) -> Vec<(String, Vec<Value>)> {
    let app = bytes(app_key);
    let mut parts: Vec<(String, Vec<Value>)> = vec![(
        "SELECT 0 AS kind, NULL AS k1, NULL AS k2, NULL AS k3, next_offset AS n1, next_sequence AS n2, \
         checksum AS n3 FROM vellum_app WHERE app_key = ?"
            .to_owned(),
        vec![app.clone()],
    )];
    let pairs = |kind: u8, table: &str, list: &[(String, String)], parts: &mut Vec<(String, Vec<Value>)>| {
        for chunk in list.chunks(MAX_ROWS * 8) {
            let n = padded(chunk.len());
            let cond = vec!["(handler_key = ? AND instance_id = ?)"; n].join(" OR ");
            let mut params = vec![app.clone()];
            for i in 0..n {
                let (a, b) = &chunk[i.min(chunk.len() - 1)];
                params.extend([bytes(a), bytes(b)]);
            }
            parts.push((
                format!(
                    "SELECT {kind}, handler_key, instance_id, NULL, revision, NULL, NULL FROM {table} \
                     WHERE app_key = ? AND ({cond})"
                ),
                params,
            ));
        }
    };
    pairs(1, "vellum_aggregate", &keys.aggregates, &mut parts);
    pairs(2, "vellum_process", &keys.processes, &mut parts);
    let singles = |select: &str, column: &str, list: &[String], parts: &mut Vec<(String, Vec<Value>)>| {
        for chunk in list.chunks(MAX_ROWS * 8) {
            let n = padded(chunk.len());
            let mut params = vec![app.clone()];
            params.extend((0..n).map(|i| bytes(&chunk[i.min(chunk.len() - 1)])));
            parts.push((format!("{select} WHERE app_key = ? AND {column} IN ({})", placeholders(n)), params));
        }
    };
    singles(
        "SELECT 3, message_id, timeout_handler_key, timeout_instance_id, revision, NULL, NULL FROM vellum_queue",
        "message_id",
        &keys.queue,
        &mut parts,
    );
    singles(
        "SELECT 4, source_app_key, NULL, NULL, next_offset, NULL, NULL FROM vellum_offset",
        "source_app_key",
        &keys.offsets,
        &mut parts,
    );
    singles(
        "SELECT 5, message_id, NULL, NULL, NULL, NULL, NULL FROM vellum_event",
        "message_id",
        &keys.events,
        &mut parts,
    );

    // Join parts into as few queries as the parameter limit allows.
    let mut queries: Vec<(String, Vec<Value>)> = Vec::new();
    for (sql, params) in parts {
        match queries.last_mut() {
            Some((q, p)) if p.len() + params.len() <= MAX_STATE_PARAMS => {
                q.push_str(" UNION ALL ");
                q.push_str(&sql);
                p.extend(params);
            }
            _ => queries.push((sql, params)),
        }
    }
    queries
}

fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// The row counts a multi-row statement is built for: every count up to 16, then powers of two
/// up to [`MAX_ROWS`], so a writer connection caches at most 19 shapes per statement.
fn chunk_len(available: usize) -> usize {
    match available {
        0..=16 => available,
        _ => 1 << available.min(MAX_ROWS).ilog2(),
    }
}

fn row_bytes(row: &[Value]) -> usize {
    row.iter().map(|v| if let Value::Bytes(b) = v { b.len() + 4 } else { 9 }).sum()
}

/// Executes multi-row statements on the writer connection.
pub(super) struct Statements<'c, 'w> {
    pub(super) conn: &'c mut Conn,
    pub(super) writer: &'w MysqlWriter,
}

impl Statements<'_, '_> {
    /// Runs an update meant to change exactly one row; `false` if it changed none (or more).
    pub(super) async fn update_one(&mut self, sql: &str, params: Vec<Value>) -> Result<bool, TxError> {
        self.conn.exec_drop(sql, params).await.map_err(|e| self.writer.tx_err("writing a group", e))?;
        Ok(self.conn.affected_rows() == 1)
    }

    async fn process_step(&mut self, step: ProcessStep<'_>) -> Result<(), TxError> {
        match step {
            ProcessStep::Put(rows) => {
                self.insert(
                    "INSERT INTO vellum_process (app_key, handler_key, instance_id, revision, media_type, data, \
                     checksum) VALUES ",
                    " ON DUPLICATE KEY UPDATE revision = VALUES(revision), \
                     media_type = VALUES(media_type), data = VALUES(data), checksum = VALUES(checksum)",
                    rows,
                )
                .await
            }
            ProcessStep::Remove(keys) => {
                self.delete_pairs("DELETE FROM vellum_process", "handler_key", "instance_id", &keys).await
            }
        }
    }

    async fn queue_step(&mut self, step: QueueStep<'_>) -> Result<(), TxError> {
        match step {
            QueueStep::Insert(rows) => {
                self.insert(
                    "INSERT INTO vellum_queue (app_key, message_id, revision, failure_count, next_attempt_at, \
                     sequence, timeout_handler_key, timeout_instance_id, envelope, envelope_checksum, \
                     state_checksum) VALUES ",
                    "",
                    rows,
                )
                .await
            }
            // A missing row (removed by a cascade earlier in its batch) is a no-op. On MariaDB
            // `exec_batch` sends every row in one bulk command.
            QueueStep::Update(rows) => self
                .conn
                .exec_batch(
                    "UPDATE vellum_queue SET revision = ?, failure_count = ?, next_attempt_at = ?, \
                     state_checksum = ? WHERE app_key = ? AND message_id = ?",
                    rows,
                )
                .await
                .map_err(|e| self.writer.tx_err("updating queue messages", e)),
            QueueStep::Remove(ids) => self.delete_ids(&ids).await,
            QueueStep::RemoveTimeouts(owners) => {
                self.delete_pairs("DELETE FROM vellum_queue", "timeout_handler_key", "timeout_instance_id", &owners)
                    .await
            }
        }
    }

    /// `head` + `(?, …), (?, …)` + `tail` for all `rows`, in order, in chunks.
    pub(super) async fn insert(
        &mut self,
        head: &str,
        tail: &str,
        rows: Vec<Vec<Value>>,
    ) -> Result<(), TxError> {
        let mut rows = rows.into_iter().peekable();
        let Some(width) = rows.peek().map(Vec::len) else {
            return Ok(());
        };
        let row_sql = format!("({})", placeholders(width));
        let mut pending: Vec<Vec<Value>> = rows.collect();
        pending.reverse(); // pop from the end = take in order
        while !pending.is_empty() {
            // How many of the next rows fit the byte budget (at least one).
            let mut size = 0;
            let mut fit = 0;
            for row in pending.iter().rev().take(MAX_ROWS) {
                size += row_bytes(row);
                if fit > 0 && size > self.writer.budget {
                    break;
                }
                fit += 1;
            }
            let n = chunk_len(fit);
            let mut params = Vec::with_capacity(n * width);
            for _ in 0..n {
                params.extend(pending.pop().unwrap_or_default());
            }
            let sql = format!("{head}{}{tail}", vec![row_sql.as_str(); n].join(", "));
            self.conn.exec_drop(sql, params).await.map_err(|e| self.writer.tx_err("writing a group", e))?;
        }
        Ok(())
    }

    /// `DELETE … WHERE app_key = ? AND ((a = ? AND b = ?) OR …)`.
    async fn delete_pairs(
        &mut self,
        head: &str,
        first: &str,
        second: &str,
        keys: &[Key<'_>],
    ) -> Result<(), TxError> {
        for chunk in keys.chunks(MAX_ROWS) {
            let count = padded(chunk.len());
            let cond = vec![format!("({first} = ? AND {second} = ?)"); count].join(" OR ");
            let mut params = vec![bytes(&self.writer.app_key)];
            for i in 0..count {
                let (x, y) = chunk[i.min(chunk.len() - 1)];
                params.extend([bytes(x), bytes(y)]);
            }
            self.conn
                .exec_drop(format!("{head} WHERE app_key = ? AND ({cond})"), params)
                .await
                .map_err(|e| self.writer.tx_err("deleting rows", e))?;
        }
        Ok(())
    }

    /// `DELETE FROM vellum_queue WHERE app_key = ? AND message_id IN (…)`.
    async fn delete_ids(&mut self, ids: &[&str]) -> Result<(), TxError> {
        for chunk in ids.chunks(MAX_ROWS) {
            let n = padded(chunk.len());
            let mut params = vec![bytes(&self.writer.app_key)];
            params.extend((0..n).map(|i| bytes(chunk[i.min(chunk.len() - 1)])));
            self.conn
                .exec_drop(
                    format!(
                        "DELETE FROM vellum_queue WHERE app_key = ? AND message_id IN ({})",
                        placeholders(n)
                    ),
                    params,
                )
                .await
                .map_err(|e| self.writer.tx_err("removing queue messages", e))?;
        }
        Ok(())
    }
}

type Key<'a> = (&'a str, &'a str);

/// Process writes in plan order, coalesced: upserts and deletes of different instances commute.
#[derive(Default)]
struct ProcessStream<'a> {
    steps: Vec<ProcessStep<'a>>,
    puts: Vec<Vec<Value>>,
    put_keys: HashSet<Key<'a>>,
    removes: Vec<Key<'a>>,
    remove_keys: HashSet<Key<'a>>,
}

enum ProcessStep<'a> {
    Put(Vec<Vec<Value>>),
    Remove(Vec<Key<'a>>),
}

impl<'a> ProcessStream<'a> {
    fn put(&mut self, key: Key<'a>, row: Vec<Value>) {
        if self.remove_keys.contains(&key) {
            self.flush();
        }
        self.puts.push(row);
        self.put_keys.insert(key);
    }

    fn remove(&mut self, key: Key<'a>) {
        if self.put_keys.contains(&key) {
            self.flush();
        }
        self.removes.push(key);
        self.remove_keys.insert(key);
    }

    /// Emits the pending writes; they touch disjoint rows, so their order is free.
    fn flush(&mut self) {
        if !self.removes.is_empty() {
            self.steps.push(ProcessStep::Remove(std::mem::take(&mut self.removes)));
        }
        if !self.puts.is_empty() {
            self.steps.push(ProcessStep::Put(std::mem::take(&mut self.puts)));
        }
        self.put_keys.clear();
        self.remove_keys.clear();
    }
}

/// Queue writes in plan order, coalesced per kind while the pending writes of different kinds
/// provably commute (different message IDs; timeouts of other owners; deletes always commute).
#[derive(Default)]
struct QueueStream<'a> {
    steps: Vec<QueueStep<'a>>,
    inserts: Vec<Vec<Value>>,
    insert_ids: HashSet<&'a str>,
    insert_owners: HashSet<Key<'a>>,
    updates: Vec<Vec<Value>>,
    update_ids: HashSet<&'a str>,
    removes: Vec<&'a str>,
    remove_ids: HashSet<&'a str>,
    timeouts: Vec<Key<'a>>,
}

enum QueueStep<'a> {
    Insert(Vec<Vec<Value>>),
    Update(Vec<Vec<Value>>),
    Remove(Vec<&'a str>),
    RemoveTimeouts(Vec<Key<'a>>),
}

impl<'a> QueueStream<'a> {
    fn insert(&mut self, id: &'a str, owner: Option<Key<'a>>, row: Vec<Value>) {
        let owner_removed = owner.is_some_and(|o| self.timeouts.contains(&o));
        if self.update_ids.contains(id) || self.remove_ids.contains(id) || owner_removed {
            self.flush();
        }
        self.inserts.push(row);
        self.insert_ids.insert(id);
        if let Some(owner) = owner {
            self.insert_owners.insert(owner);
        }
    }

    fn update(&mut self, id: &'a str, row: Vec<Value>) {
        // An update's owner is unknown here, so it never shares a step with a cascade.
        if self.insert_ids.contains(id) || self.remove_ids.contains(id) || !self.timeouts.is_empty() {
            self.flush();
        }
        self.updates.push(row);
        self.update_ids.insert(id);
    }

    fn remove(&mut self, id: &'a str) {
        if self.insert_ids.contains(id) || self.update_ids.contains(id) {
            self.flush();
        }
        self.removes.push(id);
        self.remove_ids.insert(id);
    }

    fn remove_timeouts(&mut self, owner: Key<'a>) {
        if self.insert_owners.contains(&owner) || !self.updates.is_empty() {
            self.flush();
        }
        self.timeouts.push(owner);
    }

    fn flush(&mut self) {
        if !self.removes.is_empty() {
            self.steps.push(QueueStep::Remove(std::mem::take(&mut self.removes)));
        }
        if !self.timeouts.is_empty() {
            self.steps.push(QueueStep::RemoveTimeouts(std::mem::take(&mut self.timeouts)));
        }
        if !self.updates.is_empty() {
            self.steps.push(QueueStep::Update(std::mem::take(&mut self.updates)));
        }
        if !self.inserts.is_empty() {
            self.steps.push(QueueStep::Insert(std::mem::take(&mut self.inserts)));
        }
        self.insert_ids.clear();
        self.insert_owners.clear();
        self.update_ids.clear();
        self.remove_ids.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_lengths_come_in_few_shapes() {
        assert_eq!(chunk_len(1), 1);
        assert_eq!(chunk_len(16), 16);
        assert_eq!(chunk_len(17), 16);
        assert_eq!(chunk_len(100), 64);
        assert_eq!(chunk_len(1000), 128);
    }

    #[test]
    fn queue_writes_of_disjoint_messages_coalesce() {
        let mut q = QueueStream::default();
        for (i, id) in ["a", "b", "c"].into_iter().enumerate() {
            q.insert(id, None, vec![Value::Int(i64::from(u8::try_from(i).unwrap_or(0)))]);
            q.remove(["x", "y", "z"][i]);
        }
        q.flush();
        assert_eq!(q.steps.len(), 2);
    }

    #[test]
    fn a_cascade_after_an_insert_of_its_timeout_keeps_the_order() {
        let mut q = QueueStream::default();
        q.insert("t", Some(("p", "i")), vec![]);
        q.remove_timeouts(("p", "i"));
        q.insert("t", Some(("p", "i")), vec![]);
        q.flush();
        let kinds: Vec<&str> = q
            .steps
            .iter()
            .map(|s| match s {
                QueueStep::Insert(_) => "insert",
                QueueStep::Update(_) => "update",
                QueueStep::Remove(_) => "remove",
                QueueStep::RemoveTimeouts(_) => "timeouts",
            })
            .collect();
        assert_eq!(kinds, ["insert", "timeouts", "insert"]);
    }
}
