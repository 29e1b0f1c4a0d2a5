//! Bulk export and import ([`vellum_core::BulkStore`]) of a [`PostgresStore`].
//!
//! Export pages are pooled reads with cached prepared statements (keysets on the `C`-collated
//! primary keys and the queue-order index). An import is a job of the store's writer
//! ([`crate::group::Committer::import`]), on the lock connection between two groups: it reads
//! the records' keys (the writer's pipelined key probes), checks them, then pipelines `BEGIN`,
//! one `UNNEST` insert per table, the counters and `COMMIT`. The writer then knows the counters
//! it wrote, so its one-round-trip path stays correct after an import.

use tokio_postgres::Statement;
use vellum_core::bulk::check_import;
use vellum_core::time::Micros;
use vellum_core::{
    AggregateMetaData, BulkStore, DataStore as _, ExportFrom, Packet, ProcessInstance, QueueMessage, Record,
    Result, StoreStats, observe,
};

use super::PROVIDER;
use super::storage;
use super::store::PostgresStore;
use super::writer::{AggregateRows, EventRows, OffsetRows, Pending, PgResult, PgWriter, pipeline};
use crate::bulk::{ImportRows, counters_after, event_keys, limit};
use crate::plan::StateKeys;
use crate::schema::{from_db, to_db};

impl BulkStore for PostgresStore {
    async fn stats(&self) -> Result<StoreStats> {
        let s = self.shared();
        let app = s.app_key.as_str();
        let doing = "counting records";
        let rows = s.query("stats", doing, &s.sql.bulk.stats, &[&app, &app, &app, &app, &app]).await?;
        let row = rows.first().ok_or_else(|| storage(app, doing, "no row returned"))?;
        let mut counts = [0; 5];
        for (i, count) in counts.iter_mut().enumerate() {
            *count = from_db(s.get::<i64>(row, i, doing)?);
        }
        let [aggregates, processes, offsets, queue, events] = counts;
        Ok(StoreStats { aggregates, processes, offsets, queue, events })
    }

    async fn export_page(&self, from: ExportFrom, limit: usize) -> Result<Vec<Record>> {
        let span = observe::bulk_span(PROVIDER, self.app_key(), false, limit);
        tracing::Instrument::instrument(self.export(from, limit), span).await
    }

    async fn import(&self, records: Vec<Record>) -> Result<()> {
        let span = observe::bulk_span(PROVIDER, self.app_key(), true, records.len());
        let result = tracing::Instrument::instrument(self.import_through_writer(records), span.clone()).await;
        observe::record(&span, result)
    }
}

impl PostgresStore {
    async fn export(&self, from: ExportFrom, n: usize) -> Result<Vec<Record>> {
        let s = self.shared();
        let (app, n, sql) = (s.app_key.as_str(), limit(n), &s.sql.bulk);
        let doing = "exporting records";
        match from {
            ExportFrom::Aggregates(after) => {
                let rows = match &after {
                    None => s.query("export", doing, &sql.aggregates_first, &[&app, &n]).await?,
                    Some((h, i)) => {
                        s.query("export", doing, &sql.aggregates_after, &[&app, h, i, &n]).await?
                    }
                };
                rows.iter()
                    .map(|row| {
                        Ok(Record::Aggregate(AggregateMetaData {
                            handler_key: s.get(row, 0, doing)?,
                            instance_id: s.get(row, 1, doing)?,
                            revision: from_db(s.get(row, 2, doing)?),
                            last_event_id: s.get(row, 3, doing)?,
                        }))
                    })
                    .collect()
            }
            ExportFrom::Processes(after) => {
                let rows = match &after {
                    None => s.query("export", doing, &sql.processes_first, &[&app, &n]).await?,
                    Some((h, i)) => s.query("export", doing, &sql.processes_after, &[&app, h, i, &n]).await?,
                };
                rows.iter()
                    .map(|row| {
                        Ok(Record::Process(ProcessInstance {
                            handler_key: s.get(row, 0, doing)?,
                            instance_id: s.get(row, 1, doing)?,
                            revision: from_db(s.get(row, 2, doing)?),
                            packet: Packet::new(
                                s.get::<String>(row, 3, doing)?,
                                s.get::<Vec<u8>>(row, 4, doing)?,
                            ),
                        }))
                    })
                    .collect()
            }
            ExportFrom::Offsets(after) => {
                let rows = match &after {
                    None => s.query("export", doing, &sql.offsets_first, &[&app, &n]).await?,
                    Some(source) => s.query("export", doing, &sql.offsets_after, &[&app, source, &n]).await?,
                };
                rows.iter()
                    .map(|row| {
                        Ok(Record::Offset {
                            application_key: s.get(row, 0, doing)?,
                            next_offset: from_db(s.get(row, 1, doing)?),
                        })
                    })
                    .collect()
            }
            ExportFrom::Queue(after) => {
                let rows = match after {
                    None => s.query("export", doing, &sql.queue_first, &[&app, &n]).await?,
                    Some(key) => {
                        let (at, sequence, id) =
                            (key.next_attempt_at.0, to_db(key.sequence), &key.message_id);
                        s.query("export", doing, &sql.queue_after, &[&app, &at, &sequence, id, &n]).await?
                    }
                };
                rows.iter()
                    .map(|row| {
                        let bytes: &[u8] = s.get(row, 4, doing)?;
                        Ok(Record::Queue {
                            sequence: from_db(s.get(row, 3, doing)?),
                            message: QueueMessage {
                                revision: from_db(s.get(row, 0, doing)?),
                                failure_count: from_db(s.get(row, 1, doing)?),
                                next_attempt_at: Micros(s.get(row, 2, doing)?).to_system_time(),
                                envelope: s.envelope(bytes, doing)?,
                            },
                        })
                    })
                    .collect()
            }
            ExportFrom::Events(offset) => {
                s.check_open()?;
                // Offsets stay far below 2^63: a larger start matches nothing.
                let Ok(offset) = i64::try_from(offset) else { return Ok(Vec::new()) };
                let rows = s.query("export", doing, &sql.events, &[&app, &offset, &n]).await?;
                Ok(s.events(&rows, doing)?.into_iter().map(Record::Event).collect())
            }
        }
    }
}

