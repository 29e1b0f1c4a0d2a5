//! Process instances: operations and repository (docs/batches.md#process-instances,
//! docs/batches.md#process-removal-and-timeouts).

use std::sync::Arc;
use std::time::SystemTime;

use vellum_core::{
    AggregateMetaData, AggregateRepository, Error, InvalidBatch, Operation, Packet, Persister,
    ProcessInstance, ProcessRepository, QueueMessage,
};

use crate::fixtures::{
    DEFAULT_HANDLER_KEY, aggregate, command, expect_conflict, hours, now, persist, poll_once, process, queue,
    queue_message, timeout,
};
use crate::harness::{Backend, Harness};

#[doc(hidden)]
#[macro_export]
macro_rules! __process_tests {
    ($make:expr $(, $(#[$attr:meta])*)?) => {
        $crate::__tests!($make, [$($(#[$attr])*)?];
            process::process_save_new_with_revision_zero,
            process::process_save_new_with_nonzero_revision_conflicts,
            process::process_save_existing_increments_revision,
            process::process_save_existing_with_revision_zero_conflicts,
            process::process_save_existing_with_lower_revision_conflicts,
            process::process_save_existing_with_higher_revision_conflicts,
            process::process_remove_with_current_revision,
            process::process_remove_removes_owned_timeouts,
            process::process_remove_with_revision_zero_conflicts,
            process::process_remove_with_lower_revision_conflicts,
            process::process_remove_with_higher_revision_conflicts,
            process::process_remove_absent_with_revision_zero_conflicts,
            process::process_remove_absent_with_nonzero_revision_conflicts,
            process::process_concurrent_operations_all_succeed,
            process::process_load_never_saved_returns_default,
            process::process_load_returns_saved_instance,
            process::process_load_cancelled,
            process::process_empty_packet_round_trips,
            process::process_save_empty_packet_clears_packet,
            process::process_half_empty_packets_round_trip,
            process::process_large_packet_round_trips,
            process::process_remove_keeps_other_messages,
            process::process_remove_cascades_updated_timeouts,
            process::process_remove_with_own_timeout_removal_succeeds,
            process::process_remove_after_own_timeout_removal_succeeds,
            process::process_stale_remove_with_timeout_removal_conflicts,
            process::process_remove_with_stale_timeout_removal_conflicts,
            process::process_update_of_cascaded_timeout_is_moot,
            process::process_remove_cascade_follows_batch_order,
            process::process_conflict_applies_nothing,
            process::process_same_instance_under_other_handler_is_independent,
            process::process_recreate_after_remove,
            process::process_empty_keys_round_trip,
            process::process_and_aggregate_with_same_key_is_invalid,
            process::process_save_and_remove_in_one_batch_is_invalid,
        );
    };
}

const HK: &str = DEFAULT_HANDLER_KEY;
const INSTANCE: &str = "<instance>";

fn packet() -> Packet {
    Packet::new("<media-type>", "<data>")
}

fn save(p: ProcessInstance) -> Operation {
    Operation::SaveProcessInstance(p)
}

fn remove(p: ProcessInstance) -> Operation {
    Operation::RemoveProcessInstance(p)
}

fn save_message(m: &QueueMessage) -> Operation {
    Operation::SaveQueueMessage(m.clone())
}

fn remove_message(m: &QueueMessage, revision: u64) -> Operation {
    Operation::RemoveQueueMessage(QueueMessage { revision, ..m.clone() })
}

/// A copy of `m` with another revision.
fn rev(m: &QueueMessage, revision: u64) -> QueueMessage {
    QueueMessage { revision, ..m.clone() }
}

/// A timeout owned by `(hk, id)`, due (and to be attempted) at `at`, not yet enqueued.
fn timeout_message(message_id: &str, hk: &str, id: &str, at: SystemTime) -> QueueMessage {
    queue_message(timeout(message_id, hk, id, at), at)
}

async fn load<B: Backend>(h: &Harness<B>, hk: &str, id: &str) -> ProcessInstance {
    h.store.load_process_instance(hk, id).await.unwrap()
}

/// The instance `(HK, INSTANCE)` saved with [`packet`]: revision 1.
async fn saved<B: Backend>(h: &Harness<B>) {
    persist(&*h.store, vec![save(process(HK, INSTANCE, 0, packet()))]).await;
}

/// The instance saved with a packet, then again with an empty one: revision 2, empty packet.
async fn bump_to_revision_2<B: Backend>(h: &Harness<B>) {
    saved(h).await;
    persist(&*h.store, vec![save(process(HK, INSTANCE, 1, Packet::default()))]).await;
    assert_eq!(load(h, HK, INSTANCE).await, process(HK, INSTANCE, 2, Packet::default()));
}

/// The instance saved (revision 1) and a timeout it owns enqueued (revision 1); returns the
/// timeout as submitted.
async fn instance_with_timeout<B: Backend>(h: &Harness<B>) -> QueueMessage {
    saved(h).await;
    let t = now();
    let tm = timeout_message("<timeout>", HK, INSTANCE, t);
    persist(&*h.store, vec![save_message(&tm)]).await;
    tm
}

/// 68. A new instance saved with revision 0 loads with revision 1.
pub async fn process_save_new_with_revision_zero<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    saved(&h).await;
    assert_eq!(load(&h, HK, INSTANCE).await, process(HK, INSTANCE, 1, packet()));
    h.close().await;
}

/// 69. A new instance saved with a non-zero revision conflicts and stays absent.
pub async fn process_save_new_with_nonzero_revision_conflicts<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    expect_conflict(&*h.store, vec![save(process(HK, INSTANCE, 123, packet()))], 0).await;
    assert_eq!(load(&h, HK, INSTANCE).await, ProcessInstance::new(HK, INSTANCE));
    h.close().await;
}

/// 70. Saving an existing instance with its current revision and no changes increments it.
pub async fn process_save_existing_increments_revision<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    saved(&h).await;
    persist(&*h.store, vec![save(process(HK, INSTANCE, 1, packet()))]).await;
    assert_eq!(load(&h, HK, INSTANCE).await, process(HK, INSTANCE, 2, packet()));
    h.close().await;
}

async fn stale_save_conflicts<B: Backend>(b: &B, revision: u64) {
    let h = Harness::open(b).await;
    bump_to_revision_2(&h).await;
    expect_conflict(&*h.store, vec![save(process(HK, INSTANCE, revision, packet()))], 0).await;
    assert_eq!(load(&h, HK, INSTANCE).await, process(HK, INSTANCE, 2, Packet::default()));
    h.close().await;
}

/// 71. An existing instance saved with revision 0 conflicts and is unchanged.
pub async fn process_save_existing_with_revision_zero_conflicts<B: Backend>(b: &B) {
    stale_save_conflicts(b, 0).await;
}

/// 72. An existing instance saved with a too-low revision conflicts and is unchanged.
pub async fn process_save_existing_with_lower_revision_conflicts<B: Backend>(b: &B) {
    stale_save_conflicts(b, 1).await;
}

/// 73. An existing instance saved with a too-high revision conflicts and is unchanged.
pub async fn process_save_existing_with_higher_revision_conflicts<B: Backend>(b: &B) {
    stale_save_conflicts(b, 100).await;
}

/// 74. Removing an instance with its current revision makes it load as the default.
pub async fn process_remove_with_current_revision<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    saved(&h).await;
    persist(&*h.store, vec![remove(process(HK, INSTANCE, 1, packet()))]).await;
    assert_eq!(load(&h, HK, INSTANCE).await, ProcessInstance::new(HK, INSTANCE));
    h.close().await;
}

/// 75. Removing an instance removes every timeout it owns, and only those
///     (docs/batches.md#process-removal-and-timeouts).
pub async fn process_remove_removes_owned_timeouts<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    saved(&h).await;
    let t = now();
    let m0 = timeout_message("<message-0>", HK, INSTANCE, t);
    let m1 = timeout_message("<message-1>", HK, "<other-instance>", hours(t, 1));
    let m2 = timeout_message("<message-2>", HK, INSTANCE, hours(t, 2));
    persist(&*h.store, vec![save_message(&m0), save_message(&m1), save_message(&m2)]).await;
    persist(&*h.store, vec![remove(process(HK, INSTANCE, 1, packet()))]).await;
    assert_eq!(queue(&*h.store, 3).await, vec![rev(&m1, 1)]);
    assert_eq!(load(&h, HK, INSTANCE).await, ProcessInstance::new(HK, INSTANCE));
    h.close().await;
}

