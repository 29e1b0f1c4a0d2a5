//! Provider and data-store lifecycle: open, exclusive locking, close, reads after close,
//! durability, per-application isolation, cancellation and `DataStoreSet`.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use vellum_core::{
    AggregateMetaData, AggregateRepository, Batch, DataStore, DataStoreSet, Error, ErrorKind, Event,
    EventRepository, Identity, OffsetRepository, Operation, Packet, PersistResult, Persister,
    ProcessInstance, ProcessRepository, Provider, QueueMessage, QueueRepository, Result,
};

use crate::batch::Probe;
use crate::fixtures::{
    DEFAULT_APP_KEY, DEFAULT_HANDLER_KEY, aggregate, by_source, by_type, command, event, expect_conflict,
    hours, now, persist, poll_once, process, queue, queue_message, save_offset, timeout,
};
use crate::harness::{Backend, Harness};

#[doc(hidden)]
#[macro_export]
macro_rules! __provider_tests {
    ($make:expr $(, $(#[$attr:meta])*)?) => {
        $crate::__tests!($make, [$($(#[$attr])*)?];
            provider::provider_open_two_app_keys_yields_distinct_stores,
            provider::provider_reopen_after_close,
            provider::provider_close_open_store_succeeds,
            provider::provider_second_close_returns_closed,
            provider::provider_persist_after_close_returns_closed,
            provider::provider_open_of_open_key_returns_locked,
            provider::provider_open_through_second_provider_returns_locked,
            provider::provider_close_releases_lock_and_keeps_data,
            provider::provider_every_operation_after_close_returns_closed,
            provider::provider_invalid_batch_after_close_is_an_error,
            provider::provider_data_survives_reopen_on_new_provider,
            provider::provider_app_keys_are_isolated,
            provider::provider_app_keys_are_isolated_across_provider_values,
            provider::provider_odd_app_keys_work_and_are_isolated,
            provider::provider_hostile_keys_and_data_round_trip_verbatim,
            provider::provider_dropped_persists_are_all_or_nothing,
            provider::provider_dropped_reads_lose_nothing,
            provider::provider_persist_racing_close_is_all_or_nothing,
            provider::provider_data_store_set_get_opens_and_caches,
            provider::provider_data_store_set_close_closes_all_and_set_is_reusable,
            provider::provider_data_store_set_open_error_is_returned_not_cached,
            provider::provider_data_store_set_close_reports_every_error,
            provider::provider_errors_say_what_to_do,
            provider::provider_open_wait_takes_the_store_when_the_holder_closes,
            provider::provider_open_wait_gives_up_with_locked_at_its_timeout,
            provider::provider_dropped_open_wait_holds_nothing,
        );
    };
}

/// How long an open may take before "promptly" (docs/locking.md#one-engine-per-application-store)
/// is considered broken.
const PROMPTLY: Duration = Duration::from_secs(5);

const OTHER_APP_KEY: &str = "<other-app-key>";
const SOURCE: &str = "<source-app-key>";
const PROCESS_KEY: &str = "<process-key>";

/// Opens `app_key`, failing the test if the open does not finish within [`PROMPTLY`].
async fn open_promptly<P: Provider>(provider: &P, app_key: &str) -> Result<P::Store> {
    tokio::time::timeout(PROMPTLY, provider.open(app_key))
        .await
        .unwrap_or_else(|_| panic!("open({app_key:?}) did not return within {PROMPTLY:?} (D8: promptly)"))
}

/// Opens `app_key`, which must succeed promptly.
async fn open<P: Provider>(provider: &P, app_key: &str) -> P::Store {
    open_promptly(provider, app_key).await.unwrap_or_else(|e| panic!("open({app_key:?}) failed: {e}"))
}

/// Opens `app_key`, which must fail promptly with exactly `Locked` naming the key.
async fn expect_locked<P: Provider>(provider: &P, app_key: &str) {
    match open_promptly(provider, app_key).await {
        Err(Error::Locked { app_key: got }) => assert_eq!(got, app_key, "Locked must name the key"),
        Err(e) => panic!("second open of {app_key:?}: expected Locked, got {e:?}"),
        Ok(_) => panic!("second open of {app_key:?} succeeded while the key is open (D8)"),
    }
}

#[allow(clippy::needless_pass_by_value)]
fn expect_closed<T: Debug>(what: &str, result: Result<T>) {
    assert!(matches!(result, Err(Error::Closed)), "{what} after close: expected Closed, got {result:?}");
}

fn packet(tag: &str) -> Packet {
    Packet::new("<media-type>", format!("<data-{tag}>"))
}

/// 1. Two app keys open on one provider at once; the stores are distinct and report their keys.
pub async fn provider_open_two_app_keys_yields_distinct_stores<B: Backend>(b: &B) {
    let provider = b.provider().await;
    let first = open(&provider, DEFAULT_APP_KEY).await;
    let second = open(&provider, OTHER_APP_KEY).await;
    assert_eq!(first.app_key(), DEFAULT_APP_KEY);
    assert_eq!(second.app_key(), OTHER_APP_KEY);
    persist(&first, vec![save_offset(SOURCE, 0, 1)]).await;
    assert_eq!(first.load_offset(SOURCE).await.unwrap(), 1);
    assert_eq!(second.load_offset(SOURCE).await.unwrap(), 0);
    first.close().await.unwrap();
    second.close().await.unwrap();
}

/// 2. A key can be opened again after its store is closed, and the new store closes cleanly.
pub async fn provider_reopen_after_close<B: Backend>(b: &B) {
    let provider = b.provider().await;
    let store = open(&provider, DEFAULT_APP_KEY).await;
    store.close().await.unwrap();
    let store = open(&provider, DEFAULT_APP_KEY).await;
    assert_eq!(store.app_key(), DEFAULT_APP_KEY);
    store.close().await.unwrap();
    let store = open(&provider, DEFAULT_APP_KEY).await;
    store.close().await.unwrap();
}

/// 3. `close()` on an open store succeeds.
pub async fn provider_close_open_store_succeeds<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    h.store.close().await.unwrap();
}

/// docs/close-and-cancellation.md#closed-stores: a second `close()` returns exactly `Closed`, as
/// does a third.
pub async fn provider_second_close_returns_closed<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    h.store.close().await.unwrap();
    expect_closed("second close", h.store.close().await);
    expect_closed("third close", h.store.close().await);
}

/// docs/close-and-cancellation.md#closed-stores:
/// `persist([SaveOffset{DefaultAppKey, 0→1}])` after close returns exactly `Closed` and stores
/// nothing.
pub async fn provider_persist_after_close_returns_closed<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    h.store.close().await.unwrap();
    let result = h.store.persist(Batch::from(vec![save_offset(DEFAULT_APP_KEY, 0, 1)])).await;
    expect_closed("persist", result);
    let store = open(&h.provider, DEFAULT_APP_KEY).await;
    assert_eq!(store.load_offset(DEFAULT_APP_KEY).await.unwrap(), 0);
    store.close().await.unwrap();
}

/// docs/locking.md#one-engine-per-application-store: a second open of an open key on the same
/// provider returns `Locked` promptly, every time, without disturbing the store that holds the
/// key; other keys still open.
pub async fn provider_open_of_open_key_returns_locked<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    expect_locked(&h.provider, DEFAULT_APP_KEY).await;
    expect_locked(&h.provider, DEFAULT_APP_KEY).await;
    let other = open(&h.provider, OTHER_APP_KEY).await;
    expect_locked(&h.provider, OTHER_APP_KEY).await;
    persist(&*h.store, vec![save_offset(SOURCE, 0, 1)]).await;
    assert_eq!(h.store.load_offset(SOURCE).await.unwrap(), 1);
    other.close().await.unwrap();
    expect_locked(&h.provider, DEFAULT_APP_KEY).await;
    h.close().await;
}

/// docs/locking.md#one-engine-per-application-store: an open key cannot be opened through a
/// second provider value over the same storage either (in both directions), promptly.
pub async fn provider_open_through_second_provider_returns_locked<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    if b.providers_share_storage() {
        let second = b.provider().await;
        expect_locked(&second, DEFAULT_APP_KEY).await;
        let other = open(&second, OTHER_APP_KEY).await;
        expect_locked(&h.provider, OTHER_APP_KEY).await;
        let third = b.provider().await;
        expect_locked(&third, OTHER_APP_KEY).await;
        expect_locked(&third, DEFAULT_APP_KEY).await;
        other.close().await.unwrap();
    }
    persist(&*h.store, vec![save_offset(SOURCE, 0, 1)]).await;
    h.close().await;
}

