//! The PostgreSQL dialect: [`PostgresProvider`] over `tokio-postgres` and `deadpool-postgres`.
//!
//! Choices, and why:
//! - **Schema.** Every table lives in one PostgreSQL schema (option [`PostgresOptions::schema`],
//!   default `vellum`), so several deployments or test runs share a database without meeting.
//!   Keys are `TEXT COLLATE "C"` (byte-wise order and equality; no locale folding), envelopes
//!   are `BYTEA` holding the encoded envelope (docs/events.md#envelopes-are-stored-exactly), queue times `BIGINT` microseconds plus
//!   an enqueue sequence (docs/queue.md#queue-order). Opening a store creates the schema when missing unless
//!   [`PostgresOptions::migrate`] is off; a database at a newer version is refused.
//! - **Reads** run on a `deadpool` pool with prepared, cached statements; event cursors page by
//!   offset with a fresh pooled query per page, holding nothing between pages (docs/events.md#cursors).
//! - **Exclusivity** (docs/locking.md#postgresql). Each open store owns one dedicated connection (not from the pool),
//!   which takes `pg_try_advisory_lock(key)` at open (`key` = the schema's OID in the high 32
//!   bits, the application's lock id from `vellum_lock` in the low 32, so no two applications
//!   share a key): `false` means another engine holds it, so the open fails with `Locked` at
//!   once (`open_wait` retries it on the same connection). The server drops the lock when that
//!   session ends, so a killed holder frees the key.
//! - **Leases and fencing** (docs/failover.md#leases). The lock session runs with
//!   `idle_session_timeout` set to the failover timeout and the writer heartbeats while idle, so
//!   the server ends the session of an engine it cannot hear. The same connection is the store's
//!   only writer, so a store that lost its lock (its session ended, e.g. `pg_terminate_backend`)
//!   cannot write through another session; its connection task is watched, an unanswered
//!   heartbeat gives the session up, and every later persist fails as `Fenced`.
//! - **Group commit.** The commit engine (`vellum_core::commit`) queues concurrent persists and
//!   the store's writer commits each group in one transaction, usually in ONE round trip:
//!   1. It plans the group (`vellum_core::provider::plan_group`) against the state the
//!      batches themselves expect (each key as the first batch touching it expects it: the
//!      submitted revision, events absent) and the counters it left after its last commit
//!      (it is the app's only writer while it holds the lock).
//!   2. It sends one statement that writes the group and checks exactly that assumed state
//!      (`simple.rs`): data-modifying CTEs update the counters only where they are what this
//!      writer left, insert the events and the aggregates and offsets assumed absent (a stored
//!      row fails the insert with a unique violation), update those assumed at a revision
//!      only at that revision (counting the matches), and probe only assumed keys it does not
//!      write; a failed check divides by zero. Parts the group lacks are left out and one-row
//!      parts take scalars, so a lone batch's statement touches only what it writes. A statement
//!      is its own transaction, so a failed check writes nothing. Groups with
//!      process or queue operations send `BEGIN`, the check, set-based writes, the process and
//!      queue writes in plan order (the timeout cascade interacts with them), the counters and
//!      `COMMIT`, all pipelined on the one connection.
//!   3. If the check failed (a stale batch, a duplicate event, the first group after open),
//!      the writer reads the real state (pipelined `UNNEST` key probes), plans again and
//!      commits: two round trips. Conflicting batches fail alone either way.
//!
//!   The writer's statements are prepared once (a simple group's, once per shape), planned
//!   generically with sequential scans off (they are key probes whatever the table size was
//!   when planned).
//! - **Abandoned persists** (docs/close-and-cancellation.md#cancellation). A batch whose `persist` future was dropped while queued is
//!   skipped by the shared committer; one already taken commits whole or not at all.

mod bulk;
mod listen;
mod reads;
mod simple;
mod sql;
mod tls;
mod upgrade;
mod verify;
mod writer;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tls_tests;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::Client;
use tracing::Instrument as _;
use vellum_core::provider::observe;
use vellum_core::provider::{WriteQueue, retry_locked};
use vellum_core::{Error, ErrorKind, Provider, Result};

