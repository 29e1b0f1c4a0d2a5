//! Aggregate meta-data: operations and repository (docs/batches.md#aggregate-meta-data).

use std::sync::Arc;

use vellum_core::{AggregateMetaData, AggregateRepository, Operation};

use crate::fixtures::{DEFAULT_HANDLER_KEY, aggregate, expect_conflict, persist};
use crate::harness::{Backend, Harness};

#[doc(hidden)]
#[macro_export]
macro_rules! __aggregate_tests {
    ($make:expr $(, $(#[$attr:meta])*)?) => {
        $crate::__tests!($make, [$($(#[$attr])*)?];
            aggregate::aggregate_save_new_with_revision_zero,
            aggregate::aggregate_save_new_with_nonzero_revision_conflicts,
            aggregate::aggregate_save_existing_increments_revision,
            aggregate::aggregate_save_existing_with_revision_zero_conflicts,
            aggregate::aggregate_save_existing_with_lower_revision_conflicts,
            aggregate::aggregate_save_existing_with_higher_revision_conflicts,
            aggregate::aggregate_concurrent_saves_all_succeed,
            aggregate::aggregate_load_never_saved_returns_default,
            aggregate::aggregate_load_returns_saved_meta_data,
            aggregate::aggregate_load_cancelled,
        );
    };
}

const INSTANCE: &str = "<instance>";

async fn bump_to_revision_2<B: Backend>(h: &Harness<B>) {
    persist(&*h.store, vec![Operation::SaveAggregateMetaData(aggregate(DEFAULT_HANDLER_KEY, INSTANCE, 0))])
        .await;
    persist(&*h.store, vec![Operation::SaveAggregateMetaData(aggregate(DEFAULT_HANDLER_KEY, INSTANCE, 1))])
        .await;
}

async fn load<B: Backend>(h: &Harness<B>, hk: &str, id: &str) -> AggregateMetaData {
    h.store.load_aggregate_meta_data(hk, id).await.unwrap()
}

/// 8. A new instance saved with revision 0 loads with revision 1.
pub async fn aggregate_save_new_with_revision_zero<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    persist(&*h.store, vec![Operation::SaveAggregateMetaData(aggregate(DEFAULT_HANDLER_KEY, INSTANCE, 0))])
        .await;
    assert_eq!(load(&h, DEFAULT_HANDLER_KEY, INSTANCE).await, aggregate(DEFAULT_HANDLER_KEY, INSTANCE, 1));
    h.close().await;
}

/// 9. A new instance saved with a non-zero revision conflicts and stays absent.
pub async fn aggregate_save_new_with_nonzero_revision_conflicts<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let op = Operation::SaveAggregateMetaData(aggregate(DEFAULT_HANDLER_KEY, INSTANCE, 123));
    expect_conflict(&*h.store, vec![op], 0).await;
    assert_eq!(
        load(&h, DEFAULT_HANDLER_KEY, INSTANCE).await,
        AggregateMetaData::new(DEFAULT_HANDLER_KEY, INSTANCE)
    );
    h.close().await;
}

/// 10. Saving an existing instance with its current revision and no changes increments it.
pub async fn aggregate_save_existing_increments_revision<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    bump_to_revision_2(&h).await;
    assert_eq!(load(&h, DEFAULT_HANDLER_KEY, INSTANCE).await.revision, 2);
    h.close().await;
}

async fn stale_save_conflicts<B: Backend>(b: &B, revision: u64) {
    let h = Harness::open(b).await;
    bump_to_revision_2(&h).await;
    let op = Operation::SaveAggregateMetaData(AggregateMetaData {
        last_event_id: "<changed>".into(),
        ..aggregate(DEFAULT_HANDLER_KEY, INSTANCE, revision)
    });
    expect_conflict(&*h.store, vec![op], 0).await;
    assert_eq!(load(&h, DEFAULT_HANDLER_KEY, INSTANCE).await, aggregate(DEFAULT_HANDLER_KEY, INSTANCE, 2));
    h.close().await;
}

/// 11. An existing instance saved with revision 0 conflicts and is unchanged.
pub async fn aggregate_save_existing_with_revision_zero_conflicts<B: Backend>(b: &B) {
    stale_save_conflicts(b, 0).await;
}

/// 12. An existing instance saved with a too-low revision conflicts and is unchanged.
pub async fn aggregate_save_existing_with_lower_revision_conflicts<B: Backend>(b: &B) {
    stale_save_conflicts(b, 1).await;
}

/// 13. An existing instance saved with a too-high revision conflicts and is unchanged.
pub async fn aggregate_save_existing_with_higher_revision_conflicts<B: Backend>(b: &B) {
    stale_save_conflicts(b, 100).await;
}

/// 14. Saves of disjoint instances from parallel tasks all succeed.
pub async fn aggregate_concurrent_saves_all_succeed<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let cases = [
        ("<handler-key-1>", "<instance-a>", 1),
        ("<handler-key-1>", "<instance-b>", 2),
        ("<handler-key-2>", "<instance-a>", 3),
    ];
    let tasks: Vec<_> = cases
        .iter()
        .map(|&(hk, id, times)| {
            let store = Arc::clone(&h.store);
            tokio::spawn(async move {
                for revision in 0..times {
                    persist(&*store, vec![Operation::SaveAggregateMetaData(aggregate(hk, id, revision))])
                        .await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    for (hk, id, times) in cases {
        assert_eq!(load(&h, hk, id).await, aggregate(hk, id, times));
    }
    h.close().await;
}

/// 15. A never-saved instance loads as `{hk, id, 0, ""}`, echoing the keys.
pub async fn aggregate_load_never_saved_returns_default<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    assert_eq!(load(&h, "<handler>", "<never>").await, AggregateMetaData::new("<handler>", "<never>"));
    h.close().await;
}

/// 16. Saved meta-data loads back with revision 1 and its last event ID.
pub async fn aggregate_load_returns_saved_meta_data<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let md = AggregateMetaData {
        last_event_id: "<last-event-id>".into(),
        ..aggregate(DEFAULT_HANDLER_KEY, INSTANCE, 0)
    };
    persist(&*h.store, vec![Operation::SaveAggregateMetaData(md.clone())]).await;
    assert_eq!(load(&h, DEFAULT_HANDLER_KEY, INSTANCE).await, AggregateMetaData { revision: 1, ..md });
    h.close().await;
}

/// 17. A load abandoned before it completes leaves the store working and the data intact
///     (Rust's cancellation is dropping the future).
pub async fn aggregate_load_cancelled<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let md = AggregateMetaData {
        last_event_id: "<last-event-id>".into(),
        ..aggregate(DEFAULT_HANDLER_KEY, INSTANCE, 0)
    };
    persist(&*h.store, vec![Operation::SaveAggregateMetaData(md.clone())]).await;
    let answer =
        crate::fixtures::poll_once(h.store.load_aggregate_meta_data(DEFAULT_HANDLER_KEY, INSTANCE)).await;
    if let Some(result) = answer {
        assert_eq!(result.unwrap().revision, 1);
    }
    assert_eq!(load(&h, DEFAULT_HANDLER_KEY, INSTANCE).await, AggregateMetaData { revision: 1, ..md });
    h.close().await;
}
