//! An engine-shaped workload on the in-memory provider: commands handled by an aggregate that
//! records events, a process that schedules a timeout and ends when it fires, and a consumer
//! advancing its offset. Run with `cargo run -p vellum-memory --example engine`.

use std::time::{Duration, Instant, SystemTime};

use vellum_core::{
    AggregateMetaData, Batch, DataStore, Envelope, EventRepository, Identity, Operation, Packet, Persister,
    ProcessInstance, Provider, QueueMessage, QueueRepository, Result,
};
use vellum_memory::MemoryProvider;

const AGGREGATE: &str = "account-aggregate";
const PROCESS: &str = "transfer-process";

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
async fn handle_command(store: &impl DataStore, n: usize) -> Result<()> {
    let account = format!("account-{}", n % 10);
    let meta = store.load_aggregate_meta_data(AGGREGATE, &account).await?;
    let event = envelope(format!("event-{n}"), "MoneyDeposited", AGGREGATE, &account, "");
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

/// The process starts, schedules a timeout, and ends while handling that timeout (SPEC D1).
async fn run_process(store: &impl DataStore, n: usize) -> Result<()> {
    let instance = format!("transfer-{n}");
    let start = ProcessInstance {
        packet: Packet::new("application/json", b"{}".to_vec()),
        ..ProcessInstance::new(PROCESS, &instance)
    };
    let timeout = QueueMessage {
        revision: 0,
        failure_count: 0,
        next_attempt_at: SystemTime::now() + Duration::from_secs(60),
        envelope: envelope(
            format!("timeout-{n}"),
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

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let provider = MemoryProvider::new();
    let store = provider.open("bank-key").await?;
    let started = Instant::now();
    for n in 0..10_000 {
        handle_command(&store, n).await?;
        if n % 10 == 0 {
            run_process(&store, n).await?;
        }
    }
    let consumed = store.next_event_offset().await?;
    store
        .persist(Batch::from(vec![Operation::SaveOffset {
            application_key: "bank-key".into(),
            current_offset: 0,
            next_offset: consumed,
        }]))
        .await?;
    let by_account = store.load_events_by_source(AGGREGATE, "account-3").await?.collect().await?;
    println!("events: {consumed}, events of account-3: {}", by_account.len());
    println!("queued: {}", store.load_queue_messages(usize::MAX).await?.len());
    println!("elapsed: {:.1?}", started.elapsed());
    store.close().await
}