use crate::lease::Lease;
use crate::schema::SCHEMA_VERSION;
pub use reads::PostgresReads;
use sql::Sql;
use tls::MakeRustlsConnect;

/// An open store of one application in a PostgreSQL database; holds the application's advisory
/// lock on a dedicated connection until closed or dropped.
pub type PostgresStore = crate::SqlStore<PostgresReads>;

/// A reader of one application's event log in a PostgreSQL schema: its followers wake on
/// `NOTIFY` from the committing transaction (polling only while its listener reconnects, or
/// always for a provider built on a caller's pool).
pub type PostgresReader = crate::SqlReader<PostgresReads>;

impl PostgresStore {
    /// The process ID of the server session holding this store's lock (`pg_backend_pid()`).
    #[must_use]
    pub fn lock_backend_pid(&self) -> i32 {
        self.dialect().backend_pid
    }

    /// The advisory-lock key this store holds: its schema's OID in the high 32 bits, the
    /// application's lock id in the low 32 (docs/locking.md#postgresql).
    #[must_use]
    pub fn advisory_lock_key(&self) -> i64 {
        self.dialect().lock_key
    }
}
use writer::{LockConn, PgWriter};

/// The provider's name in tracing spans.
const PROVIDER: &str = "postgres";

/// The default schema name.
pub const DEFAULT_SCHEMA: &str = "vellum";

/// A storage error naming the application and what was being done, of the kind a driver error
/// says it is (`docs/errors.md`).
fn storage(app_key: &str, doing: &str, e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
    let source = e.into();
    Error::storage_kind(
        kind_of_any(&*source),
        format!("postgres: {doing} for application {app_key:?}"),
        source,
    )
}

/// What a driver or pool error means for the caller: a pool that cannot make a connection
/// (the server is restarting, say) or times out waiting for one is as unavailable as the server.
fn kind_of_any(error: &(dyn std::error::Error + 'static)) -> ErrorKind {
    use deadpool_postgres::PoolError;
    if let Some(e) = error.downcast_ref::<tokio_postgres::Error>() {
        return kind_of(e);
    }
    match error.downcast_ref::<PoolError>() {
        Some(PoolError::Backend(e)) => kind_of(e),
        Some(PoolError::Timeout(_)) => ErrorKind::Unavailable,
        _ => ErrorKind::Storage,
    }
}

/// `config` for a connection that must notice a dead server or network within about the
/// lease's timeout (the lock session, a reader's listener): TCP keepalives and a user timeout.
fn watched(config: &tokio_postgres::Config, lease: Lease) -> tokio_postgres::Config {
    let mut config = config.clone();
    config
        .keepalives(true)
        .keepalives_idle(lease.keepalive_idle())
        .keepalives_interval(Duration::from_secs(1))
        .keepalives_retries(3)
        .tcp_user_timeout(lease.timeout());
    config
}

/// What a driver error means for the caller.
fn kind_of(error: &tokio_postgres::Error) -> ErrorKind {
    if let Some(db) = error.as_db_error() {
        let code = db.code().code();
        return match code {
            // Connection exceptions, shutdown and restart, too many connections, and
            // serialization failures or deadlocks: try again.
            _ if code.starts_with("08") => ErrorKind::Unavailable,
            "57P01" | "57P02" | "57P03" | "53300" | "40001" | "40P01" => ErrorKind::Unavailable,
            // Authentication, a missing database, missing privileges.
            _ if code.starts_with("28") => ErrorKind::Misconfigured,
            "3D000" | "42501" => ErrorKind::Misconfigured,
            // A character the encoding cannot hold (NUL), a value or index row too long.
            "22021" | "22001" | "54000" => ErrorKind::InvalidInput,
            _ => ErrorKind::Storage,
        };
    }
    let io = std::error::Error::source(error).is_some_and(<dyn std::error::Error>::is::<std::io::Error>);
    if error.is_closed() || io { ErrorKind::Unavailable } else { ErrorKind::Storage }
}

/// How a [`PostgresProvider`] is set up.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    schema: String,
    migrate: bool,
    max_pool_size: Option<usize>,
    lease: Lease,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            schema: DEFAULT_SCHEMA.to_owned(),
            migrate: true,
            max_pool_size: None,
            lease: Lease::default(),
        }
    }
}

