//! Batch-level rules: entity uniqueness, atomicity, conflict reporting and pre-batch evaluation
//! (docs/batches.md#evaluation-order, docs/batches.md#entity-keys).

use std::collections::HashMap;

use vellum_core::{
    AggregateMetaData, AggregateRepository, Batch, DataStore, Envelope, Error, Event, EventRepository,
    InvalidBatch, OffsetRepository, Operation, Packet, Persister, ProcessInstance, ProcessRepository,
    Provider, QueueMessage,
};

use crate::fixtures::{
    DEFAULT_HANDLER_KEY, aggregate, by_type, command, event, expect_conflict, hours, now, persist, process,
    queue, queue_message, save_offset, timeout,
};
use crate::harness::{Backend, Harness};

#[doc(hidden)]
#[macro_export]
macro_rules! __batch_tests {
    ($make:expr $(, $(#[$attr:meta])*)?) => {
        $crate::__tests!($make, [$($(#[$attr])*)?];
            batch::batch_queue_save_and_remove_of_one_message_is_invalid,
            batch::batch_process_save_and_remove_of_one_instance_is_invalid,
            batch::batch_two_offsets_of_one_source_are_invalid,
            batch::batch_two_events_with_one_id_are_invalid,
            batch::batch_aggregate_and_process_share_handler_namespace,
            batch::batch_distinct_entities_sharing_ids_are_valid,
            batch::batch_empty_is_valid_and_changes_nothing,
            batch::batch_conflict_at_any_position_applies_nothing,
            batch::batch_first_of_several_conflicts_is_reported,
            batch::batch_conflict_consumes_no_event_offset,
            batch::batch_duplicate_event_rolls_back_whole_batch,
            batch::batch_conflict_in_last_op_of_every_kind_leaves_nothing,
            batch::batch_preconditions_use_pre_batch_state,
            batch::batch_effects_apply_in_batch_order,
            batch::batch_engine_shaped_batch_persists,
            batch::batch_large_batch_commits_atomically,
            batch::batch_event_offsets_follow_batch_order,
        );
    };
}

/// Every value the tests of this crate can observe for a given set of keys, to compare a store
/// before and after a batch that must change nothing (or after a reopen that must lose nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Snapshot {
    aggregates: Vec<AggregateMetaData>,
    processes: Vec<ProcessInstance>,
    events: Vec<Event>,
    next_event_offset: u64,
    queue: Vec<QueueMessage>,
    offsets: Vec<(String, u64)>,
}

/// The keys a [`Snapshot`] reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Probe<'a> {
    /// `(handler_key, instance_id)` pairs, loaded as aggregates and as processes.
    pub instances: &'a [(&'a str, &'a str)],
    /// Portable names of every event that may be in the log.
    pub types: &'a [&'a str],
    /// Source application keys whose offsets are read.
    pub sources: &'a [&'a str],
}

impl Probe<'_> {
    /// Reads everything this probe names from `store`.
    pub(crate) async fn snapshot<S: DataStore>(&self, store: &S) -> Snapshot {
        let mut aggregates = Vec::new();
        let mut processes = Vec::new();
        for &(hk, id) in self.instances {
            aggregates.push(store.load_aggregate_meta_data(hk, id).await.unwrap());
            processes.push(store.load_process_instance(hk, id).await.unwrap());
        }
        let mut offsets = Vec::new();
        for &source in self.sources {
            offsets.push((source.to_owned(), store.load_offset(source).await.unwrap()));
        }
        Snapshot {
            aggregates,
            processes,
            events: by_type(store, self.types, 0).await,
            next_event_offset: store.next_event_offset().await.unwrap(),
            queue: queue(store, 100_000).await,
            offsets,
        }
    }
}

const EVENT_A: &str = "EventStub[TypeA]";
const EVENT_B: &str = "EventStub[TypeB]";
const PROCESS_KEY: &str = "<process-key>";
const AGGREGATE_KEY: &str = "<aggregate-key>";
const SOURCE: &str = "<source-app-key>";