/// The import statements, prepared on the lock connection at the first import.
pub(super) struct ImportStatements {
    events: Statement,
    aggregates: Statement,
    processes: Statement,
    offsets: Statement,
    queue: Statement,
    /// Prepared here too: a statement sent by text would be prepared first, so its execution
    /// would go out after the pipelined `COMMIT`.
    counters: Statement,
}

/// An import's rows as the column arrays of the `UNNEST` inserts.
#[derive(Default)]
struct Columns<'a> {
    aggregates: AggregateRows<'a>,
    processes: ProcessColumns<'a>,
    offsets: OffsetRows<'a>,
    queue: QueueColumns<'a>,
    events: EventRows<'a>,
}

#[derive(Default)]
struct ProcessColumns<'a> {
    handlers: Vec<&'a str>,
    instances: Vec<&'a str>,
    revisions: Vec<i64>,
    media_types: Vec<&'a str>,
    data: Vec<&'a [u8]>,
}

#[derive(Default)]
struct QueueColumns<'a> {
    ids: Vec<&'a str>,
    revisions: Vec<i64>,
    failures: Vec<i64>,
    times: Vec<i64>,
    sequences: Vec<i64>,
    handlers: Vec<Option<&'a str>>,
    instances: Vec<Option<&'a str>>,
    envelopes: Vec<Vec<u8>>,
}

impl<'a> Columns<'a> {
    fn of(rows: &ImportRows<'a>) -> Self {
        let mut c = Self::default();
        for m in &rows.aggregates {
            let a = &mut c.aggregates;
            a.handlers.push(&m.handler_key);
            a.instances.push(&m.instance_id);
            a.revisions.push(to_db(m.revision));
            a.last_ids.push(&m.last_event_id);
        }
        for p in &rows.processes {
            let x = &mut c.processes;
            x.handlers.push(&p.handler_key);
            x.instances.push(&p.instance_id);
            x.revisions.push(to_db(p.revision));
            x.media_types.push(&p.packet.media_type);
            x.data.push(&p.packet.data);
        }
        for &(source, next_offset) in &rows.offsets {
            c.offsets.sources.push(source);
            c.offsets.values.push(to_db(next_offset));
        }
        for r in &rows.queue {
            let q = &mut c.queue;
            q.ids.push(r.message.id());
            q.revisions.push(to_db(r.message.revision));
            q.failures.push(to_db(r.message.failure_count));
            q.times.push(r.next_attempt_at.0);
            q.sequences.push(to_db(r.sequence));
            q.handlers.push(r.timeout_owner.map(|o| o.0));
            q.instances.push(r.timeout_owner.map(|o| o.1));
            q.envelopes.push(r.message.envelope.to_bytes());
        }
        for event in &rows.events {
            let e = &mut c.events;
            let [id, name, handler, instance] = event_keys(&event.envelope);
            e.offsets.push(to_db(event.offset));
            e.ids.push(id);
            e.names.push(name);
            e.handlers.push(handler);
            e.instances.push(instance);
            e.envelopes.push(event.envelope.to_bytes());
        }
        c
    }
}

