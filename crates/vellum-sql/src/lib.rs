//! SQL providers for vellum: SQLite, PostgreSQL and MySQL/MariaDB.
//!
//! One crate, one module per dialect behind the features `sqlite`, `postgres` and `mysql` (all on
//! by default). What every dialect shares is written once here: group planning ([`plan`]: which
//! rows a group of batches reads, the pre-batch snapshot, the ordered writes) and group commit
//! ([`group`]), and the statements and rows of bulk export/import ([`bulk`]). A dialect module holds only its schema, its statements, its connection handling
//! and its exclusive lock.

pub mod bulk;
pub mod group;
pub mod plan;
pub mod schema;
#[cfg(all(test, any(feature = "postgres", feature = "mysql")))]
mod test_support;

#[cfg(feature = "mysql")]
pub mod mysql;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;
