//! The message queue: operations and repository (docs/batches.md#queue-messages,
//! docs/queue.md#queue-order).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vellum_core::time::truncate_to_micros;
use vellum_core::{
    Envelope, Error, EventRepository, Identity, InvalidBatch, Operation, Persister, QueueMessage,
    QueueRepository,
};

use crate::fixtures::{command, expect_conflict, hours, now, persist, poll_once, queue, random_id, timeout};
use crate::harness::{Backend, Harness};

#[doc(hidden)]
#[macro_export]
macro_rules! __queue_tests {
    ($make:expr $(, $(#[$attr:meta])*)?) => {
        $crate::__tests!($make, [$($(#[$attr])*)?];
            queue::queue_update_changes_retry_state,
            queue::queue_save_as_loaded_increments_revision,
            queue::queue_update_reorders_messages,
            queue::queue_update_keeps_envelope,
            queue::queue_update_with_revision_zero_conflicts,
            queue::queue_update_with_lower_revision_conflicts,
            queue::queue_update_with_higher_revision_conflicts,
            queue::queue_save_new_with_revision_zero,
            queue::queue_save_new_with_empty_source_round_trips,
            queue::queue_save_new_with_nonzero_revision_conflicts,
            queue::queue_remove_with_current_revision,
            queue::queue_remove_leaves_later_message_at_head,
            queue::queue_remove_middle_of_batch,
            queue::queue_remove_with_revision_zero_conflicts,
            queue::queue_remove_with_lower_revision_conflicts,
            queue::queue_remove_with_higher_revision_conflicts,
            queue::queue_remove_absent_with_revision_zero_conflicts,
            queue::queue_remove_absent_with_nonzero_revision_conflicts,
            queue::queue_concurrent_operations_all_succeed,
            queue::queue_load_empty,
            queue::queue_load_returns_messages_in_time_order,
            queue::queue_load_more_than_stored_returns_all,
            queue::queue_load_fewer_than_stored_returns_earliest,
            queue::queue_load_cancelled,
            queue::queue_load_zero_is_empty,
            queue::queue_ties_are_fifo_across_batches,
            queue::queue_ties_are_fifo_within_a_batch,
            queue::queue_update_keeps_first_enqueue_position,
            queue::queue_update_into_tie_orders_by_first_enqueue,
            queue::queue_orders_whole_and_fractional_seconds,
            queue::queue_orders_extreme_times,
            queue::queue_truncates_to_microseconds,
            queue::queue_load_returns_top_n,
            queue::queue_update_moves_earlier_and_later,
            queue::queue_remove_timeout_message,
            queue::queue_unusual_message_ids,
            queue::queue_failure_count_max_round_trips,
            queue::queue_envelope_identities_round_trip_exactly,
            queue::queue_conflict_applies_nothing,
            queue::queue_message_and_event_with_same_id,
            queue::queue_time_out_of_range_is_invalid,
        );
    };
}

/// `<message-i>`, a command of type `A<i+1>`, as the Go suite's env0, env1, env2.
fn env(i: usize) -> Envelope {
    command(&format!("<message-{i}>"), &format!("A{}", i + 1))
}

fn msg(envelope: Envelope, revision: u64, failure_count: u64, next_attempt_at: SystemTime) -> QueueMessage {
    QueueMessage { revision, failure_count, next_attempt_at, envelope }
}

/// A copy of `m` with another revision.
fn rev(m: &QueueMessage, revision: u64) -> QueueMessage {
    QueueMessage { revision, ..m.clone() }
}

fn save(m: &QueueMessage) -> Operation {
    Operation::SaveQueueMessage(m.clone())
}

fn remove(m: &QueueMessage) -> Operation {
    Operation::RemoveQueueMessage(m.clone())
}

fn ids(messages: &[QueueMessage]) -> Vec<&str> {
    messages.iter().map(QueueMessage::id).collect()
}

/// A message with a random ID at `at`, revision 0.
fn random_message(at: SystemTime) -> QueueMessage {
    msg(command(&random_id(), "A1"), 0, 0, at)
}

/// `n` random IDs in ascending order.
fn sorted_ids(n: usize) -> Vec<String> {
    let mut ids: Vec<String> = (0..n).map(|_| random_id()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "random IDs collided");
    ids
}

/// A fixed whole-second instant (2023-11-14T22:13:20Z).
fn base() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

async fn load<B: Backend>(h: &Harness<B>, n: usize) -> Vec<QueueMessage> {
    queue(&*h.store, n).await
}

/// Enqueues each message with revision 0 in one batch.
async fn enqueue<B: Backend>(h: &Harness<B>, messages: &[QueueMessage]) {
    persist(&*h.store, messages.iter().map(save).collect()).await;
}

/// Saves env0 at `now` and returns it as submitted.
async fn env0_on_queue<B: Backend>(h: &Harness<B>) -> QueueMessage {
    let m = msg(env(0), 0, 0, now());
    enqueue(h, std::slice::from_ref(&m)).await;
    m
}

/// env0 on the queue, then saved again unchanged so it has revision 2.
async fn env0_at_revision_2<B: Backend>(h: &Harness<B>) -> QueueMessage {
    let m = env0_on_queue(h).await;
    persist(&*h.store, vec![save(&rev(&m, 1))]).await;
    assert_eq!(load(h, 1).await, vec![rev(&m, 2)]);
    m
}

/// 34. Updating a queued message stores its new failure count and next attempt time.
pub async fn queue_update_changes_retry_state<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let m = env0_on_queue(&h).await;
    let later = hours(m.next_attempt_at, 1);
    persist(&*h.store, vec![save(&msg(env(0), 1, 123, later))]).await;
    assert_eq!(load(&h, 1).await, vec![msg(env(0), 2, 123, later)]);
    h.close().await;
}

/// 35. Saving a message exactly as loaded increments its revision.
pub async fn queue_save_as_loaded_increments_revision<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    env0_on_queue(&h).await;
    let loaded = load(&h, 1).await.remove(0);
    assert_eq!(loaded.revision, 1);
    persist(&*h.store, vec![save(&loaded)]).await;
    assert_eq!(load(&h, 1).await, vec![rev(&loaded, 2)]);
    h.close().await;
}

/// 36. An update moves a message ahead of an earlier one when its new time is earlier.
pub async fn queue_update_reorders_messages<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let m0 = env0_on_queue(&h).await;
    let t = m0.next_attempt_at;
    let m1 = msg(env(1), 0, 0, hours(t, -1));
    enqueue(&h, std::slice::from_ref(&m1)).await;
    assert_eq!(ids(&load(&h, 2).await), ["<message-1>", "<message-0>"]);
    persist(&*h.store, vec![save(&msg(env(0), 1, 0, hours(t, -10)))]).await;
    assert_eq!(load(&h, 2).await, vec![msg(env(0), 2, 0, hours(t, -10)), rev(&m1, 1)]);
    h.close().await;
}

/// 37. The envelope is immutable: an update with a changed envelope changes only the retry
///     state (docs/queue.md#envelopes-are-immutable).
pub async fn queue_update_keeps_envelope<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let m = env0_on_queue(&h).await;
    let mut changed = env(0);
    changed.causation_id = "<different-cause>".into();
    changed.description = "<different description>".into();
    changed.data = b"<different data>".to_vec();
    changed.scheduled_for = "2030-01-01T00:00:00Z".into();
    changed.source_handler = None;
    let later = hours(m.next_attempt_at, 1);
    persist(&*h.store, vec![save(&msg(changed, 1, 7, later))]).await;
    assert_eq!(load(&h, 1).await, vec![msg(env(0), 2, 7, later)]);
    h.close().await;
}

async fn stale_update_conflicts<B: Backend>(b: &B, revision: u64) {
    let h = Harness::open(b).await;
    let m = env0_at_revision_2(&h).await;
    let op = save(&msg(env(0), revision, 5, hours(m.next_attempt_at, 1)));
    expect_conflict(&*h.store, vec![op], 0).await;
    assert_eq!(load(&h, 10).await, vec![rev(&m, 2)]);
    h.close().await;
}

/// 38. Updating a queued message with revision 0 conflicts and leaves it unchanged.
pub async fn queue_update_with_revision_zero_conflicts<B: Backend>(b: &B) {
    stale_update_conflicts(b, 0).await;
}

/// 39. Updating a queued message with a too-low revision conflicts and leaves it unchanged.
pub async fn queue_update_with_lower_revision_conflicts<B: Backend>(b: &B) {
    stale_update_conflicts(b, 1).await;
}

/// 40. Updating a queued message with a too-high revision conflicts and leaves it unchanged.
pub async fn queue_update_with_higher_revision_conflicts<B: Backend>(b: &B) {
    stale_update_conflicts(b, 100).await;
}

/// 41. A new message saved with revision 0 loads with revision 1 and every field as saved.
pub async fn queue_save_new_with_revision_zero<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let m = msg(env(0), 0, 3, now());
    enqueue(&h, std::slice::from_ref(&m)).await;
    assert_eq!(load(&h, 10).await, vec![rev(&m, 1)]);
    h.close().await;
}