impl PgWriter {
    /// Checks and writes an import (see the module docs). Nothing is sent before the check
    /// passed; the counters this writer assumes are forgotten until the outcome is known.
    pub(super) async fn try_import(&mut self, records: &[Record]) -> Result<()> {
        let app_key = self.app_key.clone();
        let fail = |doing: &'static str| {
            let app_key = app_key.clone();
            move |e: tokio_postgres::Error| storage(&app_key, doing, e)
        };
        let known = self.counters.take();
        let mut snapshot = self
            .snapshot(&StateKeys::of_records(records))
            .await
            .map_err(fail("reading the import's keys"))?;
        let before = (snapshot.next_offset, snapshot.next_sequence);
        if let Err(e) = check_import(records, snapshot.next_offset, &mut snapshot) {
            self.counters = known.or(Some(before));
            return Err(e);
        }
        let rows = ImportRows::of(records)?;
        let statements = match self.import.take() {
            Some(statements) => statements,
            None => self.prepare_import().await.map_err(fail("preparing the import statements"))?,
        };
        let after = counters_after(records, before);
        let written = self.write_import(&statements, &Columns::of(&rows), after).await;
        self.import = Some(statements);
        written.map_err(fail("importing records"))?;
        self.counters = Some(after);
        Ok(())
    }

    async fn prepare_import(&self) -> PgResult<ImportStatements> {
        let (c, sql) = (self.conn.client(), &self.sql);
        let (events, aggregates, processes, offsets, queue, counters) = tokio::try_join!(
            c.prepare(&sql.insert_events),
            c.prepare(&sql.import_aggregates),
            c.prepare(&sql.import_processes),
            c.prepare(&sql.import_offsets),
            c.prepare(&sql.import_queue),
            c.prepare(&sql.store_counters),
        )?;
        Ok(ImportStatements { events, aggregates, processes, offsets, queue, counters })
    }

    /// `BEGIN`, the inserts, the counters and `COMMIT`, pipelined.
    async fn write_import(
        &self,
        st: &ImportStatements,
        cols: &Columns<'_>,
        (next_offset, next_sequence): (u64, u64),
    ) -> PgResult<()> {
        let c = self.conn.client();
        let app: &str = &self.app_key;
        let mut steps: Vec<Pending<'_>> = Vec::with_capacity(8);
        steps.push(Box::pin(async move { c.batch_execute("BEGIN").await.map(|()| 0) }));
        if !cols.aggregates.handlers.is_empty() {
            let a = &cols.aggregates;
            steps.push(Box::pin(async move {
                c.execute(&st.aggregates, &[&app, &a.handlers, &a.instances, &a.revisions, &a.last_ids]).await
            }));
        }
        if !cols.processes.handlers.is_empty() {
            let p = &cols.processes;
            steps.push(Box::pin(async move {
                c.execute(
                    &st.processes,
                    &[&app, &p.handlers, &p.instances, &p.revisions, &p.media_types, &p.data],
                )
                .await
            }));
        }
        if !cols.offsets.sources.is_empty() {
            let o = &cols.offsets;
            steps.push(Box::pin(async move { c.execute(&st.offsets, &[&app, &o.sources, &o.values]).await }));
        }
        if !cols.queue.ids.is_empty() {
            let q = &cols.queue;
            steps.push(Box::pin(async move {
                c.execute(
                    &st.queue,
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
                    ],
                )
                .await
            }));
        }
        if !cols.events.ids.is_empty() {
            let e = &cols.events;
            steps.push(Box::pin(async move {
                c.execute(
                    &st.events,
                    &[&app, &e.offsets, &e.ids, &e.names, &e.handlers, &e.instances, &e.envelopes],
                )
                .await
            }));
        }
        let (next_offset, next_sequence) = (to_db(next_offset), to_db(next_sequence));
        steps.push(Box::pin(
            async move { c.execute(&st.counters, &[&app, &next_offset, &next_sequence]).await },
        ));
        steps.push(Box::pin(async move { c.batch_execute("COMMIT").await.map(|()| 0) }));
        pipeline(steps).await
    }
}
