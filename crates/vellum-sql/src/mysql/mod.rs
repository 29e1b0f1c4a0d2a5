//! The MySQL/MariaDB dialect (feature `mysql`), on `mysql_async` built without OpenSSL (TLS
//! through its `rustls-tls` feature with the ring provider; URL parameters in `tls.rs`).
//!
//! # Choices
//!
//! - **Byte-exact keys.** Key columns are `VARBINARY`, payloads `LONGBLOB`: no collation, so
//!   keys compare byte for byte (utf8 collations are case- and trailing-space-insensitive and
//!   would merge distinct keys). InnoDB caps an index key at 3072 bytes, so every key (app key,
//!   handler key, instance ID, message ID, portable name, source application key) is limited to
//!   [`MAX_KEY_BYTES`] bytes; a longer key fails its batch (or `open`) with an
//!   [`Error::Storage`] naming the field, before the database is touched, and is never
//!   truncated. Values are `LONGBLOB`s, limited only by the server's `max_allowed_packet`: a
//!   row that would not fit one packet fails its batch with an error saying so before it is
//!   sent (the server would drop the connection, and with it the store's lock).
//! - **Integers and times.** u64 values are bit-cast into `BIGINT`; queue times are `BIGINT`
//!   microseconds (docs/queue.md#time-precision-and-range): no `TIMESTAMP` (2038, session time zones).
//! - **Group commit** (`vellum_core::commit`): one writer per store commits every waiting batch in one
//!   transaction. It reads the counter row and every row the group's preconditions look at in
//!   *one* `UNION ALL` query, plans the group with the shared rules (`vellum_core::plan`), then
//!   writes with multi-row statements: one `INSERT` for all events, one upsert for all
//!   aggregates and one for all consumer offsets, and queue/process writes coalesced per kind
//!   where reordering cannot change the result; then one counter update and one `COMMIT`. A
//!   one-event batch costs five round trips (read, events, aggregates, counter, commit), as
//!   many as the naive one-transaction-per-batch loop. Conflicts are decided by the plan, never
//!   by affected-row counts (which `CLIENT_FOUND_ROWS` would change).
//! - **Exclusivity** (docs/locking.md#mysql-and-mariadb): `GET_LOCK(name, 0)` on a dedicated connection held for the store's
//!   lifetime; see `lock.rs` (`open_wait` retries it on the same connection). The same
//!   connection is the group-commit writer's, so a store whose lock connection died can no
//!   longer write; it then refuses every further write as `Fenced`. The session's
//!   `wait_timeout` is the failover timeout and the writer pings while idle, so the server ends
//!   the session (and frees the lock) of an engine it cannot hear (docs/failover.md#leases).
//! - **Reads** take a connection from a `mysql_async::Pool` per statement and return it at
//!   once; event cursors page by offset (`event_offset >= ? ORDER BY event_offset LIMIT ?`) and
//!   hold no connection between pages (docs/events.md#cursors). Statements are prepared and cached per connection
//!   by `mysql_async`; `IN` lists are padded to powers of two and multi-row inserts use a few
//!   fixed row counts, so the number of distinct statements stays small.
//! - **SQL text** uses only bound parameters (never SQL built from data), no double-quoted
//!   literals and no `ANSI_QUOTES` assumptions.
//! - **Schema**: see [`create_schema`]. Opening a store creates or checks it
//!   ([`MysqlOptions::migrate`]); a database at a newer schema version is refused.
//!
//! ```no_run
//! use vellum_core::{DataStore, Provider};
//! use vellum_sql::mysql::MysqlProvider;
//!
//! # async fn demo() -> vellum_core::Result<()> {
//! let provider = MysqlProvider::from_url("mysql://root@127.0.0.1:3306/engine")?;
//! let store = provider.open("billing").await?;
//! store.close().await?;
//! # Ok(())
//! # }
//! ```

mod assumed;
mod bulk;
mod lock;
mod reads;
mod schema;
mod tls;
mod verify;
mod writer;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tls_tests;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts, Row, Value};
use tracing::Instrument as _;
use vellum_core::provider::observe;
use vellum_core::provider::{Backoff, WriteQueue};
use vellum_core::{Error, ErrorKind, Provider, Result};
use writer::MysqlWriter;