/// 42. A message not produced by a handler (no source handler, empty instance ID, empty
///     `scheduled_for`) round-trips exactly (docs/events.md#envelopes-are-stored-exactly).
pub async fn queue_save_new_with_empty_source_round_trips<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let mut envelope = env(0);
    envelope.source_handler = None;
    envelope.source_instance_id = String::new();
    envelope.scheduled_for = String::new();
    let m = msg(envelope, 0, 0, now());
    enqueue(&h, std::slice::from_ref(&m)).await;
    let loaded = load(&h, 10).await;
    assert_eq!(loaded, vec![rev(&m, 1)]);
    assert_eq!(loaded[0].envelope.source_handler, None, "an absent handler must stay absent");
    h.close().await;
}

/// 43. A new message saved with a non-zero revision conflicts and is not enqueued.
pub async fn queue_save_new_with_nonzero_revision_conflicts<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    expect_conflict(&*h.store, vec![save(&msg(env(0), 123, 0, now()))], 0).await;
    assert!(load(&h, 1).await.is_empty());
    h.close().await;
}

/// 44. Removing a queued message with its current revision empties the queue.
pub async fn queue_remove_with_current_revision<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let m = env0_on_queue(&h).await;
    persist(&*h.store, vec![remove(&rev(&m, 1))]).await;
    assert!(load(&h, 10).await.is_empty());
    h.close().await;
}

