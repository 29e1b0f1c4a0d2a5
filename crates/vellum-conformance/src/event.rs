//! The event log: `SaveEvent`, offsets and the event repository (docs/events.md#offsets,
//! docs/batches.md#events-and-duplicate-message-ids).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures_util::StreamExt;
use vellum_core::{
    AggregateRepository, Batch, DataStore, Envelope, Error, Event, EventCursor, EventReader, EventRepository,
    Identity, InvalidBatch, OffsetRepository, Operation, Persister, Provider, QueueMessage,
};

use crate::fixtures::{
    DEFAULT_APP_KEY, DEFAULT_HANDLER_KEY, aggregate, by_source, by_type, event, expect_conflict, now,
    persist, poll_once, queue, queue_message, random_id, save_offset,
};
use crate::harness::{Backend, Harness};

#[doc(hidden)]
#[macro_export]
macro_rules! __event_tests {
    ($make:expr $(, $(#[$attr:meta])*)?) => {
        $crate::__tests!($make, [$($(#[$attr])*)?];
            event::event_save_batch_loads_by_type,
            event::event_save_batch_reports_offsets,
            event::event_concurrent_single_event_batches,
            event::event_empty_store_next_offset_is_zero,
            event::event_empty_store_by_type_is_empty,
            event::event_empty_store_by_source_is_empty,
            event::event_next_offset_counts_events,
            event::event_next_offset_cancelled,
            event::event_by_type_filters_names,
            event::event_by_type_from_min_offset,
            event::event_by_type_beyond_end_is_empty,
            event::event_concurrent_readers,
            event::event_by_source_matches_handler_and_instance,
            event::event_cursor_next_cancelled,
            event::event_cursor_close,
            event::event_cursor_close_twice,
            event::event_empty_type_filter_returns_nothing,
            event::event_duplicate_names_in_filter_return_each_event_once,
            event::event_by_source_empty_instance_is_not_wildcard,
            event::event_by_source_matches_handler_key_exactly,
            event::event_by_source_absent_handler,
            event::event_failed_batch_consumes_no_offset,
            event::event_duplicate_id_rejected,
            event::event_duplicate_id_in_one_batch_is_invalid,
            event::event_and_queue_message_with_same_id,
            event::event_offsets_follow_batch_order,
            event::event_next_offset_after_several_batches,
            event::event_batch_without_events_reports_no_offsets,
            event::event_envelope_round_trip_is_exact,
            event::event_large_payload_round_trips,
            event::event_special_characters_round_trip_and_filter,
            event::event_cursor_pages_through_many_events,
            event::event_cursor_sees_later_events_without_skipping,
            event::event_cursor_repeated_exhaustion_skips_nothing,
            event::event_min_offset_max_is_empty,
            event::event_concurrent_persists_dense_offsets,
            event::event_visibility_is_prefix_closed,
            event::event_followers_see_every_offset_once_in_order,
            event::event_follower_by_source_waits_for_its_source,
            event::event_follower_ends_with_closed_when_the_store_closes,
            event::event_follower_of_a_store_does_not_poll_while_idle,
            event::event_reader_followers_see_every_offset_once_in_order,
            event::event_all_events_reads_and_follows_the_whole_log,
            event::event_whole_log_cursor_reads_ahead_without_gaps,
            event::event_reader_takes_no_lock_and_ends_followers_when_closed,
            event::event_cursor_stream_matches_next,
            event::event_persist_cancelled_is_all_or_nothing,
            event::event_cursor_after_store_close_returns_closed,
            event::event_reads_after_close_return_closed,
            event::event_log_is_per_application,
            event::event_log_survives_reopen,
        );
    };
}

const TYPE_A: &str = "EventStub[TypeA]";
const TYPE_B: &str = "EventStub[TypeB]";
const TYPE_C: &str = "EventStub[TypeC]";
const ALL_TYPES: &[&str] = &[TYPE_A, TYPE_B, TYPE_C];

/// One `SaveEvent` per envelope, in order.
fn save(envelopes: &[Envelope]) -> Vec<Operation> {
    envelopes.iter().cloned().map(Operation::SaveEvent).collect()
}

/// The events `envelopes` become when stored from `first_offset` on, in order.
fn events_from(first_offset: u64, envelopes: &[Envelope]) -> Vec<Event> {
    (first_offset..)
        .zip(envelopes.iter().cloned())
        .map(|(offset, envelope)| Event { offset, envelope })
        .collect()
}

fn at(offset: u64, envelope: &Envelope) -> Event {
    Event { offset, envelope: envelope.clone() }
}

fn offsets(events: &[Event]) -> Vec<u64> {
    events.iter().map(|e| e.offset).collect()
}

/// An expected `event_offsets` map.
fn offset_map(entries: &[(&str, u64)]) -> HashMap<String, u64> {
    entries.iter().map(|&(id, offset)| (id.to_owned(), offset)).collect()
}

/// An envelope produced by `(handler_key, instance_id)`.
fn sourced(message_id: &str, t: &str, handler_key: &str, instance_id: &str) -> Envelope {
    let mut env = event(message_id, t);
    env.source_handler = Some(Identity::new("<handler-name>", handler_key));
    env.source_instance_id = instance_id.into();
    env
}

/// Reads a cursor to its end, one `next` at a time, checking offsets strictly increase
/// (docs/events.md#cursors).
async fn read_all(mut cursor: EventCursor) -> Vec<Event> {
    let mut events: Vec<Event> = Vec::new();
    while let Some(event) = cursor.next().await.expect("read the next event") {
        if let Some(last) = events.last() {
            assert!(
                event.offset > last.offset,
                "offset {} after {}: not strictly increasing",
                event.offset,
                last.offset
            );
        }
        events.push(event);
    }
    events
}

/// Six events, saved in one batch: types A1, B1, C1, A2, B2, C2; ev0-ev3
/// produced by `<aggregate>` instances a, b, a, b; ev4 and ev5 by the default handler/`<instance>`.
async fn save_six<B: Backend>(h: &Harness<B>) -> Vec<Event> {
    let envelopes = vec![
        sourced("<message-0>", "A", "<aggregate>", "<instance-a>"),
        sourced("<message-1>", "B", "<aggregate>", "<instance-b>"),
        sourced("<message-2>", "C", "<aggregate>", "<instance-a>"),
        sourced("<message-3>", "A", "<aggregate>", "<instance-b>"),
        event("<message-4>", "B"),
        event("<message-5>", "C"),
    ];
    persist(&*h.store, save(&envelopes)).await;
    events_from(0, &envelopes)
}

/// 18. One batch of two events loads by type as `[(0, e0), (1, e1)]`, envelopes as saved.
pub async fn event_save_batch_loads_by_type<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let e0 = event("<message-0>", "A");
    let e1 = event("<message-1>", "B");
    persist(&*h.store, save(&[e0.clone(), e1.clone()])).await;
    assert_eq!(by_type(&*h.store, ALL_TYPES, 0).await, vec![at(0, &e0), at(1, &e1)]);
    h.close().await;
}

/// 19. The result of a two-event batch maps exactly each message ID to its offset.
pub async fn event_save_batch_reports_offsets<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let result = persist(&*h.store, save(&[event("<message-0>", "A"), event("<message-1>", "B")])).await;
    assert_eq!(result.event_offsets, offset_map(&[("<message-0>", 0), ("<message-1>", 1)]));
    h.close().await;
}

/// 20. Three parallel single-event batches all succeed; loading by type returns exactly those
///     three, in offset order, each at the offset its own result reported.
pub async fn event_concurrent_single_event_batches<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let envelopes = [event("<message-a1>", "A"), event("<message-b1>", "B"), event("<message-c1>", "C")];
    let tasks: Vec<_> = envelopes
        .iter()
        .cloned()
        .map(|env| {
            let store = Arc::clone(&h.store);
            tokio::spawn(async move {
                let result = persist(&*store, vec![Operation::SaveEvent(env.clone())]).await;
                assert_eq!(result.event_offsets.len(), 1, "one offset per SaveEvent");
                Event { offset: result.event_offsets[&env.message_id], envelope: env }
            })
        })
        .collect();
    let mut expected = Vec::new();
    for task in tasks {
        expected.push(task.await.unwrap());
    }
    expected.sort_by_key(|e| e.offset);
    assert_eq!(offsets(&expected), vec![0, 1, 2]);
    assert_eq!(by_type(&*h.store, ALL_TYPES, 0).await, expected);
    h.close().await;
}

/// 21. An empty store's next event offset is 0.
pub async fn event_empty_store_next_offset_is_zero<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    assert_eq!(h.store.next_event_offset().await.unwrap(), 0);
    h.close().await;
}

/// 22. Loading by type from an empty store returns nothing.
pub async fn event_empty_store_by_type_is_empty<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    assert_eq!(by_type(&*h.store, ALL_TYPES, 0).await, vec![]);
    h.close().await;
}