impl PostgresOptions {
    /// The defaults: schema [`DEFAULT_SCHEMA`], migrate on open, default pool size.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The PostgreSQL schema holding vellum's tables: 1 to 63 characters of `[a-z0-9_]`, not
    /// starting with a digit or `pg_` (checked when the provider is built).
    #[must_use]
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Whether opening a store creates or upgrades the schema (default `true`). When off, a
    /// missing schema is an error naming [`create_schema`].
    #[must_use]
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// The read pool's maximum size for providers built from a URL (default: 2 × CPU cores + 4).
    #[must_use]
    pub fn max_pool_size(mut self, size: usize) -> Self {
        self.max_pool_size = Some(size.max(1));
        self
    }

    /// How soon the server frees a store's lock once it hears nothing from the engine
    /// holding it (default [`DEFAULT_FAILOVER_TIMEOUT`](crate::DEFAULT_FAILOVER_TIMEOUT), 10 s;
    /// at least 1 s, whole seconds). The lock session runs with `idle_session_timeout` and
    /// `idle_in_transaction_session_timeout` set to it, and the store sends a heartbeat after a
    /// third of it idle, so an engine cut off from the server (without its connection closing)
    /// loses the lock within this and a standby takes over (docs/failover.md#leases). Needs
    /// PostgreSQL 14 or newer; on older servers only TCP keepalives bound it.
    #[must_use]
    pub fn failover_timeout(mut self, timeout: Duration) -> Self {
        self.lease = Lease::new(timeout);
        self
    }
}

/// How a provider gets each store's dedicated lock connection.
enum Connect {
    /// Connect with this configuration and TLS connector (a provider built from a URL).
    Config(Box<tokio_postgres::Config>, MakeRustlsConnect),
    /// Detach a connection from the caller's pool.
    Pool,
}

struct Inner {
    pool: Pool,
    connect: Connect,
    sql: Arc<Sql>,
    migrate: bool,
    lease: Lease,
    /// `sslrootcert=FILE` of the URL, named in certificate errors.
    ca: Option<String>,
}

/// Opens PostgreSQL stores. Clones share the pool.
///
/// Built from a URL ([`PostgresProvider::from_url`]), it owns its pool (dropped with the last
/// clone and store). Built from a caller's pool ([`PostgresProvider::from_pool`]), it never
/// closes that pool; each open store then detaches one connection from it for its lock.
#[derive(Clone)]
pub struct PostgresProvider {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PostgresProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresProvider").field("schema", &self.inner.sql.schema).finish_non_exhaustive()
    }
}

fn default_pool_size() -> usize {
    std::thread::available_parallelism().map_or(4, std::num::NonZero::get) * 2 + 4
}

impl PostgresProvider {
    /// A provider for `postgres://user@host:port/database` with default options (TLS as the
    /// URL's `sslmode` says, default `prefer`: see [`PostgresProvider::from_url_with`]).
    pub fn from_url(url: &str) -> Result<Self> {
        Self::from_url_with(url, PostgresOptions::default())
    }

    /// A provider for a `postgres://` URL. The pool connects lazily, so this does not touch
    /// the server. Must be called within a tokio runtime's context when used.
    ///
    /// TLS (rustls, no OpenSSL) follows libpq's URL parameters, for the pool and for every
    /// store's lock connection alike (`docs/tls.md`):
    /// - `sslmode`: `disable`; `prefer` (the default: TLS when the server offers it, plain
    ///   text otherwise, no certificate check); `require` (TLS or fail; no certificate check
    ///   unless `sslrootcert` is given, which makes it `verify-ca`); `verify-ca` (the server's
    ///   chain against `sslrootcert`); `verify-full` (the chain, and that the certificate names
    ///   the URL's host).
    /// - `sslrootcert=FILE`: PEM CA certificate(s); required by `verify-ca` and `verify-full`.
    /// - `sslcert=FILE`, `sslkey=FILE`: a PEM client certificate and its key, sent when the
    ///   server asks for one.
    ///
    /// Every other parameter is tokio-postgres's. A bad `sslmode`, a verifying mode without
    /// `sslrootcert`, or a file that cannot be read or parsed is
    /// [`ErrorKind::Misconfigured`], naming the parameter and file; the files are read here.
    pub fn from_url_with(url: &str, options: PostgresOptions) -> Result<Self> {
        sql::validate_schema(&options.schema)?;
        let tls = tls::from_url(url)?;
        let mut config = tokio_postgres::Config::from_str(&tls.url)
            .map_err(|e| Error::storage("postgres: parsing the connection URL", e))?;
        config.ssl_mode(tls.mode);
        if config.get_hosts().is_empty() {
            // Only `hostaddr`s: tokio-postgres names the TLS server by `host`, so name each by
            // its address (which libpq checks a certificate against in this case).
            for addr in config.get_hostaddrs().to_vec() {
                config.host(addr.to_string());
            }
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        let manager = Manager::from_config(
            config.clone(),
            tls.connector.clone(),
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(options.max_pool_size.unwrap_or_else(default_pool_size))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(10)))
            .recycle_timeout(Some(Duration::from_secs(10)))
            .build()
            .map_err(|e| Error::storage("postgres: building the connection pool", e))?;
        Ok(Self::build(pool, Connect::Config(Box::new(config), tls.connector), options, tls.ca))
    }