/// 45. After the head is removed, the next message is at the head.
pub async fn queue_remove_leaves_later_message_at_head<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let m0 = env0_on_queue(&h).await;
    let m1 = msg(env(1), 0, 0, hours(m0.next_attempt_at, 1));
    enqueue(&h, std::slice::from_ref(&m1)).await;
    persist(&*h.store, vec![remove(&rev(&m0, 1))]).await;
    assert_eq!(load(&h, 1).await, vec![rev(&m1, 1)]);
    assert_eq!(load(&h, 10).await, vec![rev(&m1, 1)]);
    h.close().await;
}

/// 46. Removing a message from the middle of the queue keeps the others in order.
pub async fn queue_remove_middle_of_batch<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let m0 = env0_on_queue(&h).await;
    let t = m0.next_attempt_at;
    let m1 = msg(env(1), 0, 0, hours(t, 1));
    let m2 = msg(env(2), 0, 0, hours(t, 2));
    enqueue(&h, &[m1.clone(), m2.clone()]).await;
    persist(&*h.store, vec![remove(&rev(&m1, 1))]).await;
    assert_eq!(load(&h, 3).await, vec![rev(&m0, 1), rev(&m2, 1)]);
    h.close().await;
}

async fn stale_remove_conflicts<B: Backend>(b: &B, revision: u64) {
    let h = Harness::open(b).await;
    let m = env0_at_revision_2(&h).await;
    expect_conflict(&*h.store, vec![remove(&rev(&m, revision))], 0).await;
    assert_eq!(load(&h, 10).await, vec![rev(&m, 2)]);
    h.close().await;
}

/// 47. Removing a queued message with revision 0 conflicts and leaves it unchanged.
pub async fn queue_remove_with_revision_zero_conflicts<B: Backend>(b: &B) {
    stale_remove_conflicts(b, 0).await;
}

/// 48. Removing a queued message with a too-low revision conflicts and leaves it unchanged.
pub async fn queue_remove_with_lower_revision_conflicts<B: Backend>(b: &B) {
    stale_remove_conflicts(b, 1).await;
}

/// 49. Removing a queued message with a too-high revision conflicts and leaves it unchanged.
pub async fn queue_remove_with_higher_revision_conflicts<B: Backend>(b: &B) {
    stale_remove_conflicts(b, 100).await;
}

/// 50. Removing an absent message with revision 0 conflicts; the queue stays empty.
pub async fn queue_remove_absent_with_revision_zero_conflicts<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    expect_conflict(&*h.store, vec![remove(&msg(env(0), 0, 0, now()))], 0).await;
    assert!(load(&h, 10).await.is_empty());
    h.close().await;
}

/// 51. Removing an absent message with a non-zero revision conflicts; the queue stays empty.
pub async fn queue_remove_absent_with_nonzero_revision_conflicts<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    expect_conflict(&*h.store, vec![remove(&msg(env(0), 100, 0, now()))], 0).await;
    assert!(load(&h, 10).await.is_empty());
    h.close().await;
}