/// The probe for the keys the fixtures of this file use.
const PROBE: Probe<'static> = Probe {
    instances: &[
        (AGGREGATE_KEY, "<instance>"),
        (AGGREGATE_KEY, "<instance-new>"),
        (PROCESS_KEY, "<instance>"),
        (PROCESS_KEY, "<instance-a>"),
        (PROCESS_KEY, "<instance-b>"),
        (PROCESS_KEY, "<instance-new>"),
        (DEFAULT_HANDLER_KEY, "<instance>"),
    ],
    types: &[EVENT_A, EVENT_B, "EventStub[TypeC]", "CommandStub[TypeA]", "TimeoutStub[TypeT]"],
    sources: &[SOURCE, "<source-2>", "<source-new>"],
};

fn packet(tag: &str) -> Packet {
    Packet::new("<media-type>", format!("<data-{tag}>"))
}

/// Some state for batches to conflict with: an event at offset 0, aggregate and processes at
/// revision 1, a command and a timeout owned by `<instance-b>` on the queue, offset 5.
async fn seed<S: DataStore>(store: &S) {
    let at = now();
    persist(
        store,
        vec![
            Operation::SaveEvent(event("<seed-event>", "A")),
            Operation::SaveAggregateMetaData(aggregate(AGGREGATE_KEY, "<instance>", 0)),
            Operation::SaveProcessInstance(process(PROCESS_KEY, "<instance>", 0, packet("seed"))),
            Operation::SaveProcessInstance(process(PROCESS_KEY, "<instance-b>", 0, packet("b"))),
            Operation::SaveQueueMessage(queue_message(command("<seed-command>", "A"), at)),
            Operation::SaveQueueMessage(queue_message(
                timeout("<seed-timeout>", PROCESS_KEY, "<instance-b>", hours(at, 1)),
                hours(at, 1),
            )),
            save_offset(SOURCE, 0, 5),
        ],
    )
    .await;
}

async fn expect_invalid<S: DataStore>(
    store: &S,
    ops: Vec<Operation>,
    entity: &str,
    first: usize,
    second: usize,
) {
    match store.persist(Batch::from(ops)).await {
        Err(Error::InvalidBatch(InvalidBatch::DuplicateEntity { entity: e, first: f, second: s })) => {
            assert_eq!((e.as_str(), f, s), (entity, first, second), "wrong duplicate reported");
        }
        other => panic!("expected InvalidBatch for ({entity}), got {other:?}"),
    }
}

/// docs/batches.md#entity-keys: `SaveQueueMessage(X)` + `RemoveQueueMessage(X)` is an
/// `InvalidBatch` naming `queue X`, and nothing else of the batch is stored.
pub async fn batch_queue_save_and_remove_of_one_message_is_invalid<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    seed(&*h.store).await;
    let before = PROBE.snapshot(&*h.store).await;
    let at = now();
    let ops = vec![
        Operation::SaveEvent(event("<new-event>", "B")),
        save_offset(SOURCE, 5, 6),
        Operation::SaveQueueMessage(queue_message(command("<message-x>", "A"), at)),
        Operation::SaveAggregateMetaData(aggregate(AGGREGATE_KEY, "<instance-new>", 0)),
        Operation::RemoveQueueMessage(queue_message(command("<message-x>", "A"), at)),
    ];
    expect_invalid(&*h.store, ops, "queue <message-x>", 2, 4).await;
    assert_eq!(PROBE.snapshot(&*h.store).await, before);
    h.close().await;
}

/// docs/batches.md#entity-keys: `SaveProcessInstance` + `RemoveProcessInstance` of one instance
/// is invalid (same handler namespace since Go commit 6230ec9); nothing of the batch is stored,
/// the timeout the removal would cascade to survives.
pub async fn batch_process_save_and_remove_of_one_instance_is_invalid<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    seed(&*h.store).await;
    let before = PROBE.snapshot(&*h.store).await;
    let ops = vec![
        Operation::RemoveProcessInstance(process(PROCESS_KEY, "<instance-b>", 1, Packet::default())),
        Operation::SaveEvent(event("<new-event>", "B")),
        Operation::SaveProcessInstance(process(PROCESS_KEY, "<instance-b>", 1, packet("new"))),
    ];
    expect_invalid(&*h.store, ops, &format!("handler {PROCESS_KEY} <instance-b>"), 0, 2).await;
    assert_eq!(PROBE.snapshot(&*h.store).await, before);
    h.close().await;
}