/// 23. Loading by source from an empty store returns nothing.
pub async fn event_empty_store_by_source_is_empty<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    assert_eq!(by_source(&*h.store, "<aggregate>", "<instance-a>").await, vec![]);
    h.close().await;
}

/// 24. With six events saved, the next event offset is 6.
pub async fn event_next_offset_counts_events<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    save_six(&h).await;
    assert_eq!(h.store.next_event_offset().await.unwrap(), 6);
    h.close().await;
}

/// 25. A `next_event_offset` abandoned before it completes answers 6 or nothing, and the store
///     still answers 6 afterwards (docs/close-and-cancellation.md#cancellation).
pub async fn event_next_offset_cancelled<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    save_six(&h).await;
    if let Some(answer) = poll_once(h.store.next_event_offset()).await {
        assert_eq!(answer.unwrap(), 6);
    }
    assert_eq!(h.store.next_event_offset().await.unwrap(), 6);
    h.close().await;
}

/// 26. Filter `{TypeA, TypeC}` from 0 returns `[ev0, ev2, ev3, ev5]`.
pub async fn event_by_type_filters_names<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let ev = save_six(&h).await;
    assert_eq!(
        by_type(&*h.store, &[TYPE_A, TYPE_C], 0).await,
        vec![ev[0].clone(), ev[2].clone(), ev[3].clone(), ev[5].clone()]
    );
    h.close().await;
}

/// 27. All types from offset 2 returns `[ev2, ev3, ev4, ev5]`.
pub async fn event_by_type_from_min_offset<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let ev = save_six(&h).await;
    assert_eq!(by_type(&*h.store, ALL_TYPES, 2).await, ev[2..].to_vec());
    h.close().await;
}

/// 28. All types from offset 100 (beyond the end) returns nothing.
pub async fn event_by_type_beyond_end_is_empty<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    save_six(&h).await;
    assert_eq!(by_type(&*h.store, ALL_TYPES, 100).await, vec![]);
    assert_eq!(by_type(&*h.store, ALL_TYPES, 6).await, vec![]);
    h.close().await;
}

/// 29. Three parallel readers with filter `{TypeA}` each get `[ev0, ev3]`.
pub async fn event_concurrent_readers<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let ev = save_six(&h).await;
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let store = Arc::clone(&h.store);
            tokio::spawn(async move { by_type(&*store, &[TYPE_A], 0).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), vec![ev[0].clone(), ev[3].clone()]);
    }
    h.close().await;
}

/// 30. By source `(<aggregate>, <instance-a>)` returns `[ev0, ev2]`.
pub async fn event_by_source_matches_handler_and_instance<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let ev = save_six(&h).await;
    assert_eq!(by_source(&*h.store, "<aggregate>", "<instance-a>").await, vec![ev[0].clone(), ev[2].clone()]);
    assert_eq!(by_source(&*h.store, "<aggregate>", "<instance-b>").await, vec![ev[1].clone(), ev[3].clone()]);
    assert_eq!(
        by_source(&*h.store, DEFAULT_HANDLER_KEY, "<instance>").await,
        vec![ev[4].clone(), ev[5].clone()]
    );
    h.close().await;
}

/// 31. A cursor step abandoned before it completes gives the event or nothing; either way the
///     cursor then hands out the event exactly once, and the store still answers
///     (docs/close-and-cancellation.md#cancellation).
pub async fn event_cursor_next_cancelled<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let e0 = event("<message-0>", "A");
    persist(&*h.store, save(std::slice::from_ref(&e0))).await;
    let mut cursor = h.store.load_events_by_type(&[TYPE_A], 0).await.unwrap();
    let mut seen = Vec::new();
    let answer = poll_once(cursor.next()).await;
    if let Some(answer) = answer {
        seen.push(answer.unwrap().expect("the saved event"));
    }
    seen.extend(read_all(cursor).await);
    assert_eq!(seen, vec![at(0, &e0)]);
    assert_eq!(by_type(&*h.store, &[TYPE_A], 0).await, vec![at(0, &e0)]);
    h.close().await;
}

/// 32. Closing an open cursor succeeds; it then reports no more events.
pub async fn event_cursor_close<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let envelopes = [event("<message-0>", "A"), event("<message-1>", "A")];
    persist(&*h.store, save(&envelopes)).await;
    let mut cursor = h.store.load_events_by_type(&[TYPE_A], 0).await.unwrap();
    assert_eq!(cursor.next().await.unwrap(), Some(at(0, &envelopes[0])));
    assert!(cursor.close().is_ok(), "closing an open cursor must succeed");
    assert_eq!(cursor.next().await.unwrap(), None);
    h.close().await;
}

/// 33. Closing a cursor twice does not crash, and the store keeps working.
pub async fn event_cursor_close_twice<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let e0 = event("<message-0>", "A");
    persist(&*h.store, save(std::slice::from_ref(&e0))).await;
    let mut cursor = h.store.load_events_by_type(&[TYPE_A], 0).await.unwrap();
    let _ = cursor.close();
    let _ = cursor.close();
    drop(cursor);
    assert_eq!(by_type(&*h.store, &[TYPE_A], 0).await, vec![at(0, &e0)]);
    h.close().await;
}

/// docs/events.md#queries-by-type: an empty type filter matches nothing, even with events in the log.
pub async fn event_empty_type_filter_returns_nothing<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    save_six(&h).await;
    assert_eq!(by_type(&*h.store, &[], 0).await, vec![]);
    h.close().await;
}

/// docs/events.md#queries-by-type: the filter is a set; a name given twice still returns each event once.
pub async fn event_duplicate_names_in_filter_return_each_event_once<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let ev = save_six(&h).await;
    assert_eq!(
        by_type(&*h.store, &[TYPE_A, TYPE_A, TYPE_C, TYPE_A], 0).await,
        vec![ev[0].clone(), ev[2].clone(), ev[3].clone(), ev[5].clone()]
    );
    h.close().await;
}

/// docs/events.md#queries-by-source: `load_events_by_source(hk, "")` selects only events with an
/// empty instance ID; it is not a wildcard.
pub async fn event_by_source_empty_instance_is_not_wildcard<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let envelopes = [
        sourced("<message-0>", "A", "<handler>", ""),
        sourced("<message-1>", "A", "<handler>", "<instance>"),
        sourced("<message-2>", "B", "<handler>", ""),
        sourced("<message-3>", "B", "<handler>", " "),
    ];
    persist(&*h.store, save(&envelopes)).await;
    assert_eq!(by_source(&*h.store, "<handler>", "").await, vec![at(0, &envelopes[0]), at(2, &envelopes[2])]);
    assert_eq!(by_source(&*h.store, "<handler>", "<instance>").await, vec![at(1, &envelopes[1])]);
    assert_eq!(by_source(&*h.store, "<handler>", " ").await, vec![at(3, &envelopes[3])]);
    h.close().await;
}