/// 52. An insert, an update and a removal of different messages from parallel tasks all
///     succeed (docs/close-and-cancellation.md#concurrency).
pub async fn queue_concurrent_operations_all_succeed<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let t = now();
    let m0 = msg(env(0), 0, 0, t);
    let m1 = msg(env(1), 0, 0, t);
    let m2 = msg(env(2), 0, 0, t);
    enqueue(&h, &[m0.clone(), m1.clone()]).await;
    let batches =
        vec![vec![save(&m2)], vec![save(&msg(env(1), 1, 0, hours(t, 1)))], vec![remove(&rev(&m0, 1))]];
    let tasks: Vec<_> = batches
        .into_iter()
        .map(|ops| {
            let store = Arc::clone(&h.store);
            tokio::spawn(async move {
                persist(&*store, ops).await;
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(load(&h, 3).await, vec![rev(&m2, 1), msg(env(1), 2, 0, hours(t, 1))]);
    h.close().await;
}

/// The Go suite's queue-repository messages: `message0` (failure 1, now+3h, `CommandA3`),
/// `message1` (failure 2, now−10h, `CommandA1`), `message2` (failure 3, now+2h, `CommandA2`).
fn repository_messages() -> [QueueMessage; 3] {
    let t = now();
    [
        msg(command(&random_id(), "A3"), 0, 1, hours(t, 3)),
        msg(command(&random_id(), "A1"), 0, 2, hours(t, -10)),
        msg(command(&random_id(), "A2"), 0, 3, hours(t, 2)),
    ]
}

/// 53. An empty queue loads as nothing.
pub async fn queue_load_empty<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    assert!(load(&h, 10).await.is_empty());
    h.close().await;
}

/// 54. Messages load in `next_attempt_at` order with revision 1 and every field as saved.
pub async fn queue_load_returns_messages_in_time_order<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let [m0, m1, m2] = repository_messages();
    enqueue(&h, &[m0.clone(), m1.clone(), m2.clone()]).await;
    assert_eq!(load(&h, 3).await, vec![rev(&m1, 1), rev(&m2, 1), rev(&m0, 1)]);
    h.close().await;
}

/// 55. Asking for more messages than are queued returns all of them.
pub async fn queue_load_more_than_stored_returns_all<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let [m0, m1, m2] = repository_messages();
    enqueue(&h, &[m0.clone(), m1.clone(), m2.clone()]).await;
    assert_eq!(load(&h, 10).await, vec![rev(&m1, 1), rev(&m2, 1), rev(&m0, 1)]);
    h.close().await;
}

/// 56. Asking for fewer messages than are queued returns the earliest ones.
pub async fn queue_load_fewer_than_stored_returns_earliest<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let [m0, m1, m2] = repository_messages();
    enqueue(&h, &[m0, m1.clone(), m2.clone()]).await;
    assert_eq!(load(&h, 2).await, vec![rev(&m1, 1), rev(&m2, 1)]);
    h.close().await;
}

/// 57. A queue load abandoned before it completes (Rust's cancellation is dropping the future)
///     either answered correctly or leaves the store working and the data intact.
pub async fn queue_load_cancelled<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let [m0, _, _] = repository_messages();
    enqueue(&h, std::slice::from_ref(&m0)).await;
    if let Some(result) = poll_once(h.store.load_queue_messages(1)).await {
        assert_eq!(result.unwrap(), vec![rev(&m0, 1)]);
    }
    assert_eq!(load(&h, 1).await, vec![rev(&m0, 1)]);
    h.close().await;
}

/// docs/queue.md#loading-the-head: `load_queue_messages(0)` returns nothing, however many
/// messages are queued.
pub async fn queue_load_zero_is_empty<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let [m0, m1, m2] = repository_messages();
    enqueue(&h, &[m0, m1, m2]).await;
    assert!(load(&h, 0).await.is_empty());
    assert_eq!(load(&h, 10).await.len(), 3);
    h.close().await;
}

/// The insertion order of the tie tests: neither ascending nor descending by ID.
const TIE_ORDER: [usize; 6] = [3, 0, 5, 1, 4, 2];

/// One message before, six tied messages enqueued in [`TIE_ORDER`] (one batch each, or all in
/// one batch), one message after; the tied ones must come back in enqueue order.
async fn ties_are_fifo<B: Backend>(b: &B, one_batch: bool) {
    let h = Harness::open(b).await;
    let t = base();
    let sorted = sorted_ids(TIE_ORDER.len());
    let tied: Vec<QueueMessage> =
        TIE_ORDER.iter().map(|&i| msg(command(&sorted[i], "A1"), 0, 0, t)).collect();
    let before = random_message(hours(t, -1));
    let after = random_message(hours(t, 1));
    enqueue(&h, std::slice::from_ref(&after)).await;
    if one_batch {
        enqueue(&h, &tied).await;
    } else {
        for m in &tied {
            enqueue(&h, std::slice::from_ref(m)).await;
        }
    }
    enqueue(&h, std::slice::from_ref(&before)).await;
    let mut expected = vec![rev(&before, 1)];
    expected.extend(tied.iter().map(|m| rev(m, 1)));
    expected.push(rev(&after, 1));
    assert_eq!(ids(&load(&h, 10).await), ids(&expected), "ties must be FIFO by enqueue order (D6)");
    assert_eq!(load(&h, 10).await, expected);
    assert_eq!(ids(&load(&h, 4).await), ids(&expected[..4]));
    h.close().await;
}

