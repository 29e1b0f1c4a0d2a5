//! [`RedbReader`]: an application's event log, read beside the store that writes it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use redb::{ReadOnlyDatabase, ReadableDatabase};
use vellum_core::provider::observe;
use vellum_core::{
    Error, EventCursor, EventPageSource, EventQuery, EventReader, EventRepository, PageFuture, Result,
};

use crate::PROVIDER;
use crate::file::{OrStorage, guarded};
use crate::records::Codec;
use crate::tables::Reader;

/// A reader of one application's event log in a [`RedbProvider`](crate::RedbProvider)'s
/// directory, made by [`Provider::open_reader`](vellum_core::Provider::open_reader). It opens the
/// file read-only beside the store's writer (redb's single-writer sharing mode), in this process
/// or another, and each read sees the latest commit. Its followers poll.
#[derive(Debug)]
pub struct RedbReader {
    shared: Arc<Shared>,
}

/// What the reader and its cursors share.
struct Shared {
    app_key: String,
    path: PathBuf,
    /// The open file; `None` once closed. Reads hold the read lock while they run.
    db: RwLock<Option<ReadOnlyDatabase>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("app_key", &self.app_key)
            .field("path", &self.path)
            .field("open", &self.db.read().is_some())
            .finish()
    }
}

impl Shared {
    /// Runs `f` on a fresh read transaction inside a `vellum.query` span, or returns `Closed`.
    fn read<T>(&self, query: &'static str, f: impl FnOnce(&Reader<'_>) -> Result<T>) -> Result<T> {
        observe::query_span(PROVIDER, &self.app_key, query).in_scope(|| {
            let guard = self.db.read();
            let db = guard.as_ref().ok_or(Error::Closed)?;
            guarded(&self.path, || {
                let txn = db.begin_read().or_storage(&self.path)?;
                let codec = Codec { file: &self.path, app_key: &self.app_key };
                f(&Reader { txn: &txn, file: &self.path, codec })
            })
        })
    }
}

impl RedbReader {
    pub(crate) fn new(app_key: String, path: PathBuf, db: ReadOnlyDatabase) -> Self {
        Self { shared: Arc::new(Shared { app_key, path, db: RwLock::new(Some(db)) }) }
    }

    /// The path of the redb file read.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    fn cursor(&self, query: EventQuery, min_offset: u64) -> Result<EventCursor> {
        if self.shared.db.read().is_none() {
            return Err(Error::Closed);
        }
        Ok(EventCursor::new(Arc::clone(&self.shared) as Arc<dyn EventPageSource>, query, min_offset))
    }
}

impl EventPageSource for Shared {
    fn load_page<'a>(&'a self, query: &'a EventQuery, from: u64, limit: usize) -> PageFuture<'a> {
        let name = query.span_name();
        Box::pin(async move { self.read(name, |r| r.events(query, from, limit)) })
    }

    fn is_closed(&self) -> bool {
        self.db.read().is_none()
    }
}

impl EventRepository for RedbReader {
    async fn next_event_offset(&self) -> Result<u64> {
        #[allow(clippy::redundant_closure_for_method_calls)]
        self.shared.read("next_event_offset", |r| r.next_event_offset())
    }

    async fn load_all_events(&self, min_offset: u64) -> Result<EventCursor> {
        self.cursor(EventQuery::All, min_offset)
    }

    async fn load_events_by_type(&self, portable_names: &[&str], min_offset: u64) -> Result<EventCursor> {
        self.cursor(EventQuery::by_type(portable_names.iter().copied()), min_offset)
    }

    async fn load_events_by_source(&self, handler_key: &str, instance_id: &str) -> Result<EventCursor> {
        self.cursor(EventQuery::by_source(handler_key, instance_id), 0)
    }
}

impl EventReader for RedbReader {
    async fn close(&self) -> Result<()> {
        let db = self.shared.db.write().take().ok_or(Error::Closed)?;
        db.close().or_storage(&self.shared.path)
    }
}