/// docs/batches.md#entity-keys: two `SaveOffset`s of one source application are invalid, even
/// when they would chain (5→6, 6→7); nothing is stored.
pub async fn batch_two_offsets_of_one_source_are_invalid<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    seed(&*h.store).await;
    let before = PROBE.snapshot(&*h.store).await;
    let ops = vec![save_offset("<source-2>", 0, 1), save_offset(SOURCE, 5, 6), save_offset(SOURCE, 6, 7)];
    expect_invalid(&*h.store, ops, &format!("offset {SOURCE}"), 1, 2).await;
    assert_eq!(PROBE.snapshot(&*h.store).await, before);
    assert_eq!(before.offsets[0], (SOURCE.to_owned(), 5));
    h.close().await;
}

/// docs/batches.md#entity-keys: two `SaveEvent`s with one message ID are invalid (not a
/// duplicate-event error, not a partial append); no offset is consumed.
pub async fn batch_two_events_with_one_id_are_invalid<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    seed(&*h.store).await;
    let before = PROBE.snapshot(&*h.store).await;
    let ops = vec![
        Operation::SaveEvent(event("<other-event>", "A")),
        Operation::SaveEvent(event("<twice>", "A")),
        Operation::SaveEvent(event("<twice>", "B")),
    ];
    expect_invalid(&*h.store, ops, "event <twice>", 1, 2).await;
    assert_eq!(PROBE.snapshot(&*h.store).await, before);
    assert_eq!(h.store.next_event_offset().await.unwrap(), 1);
    h.close().await;
}

/// docs/batches.md#entity-keys: aggregates and processes share the handler namespace, so saving
/// aggregate meta-data and a process instance with one `(handler_key, instance_id)` in one batch
/// is invalid, as are two saves of one aggregate.
pub async fn batch_aggregate_and_process_share_handler_namespace<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let before = PROBE.snapshot(&*h.store).await;
    let ops = vec![
        Operation::SaveAggregateMetaData(aggregate(DEFAULT_HANDLER_KEY, "<instance>", 0)),
        Operation::SaveProcessInstance(process(DEFAULT_HANDLER_KEY, "<instance>", 0, packet("p"))),
    ];
    expect_invalid(&*h.store, ops, &format!("handler {DEFAULT_HANDLER_KEY} <instance>"), 0, 1).await;
    let ops = vec![
        Operation::SaveAggregateMetaData(aggregate(AGGREGATE_KEY, "<instance>", 0)),
        Operation::SaveAggregateMetaData(aggregate(AGGREGATE_KEY, "<instance>", 1)),
    ];
    expect_invalid(&*h.store, ops, &format!("handler {AGGREGATE_KEY} <instance>"), 0, 1).await;
    assert_eq!(PROBE.snapshot(&*h.store).await, before);
    h.close().await;
}

/// docs/batches.md#entity-keys: distinct entities that share IDs are valid in one batch:
/// `SaveEvent(X)` with `SaveQueueMessage(X)`, one instance ID under two handler keys, an offset
/// keyed like a message.
pub async fn batch_distinct_entities_sharing_ids_are_valid<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let at = now();
    let result = persist(
        &*h.store,
        vec![
            Operation::SaveEvent(event("<x>", "A")),
            Operation::SaveQueueMessage(queue_message(event("<x>", "A"), at)),
            Operation::SaveAggregateMetaData(aggregate(AGGREGATE_KEY, "<instance>", 0)),
            Operation::SaveProcessInstance(process(PROCESS_KEY, "<instance>", 0, packet("p"))),
            save_offset("<x>", 0, 1),
        ],
    )
    .await;
    assert_eq!(result.event_offsets, HashMap::from([("<x>".to_owned(), 0)]));
    assert_eq!(
        by_type(&*h.store, &[EVENT_A], 0).await,
        vec![Event { offset: 0, envelope: event("<x>", "A") }]
    );
    let q = queue(&*h.store, 10).await;
    assert_eq!(q, vec![QueueMessage { revision: 1, ..queue_message(event("<x>", "A"), at) }]);
    assert_eq!(h.store.load_aggregate_meta_data(AGGREGATE_KEY, "<instance>").await.unwrap().revision, 1);
    assert_eq!(h.store.load_process_instance(PROCESS_KEY, "<instance>").await.unwrap().revision, 1);
    assert_eq!(h.store.load_offset("<x>").await.unwrap(), 1);
    h.close().await;
}