/// docs/close-and-cancellation.md#close: closing releases the lock: the key opens again (through
/// another provider value when they share storage) and sees the data; while that store is open
/// the key is locked again.
pub async fn provider_close_releases_lock_and_keeps_data<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    persist(&*h.store, vec![save_offset(SOURCE, 0, 7), Operation::SaveEvent(event("<message-0>", "A"))])
        .await;
    h.store.close().await.unwrap();

    let second = if b.providers_share_storage() { b.provider().await } else { h.provider };
    let store = open(&second, DEFAULT_APP_KEY).await;
    assert_eq!(store.load_offset(SOURCE).await.unwrap(), 7);
    assert_eq!(store.next_event_offset().await.unwrap(), 1);
    expect_locked(&second, DEFAULT_APP_KEY).await;
    if b.providers_share_storage() {
        expect_locked(&b.provider().await, DEFAULT_APP_KEY).await;
    }
    store.close().await.unwrap();
    let store = open(&b.provider().await, DEFAULT_APP_KEY).await;
    store.close().await.unwrap();
}

/// docs/close-and-cancellation.md#closed-stores: after close, every operation returns `Closed`:
/// persist (even of an empty batch), each read, a step of an event cursor obtained before the
/// close, and `close` itself. The data is intact when the key is reopened.
pub async fn provider_every_operation_after_close_returns_closed<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let at = now();
    persist(
        &*h.store,
        vec![
            Operation::SaveEvent(event("<message-0>", "A")),
            Operation::SaveAggregateMetaData(aggregate(DEFAULT_HANDLER_KEY, "<instance>", 0)),
            Operation::SaveProcessInstance(process(PROCESS_KEY, "<instance>", 0, packet("p"))),
            Operation::SaveQueueMessage(queue_message(command("<command-0>", "A"), at)),
            save_offset(SOURCE, 0, 3),
        ],
    )
    .await;
    let by_type_cursor = h.store.load_events_by_type(&["EventStub[TypeA]"], 0).await.unwrap();
    let by_source_cursor = h.store.load_events_by_source(DEFAULT_HANDLER_KEY, "<instance>").await.unwrap();
    h.store.close().await.unwrap();

    let s = &*h.store;
    expect_closed("persist", s.persist(Batch::from(vec![save_offset(SOURCE, 3, 4)])).await);
    expect_closed("persist of an empty batch", s.persist(Batch::new()).await);
    expect_closed(
        "load_aggregate_meta_data",
        s.load_aggregate_meta_data(DEFAULT_HANDLER_KEY, "<instance>").await,
    );
    expect_closed("load_process_instance", s.load_process_instance(PROCESS_KEY, "<instance>").await);
    expect_closed("load_offset", s.load_offset(SOURCE).await);
    expect_closed("next_event_offset", s.next_event_offset().await);
    expect_closed("load_events_by_type", s.load_events_by_type(&["EventStub[TypeA]"], 0).await.map(|_| ()));
    expect_closed(
        "load_events_by_source",
        s.load_events_by_source(DEFAULT_HANDLER_KEY, "<instance>").await.map(|_| ()),
    );
    expect_closed("load_queue_messages", s.load_queue_messages(10).await);
    for mut cursor in [by_type_cursor, by_source_cursor] {
        expect_closed("EventCursor::next", cursor.next().await);
    }
    expect_closed("close", s.close().await);

    let store = open(&h.provider, DEFAULT_APP_KEY).await;
    assert_eq!(store.next_event_offset().await.unwrap(), 1);
    assert_eq!(store.load_offset(SOURCE).await.unwrap(), 3);
    assert_eq!(store.load_aggregate_meta_data(DEFAULT_HANDLER_KEY, "<instance>").await.unwrap().revision, 1);
    assert_eq!(store.load_process_instance(PROCESS_KEY, "<instance>").await.unwrap().revision, 1);
    assert_eq!(queue(&store, 10).await.len(), 1);
    store.close().await.unwrap();
}

