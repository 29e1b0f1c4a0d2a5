//! The reads of a MySQL store ([`MysqlReads`]) and the limits it checks before a batch is queued.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Pool, Row, Value};
use vellum_core::time::Micros;
use vellum_core::{
    AggregateMetaData, Batch, Envelope, Error, ErrorKind, Event, EventQuery, ExportFrom, Operation, Packet,
    ProcessInstance, QueueMessage, Record, Result, StoreStats,
};

use super::PROVIDER;
use super::{MAX_KEY_BYTES, get_bytes, get_i64, get_string, key_too_long, storage_for};
use crate::fields::stored_strings;
use crate::schema::from_db;
use crate::store::{Dialect, Sealed};
use crate::sums::{QueueRow, Rows};

/// The reads of one MySQL store: on the provider's pool.
#[derive(Debug)]
pub struct MysqlReads {
    pub(super) app_key: String,
    pub(super) pool: Pool,
    /// The `GET_LOCK` name the store holds.
    pub(super) lock_name: String,
    /// The server's `max_allowed_packet`: a row that cannot fit one packet fails its batch.
    pub(super) max_packet: usize,
}

pub(super) fn bytes(s: &str) -> Value {
    Value::Bytes(s.as_bytes().to_vec())
}

fn limit(n: usize) -> Value {
    Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

/// The plain columns of a queue row (revision, failure count, `next_attempt_at`, sequence,
/// envelope, message ID, envelope checksum, state checksum: the order of the queue reads and
/// exports) and its envelope, after checking its sums.
pub(super) fn queue_row(sums: Rows<'_>, mut row: Row) -> Result<(QueueColumns, Envelope)> {
    let columns = QueueColumns {
        revision: get_i64(&mut row, 0)?,
        failure_count: get_i64(&mut row, 1)?,
        next_attempt_at: get_i64(&mut row, 2)?,
        sequence: get_i64(&mut row, 3)?,
    };
    let (bytes, message_id) = (get_bytes(&mut row, 4)?, get_string(&mut row, 5)?);
    let envelope = sums.queue(&QueueRow {
        message_id: &message_id,
        revision: columns.revision,
        failure_count: columns.failure_count,
        next_attempt_at: columns.next_attempt_at,
        sequence: columns.sequence,
        envelope: &bytes,
        envelope_sum: get_i64(&mut row, 6)?,
        state_sum: get_i64(&mut row, 7)?,
    })?;
    Ok((columns, envelope))
}

/// The columns of a queue row a message is made of (as stored).
pub(super) struct QueueColumns {
    pub(super) revision: i64,
    pub(super) failure_count: i64,
    pub(super) next_attempt_at: i64,
    pub(super) sequence: i64,
}

impl MysqlReads {
    /// Runs one read on a pooled connection; `what` describes it in errors.
    pub(super) async fn rows(&self, what: &str, sql: &str, params: Vec<Value>) -> Result<Vec<Row>> {
        let mut conn: Conn = self.pool.get_conn().await.map_err(|e| storage_for(&self.app_key, what, e))?;
        conn.exec(sql, params).await.map_err(|e| storage_for(&self.app_key, what, e))
    }

    /// The checker of this store's rows.
    pub(super) fn sums(&self) -> Rows<'_> {
        Rows { provider: PROVIDER, app_key: &self.app_key }
    }

    /// The first row of a read, if any.
    async fn first(&self, what: &str, sql: &str, params: Vec<Value>) -> Result<Option<Row>> {
        Ok(self.rows(what, sql, params).await?.into_iter().next())
    }

    async fn page(&self, query: &EventQuery, start: u64, n: usize) -> Result<Vec<Event>> {
        let app = bytes(&self.app_key);
        let Ok(from) = i64::try_from(start) else {
            return Ok(Vec::new()); // beyond any offset
        };
        let from = Value::Int(from);
        let rows = match query {
            EventQuery::All => return crate::store::all_events(self, start, n).await,
            EventQuery::ByType(names) if names.is_empty() => return Ok(Vec::new()),
            EventQuery::ByType(names) if names.len() == 1 => {
                self.rows(
                    "loading events by type",
                    "SELECT event_offset, envelope, checksum FROM vellum_event \
                     WHERE app_key = ? AND portable_name = ? AND event_offset >= ? \
                     ORDER BY event_offset LIMIT ?",
                    vec![app, bytes(&names[0]), from, limit(n)],
                )
                .await?
            }
            EventQuery::ByType(names) => {
                // One bounded, index-ordered scan per name, merged: work is at most names × n rows.
                let part = "(SELECT event_offset, envelope, checksum FROM vellum_event \
                            WHERE app_key = ? AND portable_name = ? AND event_offset >= ? \
                            ORDER BY event_offset LIMIT ?)";
                let sql =
                    format!("{} ORDER BY event_offset LIMIT ?", vec![part; names.len()].join(" UNION ALL "));
                let mut params = Vec::with_capacity(names.len() * 4 + 1);
                for name in names {
                    params.extend([app.clone(), bytes(name), from.clone(), limit(n)]);
                }
                params.push(limit(n));
                self.rows("loading events by type", &sql, params).await?
            }
            EventQuery::BySource { handler_key, instance_id } => {
                self.rows(
                    "loading events by source",
                    "SELECT event_offset, envelope, checksum FROM vellum_event \
                     WHERE app_key = ? AND handler_key = ? AND instance_id = ? AND event_offset >= ? \
                     ORDER BY event_offset LIMIT ?",
                    vec![app, bytes(handler_key), bytes(instance_id), from, limit(n)],
                )
                .await?
            }
        };
        let sums = self.sums();
        let mut previous = None;
        rows.into_iter()
            .map(|mut row| {
                let offset = get_i64(&mut row, 0)?;
                if previous.is_some_and(|p| p >= offset) {
                    return Err(sums.corrupt(
                        "vellum_event",
                        &format_args!("event at offset {offset}"),
                        "appears twice or out of order in an index range",
                    ));
                }
                previous = Some(offset);
                sums.event(offset, &get_bytes(&mut row, 1)?, get_i64(&mut row, 2)?, Some(query))
            })
            .collect()
    }
}

