//! Event-stream offsets (consumer positions): operations and repository
//! (docs/batches.md#consumer-offsets).

use std::sync::Arc;

use vellum_core::OffsetRepository;

use crate::fixtures::{expect_conflict, persist, poll_once, save_offset};
use crate::harness::{Backend, Harness};

#[doc(hidden)]
#[macro_export]
macro_rules! __offset_tests {
    ($make:expr $(, $(#[$attr:meta])*)?) => {
        $crate::__tests!($make, [$($(#[$attr])*)?];
            offset::offset_save_new_from_zero,
            offset::offset_save_new_with_nonzero_current_conflicts,
            offset::offset_save_existing,
            offset::offset_save_existing_with_zero_current_conflicts,
            offset::offset_save_existing_with_lower_current_conflicts,
            offset::offset_save_existing_with_higher_current_conflicts,
            offset::offset_concurrent_saves_all_succeed,
            offset::offset_load_unknown_returns_zero,
            offset::offset_load_returns_saved,
            offset::offset_load_cancelled,
            offset::offset_save_over_explicit_zero,
            offset::offset_save_next_equal_to_current,
            offset::offset_save_smaller_next_accepted,
            offset::offset_max_value_round_trips,
            offset::offset_source_keys_are_opaque_and_independent,
        );
    };
}

const SOURCE: &str = "<source-app-key>";

async fn load<B: Backend>(h: &Harness<B>, source: &str) -> u64 {
    h.store.load_offset(source).await.unwrap()
}

async fn set_to_5<B: Backend>(h: &Harness<B>) {
    persist(&*h.store, vec![save_offset(SOURCE, 0, 5)]).await;
    assert_eq!(load(h, SOURCE).await, 5);
}

/// 58. With no offset stored, `SaveOffset{0→1}` stores 1.
pub async fn offset_save_new_from_zero<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    persist(&*h.store, vec![save_offset(SOURCE, 0, 1)]).await;
    assert_eq!(load(&h, SOURCE).await, 1);
    h.close().await;
}

/// 59. With no offset stored, `SaveOffset{1→2}` conflicts and nothing is stored.
pub async fn offset_save_new_with_nonzero_current_conflicts<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    expect_conflict(&*h.store, vec![save_offset(SOURCE, 1, 2)], 0).await;
    assert_eq!(load(&h, SOURCE).await, 0);
    // Nothing was created: the offset still behaves as missing (0).
    persist(&*h.store, vec![save_offset(SOURCE, 0, 3)]).await;
    assert_eq!(load(&h, SOURCE).await, 3);
    h.close().await;
}

/// 60. With offset 5 stored, `SaveOffset{5→123}` stores 123.
pub async fn offset_save_existing<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    set_to_5(&h).await;
    persist(&*h.store, vec![save_offset(SOURCE, 5, 123)]).await;
    assert_eq!(load(&h, SOURCE).await, 123);
    h.close().await;
}

async fn stale_save_conflicts<B: Backend>(b: &B, current: u64) {
    let h = Harness::open(b).await;
    set_to_5(&h).await;
    expect_conflict(&*h.store, vec![save_offset(SOURCE, current, 999)], 0).await;
    assert_eq!(load(&h, SOURCE).await, 5);
    h.close().await;
}

/// 61. With offset 5 stored, current 0 conflicts and the offset stays 5.
pub async fn offset_save_existing_with_zero_current_conflicts<B: Backend>(b: &B) {
    stale_save_conflicts(b, 0).await;
}

/// 62. With offset 5 stored, a too-low current (1) conflicts and the offset stays 5.
pub async fn offset_save_existing_with_lower_current_conflicts<B: Backend>(b: &B) {
    stale_save_conflicts(b, 1).await;
}

/// 63. With offset 5 stored, a too-high current (100) conflicts and the offset stays 5.
pub async fn offset_save_existing_with_higher_current_conflicts<B: Backend>(b: &B) {
    stale_save_conflicts(b, 100).await;
}

/// 64. Three source applications advanced 1, 2 and 3 times from parallel tasks all succeed.
pub async fn offset_concurrent_saves_all_succeed<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let cases = [("<source-1>", 1), ("<source-2>", 2), ("<source-3>", 3)];
    let tasks: Vec<_> = cases
        .iter()
        .map(|&(source, times)| {
            let store = Arc::clone(&h.store);
            tokio::spawn(async move {
                for i in 0..times {
                    persist(&*store, vec![save_offset(source, i, i + 1)]).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    for (source, times) in cases {
        assert_eq!(load(&h, source).await, times, "offset of {source}");
    }
    h.close().await;
}

/// 65. `load_offset` of a source application never saved returns 0.
pub async fn offset_load_unknown_returns_zero<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    persist(&*h.store, vec![save_offset("<other-source>", 0, 9)]).await;
    assert_eq!(load(&h, "<unknown-source>").await, 0);
    h.close().await;
}

/// 66. `load_offset` returns the offset saved by `SaveOffset{0→1}`.
pub async fn offset_load_returns_saved<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    persist(&*h.store, vec![save_offset(SOURCE, 0, 1)]).await;
    assert_eq!(load(&h, SOURCE).await, 1);
    h.close().await;
}

/// 67. A `load_offset` dropped after one poll (Rust's "cancelled context") answered correctly
///     or left the store working with the data intact.
pub async fn offset_load_cancelled<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    persist(&*h.store, vec![save_offset(SOURCE, 0, 1)]).await;
    if let Some(answer) = poll_once(h.store.load_offset(SOURCE)).await {
        assert_eq!(answer.unwrap(), 1);
    }
    assert_eq!(load(&h, SOURCE).await, 1);
    persist(&*h.store, vec![save_offset(SOURCE, 1, 2)]).await;
    assert_eq!(load(&h, SOURCE).await, 2);
    h.close().await;
}

/// docs/batches.md#consumer-offsets: current 0 over an *explicitly stored* 0 succeeds (Go SQL's
/// INSERT for current 0 made it a conflict), whether the 0 was written first or set later.
pub async fn offset_save_over_explicit_zero<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    persist(&*h.store, vec![save_offset(SOURCE, 0, 0)]).await;
    assert_eq!(load(&h, SOURCE).await, 0);
    persist(&*h.store, vec![save_offset(SOURCE, 0, 1)]).await;
    assert_eq!(load(&h, SOURCE).await, 1);

    persist(&*h.store, vec![save_offset("<other-source>", 0, 5)]).await;
    persist(&*h.store, vec![save_offset("<other-source>", 5, 0)]).await;
    assert_eq!(load(&h, "<other-source>").await, 0);
    expect_conflict(&*h.store, vec![save_offset("<other-source>", 5, 6)], 0).await;
    persist(&*h.store, vec![save_offset("<other-source>", 0, 7)]).await;
    assert_eq!(load(&h, "<other-source>").await, 7);
    h.close().await;
}

/// docs/batches.md#consumer-offsets: `next == current` succeeds (Go SQL on `MySQL` counted
/// affected rows: a false conflict), and the stored value stays current.
pub async fn offset_save_next_equal_to_current<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    set_to_5(&h).await;
    persist(&*h.store, vec![save_offset(SOURCE, 5, 5)]).await;
    assert_eq!(load(&h, SOURCE).await, 5);
    persist(&*h.store, vec![save_offset(SOURCE, 5, 5)]).await;
    persist(&*h.store, vec![save_offset(SOURCE, 5, 6)]).await;
    assert_eq!(load(&h, SOURCE).await, 6);
    h.close().await;
}

/// docs/batches.md#consumer-offsets: no monotonicity check; a `next_offset` below the current
/// one is stored.
pub async fn offset_save_smaller_next_accepted<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    set_to_5(&h).await;
    persist(&*h.store, vec![save_offset(SOURCE, 5, 2)]).await;
    assert_eq!(load(&h, SOURCE).await, 2);
    expect_conflict(&*h.store, vec![save_offset(SOURCE, 5, 6)], 0).await;
    persist(&*h.store, vec![save_offset(SOURCE, 2, 3)]).await;
    assert_eq!(load(&h, SOURCE).await, 3);
    h.close().await;
}

