//! The `scan` workload of `vellum bench`: every event of a large log, from offset 0, through one
//! cursor; events per second and the process's peak memory growth while it runs.

use std::time::Instant;

use vellum::{AnyProvider, Batch, DataStore, EventRepository, Operation, Persister, Provider, Result};

use super::{Measured, event};

/// Events per batch while filling the log.
const FILL_BATCH: u64 = 1000;

/// Fills application `app` up to `events` events (a store left by an earlier run is reused),
/// then reads them all once with a cursor. `ops` is the events read, `peak_growth` the growth of peak resident memory during
/// the read (`None` where the platform does not say).
pub(super) async fn scan(provider: &AnyProvider, app: &str, events: u64) -> Result<Measured> {
    let store = provider.open(app).await?;
    let filled = fill(&store, events).await;
    let closed = store.close().await;
    filled?;
    closed?;
    let store = provider.open(app).await?;
    let before = peak_rss::reset();
    let started = Instant::now();
    let mut cursor = store.load_all_events(0).await?;
    let mut read = 0u64;
    while let Some(event) = cursor.next().await? {
        debug_assert_eq!(event.offset, read);
        read += 1;
    }
    let elapsed = started.elapsed();
    let grown = before.and_then(|before| peak_rss::peak().map(|peak| peak.saturating_sub(before)));
    store.close().await?;
    if read != events {
        return Err(vellum::Error::storage("bench: scan", format!("read {read} events of {events}")));
    }
    Ok(Measured { ops: read, elapsed, peak_growth: grown, ..Measured::default() })
}

async fn fill(store: &vellum::AnyStore, events: u64) -> Result<()> {
    let stored = store.next_event_offset().await?;
    for first in (stored..events).step_by(FILL_BATCH as usize) {
        let ops = (first..(first + FILL_BATCH).min(events))
            .map(|n| Operation::SaveEvent(event(format!("scan-{n}"), n, &format!("scan-{}", n % 1000))));
        store.persist(Batch::from(ops.collect::<Vec<_>>())).await?;
    }
    Ok(())
}

/// The process's peak resident memory (Linux: `VmHWM`, which writing 5 to `clear_refs` resets
/// to the current size).
mod peak_rss {
    /// Resets the peak to the current resident size and returns it, in bytes.
    pub(super) fn reset() -> Option<u64> {
        std::fs::write("/proc/self/clear_refs", "5").ok()?;
        field("VmRSS:")
    }

    /// The peak resident size since the last reset, in bytes.
    pub(super) fn peak() -> Option<u64> {
        field("VmHWM:")
    }

    fn field(name: &str) -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line.trim_start_matches(name).trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib * 1024)
    }
}