async fn stale_remove_conflicts<B: Backend>(b: &B, revision: u64) {
    let h = Harness::open(b).await;
    bump_to_revision_2(&h).await;
    let tm = timeout_message("<timeout>", HK, INSTANCE, now());
    persist(&*h.store, vec![save_message(&tm)]).await;
    expect_conflict(&*h.store, vec![remove(process(HK, INSTANCE, revision, packet()))], 0).await;
    assert_eq!(load(&h, HK, INSTANCE).await, process(HK, INSTANCE, 2, Packet::default()));
    assert_eq!(queue(&*h.store, 10).await, vec![rev(&tm, 1)], "a failed remove must not cascade");
    h.close().await;
}

/// 76. Removing an existing instance with revision 0 conflicts; it and its timeouts stay.
pub async fn process_remove_with_revision_zero_conflicts<B: Backend>(b: &B) {
    stale_remove_conflicts(b, 0).await;
}

/// 77. Removing an existing instance with a too-low revision conflicts; it and its timeouts
///     stay.
pub async fn process_remove_with_lower_revision_conflicts<B: Backend>(b: &B) {
    stale_remove_conflicts(b, 1).await;
}

/// 78. Removing an existing instance with a too-high revision conflicts; it and its timeouts
///     stay.
pub async fn process_remove_with_higher_revision_conflicts<B: Backend>(b: &B) {
    stale_remove_conflicts(b, 100).await;
}

