//! The `vellum_core::observe` spans of the redb provider, with their outcomes. A binary of its
//! own: it installs a global subscriber (to see the writer thread's spans too), and a global or
//! scoped subscriber in a binary running tests in parallel would see the others' spans, or miss
//! its own when another thread caches a callsite's interest first.

use std::fmt::Debug;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::UNIX_EPOCH;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record as Values};
use tracing::{Metadata, Subscriber};
use vellum_conformance::fixtures::{aggregate, event, queue_message};
use vellum_core::{
    AggregateRepository, Batch, BulkStore, DataStore, Operation, Persister, Provider, QueueMessage, Record,
    Section,
};
use vellum_redb::RedbProvider;

/// One span as a subscriber saw it.
#[derive(Debug, Clone)]
struct Seen {
    name: &'static str,
    fields: Vec<(&'static str, String)>,
}

impl Seen {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.iter().rev().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }
}

impl Visit for Seen {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.fields.push((field.name(), value.to_owned()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.fields.push((field.name(), format!("{value:?}")));
    }
}

/// A subscriber that keeps every span, with the values recorded on it, in creation order.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Seen>>>);

impl Collector {
    fn spans(&self) -> Vec<Seen> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Subscriber for Collector {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut seen = Seen { name: span.metadata().name(), fields: Vec::new() };
        span.record(&mut seen);
        let mut spans = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        spans.push(seen);
        Id::from_u64(spans.len() as u64)
    }

    fn record(&self, span: &Id, values: &Values<'_>) {
        let mut spans = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        // Ids are 1-based positions in `spans`, given out by `new_span`.
        let index = usize::try_from(span.into_u64()).ok().and_then(|id| id.checked_sub(1));
        if let Some(seen) = index.and_then(|i| spans.get_mut(i)) {
            values.record(seen);
        }
    }

    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn operations_emit_the_observe_spans_with_their_outcomes() {
    let collector = Collector::default();
    tracing::subscriber::set_global_default(collector.clone()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(async {
        let store = RedbProvider::new(dir.path()).open("traced").await.unwrap();
        let save =
            |revision| Batch::from(vec![Operation::SaveAggregateMetaData(aggregate("h", "i", revision))]);
        store.persist(save(0)).await.unwrap();
        store.persist(save(0)).await.unwrap_err();
        store.load_aggregate_meta_data("h", "i").await.unwrap();
        let message = queue_message(event("q", "C"), UNIX_EPOCH);
        store
            .import(vec![Record::Queue { sequence: 1, message: QueueMessage { revision: 1, ..message } }])
            .await
            .unwrap();
        store.import(vec![Record::Aggregate(aggregate("h", "i", 1))]).await.unwrap_err();
        store.export_page(Section::Queue.start(), 10).await.unwrap();
        store.close().await.unwrap();
        store.persist(save(1)).await.unwrap_err();
    });
    let spans = collector.spans();
    // The writer thread's: one transaction for each batch that reached it.
    let commits: Vec<(Option<&str>, Option<&str>)> = spans
        .iter()
        .filter(|s| s.name == "vellum.commit")
        .map(|s| (s.field("batches"), s.field("outcome")))
        .collect();
    assert_eq!(commits, [(Some("1"), Some("ok")), (Some("1"), Some("ok"))]);
    let summary: Vec<(&str, Option<&str>)> = spans
        .iter()
        .filter(|s| s.name != "vellum.commit")
        .map(|s| (s.name, s.field("outcome").or(s.field("query"))))
        .collect();
    assert_eq!(
        summary,
        [
            ("vellum.open", Some("ok")),
            ("vellum.persist", Some("ok")),
            ("vellum.persist", Some("conflict")),
            ("vellum.query", Some("aggregate")),
            ("vellum.import", Some("ok")),
            ("vellum.import", Some("invalid")),
            ("vellum.export", None),
            ("vellum.persist", Some("closed")),
        ]
    );
    for span in &spans {
        assert_eq!(span.field("provider"), Some("redb"), "{span:?}");
        assert_eq!(span.field("app_key"), Some("traced"), "{span:?}");
    }
    let import = spans.iter().find(|s| s.name == "vellum.import").unwrap();
    assert_eq!(import.field("records"), Some("1"));
}