/// docs/batches.md#validation: an empty batch is valid, returns an empty result and changes nothing.
pub async fn batch_empty_is_valid_and_changes_nothing<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let empty = h.store.persist(Batch::new()).await.unwrap();
    assert!(empty.event_offsets.is_empty());
    seed(&*h.store).await;
    let before = PROBE.snapshot(&*h.store).await;
    let empty = h.store.persist(Batch::new()).await.unwrap();
    assert!(empty.event_offsets.is_empty());
    assert_eq!(PROBE.snapshot(&*h.store).await, before);
    let result = persist(&*h.store, vec![Operation::SaveEvent(event("<after-empty>", "B"))]).await;
    assert_eq!(result.event_offsets, HashMap::from([("<after-empty>".to_owned(), 1)]));
    h.close().await;
}

/// One valid op of every conflict-capable kind against the [`seed`] state, and a conflicting
/// variant of each, for position-independent atomicity tests. The valid batch also saves an
/// event (which cannot conflict) in the middle.
fn every_kind(conflicting: Option<usize>) -> Vec<Operation> {
    let at = now();
    let mut ops = vec![
        Operation::SaveAggregateMetaData(aggregate(AGGREGATE_KEY, "<instance>", 1)),
        Operation::SaveProcessInstance(process(PROCESS_KEY, "<instance>", 1, packet("updated"))),
        Operation::RemoveProcessInstance(process(PROCESS_KEY, "<instance-b>", 1, Packet::default())),
        Operation::SaveEvent(event("<new-event>", "B")),
        Operation::SaveQueueMessage(queue_message(command("<new-command>", "A"), hours(at, 2))),
        Operation::RemoveQueueMessage(QueueMessage {
            revision: 1,
            ..queue_message(command("<seed-command>", "A"), at)
        }),
        save_offset(SOURCE, 5, 6),
        Operation::SaveAggregateMetaData(aggregate(AGGREGATE_KEY, "<instance-new>", 0)),
        Operation::SaveProcessInstance(process(PROCESS_KEY, "<instance-new>", 0, packet("new"))),
        save_offset("<source-new>", 0, 1),
    ];
    if let Some(k) = conflicting {
        ops[k] = match k {
            0 => Operation::SaveAggregateMetaData(aggregate(AGGREGATE_KEY, "<instance>", 0)),
            1 => Operation::SaveProcessInstance(process(PROCESS_KEY, "<instance>", 2, packet("stale"))),
            2 => Operation::RemoveProcessInstance(process(PROCESS_KEY, "<instance-b>", 0, Packet::default())),
            4 => Operation::SaveQueueMessage(QueueMessage {
                revision: 1,
                ..queue_message(command("<new-command>", "A"), hours(at, 2))
            }),
            5 => Operation::RemoveQueueMessage(queue_message(command("<seed-command>", "A"), at)),
            6 => save_offset(SOURCE, 0, 6),
            7 => Operation::SaveAggregateMetaData(aggregate(AGGREGATE_KEY, "<instance-new>", 3)),
            8 => Operation::SaveProcessInstance(process(PROCESS_KEY, "<instance-new>", 1, packet("new"))),
            9 => save_offset("<source-new>", 1, 2),
            _ => unreachable!("op {k} cannot conflict"),
        };
    }
    ops
}

/// Indexes of [`every_kind`] ops that have a conflicting variant (a `SaveEvent` cannot conflict).
const CONFLICTABLE: [usize; 9] = [0, 1, 2, 4, 5, 6, 7, 8, 9];