/// docs/queue.md#queue-order: messages with equal `next_attempt_at` enqueued by separate batches
/// load in enqueue order, not message-ID order.
pub async fn queue_ties_are_fifo_across_batches<B: Backend>(b: &B) {
    ties_are_fifo(b, false).await;
}

/// docs/queue.md#queue-order: messages with equal `next_attempt_at` enqueued by one batch load in
/// batch order, not message-ID order.
pub async fn queue_ties_are_fifo_within_a_batch<B: Backend>(b: &B) {
    ties_are_fifo(b, true).await;
}

/// docs/queue.md#queue-order: ties are ordered by *first* enqueue, so updating a message (in
/// place, or away and back) keeps its position among messages with the same time.
pub async fn queue_update_keeps_first_enqueue_position<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let t = base();
    let sorted = sorted_ids(3);
    let [m_a, m_b, m_c] = [2usize, 0, 1].map(|i| msg(command(&sorted[i], "A1"), 0, 0, t));
    for m in [&m_a, &m_b, &m_c] {
        enqueue(&h, std::slice::from_ref(m)).await;
    }
    let order = [m_a.id(), m_b.id(), m_c.id()];
    assert_eq!(ids(&load(&h, 3).await), order);

    // In place: only the failure count changes.
    persist(&*h.store, vec![save(&msg(m_a.envelope.clone(), 1, 1, t))]).await;
    assert_eq!(ids(&load(&h, 3).await), order);
    persist(&*h.store, vec![save(&msg(m_b.envelope.clone(), 1, 1, t))]).await;
    assert_eq!(ids(&load(&h, 3).await), order);

    // Away and back.
    persist(&*h.store, vec![save(&msg(m_a.envelope.clone(), 2, 2, hours(t, 1)))]).await;
    assert_eq!(ids(&load(&h, 3).await), [m_b.id(), m_c.id(), m_a.id()]);
    persist(&*h.store, vec![save(&msg(m_a.envelope.clone(), 3, 3, t))]).await;
    assert_eq!(
        load(&h, 3).await,
        vec![msg(m_a.envelope.clone(), 4, 3, t), msg(m_b.envelope.clone(), 2, 1, t), rev(&m_c, 1)]
    );
    h.close().await;
}

/// docs/queue.md#queue-order: a message enqueued before others, updated to their time, comes
/// first among them (FIFO by first enqueue, not by the time of the update).
pub async fn queue_update_into_tie_orders_by_first_enqueue<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let t = base();
    let sorted = sorted_ids(3);
    let early = msg(command(&sorted[2], "A1"), 0, 0, hours(t, 2));
    let m_x = msg(command(&sorted[1], "A1"), 0, 0, t);
    let m_y = msg(command(&sorted[0], "A1"), 0, 0, t);
    enqueue(&h, std::slice::from_ref(&early)).await;
    enqueue(&h, &[m_x.clone(), m_y.clone()]).await;
    assert_eq!(ids(&load(&h, 3).await), [m_x.id(), m_y.id(), early.id()]);
    persist(&*h.store, vec![save(&msg(early.envelope.clone(), 1, 0, t))]).await;
    assert_eq!(load(&h, 3).await, vec![msg(early.envelope.clone(), 2, 0, t), rev(&m_x, 1), rev(&m_y, 1)]);
    h.close().await;
}

/// docs/queue.md#time-precision-and-range: order is by instant, not by text: a whole second sorts
/// before its fractions and `.1` before `.12` (the bolt/SQLite RFC 3339 string-order bug).
pub async fn queue_orders_whole_and_fractional_seconds<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let t = base();
    // Offsets from t in microseconds, in insertion order.
    let offsets = [0, 500_000, 1_000_000, 100_000, 120_000, 1, 999_999, 1_000_001, 10_000_000];
    let messages: Vec<QueueMessage> =
        offsets.iter().map(|&us| random_message(t + Duration::from_micros(us))).collect();
    enqueue(&h, &messages[..3]).await;
    for m in &messages[3..] {
        enqueue(&h, std::slice::from_ref(m)).await;
    }
    let mut expected: Vec<QueueMessage> = messages.iter().map(|m| rev(m, 1)).collect();
    expected.sort_by_key(|m| m.next_attempt_at);
    let loaded = load(&h, 20).await;
    assert_eq!(
        loaded.iter().map(|m| m.next_attempt_at).collect::<Vec<_>>(),
        expected.iter().map(|m| m.next_attempt_at).collect::<Vec<_>>(),
        "messages must load in time order"
    );
    assert_eq!(loaded, expected);
    h.close().await;
}

