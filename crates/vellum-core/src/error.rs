//! The one error type every vellum API returns, and the [`ErrorKind`] an engine acts on
//! (`docs/errors.md`).

use crate::operation::Operation;

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a vellum store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store was closed; every later call, including a second `close`, returns this.
    #[error("data store is closed")]
    Closed,

    /// Another store of this application key is open, in this process or another.
    #[error("data store for application {app_key:?} is locked by another engine instance")]
    Locked {
        /// The application key that could not be opened.
        app_key: String,
    },

    /// An operation's optimistic-concurrency precondition failed; nothing from the batch was
    /// applied. When several operations conflict, the first in batch order is reported.
    #[error("optimistic concurrency conflict in {} operation at index {index} ({})", op.name(), op.entity())]
    Conflict {
        /// The position of the operation in its batch.
        index: usize,
        /// The operation exactly as submitted.
        op: Box<Operation>,
    },

    /// The batch was rejected before any storage was touched.
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] InvalidBatch),

    /// An event with this message ID is already in the application's log; nothing from the
    /// batch was applied.
    #[error("an event with message ID {message_id:?} is already in the event log")]
    DuplicateEvent {
        /// The duplicated message ID.
        message_id: String,
    },

    /// A message referenced by its ID does not exist.
    #[error("message with ID {message_id:?} does not exist")]
    UnknownMessage {
        /// The message ID that was not found.
        message_id: String,
    },

    /// A bulk import was refused before anything was written
    /// (`bulk::check_import`).
    #[error("invalid import: {0}")]
    InvalidImport(#[from] ImportError),

    /// A `bulk::copy` was refused (non-empty destination) or did not verify.
    #[error("copy failed: {0}")]
    Copy(String),

    /// A store URL (or other configuration) that names no usable provider.
    #[error("invalid store URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The provider does not offer this operation (e.g. a SQL schema on the redb provider).
    #[error("{0}")]
    Unsupported(String),

    /// Several independent operations failed (e.g. closing every store of a
    /// [`DataStoreSet`](crate::DataStoreSet)); each error is kept.
    #[error("{} errors: {}", .0.len(), join(.0))]
    Multiple(Vec<Error>),

    /// The backing storage failed or refused: I/O, the database server, a lost lock, or data
    /// that does not decode. `kind` says which, so a caller can act without reading `context`.
    #[error("{context}")]
    Storage {
        /// What kind of failure this is ([`ErrorKind::Storage`] when nothing more is known).
        kind: ErrorKind,
        /// What vellum was doing, naming the application, file or table involved.
        context: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// What kind of failure an [`Error`] is, and so what a caller should do about it
/// (`docs/errors.md` has the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An optimistic-concurrency precondition failed: reload and handle the message again.
    Conflict,
    /// An event with this message ID is already stored: the message was handled before.
    DuplicateEvent,
    /// A referenced message does not exist.
    UnknownMessage,
    /// The input cannot be stored as given (invalid batch or import, a key too long for the
    /// provider, a character it cannot store, a row too large); the same input fails again.
    InvalidInput,
    /// The store was closed.
    Closed,
    /// Another engine holds the application's store. Retryable: the holder may let go.
    Locked,
    /// The store lost its exclusive lock and refuses every write: close it and open it again.
    Fenced,
    /// The storage cannot be reached right now (connection refused or reset, server restarting,
    /// too many connections, a deadlock or busy timeout). Retryable.
    Unavailable,
    /// Stored data is damaged or does not decode. Not retryable: restore from a backup.
    Corrupt,
    /// The configuration is wrong: a bad URL, a schema newer than this build, a missing schema,
    /// missing permissions. Not retryable until the configuration changes.
    Misconfigured,
    /// The provider does not offer this operation.
    Unsupported,
    /// Any other storage failure.
    Storage,
}

impl ErrorKind {
    /// Whether the same call, made again later, may succeed.
    #[must_use]
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Unavailable | Self::Locked)
    }
}

impl Error {
    /// A storage error of kind [`ErrorKind::Storage`] with a description of what was being done.
    pub fn storage(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::storage_kind(ErrorKind::Storage, context, source)
    }

    /// A storage error of the given kind, with a description of what was being done.
    pub fn storage_kind(
        kind: ErrorKind,
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Storage { kind, context: context.into(), source: source.into() }
    }

    /// What kind of failure this is.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Closed => ErrorKind::Closed,
            Self::Locked { .. } => ErrorKind::Locked,
            Self::Conflict { .. } => ErrorKind::Conflict,
            Self::InvalidBatch(_) | Self::InvalidImport(_) => ErrorKind::InvalidInput,
            Self::DuplicateEvent { .. } => ErrorKind::DuplicateEvent,
            Self::UnknownMessage { .. } => ErrorKind::UnknownMessage,
            Self::InvalidUrl { .. } => ErrorKind::Misconfigured,
            Self::Unsupported(_) => ErrorKind::Unsupported,
            Self::Multiple(errors) => errors.first().map_or(ErrorKind::Storage, Error::kind),
            Self::Copy(_) => ErrorKind::Storage,
            Self::Storage { kind, .. } => *kind,
        }
    }

    /// Whether the same call, made again later, may succeed ([`ErrorKind::is_retryable`]).
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }

    /// Whether this is a failure of the storage itself (not a verdict on the input), which
    /// fails a whole transaction.
    #[must_use]
    pub fn is_storage(&self) -> bool {
        matches!(self, Self::Storage { .. })
    }

    /// A conflict on the operation at `index`.
    #[must_use]
    pub fn conflict(index: usize, op: &Operation) -> Self {
        Self::Conflict { index, op: Box::new(op.clone()) }
    }

    /// Whether this is an optimistic-concurrency conflict.
    #[must_use]
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict { .. })
    }
}