/// docs/batches.md#evaluation-order: whichever op k of a batch conflicts, the error names k and
/// the op exactly as submitted, and nothing from ops before or after k is visible; the same
/// batch without the conflict then commits every effect.
pub async fn batch_conflict_at_any_position_applies_nothing<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    seed(&*h.store).await;
    let before = PROBE.snapshot(&*h.store).await;
    for k in CONFLICTABLE {
        expect_conflict(&*h.store, every_kind(Some(k)), k).await;
        assert_eq!(PROBE.snapshot(&*h.store).await, before, "conflict at op {k} left effects");
    }

    let result = persist(&*h.store, every_kind(None)).await;
    assert_eq!(result.event_offsets, HashMap::from([("<new-event>".to_owned(), 1)]));
    let s = &*h.store;
    assert_eq!(s.load_aggregate_meta_data(AGGREGATE_KEY, "<instance>").await.unwrap().revision, 2);
    assert_eq!(s.load_aggregate_meta_data(AGGREGATE_KEY, "<instance-new>").await.unwrap().revision, 1);
    assert_eq!(
        s.load_process_instance(PROCESS_KEY, "<instance>").await.unwrap(),
        process(PROCESS_KEY, "<instance>", 2, packet("updated"))
    );
    assert_eq!(
        s.load_process_instance(PROCESS_KEY, "<instance-b>").await.unwrap(),
        ProcessInstance::new(PROCESS_KEY, "<instance-b>")
    );
    assert_eq!(s.load_process_instance(PROCESS_KEY, "<instance-new>").await.unwrap().revision, 1);
    let ids: Vec<String> = queue(s, 10).await.iter().map(|m| m.id().to_owned()).collect();
    assert_eq!(ids, ["<new-command>"], "seed command removed, seed timeout cascaded");
    assert_eq!(s.load_offset(SOURCE).await.unwrap(), 6);
    assert_eq!(s.load_offset("<source-new>").await.unwrap(), 1);
    assert_eq!(s.next_event_offset().await.unwrap(), 2);
    h.close().await;
}

/// docs/batches.md#evaluation-order: when several ops conflict, the first in batch order is
/// reported, with its index and the op exactly as submitted.
pub async fn batch_first_of_several_conflicts_is_reported<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    seed(&*h.store).await;
    let before = PROBE.snapshot(&*h.store).await;
    let mut ops = every_kind(None);
    let second = every_kind(Some(8));
    ops[8] = second[8].clone();
    let first = every_kind(Some(5));
    ops[5] = first[5].clone();
    let last = every_kind(Some(9));
    ops[9] = last[9].clone();
    expect_conflict(&*h.store, ops, 5).await;
    assert_eq!(PROBE.snapshot(&*h.store).await, before);

    // Reversed: the conflicts now come in a different order, and the first is still reported.
    let mut ops = every_kind(None);
    ops[9] = last[9].clone();
    ops[1] = every_kind(Some(1))[1].clone();
    ops.reverse();
    expect_conflict(&*h.store, ops, 0).await;
    assert_eq!(PROBE.snapshot(&*h.store).await, before);
    h.close().await;
}

/// docs/events.md#offsets: a batch with `SaveEvent`s that fails on a later conflict consumes no
/// offset; the next event gets the next dense offset.
pub async fn batch_conflict_consumes_no_event_offset<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    persist(&*h.store, vec![Operation::SaveEvent(event("<e0>", "A"))]).await;
    let ops = vec![
        Operation::SaveEvent(event("<e1>", "A")),
        Operation::SaveEvent(event("<e2>", "B")),
        save_offset(SOURCE, 7, 8),
    ];
    expect_conflict(&*h.store, ops, 2).await;
    assert_eq!(h.store.next_event_offset().await.unwrap(), 1);
    let result = persist(&*h.store, vec![Operation::SaveEvent(event("<e3>", "B"))]).await;
    assert_eq!(result.event_offsets, HashMap::from([("<e3>".to_owned(), 1)]));
    assert_eq!(
        by_type(&*h.store, &[EVENT_A, EVENT_B], 0).await,
        vec![
            Event { offset: 0, envelope: event("<e0>", "A") },
            Event { offset: 1, envelope: event("<e3>", "B") },
        ]
    );
    // The rejected IDs were never recorded: they can be saved now.
    let result = persist(&*h.store, vec![Operation::SaveEvent(event("<e1>", "A"))]).await;
    assert_eq!(result.event_offsets, HashMap::from([("<e1>".to_owned(), 2)]));
    assert_eq!(h.store.next_event_offset().await.unwrap(), 3);
    h.close().await;
}

/// docs/batches.md#events-and-duplicate-message-ids: a `SaveEvent` whose message ID is already
/// in the log fails the whole batch with `DuplicateEvent` (not a conflict): no op before or
/// after it is applied, no offset consumed.
pub async fn batch_duplicate_event_rolls_back_whole_batch<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    seed(&*h.store).await;
    let before = PROBE.snapshot(&*h.store).await;
    let ops = vec![
        Operation::SaveEvent(event("<fresh>", "A")),
        save_offset(SOURCE, 5, 6),
        Operation::SaveEvent(event("<seed-event>", "B")),
        Operation::SaveAggregateMetaData(aggregate(AGGREGATE_KEY, "<instance-new>", 0)),
    ];
    match h.store.persist(Batch::from(ops)).await {
        Err(Error::DuplicateEvent { message_id }) => assert_eq!(message_id, "<seed-event>"),
        other => panic!("expected DuplicateEvent, got {other:?}"),
    }
    assert_eq!(PROBE.snapshot(&*h.store).await, before);
    let result = persist(&*h.store, vec![Operation::SaveEvent(event("<fresh>", "A"))]).await;
    assert_eq!(result.event_offsets, HashMap::from([("<fresh>".to_owned(), 1)]));
    h.close().await;
}