use crate::lease::Lease;

pub use lock::lock_name;
pub use reads::MysqlReads;
pub use schema::{create_schema, drop_schema};

/// An open store of one application in a MySQL/MariaDB database; holds the application's
/// `GET_LOCK` on a dedicated connection until closed or dropped.
pub type MysqlStore = crate::SqlStore<MysqlReads>;

/// A reader of one application's event log in a MySQL or MariaDB database (its followers poll).
pub type MysqlReader = crate::SqlReader<MysqlReads>;

impl MysqlStore {
    /// The `GET_LOCK` name this store holds (see [`lock_name`]).
    #[must_use]
    pub fn lock_name(&self) -> &str {
        &self.dialect().lock_name
    }
}

/// The provider's name in tracing spans.
const PROVIDER: &str = "mysql";

/// The longest key, in bytes, this provider stores (see the module docs).
pub const MAX_KEY_BYTES: usize = 512;

/// Options of a [`MysqlProvider`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MysqlOptions {
    /// Create or check the schema when a store opens (default `true`). When `false`, opening a
    /// database without the schema fails with an error saying so.
    pub migrate: bool,
    /// The lock session's lease ([`MysqlOptions::failover_timeout`]).
    lease: Lease,
}

impl Default for MysqlOptions {
    fn default() -> Self {
        Self { migrate: true, lease: Lease::default() }
    }
}

impl MysqlOptions {
    /// Sets [`MysqlOptions::migrate`].
    #[must_use]
    pub fn migrate(mut self, migrate: bool) -> Self {
        self.migrate = migrate;
        self
    }

    /// How soon the server frees a store's lock once it hears nothing from the engine holding
    /// it (default [`DEFAULT_FAILOVER_TIMEOUT`](crate::DEFAULT_FAILOVER_TIMEOUT), 10 s; whole
    /// seconds, at least 1). The lock session runs with `wait_timeout` set to it and the store
    /// pings after a third of it idle, so an engine cut off from the server (without its
    /// connection closing) loses the lock within this and a standby takes over
    /// (docs/failover.md#leases).
    #[must_use]
    pub fn failover_timeout(mut self, timeout: Duration) -> Self {
        self.lease = Lease::new(timeout);
        self
    }
}

/// Opens application stores in a MySQL or MariaDB database.
///
/// Reads use a connection pool (the provider's own, or one the caller owns and vellum never
/// closes); each open store also holds one dedicated connection for its lock and its writes,
/// closed by [`DataStore::close`](vellum_core::DataStore::close). The provider's own pool keeps
/// no idle connections by default and is closed when the last provider clone is dropped or by
/// [`MysqlProvider::disconnect`].
#[derive(Debug, Clone)]
pub struct MysqlProvider {
    pool: Pool,
    /// The options the dedicated connections are made with; `None` until learnt from the
    /// caller's pool.
    opts: Option<Opts>,
    owned: bool,
    options: MysqlOptions,
    /// The URL's TLS mode and what the first connection learnt; shared by clones.
    tls: Arc<TlsState>,
}

/// A provider's TLS mode, and the options and pool it connects with instead of its first ones
/// once a connection showed that the mode needs it (`tls::fallback`): plain text for
/// `PREFERRED` against a server without TLS, a certificate name for `VERIFY_CA`.
#[derive(Debug)]
struct TlsState {
    mode: tls::Mode,
    /// `ssl-ca=FILE`, named in certificate errors.
    ca: Option<String>,
    fallback: OnceLock<(Opts, Pool)>,
}

impl TlsState {
    /// No workaround: options and pools given by the caller are used as they are.
    fn none() -> Arc<Self> {
        Arc::new(Self { mode: tls::Mode::Disabled, ca: None, fallback: OnceLock::new() })
    }
}