async fn absent_remove_conflicts<B: Backend>(b: &B, revision: u64) {
    let h = Harness::open(b).await;
    expect_conflict(&*h.store, vec![remove(process(HK, INSTANCE, revision, packet()))], 0).await;
    // The removed key itself (the Go suite inspects an unrelated key here).
    assert_eq!(load(&h, HK, INSTANCE).await, ProcessInstance::new(HK, INSTANCE));
    // Nothing was created: a save with revision 0 still succeeds.
    persist(&*h.store, vec![save(process(HK, INSTANCE, 0, Packet::default()))]).await;
    assert_eq!(load(&h, HK, INSTANCE).await, process(HK, INSTANCE, 1, Packet::default()));
    h.close().await;
}

/// 79. Removing an absent instance with revision 0 conflicts and creates nothing (checked on
///     the removed key, not the Go suite's unrelated one).
pub async fn process_remove_absent_with_revision_zero_conflicts<B: Backend>(b: &B) {
    absent_remove_conflicts(b, 0).await;
}

/// 80. Removing an absent instance with a non-zero revision conflicts and creates nothing.
pub async fn process_remove_absent_with_nonzero_revision_conflicts<B: Backend>(b: &B) {
    absent_remove_conflicts(b, 100).await;
}

/// 81. A create, an update and a removal of different instances from parallel tasks all
///     succeed (docs/close-and-cancellation.md#concurrency).
pub async fn process_concurrent_operations_all_succeed<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let (hk1, hk2, a, b_) = ("<handler-key-1>", "<handler-key-2>", "<instance-a>", "<instance-b>");
    persist(
        &*h.store,
        vec![save(process(hk1, a, 0, Packet::default())), save(process(hk1, b_, 0, Packet::default()))],
    )
    .await;
    let batches = vec![
        vec![save(process(hk2, a, 0, Packet::default()))],
        vec![save(process(hk1, b_, 1, packet()))],
        vec![remove(process(hk1, a, 1, Packet::default()))],
    ];
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
    assert_eq!(load(&h, hk1, a).await, ProcessInstance::new(hk1, a));
    assert_eq!(load(&h, hk1, b_).await, process(hk1, b_, 2, packet()));
    assert_eq!(load(&h, hk2, a).await, process(hk2, a, 1, Packet::default()));
    h.close().await;
}