/// docs/batches.md#atomicity: a batch with every op kind whose LAST op conflicts leaves nothing,
/// including the timeout cascade of its `RemoveProcessInstance` and the offsets of its events.
pub async fn batch_conflict_in_last_op_of_every_kind_leaves_nothing<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    seed(&*h.store).await;
    let before = PROBE.snapshot(&*h.store).await;
    assert_eq!(before.queue.len(), 2);
    for k in CONFLICTABLE {
        // The op of kind k is moved to the end and made to conflict.
        let mut ops = every_kind(None);
        let conflicting = every_kind(Some(k)).swap_remove(k);
        ops.remove(k);
        ops.push(conflicting);
        let last = ops.len() - 1;
        expect_conflict(&*h.store, ops, last).await;
        assert_eq!(PROBE.snapshot(&*h.store).await, before, "conflict in last op (kind {k}) left effects");
    }
    h.close().await;
}

/// docs/batches.md#evaluation-order: every precondition is checked against the pre-batch state.
/// The engine's batch `[RemoveProcessInstance(P), RemoveQueueMessage(T owned by P)]` succeeds in
/// either order and leaves neither (docs/batches.md#process-removal-and-timeouts); a
/// `RemoveQueueMessage` with a revision wrong in the pre-batch state conflicts even though the
/// cascade would delete the message anyway.
pub async fn batch_preconditions_use_pre_batch_state<B: Backend>(b: &B) {
    let at = now();
    let provider = b.provider().await;
    for (reverse, app_key) in [(false, "<app-forward>"), (true, "<app-reverse>")] {
        let store = provider.open(app_key).await.unwrap();
        seed(&store).await;
        let remove_timeout = |revision| {
            let t = timeout("<seed-timeout>", PROCESS_KEY, "<instance-b>", hours(at, 1));
            Operation::RemoveQueueMessage(QueueMessage { revision, ..queue_message(t, hours(at, 1)) })
        };
        let remove_process =
            Operation::RemoveProcessInstance(process(PROCESS_KEY, "<instance-b>", 1, Packet::default()));

        let before = PROBE.snapshot(&store).await;
        let mut ops = vec![remove_process.clone(), remove_timeout(2)];
        if reverse {
            ops.reverse();
        }
        expect_conflict(&store, ops, usize::from(!reverse)).await;
        assert_eq!(PROBE.snapshot(&store).await, before);

        let mut ops = vec![remove_process, remove_timeout(1)];
        if reverse {
            ops.reverse();
        }
        let result = persist(&store, ops).await;
        assert!(result.event_offsets.is_empty());
        assert_eq!(
            store.load_process_instance(PROCESS_KEY, "<instance-b>").await.unwrap(),
            ProcessInstance::new(PROCESS_KEY, "<instance-b>")
        );
        let ids: Vec<String> = queue(&store, 10).await.iter().map(|m| m.id().to_owned()).collect();
        assert_eq!(ids, ["<seed-command>"], "reverse = {reverse}");
        store.close().await.unwrap();
    }
}