/// docs/close-and-cancellation.md#closed-stores: an invalid batch on a closed store is an error
/// (`InvalidBatch` or `Closed`: the order of the two checks is free), never a panic or a commit.
pub async fn provider_invalid_batch_after_close_is_an_error<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    h.store.close().await.unwrap();
    let result = h
        .store
        .persist(Batch::from(vec![
            save_offset(SOURCE, 0, 1),
            Operation::SaveEvent(event("<message-0>", "A")),
            save_offset(SOURCE, 0, 2),
        ]))
        .await;
    assert!(
        matches!(result, Err(Error::InvalidBatch(_) | Error::Closed)),
        "expected InvalidBatch or Closed, got {result:?}"
    );
    let store = open(&h.provider, DEFAULT_APP_KEY).await;
    assert_eq!(store.load_offset(SOURCE).await.unwrap(), 0);
    assert_eq!(store.next_event_offset().await.unwrap(), 0);
    store.close().await.unwrap();
}

const TYPES: &[&str] = &["EventStub[TypeA]", "EventStub[TypeB]", "CommandStub[TypeA]", "TimeoutStub[TypeT]"];

/// Data of every kind, with the awkward values a lossy encoding would break: envelopes with a
/// source site, an absent and an empty source handler, binary data; empty and non-empty packets;
/// a timeout; updated queue messages; revisions above 1; offsets up to `u64::MAX`.
async fn write_every_kind<S: DataStore>(store: &S) {
    let at = now();
    let mut with_site = event("<event-site>", "A");
    with_site.source_site = Some(Identity::new("<site-name>", "<site-key>"));
    let mut no_handler = event("<event-no-handler>", "B");
    no_handler.source_handler = None;
    no_handler.source_instance_id = String::new();
    let mut empty_handler = event("<event-empty-handler>", "B");
    empty_handler.source_handler = Some(Identity::default());
    empty_handler.source_instance_id = String::new();
    empty_handler.data = vec![0, 255, 0, 1];
    empty_handler.description = String::new();
    persist(
        store,
        vec![
            Operation::SaveEvent(with_site),
            Operation::SaveEvent(no_handler),
            Operation::SaveEvent(empty_handler),
            Operation::SaveAggregateMetaData(AggregateMetaData {
                last_event_id: "<event-site>".into(),
                ..aggregate(DEFAULT_HANDLER_KEY, "<instance>", 0)
            }),
            Operation::SaveProcessInstance(process(PROCESS_KEY, "<instance>", 0, packet("p"))),
            Operation::SaveProcessInstance(process(PROCESS_KEY, "<instance-empty>", 0, Packet::default())),
            Operation::SaveQueueMessage(queue_message(command("<command>", "A"), hours(at, -2))),
            Operation::SaveQueueMessage(queue_message(
                timeout("<timeout>", PROCESS_KEY, "<instance>", hours(at, 1)),
                hours(at, 1),
            )),
            save_offset(SOURCE, 0, 5),
            save_offset("<max-source>", 0, u64::MAX),
        ],
    )
    .await;
    persist(
        store,
        vec![
            Operation::SaveEvent(event("<event-late>", "A")),
            Operation::SaveAggregateMetaData(aggregate(DEFAULT_HANDLER_KEY, "<instance>", 1)),
            Operation::SaveProcessInstance(process(PROCESS_KEY, "<instance>", 1, packet("p2"))),
            Operation::SaveQueueMessage(QueueMessage {
                revision: 1,
                failure_count: 3,
                ..queue_message(command("<command>", "A"), hours(at, 2))
            }),
            save_offset(SOURCE, 5, 6),
        ],
    )
    .await;
}

const EVERY_KIND: Probe<'static> = Probe {
    instances: &[
        (DEFAULT_HANDLER_KEY, "<instance>"),
        (PROCESS_KEY, "<instance>"),
        (PROCESS_KEY, "<instance-empty>"),
    ],
    types: TYPES,
    sources: &[SOURCE, "<max-source>", "<never>"],
};

/// Durability (docs/close-and-cancellation.md#reopening): data of every kind survives close and a
/// reopen through a NEW provider value, identically, and the store carries on from it (next
/// event offset, revisions, queue revisions, offsets).
pub async fn provider_data_survives_reopen_on_new_provider<B: Backend>(b: &B) {
    if !b.providers_share_storage() {
        return;
    }
    let h = Harness::open(b).await;
    write_every_kind(&*h.store).await;
    let before = EVERY_KIND.snapshot(&*h.store).await;
    let handler_events = by_source(&*h.store, DEFAULT_HANDLER_KEY, "<instance>").await;
    assert_eq!(handler_events.len(), 2);
    h.close().await;

    let provider = b.provider().await;
    let store = open(&provider, DEFAULT_APP_KEY).await;
    assert_eq!(EVERY_KIND.snapshot(&store).await, before);
    assert_eq!(by_source(&store, DEFAULT_HANDLER_KEY, "<instance>").await, handler_events);
    assert_eq!(by_source(&store, "", "").await.len(), 2, "absent and empty handlers both read as \"\"");

    let result = persist(
        &store,
        vec![
            Operation::SaveEvent(event("<event-after-reopen>", "A")),
            Operation::SaveAggregateMetaData(aggregate(DEFAULT_HANDLER_KEY, "<instance>", 2)),
            Operation::SaveProcessInstance(process(PROCESS_KEY, "<instance>", 2, Packet::default())),
            Operation::RemoveQueueMessage(QueueMessage {
                revision: 2,
                ..queue_message(command("<command>", "A"), now())
            }),
            save_offset(SOURCE, 6, 7),
        ],
    )
    .await;
    assert_eq!(result.event_offsets, HashMap::from([("<event-after-reopen>".to_owned(), 4)]));
    let q = queue(&store, 10).await;
    assert_eq!(q.iter().map(QueueMessage::id).collect::<Vec<_>>(), ["<timeout>"]);
    store.close().await.unwrap();
}