/// docs/events.md#queries-by-source: by-source matching on the handler key is exact: another
/// handler with the same instance ID, a key that is a prefix of another, and an instance ID that
/// is a prefix are excluded.
pub async fn event_by_source_matches_handler_key_exactly<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let envelopes = [
        sourced("<message-0>", "A", "<handler-1>", "<instance>"),
        sourced("<message-1>", "A", "<handler-2>", "<instance>"),
        sourced("<message-2>", "A", "<handler-1>", "<instance>-2"),
        sourced("<message-3>", "A", "<handler-1>-x", "<instance>"),
        sourced("<message-4>", "A", "<HANDLER-1>", "<instance>"),
        sourced("<message-5>", "A", "<handler-1>", "<instance>"),
    ];
    persist(&*h.store, save(&envelopes)).await;
    assert_eq!(
        by_source(&*h.store, "<handler-1>", "<instance>").await,
        vec![at(0, &envelopes[0]), at(5, &envelopes[5])]
    );
    assert_eq!(by_source(&*h.store, "<handler-2>", "<instance>").await, vec![at(1, &envelopes[1])]);
    assert_eq!(by_source(&*h.store, "<handler-1>-x", "<instance>").await, vec![at(3, &envelopes[3])]);
    assert_eq!(by_source(&*h.store, "<handler-3>", "<instance>").await, vec![]);
    h.close().await;
}

/// docs/events.md#queries-by-source: events with an absent (or empty) source handler are found by
/// `load_events_by_source("", id)`, and not by the default handler's key.
pub async fn event_by_source_absent_handler<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let mut absent = event("<message-0>", "A");
    absent.source_handler = None;
    absent.source_instance_id = String::new();
    let mut empty = event("<message-1>", "A");
    empty.source_handler = Some(Identity::default());
    empty.source_instance_id = String::new();
    let mut absent_with_id = event("<message-2>", "A");
    absent_with_id.source_handler = None;
    absent_with_id.source_instance_id = "<instance>".into();
    let handled = sourced("<message-3>", "A", DEFAULT_HANDLER_KEY, "");
    persist(&*h.store, save(&[absent.clone(), empty.clone(), absent_with_id.clone(), handled.clone()])).await;
    assert_eq!(by_source(&*h.store, "", "").await, vec![at(0, &absent), at(1, &empty)]);
    assert_eq!(by_source(&*h.store, "", "<instance>").await, vec![at(2, &absent_with_id)]);
    assert_eq!(by_source(&*h.store, DEFAULT_HANDLER_KEY, "").await, vec![at(3, &handled)]);
    assert_eq!(by_source(&*h.store, DEFAULT_HANDLER_KEY, "<instance>").await, vec![]);
    h.close().await;
}

/// docs/events.md#offsets: a batch containing `SaveEvent` that fails with a conflict (after or
/// before the event) consumes no offset; the next committed event gets the next dense offset.
pub async fn event_failed_batch_consumes_no_offset<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let [e0, e1, e2, e3] =
        ["<message-0>", "<message-1>", "<message-2>", "<message-3>"].map(|id| event(id, "A"));
    persist(&*h.store, save(std::slice::from_ref(&e0))).await;

    let mut ops = save(&[e1.clone(), e2.clone()]);
    ops.push(Operation::SaveAggregateMetaData(aggregate(DEFAULT_HANDLER_KEY, "<instance>", 7)));
    expect_conflict(&*h.store, ops, 2).await;
    assert_eq!(h.store.next_event_offset().await.unwrap(), 1);
    assert_eq!(by_type(&*h.store, &[TYPE_A], 0).await, vec![at(0, &e0)]);

    let result = persist(&*h.store, save(std::slice::from_ref(&e3))).await;
    assert_eq!(result.event_offsets, offset_map(&[("<message-3>", 1)]));

    expect_conflict(&*h.store, vec![save_offset("<source-app>", 5, 6), Operation::SaveEvent(e1.clone())], 0)
        .await;
    assert_eq!(h.store.next_event_offset().await.unwrap(), 2);

    let result = persist(&*h.store, save(&[e1.clone(), e2.clone()])).await;
    assert_eq!(result.event_offsets, offset_map(&[("<message-1>", 2), ("<message-2>", 3)]));
    assert_eq!(by_type(&*h.store, &[TYPE_A], 0).await, vec![at(0, &e0), at(1, &e3), at(2, &e1), at(3, &e2)]);
    assert_eq!(h.store.next_event_offset().await.unwrap(), 4);
    h.close().await;
}

/// docs/batches.md#events-and-duplicate-message-ids: saving an event whose message ID is already
/// in the log (from an earlier batch) fails with `DuplicateEvent`, not a conflict; nothing from
/// the batch is applied and no offset is consumed.
pub async fn event_duplicate_id_rejected<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let x = event("<message-x>", "A");
    persist(&*h.store, save(std::slice::from_ref(&x))).await;

    let mut x_again = event("<message-x>", "B");
    x_again.description = "<a different envelope>".into();
    let ops = vec![
        save_offset("<source-app>", 0, 1),
        Operation::SaveEvent(event("<message-y>", "A")),
        Operation::SaveEvent(x_again),
        Operation::SaveAggregateMetaData(aggregate(DEFAULT_HANDLER_KEY, "<instance>", 0)),
    ];
    match h.store.persist(Batch::from(ops)).await {
        Err(Error::DuplicateEvent { message_id }) => assert_eq!(message_id, "<message-x>"),
        other => panic!("expected DuplicateEvent for <message-x>, got {other:?}"),
    }
    assert_eq!(h.store.next_event_offset().await.unwrap(), 1);
    assert_eq!(by_type(&*h.store, ALL_TYPES, 0).await, vec![at(0, &x)]);
    assert_eq!(h.store.load_offset("<source-app>").await.unwrap(), 0);
    assert_eq!(
        h.store.load_aggregate_meta_data(DEFAULT_HANDLER_KEY, "<instance>").await.unwrap().revision,
        0
    );

    let z = event("<message-z>", "A");
    let result = persist(&*h.store, save(std::slice::from_ref(&z))).await;
    assert_eq!(result.event_offsets, offset_map(&[("<message-z>", 1)]));
    assert_eq!(by_type(&*h.store, ALL_TYPES, 0).await, vec![at(0, &x), at(1, &z)]);
    h.close().await;
}

/// docs/batches.md#entity-keys: two `SaveEvent`s with one message ID in one batch are an invalid
/// batch; nothing is applied and no offset is consumed.
pub async fn event_duplicate_id_in_one_batch_is_invalid<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let ops = save(&[event("<message-0>", "A"), event("<message-1>", "A"), event("<message-0>", "B")]);
    match h.store.persist(Batch::from(ops)).await {
        Err(Error::InvalidBatch(InvalidBatch::DuplicateEntity { first: 0, second: 2, .. })) => {}
        other => panic!("expected an invalid batch (ops 0 and 2), got {other:?}"),
    }
    assert_eq!(h.store.next_event_offset().await.unwrap(), 0);
    assert_eq!(by_type(&*h.store, ALL_TYPES, 0).await, vec![]);
    h.close().await;
}