/// docs/queue.md#time-precision-and-range: instants before 1970, at year 1 and at year 9999 (and
/// past 2038) are stored exactly and ordered correctly, including negative fractional seconds;
/// updates work at those extremes.
pub async fn queue_orders_extreme_times<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let before = |d: Duration| UNIX_EPOCH.checked_sub(d);
    let after = |d: Duration| UNIX_EPOCH.checked_add(d);
    // In time order. SystemTime cannot hold year 1 on every platform; such instants are skipped.
    let times: Vec<SystemTime> = [
        before(Duration::from_secs(62_135_596_800)), // 0001-01-01T00:00:00Z
        before(Duration::from_micros(62_135_596_799_999_999)), // one µs later
        before(Duration::from_secs(2_208_988_800)),  // 1900-01-01T00:00:00Z
        before(Duration::from_millis(1_500)),
        before(Duration::from_secs(1)),
        before(Duration::from_millis(500)),
        before(Duration::from_micros(1)),
        Some(UNIX_EPOCH),
        after(Duration::from_micros(1)),
        after(Duration::from_secs(2_147_483_648)), // 2038-01-19T03:14:08Z
        after(Duration::from_micros(253_402_300_799_999_998)),
        after(Duration::from_micros(253_402_300_799_999_999)), // 9999-12-31T23:59:59.999999Z
    ]
    .into_iter()
    .flatten()
    .collect();
    let messages: Vec<QueueMessage> = times.iter().map(|&t| random_message(t)).collect();
    let n = messages.len();
    // Insert in a scrambled order (5 is coprime with 12 and 11), half of them in one batch.
    let scrambled: Vec<QueueMessage> = (0..n).map(|k| messages[(k * 5 + 3) % n].clone()).collect();
    enqueue(&h, &scrambled[..n / 2]).await;
    for m in &scrambled[n / 2..] {
        enqueue(&h, std::slice::from_ref(m)).await;
    }
    let expected: Vec<QueueMessage> = messages.iter().map(|m| rev(m, 1)).collect();
    let loaded = load(&h, 100).await;
    assert_eq!(loaded.iter().map(|m| m.next_attempt_at).collect::<Vec<_>>(), times);
    assert_eq!(loaded, expected);

    // Move the earliest message to just before the latest one.
    let first = &messages[0];
    let moved = msg(first.envelope.clone(), 1, 9, times[n - 2] - Duration::from_micros(1));
    persist(&*h.store, vec![save(&moved)]).await;
    let mut expected: Vec<QueueMessage> = expected[1..].to_vec();
    expected.insert(n - 3, rev(&moved, 2));
    assert_eq!(load(&h, 100).await, expected);
    h.close().await;
}

/// docs/queue.md#time-precision-and-range: `next_attempt_at` is stored with microsecond
/// precision, truncated towards the past the same way by every provider ([`truncate_to_micros`]);
/// instants in one microsecond tie.
pub async fn queue_truncates_to_microseconds<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let t = base();
    let a = random_message(t + Duration::from_nanos(1_234_999));
    let b2 = random_message(t + Duration::from_nanos(1_234_001));
    let pre = random_message(UNIX_EPOCH - Duration::from_nanos(1_001));
    enqueue(&h, &[a.clone(), b2.clone()]).await;
    enqueue(&h, std::slice::from_ref(&pre)).await;

    let stored = t + Duration::from_micros(1_234);
    assert_eq!(truncate_to_micros(a.next_attempt_at), stored);
    let expected = vec![
        QueueMessage { next_attempt_at: UNIX_EPOCH - Duration::from_micros(2), ..rev(&pre, 1) },
        // Both truncate to the same microsecond, so they tie and stay in enqueue order.
        QueueMessage { next_attempt_at: stored, ..rev(&a, 1) },
        QueueMessage { next_attempt_at: stored, ..rev(&b2, 1) },
    ];
    assert_eq!(load(&h, 10).await, expected);
    assert_eq!(load(&h, 10).await, expected, "repeated reads must return the same instants");

    // Updates are truncated the same way.
    let update = msg(a.envelope.clone(), 1, 1, t + Duration::from_nanos(5_000_999));
    persist(&*h.store, vec![save(&update)]).await;
    let head = load(&h, 10).await;
    assert_eq!(head[2], msg(a.envelope.clone(), 2, 1, t + Duration::from_millis(5)));
    assert_eq!(head[2].next_attempt_at, truncate_to_micros(update.next_attempt_at));
    h.close().await;
}