/// docs/batches.md#process-removal-and-timeouts: effects are applied in batch order. Inserting a
/// new timeout owned by P and removing P leaves the timeout when the insert comes after the
/// removal, and removes it (cascade) when the insert comes first.
pub async fn batch_effects_apply_in_batch_order<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let at = now();
    let new_timeout = |id: &str, instance: &str| {
        Operation::SaveQueueMessage(queue_message(
            timeout(id, PROCESS_KEY, instance, hours(at, 3)),
            hours(at, 3),
        ))
    };
    persist(
        &*h.store,
        vec![
            Operation::SaveProcessInstance(process(PROCESS_KEY, "<instance-a>", 0, packet("a"))),
            Operation::SaveProcessInstance(process(PROCESS_KEY, "<instance-b>", 0, packet("b"))),
        ],
    )
    .await;
    persist(
        &*h.store,
        vec![
            Operation::RemoveProcessInstance(process(PROCESS_KEY, "<instance-a>", 1, Packet::default())),
            new_timeout("<timeout-after-remove>", "<instance-a>"),
        ],
    )
    .await;
    persist(
        &*h.store,
        vec![
            new_timeout("<timeout-before-remove>", "<instance-b>"),
            Operation::RemoveProcessInstance(process(PROCESS_KEY, "<instance-b>", 1, Packet::default())),
        ],
    )
    .await;
    let q = queue(&*h.store, 10).await;
    let ids: Vec<&str> = q.iter().map(QueueMessage::id).collect();
    assert_eq!(ids, ["<timeout-after-remove>"]);
    assert_eq!(q[0].revision, 1);
    for id in ["<instance-a>", "<instance-b>"] {
        assert_eq!(h.store.load_process_instance(PROCESS_KEY, id).await.unwrap().revision, 0);
    }
    h.close().await;
}

/// Item 86: the engine-shaped batch (aggregate meta-data, `SaveEvent(id-1)`, process save,
/// `SaveQueueMessage(id-1)`, `RemoveQueueMessage(id-2)`, another process save, a process removal
/// and `SaveOffset`) is valid and every effect is visible afterwards.
pub async fn batch_engine_shaped_batch_persists<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let at = now();
    let id2 = queue_message(command("<id-2>", "A"), hours(at, -1));
    persist(
        &*h.store,
        vec![
            Operation::SaveQueueMessage(id2.clone()),
            Operation::SaveProcessInstance(process(PROCESS_KEY, "<instance-b>", 0, packet("b"))),
        ],
    )
    .await;
    let md =
        AggregateMetaData { last_event_id: "<id-1>".into(), ..aggregate(AGGREGATE_KEY, "<instance>", 0) };
    let ev = event("<id-1>", "A");
    let result = persist(
        &*h.store,
        vec![
            Operation::SaveAggregateMetaData(md.clone()),
            Operation::SaveEvent(ev.clone()),
            Operation::SaveProcessInstance(process(PROCESS_KEY, "<instance>", 0, packet("p"))),
            Operation::SaveQueueMessage(queue_message(ev.clone(), at)),
            Operation::RemoveQueueMessage(QueueMessage { revision: 1, ..id2 }),
            Operation::SaveProcessInstance(process(PROCESS_KEY, "<instance-a>", 0, Packet::default())),
            Operation::RemoveProcessInstance(process(PROCESS_KEY, "<instance-b>", 1, Packet::default())),
            save_offset(SOURCE, 0, 1),
        ],
    )
    .await;
    assert_eq!(result.event_offsets, HashMap::from([("<id-1>".to_owned(), 0)]));
    let s = &*h.store;
    assert_eq!(
        s.load_aggregate_meta_data(AGGREGATE_KEY, "<instance>").await.unwrap(),
        AggregateMetaData { revision: 1, ..md }
    );
    assert_eq!(by_type(s, &[EVENT_A], 0).await, vec![Event { offset: 0, envelope: ev.clone() }]);
    assert_eq!(
        s.load_process_instance(PROCESS_KEY, "<instance>").await.unwrap(),
        process(PROCESS_KEY, "<instance>", 1, packet("p"))
    );
    assert_eq!(queue(s, 10).await, vec![QueueMessage { revision: 1, ..queue_message(ev, at) }]);
    assert_eq!(
        s.load_process_instance(PROCESS_KEY, "<instance-a>").await.unwrap(),
        process(PROCESS_KEY, "<instance-a>", 1, Packet::default())
    );
    assert_eq!(
        s.load_process_instance(PROCESS_KEY, "<instance-b>").await.unwrap(),
        ProcessInstance::new(PROCESS_KEY, "<instance-b>")
    );
    assert_eq!(s.load_offset(SOURCE).await.unwrap(), 1);
    h.close().await;
}

const BIG: usize = 250;