    /// A provider over a caller-owned pool, which vellum never closes. Each open store detaches
    /// one connection from it (the pool may then create another) for its lock and writes.
    pub fn from_pool(pool: Pool, options: PostgresOptions) -> Result<Self> {
        sql::validate_schema(&options.schema)?;
        Ok(Self::build(pool, Connect::Pool, options, None))
    }

    fn build(pool: Pool, connect: Connect, options: PostgresOptions, ca: Option<String>) -> Self {
        let sql = Arc::new(Sql::new(options.schema));
        let inner = Inner { pool, connect, sql, migrate: options.migrate, lease: options.lease, ca };
        Self { inner: Arc::new(inner) }
    }

    /// The read pool.
    #[must_use]
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// The schema holding this provider's tables.
    #[must_use]
    pub fn schema(&self) -> &str {
        &self.inner.sql.schema
    }

    async fn pooled(&self, doing: &str) -> Result<deadpool_postgres::Object> {
        self.inner.pool.get().await.map_err(|e| {
            let context = format!("postgres: getting a pooled connection for {doing}");
            tls::connect_error(context.clone(), &e, self.inner.ca.as_deref())
                .unwrap_or_else(|| Error::storage_kind(kind_of_any(&e), context, e))
        })
    }

    /// Creates this provider's schema and tables if missing ([`create_schema`]).
    ///
    /// # Cancel safety
    /// Runs on a connection taken out of the pool for good (closed afterwards): if the future
    /// is dropped part-way, no pooled session keeps the schema lock or an open transaction.
    pub async fn create_schema(&self) -> Result<()> {
        let client = deadpool_postgres::Object::take(self.pooled("create_schema").await?);
        create_schema(&client, self.schema()).await
    }

    /// Drops this provider's schema with all its data, if present ([`drop_schema`]).
    ///
    /// # Cancel safety
    /// As [`PostgresProvider::create_schema`].
    pub async fn drop_schema(&self) -> Result<()> {
        let client = deadpool_postgres::Object::take(self.pooled("drop_schema").await?);
        drop_schema(&client, self.schema()).await
    }

    /// The vellum schema version stored in this provider's schema, `None` when it has none.
    pub async fn schema_version(&self) -> Result<Option<i64>> {
        let client = self.pooled("schema_version").await?;
        match schema_version(&client, self.schema()).await {
            Ok(version) => Ok(version),
            Err(None) => Ok(None),
            Err(Some(e)) => {
                Err(Error::storage(format!("postgres: reading the version of schema {:?}", self.schema()), e))
            }
        }
    }

    /// A new dedicated connection for a store's lock; a connection vellum makes itself has TCP
    /// keepalives and a user timeout bounded by the lease, and its task is watched.
    async fn connect(&self, app_key: &str) -> Result<LockConn> {
        match &self.inner.connect {
            Connect::Config(config, tls) => {
                let config = watched(config, self.inner.lease);
                let (client, connection) = config.connect(tls.clone()).await.map_err(|e| {
                    let context =
                        format!("postgres: opening the lock connection for application {app_key:?}");
                    tls::connect_error(context, &e, self.inner.ca.as_deref())
                        .unwrap_or_else(|| storage(app_key, "opening the lock connection", e))
                })?;
                Ok(LockConn::watched(client, tokio::spawn(connection)))
            }
            Connect::Pool => {
                let object = self.pooled("a store's lock connection").await?;
                Ok(LockConn::detached(deadpool_postgres::Object::take(object)))
            }
        }
    }

