//! [`MysqlStore`]: one open application store; reads on the pool, writes through the committer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Pool, Row, Value};
use tracing::Instrument as _;
use vellum_core::time::Micros;
use vellum_core::{
    AggregateMetaData, AggregateRepository, Batch, DataStore, Envelope, Error, ErrorKind, Event, EventCursor,
    EventPageSource, EventQuery, EventRepository, OffsetRepository, Operation, Packet, PageFuture,
    PersistResult, Persister, ProcessInstance, ProcessRepository, QueueMessage, QueueRepository, Result,
    observe,
};

use super::PROVIDER;
use super::writer::MysqlWriter;
use super::{MAX_KEY_BYTES, get_bytes, get_i64, get_string, key_too_long, lock_name, storage_for};
use crate::schema::from_db;
use vellum_core::commit::WriteQueue;

/// An open store of one application in a MySQL/MariaDB database.
#[derive(Debug)]
pub struct MysqlStore {
    shared: Arc<Shared>,
    /// The queue to the store's writer, which owns the lock connection.
    pub(super) writes: WriteQueue,
    lock_name: String,
    /// The server's `max_allowed_packet`: a row that cannot fit one packet fails its batch.
    max_packet: usize,
}

/// What the store and its event cursors share.
#[derive(Debug)]
pub(super) struct Shared {
    app_key: String,
    pool: Pool,
    closed: AtomicBool,
}

pub(super) fn bytes(s: &str) -> Value {
    Value::Bytes(s.as_bytes().to_vec())
}

