//! `vellum inspect`: one application's store as tables, or as JSON for scripts.

use std::time::SystemTime;

use serde_json::{Value, json};
use vellum::bulk::{self, BulkStore};
use vellum::time::rfc3339;
use vellum::{
    AggregateRepository, DataStore, Envelope, Event, EventRepository, ExportFrom, ProcessRepository,
    Provider, QueueMessage, QueueRepository, Record, Result, Section,
};

use crate::cli::{Inspect, InspectArgs};
use crate::report::{Table, bytes, require_existing, store_size};

/// Runs `vellum inspect` and prints its answer.
pub async fn run(args: InspectArgs) -> Result<()> {
    let provider = vellum::connect(&args.target.url)?;
    require_existing(&args.target.url, &provider, &args.target.app)?;
    let store = provider.open(&args.target.app).await?;
    let result = answer(&store, &args, &provider).await;
    let closed = store.close().await;
    let (table, value) = result?;
    closed?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
    } else {
        print!("{table}");
    }
    Ok(())
}

/// The table and the JSON value for what was asked.
async fn answer(
    store: &vellum::AnyStore,
    args: &InspectArgs,
    provider: &vellum::AnyProvider,
) -> Result<(String, Value)> {
    match &args.what {
        Inspect::Events { types, source, from, to, limit } => {
            let events = events(store, types, source.as_deref(), *from, *to, *limit).await?;
            let mut t = Table::new(["offset", "message id", "type", "source", "created at"]);
            for e in &events {
                let env = &e.envelope;
                let source = format!("{}/{}", env.source_handler_key(), env.source_instance_id);
                t.row([
                    e.offset.to_string(),
                    env.message_id.clone(),
                    env.portable_name.clone(),
                    source,
                    env.created_at.clone(),
                ]);
            }
            let json =
                events.iter().map(|e| json!({ "offset": e.offset, "envelope": envelope_json(&e.envelope) }));
            Ok((or_none(&t, "no events"), Value::Array(json.collect())))
        }
        Inspect::Queue { limit } => queue_view(store, *limit).await,
        Inspect::Process { handler_key, instance_id } => {
            let p = store.load_process_instance(handler_key, instance_id).await?;
            let mut t = Table::new(["", ""]);
            t.row(["process", &format!("{}/{}", p.handler_key, p.instance_id)]);
            t.row([
                "revision",
                &format!("{}{}", p.revision, if p.revision == 0 { " (not stored)" } else { "" }),
            ]);
            t.row(["media type", &p.packet.media_type]);
            t.row(["data", &String::from_utf8_lossy(&p.packet.data)]);
            let value = json!({
                "handler_key": p.handler_key, "instance_id": p.instance_id, "revision": p.revision,
                "media_type": p.packet.media_type, "data": data_json(&p.packet.data),
            });
            Ok((t.to_string(), value))
        }
        Inspect::Aggregate { handler_key, instance_id } => {
            let m = store.load_aggregate_meta_data(handler_key, instance_id).await?;
            let mut t = Table::new(["", ""]);
            t.row(["aggregate", &format!("{}/{}", m.handler_key, m.instance_id)]);
            t.row([
                "revision",
                &format!("{}{}", m.revision, if m.revision == 0 { " (never saved)" } else { "" }),
            ]);
            t.row(["last event id", &m.last_event_id]);
            let value = json!({
                "handler_key": m.handler_key, "instance_id": m.instance_id,
                "revision": m.revision, "last_event_id": m.last_event_id,
            });
            Ok((t.to_string(), value))
        }
        Inspect::Offsets => {
            let mut t = Table::new(["source application", "next offset"]);
            let mut json = Vec::new();
            for record in section(store, Section::Offsets).await? {
                if let Record::Offset { application_key, next_offset } = record {
                    t.row([application_key.clone(), next_offset.to_string()]);
                    json.push(json!({ "application_key": application_key, "next_offset": next_offset }));
                }
            }
            Ok((or_none(&t, "no offsets stored"), Value::Array(json)))
        }
        Inspect::Stats { checksum } => stats_view(store, args, provider, *checksum).await,
    }
}

async fn queue_view(store: &vellum::AnyStore, limit: usize) -> Result<(String, Value)> {
    let now = SystemTime::now();
    let messages = store.load_queue_messages(limit).await?;
    let mut t = Table::new(["#", "message id", "type", "next attempt", "due", "failures", "revision"]);
    for (i, m) in messages.iter().enumerate() {
        t.row([
            (i + 1).to_string(),
            m.id().to_owned(),
            m.envelope.portable_name.clone(),
            rfc3339(m.next_attempt_at),
            due(m, now),
            m.failure_count.to_string(),
            m.revision.to_string(),
        ]);
    }
    let json = messages.iter().map(|m| queue_json(m, now));
    Ok((or_none(&t, "the queue is empty"), Value::Array(json.collect())))
}