    /// Checks the schema version, creating the schema first when allowed.
    async fn ensure_schema(&self, client: &Client, app_key: &str) -> Result<()> {
        let schema = self.schema();
        match schema_version(client, schema).await {
            Ok(Some(version)) if version == SCHEMA_VERSION => return Ok(()),
            Ok(Some(version)) if version > SCHEMA_VERSION => return Err(newer_version(schema, version)),
            Ok(_) | Err(None) if self.inner.migrate => {}
            Ok(_) | Err(None) => {
                return Err(Error::storage_kind(
                    ErrorKind::Misconfigured,
                    format!("postgres: opening application {app_key:?}"),
                    format!(
                        "schema {schema:?} has no vellum tables at version {SCHEMA_VERSION} and migration \
                         on open is off: call create_schema first, or enable PostgresOptions::migrate"
                    ),
                ));
            }
            Err(Some(e)) => return Err(storage(app_key, "reading the schema version", e)),
        }
        create_schema(client, schema).await
    }
}

/// The stored schema version; `Err(None)` if the schema or its version table is missing.
/// Never fails on a missing table, so it can run inside a transaction.
async fn schema_version(
    client: &Client,
    schema: &str,
) -> std::result::Result<Option<i64>, Option<tokio_postgres::Error>> {
    let table = format!("{schema}.vellum_schema");
    let row = client.query_one("SELECT to_regclass($1) IS NOT NULL", &[&table]).await.map_err(Some)?;
    if !row.try_get::<_, bool>(0).map_err(Some)? {
        return Err(None);
    }
    let row = client.query_one(&format!("SELECT max(version) FROM {table}"), &[]).await.map_err(Some)?;
    row.try_get(0).map_err(Some)
}

fn newer_version(schema: &str, version: i64) -> Error {
    Error::storage_kind(
        ErrorKind::Misconfigured,
        format!("postgres: schema {schema:?} is at version {version}"),
        format!(
            "schema version {version} is newer than version {SCHEMA_VERSION}, the newest this build of \
             vellum knows; upgrade vellum"
        ),
    )
}

/// Creates `schema` and vellum's tables in it, if missing, in one transaction serialised by an
/// advisory lock (so concurrent calls, from any process, do not race). Idempotent. Refuses a
/// schema at a newer version than this build's [`SCHEMA_VERSION`].
pub async fn create_schema(client: &Client, schema: &str) -> Result<()> {
    sql::validate_schema(schema)?;
    let fail = |e: tokio_postgres::Error| Error::storage(format!("postgres: creating schema {schema:?}"), e);
    // A session lock taken before the transaction starts, so the transaction sees what an
    // earlier holder committed (catalog included).
    let (high, low) = sql::schema_lock_key(schema);
    client.execute("SELECT pg_advisory_lock($1, $2)", &[&high, &low]).await.map_err(fail)?;
    let result = async {
        let stored = match schema_version(client, schema).await {
            Ok(Some(version)) if version > SCHEMA_VERSION => return Err(newer_version(schema, version)),
            Ok(Some(version)) if version == SCHEMA_VERSION => return Ok(()),
            Ok(version) => version,
            Err(None) => None,
            Err(Some(e)) => return Err(fail(e)),
        };
        client.batch_execute("BEGIN").await.map_err(fail)?;
        if stored.is_some_and(|v| v < 2) {
            upgrade::add_checksums(client, schema).await.map_err(fail)?;
        }
        for statement in sql::create_statements(schema) {
            client.batch_execute(&statement).await.map_err(fail)?;
        }
        client.execute(&format!("DELETE FROM {schema}.vellum_schema"), &[]).await.map_err(fail)?;
        let insert = format!("INSERT INTO {schema}.vellum_schema (version) VALUES ($1)");
        client.execute(&insert, &[&SCHEMA_VERSION]).await.map_err(fail)?;
        client.batch_execute("COMMIT").await.map_err(fail)
    }
    .await;
    if result.is_err() {
        let _ = client.batch_execute("ROLLBACK").await;
    }
    let unlocked = client.execute("SELECT pg_advisory_unlock($1, $2)", &[&high, &low]).await.map_err(fail);
    result.and(unlocked.map(drop))
}