/// Stores a bit of everything in `a` (including an event whose envelope names `b`'s app key as
/// its source application, and an offset keyed by `b`'s app key) and checks `b` sees none of it;
/// then stores the same IDs and keys in `b` (which must not conflict or count as duplicate
/// events) and checks `a` is unchanged (docs/events.md#isolation-per-application).
async fn check_isolation<S: DataStore>(a: &S, b: &S) {
    let at = now();
    let mut foreign = event("<message-1>", "A");
    foreign.source_application = Some(Identity::new("<other-app>", b.app_key()));
    let ops = |revision: u64| {
        vec![
            Operation::SaveEvent(event("<message-0>", "A")),
            Operation::SaveEvent(foreign.clone()),
            Operation::SaveAggregateMetaData(aggregate(DEFAULT_HANDLER_KEY, "<instance>", revision)),
            Operation::SaveProcessInstance(process(PROCESS_KEY, "<instance>", revision, packet("p"))),
            Operation::SaveQueueMessage(queue_message(command("<command>", "A"), at)),
            Operation::SaveQueueMessage(queue_message(
                timeout("<timeout>", PROCESS_KEY, "<instance>", hours(at, 1)),
                hours(at, 1),
            )),
            save_offset(SOURCE, 0, 5),
            save_offset(b.app_key(), 0, 3),
            save_offset(a.app_key(), 0, 4),
        ]
    };
    let result = persist(a, ops(0)).await;
    assert_eq!(result.event_offsets, HashMap::from([("<message-0>".into(), 0), ("<message-1>".into(), 1)]));
    persist(a, vec![Operation::SaveAggregateMetaData(aggregate(DEFAULT_HANDLER_KEY, "<instance>", 1))]).await;

    let probe = Probe {
        instances: &[(DEFAULT_HANDLER_KEY, "<instance>"), (PROCESS_KEY, "<instance>")],
        types: TYPES,
        sources: &[SOURCE, a.app_key(), b.app_key()],
    };
    let a_before = probe.snapshot(a).await;

    // b sees nothing of a.
    assert_eq!(b.next_event_offset().await.unwrap(), 0);
    assert!(by_type(b, TYPES, 0).await.is_empty());
    assert!(by_source(b, DEFAULT_HANDLER_KEY, "<instance>").await.is_empty());
    assert!(queue(b, 10).await.is_empty());
    assert_eq!(
        b.load_aggregate_meta_data(DEFAULT_HANDLER_KEY, "<instance>").await.unwrap(),
        AggregateMetaData::new(DEFAULT_HANDLER_KEY, "<instance>")
    );
    assert_eq!(
        b.load_process_instance(PROCESS_KEY, "<instance>").await.unwrap(),
        ProcessInstance::new(PROCESS_KEY, "<instance>")
    );
    for source in [SOURCE, a.app_key(), b.app_key()] {
        assert_eq!(b.load_offset(source).await.unwrap(), 0, "offset of {source:?} leaked");
    }

    // b stores the same IDs and keys from scratch: its own revisions, offsets from 0.
    let mut b_ops = ops(0);
    b_ops.rotate_left(1); // <message-1> (naming b's key) first, so b's offsets differ from a's.
    let result = persist(b, b_ops).await;
    assert_eq!(result.event_offsets, HashMap::from([("<message-1>".into(), 0), ("<message-0>".into(), 1)]));
    persist(b, vec![Operation::SaveEvent(event("<message-2>", "B"))]).await;
    assert_eq!(b.next_event_offset().await.unwrap(), 3);
    assert_eq!(b.load_aggregate_meta_data(DEFAULT_HANDLER_KEY, "<instance>").await.unwrap().revision, 1);
    // Removing b's process cascades to b's timeout only.
    persist(
        b,
        vec![Operation::RemoveProcessInstance(process(PROCESS_KEY, "<instance>", 1, Packet::default()))],
    )
    .await;
    assert_eq!(queue(b, 10).await.len(), 1);
    persist(b, vec![save_offset(SOURCE, 5, 50)]).await;

    assert_eq!(probe.snapshot(a).await, a_before, "a changed by writes to b");
    assert_eq!(a.next_event_offset().await.unwrap(), 2);
    assert_eq!(queue(a, 10).await.len(), 2);
    let b_events: Vec<(u64, String)> =
        by_type(b, TYPES, 0).await.iter().map(|e| (e.offset, e.id().to_owned())).collect();
    assert_eq!(
        b_events,
        [(0, "<message-1>".to_owned()), (1, "<message-0>".to_owned()), (2, "<message-2>".to_owned())]
    );
}

/// docs/events.md#isolation-per-application: two app keys on one provider never see each other's
/// events, queue, offsets, aggregates or processes, even for an event naming the other app as its
/// source; each event log counts and offsets from 0 on its own.
pub async fn provider_app_keys_are_isolated<B: Backend>(b: &B) {
    let provider = b.provider().await;
    let a = open(&provider, DEFAULT_APP_KEY).await;
    let other = open(&provider, OTHER_APP_KEY).await;
    check_isolation(&a, &other).await;
    a.close().await.unwrap();
    other.close().await.unwrap();
}

/// docs/events.md#isolation-per-application: the same isolation holds for stores opened through
/// two provider values over the same storage, and after both are reopened.
pub async fn provider_app_keys_are_isolated_across_provider_values<B: Backend>(b: &B) {
    if !b.providers_share_storage() {
        return;
    }
    let first = b.provider().await;
    let second = b.provider().await;
    let a = open(&first, DEFAULT_APP_KEY).await;
    let other = open(&second, OTHER_APP_KEY).await;
    check_isolation(&a, &other).await;
    a.close().await.unwrap();
    other.close().await.unwrap();

    let a = open(&second, DEFAULT_APP_KEY).await;
    let other = open(&first, OTHER_APP_KEY).await;
    assert_eq!(a.next_event_offset().await.unwrap(), 2);
    assert_eq!(other.next_event_offset().await.unwrap(), 3);
    assert_eq!(a.load_offset(SOURCE).await.unwrap(), 5);
    assert_eq!(other.load_offset(SOURCE).await.unwrap(), 50);
    a.close().await.unwrap();
    other.close().await.unwrap();
}

/// Strings that break naive SQL or string handling: quotes, statement separators, `LIKE`
/// wildcards, escapes, placeholders, backticks, unicode, trailing blanks, case. (No NUL:
/// PostgreSQL text cannot hold it; dialects that can test it themselves.)
const HOSTILE: [&str; 17] = [
    "",
    "'",
    "\"",
    "''; DROP TABLE vellum_event; --",
    "\"quoted\"",
    "a;b;c",
    "%",
    "_",
    "%_%\\",
    "\\'",
    "$1",
    "`backtick`",
    "ünïcødé 应用 🚀",
    " trailing ",
    "a ",
    "A",
    "a",
];