/// 82. A never-saved instance loads as `{hk, id, 0, empty packet}`, echoing the keys.
pub async fn process_load_never_saved_returns_default<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let loaded = load(&h, "<handler>", "<never>").await;
    assert_eq!(loaded, ProcessInstance::new("<handler>", "<never>"));
    assert!(loaded.packet.is_empty());
    h.close().await;
}

/// 83. A saved instance loads back with revision 1 and its packet.
pub async fn process_load_returns_saved_instance<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let p = process(HK, INSTANCE, 0, Packet::new("application/json; type=\"ProcessStub\"", "{\"a\":1}"));
    persist(&*h.store, vec![save(p.clone())]).await;
    assert_eq!(load(&h, HK, INSTANCE).await, ProcessInstance { revision: 1, ..p });
    h.close().await;
}

/// 84. A load abandoned before it completes (Rust's cancellation is dropping the future)
///     either answered correctly or leaves the store working and the data intact.
pub async fn process_load_cancelled<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    saved(&h).await;
    if let Some(result) = poll_once(h.store.load_process_instance(HK, INSTANCE)).await {
        assert_eq!(result.unwrap(), process(HK, INSTANCE, 1, packet()));
    }
    assert_eq!(load(&h, HK, INSTANCE).await, process(HK, INSTANCE, 1, packet()));
    h.close().await;
}

/// docs/batches.md#process-instances: an empty packet (a stateless process root) round-trips as empty.
pub async fn process_empty_packet_round_trips<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    persist(&*h.store, vec![save(process(HK, INSTANCE, 0, Packet::default()))]).await;
    let loaded = load(&h, HK, INSTANCE).await;
    assert_eq!(loaded, process(HK, INSTANCE, 1, Packet::default()));
    assert!(loaded.packet.is_empty());
    persist(&*h.store, vec![save(loaded)]).await;
    assert_eq!(load(&h, HK, INSTANCE).await, process(HK, INSTANCE, 2, Packet::default()));
    h.close().await;
}

/// docs/batches.md#process-instances: a save replaces the whole packet, so saving an empty packet
/// over a non-empty one clears it, and a new packet replaces it again.
pub async fn process_save_empty_packet_clears_packet<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    saved(&h).await;
    persist(&*h.store, vec![save(process(HK, INSTANCE, 1, Packet::default()))]).await;
    assert_eq!(load(&h, HK, INSTANCE).await, process(HK, INSTANCE, 2, Packet::default()));
    let other = Packet::new("<other-type>", "x");
    persist(&*h.store, vec![save(process(HK, INSTANCE, 2, other.clone()))]).await;
    assert_eq!(load(&h, HK, INSTANCE).await, process(HK, INSTANCE, 3, other));
    h.close().await;
}

/// docs/batches.md#process-instances: a packet with only a media type, or only data, round-trips
/// exactly (no NULL-vs-empty confusion), and replacing one part clears the other.
pub async fn process_half_empty_packets_round_trip<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let type_only = Packet::new("<media-type>", Vec::new());
    let data_only = Packet::new("", vec![0u8, 1, 2, 0]);
    persist(
        &*h.store,
        vec![
            save(process(HK, "<type-only>", 0, type_only.clone())),
            save(process(HK, "<data-only>", 0, data_only.clone())),
        ],
    )
    .await;
    assert_eq!(load(&h, HK, "<type-only>").await, process(HK, "<type-only>", 1, type_only));
    assert_eq!(load(&h, HK, "<data-only>").await, process(HK, "<data-only>", 1, data_only.clone()));
    persist(&*h.store, vec![save(process(HK, "<type-only>", 1, data_only.clone()))]).await;
    assert_eq!(load(&h, HK, "<type-only>").await, process(HK, "<type-only>", 2, data_only));
    h.close().await;
}

