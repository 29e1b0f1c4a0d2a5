//! A group committed without reading the state first. The store's writer holds the
//! application's lock, so the counters it left after its last commit are current, and each key
//! is as the first batch touching it expects unless that batch is wrong. The writer plans
//! against that assumed state (`Snapshot::assumed`) and its writes check it as they go: the
//! counter update and each aggregate or offset update match only the expected row (one row
//! affected), each insert of an expected-absent row fails on a stored one (duplicate key).
//! A miss rolls the transaction back and the read path decides. It saves the state read, one
//! round trip of the five a one-event batch took.
//!
//! Only groups of event, aggregate and consumer-offset saves whose every batch succeeds
//! against the assumed state take it: then every expectation has a write that checks it (a
//! failing batch would leave expectations unchecked, and the outcome must be the one the
//! stored state gives).

use std::collections::HashMap;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Value};
use vellum_core::provider::{Counters, Plan, Planned, Snapshot, Write, plan_group};
use vellum_core::{Batch, Operation, PersistResult};

use super::reads::bytes;
use super::writer::{MysqlWriter, Statements, TxError, event_row};
use crate::schema::to_db;
use crate::sums::write as sum;

/// MySQL's `ER_DUP_ENTRY`: an insert met a stored key.
const DUPLICATE_KEY: u16 = 1062;

/// What a group committed on assumptions came to.
pub(super) enum Assumed {
    /// Committed: one outcome per batch, and the counters after it.
    Committed(Vec<vellum_core::Result<PersistResult>>, Counters),
    /// Not taken, or an assumption did not hold: nothing was written (rolled back).
    Stale,
}

impl MysqlWriter {
    /// Commits `batches` against the state they expect and `counters`, if the group is one
    /// this path takes (module docs).
    pub(super) async fn commit_assumed(
        &self,
        conn: &mut Conn,
        batches: &[Batch],
        counters: Counters,
    ) -> Result<Assumed, TxError> {
        if !batches.iter().flat_map(Batch::iter).all(checked_by_its_write) {
            return Ok(Assumed::Stale);
        }
        let assumed = Snapshot::assumed(batches, counters);
        let mut planned_against = assumed.clone();
        let Ok(Planned { outcomes, plan }) = plan_group(batches, &mut planned_against, counters) else {
            return Ok(Assumed::Stale);
        };
        if plan.is_empty() || outcomes.iter().any(Result::is_err) {
            return Ok(Assumed::Stale);
        }
        match self.write_assumed(conn, &plan, &assumed).await {
            Ok(true) => {
                self.commit(conn).await?;
                Ok(Assumed::Committed(outcomes, plan.after))
            }
            Ok(false) => self.roll_back(conn).await,
            Err((e, false)) if is_duplicate_key(&e) => self.roll_back(conn).await,
            Err(e) => Err(e),
        }
    }

    async fn roll_back(&self, conn: &mut Conn) -> Result<Assumed, TxError> {
        conn.query_drop("ROLLBACK").await.map_err(|e| self.tx_err("rolling back a stale group", e))?;
        Ok(Assumed::Stale)
    }