/// Keys and data that try to break storage round-trip verbatim as app keys, handler keys,
/// instance and message IDs, portable names, media types and source keys, with 1 MiB payloads;
/// wildcards and case are not special (docs/events.md#envelopes-are-stored-exactly,
/// docs/events.md#isolation-per-application).
pub async fn provider_hostile_keys_and_data_round_trip_verbatim<B: Backend>(b: &B) {
    let provider = b.provider().await;
    let blob: Vec<u8> = (0..1024 * 1024).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let at = SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
    for (n, key) in HOSTILE.iter().enumerate() {
        let store = provider.open(&format!("{key}#{n}")).await.unwrap();
        let mut env = event(key, key);
        env.portable_name = (*key).to_owned();
        env.source_handler = Some(Identity::new(*key, *key));
        env.source_instance_id = (*key).to_owned();
        env.description = (*key).to_owned();
        env.data.clone_from(&blob);
        let mut queued = command(&format!("q{key}"), key);
        queued.data.clone_from(&blob);
        let ops = vec![
            Operation::SaveEvent(env.clone()),
            Operation::SaveAggregateMetaData(AggregateMetaData {
                last_event_id: (*key).to_owned(),
                ..AggregateMetaData::new(*key, *key)
            }),
            Operation::SaveProcessInstance(process(
                &format!("p{key}"),
                key,
                0,
                Packet::new(*key, blob.clone()),
            )),
            Operation::SaveQueueMessage(queue_message(queued.clone(), at)),
            save_offset(key, 0, 42),
        ];
        persist(&store, ops).await;

        let events = by_type(&store, &[key], 0).await;
        assert_eq!(events.len(), 1, "{key:?}");
        assert_eq!(events[0].envelope, env, "{key:?}");
        assert_eq!(by_source(&store, key, key).await.len(), 1, "{key:?}");
        let md = store.load_aggregate_meta_data(key, key).await.unwrap();
        assert_eq!((md.revision, md.last_event_id.as_str()), (1, *key));
        let p = store.load_process_instance(&format!("p{key}"), key).await.unwrap();
        assert_eq!((p.revision, p.packet.media_type.as_str()), (1, *key));
        assert_eq!(p.packet.data, blob);
        let q = queue(&store, 10).await;
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].envelope, queued);
        assert_eq!(q[0].next_attempt_at, at);
        assert_eq!(store.load_offset(key).await.unwrap(), 42);
        // Wildcards and case are not special: near-misses find nothing.
        for other in ["%", "_", "A", "a"] {
            if other != *key {
                assert_eq!(store.load_offset(other).await.unwrap(), 0, "{other:?} vs {key:?}");
            }
        }
        store.close().await.unwrap();
    }
}

/// docs/batches.md#identifiers: app keys are opaque strings. The empty key, unicode, quotes and
/// semicolons, SQL wildcards and keys that are prefixes of each other open, lock, persist and
/// read back, each isolated from the others (docs/events.md#isolation-per-application), also
/// after a reopen through a new provider value.
pub async fn provider_odd_app_keys_work_and_are_isolated<B: Backend>(b: &B) {
    let keys = ["", "应用-🚀", "a'b\"c;--", "%", "_", "a", "a "];
    let at = now();
    let provider = b.provider().await;
    let mut stores = Vec::new();
    for (i, &key) in keys.iter().enumerate() {
        let store = open(&provider, key).await;
        assert_eq!(store.app_key(), key);
        let n = i as u64 + 1;
        let mut ops: Vec<Operation> =
            (0..n).map(|j| Operation::SaveEvent(event(&format!("<message-{j}>"), "A"))).collect();
        ops.push(save_offset(SOURCE, 0, n * 10));
        ops.push(Operation::SaveAggregateMetaData(AggregateMetaData {
            last_event_id: key.to_owned(),
            ..aggregate(DEFAULT_HANDLER_KEY, "<instance>", 0)
        }));
        ops.push(Operation::SaveQueueMessage(QueueMessage {
            failure_count: n,
            ..queue_message(command("<command>", "A"), at)
        }));
        persist(&store, ops).await;
        stores.push(store);
    }
    expect_locked(&provider, "").await;
    expect_locked(&provider, "应用-🚀").await;

    let check = |stores: Vec<<B::Provider as Provider>::Store>| async move {
        for (i, (store, &key)) in stores.iter().zip(keys.iter()).enumerate() {
            let n = i as u64 + 1;
            assert_eq!(store.next_event_offset().await.unwrap(), n, "events of {key:?}");
            assert_eq!(by_type(store, TYPES, 0).await.len() as u64, n, "events of {key:?}");
            assert_eq!(store.load_offset(SOURCE).await.unwrap(), n * 10, "offset of {key:?}");
            let md = store.load_aggregate_meta_data(DEFAULT_HANDLER_KEY, "<instance>").await.unwrap();
            assert_eq!((md.revision, md.last_event_id.as_str()), (1, key), "aggregate of {key:?}");
            let q = queue(store, 10).await;
            assert_eq!(q.len(), 1, "queue of {key:?}");
            assert_eq!(q[0].failure_count, n, "queue of {key:?}");
            store.close().await.unwrap();
        }
    };
    check(stores).await;

    let provider = if b.providers_share_storage() { b.provider().await } else { provider };
    let mut stores = Vec::new();
    for &key in &keys {
        stores.push(open(&provider, key).await);
    }
    check(stores).await;
}

/// A batch whose four effects are correlated by `i`, so a partial commit is detectable.
fn correlated(i: usize, at: SystemTime) -> Vec<Operation> {
    let id = format!("<batch-{i:03}>");
    vec![
        Operation::SaveEvent(event(&id, "A")),
        Operation::SaveAggregateMetaData(AggregateMetaData {
            last_event_id: id.clone(),
            ..aggregate("<correlated>", &id, 0)
        }),
        save_offset(&id, 0, i as u64 + 1),
        Operation::SaveQueueMessage(queue_message(command(&id, "A"), at)),
    ]
}