/// The default read pool: no idle connections kept open when unused, at most ten per CPU, no
/// connection reset between uses.
fn default_pool_opts() -> PoolOpts {
    let cpus = std::thread::available_parallelism().map_or(4, std::num::NonZero::get);
    let max = (cpus * 10).clamp(10, 100);
    let constraints = PoolConstraints::new(0, max).unwrap_or_default();
    PoolOpts::default()
        .with_constraints(constraints)
        // Reads change no session state; a reset would also drop the cached prepared statements.
        .with_reset_connection(false)
        .with_inactive_connection_ttl(Duration::from_secs(60))
        .with_ttl_check_interval(Duration::from_secs(30))
}

impl MysqlProvider {
    /// A provider with its own pool, from a `mysql://user:password@host:port/database` URL.
    ///
    /// `mysql_async` URL parameters are honoured; unless the URL sets `pool_min`/`pool_max`,
    /// the pool keeps no idle connections and opens at most 10 per CPU (10 to 100).
    ///
    /// TLS (rustls, no OpenSSL) follows the mysql client's options, as URL parameters
    /// (`docs/tls.md`), for the pool and every store's lock connection alike:
    /// - `ssl-mode` (any case): `DISABLED`; `PREFERRED` (the default without `ssl-ca`: TLS
    ///   when the server offers it, plain text otherwise, no certificate check); `REQUIRED`
    ///   (TLS or fail, no certificate check); `VERIFY_CA` (the default with `ssl-ca`: the
    ///   server's chain against `ssl-ca`); `VERIFY_IDENTITY` (the chain, and that the
    ///   certificate names the URL's host).
    /// - `ssl-ca=FILE`: PEM CA certificate(s), required by the verifying modes.
    /// - `ssl-cert=FILE`, `ssl-key=FILE`: a PEM client certificate and its key.
    ///
    /// With TLS on, a connection to a local server stays on TCP (`prefer_socket` off), so it
    /// is encrypted. `mysql_async`'s own `require_ssl`, `verify_ca`, `verify_identity` and
    /// `built_in_roots` are refused in favour of `ssl-mode`; other unknown parameters are
    /// refused as ever. A bad `ssl-mode`, a verifying mode without `ssl-ca`, or a file that
    /// cannot be read or parsed is [`ErrorKind::Misconfigured`], naming the parameter and file.
    pub fn from_url(url: &str) -> Result<Self> {
        Self::from_url_with(url, MysqlOptions::default())
    }

    /// A provider from a URL (see [`MysqlProvider::from_url`]) with the given options.
    pub fn from_url_with(url: &str, options: MysqlOptions) -> Result<Self> {
        let tls = tls::from_url(url)?;
        let opts = Opts::from_url(&tls.url).map_err(|e| {
            Error::storage_kind(ErrorKind::Misconfigured, "mysql: parsing the connection URL", e)
        })?;
        let opts = tls::apply(opts, &tls);
        let explicit = url.contains("pool_min=") || url.contains("pool_max=");
        let mut provider = if explicit { Self::from_opts_keeping_pool(opts) } else { Self::from_opts(opts) };
        provider.tls = Arc::new(TlsState { mode: tls.mode, ca: tls.ca, fallback: OnceLock::new() });
        Ok(provider.with_options(options))
    }

    /// A provider with its own pool, from connection options (pool options replaced by the
    /// defaults described at [`MysqlProvider::from_url`]).
    #[must_use]
    pub fn from_opts(opts: Opts) -> Self {
        Self::from_opts_keeping_pool(OptsBuilder::from_opts(opts).pool_opts(default_pool_opts()).into())
    }

    fn from_opts_keeping_pool(opts: Opts) -> Self {
        Self {
            pool: Pool::new(opts.clone()),
            opts: Some(opts),
            owned: true,
            options: MysqlOptions::default(),
            tls: TlsState::none(),
        }
    }

    /// A provider over a pool the caller owns: vellum never disconnects it. Stores open their
    /// dedicated lock connections with the pool's connection options.
    #[must_use]
    pub fn from_pool(pool: Pool, options: MysqlOptions) -> Self {
        Self { pool, opts: None, owned: false, options, tls: TlsState::none() }
    }