async fn stats_view(
    store: &vellum::AnyStore,
    args: &InspectArgs,
    provider: &vellum::AnyProvider,
    checksum: bool,
) -> Result<(String, Value)> {
    let stats = store.stats().await?;
    let size = store_size(provider, &args.target.app);
    let digest = if checksum { Some(bulk::checksum(store, 1000).await?) } else { None };
    let mut t = Table::new(["", ""]);
    t.row(["store".to_owned(), format!("{} (application {:?})", args.target.url, store.app_key())]);
    t.row(["events".to_owned(), stats.events.to_string()]);
    t.row(["aggregates".to_owned(), stats.aggregates.to_string()]);
    t.row(["processes".to_owned(), stats.processes.to_string()]);
    t.row(["queued messages".to_owned(), stats.queue.to_string()]);
    t.row(["offsets".to_owned(), stats.offsets.to_string()]);
    if let Some(size) = size {
        t.row(["size".to_owned(), bytes(size)]);
    }
    if let Some(d) = digest {
        t.row(["checksum".to_owned(), d.hex()]);
    }
    let value = json!({
        "app_key": store.app_key(), "events": stats.events, "aggregates": stats.aggregates,
        "processes": stats.processes, "queue": stats.queue, "offsets": stats.offsets,
        "size_bytes": size, "checksum": digest.map(|d| d.hex()),
    });
    Ok((t.to_string(), value))
}

/// The events asked for: by type, by source, or all, within `[from, to)`, at most `limit`.
async fn events(
    store: &vellum::AnyStore,
    types: &[String],
    source: Option<&[String]>,
    from: u64,
    to: Option<u64>,
    limit: usize,
) -> Result<Vec<Event>> {
    let before_end = |e: &Event| to.is_none_or(|to| e.offset < to);
    if types.is_empty() && source.is_none() {
        let records = store.export_page(ExportFrom::Events(from), limit).await?;
        let events =
            records.into_iter().filter_map(|r| if let Record::Event(e) = r { Some(e) } else { None });
        return Ok(events.take_while(before_end).collect());
    }
    let mut cursor = if let Some([handler, instance]) = source {
        store.load_events_by_source(handler, instance).await?
    } else {
        let names: Vec<&str> = types.iter().map(String::as_str).collect();
        store.load_events_by_type(&names, from).await?
    };
    let mut events = Vec::new();
    while events.len() < limit
        && let Some(event) = cursor.next().await?
    {
        if !before_end(&event) {
            break;
        }
        if event.offset >= from {
            events.push(event);
        }
    }
    Ok(events)
}

/// Every record of one section.
async fn section(store: &vellum::AnyStore, section: Section) -> Result<Vec<Record>> {
    let mut all = Vec::new();
    let mut export = bulk::Export::section(store, section, 1000);
    while let Some(page) = export.next_page().await? {
        all.extend(page);
    }
    Ok(all)
}

fn or_none(table: &Table, none: &str) -> String {
    if table.is_empty() { format!("({none})\n") } else { table.to_string() }
}

/// Whether a message is due now, and by how much.
fn due(message: &QueueMessage, now: SystemTime) -> String {
    match message.next_attempt_at.duration_since(now) {
        Ok(wait) if !wait.is_zero() => format!("in {:.1} s", wait.as_secs_f64()),
        Ok(_) => "due".to_owned(),
        Err(late) => format!("overdue {:.1} s", late.duration().as_secs_f64()),
    }
}

fn queue_json(m: &QueueMessage, now: SystemTime) -> Value {
    json!({
        "revision": m.revision,
        "failure_count": m.failure_count,
        "next_attempt_at": rfc3339(m.next_attempt_at),
        "due": m.next_attempt_at <= now,
        "envelope": envelope_json(&m.envelope),
    })
}

pub(crate) fn envelope_json(e: &Envelope) -> Value {
    let identity = |i: &Option<vellum::Identity>| i.as_ref().map(|i| json!({ "name": i.name, "key": i.key }));
    json!({
        "message_id": e.message_id,
        "causation_id": e.causation_id,
        "correlation_id": e.correlation_id,
        "source_application": identity(&e.source_application),
        "source_handler": identity(&e.source_handler),
        "source_instance_id": e.source_instance_id,
        "created_at": e.created_at,
        "scheduled_for": e.scheduled_for,
        "description": e.description,
        "portable_name": e.portable_name,
        "media_type": e.media_type,
        "data": data_json(&e.data),
    })
}

/// Data as text when it is UTF-8 (JSON payloads usually are), else as a list of bytes.
fn data_json(data: &[u8]) -> Value {
    match std::str::from_utf8(data) {
        Ok(text) => Value::String(text.to_owned()),
        Err(_) => Value::Array(data.iter().map(|b| Value::from(*b)).collect()),
    }
}