/// docs/batches.md#entity-keys: `SaveEvent` and `SaveQueueMessage` for the same message ID in one
/// batch are legal; both are applied.
pub async fn event_and_queue_message_with_same_id<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let env = event("<message-0>", "A");
    let t = now();
    let result = persist(
        &*h.store,
        vec![Operation::SaveEvent(env.clone()), Operation::SaveQueueMessage(queue_message(env.clone(), t))],
    )
    .await;
    assert_eq!(result.event_offsets, offset_map(&[("<message-0>", 0)]));
    assert_eq!(by_type(&*h.store, &[TYPE_A], 0).await, vec![at(0, &env)]);
    assert_eq!(
        queue(&*h.store, 10).await,
        vec![QueueMessage { revision: 1, failure_count: 0, next_attempt_at: t, envelope: env }]
    );
    h.close().await;
}

/// docs/events.md#offsets: offsets within a batch follow the order of its `SaveEvent` ops (not
/// message-ID or type order), and the next batch continues after them.
pub async fn event_offsets_follow_batch_order<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let first = [
        event("<message-z>", "C"),
        event("<message-a>", "B"),
        event("<message-m>", "A"),
        event(&random_id(), "C"),
        event("<message-0>", "A"),
    ];
    let result = persist(&*h.store, save(&first)).await;
    let expected: HashMap<String, u64> = (0..).zip(&first).map(|(o, e)| (e.message_id.clone(), o)).collect();
    assert_eq!(result.event_offsets, expected);

    let second = [event("<message-y>", "B"), event("<message-b>", "A")];
    let mut ops = vec![Operation::SaveAggregateMetaData(aggregate(DEFAULT_HANDLER_KEY, "<instance>", 0))];
    ops.push(Operation::SaveEvent(second[0].clone()));
    ops.push(save_offset("<source-app>", 0, 1));
    ops.push(Operation::SaveEvent(second[1].clone()));
    let result = persist(&*h.store, ops).await;
    assert_eq!(result.event_offsets, offset_map(&[("<message-y>", 5), ("<message-b>", 6)]));

    let mut all = events_from(0, &first);
    all.extend(events_from(5, &second));
    assert_eq!(by_type(&*h.store, ALL_TYPES, 0).await, all);
    h.close().await;
}

/// docs/events.md#next-event-offset: `next_event_offset` equals the number of events after each of
/// several batches (including batches without events and an empty batch).
pub async fn event_next_offset_after_several_batches<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let mut count = 0;
    for size in [1_u64, 3, 0, 2, 5, 0, 1] {
        let envelopes: Vec<_> = (0..size).map(|_| event(&random_id(), "B")).collect();
        let mut ops = save(&envelopes);
        if size == 0 {
            ops.push(save_offset(&format!("<source-app-{count}>"), 0, 1));
        }
        persist(&*h.store, ops).await;
        count += size;
        assert_eq!(h.store.next_event_offset().await.unwrap(), count);
    }
    h.store.persist(Batch::new()).await.expect("an empty batch is valid");
    assert_eq!(h.store.next_event_offset().await.unwrap(), 12);
    assert_eq!(offsets(&by_type(&*h.store, &[TYPE_B], 0).await), (0..12).collect::<Vec<_>>());
    h.close().await;
}

/// docs/batches.md#results: a batch without `SaveEvent` (and an empty batch) reports an empty
/// offset map.
pub async fn event_batch_without_events_reports_no_offsets<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let result = persist(
        &*h.store,
        vec![
            save_offset("<source-app>", 0, 1),
            Operation::SaveQueueMessage(queue_message(event("<message-0>", "A"), now())),
        ],
    )
    .await;
    assert_eq!(result.event_offsets, HashMap::new());
    let result = h.store.persist(Batch::new()).await.expect("an empty batch is valid");
    assert_eq!(result.event_offsets, HashMap::new());
    assert_eq!(h.store.next_event_offset().await.unwrap(), 0);
    h.close().await;
}

/// docs/events.md#envelopes-are-stored-exactly: envelopes round-trip exactly: `source_site`,
/// `scheduled_for`, an absent vs an empty source handler, absent vs empty identities, and empty
/// strings everywhere.
pub async fn event_envelope_round_trip_is_exact<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let mut full = event("<message-0>", "A");
    full.source_site = Some(Identity::new("<site-name>", "<site-key>"));
    full.scheduled_for = "2026-11-26T10:11:12.000000001Z".into();
    let mut absent_handler = event("<message-1>", "A");
    absent_handler.source_handler = None;
    absent_handler.source_instance_id = String::new();
    let mut empty_handler = event("<message-2>", "A");
    empty_handler.source_handler = Some(Identity::default());
    empty_handler.source_instance_id = String::new();
    let all_empty = Envelope { message_id: "<message-3>".to_owned(), ..Envelope::default() };
    let mut empty_identities = Envelope {
        message_id: "<message-4>".to_owned(),
        portable_name: TYPE_A.to_owned(),
        source_application: Some(Identity::default()),
        source_handler: Some(Identity::new("", "<handler>")),
        source_site: Some(Identity::new("<site-name>", "")),
        ..Envelope::default()
    };
    empty_identities.data = vec![0, 0xff, 0];
    let envelopes = [full, absent_handler, empty_handler, all_empty, empty_identities];
    persist(&*h.store, save(&envelopes)).await;
    let expected = events_from(0, &envelopes);

    assert_eq!(by_type(&*h.store, &[TYPE_A, ""], 0).await, expected);
    assert_eq!(by_type(&*h.store, &[""], 0).await, vec![expected[3].clone()]);
    assert_eq!(
        by_source(&*h.store, "", "").await,
        vec![expected[1].clone(), expected[2].clone(), expected[3].clone()]
    );
    let read = by_type(&*h.store, &[TYPE_A], 0).await;
    assert_eq!(read[1].envelope.source_handler, None, "an absent source handler must stay absent");
    assert_eq!(read[2].envelope.source_handler, Some(Identity::default()), "an empty one must stay present");
    assert_eq!(by_source(&*h.store, "<handler>", "").await, vec![expected[4].clone()]);
    h.close().await;
}

/// docs/events.md#envelopes-are-stored-exactly: a 1 MiB payload round-trips byte for byte.
pub async fn event_large_payload_round_trips<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let mut big = event("<message-big>", "A");
    big.data = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    big.description = "d".repeat(10_000);
    let small = event("<message-small>", "A");
    persist(&*h.store, save(&[big.clone(), small.clone()])).await;
    let read = by_type(&*h.store, &[TYPE_A], 0).await;
    assert_eq!(read.len(), 2);
    assert_eq!(read[0].envelope.data.len(), 1 << 20);
    assert_eq!(read, vec![at(0, &big), at(1, &small)]);
    assert_eq!(by_source(&*h.store, DEFAULT_HANDLER_KEY, "<instance>").await, read);
    h.close().await;
}

/// docs/batches.md#identifiers: identifiers are opaque strings: unicode, quotes, semicolons, `%`,
/// `_` and backslashes in portable names, message IDs, handler keys and instance IDs round-trip
/// and filter exactly (no LIKE wildcards, no injection).
pub async fn event_special_characters_round_trip_and_filter<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let cases = [
        ("Ünïcødé 日本語 🦀", "id-ü-🦀", "hk-é", "inst-日本"),
        ("quote\"double'single`back", "id'\"`", "hk'\"", "inst'\""),
        ("semi;colon'); DROP TABLE event; --", "id; --", "hk;", "inst; DELETE"),
        ("%", "%", "%", "%"),
        ("_", "_", "_", "_"),
        ("100%_done", "id%_", "h%", "i_"),
        ("back\\slash\\%", "id\\", "h\\", "i\\"),
        ("control\u{1}\u{7f}", "id\u{1}", "h\u{7f}", "i\t\n"),
    ];
    let envelopes: Vec<Envelope> = cases
        .iter()
        .map(|&(name, id, hk, inst)| {
            let mut env = sourced(id, "A", hk, inst);
            env.portable_name = name.into();
            env.media_type = format!("application/json; type=\"{name}\"");
            env
        })
        .collect();
    persist(&*h.store, save(&envelopes)).await;
    let expected = events_from(0, &envelopes);
    let names: Vec<&str> = cases.iter().map(|c| c.0).collect();
    assert_eq!(by_type(&*h.store, &names, 0).await, expected);
    for (i, &(name, _, hk, inst)) in cases.iter().enumerate() {
        assert_eq!(by_type(&*h.store, &[name], 0).await, vec![expected[i].clone()], "by type {name:?}");
        assert_eq!(
            by_source(&*h.store, hk, inst).await,
            vec![expected[i].clone()],
            "by source {hk:?}/{inst:?}"
        );
    }
    assert_eq!(by_type(&*h.store, &["%%", "_%", "Ünïcødé%", "ÜNÏCØDÉ 日本語 🦀"], 0).await, vec![]);
    assert_eq!(by_source(&*h.store, "%", "_").await, vec![]);
    h.close().await;
}

