//! The vellum persistence contract.
//!
//! vellum stores, per application of a Dogma-style engine, aggregate meta-data, an append-only
//! event log with dense offsets, process state, a durable message queue and consumer offsets.
//! Every write is a [`Batch`] committed atomically under optimistic concurrency control.
//!
//! This crate holds what every provider shares: the model, [`Batch`] and [`Operation`],
//! [`Error`], the repository traits and [`Provider`], the [`EventCursor`], [`DataStoreSet`] and
//! bulk export and import ([`bulk`]). It knows no backend.
//!
//! Provider authors start at [`provider`]: it explains how to write a provider and re-exports
//! the shared machinery one builds on (batch evaluation, planning, the commit engine, cursor
//! paging, tracing spans and stable hashes).

pub mod archive;
mod batch;
pub mod bulk;
mod commit;
mod cursor;
mod envelope;
mod error;
mod eval;
mod files;
mod follow;
mod hash;
mod integrity;
mod model;
mod observe;
mod operation;
mod plan;
pub mod provider;
mod publish;
mod read_ahead;
mod repository;
mod set;
mod standby;
pub mod time;
pub mod verify;

pub use batch::Batch;
pub use bulk::{BulkStore, ExportFrom, QueueKey, Record, Section, StoreStats};
pub use cursor::{DEFAULT_PAGE_SIZE, EventCursor, EventPageSource, EventQuery, MAX_PAGE_SIZE, PageFuture};
pub use envelope::{Envelope, Identity};
pub use error::{Error, ErrorKind, InvalidBatch, Result};
pub use follow::{DEFAULT_POLL_CAP, Follower, Wakeups};
pub use model::{AggregateMetaData, Event, Packet, PersistResult, ProcessInstance, QueueMessage};
pub use operation::{EntityKey, Operation};
pub use repository::{
    AggregateRepository, DataStore, EventReader, EventRepository, OffsetRepository, Persister,
    ProcessRepository, Provider, QueueRepository,
};
pub use set::DataStoreSet;
