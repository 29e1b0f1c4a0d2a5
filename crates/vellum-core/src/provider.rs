//! Everything a provider author needs, in one place.
//!
//! A provider stores and fetches; it decides nothing. Validation, precondition checks,
//! conflicts, event offsets, enqueue sequences, revisions, group commit and close draining are
//! written once in `vellum-core`, so every provider behaves the same by construction
//! (`docs/providers.md#writing-a-provider`). Writing one takes these steps:
//!
//! 1. **Read the stored state.** Implement [`PreBatchState`] over your storage: the stored
//!    revision of an aggregate, process or queue message, a process's timeouts, a consumer
//!    offset, whether an event ID is in the log. [`evaluate`] checks a batch against it and
//!    returns the [`Effect`]s to write. A provider that prefers one round trip per unit of work
//!    fetches the rows [`StateKeys`] lists into a [`Snapshot`], which implements
//!    [`PreBatchState`] itself.
//! 2. **Apply plans.** Implement [`Executor`]: [`Executor::execute`] runs one unit of [`Work`]
//!    (a group of at most [`MAX_GROUP`] batches, or an import) in one transaction. Read the
//!    stored [`Counters`], plan the work with [`Work::plan`] (that is, [`plan_group`] or
//!    [`plan_import`], which calls [`check_import`]), apply the [`Plan`]'s [`Write`]s in order,
//!    store [`Plan::after`] when [`Plan::counters_changed`], commit, and return
//!    [`Planned::outcomes`]. Return `Err` only when the transaction failed as a whole and
//!    nothing was committed. [`Executor::release`] frees the lock and connections once the
//!    queue is drained. An executor that hands work to another thread keeps it as
//!    [`SharedWork`].
//! 3. **Keep a [`WriteQueue`] in the store.** [`WriteQueue::spawn`] runs the writer on the
//!    current tokio runtime and lets a lone batch commit on its caller's task (your `execute`
//!    must not block its thread); or [`WriteQueue::new`] returns the queue and the writer
//!    future, to run on a thread of its own with [`block_on`] when your storage calls block. `persist`, `import` and `close` go through
//!    [`WriteQueue::persist`], [`WriteQueue::import`] and [`WriteQueue::close`], which give the
//!    documented cancel safety for free.
//! 4. **Serve reads.** Implement the repository traits' reads
//!    ([`AggregateRepository`](crate::AggregateRepository),
//!    [`EventRepository`](crate::EventRepository), [`OffsetRepository`](crate::OffsetRepository),
//!    [`ProcessRepository`](crate::ProcessRepository),
//!    [`QueueRepository`](crate::QueueRepository)), [`DataStore`](crate::DataStore),
//!    [`BulkStore`](crate::BulkStore) and [`Provider`](crate::Provider). Event queries return an
//!    [`EventCursor`](crate::EventCursor) over your [`EventPageSource`]: one
//!    [`PageFuture`] per page, holding nothing between pages. Every read returns
//!    [`Error::Closed`](crate::Error::Closed) after close.
//! 5. **Emit the shared spans** of [`observe`], and derive file or lock names with [`hash`].
//! 6. **Run the conformance suite.** In your tests, implement `vellum_conformance::Backend`
//!    (the storage under test: `provider()` returns a *new* provider value over the *same*
//!    storage) and instantiate every test with
//!    `vellum_conformance::conformance_tests!(make_backend)`.
//!
//! A working (if useless) executor: it plans every unit against empty state and counts the
//! writes, where a real one reads `work.keys()` from storage, applies each write and commits.
//!
//! ```
//! use vellum_core::provider::{Executor, Snapshot, Work, WriteQueue, block_on};
//! use vellum_core::{Batch, Operation, PersistResult, Result};
//!
//! struct Counting {
//!     writes: usize,
//! }
//!
//! impl Executor for Counting {
//!     const PROVIDER: &'static str = "counting";
//!
//!     fn app_key(&self) -> &str {
//!         "app"
//!     }
//!
//!     async fn execute(&mut self, work: Work<'_>) -> Result<Vec<Result<PersistResult>>> {
//!         let mut state = Snapshot::default(); // a real provider fetches `work.keys()`
//!         let counters = state.counters;
//!         let planned = work.plan(&mut state, counters)?;
//!         self.writes += planned.plan.writes.len(); // a real provider applies each write
//!         Ok(planned.outcomes)
//!     }
//!
//!     async fn release(self) {
//!         // A real provider releases the store's lock here.
//!     }
//! }
//!
//! # fn main() -> Result<()> {
//! // In `Provider::open`, after taking the lock: the store keeps the queue, the writer runs
//! // on a runtime (`tokio::spawn`) or, as here, on a thread of its own.
//! let (queue, writer) = WriteQueue::new(Counting { writes: 0 });
//! let thread = std::thread::spawn(move || block_on(writer));
//! block_on(async {
//!     let offset = Operation::SaveOffset { application_key: "a".into(), current_offset: 0, next_offset: 1 };
//!     queue.persist(Batch::from(vec![offset])).await?;
//!     queue.close().await
//! })?;
//! thread.join().expect("the writer thread");
//! # Ok(())
//! # }
//! ```
//!
//! In the provider's tests, `vellum_conformance::conformance_tests!(make_backend)` runs the suite
//! (see the `vellum-conformance` crate).

pub use crate::bulk::check_import;
pub use crate::commit::{Executor, MAX_GROUP, SharedWork, Work, WriteQueue, block_on};
pub use crate::cursor::{EventPageSource, PageFuture};
pub use crate::eval::{Effect, PreBatchState, evaluate};
pub use crate::plan::{
    Counters, Plan, Planned, QueueState, Snapshot, StateKeys, Write, first_touches, plan_group, plan_import,
};
pub use crate::standby::{Backoff, MAX_PAUSE, retry_locked};
/// Stable hashes for names derived from keys (file names, lock names, lock keys).
pub mod hash {
    pub use crate::hash::*;
}

/// Record checksums: the sum of each record kind, and the corrupt error a mismatch is
/// (docs/integrity.md).
pub mod integrity {
    pub use crate::integrity::*;
}

/// Which file a path names: canonical paths (symbolic links resolved) and file identities.
pub mod files {
    pub use crate::files::*;
}

/// Creating a store's new file so that its name only ever holds a complete file.
pub mod publish {
    pub use crate::publish::*;
}

/// The `tracing` spans every provider emits, named once.
pub mod observe {
    pub use crate::observe::*;
}