/// docs/events.md#cursors: a cursor over far more events than one page (page size 7) returns every
/// matching event exactly once, in strictly increasing offset order.
pub async fn event_cursor_pages_through_many_events<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let mut all = Vec::new();
    for batch in 0..10 {
        let envelopes: Vec<Envelope> = (0..100)
            .map(|i| {
                let t = if i % 2 == 0 { "A" } else { "B" };
                let instance = if i % 3 == 0 { "<instance-a>" } else { "<instance-b>" };
                sourced(&format!("<message-{batch}-{i}>"), t, DEFAULT_HANDLER_KEY, instance)
            })
            .collect();
        persist(&*h.store, save(&envelopes)).await;
        all.extend(events_from(batch * 100, &envelopes));
    }
    let paged = |types: &'static [&'static str], min: u64| {
        let store = Arc::clone(&h.store);
        async move { read_all(store.load_events_by_type(types, min).await.unwrap().with_page_size(7)).await }
    };
    assert_eq!(paged(&[TYPE_A, TYPE_B], 0).await, all);
    let only_a: Vec<Event> = all.iter().filter(|e| e.envelope.portable_name == TYPE_A).cloned().collect();
    assert_eq!(only_a.len(), 500);
    assert_eq!(paged(&[TYPE_A], 0).await, only_a);
    assert_eq!(paged(&[TYPE_A, TYPE_B, TYPE_C], 993).await, all[993..].to_vec());
    let cursor = h.store.load_events_by_source(DEFAULT_HANDLER_KEY, "<instance-a>").await.unwrap();
    let from_a: Vec<Event> =
        all.iter().filter(|e| e.envelope.source_instance_id == "<instance-a>").cloned().collect();
    assert_eq!(read_all(cursor.with_page_size(7)).await, from_a);
    assert_eq!(by_type(&*h.store, &[TYPE_A, TYPE_B], 0).await, all);
    h.close().await;
}

/// docs/events.md#cursors: a cursor includes every event committed before the load, never skips
/// or duplicates events committed while it is being read, and after reporting the end, finds
/// events committed since.
pub async fn event_cursor_sees_later_events_without_skipping<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let before: Vec<Envelope> = (0..10).map(|i| event(&format!("<before-{i}>"), "A")).collect();
    persist(&*h.store, save(&before)).await;
    let mut cursor = h.store.load_events_by_type(&[TYPE_A], 0).await.unwrap().with_page_size(3);
    let mut read = Vec::new();
    for _ in 0..4 {
        read.push(cursor.next().await.unwrap().expect("an event committed before the load"));
    }
    let during: Vec<Envelope> = (0..5).map(|i| event(&format!("<during-{i}>"), "A")).collect();
    persist(&*h.store, save(&during)).await;
    while let Some(event) = cursor.next().await.unwrap() {
        read.push(event);
    }
    let mut all = events_from(0, &before);
    all.extend(events_from(10, &during));
    assert!(read.len() >= 10, "every event committed before the load must be read, got {}", read.len());
    assert_eq!(read, all[..read.len()].to_vec(), "later events may only be a prefix, in order");

    let after = event("<after>", "A");
    persist(&*h.store, save(std::slice::from_ref(&after))).await;
    all.push(at(15, &after));
    let next = cursor.next().await.unwrap().expect("the cursor must find events committed since it ended");
    assert_eq!(next, all[read.len()]);
    read.push(next);
    while let Some(event) = cursor.next().await.unwrap() {
        read.push(event);
    }
    assert_eq!(read, all);
    h.close().await;
}

/// docs/events.md#cursors: calling `next` several times after the end, then appending, skips nothing.
pub async fn event_cursor_repeated_exhaustion_skips_nothing<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let e0 = event("<message-0>", "A");
    persist(&*h.store, save(std::slice::from_ref(&e0))).await;
    let mut cursor = h.store.load_events_by_type(&[TYPE_A], 0).await.unwrap();
    assert_eq!(cursor.next().await.unwrap(), Some(at(0, &e0)));
    for _ in 0..3 {
        assert_eq!(cursor.next().await.unwrap(), None);
    }
    let later = [event("<message-1>", "B"), event("<message-2>", "A"), event("<message-3>", "A")];
    persist(&*h.store, save(&later)).await;
    assert_eq!(cursor.next().await.unwrap(), Some(at(2, &later[1])));
    assert_eq!(cursor.next().await.unwrap(), Some(at(3, &later[2])));
    assert_eq!(cursor.next().await.unwrap(), None);

    let mut by_src = h.store.load_events_by_source(DEFAULT_HANDLER_KEY, "<instance>").await.unwrap();
    for expected in 0..4 {
        assert_eq!(by_src.next().await.unwrap().map(|e| e.offset), Some(expected));
    }
    assert_eq!(by_src.next().await.unwrap(), None);
    assert_eq!(by_src.next().await.unwrap(), None);
    let last = event("<message-4>", "C");
    persist(&*h.store, save(std::slice::from_ref(&last))).await;
    assert_eq!(by_src.next().await.unwrap(), Some(at(4, &last)));
    assert_eq!(by_src.next().await.unwrap(), None);
    h.close().await;
}

/// docs/events.md#queries-by-type: `min_offset = u64::MAX` returns nothing without panicking.
pub async fn event_min_offset_max_is_empty<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    save_six(&h).await;
    assert_eq!(by_type(&*h.store, ALL_TYPES, u64::MAX).await, vec![]);
    assert_eq!(by_type(&*h.store, ALL_TYPES, u64::MAX - 1).await, vec![]);
    assert_eq!(by_type(&*h.store, ALL_TYPES, 1 << 63).await, vec![]);
    let mut cursor = h.store.load_events_by_type(ALL_TYPES, u64::MAX).await.unwrap();
    assert_eq!(cursor.next().await.unwrap(), None);
    assert_eq!(cursor.next().await.unwrap(), None);
    assert_eq!(h.store.next_event_offset().await.unwrap(), 6);
    h.close().await;
}

/// docs/events.md#offsets, docs/close-and-cancellation.md#concurrency: 8 tasks persisting 20
/// single-event batches each give dense offsets 0..160 with no duplicates, and each result's
/// offset is the offset the event is read back at.
pub async fn event_concurrent_persists_dense_offsets<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let store = Arc::clone(&h.store);
            tokio::spawn(async move {
                let mut reported = Vec::new();
                for i in 0..20 {
                    let env = event(&format!("<task-{task}-{i}>-{}", random_id()), ["A", "B", "C"][i % 3]);
                    let result = persist(&*store, vec![Operation::SaveEvent(env.clone())]).await;
                    assert_eq!(result.event_offsets.len(), 1);
                    reported.push((env.message_id.clone(), result.event_offsets[&env.message_id]));
                }
                reported
            })
        })
        .collect();
    let mut reported = HashMap::new();
    for task in tasks {
        for (id, offset) in task.await.unwrap() {
            assert!(reported.insert(id, offset).is_none(), "a message ID was reported twice");
        }
    }
    assert_eq!(reported.len(), 160);
    let read = by_type(&*h.store, ALL_TYPES, 0).await;
    assert_eq!(offsets(&read), (0..160).collect::<Vec<_>>());
    let read_back: HashMap<String, u64> = read.iter().map(|e| (e.id().to_owned(), e.offset)).collect();
    assert_eq!(read_back, reported);
    assert_eq!(h.store.next_event_offset().await.unwrap(), 160);
    h.close().await;
}