/// docs/batches.md#process-instances: the store treats the packet as opaque bytes of any size;
/// 1 MiB round-trips.
pub async fn process_large_packet_round_trips<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let data: Vec<u8> = (0..1usize << 20).map(|i| (i.wrapping_mul(31) % 251) as u8).collect();
    let big = Packet::new("application/octet-stream; type=\"Big\"", data);
    persist(&*h.store, vec![save(process(HK, INSTANCE, 0, big.clone()))]).await;
    assert_eq!(load(&h, HK, INSTANCE).await, process(HK, INSTANCE, 1, big.clone()));
    persist(&*h.store, vec![save(process(HK, INSTANCE, 1, big.clone()))]).await;
    assert_eq!(load(&h, HK, INSTANCE).await, process(HK, INSTANCE, 2, big));
    h.close().await;
}

/// docs/batches.md#process-removal-and-timeouts: the cascade removes only timeouts owned by the
/// instance: non-timeout messages it produced, and timeouts of another handler with the same
/// instance ID or of another instance, stay.
pub async fn process_remove_keeps_other_messages<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    saved(&h).await;
    let t = now();
    // `command` is produced by (DEFAULT_HANDLER_KEY, "<instance>") but is not a timeout.
    let own_command = queue_message(command("<own-command>", "A1"), t);
    assert_eq!(own_command.envelope.source_handler_key(), HK);
    assert_eq!(own_command.envelope.source_instance_id, INSTANCE);
    let own_timeout = timeout_message("<own-timeout>", HK, INSTANCE, hours(t, 1));
    let other_handler = timeout_message("<other-handler>", "<other-handler-key>", INSTANCE, hours(t, 2));
    let other_instance = timeout_message("<other-instance>", HK, "<other-instance>", hours(t, 3));
    persist(
        &*h.store,
        [&own_command, &own_timeout, &other_handler, &other_instance].into_iter().map(save_message).collect(),
    )
    .await;
    persist(&*h.store, vec![remove(process(HK, INSTANCE, 1, Packet::default()))]).await;
    assert_eq!(
        queue(&*h.store, 10).await,
        vec![rev(&own_command, 1), rev(&other_handler, 1), rev(&other_instance, 1)]
    );
    h.close().await;
}

/// docs/batches.md#process-removal-and-timeouts: the cascade removes owned timeouts whatever
/// their revision, also after they were updated (and moved) on the queue.
pub async fn process_remove_cascades_updated_timeouts<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    saved(&h).await;
    let t = now();
    let a = timeout_message("<timeout-a>", HK, INSTANCE, t);
    let b2 = timeout_message("<timeout-b>", HK, INSTANCE, hours(t, 1));
    let keep = timeout_message("<keep>", HK, "<other-instance>", hours(t, 2));
    persist(&*h.store, vec![save_message(&a), save_message(&b2), save_message(&keep)]).await;
    persist(
        &*h.store,
        vec![save_message(&QueueMessage { failure_count: 3, next_attempt_at: hours(t, 5), ..rev(&a, 1) })],
    )
    .await;
    persist(
        &*h.store,
        vec![save_message(&QueueMessage { failure_count: 4, next_attempt_at: hours(t, 6), ..rev(&a, 2) })],
    )
    .await;
    persist(&*h.store, vec![remove(process(HK, INSTANCE, 1, packet()))]).await;
    assert_eq!(queue(&*h.store, 10).await, vec![rev(&keep, 1)]);
    h.close().await;
}

/// The engine-shaped batch of a process that ends while handling its own timeout T, with the
/// removal of P and the acknowledgement of T in the given order.
async fn remove_with_own_timeout<B: Backend>(b: &B, timeout_first: bool) {
    let h = Harness::open(b).await;
    let tm = instance_with_timeout(&h).await;
    let other = timeout_message("<other>", HK, "<other-instance>", hours(tm.next_attempt_at, 1));
    persist(&*h.store, vec![save_message(&other)]).await;
    let mut ops = vec![remove(process(HK, INSTANCE, 1, packet())), remove_message(&tm, 1)];
    if timeout_first {
        ops.reverse();
    }
    let result = persist(&*h.store, ops).await;
    assert!(result.event_offsets.is_empty());
    assert_eq!(load(&h, HK, INSTANCE).await, ProcessInstance::new(HK, INSTANCE));
    assert_eq!(queue(&*h.store, 10).await, vec![rev(&other, 1)]);
    h.close().await;
}