    /// Replaces the options.
    #[must_use]
    pub fn with_options(mut self, options: MysqlOptions) -> Self {
        self.options = options;
        self
    }

    /// The read pool (for a URL in `PREFERRED` or `VERIFY_CA` mode, the one the first
    /// connection showed to work: see `tls.rs`).
    #[must_use]
    pub fn pool(&self) -> &Pool {
        self.tls.fallback.get().map_or(&self.pool, |(_, pool)| pool)
    }

    /// The options and pool to use instead of the first ones after `error`, if the URL's TLS
    /// mode allows working around it (and that has not happened already).
    fn fall_back(&self, error: &mysql_async::Error) -> Option<&(Opts, Pool)> {
        if self.tls.fallback.get().is_some() {
            return None;
        }
        let opts = tls::fallback(self.tls.mode, self.opts.as_ref()?, error)?;
        Some(self.tls.fallback.get_or_init(|| (opts.clone(), Pool::new(opts))))
    }

    /// A connection error, said as a TLS problem when it is one.
    fn connect_error(&self, context: String, error: mysql_async::Error) -> Error {
        tls::connect_error(context.clone(), &error, self.tls.ca.as_deref())
            .unwrap_or_else(|| Error::storage_kind(kind_of(&error), context, error))
    }

    /// A pooled connection (working around what the TLS mode allows on the first).
    async fn pooled_conn(&self, what: &str) -> Result<Conn> {
        match self.pool().get_conn().await {
            Ok(conn) => Ok(conn),
            Err(error) => match self.fall_back(&error) {
                Some((_, pool)) => pool.get_conn().await,
                None => Err(error),
            }
            .map_err(|e| self.connect_error(format!("mysql: {what}"), e)),
        }
    }

    /// A new dedicated connection, not from the pool (working around what the TLS mode
    /// allows); `context` describes it in errors.
    async fn dedicated_conn(&self, context: impl Fn() -> String) -> Result<Conn> {
        match Conn::new(self.dedicated_opts().await?).await {
            Ok(conn) => Ok(conn),
            Err(error) => match self.fall_back(&error) {
                Some((opts, _)) => Conn::new(self.dedicated(opts.clone())).await,
                None => Err(error),
            }
            .map_err(|e| self.connect_error(context(), e)),
        }
    }

    /// Creates the schema in the provider's database (see [`create_schema`]).
    ///
    /// # Cancel safety
    /// Runs on a connection of its own, never a pooled one: if the future is dropped part-way,
    /// the connection closes with it and the server frees the schema lock it may hold.
    pub async fn create_schema(&self) -> Result<()> {
        let mut conn = self.schema_conn().await?;
        let result = create_schema(&mut conn).await;
        let _ = conn.disconnect().await;
        result
    }

    /// Drops the schema from the provider's database (see [`drop_schema`]).
    ///
    /// # Cancel safety
    /// As [`MysqlProvider::create_schema`]: on a connection of its own, closed if dropped.
    pub async fn drop_schema(&self) -> Result<()> {
        let mut conn = self.schema_conn().await?;
        let result = drop_schema(&mut conn).await;
        let _ = conn.disconnect().await;
        result
    }

    /// A new connection (not from the pool) for schema changes, which take a named lock.
    async fn schema_conn(&self) -> Result<Conn> {
        self.dedicated_conn(|| "mysql: connecting for a schema change".to_owned()).await
    }

    /// The vellum schema version stored in the provider's database, `None` when it has none.
    pub async fn schema_version(&self) -> Result<Option<i64>> {
        let mut conn = self.pooled_conn("connecting").await?;
        Ok(match schema::stored_version(&mut conn).await? {
            schema::Stored::Missing => None,
            schema::Stored::Version(version) => Some(version),
        })
    }

    /// Disconnects the provider's own pool (a caller-owned pool is left alone). Stores already
    /// open keep their dedicated connections but can no longer read.
    pub async fn disconnect(self) -> Result<()> {
        if self.owned {
            if let Some((_, pool)) = self.tls.fallback.get() {
                pool.clone().disconnect().await.map_err(|e| storage("disconnecting the pool", e))?;
            }
            self.pool.disconnect().await.map_err(|e| storage("disconnecting the pool", e))?;
        }
        Ok(())
    }