/// docs/events.md#offsets: visibility is prefix-closed while batches commit concurrently: a reader
/// sees offsets `0..m` with no gaps, and `m` is at least the `next_event_offset` read just before.
pub async fn event_visibility_is_prefix_closed<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let store = Arc::clone(&h.store);
            tokio::spawn(async move {
                for i in 0..50 {
                    let envelopes =
                        [event(&format!("<w{w}-{i}-a>"), "A"), event(&format!("<w{w}-{i}-b>"), "B")];
                    persist(&*store, save(&envelopes)).await;
                }
            })
        })
        .collect();
    let mut rounds = 0;
    loop {
        let done = writers.iter().all(tokio::task::JoinHandle::is_finished);
        let n = h.store.next_event_offset().await.unwrap();
        let seen = offsets(&by_type(&*h.store, &[TYPE_A, TYPE_B], 0).await);
        assert_eq!(seen, (0..seen.len() as u64).collect::<Vec<_>>(), "a gap is visible");
        assert!(
            seen.len() as u64 >= n,
            "next_event_offset was {n} but only {} events are visible",
            seen.len()
        );
        assert_eq!(seen.len() % 2, 0, "half a batch is visible");
        rounds += 1;
        if done {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(rounds >= 1);
    for writer in writers {
        writer.await.unwrap();
    }
    assert_eq!(h.store.next_event_offset().await.unwrap(), 200);
    h.close().await;
}

/// docs/events.md#cursors: the cursor as a stream yields the same events as calling `next`.
pub async fn event_cursor_stream_matches_next<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let ev = save_six(&h).await;
    let stream =
        h.store.load_events_by_type(&[TYPE_A, TYPE_B], 1).await.unwrap().with_page_size(2).into_stream();
    let streamed: Vec<Event> = stream.map(|r| r.expect("stream an event")).collect().await;
    let nexted = read_all(h.store.load_events_by_type(&[TYPE_A, TYPE_B], 1).await.unwrap()).await;
    assert_eq!(streamed, vec![ev[1].clone(), ev[3].clone(), ev[4].clone()]);
    assert_eq!(streamed, nexted);
    let by_src: Vec<Event> = h
        .store
        .load_events_by_source("<aggregate>", "<instance-b>")
        .await
        .unwrap()
        .into_stream()
        .map(|r| r.expect("stream an event"))
        .collect()
        .await;
    assert_eq!(by_src, vec![ev[1].clone(), ev[3].clone()]);
    h.close().await;
}

/// docs/close-and-cancellation.md#cancellation: a persist of events abandoned after one poll is
///     all-or-nothing. The abandoned batch may still commit later (a provider may have queued
///     it), but never partly, and offsets stay dense whichever way it goes.
pub async fn event_persist_cancelled_is_all_or_nothing<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let [e0, e1, e2, e3] =
        ["<message-0>", "<message-1>", "<message-2>", "<message-3>"].map(|id| event(id, "A"));
    persist(&*h.store, save(std::slice::from_ref(&e0))).await;
    let answer = poll_once(h.store.persist(Batch::from(save(&[e1.clone(), e2.clone()])))).await;
    if let Some(result) = answer {
        assert_eq!(result.unwrap().event_offsets, offset_map(&[("<message-1>", 1), ("<message-2>", 2)]));
    }
    let o3 = persist(&*h.store, save(std::slice::from_ref(&e3))).await.event_offsets["<message-3>"];
    assert!(o3 == 1 || o3 == 3, "e3 got offset {o3}: the abandoned batch was split");
    // One read of the whole log: dense from 0, and e1 and e2 both absent or both present, adjacent.
    let log = by_type(&*h.store, &[TYPE_A], 0).await;
    let offsets: Vec<u64> = log.iter().map(|e| e.offset).collect();
    assert_eq!(offsets, (0..log.len() as u64).collect::<Vec<_>>(), "offsets must be dense");
    let ids: Vec<&str> = log.iter().map(vellum_core::Event::id).collect();
    let allowed: [&[&str]; 3] = [
        &["<message-0>", "<message-3>"],
        &["<message-0>", "<message-1>", "<message-2>", "<message-3>"],
        &["<message-0>", "<message-3>", "<message-1>", "<message-2>"],
    ];
    assert!(allowed.contains(&ids.as_slice()), "log after an abandoned persist: {ids:?}");
    assert_eq!(log.iter().find(|e| e.id() == "<message-3>").map(|e| e.offset), Some(o3));
    h.close().await;
}

/// docs/events.md#cursors-and-closed-stores: a cursor that must fetch a new page after its store
/// was closed returns `Closed`.
pub async fn event_cursor_after_store_close_returns_closed<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let envelopes: Vec<Envelope> = (0..5).map(|i| event(&format!("<message-{i}>"), "A")).collect();
    persist(&*h.store, save(&envelopes)).await;
    let mut fresh = h.store.load_events_by_type(&[TYPE_A], 0).await.unwrap();
    let mut partly = h.store.load_events_by_type(&[TYPE_A], 0).await.unwrap().with_page_size(2);
    let mut by_src = h.store.load_events_by_source(DEFAULT_HANDLER_KEY, "<instance>").await.unwrap();
    let mut buffered = h.store.load_events_by_type(&[TYPE_A], 0).await.unwrap().with_page_size(4);
    let mut empty_filter = h.store.load_events_by_type(&[], 0).await.unwrap();
    assert_eq!(buffered.next().await.unwrap(), Some(at(0, &envelopes[0])), "three more are buffered");
    assert_eq!(partly.next().await.unwrap(), Some(at(0, &envelopes[0])));
    assert_eq!(partly.next().await.unwrap(), Some(at(1, &envelopes[1])));
    h.close().await;
    let got = fresh.next().await;
    assert!(matches!(got, Err(Error::Closed)), "expected Closed, got {got:?}");
    let got = partly.next().await;
    assert!(matches!(got, Err(Error::Closed)), "expected Closed, got {got:?}");
    let got = by_src.next().await;
    assert!(matches!(got, Err(Error::Closed)), "expected Closed, got {got:?}");
    let got = buffered.next().await;
    assert!(matches!(got, Err(Error::Closed)), "buffered events after close: expected Closed, got {got:?}");
    let got = empty_filter.next().await;
    assert!(matches!(got, Err(Error::Closed)), "empty filter after close: expected Closed, got {got:?}");
}

/// docs/close-and-cancellation.md#closed-stores: after close, `next_event_offset`,
/// `load_events_by_type` and `load_events_by_source` return `Closed`, and `persist` of an event
/// returns `Closed`.
pub async fn event_reads_after_close_return_closed<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    save_six(&h).await;
    let store = Arc::clone(&h.store);
    h.close().await;
    let got = store.next_event_offset().await;
    assert!(matches!(got, Err(Error::Closed)), "next_event_offset: expected Closed, got {got:?}");
    let got = store.load_events_by_type(ALL_TYPES, 0).await;
    assert!(matches!(got, Err(Error::Closed)), "load_events_by_type: expected Closed, got {got:?}");
    let got = store.load_events_by_source("<aggregate>", "<instance-a>").await;
    assert!(matches!(got, Err(Error::Closed)), "load_events_by_source: expected Closed, got {got:?}");
    let got = store.persist(Batch::from(save(&[event("<message-6>", "A")]))).await;
    assert!(matches!(got, Err(Error::Closed)), "persist: expected Closed, got {got:?}");
}