/// docs/queue.md#loading-the-head: with 50 messages at shuffled times, `load_queue_messages(10)`
/// returns exactly the ten earliest, in order (the engine treats "fewer than asked" as "the whole
/// queue").
pub async fn queue_load_returns_top_n<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let t = base();
    let messages: Vec<QueueMessage> =
        (0..50u64).map(|i| random_message(t + Duration::from_secs(60 * i))).collect();
    let scrambled: Vec<QueueMessage> = (0..50).map(|k| messages[(k * 17 + 5) % 50].clone()).collect();
    for chunk in scrambled.chunks(10) {
        enqueue(&h, chunk).await;
    }
    let expected: Vec<QueueMessage> = messages.iter().map(|m| rev(m, 1)).collect();
    assert_eq!(load(&h, 10).await, expected[..10]);
    assert_eq!(load(&h, 1).await, expected[..1]);
    assert_eq!(load(&h, 49).await, expected[..49]);
    assert_eq!(load(&h, 50).await, expected);
    assert_eq!(load(&h, 51).await, expected);
    h.close().await;
}

/// docs/queue.md#queue-order: an update moves a message later or earlier in the order.
pub async fn queue_update_moves_earlier_and_later<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let t = base();
    let [m_a, m_b, m_c] = [0, 1, 2].map(|i| random_message(hours(t, i)));
    enqueue(&h, &[m_a.clone(), m_b.clone(), m_c.clone()]).await;
    assert_eq!(ids(&load(&h, 3).await), [m_a.id(), m_b.id(), m_c.id()]);

    let a_later = msg(m_a.envelope.clone(), 1, 1, hours(t, 3));
    persist(&*h.store, vec![save(&a_later)]).await;
    assert_eq!(load(&h, 3).await, vec![rev(&m_b, 1), rev(&m_c, 1), rev(&a_later, 2)]);
    assert_eq!(load(&h, 1).await, vec![rev(&m_b, 1)]);

    let c_earlier = msg(m_c.envelope.clone(), 1, 1, hours(t, -1));
    persist(&*h.store, vec![save(&c_earlier)]).await;
    assert_eq!(load(&h, 3).await, vec![rev(&c_earlier, 2), rev(&m_b, 1), rev(&a_later, 2)]);
    assert_eq!(load(&h, 1).await, vec![rev(&c_earlier, 2)]);
    h.close().await;
}

/// docs/queue.md#timeouts: a timeout message is removed like any other, and its ID can be
/// enqueued again.
pub async fn queue_remove_timeout_message<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let t = now();
    let id = random_id();
    let tm = msg(timeout(&id, "<process>", "<instance>", t), 0, 0, t);
    let other = random_message(hours(t, 1));
    enqueue(&h, &[tm.clone(), other.clone()]).await;
    assert_eq!(load(&h, 10).await, vec![rev(&tm, 1), rev(&other, 1)]);

    persist(&*h.store, vec![remove(&rev(&tm, 1))]).await;
    assert_eq!(load(&h, 10).await, vec![rev(&other, 1)]);

    enqueue(&h, std::slice::from_ref(&tm)).await;
    assert_eq!(load(&h, 10).await, vec![rev(&tm, 1), rev(&other, 1)]);
    h.close().await;
}

/// docs/batches.md#identifiers (IDs are opaque strings): empty, Unicode, quoted and SQL-looking
/// message IDs can be enqueued, updated and removed.
pub async fn queue_unusual_message_ids<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let t = base();
    let odd = [
        "",
        "ünïcødé ✓ 消息 🦀",
        "it's a \"quoted\" `id`",
        "'; DROP TABLE queue; --",
        "back\\slash\ttab\nnewline",
        "%_*?[]",
        " ",
    ];
    let messages: Vec<QueueMessage> =
        odd.iter().zip(0..).map(|(id, i)| msg(command(id, "A1"), 0, 0, hours(t, i))).collect();
    enqueue(&h, &messages).await;
    let expected: Vec<QueueMessage> = messages.iter().map(|m| rev(m, 1)).collect();
    assert_eq!(load(&h, 10).await, expected);

    persist(
        &*h.store,
        messages.iter().map(|m| save(&QueueMessage { failure_count: 1, ..rev(m, 1) })).collect(),
    )
    .await;
    let expected: Vec<QueueMessage> =
        messages.iter().map(|m| QueueMessage { failure_count: 1, ..rev(m, 2) }).collect();
    assert_eq!(load(&h, 10).await, expected);

    expect_conflict(&*h.store, vec![remove(&rev(&messages[0], 1))], 0).await;
    persist(&*h.store, messages.iter().map(|m| remove(&rev(m, 2))).collect()).await;
    assert!(load(&h, 10).await.is_empty());
    h.close().await;
}

/// docs/queue.md#revisions-and-failure-counts: `failure_count` is a full u64; `u64::MAX`
/// round-trips on insert and update.
pub async fn queue_failure_count_max_round_trips<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let t = now();
    let m = msg(env(0), 0, u64::MAX, t);
    enqueue(&h, std::slice::from_ref(&m)).await;
    assert_eq!(load(&h, 1).await, vec![rev(&m, 1)]);
    persist(&*h.store, vec![save(&msg(env(0), 1, 0, t))]).await;
    assert_eq!(load(&h, 1).await, vec![msg(env(0), 2, 0, t)]);
    persist(&*h.store, vec![save(&msg(env(0), 2, u64::MAX - 1, t))]).await;
    assert_eq!(load(&h, 1).await, vec![msg(env(0), 3, u64::MAX - 1, t)]);
    h.close().await;
}