/// Checks that each of the `n` correlated batches is fully present or fully absent and that the
/// event log is dense; returns which batches are present.
async fn correlated_presence<S: DataStore>(store: &S, n: usize) -> Vec<bool> {
    let events = by_type(store, &["EventStub[TypeA]"], 0).await;
    for (offset, e) in events.iter().enumerate() {
        assert_eq!(e.offset, offset as u64, "event log has a gap or is out of order (D5)");
    }
    assert_eq!(store.next_event_offset().await.unwrap(), events.len() as u64);
    let event_ids: HashSet<&str> = events.iter().map(Event::id).collect();
    let q = queue(store, 100_000).await;
    let queued: HashSet<&str> = q.iter().map(QueueMessage::id).collect();
    let mut present = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("<batch-{i:03}>");
        let md = store.load_aggregate_meta_data("<correlated>", &id).await.unwrap();
        let offset = store.load_offset(&id).await.unwrap();
        let parts = [
            event_ids.contains(id.as_str()),
            md.revision == 1 && md.last_event_id == id,
            offset == i as u64 + 1,
            queued.contains(id.as_str()),
        ];
        assert!(parts == [true; 4] || parts == [false; 4], "batch {i} partially committed: {parts:?}");
        if !parts[1] {
            assert_eq!((md.revision, offset), (0, 0), "batch {i} left a trace");
        }
        present.push(parts[0]);
    }
    assert_eq!(events.len(), present.iter().filter(|&&p| p).count(), "unexpected events in the log");
    assert_eq!(q.len(), events.len(), "unexpected queue messages");
    present
}

/// A cheap deterministic "random" number in `0..bound` for the `i`th trial.
fn pick(i: usize, bound: u64) -> u64 {
    ((i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) % bound
}

async fn yield_times(n: u64) {
    for _ in 0..n {
        tokio::task::yield_now().await;
    }
}

/// docs/close-and-cancellation.md#cancellation, docs/batches.md#atomicity: persists dropped at
/// assorted points (after one poll, on tiny timeouts, losing a `select!`, aborted tasks,
/// sequentially and concurrently) leave each batch fully present or fully absent, every reported
/// success present, a dense log, and a working store that closes, unlocks and reopens.
pub async fn provider_dropped_persists_are_all_or_nothing<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let at = now();
    let sequential = 48;
    let mut succeeded = Vec::new();
    for i in 0..sequential {
        let batch = Batch::from(correlated(i, at));
        let outcome: Option<Result<PersistResult>> = match i % 4 {
            0 => poll_once(h.store.persist(batch)).await,
            1 => tokio::time::timeout(Duration::from_micros(pick(i, 300)), h.store.persist(batch)).await.ok(),
            2 => tokio::select! {
                r = h.store.persist(batch) => Some(r),
                () = yield_times(pick(i, 4)) => None,
            },
            _ => {
                let store = Arc::clone(&h.store);
                let task = tokio::spawn(async move { store.persist(batch).await });
                yield_times(pick(i, 4)).await;
                task.abort();
                task.await.ok()
            }
        };
        match outcome {
            Some(Ok(result)) => {
                assert_eq!(result.event_offsets.len(), 1);
                succeeded.push(i);
            }
            Some(Err(e)) => panic!("persist {i} failed: {e}"),
            None => {}
        }
    }
    // A concurrent burst, each task aborted after a different number of yields.
    let burst: Vec<_> = (sequential..sequential + 32)
        .map(|i| {
            let store = Arc::clone(&h.store);
            let batch = Batch::from(correlated(i, at));
            (i, tokio::spawn(async move { store.persist(batch).await }))
        })
        .collect();
    for (i, task) in &burst {
        if pick(*i, 3) != 0 {
            yield_times(pick(*i, 3)).await;
            task.abort();
        }
    }
    for (i, task) in burst {
        match task.await {
            Ok(Ok(_)) => succeeded.push(i),
            Ok(Err(e)) => panic!("persist {i} failed: {e}"),
            Err(join) => assert!(join.is_cancelled(), "persist {i} panicked"),
        }
    }

    let n = sequential + 32;
    let present = correlated_presence(&*h.store, n).await;
    for i in succeeded {
        assert!(present[i], "persist {i} reported success but its batch is absent");
    }
    // The store still works, closes and reopens with the same data, at the next dense offset.
    let count = present.iter().filter(|&&p| p).count() as u64;
    let result = persist(&*h.store, vec![save_offset(SOURCE, 0, 1)]).await;
    assert!(result.event_offsets.is_empty());
    h.store.close().await.unwrap();
    let provider = if b.providers_share_storage() { b.provider().await } else { h.provider };
    let store = open(&provider, DEFAULT_APP_KEY).await;
    assert_eq!(correlated_presence(&store, n).await, present);
    let result = persist(&store, vec![Operation::SaveEvent(event("<after>", "B"))]).await;
    assert_eq!(result.event_offsets["<after>"], count);
    store.close().await.unwrap();
}

/// docs/close-and-cancellation.md#cancellation: reads and cursor steps dropped after one poll
/// lose nothing: an abandoned `EventCursor::next` does not advance the cursor past an event it
/// did not hand out, and the store keeps serving reads and writes.
pub async fn provider_dropped_reads_lose_nothing<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let ops = (0..20).map(|i| Operation::SaveEvent(event(&format!("<message-{i:02}>"), "A"))).collect();
    persist(&*h.store, ops).await;
    persist(&*h.store, vec![Operation::SaveQueueMessage(queue_message(command("<command>", "A"), now()))])
        .await;

    for _ in 0..3 {
        drop(poll_once(h.store.next_event_offset()).await);
        drop(poll_once(h.store.load_queue_messages(5)).await);
        drop(poll_once(h.store.load_offset(SOURCE)).await);
        drop(poll_once(h.store.load_events_by_type(&["EventStub[TypeA]"], 0)).await);
    }
    let mut cursor = h.store.load_events_by_type(&["EventStub[TypeA]"], 0).await.unwrap();
    let mut seen = Vec::new();
    for round in 0.. {
        let step = if round % 2 == 0 { poll_once(cursor.next()).await } else { Some(cursor.next().await) };
        match step {
            Some(Ok(Some(e))) => seen.push(e.offset),
            Some(Ok(None)) => break,
            Some(Err(e)) => panic!("cursor step failed: {e}"),
            None => {}
        }
        assert!(round < 1000, "cursor never finished");
    }
    assert_eq!(seen, (0..20).collect::<Vec<u64>>());
    assert_eq!(h.store.next_event_offset().await.unwrap(), 20);
    assert_eq!(queue(&*h.store, 5).await.len(), 1);
    persist(&*h.store, vec![save_offset(SOURCE, 0, 1)]).await;
    h.close().await;
}