/// docs/events.md#isolation-per-application: each application has its own log with offsets from
/// 0; events of one store are invisible to another, whatever application their envelopes name,
/// and a message ID used in one application's log is not a duplicate in another's.
pub async fn event_log_is_per_application<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let other = h.provider.open("<other-app>").await.expect("open a second application");
    let a0 = event("<message-a0>", "A");
    let mut a1 = event("<message-a1>", "B");
    a1.source_application = Some(Identity::new("<other-name>", "<other-app>"));
    let b0 = event("<message-b0>", "A");
    persist(&*h.store, save(&[a0.clone(), a1.clone()])).await;
    let result = persist(&other, save(std::slice::from_ref(&b0))).await;
    assert_eq!(result.event_offsets, offset_map(&[("<message-b0>", 0)]));
    assert_eq!(h.store.next_event_offset().await.unwrap(), 2);
    assert_eq!(other.next_event_offset().await.unwrap(), 1);
    assert_eq!(by_type(&*h.store, ALL_TYPES, 0).await, vec![at(0, &a0), at(1, &a1)]);
    assert_eq!(by_type(&other, ALL_TYPES, 0).await, vec![at(0, &b0)]);
    assert_eq!(by_source(&other, DEFAULT_HANDLER_KEY, "<instance>").await, vec![at(0, &b0)]);

    let result = persist(&other, save(std::slice::from_ref(&a0))).await;
    assert_eq!(result.event_offsets, offset_map(&[("<message-a0>", 1)]));
    assert_eq!(by_type(&other, &[TYPE_A], 0).await, vec![at(0, &b0), at(1, &a0)]);
    assert_eq!(by_type(&*h.store, &[TYPE_A], 0).await, vec![at(0, &a0)]);
    assert_eq!(h.store.next_event_offset().await.unwrap(), 2);
    other.close().await.expect("close the second application");
    assert_eq!(h.store.app_key(), DEFAULT_APP_KEY);
    h.close().await;
}

/// docs/close-and-cancellation.md#reopening: the log and its offset counter survive closing and
/// reopening the store.
pub async fn event_log_survives_reopen<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let ev = save_six(&h).await;
    h.close().await;
    let h = Harness::open(b).await;
    if !b.providers_share_storage() {
        h.close().await;
        return;
    }
    assert_eq!(h.store.next_event_offset().await.unwrap(), 6);
    assert_eq!(by_type(&*h.store, ALL_TYPES, 0).await, ev);
    let e6 = event("<message-6>", "A");
    let result = persist(&*h.store, save(std::slice::from_ref(&e6))).await;
    assert_eq!(result.event_offsets, offset_map(&[("<message-6>", 6)]));
    let ids: HashSet<String> =
        by_type(&*h.store, ALL_TYPES, 0).await.iter().map(|e| e.id().to_owned()).collect();
    assert_eq!(ids.len(), 7);
    h.close().await;
}

/// `writers` tasks, each persisting `each` one-event batches of types A and B in turn.
fn spawn_writers<S: DataStore + 'static>(
    store: &Arc<S>,
    writers: usize,
    each: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..writers)
        .map(|w| {
            let store = Arc::clone(store);
            tokio::spawn(async move {
                for i in 0..each {
                    let t = if (w + i) % 2 == 0 { "A" } else { "B" };
                    persist(&*store, vec![Operation::SaveEvent(event(&format!("<w{w}-e{i}>"), t))]).await;
                }
            })
        })
        .collect()
}

/// docs/events.md#following-the-log: 16 writers append concurrently while 3 followers (started
/// before, during and after the writes) follow the whole log; each sees offsets 0..N-1 exactly
/// once, in order, without polling for the in-process commits.
pub async fn event_followers_see_every_offset_once_in_order<B: Backend>(b: &B) {
    const WRITERS: usize = 16;
    const EACH: usize = 20;
    const TOTAL: u64 = (WRITERS * EACH) as u64;
    let h = Harness::open(b).await;
    let follow = |store: Arc<<B::Provider as Provider>::Store>| async move {
        let mut follower =
            store.load_events_by_type(&["EventStub[TypeA]", "EventStub[TypeB]"], 0).await.unwrap().follow();
        let mut offsets = Vec::new();
        while offsets.len() < TOTAL as usize {
            offsets.push(follower.next().await.unwrap().offset);
        }
        offsets
    };
    let early = tokio::spawn(follow(Arc::clone(&h.store)));
    let writers = spawn_writers(&h.store, WRITERS, EACH);
    let during = tokio::spawn(follow(Arc::clone(&h.store)));
    for writer in writers {
        writer.await.unwrap();
    }
    let late = tokio::spawn(follow(Arc::clone(&h.store)));
    for (name, follower) in [("early", early), ("during", during), ("late", late)] {
        let offsets = follower.await.unwrap();
        assert_eq!(offsets, (0..TOTAL).collect::<Vec<_>>(), "{name} follower");
    }
}

/// docs/events.md#following-the-log: a follower by source yields its source's stored events,
/// then waits for the next one, skipping other sources' events.
pub async fn event_follower_by_source_waits_for_its_source<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let from = |id: &str, instance: &str| {
        let mut e = event(id, "A");
        e.source_handler = Some(Identity::new("<handler>", "<handler-key>"));
        instance.clone_into(&mut e.source_instance_id);
        Operation::SaveEvent(e)
    };
    persist(&*h.store, vec![from("<e0>", "<i1>"), from("<e1>", "<i2>")]).await;
    let mut follower = h.store.load_events_by_source("<handler-key>", "<i1>").await.unwrap().follow();
    assert_eq!(follower.next().await.unwrap().envelope.message_id, "<e0>");
    let waiting =
        tokio::spawn(async move { follower.next().await.map(|e| (e.offset, e.envelope.message_id)) });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(!waiting.is_finished(), "nothing new from the source yet");
    persist(&*h.store, vec![from("<e2>", "<i2>")]).await;
    persist(&*h.store, vec![from("<e3>", "<i1>")]).await;
    let next =
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await.unwrap().unwrap().unwrap();
    assert_eq!(next, (3, "<e3>".to_owned()));
}