    /// Writes `plan`, checking `assumed` on the way; `false`: an update matched no row.
    async fn write_assumed(
        &self,
        conn: &mut Conn,
        plan: &Plan<'_>,
        assumed: &Snapshot,
    ) -> Result<bool, TxError> {
        let app = self.app_key.as_str();
        if plan.counters_changed() {
            let (before, after) = (plan.before, plan.after);
            let params = vec![
                Value::Int(to_db(after.next_offset)),
                Value::Int(to_db(after.next_sequence)),
                Value::Int(sum::counters(app, after.next_offset, after.next_sequence)),
                bytes(app),
                Value::Int(to_db(before.next_offset)),
                Value::Int(to_db(before.next_sequence)),
            ];
            conn.exec_drop(
                "UPDATE vellum_app SET next_offset = ?, next_sequence = ?, checksum = ? \
                 WHERE app_key = ? AND next_offset = ? AND next_sequence = ?",
                params,
            )
            .await
            .map_err(|e| self.tx_err("storing the counters", e))?;
            if conn.affected_rows() != 1 {
                return Ok(false);
            }
        }
        let rows = Rows::of(app, plan, assumed);
        let mut statements = Statements { conn, writer: self };
        statements.insert(EVENT_INSERT, "", rows.events).await?;
        statements.insert(AGGREGATE_INSERT, "", rows.new_aggregates).await?;
        statements.insert(OFFSET_INSERT, "", rows.new_offsets).await?;
        for params in rows.aggregate_updates {
            if !statements.update_one(AGGREGATE_UPDATE, params).await? {
                return Ok(false);
            }
        }
        for params in rows.offset_updates {
            if !statements.update_one(OFFSET_UPDATE, params).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

const EVENT_INSERT: &str = "INSERT INTO vellum_event (app_key, event_offset, message_id, portable_name, \
                            handler_key, instance_id, envelope, checksum) VALUES ";
const AGGREGATE_INSERT: &str = "INSERT INTO vellum_aggregate (app_key, handler_key, instance_id, revision, last_event_id, checksum) VALUES ";
const OFFSET_INSERT: &str =
    "INSERT INTO vellum_offset (app_key, source_app_key, next_offset, checksum) VALUES ";
const AGGREGATE_UPDATE: &str = "UPDATE vellum_aggregate SET revision = ?, last_event_id = ?, checksum = ? \
                                WHERE app_key = ? AND handler_key = ? AND instance_id = ? AND revision = ?";
const OFFSET_UPDATE: &str = "UPDATE vellum_offset SET next_offset = ?, checksum = ? \
                             WHERE app_key = ? AND source_app_key = ? AND next_offset = ?";

/// Whether an operation's assumption is checked by the write it makes: event, aggregate and
/// offset saves, except an offset saved at its current value (its update changes no row, so
/// it could not tell a match from a miss).
fn checked_by_its_write(op: &Operation) -> bool {
    match op {
        Operation::SaveEvent(_) | Operation::SaveAggregateMetaData(_) => true,
        Operation::SaveOffset { current_offset, next_offset, .. } => current_offset != next_offset,
        _ => false,
    }
}

fn is_duplicate_key(error: &vellum_core::Error) -> bool {
    std::error::Error::source(error)
        .and_then(|s| s.downcast_ref::<mysql_async::Error>())
        .is_some_and(|e| matches!(e, mysql_async::Error::Server(s) if s.code == DUPLICATE_KEY))
}

/// A plan's writes as statement parameters: inserts of the rows expected absent, updates of
/// those expected at a revision or offset (the last write per key; its expectation is the
/// first batch's).
#[derive(Default)]
struct Rows {
    events: Vec<Vec<Value>>,
    new_aggregates: Vec<Vec<Value>>,
    aggregate_updates: Vec<Vec<Value>>,
    new_offsets: Vec<Vec<Value>>,
    offset_updates: Vec<Vec<Value>>,
}

impl Rows {
    fn of(app_key: &str, plan: &Plan<'_>, assumed: &Snapshot) -> Self {
        let mut rows = Rows::default();
        let mut aggregates = HashMap::new();
        let mut offsets = HashMap::new();
        for write in &plan.writes {
            match *write {
                Write::AppendEvent { offset, envelope } => {
                    rows.events.push(event_row(app_key, offset, envelope));
                }
                Write::PutAggregate { meta, revision } => {
                    aggregates
                        .insert((meta.handler_key.as_str(), meta.instance_id.as_str()), (meta, revision));
                }
                Write::PutOffset { application_key, next_offset } => {
                    offsets.insert(application_key, next_offset);
                }
                // Groups with other writes do not take this path (`checked_by_its_write`).
                _ => {}
            }
        }
        let app = bytes(app_key);
        for ((handler, instance), (meta, revision)) in aggregates {
            let sum = sum::aggregate(app_key, handler, instance, revision, &meta.last_event_id);
            let key = (handler.to_owned(), instance.to_owned());
            match assumed.aggregates.get(&key) {
                None => rows.new_aggregates.push(vec![
                    app.clone(),
                    bytes(handler),
                    bytes(instance),
                    Value::Int(to_db(revision)),
                    bytes(&meta.last_event_id),
                    Value::Int(sum),
                ]),
                Some(&expected) => rows.aggregate_updates.push(vec![
                    Value::Int(to_db(revision)),
                    bytes(&meta.last_event_id),
                    Value::Int(sum),
                    app.clone(),
                    bytes(handler),
                    bytes(instance),
                    Value::Int(to_db(expected)),
                ]),
            }
        }
        for (source, next) in offsets {
            let sum = Value::Int(sum::offset(app_key, source, next));
            match assumed.offsets.get(source).copied().unwrap_or(0) {
                0 => rows.new_offsets.push(vec![app.clone(), bytes(source), Value::Int(to_db(next)), sum]),
                expected => rows.offset_updates.push(vec![
                    Value::Int(to_db(next)),
                    sum,
                    app.clone(),
                    bytes(source),
                    Value::Int(to_db(expected)),
                ]),
            }
        }
        rows
    }
}