fn big_batch(round: usize, at: std::time::SystemTime) -> Vec<Operation> {
    let mut ops = Vec::with_capacity(4 * BIG);
    for i in 0..BIG {
        let id = format!("<big-{round}-{i:04}>");
        ops.push(Operation::SaveEvent(event(&id, "A")));
        ops.push(Operation::SaveQueueMessage(queue_message(command(&id, "A"), at)));
        ops.push(Operation::SaveAggregateMetaData(AggregateMetaData {
            last_event_id: id.clone(),
            ..aggregate(AGGREGATE_KEY, &id, 0)
        }));
        ops.push(save_offset(&id, 0, i as u64 + 1));
    }
    ops
}

/// Atomicity at scale (docs/batches.md#atomicity): a batch of 1000 ops commits every effect,
/// events at dense offsets in batch order; a second 1000-op batch whose last op conflicts leaves
/// nothing at all.
pub async fn batch_large_batch_commits_atomically<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let at = now();
    let ops = big_batch(0, at);
    assert_eq!(ops.len(), 1000);
    let result = persist(&*h.store, ops).await;
    assert_eq!(result.event_offsets.len(), BIG);
    for i in 0..BIG {
        assert_eq!(result.event_offsets[&format!("<big-0-{i:04}>")], i as u64);
    }
    let events = by_type(&*h.store, &[EVENT_A], 0).await;
    assert_eq!(events.len(), BIG);
    for (i, e) in events.iter().enumerate() {
        assert_eq!((e.offset, e.id()), (i as u64, format!("<big-0-{i:04}>").as_str()));
    }
    let q = queue(&*h.store, 10_000).await;
    let ids: Vec<String> = q.iter().map(|m| m.id().to_owned()).collect();
    let expected: Vec<String> = (0..BIG).map(|i| format!("<big-0-{i:04}>")).collect();
    assert_eq!(ids, expected, "equal times keep enqueue (batch) order");
    for i in [0, BIG / 2, BIG - 1] {
        let id = format!("<big-0-{i:04}>");
        assert_eq!(h.store.load_offset(&id).await.unwrap(), i as u64 + 1);
        let md = h.store.load_aggregate_meta_data(AGGREGATE_KEY, &id).await.unwrap();
        assert_eq!((md.revision, md.last_event_id.as_str()), (1, id.as_str()));
    }

    let mut ops = big_batch(1, at);
    let last = ops.len() - 1;
    ops[last] = save_offset(&format!("<big-1-{:04}>", BIG - 1), 1, BIG as u64);
    expect_conflict(&*h.store, ops, last).await;
    assert_eq!(h.store.next_event_offset().await.unwrap(), BIG as u64);
    assert_eq!(queue(&*h.store, 10_000).await.len(), BIG);
    for i in [0, BIG / 2, BIG - 1] {
        let id = format!("<big-1-{i:04}>");
        assert_eq!(h.store.load_offset(&id).await.unwrap(), 0);
        assert_eq!(h.store.load_aggregate_meta_data(AGGREGATE_KEY, &id).await.unwrap().revision, 0);
    }
    h.close().await;
}

/// docs/events.md#offsets, docs/batches.md#results: within a batch, events get consecutive
/// offsets in the order of their `SaveEvent` ops, even when interleaved with other ops, and the
/// result holds exactly one entry per `SaveEvent` (none for a batch without events).
pub async fn batch_event_offsets_follow_batch_order<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let result = persist(&*h.store, vec![save_offset(SOURCE, 0, 1)]).await;
    assert!(result.event_offsets.is_empty());
    let at = now();
    let envs: Vec<Envelope> = ["<z>", "<a>", "<m>"].iter().map(|id| event(id, "B")).collect();
    let result = persist(
        &*h.store,
        vec![
            Operation::SaveEvent(envs[0].clone()),
            Operation::SaveQueueMessage(queue_message(command("<cmd>", "A"), at)),
            Operation::SaveEvent(envs[1].clone()),
            save_offset(SOURCE, 1, 2),
            Operation::SaveEvent(envs[2].clone()),
        ],
    )
    .await;
    let expected: HashMap<String, u64> =
        [("<z>".to_owned(), 0), ("<a>".to_owned(), 1), ("<m>".to_owned(), 2)].into();
    assert_eq!(result.event_offsets, expected);
    let events = by_type(&*h.store, &[EVENT_B], 0).await;
    let got: Vec<(u64, &Envelope)> = events.iter().map(|e| (e.offset, &e.envelope)).collect();
    assert_eq!(got, vec![(0, &envs[0]), (1, &envs[1]), (2, &envs[2])]);
    h.close().await;
}