/// Why a batch is invalid (docs/batches.md#validation).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidBatch {
    /// Two operations touch the same entity.
    #[error(
        "batch contains multiple operations for the same entity ({entity}) at indexes {first} and {second}"
    )]
    DuplicateEntity {
        /// The shared entity, formatted as Go does (e.g. `queue <id>`).
        entity: String,
        /// Index of the first operation.
        first: usize,
        /// Index of the second operation.
        second: usize,
    },
    /// A queue message's `next_attempt_at` cannot be stored as i64 microseconds.
    #[error("queue message {message_id:?} at index {index} has a next_attempt_at outside the storable range")]
    TimeOutOfRange {
        /// Index of the operation.
        index: usize,
        /// The message ID.
        message_id: String,
    },
}

/// Why an import was refused; nothing from it was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// The destination already holds a record with this key.
    #[error("record {index} ({record}) is already stored")]
    AlreadyStored {
        /// Position of the record in the import.
        index: usize,
        /// The record's key.
        record: String,
    },
    /// Two records of one import have the same key.
    #[error("record {index} ({record}) repeats the key of record {first}")]
    Repeated {
        /// Position of the second record.
        index: usize,
        /// Position of the first record.
        first: usize,
        /// The record's key.
        record: String,
    },
    /// An event does not continue the log densely.
    #[error("record {index} ({record}) does not continue the event log, whose next offset is {expected}")]
    OffsetGap {
        /// Position of the record.
        index: usize,
        /// The record's key.
        record: String,
        /// The offset the event had to have.
        expected: u64,
    },
    /// A revision of 0 means "not stored", so it cannot be imported.
    #[error("record {index} ({record}) has revision 0")]
    ZeroRevision {
        /// Position of the record.
        index: usize,
        /// The record's key.
        record: String,
    },
    /// A queue sequence of `u64::MAX` leaves no sequence for the next enqueue.
    #[error("record {index} ({record}) has enqueue sequence u64::MAX, which leaves none for later messages")]
    SequenceOutOfRange {
        /// Position of the record.
        index: usize,
        /// The record's key.
        record: String,
    },
    /// A queue time outside the storable range.
    #[error("record {index} ({record}) has a next_attempt_at outside the storable range")]
    TimeOutOfRange {
        /// Position of the record.
        index: usize,
        /// The record's key.
        record: String,
    },
}

fn join(errors: &[Error]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/errors.md#error-and-errorkind: conflict text names the op type; unknown-message text the ID.
    #[test]
    fn messages_name_what_failed() {
        let op = Operation::SaveOffset { application_key: "<app>".into(), current_offset: 1, next_offset: 2 };
        let conflict = Error::conflict(3, &op).to_string();
        assert!(conflict.contains("optimistic concurrency conflict in SaveOffset operation"), "{conflict}");
        assert!(conflict.contains("index 3"), "{conflict}");
        let unknown = Error::UnknownMessage { message_id: "<id>".into() }.to_string();
        assert!(unknown.contains("<id>"), "{unknown}");
        let locked = Error::Locked { app_key: "<app>".into() }.to_string();
        assert!(locked.contains("<app>"), "{locked}");
    }

    #[test]
    fn storage_errors_keep_their_source() {
        let err = Error::storage("reading /tmp/x.redb", std::io::Error::other("disk on fire"));
        assert_eq!(err.to_string(), "reading /tmp/x.redb");
        let source = std::error::Error::source(&err).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("disk on fire"));
        assert!(!err.is_conflict());
        assert_eq!(err.kind(), ErrorKind::Storage);
        assert!(!err.is_retryable());
    }

    #[test]
    fn kinds_say_what_to_do() {
        let unavailable = Error::storage_kind(ErrorKind::Unavailable, "connecting", "refused");
        assert!(unavailable.is_retryable());
        assert!(Error::Locked { app_key: "a".into() }.is_retryable());
        assert!(!Error::Closed.is_retryable());
        let fenced = Error::storage_kind(ErrorKind::Fenced, "writing", "lock lost");
        assert_eq!(fenced.kind(), ErrorKind::Fenced);
        assert!(!fenced.is_retryable());
        assert_eq!(Error::Multiple(vec![fenced, unavailable]).kind(), ErrorKind::Fenced);
        let invalid = Error::from(InvalidBatch::TimeOutOfRange { index: 0, message_id: "m".into() });
        assert_eq!(invalid.kind(), ErrorKind::InvalidInput);
    }
}