/// docs/close-and-cancellation.md#close: persists racing with `close`: close succeeds once, each
/// persist either succeeds (its batch fully present) or returns exactly `Closed` (its batch fully
/// absent), and after a reopen the log is dense.
pub async fn provider_persist_racing_close_is_all_or_nothing<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let at = now();
    let n = 64;
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let store = Arc::clone(&h.store);
            let batch = Batch::from(correlated(i, at));
            tokio::spawn(async move {
                yield_times(pick(i, 6)).await;
                store.persist(batch).await
            })
        })
        .collect();
    yield_times(2).await;
    h.store.close().await.unwrap();
    let mut outcomes = Vec::with_capacity(n);
    for (i, task) in tasks.into_iter().enumerate() {
        match task.await.unwrap() {
            Ok(_) => outcomes.push(true),
            Err(Error::Closed) => outcomes.push(false),
            Err(e) => panic!("persist {i} racing close: expected success or Closed, got {e:?}"),
        }
    }
    expect_closed("persist after the race", h.store.persist(Batch::from(correlated(n, at))).await);
    expect_closed("second close", h.store.close().await);

    let provider = if b.providers_share_storage() { b.provider().await } else { h.provider };
    let store = open(&provider, DEFAULT_APP_KEY).await;
    let present = correlated_presence(&store, n + 1).await;
    assert!(!present[n], "a persist after close committed");
    assert_eq!(&present[..n], outcomes.as_slice(), "outcome reported by persist vs. what was committed");
    store.close().await.unwrap();
}

/// docs/close-and-cancellation.md#data-store-sets: `DataStoreSet::get` opens the key through the
/// provider (which then holds its lock) and returns the same store for later calls; different
/// keys get different stores.
pub async fn provider_data_store_set_get_opens_and_caches<B: Backend>(b: &B) {
    let set = DataStoreSet::new(b.provider().await);
    let first = set.get(DEFAULT_APP_KEY).await.unwrap();
    assert_eq!(first.app_key(), DEFAULT_APP_KEY);
    let again = set.get(DEFAULT_APP_KEY).await.unwrap();
    assert!(Arc::ptr_eq(&first, &again), "get must return the cached store");
    let other = set.get(OTHER_APP_KEY).await.unwrap();
    assert!(!Arc::ptr_eq(&first, &other));
    assert_eq!(other.app_key(), OTHER_APP_KEY);
    expect_locked(set.provider(), DEFAULT_APP_KEY).await;
    persist(&*first, vec![save_offset(SOURCE, 0, 1)]).await;
    assert_eq!(again.load_offset(SOURCE).await.unwrap(), 1);
    assert_eq!(other.load_offset(SOURCE).await.unwrap(), 0);
    set.close().await.unwrap();
}

/// docs/close-and-cancellation.md#data-store-sets: `DataStoreSet::close` closes every cached
/// store and empties the set, which stays usable: a later `get` opens a new store that sees the
/// data.
pub async fn provider_data_store_set_close_closes_all_and_set_is_reusable<B: Backend>(b: &B) {
    let set = DataStoreSet::new(b.provider().await);
    let first = set.get(DEFAULT_APP_KEY).await.unwrap();
    let other = set.get(OTHER_APP_KEY).await.unwrap();
    persist(&*first, vec![save_offset(SOURCE, 0, 1)]).await;
    persist(&*other, vec![save_offset(SOURCE, 0, 2)]).await;
    set.close().await.unwrap();
    for store in [&first, &other] {
        expect_closed("persist through a store of a closed set", store.persist(Batch::new()).await);
        expect_closed("close of a store of a closed set", store.close().await);
    }
    set.close().await.unwrap();

    let reopened = set.get(DEFAULT_APP_KEY).await.unwrap();
    assert!(!Arc::ptr_eq(&first, &reopened));
    assert_eq!(reopened.load_offset(SOURCE).await.unwrap(), 1);
    let reopened_other = set.get(OTHER_APP_KEY).await.unwrap();
    assert_eq!(reopened_other.load_offset(SOURCE).await.unwrap(), 2);
    assert!(Arc::ptr_eq(&reopened, &set.get(DEFAULT_APP_KEY).await.unwrap()));
    set.close().await.unwrap();
    let store = open(&b.provider().await, DEFAULT_APP_KEY).await;
    store.close().await.unwrap();
}

/// docs/close-and-cancellation.md#data-store-sets: an open error (the key is locked elsewhere) is
/// returned as-is and not cached: once the holder closes, `get` opens the key.
pub async fn provider_data_store_set_open_error_is_returned_not_cached<B: Backend>(b: &B) {
    let set = DataStoreSet::new(b.provider().await);
    let holder = open(set.provider(), DEFAULT_APP_KEY).await;
    for _ in 0..2 {
        match set.get(DEFAULT_APP_KEY).await {
            Err(Error::Locked { app_key }) => assert_eq!(app_key, DEFAULT_APP_KEY),
            Err(e) => panic!("expected Locked, got {e:?}"),
            Ok(_) => panic!("get opened a key that is open elsewhere"),
        }
    }
    persist(&holder, vec![save_offset(SOURCE, 0, 1)]).await;
    holder.close().await.unwrap();
    let store = set.get(DEFAULT_APP_KEY).await.unwrap();
    assert_eq!(store.load_offset(SOURCE).await.unwrap(), 1);

    if b.providers_share_storage() {
        let elsewhere = open(&b.provider().await, OTHER_APP_KEY).await;
        assert!(matches!(set.get(OTHER_APP_KEY).await.err(), Some(Error::Locked { .. })));
        elsewhere.close().await.unwrap();
        set.get(OTHER_APP_KEY).await.unwrap();
    }
    set.close().await.unwrap();
}

