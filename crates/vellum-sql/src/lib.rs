//! SQL providers for vellum: SQLite, PostgreSQL and MySQL/MariaDB.
//!
//! One crate, one module per dialect behind the features `sqlite`, `postgres` and `mysql` (all on
//! by default). Planning and group commit are `vellum_core`'s (`plan`, `commit`); what the
//! dialects share is written once here (the export statements and the schema's integer
//! mapping). A dialect module holds only its SQL, its row mapping, its connection handling and
//! its exclusive lock.

mod bulk;
#[cfg(any(feature = "postgres", feature = "mysql"))]
mod fields;
#[cfg(any(feature = "postgres", feature = "mysql"))]
mod lease;
mod reader;
mod schema;
mod store;
mod sums;
mod verify;

pub use reader::SqlReader;
pub use store::{Dialect, SqlStore};

#[cfg(any(feature = "postgres", feature = "mysql"))]
pub use lease::{DEFAULT_FAILOVER_TIMEOUT, MIN_FAILOVER_TIMEOUT};
pub use schema::SCHEMA_VERSION;
#[cfg(all(test, any(feature = "postgres", feature = "mysql")))]
mod test_support;
#[cfg(feature = "tls")]
mod tls;

#[cfg(feature = "mysql")]
pub mod mysql;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;
