//! Bulk export and import (`vellum_core::bulk`): a store exported and imported into an empty
//! store reads back and behaves identically; imports are atomic and insert-only.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::SystemTime;

use vellum_core::bulk::{self, Export, ImportError};
use vellum_core::{
    AggregateRepository, BulkStore, DataStore, Error, Event, EventRepository, ExportFrom, Operation, Packet,
    Provider, Record, Section, StoreStats,
};

use crate::fixtures::{
    DEFAULT_HANDLER_KEY, aggregate, by_source, by_type, event, hours, persist, process, queue, queue_message,
    save_offset, timeout,
};
use crate::harness::{Backend, Harness};

#[doc(hidden)]
#[macro_export]
macro_rules! __bulk_tests {
    ($make:expr $(, $(#[$attr:meta])*)?) => {
        $crate::__tests!($make, [$($(#[$attr])*)?];
            bulk::bulk_empty_store_exports_nothing,
            bulk::bulk_copy_round_trips_and_continues_identically,
            bulk::bulk_export_pages_agree_with_one_page,
            bulk::bulk_import_refuses_stored_keys_atomically,
            bulk::bulk_import_refuses_offset_gaps,
            bulk::bulk_copy_refuses_non_empty_destination,
            bulk::bulk_closed_store_refuses_bulk,
        );
    };
}

/// The application key the tests import into.
const COPY_APP_KEY: &str = "<copy-destination-app-key>";
const HANDLER: &str = "<handler>";
const PROCESS: &str = "<process-handler>";

/// A fixed base time with sub-millisecond digits, so truncation to microseconds is exercised.
fn base() -> SystemTime {
    SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(1_800_000_000_123_456_789)
}

/// Fills a store with every kind of record, and a queue whose tie order (enqueue order)
/// differs from both message-ID order and the order the messages were last updated in.
async fn populate<S: DataStore>(store: &S) {
    let t = base();
    persist(
        store,
        vec![
            Operation::SaveAggregateMetaData(aggregate(HANDLER, "agg-1", 0)),
            Operation::SaveEvent(event("ev-0", "A")),
            Operation::SaveEvent(event("ev-1", "B")),
            Operation::SaveQueueMessage(queue_message(event("m-c", "C"), t)),
            Operation::SaveQueueMessage(queue_message(event("m-late", "C"), hours(t, 1))),
        ],
    )
    .await;
    let mut agg = aggregate(HANDLER, "agg-1", 1);
    agg.last_event_id = "ev-2".into();
    let mut source = event("ev-2", "A");
    source.source_instance_id = "<other-instance>".into();
    persist(
        store,
        vec![
            Operation::SaveAggregateMetaData(agg),
            Operation::SaveAggregateMetaData(aggregate(HANDLER, "ünïcödé 'quoted'", 0)),
            Operation::SaveEvent(source),
            Operation::SaveQueueMessage(queue_message(event("m-a", "C"), t)),
            Operation::SaveQueueMessage(queue_message(event("m-b", "C"), hours(t, -1))),
            Operation::SaveProcessInstance(process(
                PROCESS,
                "p-1",
                0,
                Packet::new("application/json", b"{}"),
            )),
            Operation::SaveProcessInstance(process(PROCESS, "p-empty", 0, Packet::default())),
            Operation::SaveQueueMessage(queue_message(
                timeout("t-1", PROCESS, "p-1", hours(t, 2)),
                hours(t, 2),
            )),
            save_offset("<source-1>", 0, 17),
            save_offset("", 0, u64::MAX),
        ],
    )
    .await;
    // m-b moves to the tie at `t`: enqueued last, it stays last among the three.
    let mut m_b = queue_message(event("m-b", "C"), t);
    m_b.revision = 1;
    m_b.failure_count = 3;
    persist(store, vec![Operation::SaveQueueMessage(m_b), Operation::SaveEvent(event("ev-3", "B"))]).await;
}

/// Everything a store's export holds, with order-free sections sorted.
async fn snapshot<S: BulkStore>(store: &S, page_size: usize) -> Vec<Record> {
    let mut records = Vec::new();
    let mut export = Export::new(store, page_size);
    while let Some(page) = export.next_page().await.unwrap() {
        records.extend(page);
    }
    let mut by_section: BTreeMap<Section, Vec<Record>> = BTreeMap::new();
    for record in records {
        by_section.entry(record.section()).or_default().push(record);
    }
    for (section, records) in &mut by_section {
        if matches!(section, Section::Aggregates | Section::Processes | Section::Offsets) {
            records.sort_by_key(Record::describe);
        }
    }
    by_section.into_values().flatten().collect()
}

/// Everything the engine-facing reads return.
async fn reads<S: DataStore>(store: &S) -> String {
    let mut out = format!("next offset {}\n", store.next_event_offset().await.unwrap());
    for events in [
        by_type(store, &["EventStub[TypeA]", "EventStub[TypeB]"], 0).await,
        by_type(store, &["EventStub[TypeA]"], 1).await,
        by_source(store, DEFAULT_HANDLER_KEY, "<instance>").await,
        by_source(store, DEFAULT_HANDLER_KEY, "<other-instance>").await,
    ] {
        let _ = writeln!(
            out,
            "{:?}",
            events.iter().map(|e: &Event| (e.offset, e.id().to_owned())).collect::<Vec<_>>()
        );
    }
    let _ = writeln!(out, "{:?}", queue(store, 100).await);
    for id in ["agg-1", "ünïcödé 'quoted'", "missing"] {
        let _ = writeln!(out, "{:?}", store.load_aggregate_meta_data(HANDLER, id).await.unwrap());
    }
    for id in ["p-1", "p-empty", "missing"] {
        let _ = writeln!(out, "{:?}", store.load_process_instance(PROCESS, id).await.unwrap());
    }
    for source in ["<source-1>", "", "missing"] {
        let _ = writeln!(out, "{}", store.load_offset(source).await.unwrap());
    }
    out
}

/// The same follow-up writes an engine would make next; they must succeed identically.
async fn continue_writing<S: DataStore>(store: &S) -> String {
    let t = base();
    let mut agg = aggregate(HANDLER, "agg-1", 2);
    agg.last_event_id = "ev-4".into();
    let mut m_c = queue_message(event("m-c", "C"), hours(t, -2));
    m_c.revision = 1;
    // m-late was enqueued before m-a and m-b but exported after them; tied with them now, it
    // goes first only if its enqueue sequence survived the copy.
    let mut m_late = queue_message(event("m-late", "C"), t);
    m_late.revision = 1;
    let result = persist(
        store,
        vec![
            Operation::SaveAggregateMetaData(agg),
            Operation::SaveEvent(event("ev-4", "A")),
            Operation::SaveQueueMessage(m_c),
            Operation::SaveQueueMessage(m_late),
            // A new message tied with the imported ones comes after them (FIFO continues).
            Operation::SaveQueueMessage(queue_message(event("m-0", "C"), t)),
            Operation::SaveProcessInstance(process(PROCESS, "p-1", 1, Packet::new("a/b", b"x"))),
            save_offset("<source-1>", 17, 18),
        ],
    )
    .await;
    let err = store.persist(vellum_core::Batch::from(vec![Operation::SaveEvent(event("ev-1", "B"))])).await;
    assert!(matches!(err, Err(Error::DuplicateEvent { .. })), "imported event IDs stay unique: {err:?}");
    let ids: Vec<String> = queue(store, 10).await.iter().map(|m| m.id().to_owned()).collect();
    assert_eq!(ids, ["m-c", "m-late", "m-a", "m-b", "m-0", "t-1"], "FIFO ties follow first enqueue");
    format!("{:?}\n{}", result.event_offsets, reads(store).await)
}

/// An empty store has zero counts and an empty export in every section.
pub async fn bulk_empty_store_exports_nothing<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    assert_eq!(h.store.stats().await.unwrap(), StoreStats::default());
    for section in Section::ALL {
        assert!(h.store.export_page(section.start(), 10).await.unwrap().is_empty(), "{section:?}");
    }
    assert!(Export::new(&*h.store, 10).next_page().await.unwrap().is_none());
    h.close().await;
}

/// A copy into an empty store of the same provider verifies, survives a reopen, reads back
/// identically (queue tie order included) and accepts the same follow-up writes with the same
/// results (next revision, offset and enqueue sequence continue).
pub async fn bulk_copy_round_trips_and_continues_identically<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    populate(&*h.store).await;
    let destination = h.provider.open(COPY_APP_KEY).await.unwrap();
    let mut progress = Vec::new();
    let summary = bulk::copy(&*h.store, &destination, 2, |n| progress.push(n)).await.unwrap();
    let expected = StoreStats { aggregates: 2, processes: 2, offsets: 2, queue: 5, events: 4 };
    assert_eq!(summary.stats, expected);
    assert_eq!(progress.last().copied(), Some(expected.total()));
    assert!(progress.windows(2).all(|w| w[0] < w[1]), "progress only grows: {progress:?}");
    destination.close().await.unwrap();

    // The imported store is durable: read it through a new provider.
    let provider = b.provider().await;
    let copy = provider.open(COPY_APP_KEY).await.unwrap();
    assert_eq!(copy.stats().await.unwrap(), expected);
    assert_eq!(snapshot(&copy, 1000).await, snapshot(&*h.store, 1000).await);
    assert_eq!(reads(&copy).await, reads(&*h.store).await);
    let queue_ids: Vec<String> = queue(&copy, 10).await.iter().map(|m| m.id().to_owned()).collect();
    assert_eq!(queue_ids, ["m-c", "m-a", "m-b", "m-late", "t-1"], "enqueue order breaks ties after a copy");
    assert_eq!(continue_writing(&copy).await, continue_writing(&*h.store).await);
    copy.close().await.unwrap();
    h.close().await;
}

/// Exporting a page at a time yields exactly what one big page does, in the same order.
pub async fn bulk_export_pages_agree_with_one_page<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    populate(&*h.store).await;
    let mut all = Vec::new();
    let mut export = Export::new(&*h.store, 1);
    while let Some(page) = export.next_page().await.unwrap() {
        assert_eq!(page.len(), 1);
        all.extend(page);
    }
    let mut whole = Vec::new();
    for section in Section::ALL {
        whole.extend(h.store.export_page(section.start(), 1000).await.unwrap());
    }
    assert_eq!(all, whole);
    let sections: Vec<Section> = whole.iter().map(Record::section).collect();
    assert!(sections.is_sorted(), "sections come in export order: {sections:?}");
    let offsets: Vec<u64> =
        whole.iter().filter_map(|r| if let Record::Event(e) = r { Some(e.offset) } else { None }).collect();
    assert_eq!(offsets, [0, 1, 2, 3]);
    // A page resumes strictly after the record it names.
    let events = h.store.export_page(ExportFrom::Events(2), 1000).await.unwrap();
    assert_eq!(events.len(), 2);

    // Two messages sharing time and sequence (an import into a used store can do that) are
    // both exported a page at a time: the message ID completes the queue key.
    let other = h.provider.open(COPY_APP_KEY).await.unwrap();
    let tied = |id: &str| {
        let mut message = crate::fixtures::queue_message(event(id, "C"), base());
        message.revision = 1;
        Record::Queue { sequence: 7, message }
    };
    other.import(vec![tied("tie-b"), tied("tie-a")]).await.unwrap();
    let mut ids = Vec::new();
    let mut export = Export::section(&other, Section::Queue, 1);
    while let Some(page) = export.next_page().await.unwrap() {
        ids.extend(page.iter().map(Record::describe));
    }
    assert_eq!(ids.len(), 2, "{ids:?}");
    other.close().await.unwrap();
    h.close().await;
}

/// An import that names a stored key is refused whole: nothing from it is written.
pub async fn bulk_import_refuses_stored_keys_atomically<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    persist(&*h.store, vec![Operation::SaveAggregateMetaData(aggregate(HANDLER, "stored", 0))]).await;
    let before = h.store.stats().await.unwrap();
    let new = Record::Aggregate(aggregate(HANDLER, "new", 4));
    let stored = Record::Aggregate(aggregate(HANDLER, "stored", 9));
    let err = h.store.import(vec![new.clone(), stored]).await.unwrap_err();
    assert!(matches!(&err, Error::InvalidImport(ImportError::AlreadyStored { index: 1, .. })), "got {err:?}");
    assert!(err.to_string().contains("stored"), "the error names the record: {err}");
    assert_eq!(h.store.stats().await.unwrap(), before);
    assert_eq!(h.store.load_aggregate_meta_data(HANDLER, "new").await.unwrap().revision, 0);

    // A queue sequence of u64::MAX would leave none for the next enqueue.
    let mut message = crate::fixtures::queue_message(event("q-max", "C"), base());
    message.revision = 1;
    let full = h.store.import(vec![Record::Queue { sequence: u64::MAX, message }]).await.unwrap_err();
    assert!(
        matches!(full, Error::InvalidImport(ImportError::SequenceOutOfRange { index: 0, .. })),
        "{full:?}"
    );

    let repeated = h.store.import(vec![new.clone(), new.clone()]).await.unwrap_err();
    assert!(matches!(repeated, Error::InvalidImport(ImportError::Repeated { index: 1, first: 0, .. })));
    h.store.import(vec![new]).await.unwrap();
    assert_eq!(h.store.load_aggregate_meta_data(HANDLER, "new").await.unwrap().revision, 4);
    h.close().await;
}

/// Imported events must continue the log densely; the log's next offset follows them.
pub async fn bulk_import_refuses_offset_gaps<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let at = |offset, id| Record::Event(Event { offset, envelope: event(id, "A") });
    h.store.import(vec![at(0, "e0"), at(1, "e1")]).await.unwrap();
    let err = h.store.import(vec![at(2, "e2"), at(4, "e4")]).await.unwrap_err();
    assert!(
        matches!(err, Error::InvalidImport(ImportError::OffsetGap { index: 1, expected: 3, .. })),
        "got {err:?}"
    );
    assert_eq!(h.store.next_event_offset().await.unwrap(), 2, "the refused import wrote nothing");
    let duplicate = h.store.import(vec![at(2, "e0")]).await.unwrap_err();
    assert!(matches!(duplicate, Error::InvalidImport(ImportError::AlreadyStored { .. })), "{duplicate:?}");
    h.store.import(vec![at(2, "e2")]).await.unwrap();
    let result = persist(&*h.store, vec![Operation::SaveEvent(event("e3", "A"))]).await;
    assert_eq!(result.event_offsets["e3"], 3);
    h.close().await;
}

/// `copy` refuses a destination that holds anything, and changes neither store.
pub async fn bulk_copy_refuses_non_empty_destination<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    populate(&*h.store).await;
    let destination = Arc::new(h.provider.open(COPY_APP_KEY).await.unwrap());
    persist(&*destination, vec![save_offset("<x>", 0, 1)]).await;
    let err = bulk::copy(&*h.store, &*destination, 100, |_| {}).await.unwrap_err();
    assert!(matches!(err, Error::Copy(_)), "got {err:?}");
    assert!(err.to_string().contains("not empty"), "{err}");
    assert_eq!(destination.stats().await.unwrap(), StoreStats { offsets: 1, ..StoreStats::default() });
    destination.close().await.unwrap();
    h.close().await;
}

/// Bulk calls on a closed store return `Closed`.
pub async fn bulk_closed_store_refuses_bulk<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    h.store.close().await.unwrap();
    assert!(matches!(h.store.stats().await, Err(Error::Closed)));
    assert!(matches!(h.store.export_page(Section::Events.start(), 10).await, Err(Error::Closed)));
    let record = Record::Offset { application_key: "<x>".into(), next_offset: 1 };
    assert!(matches!(h.store.import(vec![record]).await, Err(Error::Closed)));
}