    /// Options for a store's dedicated connection.
    async fn dedicated_opts(&self) -> Result<Opts> {
        let opts = if let Some((opts, _)) = self.tls.fallback.get() {
            opts.clone()
        } else if let Some(opts) = &self.opts {
            opts.clone()
        } else {
            let conn = self.pool.get_conn().await.map_err(|e| storage("connecting", e))?;
            conn.opts().clone()
        };
        Ok(self.dedicated(opts))
    }

    /// `opts` for a store's dedicated connection: the writer's statements come in a few shapes
    /// per kind of row (see writer.rs); TCP keepalive from the lease, so the client notices a
    /// dead peer too (docs/failover.md#leases).
    fn dedicated(&self, opts: Opts) -> Opts {
        let keepalive = self.options.lease.keepalive_idle();
        OptsBuilder::from_opts(opts)
            .stmt_cache_size(256)
            .tcp_nodelay(true)
            .tcp_keepalive(Some(keepalive))
            .into()
    }
}

impl Provider for MysqlProvider {
    type Store = MysqlStore;
    type Reader = MysqlReader;

    /// A reader on the provider's pool: no lock, no writer. The database must hold this
    /// build's schema; nothing is created. Its followers poll.
    async fn open_reader(&self, app_key: &str) -> Result<MysqlReader> {
        let span = observe::open_span(PROVIDER, app_key);
        let result = self.open_reader_of(app_key).instrument(span.clone()).await;
        observe::record(&span, result)
    }

    async fn open(&self, app_key: &str) -> Result<MysqlStore> {
        self.open_wait(app_key, Duration::ZERO).await
    }

    /// Opens the store of `app_key`, waiting up to `timeout` for its lock: one connection is
    /// made, and `GET_LOCK(name, 0)` retried on it with back-off (5 ms doubling to 100 ms).
    /// Never a waiting `GET_LOCK`: a dropped wait must not leave a session queued for the lock,
    /// which would take it unseen when the holder lets go.
    async fn open_wait(&self, app_key: &str, timeout: Duration) -> Result<MysqlStore> {
        let span = observe::open_span(PROVIDER, app_key);
        let result = self.open_store(app_key, timeout).instrument(span.clone()).await;
        observe::record(&span, result)
    }
}

impl MysqlProvider {
    async fn open_reader_of(&self, app_key: &str) -> Result<MysqlReader> {
        let mut conn = self.pooled_conn("opening a reader").await?;
        let database = schema::current_database(&mut conn).await?;
        match schema::stored_version(&mut conn).await? {
            schema::Stored::Version(v) if v == crate::schema::SCHEMA_VERSION => {}
            schema::Stored::Version(v) if v > crate::schema::SCHEMA_VERSION => return Err(schema::newer(v)),
            stored => {
                let found = match stored {
                    schema::Stored::Version(v) => format!("is at vellum schema version {v}"),
                    schema::Stored::Missing => "has no vellum schema".to_owned(),
                };
                return Err(Error::storage_kind(
                    ErrorKind::Misconfigured,
                    format!("mysql: opening a reader of application {app_key:?}"),
                    format!(
                        "database {database:?} {found}, not version {}: open the application's store \
                         once (which creates or upgrades the schema), then read it",
                        crate::schema::SCHEMA_VERSION
                    ),
                ));
            }
        }
        let reads = MysqlReads {
            app_key: app_key.to_owned(),
            pool: self.pool().clone(),
            lock_name: lock_name(&database, "app", app_key),
            max_packet: usize::MAX,
        };
        Ok(crate::SqlReader::new(reads, None, None))
    }