impl Sealed for MysqlReads {}

impl Dialect for MysqlReads {
    const PROVIDER: &'static str = PROVIDER;

    fn app_key(&self) -> &str {
        &self.app_key
    }

    async fn aggregate(&self, handler_key: &str, instance_id: &str) -> Result<AggregateMetaData> {
        let row = self
            .first(
                "loading aggregate meta-data",
                "SELECT revision, last_event_id, checksum FROM vellum_aggregate \
                 WHERE app_key = ? AND handler_key = ? AND instance_id = ?",
                vec![bytes(&self.app_key), bytes(handler_key), bytes(instance_id)],
            )
            .await?;
        let mut meta = AggregateMetaData::new(handler_key, instance_id);
        if let Some(mut row) = row {
            let (revision, last_event_id) = (get_i64(&mut row, 0)?, get_string(&mut row, 1)?);
            self.sums().aggregate(
                handler_key,
                instance_id,
                revision,
                &last_event_id,
                get_i64(&mut row, 2)?,
            )?;
            meta.revision = from_db(revision);
            meta.last_event_id = last_event_id;
        }
        Ok(meta)
    }

    async fn process(&self, handler_key: &str, instance_id: &str) -> Result<ProcessInstance> {
        let row = self
            .first(
                "loading a process instance",
                "SELECT revision, media_type, data, checksum FROM vellum_process \
                 WHERE app_key = ? AND handler_key = ? AND instance_id = ?",
                vec![bytes(&self.app_key), bytes(handler_key), bytes(instance_id)],
            )
            .await?;
        let mut instance = ProcessInstance::new(handler_key, instance_id);
        if let Some(mut row) = row {
            let revision = get_i64(&mut row, 0)?;
            let (media_type, data) = (get_string(&mut row, 1)?, get_bytes(&mut row, 2)?);
            let sum = get_i64(&mut row, 3)?;
            self.sums().process(handler_key, instance_id, revision, &media_type, &data, sum)?;
            instance.revision = from_db(revision);
            instance.packet = Packet { media_type, data };
        }
        Ok(instance)
    }