/// docs/batches.md#process-removal-and-timeouts:
/// `[RemoveProcessInstance(P), RemoveQueueMessage(T owned by P)]` succeeds and leaves neither P
/// nor T (the cascade and the explicit removal compose).
pub async fn process_remove_with_own_timeout_removal_succeeds<B: Backend>(b: &B) {
    remove_with_own_timeout(b, false).await;
}

/// docs/batches.md#process-removal-and-timeouts:
/// `[RemoveQueueMessage(T owned by P), RemoveProcessInstance(P)]` succeeds and leaves neither P
/// nor T.
pub async fn process_remove_after_own_timeout_removal_succeeds<B: Backend>(b: &B) {
    remove_with_own_timeout(b, true).await;
}

/// docs/batches.md#process-removal-and-timeouts:
/// `[RemoveProcessInstance(P) with a stale revision, RemoveQueueMessage(T)]` conflicts on op 0
/// and leaves both P and T.
pub async fn process_stale_remove_with_timeout_removal_conflicts<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let tm = instance_with_timeout(&h).await;
    let ops = vec![remove(process(HK, INSTANCE, 2, packet())), remove_message(&tm, 1)];
    expect_conflict(&*h.store, ops, 0).await;
    assert_eq!(load(&h, HK, INSTANCE).await, process(HK, INSTANCE, 1, packet()));
    assert_eq!(queue(&*h.store, 10).await, vec![rev(&tm, 1)]);
    h.close().await;
}

/// docs/batches.md#process-removal-and-timeouts: an update of a timeout that the same batch's
///     process removal cascades away is moot, in either order: the batch succeeds and the
///     timeout is gone (as it is after an explicit removal).
pub async fn process_update_of_cascaded_timeout_is_moot<B: Backend>(b: &B) {
    for reverse in [false, true] {
        let h = Harness::open(b).await;
        let tm = instance_with_timeout(&h).await;
        let update =
            save_message(&QueueMessage { failure_count: 1, next_attempt_at: hours(now(), 1), ..rev(&tm, 1) });
        let end = remove(process(HK, INSTANCE, 1, packet()));
        let ops = if reverse { vec![update, end] } else { vec![end, update] };
        persist(&*h.store, ops).await;
        assert_eq!(load(&h, HK, INSTANCE).await, ProcessInstance::new(HK, INSTANCE));
        assert_eq!(queue(&*h.store, 10).await, Vec::new(), "reverse order: {reverse}");
        h.close().await;
    }
}

/// docs/batches.md#process-removal-and-timeouts: preconditions are checked against the pre-batch
/// state, so the cascade does not excuse a stale explicit removal:
/// `[RemoveProcessInstance(P), RemoveQueueMessage(T, stale)]` conflicts on op 1 and leaves both.
pub async fn process_remove_with_stale_timeout_removal_conflicts<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let tm = instance_with_timeout(&h).await;
    let ops = vec![remove(process(HK, INSTANCE, 1, packet())), remove_message(&tm, 2)];
    expect_conflict(&*h.store, ops, 1).await;
    assert_eq!(load(&h, HK, INSTANCE).await, process(HK, INSTANCE, 1, packet()));
    assert_eq!(queue(&*h.store, 10).await, vec![rev(&tm, 1)]);
    h.close().await;
}