/// docs/events.md#envelopes-are-stored-exactly: queued envelopes come back exactly, keeping
/// absent and present-but-empty identities apart, and `source_site`.
pub async fn queue_envelope_identities_round_trip_exactly<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let t = base();
    let mut present_empty = command(&random_id(), "A1");
    present_empty.source_handler = Some(Identity::default());
    present_empty.source_application = Some(Identity::new("", ""));
    present_empty.source_instance_id = String::new();
    present_empty.created_at = String::new();
    present_empty.description = String::new();
    present_empty.data = Vec::new();
    let mut absent = command(&random_id(), "A1");
    absent.source_handler = None;
    absent.source_application = None;
    absent.source_instance_id = String::new();
    let mut site = command(&random_id(), "A1");
    site.source_site = Some(Identity::new("<site-name>", "<site-key>"));
    let mut empty_site = command(&random_id(), "A1");
    empty_site.source_site = Some(Identity::default());
    let messages: Vec<QueueMessage> = [present_empty, absent, site, empty_site]
        .into_iter()
        .zip(0..)
        .map(|(e, i)| msg(e, 0, 0, hours(t, i)))
        .collect();
    enqueue(&h, &messages).await;
    let loaded = load(&h, 10).await;
    assert_eq!(loaded, messages.iter().map(|m| rev(m, 1)).collect::<Vec<_>>());
    assert_eq!(loaded[0].envelope.source_handler, Some(Identity::default()));
    assert_eq!(loaded[1].envelope.source_handler, None);
    assert_eq!(loaded[2].envelope.source_site, Some(Identity::new("<site-name>", "<site-key>")));
    assert_eq!(loaded[3].envelope.source_site, Some(Identity::default()));
    h.close().await;
}

/// docs/batches.md#evaluation-order: a batch with a conflicting queue op applies none of its queue
/// ops; the first conflict in batch order is reported.
pub async fn queue_conflict_applies_nothing<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let t = now();
    let m0 = env0_on_queue(&h).await;
    let m1 = msg(env(1), 0, 0, hours(t, -1));
    let ops = vec![
        save(&m1),
        save(&msg(env(0), 1, 9, hours(t, -2))),
        remove(&msg(env(2), 3, 0, t)),
        save(&msg(command(&random_id(), "A1"), 7, 0, t)),
    ];
    expect_conflict(&*h.store, ops, 2).await;
    assert_eq!(load(&h, 10).await, vec![rev(&m0, 1)]);

    let ops = vec![save(&m1), remove(&rev(&m0, 1)), save(&msg(env(2), 5, 0, t))];
    expect_conflict(&*h.store, ops, 2).await;
    assert_eq!(load(&h, 10).await, vec![rev(&m0, 1)]);
    h.close().await;
}

/// docs/batches.md#entity-keys: an event and a queue message with the same message ID in one batch
/// are legal (the engine records an event and enqueues it for its own handlers atomically).
pub async fn queue_message_and_event_with_same_id<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let envelope = command(&random_id(), "A1");
    let m = msg(envelope.clone(), 0, 0, now());
    let result = persist(&*h.store, vec![Operation::SaveEvent(envelope.clone()), save(&m)]).await;
    assert_eq!(result.event_offsets.len(), 1);
    assert_eq!(result.event_offsets.get(&envelope.message_id), Some(&0));
    assert_eq!(h.store.next_event_offset().await.unwrap(), 1);
    assert_eq!(load(&h, 10).await, vec![rev(&m, 1)]);
    h.close().await;
}

/// docs/queue.md#time-precision-and-range: a `next_attempt_at` outside the storable microsecond
/// range makes the whole batch invalid, naming the op; nothing is enqueued.
pub async fn queue_time_out_of_range_is_invalid<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    // About 317,000 years after 1970: past i64 microseconds. Not representable everywhere.
    if let Some(far) = UNIX_EPOCH.checked_add(Duration::from_secs(10_000_000_000_000)) {
        let bad = random_message(far);
        let ops = vec![save(&msg(env(0), 0, 0, now())), save(&bad)];
        match h.store.persist(ops.into()).await {
            Err(Error::InvalidBatch(InvalidBatch::TimeOutOfRange { index, message_id })) => {
                assert_eq!(index, 1);
                assert_eq!(message_id, bad.id());
            }
            other => panic!("expected an out-of-range time to be an invalid batch, got {other:?}"),
        }
        assert!(load(&h, 10).await.is_empty());
    }
    h.close().await;
}