    async fn offset(&self, application_key: &str) -> Result<u64> {
        let row = self
            .first(
                "loading a consumer offset",
                "SELECT next_offset, checksum FROM vellum_offset WHERE app_key = ? AND source_app_key = ?",
                vec![bytes(&self.app_key), bytes(application_key)],
            )
            .await?;
        let Some(mut row) = row else { return Ok(0) };
        let next_offset = get_i64(&mut row, 0)?;
        self.sums().offset(application_key, next_offset, get_i64(&mut row, 1)?)?;
        Ok(from_db(next_offset))
    }

    async fn queue_head(&self, n: usize) -> Result<Vec<QueueMessage>> {
        let rows = self
            .rows(
                "loading queue messages",
                "SELECT revision, failure_count, next_attempt_at, sequence, envelope, message_id, \
                 envelope_checksum, state_checksum FROM vellum_queue \
                 WHERE app_key = ? ORDER BY next_attempt_at, sequence, message_id LIMIT ?",
                vec![bytes(&self.app_key), limit(n)],
            )
            .await?;
        rows.into_iter()
            .map(|row| {
                let (row, envelope) = queue_row(self.sums(), row)?;
                Ok(QueueMessage {
                    revision: from_db(row.revision),
                    failure_count: from_db(row.failure_count),
                    next_attempt_at: Micros(row.next_attempt_at).to_system_time(),
                    envelope,
                })
            })
            .collect()
    }

    async fn next_event_offset(&self) -> Result<u64> {
        let row = self
            .first(
                "reading the next event offset",
                "SELECT next_offset, next_sequence, checksum FROM vellum_app WHERE app_key = ?",
                vec![bytes(&self.app_key)],
            )
            .await?;
        let Some(mut row) = row else { return Ok(0) };
        let (offset, sequence) = (get_i64(&mut row, 0)?, get_i64(&mut row, 1)?);
        self.sums().counters(offset, sequence, get_i64(&mut row, 2)?)?;
        Ok(from_db(offset))
    }

    async fn events(&self, query: &EventQuery, from: u64, limit: usize) -> Result<Vec<Event>> {
        self.page(query, from, limit).await
    }

    async fn stats(&self) -> Result<StoreStats> {
        self.counts().await
    }

    async fn export(&self, from: ExportFrom, limit: usize) -> Result<Vec<Record>> {
        self.export_rows(from, limit).await
    }

    async fn verify_page(&self, page: crate::verify::VerifyPage) -> Result<Vec<crate::verify::RawRow>> {
        self.raw_page(&page).await
    }

    async fn verify_counters(&self) -> Result<Option<(i64, i64, i64)>> {
        self.raw_counters().await
    }

    /// Refused here, before the writer sees it: a key over [`MAX_KEY_BYTES`] cannot be stored,
    /// and a row over `max_allowed_packet` would make the server drop the writer's connection,
    /// and the store's lock with it.
    fn check(&self, batch: &Batch) -> Result<()> {
        batch.validate()?;
        check_keys(&self.app_key, batch)?;
        check_sizes(&self.app_key, batch, self.max_packet)
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
        for field in stored_strings(op).into_iter().filter(|f| f.key) {
            if field.value.len() > MAX_KEY_BYTES {
                let what = format!("the {} of operation {index} ({})", field.name, op.name());
                return Err(key_too_long(app_key, &what, field.value.len()));
            }
        }
    }
    Ok(())
}