/// docs/batches.md#process-removal-and-timeouts: effects apply in batch order, so the cascade
/// removes a timeout of P enqueued earlier in the same batch, and not one enqueued after the
/// removal.
pub async fn process_remove_cascade_follows_batch_order<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let t = now();
    let before = timeout_message("<enqueued-before>", HK, INSTANCE, t);
    saved(&h).await;
    persist(&*h.store, vec![save_message(&before), remove(process(HK, INSTANCE, 1, packet()))]).await;
    assert!(queue(&*h.store, 10).await.is_empty());

    let after = timeout_message("<enqueued-after>", HK, INSTANCE, t);
    saved(&h).await;
    persist(&*h.store, vec![remove(process(HK, INSTANCE, 1, packet())), save_message(&after)]).await;
    assert_eq!(queue(&*h.store, 10).await, vec![rev(&after, 1)]);
    assert_eq!(load(&h, HK, INSTANCE).await, ProcessInstance::new(HK, INSTANCE));
    h.close().await;
}

/// docs/batches.md#evaluation-order: a batch whose later op conflicts applies nothing: no
/// instance is created and a removal earlier in the batch neither removes the instance nor
/// cascades to its timeouts.
pub async fn process_conflict_applies_nothing<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let tm = instance_with_timeout(&h).await;
    let ops = vec![
        save(process(HK, "<new>", 0, packet())),
        remove(process(HK, INSTANCE, 1, packet())),
        save(process(HK, "<absent>", 5, packet())),
        save(process(HK, "<also-absent>", 6, packet())),
    ];
    expect_conflict(&*h.store, ops, 2).await;
    assert_eq!(load(&h, HK, "<new>").await, ProcessInstance::new(HK, "<new>"));
    assert_eq!(load(&h, HK, INSTANCE).await, process(HK, INSTANCE, 1, packet()));
    assert_eq!(queue(&*h.store, 10).await, vec![rev(&tm, 1)]);
    h.close().await;
}

/// docs/batches.md#entity-keys: the same instance ID under different handler keys names
/// independent instances, whose saves, removals and timeouts do not affect each other.
pub async fn process_same_instance_under_other_handler_is_independent<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let (hk1, hk2) = ("<handler-key-1>", "<handler-key-2>");
    let (p1, p2) = (Packet::new("<type-1>", "1"), Packet::new("<type-2>", "2"));
    let t = now();
    let t1 = timeout_message("<timeout-1>", hk1, INSTANCE, t);
    let t2 = timeout_message("<timeout-2>", hk2, INSTANCE, hours(t, 1));
    persist(
        &*h.store,
        vec![
            save(process(hk1, INSTANCE, 0, p1.clone())),
            save(process(hk2, INSTANCE, 0, p2.clone())),
            save_message(&t1),
            save_message(&t2),
        ],
    )
    .await;
    persist(&*h.store, vec![save(process(hk1, INSTANCE, 1, Packet::default()))]).await;
    assert_eq!(load(&h, hk1, INSTANCE).await, process(hk1, INSTANCE, 2, Packet::default()));
    assert_eq!(load(&h, hk2, INSTANCE).await, process(hk2, INSTANCE, 1, p2.clone()));

    expect_conflict(&*h.store, vec![save(process(hk2, INSTANCE, 2, p1))], 0).await;
    persist(&*h.store, vec![remove(process(hk1, INSTANCE, 2, Packet::default()))]).await;
    assert_eq!(load(&h, hk1, INSTANCE).await, ProcessInstance::new(hk1, INSTANCE));
    assert_eq!(load(&h, hk2, INSTANCE).await, process(hk2, INSTANCE, 1, p2));
    assert_eq!(queue(&*h.store, 10).await, vec![rev(&t2, 1)]);
    h.close().await;
}

/// docs/batches.md#process-instances: a removed instance is absent again: it is re-created with
/// revision 0 (loading as revision 1), and its old revision conflicts.
pub async fn process_recreate_after_remove<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    saved(&h).await;
    persist(&*h.store, vec![save(process(HK, INSTANCE, 1, packet()))]).await;
    persist(&*h.store, vec![remove(process(HK, INSTANCE, 2, packet()))]).await;
    expect_conflict(&*h.store, vec![save(process(HK, INSTANCE, 2, packet()))], 0).await;
    expect_conflict(&*h.store, vec![remove(process(HK, INSTANCE, 2, packet()))], 0).await;
    let fresh = Packet::new("<fresh>", "f");
    persist(&*h.store, vec![save(process(HK, INSTANCE, 0, fresh.clone()))]).await;
    assert_eq!(load(&h, HK, INSTANCE).await, process(HK, INSTANCE, 1, fresh));
    h.close().await;
}