/// docs/batches.md#consumer-offsets: offsets are full u64 values; `u64::MAX` (and values above
/// `i64::MAX`) round-trip and compare exactly as preconditions.
pub async fn offset_max_value_round_trips<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    persist(&*h.store, vec![save_offset(SOURCE, 0, u64::MAX)]).await;
    assert_eq!(load(&h, SOURCE).await, u64::MAX);
    expect_conflict(&*h.store, vec![save_offset(SOURCE, u64::MAX - 1, 1)], 0).await;
    expect_conflict(&*h.store, vec![save_offset(SOURCE, i64::MAX as u64, 1)], 0).await;
    persist(&*h.store, vec![save_offset(SOURCE, u64::MAX, 1 << 63)]).await;
    assert_eq!(load(&h, SOURCE).await, 1 << 63);
    persist(&*h.store, vec![save_offset(SOURCE, 1 << 63, 0)]).await;
    assert_eq!(load(&h, SOURCE).await, 0);
    h.close().await;
}

/// docs/batches.md#identifiers: source application keys are opaque strings (empty, unicode,
/// quotes, SQL wildcards, prefixes of each other); each keeps its own offset.
pub async fn offset_source_keys_are_opaque_and_independent<B: Backend>(b: &B) {
    let h = Harness::open(b).await;
    let keys = ["", "应用-🚀", "a'b\"c;--", "%", "_", "a", "A", "a "];
    let ops = keys.iter().zip(1..).map(|(&k, n)| save_offset(k, 0, n * 10)).collect();
    persist(&*h.store, ops).await;
    for (&k, n) in keys.iter().zip(1..) {
        assert_eq!(load(&h, k).await, n * 10, "offset of {k:?}");
    }
    persist(&*h.store, vec![save_offset("", 10, 11)]).await;
    expect_conflict(&*h.store, vec![save_offset("%", 10, 11)], 0).await;
    for (&k, n) in keys.iter().zip(1..) {
        let expected = if k.is_empty() { 11 } else { n * 10 };
        assert_eq!(load(&h, k).await, expected, "offset of {k:?}");
    }
    assert_eq!(load(&h, "应用").await, 0);
    h.close().await;
}
