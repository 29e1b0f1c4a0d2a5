//! What the conformance suite cannot see of bulk on redb: imports serialised with concurrent
//! batches (counters stay right), the queue export's resume at the edges of the key space, and
//! a refused import leaving the counters alone. (The tracing spans are in `tests/spans.rs`.)

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vellum_conformance::fixtures::{aggregate, event, queue_message};
use vellum_core::bulk::ImportError;
use vellum_core::time::Micros;
use vellum_core::{
    Batch, BulkStore, DataStore, Error, ExportFrom, Operation, Persister, Provider, QueueKey, QueueMessage,
    Record, Section, StoreStats,
};

use crate::{RedbProvider, RedbStore};

fn at(micros: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(micros)
}

fn queued(id: &str, sequence: u64, micros: u64) -> Record {
    let message = QueueMessage { revision: 2, failure_count: 1, ..queue_message(event(id, "C"), at(micros)) };
    Record::Queue { sequence, message }
}

fn enqueue(id: &str, micros: u64) -> Batch {
    Batch::from(vec![Operation::SaveQueueMessage(queue_message(event(id, "C"), at(micros)))])
}

/// The whole queue section as `(id, sequence)`, in export order.
async fn queue_export(store: &RedbStore, from: ExportFrom) -> Vec<(String, u64)> {
    let page = store.export_page(from, 1000).await.unwrap();
    page.iter()
        .map(|r| match r {
            Record::Queue { sequence, message } => (message.id().to_owned(), *sequence),
            other => panic!("not a queue record: {other:?}"),
        })
        .collect()
}

#[test]
fn imports_are_serialised_with_concurrent_batches() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let provider = RedbProvider::new(dir.path());
        let store = Arc::new(provider.open("bulk").await.unwrap());
        let mut tasks = Vec::new();
        for i in 0..64_u64 {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                let mut ops = enqueue(&format!("q{i}"), i).into_iter().collect::<Vec<_>>();
                ops.push(Operation::SaveEvent(event(&format!("e{i}"), "A")));
                store.persist(Batch::from(ops)).await.map(drop)
            }));
        }
        // Imported sequences are kept verbatim, so they are spaced wider than all the enqueues
        // together: whatever the interleaving, no enqueue lands on one imported later.
        for j in 0..8_u64 {
            let store = Arc::clone(&store);
            let records = vec![
                queued(&format!("i{j}"), 1000 + 100 * j, 0),
                Record::Aggregate(aggregate("h", &format!("a{j}"), 3)),
            ];
            tasks.push(tokio::spawn(async move { store.import(records).await }));
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let expected = StoreStats { aggregates: 8, processes: 0, offsets: 0, queue: 72, events: 64 };
        assert_eq!(store.stats().await.unwrap(), expected);
        let offsets: Vec<u64> = store
            .export_page(Section::Events.start(), 1000)
            .await
            .unwrap()
            .iter()
            .filter_map(|r| if let Record::Event(e) = r { Some(e.offset) } else { None })
            .collect();
        assert_eq!(offsets, (0..64).collect::<Vec<_>>(), "offsets stay dense");

        // The next enqueue gets a sequence above every one stored, imported or not.
        store.persist(enqueue("next", 0)).await.unwrap();
        let queue = queue_export(&store, Section::Queue.start()).await;
        let mut sequences: Vec<u64> = queue.iter().map(|(_, s)| *s).collect();
        let next = queue.iter().find(|(id, _)| id == "next").map(|(_, s)| *s).unwrap();
        sequences.sort_unstable();
        sequences.dedup();
        assert_eq!(sequences.len(), 73, "sequences are unique");
        assert_eq!(sequences.last(), Some(&next));
        assert!(next > 1700, "{next}");
        store.close().await.unwrap();

        let store = provider.open("bulk").await.unwrap();
        assert_eq!(store.stats().await.unwrap(), StoreStats { queue: 73, ..expected }, "durable");
        store.close().await.unwrap();
    });
}

#[test]
fn queue_export_resumes_at_the_edges_of_the_key_space() {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbProvider::new(dir.path()).open("edges").await.unwrap();
        store.import(vec![queued("a", 5, 10), queued("b", 0, 11)]).await.unwrap();
        let ids = |page: Vec<(String, u64)>| page.into_iter().map(|(id, _)| id).collect::<Vec<_>>();
        let from = |t, sequence, id: &str| {
            ExportFrom::Queue(Some(QueueKey { next_attempt_at: Micros(t), sequence, message_id: id.into() }))
        };
        assert_eq!(ids(queue_export(&store, Section::Queue.start()).await), ["a", "b"]);
        assert_eq!(ids(queue_export(&store, from(10, 4, "z")).await), ["a", "b"]);
        assert_eq!(ids(queue_export(&store, from(10, 5, "")).await), ["a", "b"]);
        assert_eq!(ids(queue_export(&store, from(10, 5, "a")).await), ["b"]);
        assert_eq!(ids(queue_export(&store, from(10, u64::MAX, "")).await), ["b"]);
        assert!(queue_export(&store, from(i64::MAX, u64::MAX, "")).await.is_empty());
        assert!(store.export_page(Section::Queue.start(), 0).await.unwrap().is_empty());

        // A refused import writes nothing, not even the enqueue sequence it would have raised.
        let agg = Record::Aggregate(aggregate("h", "x", 1));
        let err = store.import(vec![queued("c", 500, 0), agg.clone(), agg]).await.unwrap_err();
        assert!(matches!(err, Error::InvalidImport(ImportError::Repeated { index: 2, .. })), "{err:?}");
        store.persist(enqueue("d", 10)).await.unwrap();
        assert_eq!(queue_export(&store, from(10, 5, "a")).await, [("d".to_owned(), 6), ("b".to_owned(), 0)]);

        // A sequence that leaves no room for the next enqueue is refused, not wrapped.
        let full = store.import(vec![queued("e", u64::MAX, 0)]).await.unwrap_err();
        assert!(matches!(full, Error::InvalidImport(ImportError::SequenceOutOfRange { .. })), "{full:?}");
        assert_eq!(store.stats().await.unwrap().queue, 3);
        store.close().await.unwrap();
    });
}
