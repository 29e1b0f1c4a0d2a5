//! [`SqlReader`]: one application's event log read beside its store, written once for every
//! dialect. It shares the store's reads and cursors (`store.rs`) and has no writer and no lock.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use vellum_core::{EventCursor, EventQuery, EventReader, EventRepository, Result, Wakeups};

use crate::store::{Dialect, ErrorMap, Shared};

/// A reader of one application's event log in a SQL database
/// ([`SqliteReader`](crate::sqlite::SqliteReader), [`PostgresReader`](crate::postgres::PostgresReader),
/// [`MysqlReader`](crate::mysql::MysqlReader)), made by
/// [`Provider::open_reader`](vellum_core::Provider::open_reader). Reads run on the dialect's
/// read connections, as a store's do; dropping the reader closes it.
pub struct SqlReader<D: Dialect> {
    shared: Arc<Shared<D>>,
}

impl<D: Dialect> SqlReader<D> {
    /// A reader over `dialect`'s reads; `commits` wakes its followers (`None`: they poll).
    pub(crate) fn new(dialect: D, errors: Option<ErrorMap>, commits: Option<Wakeups>) -> Self {
        Self { shared: Arc::new(Shared::new(dialect, errors, commits)) }
    }

    /// The dialect's reads (for its own accessors).
    #[allow(dead_code)]
    pub(crate) fn dialect(&self) -> &D {
        &self.shared.dialect
    }
}

impl<D: Dialect> fmt::Debug for SqlReader<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlReader")
            .field("provider", &D::PROVIDER)
            .field("app_key", &self.shared.dialect.app_key())
            .finish_non_exhaustive()
    }
}

impl<D: Dialect> EventRepository for SqlReader<D> {
    async fn next_event_offset(&self) -> Result<u64> {
        self.shared.next_event_offset().await
    }

    async fn load_all_events(&self, min_offset: u64) -> Result<EventCursor> {
        self.shared.cursor(EventQuery::All, min_offset)
    }

    async fn load_events_by_type(&self, portable_names: &[&str], min_offset: u64) -> Result<EventCursor> {
        self.shared.cursor(EventQuery::by_type(portable_names.iter().copied()), min_offset)
    }

    async fn load_events_by_source(&self, handler_key: &str, instance_id: &str) -> Result<EventCursor> {
        self.shared.cursor(EventQuery::by_source(handler_key, instance_id), 0)
    }
}

impl<D: Dialect> EventReader for SqlReader<D> {
    async fn close(&self) -> Result<()> {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return Err(vellum_core::Error::Closed);
        }
        self.shared.dialect.close();
        Ok(())
    }
}

impl<D: Dialect> Drop for SqlReader<D> {
    fn drop(&mut self) {
        if !self.shared.closed.swap(true, Ordering::AcqRel) {
            self.shared.dialect.close();
        }
    }
}