/// docs/close-and-cancellation.md#data-store-sets: `DataStoreSet::close` returns every close
/// error: one as itself, several as `Multiple`; the stores that could be closed are closed
/// anyway.
pub async fn provider_data_store_set_close_reports_every_error<B: Backend>(b: &B) {
    let set = DataStoreSet::new(b.provider().await);
    let first = set.get(DEFAULT_APP_KEY).await.unwrap();
    let other = set.get(OTHER_APP_KEY).await.unwrap();
    first.close().await.unwrap();
    expect_closed("set close with one store closed behind its back", set.close().await);
    expect_closed("the other store", other.close().await);

    let first = set.get(DEFAULT_APP_KEY).await.unwrap();
    let other = set.get(OTHER_APP_KEY).await.unwrap();
    let third = set.get("<third-app-key>").await.unwrap();
    first.close().await.unwrap();
    other.close().await.unwrap();
    match set.close().await {
        Err(Error::Multiple(errors)) => {
            assert_eq!(errors.len(), 2);
            assert!(errors.iter().all(|e| matches!(e, Error::Closed)), "{errors:?}");
        }
        other => panic!("expected Multiple([Closed, Closed]), got {other:?}"),
    }
    expect_closed("the third store", third.close().await);
    let store = set.get("<third-app-key>").await.unwrap();
    store.persist(Batch::new()).await.unwrap();
    set.close().await.unwrap();
    let store = open(set.provider(), DEFAULT_APP_KEY).await;
    expect_conflict(&store, vec![save_offset(SOURCE, 9, 10)], 0).await;
    store.close().await.unwrap();
}

/// docs/errors.md#kinds-and-what-to-do: every error a caller can provoke on any provider has the
/// kind that tells an engine what to do, and only `Locked` of them is retryable as it stands.
pub async fn provider_errors_say_what_to_do<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let locked = h.provider.open(DEFAULT_APP_KEY).await.err().expect("a second open is refused");
    assert_eq!((locked.kind(), locked.is_retryable()), (ErrorKind::Locked, true), "{locked:?}");

    let stale = Operation::SaveAggregateMetaData(aggregate(DEFAULT_HANDLER_KEY, "<instance>", 7));
    let conflict = h.store.persist(Batch::from(vec![stale])).await.unwrap_err();
    assert_eq!((conflict.kind(), conflict.is_retryable()), (ErrorKind::Conflict, false), "{conflict:?}");

    let twice = vec![save_offset(SOURCE, 0, 1), save_offset(SOURCE, 0, 1)];
    let invalid = h.store.persist(Batch::from(twice)).await.unwrap_err();
    assert_eq!((invalid.kind(), invalid.is_retryable()), (ErrorKind::InvalidInput, false), "{invalid:?}");

    persist(&*h.store, vec![Operation::SaveEvent(event("<kinds-e>", "A"))]).await;
    let again = h.store.persist(Batch::from(vec![Operation::SaveEvent(event("<kinds-e>", "A"))])).await;
    let duplicate = again.unwrap_err();
    assert_eq!(duplicate.kind(), ErrorKind::DuplicateEvent, "{duplicate:?}");

    let store = Arc::clone(&h.store);
    h.close().await;
    let closed = store.load_offset(SOURCE).await.unwrap_err();
    assert_eq!((closed.kind(), closed.is_retryable()), (ErrorKind::Closed, false), "{closed:?}");
}

/// docs/failover.md#standby: a standby in `open_wait` gets the store soon after its holder
/// closes it (the back-off is at most 100 ms), with the holder's data.
pub async fn provider_open_wait_takes_the_store_when_the_holder_closes<B: Backend>(b: &B) {
    let provider = b.provider().await;
    let holder = open(&provider, DEFAULT_APP_KEY).await;
    holder.persist(Batch::from(vec![save_offset(SOURCE, 0, 1)])).await.unwrap();
    let standby = b.provider().await;
    let waiting = standby.open_wait(DEFAULT_APP_KEY, PROMPTLY * 6);
    let closing = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        holder.close().await.unwrap();
        std::time::Instant::now()
    };
    let (store, closed) = tokio::join!(waiting, closing);
    let store = store.unwrap_or_else(|e| panic!("open_wait failed after the holder closed: {e}"));
    let waited = closed.elapsed();
    assert!(waited < PROMPTLY, "open_wait took {waited:?} after the holder closed");
    assert_eq!(store.load_offset(SOURCE).await.unwrap(), 1, "the holder's data");
    store.close().await.unwrap();
}

/// docs/failover.md#standby: while the holder keeps the store, `open_wait` returns `Locked`
/// once its timeout has passed (not before, not much after).
pub async fn provider_open_wait_gives_up_with_locked_at_its_timeout<B: Backend>(b: &B) {
    let provider = b.provider().await;
    let holder = open(&provider, DEFAULT_APP_KEY).await;
    let started = std::time::Instant::now();
    match provider.open_wait(DEFAULT_APP_KEY, Duration::from_millis(400)).await {
        Err(Error::Locked { app_key }) => assert_eq!(app_key, DEFAULT_APP_KEY),
        Err(e) => panic!("expected Locked, got {e}"),
        Ok(_) => panic!("open_wait opened a store that is held"),
    }
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(400), "gave up early, after {waited:?}");
    assert!(waited < PROMPTLY, "gave up late, after {waited:?}");
    // A zero timeout is one attempt, like `open`.
    assert!(matches!(provider.open_wait(DEFAULT_APP_KEY, Duration::ZERO).await, Err(Error::Locked { .. })));
    holder.close().await.unwrap();
}

/// docs/failover.md#standby: dropping an `open_wait` part-way leaves nothing behind: once the
/// holder closes, a plain `open` succeeds at once (no abandoned wait took the lock).
pub async fn provider_dropped_open_wait_holds_nothing<B: Backend>(b: &B) {
    let provider = b.provider().await;
    let holder = open(&provider, DEFAULT_APP_KEY).await;
    let standby = b.provider().await;
    let dropped =
        tokio::time::timeout(Duration::from_millis(300), standby.open_wait(DEFAULT_APP_KEY, PROMPTLY)).await;
    assert!(dropped.is_err(), "the wait was still waiting when dropped");
    holder.close().await.unwrap();
    for attempt in 0..3 {
        let store = open(&standby, DEFAULT_APP_KEY).await;
        store.close().await.unwrap_or_else(|e| panic!("close {attempt}: {e}"));
    }
}