fn limit(n: usize) -> Value {
    Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

pub(super) fn decode_envelope(app_key: &str, bytes: &[u8]) -> Result<Envelope> {
    Envelope::from_bytes(bytes)
        .map_err(|e| Error::storage(format!("mysql: decoding an envelope of application {app_key:?}"), e))
}

impl Shared {
    async fn conn(&self, what: &str) -> Result<Conn> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        self.pool.get_conn().await.map_err(|e| storage_for(&self.app_key, what, e))
    }

    /// Runs one read on a pooled connection, in a `vellum.query` span named `name`.
    pub(super) async fn rows(
        &self,
        name: &'static str,
        what: &str,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<Vec<Row>> {
        let span = observe::query_span(PROVIDER, &self.app_key, name);
        async {
            let mut conn = self.conn(what).await?;
            let rows = conn.exec(sql, params).await.map_err(|e| storage_for(&self.app_key, what, e))?;
            if self.closed.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            Ok(rows)
        }
        .instrument(span)
        .await
    }

    async fn page(&self, query: &EventQuery, from: u64, n: usize) -> Result<Vec<Event>> {
        let app = bytes(&self.app_key);
        let Ok(from) = i64::try_from(from) else {
            return Ok(Vec::new()); // beyond any offset
        };
        let from = Value::Int(from);
        let rows = match query {
            EventQuery::ByType(names) if names.is_empty() => return Ok(Vec::new()),
            EventQuery::ByType(names) if names.len() == 1 => {
                self.rows(
                    "events_by_type",
                    "loading events by type",
                    "SELECT event_offset, envelope FROM vellum_event \
                     WHERE app_key = ? AND portable_name = ? AND event_offset >= ? \
                     ORDER BY event_offset LIMIT ?",
                    vec![app, bytes(&names[0]), from, limit(n)],
                )
                .await?
            }
            EventQuery::ByType(names) => {
                // One bounded, index-ordered scan per name, merged: work is at most names × n rows.
                let part = "(SELECT event_offset, envelope FROM vellum_event \
                            WHERE app_key = ? AND portable_name = ? AND event_offset >= ? \
                            ORDER BY event_offset LIMIT ?)";
                let sql =
                    format!("{} ORDER BY event_offset LIMIT ?", vec![part; names.len()].join(" UNION ALL "));
                let mut params = Vec::with_capacity(names.len() * 4 + 1);
                for name in names {
                    params.extend([app.clone(), bytes(name), from.clone(), limit(n)]);
                }
                params.push(limit(n));
                self.rows("events_by_type", "loading events by type", &sql, params).await?
            }
            EventQuery::BySource { handler_key, instance_id } => {
                self.rows(
                    "events_by_source",
                    "loading events by source",
                    "SELECT event_offset, envelope FROM vellum_event \
                     WHERE app_key = ? AND handler_key = ? AND instance_id = ? AND event_offset >= ? \
                     ORDER BY event_offset LIMIT ?",
                    vec![app, bytes(handler_key), bytes(instance_id), from, limit(n)],
                )
                .await?
            }
        };
        rows.into_iter()
            .map(|mut row| {
                let offset = from_db(get_i64(&mut row, 0)?);
                let envelope = decode_envelope(&self.app_key, &get_bytes(&mut row, 1)?)?;
                Ok(Event { offset, envelope })
            })
            .collect()
    }
}

impl EventPageSource for Shared {
    fn load_page<'a>(&'a self, query: &'a EventQuery, from: u64, limit: usize) -> PageFuture<'a> {
        Box::pin(self.page(query, from, limit))
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

impl MysqlStore {
    pub(super) fn new(app_key: String, database: &str, pool: Pool, conn: Conn, max_packet: usize) -> Self {
        let lock_name = lock_name(database, "app", &app_key);
        let (writes, run_writer) =
            WriteQueue::new(MysqlWriter::new(app_key.clone(), conn, lock_name.clone(), max_packet));
        tokio::spawn(run_writer);
        Self {
            shared: Arc::new(Shared { app_key, pool, closed: AtomicBool::new(false) }),
            writes,
            lock_name,
            max_packet,
        }
    }

    /// The `GET_LOCK` name this store holds (see [`lock_name`](super::lock_name)).
    #[must_use]
    pub fn lock_name(&self) -> &str {
        &self.lock_name
    }

    /// What the store and its cursors share.
    pub(super) fn shared(&self) -> &Shared {
        &self.shared
    }

    fn cursor(&self, query: EventQuery, min_offset: u64) -> Result<EventCursor> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(EventCursor::new(Arc::clone(&self.shared) as Arc<dyn EventPageSource>, query, min_offset))
    }
}

impl AggregateRepository for MysqlStore {
    async fn load_aggregate_meta_data(
        &self,
        handler_key: &str,
        instance_id: &str,
    ) -> Result<AggregateMetaData> {
        let rows = self
            .shared
            .rows(
                "aggregate",
                "loading aggregate meta-data",
                "SELECT revision, last_event_id FROM vellum_aggregate \
                 WHERE app_key = ? AND handler_key = ? AND instance_id = ?",
                vec![bytes(&self.shared.app_key), bytes(handler_key), bytes(instance_id)],
            )
            .await?;
        let mut meta = AggregateMetaData::new(handler_key, instance_id);
        if let Some(mut row) = rows.into_iter().next() {
            meta.revision = from_db(get_i64(&mut row, 0)?);
            meta.last_event_id = get_string(&mut row, 1)?;
        }
        Ok(meta)
    }
}

impl ProcessRepository for MysqlStore {
    async fn load_process_instance(&self, handler_key: &str, instance_id: &str) -> Result<ProcessInstance> {
        let rows = self
            .shared
            .rows(
                "process",
                "loading a process instance",
                "SELECT revision, media_type, data FROM vellum_process \
                 WHERE app_key = ? AND handler_key = ? AND instance_id = ?",
                vec![bytes(&self.shared.app_key), bytes(handler_key), bytes(instance_id)],
            )
            .await?;
        let mut instance = ProcessInstance::new(handler_key, instance_id);
        if let Some(mut row) = rows.into_iter().next() {
            instance.revision = from_db(get_i64(&mut row, 0)?);
            instance.packet = Packet { media_type: get_string(&mut row, 1)?, data: get_bytes(&mut row, 2)? };
        }
        Ok(instance)
    }
}

impl OffsetRepository for MysqlStore {
    async fn load_offset(&self, application_key: &str) -> Result<u64> {
        let rows = self
            .shared
            .rows(
                "offset",
                "loading a consumer offset",
                "SELECT next_offset FROM vellum_offset WHERE app_key = ? AND source_app_key = ?",
                vec![bytes(&self.shared.app_key), bytes(application_key)],
            )
            .await?;
        match rows.into_iter().next() {
            Some(mut row) => Ok(from_db(get_i64(&mut row, 0)?)),
            None => Ok(0),
        }
    }
}

impl QueueRepository for MysqlStore {
    async fn load_queue_messages(&self, n: usize) -> Result<Vec<QueueMessage>> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        let rows = self
            .shared
            .rows(
                "queue",
                "loading queue messages",
                "SELECT revision, failure_count, next_attempt_at, envelope FROM vellum_queue \
                 WHERE app_key = ? ORDER BY next_attempt_at, sequence, message_id LIMIT ?",
                vec![bytes(&self.shared.app_key), limit(n)],
            )
            .await?;
        rows.into_iter()
            .map(|mut row| {
                Ok(QueueMessage {
                    revision: from_db(get_i64(&mut row, 0)?),
                    failure_count: from_db(get_i64(&mut row, 1)?),
                    next_attempt_at: Micros(get_i64(&mut row, 2)?).to_system_time(),
                    envelope: decode_envelope(&self.shared.app_key, &get_bytes(&mut row, 3)?)?,
                })
            })
            .collect()
    }
}

impl EventRepository for MysqlStore {
    async fn next_event_offset(&self) -> Result<u64> {
        let rows = self
            .shared
            .rows(
                "next_event_offset",
                "reading the next event offset",
                "SELECT next_offset FROM vellum_app WHERE app_key = ?",
                vec![bytes(&self.shared.app_key)],
            )
            .await?;
        match rows.into_iter().next() {
            Some(mut row) => Ok(from_db(get_i64(&mut row, 0)?)),
            None => Ok(0),
        }
    }

    async fn load_events_by_type(&self, portable_names: &[&str], min_offset: u64) -> Result<EventCursor> {
        self.cursor(EventQuery::by_type(portable_names.iter().copied()), min_offset)
    }

    async fn load_events_by_source(&self, handler_key: &str, instance_id: &str) -> Result<EventCursor> {
        self.cursor(EventQuery::by_source(handler_key, instance_id), 0)
    }
}

/// About how many bytes an envelope takes as a row (its fields; the encoding adds a little).
fn envelope_len(e: &Envelope) -> usize {
    let identity =
        |i: &Option<vellum_core::Identity>| i.as_ref().map_or(0, |i| i.name.len() + i.key.len() + 8);
    [&e.message_id, &e.causation_id, &e.correlation_id, &e.source_instance_id, &e.created_at]
        .iter()
        .chain([&e.scheduled_for, &e.description, &e.portable_name, &e.media_type].iter())
        .map(|s| s.len() + 4)
        .sum::<usize>()
        + e.data.len()
        + identity(&e.source_application)
        + identity(&e.source_handler)
        + identity(&e.source_site)
}

/// Checks that every row of the batch fits one packet of the server (`max_allowed_packet`):
/// a bigger one would make the server drop the connection, and with it the store's lock.
fn check_sizes(app_key: &str, batch: &Batch, max_packet: usize) -> Result<()> {
    // Room for the statement, the other columns and the protocol's own bytes.
    let limit = max_packet.saturating_sub(64 << 10);
    for (index, op) in batch.iter().enumerate() {
        let len = match op {
            Operation::SaveEvent(e) => envelope_len(e),
            Operation::SaveQueueMessage(m) => envelope_len(&m.envelope),
            Operation::SaveProcessInstance(p) => p.packet.data.len() + p.packet.media_type.len(),
            Operation::SaveAggregateMetaData(m) => m.last_event_id.len(),
            _ => 0,
        };
        if len > limit {
            return Err(Error::storage_kind(
                ErrorKind::InvalidInput,
                format!("mysql: cannot store data of application {app_key:?}"),
                format!(
                    "operation {index} ({}) needs about {len} bytes, more than fits the server's \
                     max_allowed_packet of {max_packet} bytes; raise max_allowed_packet",
                    op.name()
                ),
            ));
        }
    }
    Ok(())
}

/// Checks every key the batch would store against [`MAX_KEY_BYTES`].
fn check_keys(app_key: &str, batch: &Batch) -> Result<()> {
    for (index, op) in batch.iter().enumerate() {
        let mut fields: Vec<(&str, &str)> = Vec::with_capacity(4);
        match op {
            Operation::SaveAggregateMetaData(m) => {
                fields.extend([("handler key", m.handler_key.as_str()), ("instance ID", &m.instance_id)]);
            }
            Operation::SaveProcessInstance(p) | Operation::RemoveProcessInstance(p) => {
                fields.extend([("handler key", p.handler_key.as_str()), ("instance ID", &p.instance_id)]);
            }
            Operation::SaveEvent(e) => fields.extend([
                ("message ID", e.message_id.as_str()),
                ("portable name", &e.portable_name),
                ("source handler key", e.source_handler_key()),
                ("source instance ID", &e.source_instance_id),
            ]),
            Operation::SaveQueueMessage(m) | Operation::RemoveQueueMessage(m) => {
                fields.push(("message ID", m.id()));
                if m.envelope.is_timeout() {
                    fields.extend([
                        ("source handler key", m.envelope.source_handler_key()),
                        ("source instance ID", &m.envelope.source_instance_id),
                    ]);
                }
            }
            Operation::SaveOffset { application_key, .. } => {
                fields.push(("application key", application_key));
            }
        }
        for (field, value) in fields {
            if value.len() > MAX_KEY_BYTES {
                let what = format!("the {field} of operation {index} ({})", op.name());
                return Err(key_too_long(app_key, &what, value.len()));
            }
        }
    }
    Ok(())
}

impl Persister for MysqlStore {
    async fn persist(&self, batch: Batch) -> Result<PersistResult> {
        // Refused here, before the writer sees it: such a row would make the server drop the
        // connection, and the store's lock with it.
        let checked = batch.validate().and_then(|()| {
            check_keys(&self.shared.app_key, &batch)?;
            check_sizes(&self.shared.app_key, &batch, self.max_packet)
        });
        if let Err(e) = checked {
            let span = observe::persist_span(PROVIDER, &self.shared.app_key, batch.len());
            return observe::record(&span, Err(e));
        }
        self.writes.persist(batch).await
    }
}

impl DataStore for MysqlStore {
    fn app_key(&self) -> &str {
        &self.shared.app_key
    }

    async fn close(&self) -> Result<()> {
        // Reads see `Closed` from here on; the writer drains the queue and releases the lock.
        let closing = self.writes.close();
        self.shared.closed.store(true, Ordering::Release);
        closing.await
    }
}
