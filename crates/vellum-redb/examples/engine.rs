//! An engine-shaped workload on the redb provider: 32 handlers run concurrently, each handling
//! commands for its own account (the aggregate records an event, which is queued for a process)
//! and running a process that schedules a timeout and ends while handling it; a consumer then
//! advances its offset. Concurrent writers share durable transactions (group commit).
//! Run with `cargo run -p vellum-redb --example engine`.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use vellum_core::{
    AggregateMetaData, AggregateRepository, Batch, DataStore, Envelope, EventRepository, Identity, Operation,
    Packet, Persister, ProcessInstance, Provider, QueueMessage, QueueRepository, Result,
};
use vellum_redb::{RedbProvider, RedbStore};

const AGGREGATE: &str = "account-aggregate";
const PROCESS: &str = "transfer-process";
const HANDLERS: usize = 32;
const COMMANDS_PER_HANDLER: usize = 100;

fn envelope(id: String, portable_name: &str, handler: &str, instance: &str, scheduled_for: &str) -> Envelope {
    Envelope {
        causation_id: id.clone(),
        correlation_id: id.clone(),
        message_id: id,
        source_application: Some(Identity::new("bank", "bank-key")),
        source_handler: Some(Identity::new(handler, handler)),
        source_instance_id: instance.to_owned(),
        created_at: "2026-11-26T12:00:00Z".to_owned(),
        scheduled_for: scheduled_for.to_owned(),
        portable_name: portable_name.to_owned(),
        media_type: format!("application/json; type=\"{portable_name}\""),
        data: b"{}".to_vec(),
        ..Envelope::default()
    }
}

/// One command: the aggregate records an event, which is also queued for the process.
async fn handle_command(store: &RedbStore, account: &str, n: usize) -> Result<()> {
    let meta = store.load_aggregate_meta_data(AGGREGATE, account).await?;
    let event = envelope(format!("event-{account}-{n}"), "MoneyDeposited", AGGREGATE, account, "");
    let queued = QueueMessage {
        revision: 0,
        failure_count: 0,
        next_attempt_at: SystemTime::now(),
        envelope: event.clone(),
    };
    let batch = Batch::from(vec![
        Operation::SaveAggregateMetaData(AggregateMetaData {
            last_event_id: event.message_id.clone(),
            ..meta
        }),
        Operation::SaveEvent(event),
        Operation::SaveQueueMessage(queued),
    ]);
    store.persist(batch).await.map(drop)
}

/// The process starts, schedules a timeout, and ends while handling that timeout
/// (docs/batches.md#process-removal-and-timeouts).
async fn run_process(store: &RedbStore, account: &str, n: usize) -> Result<()> {
    let instance = format!("transfer-{account}-{n}");
    let start = ProcessInstance {
        packet: Packet::new("application/json", b"{}".to_vec()),
        ..ProcessInstance::new(PROCESS, &instance)
    };
    let timeout = QueueMessage {
        revision: 0,
        failure_count: 0,
        next_attempt_at: SystemTime::now() + Duration::from_secs(60),
        envelope: envelope(
            format!("timeout-{instance}"),
            "TransferTimedOut",
            PROCESS,
            &instance,
            "2026-11-26T12:01:00Z",
        ),
    };
    store
        .persist(Batch::from(vec![
            Operation::SaveProcessInstance(start.clone()),
            Operation::SaveQueueMessage(timeout.clone()),
        ]))
        .await?;
    let end = Batch::from(vec![
        Operation::RemoveProcessInstance(ProcessInstance { revision: 1, ..start }),
        Operation::RemoveQueueMessage(QueueMessage { revision: 1, ..timeout }),
    ]);
    store.persist(end).await.map(drop)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("vellum-redb-example-{}", std::process::id()));
    let provider = RedbProvider::new(&dir);
    let store = Arc::new(provider.open("bank-key").await?);
    println!("store file: {}", store.path().display());
    let started = Instant::now();
    let handlers: Vec<_> = (0..HANDLERS)
        .map(|h| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let account = format!("account-{h}");
                for n in 0..COMMANDS_PER_HANDLER {
                    handle_command(&store, &account, n).await?;
                    if n % 10 == 0 {
                        run_process(&store, &account, n).await?;
                    }
                }
                Ok::<(), vellum_core::Error>(())
            })
        })
        .collect();
    for handler in handlers {
        handler.await.expect("handler task")?;
    }
    let consumed = store.next_event_offset().await?;
    store
        .persist(Batch::from(vec![Operation::SaveOffset {
            application_key: "bank-key".into(),
            current_offset: 0,
            next_offset: consumed,
        }]))
        .await?;
    let batches = HANDLERS * (COMMANDS_PER_HANDLER + COMMANDS_PER_HANDLER / 10 * 2) + 1;
    let by_account = store.load_events_by_source(AGGREGATE, "account-3").await?.collect().await?;
    println!("events: {consumed}, events of account-3: {}", by_account.len());
    println!("queued: {}", store.load_queue_messages(usize::MAX).await?.len());
    println!(
        "{batches} durable batches in {} write transactions, {:.1?}",
        store.write_transactions(),
        started.elapsed()
    );
    store.close().await?;
    std::fs::remove_dir_all(&dir)
        .map_err(|e| vellum_core::Error::storage("removing the example directory", e))
}