    async fn open_store(&self, app_key: &str, wait: Duration) -> Result<MysqlStore> {
        if app_key.len() > MAX_KEY_BYTES {
            return Err(key_too_long(app_key, "the application key", app_key.len()));
        }
        let lease = self.options.lease;
        let mut conn = self
            .dedicated_conn(|| {
                format!("mysql: opening the store's lock connection for application {app_key:?}")
            })
            .await?;
        match open_on(&mut conn, app_key, &self.options, wait).await {
            Ok((database, max_packet)) => {
                let name = lock_name(&database, "app", app_key);
                let executor = MysqlWriter::new(app_key.to_owned(), conn, name.clone(), max_packet, lease);
                let writes = WriteQueue::spawn(executor);
                let reads = MysqlReads {
                    app_key: app_key.to_owned(),
                    pool: self.pool().clone(),
                    lock_name: name,
                    max_packet,
                };
                Ok(MysqlStore::new(reads, writes))
            }
            Err(e) => {
                // Best effort: the server frees the lock with the session anyway.
                let _ = conn.disconnect().await;
                Err(e)
            }
        }
    }
}

/// Prepares a store's dedicated connection: schema, lock (retried for up to `wait`), session
/// settings.
async fn open_on(
    conn: &mut Conn,
    app_key: &str,
    options: &MysqlOptions,
    wait: Duration,
) -> Result<(String, usize)> {
    let database = schema::current_database(conn).await?;
    match schema::stored_version(conn).await? {
        schema::Stored::Version(v) if v > crate::schema::SCHEMA_VERSION => return Err(schema::newer(v)),
        schema::Stored::Version(v) if v == crate::schema::SCHEMA_VERSION => {}
        _ if options.migrate => create_schema(conn).await?,
        schema::Stored::Missing => {
            return Err(Error::storage_kind(
                ErrorKind::Misconfigured,
                format!("mysql: opening the store of application {app_key:?}"),
                format!(
                    "database {database:?} has no vellum schema and migration is turned off \
                     (MysqlOptions::migrate); call create_schema first"
                ),
            ));
        }
        schema::Stored::Version(v) => {
            return Err(Error::storage_kind(
                ErrorKind::Misconfigured,
                format!("mysql: opening the store of application {app_key:?}"),
                format!(
                    "database {database:?} has vellum schema version {v}, older than version {} \
                     of this build, and migration is turned off (MysqlOptions::migrate)",
                    crate::schema::SCHEMA_VERSION
                ),
            ));
        }
    }
    let name = lock_name(&database, "app", app_key);
    let mut backoff = Backoff::new(wait);
    let max_packet = loop {
        match try_lock(conn, &name, app_key).await {
            Err(locked @ Error::Locked { .. }) => {
                if !backoff.pause().await {
                    return Err(locked);
                }
            }
            other => break other?,
        }
    };
    // The writer's session: strict (errors, never truncation), READ COMMITTED (no gap locks;
    // this connection is the app's only writer), explicit COMMITs, and the lease's idle
    // timeout: the server ends a session it hears nothing from for that long, freeing the lock
    // of an engine it lost (the writer pings while idle, docs/failover.md#leases).
    let wait_timeout = format!("SET SESSION wait_timeout = {}", options.lease.timeout_secs());
    for statement in [
        "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'",
        "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
        &wait_timeout,
        "SET autocommit = 0",
    ] {
        conn.query_drop(statement)
            .await
            .map_err(|e| storage_for(app_key, "setting up the writer session", e))?;
    }
    Ok((database, max_packet))
}

/// One attempt at the application's named lock: the server's `max_allowed_packet`, or `Locked`.
async fn try_lock(conn: &mut Conn, name: &str, app_key: &str) -> Result<usize> {
    let mut row: Row = conn
        .exec_first("SELECT GET_LOCK(?, 0), @@max_allowed_packet", (name,))
        .await
        .map_err(|e| storage_for(app_key, "taking the application lock", e))?
        .ok_or_else(|| Error::storage("mysql: taking the application lock", "no row returned"))?;
    match opt_i64(&mut row, 0)? {
        Some(1) => {}
        Some(_) => return Err(Error::Locked { app_key: app_key.to_owned() }),
        None => return Err(Error::storage("mysql: taking the application lock", "GET_LOCK returned NULL")),
    }
    Ok(usize::try_from(opt_i64(&mut row, 1)?.unwrap_or(4 << 20)).unwrap_or(4 << 20))
}