/// docs/batches.md#identifiers: empty handler keys and instance IDs are legal, distinct keys, and
/// the cascade of an instance with an empty ID removes its timeouts
/// (docs/batches.md#process-removal-and-timeouts).
pub async fn process_empty_keys_round_trip<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let keys = [("", ""), ("", INSTANCE), (HK, "")];
    let ops = keys
        .iter()
        .zip(0u8..)
        .map(|(&(hk, id), i)| save(process(hk, id, 0, Packet::new("t", vec![i]))))
        .collect();
    persist(&*h.store, ops).await;
    for (&(hk, id), i) in keys.iter().zip(0u8..) {
        assert_eq!(load(&h, hk, id).await, process(hk, id, 1, Packet::new("t", vec![i])));
    }
    assert_eq!(load(&h, HK, INSTANCE).await, ProcessInstance::new(HK, INSTANCE));

    // Timeouts owned by (HK, "") are cascaded with it; one owned by (HK, INSTANCE) is not.
    let t = now();
    let owned = timeout_message("<owned-by-empty-id>", HK, "", t);
    let other = timeout_message("<owned-by-instance>", HK, INSTANCE, hours(t, 1));
    persist(&*h.store, vec![save_message(&owned), save_message(&other)]).await;
    persist(
        &*h.store,
        vec![remove(process("", "", 1, Packet::default())), remove(process(HK, "", 1, Packet::default()))],
    )
    .await;
    assert_eq!(load(&h, "", "").await, ProcessInstance::new("", ""));
    assert_eq!(load(&h, HK, "").await, ProcessInstance::new(HK, ""));
    assert_eq!(load(&h, "", INSTANCE).await, process("", INSTANCE, 1, Packet::new("t", vec![1])));
    assert_eq!(queue(&*h.store, 10).await, vec![rev(&other, 1)]);
    h.close().await;
}

fn assert_duplicate_handler(result: Result<vellum_core::PersistResult, Error>, hk: &str, id: &str) {
    match result {
        Err(Error::InvalidBatch(e)) => assert_eq!(
            e,
            InvalidBatch::DuplicateEntity { entity: format!("handler {hk} {id}"), first: 0, second: 1 }
        ),
        other => panic!("expected an invalid batch, got {other:?}"),
    }
}

/// docs/batches.md#entity-keys: aggregates and processes share the handler namespace, so
/// aggregate meta-data and a process instance with the same `(hk, id)` in one batch are an
/// invalid batch; nothing is stored.
pub async fn process_and_aggregate_with_same_key_is_invalid<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let ops = vec![
        Operation::SaveAggregateMetaData(aggregate(HK, INSTANCE, 0)),
        save(process(HK, INSTANCE, 0, packet())),
    ];
    assert_duplicate_handler(h.store.persist(ops.into()).await, HK, INSTANCE);
    assert_eq!(load(&h, HK, INSTANCE).await, ProcessInstance::new(HK, INSTANCE));
    assert_eq!(
        h.store.load_aggregate_meta_data(HK, INSTANCE).await.unwrap(),
        AggregateMetaData::new(HK, INSTANCE)
    );
    h.close().await;
}

/// docs/batches.md#entity-keys: a save and a removal of one instance in one batch are an invalid
/// batch; the instance and its timeouts are untouched.
pub async fn process_save_and_remove_in_one_batch_is_invalid<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let tm = instance_with_timeout(&h).await;
    let ops =
        vec![save(process(HK, INSTANCE, 1, Packet::default())), remove(process(HK, INSTANCE, 1, packet()))];
    assert_duplicate_handler(h.store.persist(ops.into()).await, HK, INSTANCE);
    assert_eq!(load(&h, HK, INSTANCE).await, process(HK, INSTANCE, 1, packet()));
    assert_eq!(queue(&*h.store, 10).await, vec![rev(&tm, 1)]);
    h.close().await;
}
