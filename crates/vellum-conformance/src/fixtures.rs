//! Shared fixture values and helpers, following the Go suite's harness.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vellum_core::{
    AggregateMetaData, Batch, DataStore, Envelope, Error, Event, EventCursor, Identity, Operation, Packet,
    PersistResult, ProcessInstance, QueueMessage,
};

/// The application key every test opens.
pub const DEFAULT_APP_KEY: &str = "a96fefa1-2630-467a-b756-db2e428a56fd";
/// The handler key fixture envelopes are produced by.
pub const DEFAULT_HANDLER_KEY: &str = "16c7843f-c94f-4fd1-ba80-fd59cab793ff";

/// An envelope as the Go suite builds them: default source application, handler and instance,
/// media type and JSON data derived from the portable name.
#[must_use]
pub fn envelope(message_id: &str, portable_name: &str) -> Envelope {
    Envelope {
        message_id: message_id.to_owned(),
        causation_id: "<cause>".to_owned(),
        correlation_id: "<correlation>".to_owned(),
        source_application: Some(Identity::new("<app-name>", DEFAULT_APP_KEY)),
        source_handler: Some(Identity::new("<handler-name>", DEFAULT_HANDLER_KEY)),
        source_instance_id: "<instance>".to_owned(),
        created_at: "2026-11-26T10:11:12.123456789Z".to_owned(),
        scheduled_for: String::new(),
        description: format!("{portable_name} {message_id}"),
        portable_name: portable_name.to_owned(),
        media_type: format!("application/json; type=\"{portable_name}\""),
        data: format!("{{\"id\":\"{message_id}\"}}").into_bytes(),
        source_site: None,
    }
}

/// An event envelope of stub type `EventStub[Type<t>]`.
#[must_use]
pub fn event(message_id: &str, t: &str) -> Envelope {
    envelope(message_id, &format!("EventStub[Type{t}]"))
}

/// A command envelope of stub type `CommandStub[Type<t>]`.
#[must_use]
pub fn command(message_id: &str, t: &str) -> Envelope {
    envelope(message_id, &format!("CommandStub[Type{t}]"))
}

/// A timeout envelope owned by process instance `(handler_key, instance_id)`.
#[must_use]
pub fn timeout(message_id: &str, handler_key: &str, instance_id: &str, at: SystemTime) -> Envelope {
    let mut env = envelope(message_id, "TimeoutStub[TypeT]");
    env.source_handler = Some(Identity::new("<process-name>", handler_key));
    instance_id.clone_into(&mut env.source_instance_id);
    env.scheduled_for = rfc3339(at);
    env
}

/// An instant as RFC 3339 text (UTC, nanoseconds), as envelopes carry times.
#[must_use]
pub fn rfc3339(t: SystemTime) -> String {
    vellum_core::time::rfc3339(t)
}

/// Now, truncated to whole milliseconds as the Go suite does.
#[must_use]
pub fn now() -> SystemTime {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    UNIX_EPOCH + Duration::from_millis(since.as_millis() as u64)
}

/// `hours` hours after (positive) or before (negative) `t`.
#[must_use]
pub fn hours(t: SystemTime, hours: i64) -> SystemTime {
    let d = Duration::from_secs(hours.unsigned_abs() * 3600);
    if hours >= 0 { t + d } else { t - d }
}

/// A random-looking UUID-shaped ID, so no test depends on IDs sorting in insertion order.
#[must_use]
pub fn random_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64
        ^ COUNTER.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let a = splitmix(seed);
    let b = splitmix(a);
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A queue message with revision 0 and no failures.
#[must_use]
pub fn queue_message(envelope: Envelope, next_attempt_at: SystemTime) -> QueueMessage {
    QueueMessage { revision: 0, failure_count: 0, next_attempt_at, envelope }
}

/// Aggregate meta-data with the given revision.
#[must_use]
pub fn aggregate(handler_key: &str, instance_id: &str, revision: u64) -> AggregateMetaData {
    AggregateMetaData { revision, ..AggregateMetaData::new(handler_key, instance_id) }
}

/// A process instance with the given revision and packet.
#[must_use]
pub fn process(handler_key: &str, instance_id: &str, revision: u64, packet: Packet) -> ProcessInstance {
    ProcessInstance { revision, packet, ..ProcessInstance::new(handler_key, instance_id) }
}

/// `SaveOffset` shorthand.
#[must_use]
pub fn save_offset(application_key: &str, current_offset: u64, next_offset: u64) -> Operation {
    Operation::SaveOffset { application_key: application_key.to_owned(), current_offset, next_offset }
}

/// Persists `ops`, which must succeed.
pub async fn persist<S: DataStore>(store: &S, ops: Vec<Operation>) -> PersistResult {
    let what = format!("{ops:?}");
    store.persist(Batch::from(ops)).await.unwrap_or_else(|e| panic!("persist {what} failed: {e}"))
}

/// Persists `ops`, which must fail with a conflict on exactly the op at `index`.
pub async fn expect_conflict<S: DataStore>(store: &S, ops: Vec<Operation>, index: usize) {
    let expected = ops[index].clone();
    match store.persist(Batch::from(ops)).await {
        Err(Error::Conflict { index: got, op }) => {
            assert_eq!(got, index, "conflict reported on the wrong op");
            assert_eq!(*op, expected, "conflict must carry the op exactly as submitted");
        }
        other => panic!("expected a conflict on op {index}, got {other:?}"),
    }
}

/// Drains a cursor.
pub async fn drain(cursor: EventCursor) -> Vec<Event> {
    cursor.collect().await.expect("read events")
}

/// Every event of the given types from `min_offset`.
pub async fn by_type<S: DataStore>(store: &S, types: &[&str], min_offset: u64) -> Vec<Event> {
    drain(store.load_events_by_type(types, min_offset).await.expect("load by type")).await
}

/// Every event produced by `(handler_key, instance_id)`.
pub async fn by_source<S: DataStore>(store: &S, handler_key: &str, instance_id: &str) -> Vec<Event> {
    drain(store.load_events_by_source(handler_key, instance_id).await.expect("load by source")).await
}

/// The head of the queue (up to `n` messages).
pub async fn queue<S: DataStore>(store: &S, n: usize) -> Vec<QueueMessage> {
    store.load_queue_messages(n).await.expect("load queue")
}

/// Polls `future` once and drops it if it is not ready: the Rust form of the Go suite's
/// "call with an already-cancelled context" (docs/close-and-cancellation.md#cancellation).
/// `Some` holds an answer given at once.
pub async fn poll_once<F: std::future::Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| match future.as_mut().poll(cx) {
        std::task::Poll::Ready(value) => std::task::Poll::Ready(Some(value)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await
}