/// Drops `schema` with every table and row in it, if present. Idempotent.
pub async fn drop_schema(client: &Client, schema: &str) -> Result<()> {
    sql::validate_schema(schema)?;
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .map_err(|e| Error::storage(format!("postgres: dropping schema {schema:?}"), e))
}

impl Provider for PostgresProvider {
    type Store = PostgresStore;
    type Reader = PostgresReader;

    /// A reader on the provider's pool, with a `LISTEN` connection of its own that wakes its
    /// followers on every commit that appends events (zero queries while nothing is written).
    /// The schema must be at this build's version; nothing is created.
    async fn open_reader(&self, app_key: &str) -> Result<PostgresReader> {
        let span = observe::open_span(PROVIDER, app_key);
        let result = self.open_reader_of(app_key).instrument(span.clone()).await;
        observe::record(&span, result)
    }

    async fn open(&self, app_key: &str) -> Result<PostgresStore> {
        self.open_wait(app_key, Duration::ZERO).await
    }

    /// Opens the store of `app_key`, waiting up to `timeout` for its lock: one connection is
    /// made, and `pg_try_advisory_lock` retried on it with back-off (5 ms doubling to 100 ms).
    /// Never a blocking `pg_advisory_lock`: a dropped wait must not leave a session queued for
    /// the lock, which would take it unseen when the holder lets go.
    async fn open_wait(&self, app_key: &str, timeout: Duration) -> Result<PostgresStore> {
        let span = observe::open_span(PROVIDER, app_key);
        let result = self.open_store(app_key, timeout).instrument(span.clone()).await;
        observe::record(&span, result)
    }
}

impl PostgresProvider {
    async fn open_store(&self, app_key: &str, wait: Duration) -> Result<PostgresStore> {
        let mut lock = self.connect(app_key).await?;
        self.ensure_schema(lock.client(), app_key).await?;
        lock.key = self.lock_key(lock.client(), app_key).await?;
        let (client, key) = (lock.client(), lock.key);
        let backend_pid = retry_locked(wait, || try_lock(client, key, app_key)).await?;
        client
            .execute(&self.inner.sql.ensure_app, &[&app_key, &crate::sums::write::counters(app_key, 0, 0)])
            .await
            .map_err(|e| storage(app_key, "creating the application's counter row", e))?;
        configure_lock_session(client, self.inner.lease, app_key).await?;
        let lock = Arc::new(lock);
        let executor = PgWriter::new(app_key.to_owned(), lock, &self.inner.sql, self.inner.lease).await?;
        let writes = WriteQueue::spawn(executor);
        let reads = PostgresReads {
            app_key: app_key.to_owned(),
            pool: self.inner.pool.clone(),
            sql: Arc::clone(&self.inner.sql),
            backend_pid,
            lock_key: key,
            listener: None,
        };
        Ok(PostgresStore::new(reads, writes))
    }