/// docs/events.md#following-the-log: closing the store ends a waiting follower with `Closed`.
pub async fn event_follower_ends_with_closed_when_the_store_closes<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    persist(&*h.store, vec![Operation::SaveEvent(event("<e0>", "A"))]).await;
    let mut follower = h.store.load_events_by_type(&["EventStub[TypeA]"], 0).await.unwrap().follow();
    assert_eq!(follower.next().await.unwrap().offset, 0);
    let waiting = tokio::spawn(async move {
        let first = follower.next().await.map(|e| e.offset);
        (first, follower.next().await.map(|e| e.offset))
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    h.store.close().await.unwrap();
    let started = std::time::Instant::now();
    let (first, again) =
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await.unwrap().unwrap();
    assert!(matches!(first, Err(Error::Closed)), "{first:?}");
    assert!(matches!(again, Err(Error::Closed)), "{again:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "ended after {:?}", started.elapsed());
}

/// docs/events.md#reading-beside-the-engine: 16 writers append through the store while 3
/// followers of a reader, opened through another provider value beside it (no lock), follow the
/// whole log; each sees offsets 0..N-1 exactly once, in order, whether it is woken or polls.
pub async fn event_reader_followers_see_every_offset_once_in_order<B: Backend>(b: &B) {
    const WRITERS: usize = 16;
    const EACH: usize = 20;
    const TOTAL: u64 = (WRITERS * EACH) as u64;
    let h = Harness::open(b).await;
    let beside = b.provider().await;
    let reader = Arc::new(beside.open_reader(DEFAULT_APP_KEY).await.expect("open a reader beside the store"));
    let follow = |reader: Arc<<B::Provider as Provider>::Reader>| async move {
        let cursor = reader.load_events_by_type(&["EventStub[TypeA]", "EventStub[TypeB]"], 0).await.unwrap();
        let mut follower = cursor.follow().with_poll_cap(std::time::Duration::from_millis(50));
        let mut offsets = Vec::new();
        while offsets.len() < TOTAL as usize {
            offsets.push(follower.next().await.unwrap().offset);
        }
        offsets
    };
    let early = tokio::spawn(follow(Arc::clone(&reader)));
    let writers = spawn_writers(&h.store, WRITERS, EACH);
    let during = tokio::spawn(follow(Arc::clone(&reader)));
    for writer in writers {
        writer.await.unwrap();
    }
    let late = tokio::spawn(follow(Arc::clone(&reader)));
    for (name, follower) in [("early", early), ("during", during), ("late", late)] {
        let offsets = tokio::time::timeout(std::time::Duration::from_secs(20), follower)
            .await
            .unwrap_or_else(|_| panic!("the {name} follower of the reader stalled"))
            .unwrap();
        assert_eq!(offsets, (0..TOTAL).collect::<Vec<_>>(), "{name} follower of the reader");
    }
    assert_eq!(reader.next_event_offset().await.unwrap(), TOTAL);
    reader.close().await.unwrap();
    h.close().await;
}

/// docs/events.md#reading-beside-the-engine: a reader holds no lock (the store opens, closes and
/// reopens while it is open, and it sees what each store wrote); closing it ends its waiting
/// followers with `Closed`, and a second close says `Closed`.
pub async fn event_reader_takes_no_lock_and_ends_followers_when_closed<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    persist(&*h.store, vec![Operation::SaveEvent(event("<e0>", "A"))]).await;
    let beside = b.provider().await;
    let reader = Arc::new(beside.open_reader(DEFAULT_APP_KEY).await.unwrap());
    h.store.close().await.unwrap();
    let store = h.provider.open(DEFAULT_APP_KEY).await.expect("a reader holds no lock");
    persist(&store, vec![Operation::SaveEvent(event("<e1>", "B"))]).await;
    let mut follower =
        reader.load_events_by_type(&["EventStub[TypeA]", "EventStub[TypeB]"], 0).await.unwrap().follow();
    assert_eq!(follower.next().await.unwrap().envelope.message_id, "<e0>");
    assert_eq!(follower.next().await.unwrap().envelope.message_id, "<e1>");
    let waiting = tokio::spawn(async move { follower.next().await.map(|e| e.offset) });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(!waiting.is_finished(), "nothing new to read yet");
    reader.close().await.unwrap();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await.unwrap().unwrap();
    assert!(matches!(ended, Err(Error::Closed)), "{ended:?}");
    assert!(matches!(reader.close().await, Err(Error::Closed)));
    assert!(matches!(reader.next_event_offset().await, Err(Error::Closed)));
    store.close().await.unwrap();
}

/// docs/events.md#reading-events: `load_all_events` yields every event from its offset on,
/// whatever its type or source, and its follower goes on with new ones; a store and a reader
/// answer alike.
pub async fn event_all_events_reads_and_follows_the_whole_log<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let batch =
        (0..5).map(|i| Operation::SaveEvent(event(&format!("<e{i}>"), if i % 2 == 0 { "A" } else { "B" })));
    persist(&*h.store, batch.collect()).await;
    let ids = |events: Vec<Event>| {
        events.into_iter().map(|e| (e.offset, e.envelope.message_id)).collect::<Vec<_>>()
    };
    let mut cursor = h.store.load_all_events(2).await.unwrap();
    let mut read = Vec::new();
    while let Some(e) = cursor.next().await.unwrap() {
        read.push(e);
    }
    let expected: Vec<_> = (2..5).map(|i| (i, format!("<e{i}>"))).collect();
    assert_eq!(ids(read), expected);
    let reader = b.provider().await.open_reader(DEFAULT_APP_KEY).await.unwrap();
    let mut follower =
        reader.load_all_events(4).await.unwrap().follow().with_poll_cap(std::time::Duration::from_millis(20));
    assert_eq!(follower.next().await.unwrap().offset, 4);
    persist(&*h.store, vec![Operation::SaveEvent(event("<e5>", "C"))]).await;
    let next =
        tokio::time::timeout(std::time::Duration::from_secs(5), follower.next()).await.unwrap().unwrap();
    assert_eq!((next.offset, next.envelope.message_id.as_str()), (5, "<e5>"));
    let mut beyond = reader.load_all_events(100).await.unwrap();
    assert!(beyond.next().await.unwrap().is_none(), "nothing from beyond the end");
    reader.close().await.unwrap();
    h.close().await;
}

/// docs/events.md#following-the-log: a store is its application's only writer, so its commits
/// wake its followers and they never poll: waiting through 500 ms with nothing written costs no
/// query (polling would have looked about 7 times).
pub async fn event_follower_of_a_store_does_not_poll_while_idle<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    persist(&*h.store, vec![Operation::SaveEvent(event("<e0>", "A"))]).await;
    let mut follower = h.store.load_all_events(0).await.unwrap().follow();
    assert_eq!(follower.next().await.unwrap().offset, 0);
    let before = follower.looks();
    let waiting = tokio::spawn(async move {
        let next = follower.next().await.map(|e| e.offset);
        (next, follower)
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    persist(&*h.store, vec![Operation::SaveEvent(event("<e1>", "A"))]).await;
    let (next, follower) =
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await.unwrap().unwrap();
    assert_eq!(next.unwrap(), 1);
    // One look that found nothing, one after the wake-up (and at most one for a spurious one).
    let looks = follower.looks() - before;
    assert!(looks <= 3, "the follower looked {looks} times in 500 ms of silence");
    h.close().await;
}

/// docs/events.md#cursors: a whole-log cursor over more than a few pages (its pages grow and are
/// fetched ahead) hands out every offset exactly once, in order, even when `next` futures are
/// dropped part-way and the log grows while it reads (the new events come before the end is
/// reported, or on the look after it, which must find everything committed before it).
pub async fn event_whole_log_cursor_reads_ahead_without_gaps<B: Backend>(b: &B) {
    const FIRST: u64 = 3000;
    const MORE: u64 = 300;
    let h = Harness::open(b).await;
    for chunk in 0..FIRST / 500 {
        let batch = (0..500).map(|i| Operation::SaveEvent(event(&format!("<e{}>", chunk * 500 + i), "A")));
        persist(&*h.store, batch.collect()).await;
    }
    let mut cursor = h.store.load_all_events(0).await.unwrap();
    let mut offsets = Vec::new();
    let mut calls = 0u64;
    let mut ends = 0;
    while ends < 2 {
        calls += 1;
        // Now and then a `next` is dropped after its first poll: nothing may be lost or repeated.
        let next = if calls.is_multiple_of(7) {
            match poll_once(cursor.next()).await {
                Some(next) => next,
                None => continue,
            }
        } else {
            cursor.next().await
        };
        match next.unwrap() {
            Some(e) => offsets.push(e.offset),
            None => ends += 1,
        }
        if offsets.len() as u64 == 2000 && ends == 0 {
            let batch = (0..MORE).map(|i| Operation::SaveEvent(event(&format!("<more{i}>"), "B")));
            persist(&*h.store, batch.collect()).await;
        }
    }
    let expected: Vec<u64> = (0..FIRST + MORE).collect();
    assert!(offsets == expected, "read {} offsets, not 0..{}", offsets.len(), FIRST + MORE);
    h.close().await;
}