/// A storage error with context, of the kind the driver error says it is.
pub(crate) fn storage(what: &str, source: mysql_async::Error) -> Error {
    Error::storage_kind(kind_of(&source), format!("mysql: {what}"), source)
}

/// A storage error naming the application, of the kind the driver error says it is.
pub(crate) fn storage_for(app_key: &str, what: &str, source: mysql_async::Error) -> Error {
    Error::storage_kind(kind_of(&source), format!("mysql: {what} for application {app_key:?}"), source)
}

/// What a driver error means for the caller (`docs/errors.md`).
fn kind_of(error: &mysql_async::Error) -> ErrorKind {
    match error {
        mysql_async::Error::Io(_) => ErrorKind::Unavailable,
        mysql_async::Error::Server(server) => match server.code {
            // Too many connections, lock wait timeout, deadlock, server shutting down.
            1040 | 1205 | 1213 | 1053 => ErrorKind::Unavailable,
            // Access denied, unknown database, missing privileges.
            1044 | 1045 | 1049 | 1142 => ErrorKind::Misconfigured,
            // A value too long, a packet too large, a string the column cannot hold.
            1406 | 1153 | 1366 => ErrorKind::InvalidInput,
            _ => ErrorKind::Storage,
        },
        _ => ErrorKind::Storage,
    }
}

/// The error for a key over [`MAX_KEY_BYTES`].
pub(crate) fn key_too_long(app_key: &str, field: &str, len: usize) -> Error {
    Error::storage_kind(
        ErrorKind::InvalidInput,
        format!("mysql: cannot store data of application {app_key:?}"),
        format!("{field} is {len} bytes long; this provider stores keys of at most {MAX_KEY_BYTES} bytes"),
    )
}

fn decode_error(what: &str) -> Error {
    Error::storage("mysql: decoding a row", format!("column {what} has an unexpected type or is missing"))
}

/// Column `i` as an optional integer.
pub(crate) fn opt_i64(row: &mut Row, i: usize) -> Result<Option<i64>> {
    match row.take_opt::<Value, usize>(i) {
        Some(Ok(Value::NULL)) => Ok(None),
        Some(Ok(Value::Int(v))) => Ok(Some(v)),
        Some(Ok(Value::UInt(v))) => i64::try_from(v).map(Some).map_err(|_| decode_error("integer")),
        Some(Ok(Value::Bytes(b))) => std::str::from_utf8(&b)
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Some)
            .ok_or_else(|| decode_error("integer")),
        _ => Err(decode_error("integer")),
    }
}

/// Column `i` as a non-null integer.
pub(crate) fn get_i64(row: &mut Row, i: usize) -> Result<i64> {
    opt_i64(row, i)?.ok_or_else(|| decode_error("integer (NULL)"))
}

/// Column `i` as optional bytes.
pub(crate) fn opt_bytes(row: &mut Row, i: usize) -> Result<Option<Vec<u8>>> {
    match row.take_opt::<Value, usize>(i) {
        Some(Ok(Value::NULL)) => Ok(None),
        Some(Ok(Value::Bytes(b))) => Ok(Some(b)),
        _ => Err(decode_error("bytes")),
    }
}

/// Column `i` as non-null bytes.
pub(crate) fn get_bytes(row: &mut Row, i: usize) -> Result<Vec<u8>> {
    opt_bytes(row, i)?.ok_or_else(|| decode_error("bytes (NULL)"))
}

/// Column `i` as a UTF-8 string.
pub(crate) fn get_string(row: &mut Row, i: usize) -> Result<String> {
    String::from_utf8(get_bytes(row, i)?).map_err(|e| Error::storage("mysql: decoding a key column", e))
}

/// Optional bytes as an optional UTF-8 string.
pub(crate) fn opt_string(row: &mut Row, i: usize) -> Result<Option<String>> {
    opt_bytes(row, i)?
        .map(|b| String::from_utf8(b).map_err(|e| Error::storage("mysql: decoding a key column", e)))
        .transpose()
}