    /// A reader: the application's lock key names its `NOTIFY` channel, on which a connection
    /// of the reader's own listens (a provider built on a caller's pool cannot receive
    /// notifications through it: its readers poll).
    async fn open_reader_of(&self, app_key: &str) -> Result<PostgresReader> {
        let client = self.pooled("opening a reader").await?;
        let schema = self.schema();
        match schema_version(&client, schema).await {
            Ok(Some(version)) if version == SCHEMA_VERSION => {}
            Ok(Some(version)) if version > SCHEMA_VERSION => return Err(newer_version(schema, version)),
            Ok(found) => {
                let found =
                    found.map_or_else(|| "has no vellum tables".to_owned(), |v| format!("is at version {v}"));
                return Err(Error::storage_kind(
                    ErrorKind::Misconfigured,
                    format!("postgres: opening a reader of application {app_key:?}"),
                    format!(
                        "schema {schema:?} {found}, not version {SCHEMA_VERSION}: open the application's \
                         store once (which creates or upgrades the schema), then read it"
                    ),
                ));
            }
            Err(None) => {
                return Err(Error::storage_kind(
                    ErrorKind::Misconfigured,
                    format!("postgres: opening a reader of application {app_key:?}"),
                    format!("schema {schema:?} has no vellum tables: open the application's store once"),
                ));
            }
            Err(Some(e)) => return Err(storage(app_key, "reading the schema version", e)),
        }
        let key = self.lock_key(&client, app_key).await?;
        drop(client);
        let (listener, wakeups) = match &self.inner.connect {
            Connect::Config(config, tls) => {
                let config = watched(config, self.inner.lease);
                let (listener, wakeups) = listen::spawn(config, tls.clone(), listen::channel(key));
                (Some(listener), Some(wakeups))
            }
            Connect::Pool => (None, None),
        };
        let reads = PostgresReads {
            app_key: app_key.to_owned(),
            pool: self.inner.pool.clone(),
            sql: Arc::clone(&self.inner.sql),
            backend_pid: 0,
            lock_key: key,
            listener,
        };
        Ok(crate::SqlReader::new(reads, None, wakeups))
    }

    /// The application's advisory-lock key, allocating its lock id on first use.
    async fn lock_key(&self, client: &Client, app_key: &str) -> Result<i64> {
        let schema = self.schema();
        let fail = |e| storage(app_key, "allocating the application's lock id", e);
        client.execute(&sql::allocate_lock_id(schema), &[&app_key]).await.map_err(fail)?;
        let row = client.query_one(&sql::lock_key(schema), &[&app_key, &schema]).await.map_err(fail)?;
        row.try_get(0).map_err(fail)
    }
}

/// One attempt at the store's advisory lock: the session's backend PID, or `Locked`.
async fn try_lock(client: &Client, key: i64, app_key: &str) -> Result<i32> {
    let fail = |e| storage(app_key, "taking the advisory lock", e);
    let row =
        client.query_one("SELECT pg_try_advisory_lock($1), pg_backend_pid()", &[&key]).await.map_err(fail)?;
    if !row.try_get::<_, bool>(0).map_err(fail)? {
        return Err(Error::Locked { app_key: app_key.to_owned() });
    }
    row.try_get(1).map_err(fail)
}

/// Settings of the lock session: the server ends it (and frees the lock) after the lease's
/// timeout without a word from the engine, and detects a dead peer by TCP within about as long
/// (settings the server lacks, before PostgreSQL 14, are skipped); the writer's statements are
/// planned once, generically, as key probes (index scans) whatever the tables' size was then.
async fn configure_lock_session(client: &Client, lease: Lease, app_key: &str) -> Result<()> {
    let ms = lease.timeout().as_millis().to_string();
    let probe = lease.keepalive_idle().as_secs().to_string();
    let settings: [(&str, &str); 8] = [
        ("plan_cache_mode", "force_generic_plan"),
        ("enable_seqscan", "off"),
        ("idle_session_timeout", &ms),
        ("idle_in_transaction_session_timeout", &ms),
        ("tcp_keepalives_idle", &probe),
        ("tcp_keepalives_interval", "1"),
        ("tcp_keepalives_count", "3"),
        ("tcp_user_timeout", &ms),
    ];
    let (names, values): (Vec<&str>, Vec<&str>) = settings.into_iter().unzip();
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE c.name = 'idle_session_timeout' AND c.set IS NOT NULL) \
             FROM (SELECT v.name, set_config(v.name, v.value, false) AS set \
             FROM UNNEST($1::text[], $2::text[]) AS v(name, value) \
             WHERE EXISTS (SELECT 1 FROM pg_settings s WHERE s.name = v.name)) AS c",
            &[&names, &values],
        )
        .await
        .map_err(|e| storage(app_key, "configuring the lock connection", e))?;
    if row.try_get::<_, i64>(0).unwrap_or(0) == 0 {
        tracing::warn!(
            app_key,
            "postgres: this server has no idle_session_timeout (PostgreSQL 14+): an engine cut off without \
             its connection closing keeps its lock until TCP gives up"
        );
    }
    Ok(())
}
