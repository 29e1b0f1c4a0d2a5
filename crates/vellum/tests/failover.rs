//! Failover (docs/failover.md): a standby waiting in `open_wait` takes over an application
//! when its holder dies or is cut off, and the old holder can never write after that.
//!
//! - **Kill**: a child process (this test binary, re-run with `--exact child` and
//!   `VELLUM_FAILOVER_CHILD` naming what to hold) opens the store and is killed (`SIGKILL`); the standby
//!   in this process must hold the store and have written within 1 s (every durable provider).
//! - **Partition** (PostgreSQL, MySQL): the holder reaches the server through a TCP proxy that
//!   stops forwarding but keeps both sockets open, so neither side sees the connection close.
//!   The server must end the silent session within the failover timeout (default 10 s), the
//!   standby takes over, and no write of the old holder commits after the standby's first
//!   write: every later one fails as fenced.
//!
//! The measured takeover times are printed to stderr in every run.
#![cfg(unix)]
// Test code: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::proxy::Proxy;
use vellum::{
    Batch, DataStore, DataStoreSet, Envelope, ErrorKind, EventRepository, Operation, Persister, Provider,
};
use vellum_sql::mysql::{MysqlOptions, MysqlProvider};
use vellum_sql::postgres::{PostgresOptions, PostgresProvider};
use vellum_sql::sqlite::SqliteProvider;

const CHILD: &str = "VELLUM_FAILOVER_CHILD";

/// Prints a measurement to the process's stderr directly, past the test harness's capture, so
/// the takeover times show in every run's output (CI's included), not only with `--nocapture`.
macro_rules! report {
    ($($arg:tt)*) => {{
        let line = format!($($arg)*);
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }};
}

/// How long a standby may take, from the holder's death to its own first write.
const KILL_BOUND: Duration = Duration::from_secs(1);

/// The bound for a partitioned holder with the default failover timeout.
const PARTITION_BOUND: Duration = Duration::from_secs(15);

/// Where a store lives: enough for a child process to open it too.
#[derive(Debug, Clone)]
enum Target {
    Redb(PathBuf),
    Sqlite(PathBuf),
    Postgres { url: String, schema: String },
    Mysql { url: String },
}

impl Target {
    fn encode(&self) -> String {
        match self {
            Self::Redb(dir) => format!("redb|{}", dir.display()),
            Self::Sqlite(file) => format!("sqlite|{}", file.display()),
            Self::Postgres { url, schema } => format!("postgres|{url}|{schema}"),
            Self::Mysql { url } => format!("mysql|{url}"),
        }
    }

    fn decode(text: &str) -> Self {
        let parts: Vec<&str> = text.split('|').collect();
        match parts[..] {
            ["redb", dir] => Self::Redb(dir.into()),
            ["sqlite", file] => Self::Sqlite(file.into()),
            ["postgres", url, schema] => Self::Postgres { url: url.into(), schema: schema.into() },
            ["mysql", url] => Self::Mysql { url: url.into() },
            _ => panic!("bad target {text}"),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Redb(_) => "redb",
            Self::Sqlite(_) => "SQLite",
            Self::Postgres { .. } => "PostgreSQL",
            Self::Mysql { .. } => "MySQL",
        }
    }
}

/// Calls `$body` with `$p` bound to a provider of the target (each has its own type).
macro_rules! with_provider {
    ($target:expr, |$p:ident| $body:expr) => {
        match $target {
            Target::Redb(dir) => {
                let $p = vellum::redb::RedbProvider::new(dir);
                $body
            }
            Target::Sqlite(file) => {
                let $p = SqliteProvider::new(file).unwrap();
                $body
            }
            Target::Postgres { url, schema } => {
                let $p = PostgresProvider::from_url_with(url, PostgresOptions::new().schema(schema.as_str()))
                    .unwrap();
                $body
            }
            Target::Mysql { url } => {
                let $p = MysqlProvider::from_url(url).unwrap();
                $body
            }
        }
    };
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// A key no other test or earlier run uses (the server databases are shared).
fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}_{}_{nanos}", std::process::id())
}

fn event(id: &str) -> Batch {
    let envelope =
        Envelope { message_id: id.into(), portable_name: "Failover".into(), ..Envelope::default() };
    Batch::from(vec![Operation::SaveEvent(envelope)])
}

/// The child's entry point; a no-op in a normal test run. Opens the store, writes one event,
/// says `OPEN`, and holds it until killed.
#[test]
fn child() {
    let Ok(spec) = std::env::var(CHILD) else { return };
    let (app_key, target) = spec.split_once('#').expect("key#target");
    let target = Target::decode(target);
    runtime().block_on(async {
        with_provider!(&target, |provider| {
            let store = provider.open(app_key).await.unwrap();
            store.persist(event("held")).await.unwrap();
            let mut out = std::io::stdout().lock();
            writeln!(out, "\nOPEN").unwrap();
            out.flush().unwrap();
            tokio::time::sleep(Duration::from_secs(600)).await;
            drop(store);
        });
    });
}

/// A child holding `app_key` of `target`, and its stdout lines.
struct Holder {
    child: Child,
    lines: Receiver<String>,
}

impl Holder {
    fn spawn(app_key: &str, target: &Target) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child", "--nocapture", "--test-threads", "1"])
            .env(CHILD, format!("{app_key}#{}", target.encode()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let holder = Self { child, lines };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match holder.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if line == "OPEN" => return holder,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => panic!("the holder did not open in time"),
                Err(RecvTimeoutError::Disconnected) => panic!("the holder exited before opening"),
            }
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIGKILLs a holder process while a standby waits in `open_wait`; the standby must hold the
/// store and have written within [`KILL_BOUND`] of the kill.
async fn takeover_after_kill(target: &Target) {
    let app_key = unique("kill");
    let mut holder = Holder::spawn(&app_key, target);
    with_provider!(target, |standby| {
        // Locked while the holder lives.
        match standby.open(&app_key).await {
            Err(locked) => assert_eq!(locked.kind(), ErrorKind::Locked, "{locked}"),
            Ok(_) => panic!("{}: opened a store its holder has", target.name()),
        }

        let waiting = async {
            let store = standby.open_wait(&app_key, Duration::from_secs(30)).await.unwrap();
            store.persist(event("standby")).await.unwrap();
            (Instant::now(), store)
        };
        let kill = async {
            // Let the standby settle into its back-off before the holder dies.
            tokio::time::sleep(Duration::from_millis(500)).await;
            holder.child.kill().unwrap();
            Instant::now()
        };
        let ((written, store), killed) = tokio::join!(waiting, kill);
        let takeover = written.duration_since(killed);
        report!(
            "{}: holder SIGKILLed -> standby open and first write committed in {takeover:?}",
            target.name()
        );
        assert!(takeover < KILL_BOUND, "{}: takeover took {takeover:?}", target.name());

        let mut cursor = store.load_events_by_type(&["Failover"], 0).await.unwrap();
        let mut ids = Vec::new();
        while let Some(e) = cursor.next().await.unwrap() {
            ids.push(e.envelope.message_id);
        }
        assert_eq!(ids, ["held", "standby"], "the holder's acknowledged write survived its death");
        store.close().await.unwrap();
    });
    let _ = holder.child.wait();
}

#[test]
fn redb_standby_takes_over_a_killed_holder() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(takeover_after_kill(&Target::Redb(dir.path().to_owned())));
}

#[test]
fn sqlite_standby_takes_over_a_killed_holder() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(takeover_after_kill(&Target::Sqlite(dir.path().join("vellum.db"))));
}

fn postgres_url() -> String {
    std::env::var("VELLUM_POSTGRES_URL").expect("VELLUM_POSTGRES_URL")
}

fn mysql_url() -> String {
    std::env::var("VELLUM_MYSQL_URL").expect("VELLUM_MYSQL_URL")
}

/// A fresh PostgreSQL schema for one test, dropped afterwards.
async fn with_schema<F: Future<Output = ()>>(body: impl FnOnce(Target) -> F) {
    let url = postgres_url();
    let schema = unique("failover");
    body(Target::Postgres { url: url.clone(), schema: schema.clone() }).await;
    let provider =
        PostgresProvider::from_url_with(&url, PostgresOptions::new().schema(schema.as_str())).unwrap();
    provider.drop_schema().await.unwrap();
}

#[test]
#[cfg_attr(not(vellum_postgres), ignore = "VELLUM_POSTGRES_URL is not set")]
fn postgres_standby_takes_over_a_killed_holder() {
    runtime().block_on(with_schema(|target| async move { takeover_after_kill(&target).await }));
}

#[test]
#[cfg_attr(not(vellum_mysql), ignore = "VELLUM_MYSQL_URL is not set")]
fn mysql_standby_takes_over_a_killed_holder() {
    runtime().block_on(takeover_after_kill(&Target::Mysql { url: mysql_url() }));
}

/// What the cut-off holder saw of one write.
#[derive(Debug)]
struct Attempt {
    id: String,
    outcome: Result<(), ErrorKind>,
}

/// Cuts a holder off from the server (a proxy that stops forwarding, both sockets left open)
/// while it writes; a standby connected directly takes over. Checks the takeover time, that
/// every later write of the holder fails as fenced, and that the log has none of the holder's
/// events after the standby's first.
async fn takeover_after_partition<P: Provider>(
    name: &str,
    proxy: &Proxy,
    via_proxy: P,
    direct: P,
    app_key: &str,
) {
    let holder = DataStoreSet::new(via_proxy);
    holder.get(app_key).await.unwrap().persist(event("h-first")).await.unwrap();

    // The holder writes every 20 ms until told to stop.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attempts = {
        let stop = Arc::clone(&stop);
        let store = holder.get(app_key).await.unwrap();
        tokio::spawn(async move {
            let mut attempts = Vec::new();
            for i in 0.. {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let id = format!("h-{i}");
                let outcome = store.persist(event(&id)).await.map(drop).map_err(|e| e.kind());
                attempts.push(Attempt { id, outcome });
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (attempts, store)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.pause();
    let cut = Instant::now();

    let standby = direct.open_wait(app_key, Duration::from_secs(60)).await.unwrap();
    standby.persist(event("standby-first")).await.unwrap();
    let takeover = cut.elapsed();
    report!(
        "{name}: holder cut off (proxy stopped forwarding) -> standby open and first write committed in {takeover:?}"
    );
    assert!(takeover < PARTITION_BOUND, "{name}: takeover took {takeover:?}");

    // Let the holder's traffic through again: its session is gone, so it must learn it is
    // fenced, and nothing it still sends may commit.
    proxy.resume();
    let fenced_in = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (attempts, old_store) = attempts.await.unwrap();
    report!(
        "{name}: the old holder made {} writes ({} acknowledged, {} fenced); fenced flag {} after {:?}",
        attempts.len(),
        attempts.iter().filter(|a| a.outcome.is_ok()).count(),
        attempts.iter().filter(|a| a.outcome == Err(ErrorKind::Fenced)).count(),
        old_store.is_fenced(),
        fenced_in.elapsed()
    );
    assert!(old_store.is_fenced(), "{name}: the old holder knows it is fenced");
    let after = old_store.persist(event("h-late")).await.unwrap_err();
    assert_eq!(after.kind(), ErrorKind::Fenced, "{name}: {after}");
    report!("{name}: a write of the old holder after the takeover: {after}");
    // The set does not hand out the fenced store: it reopens, and the standby holds the key.
    match holder.get(app_key).await {
        Err(again) => assert_eq!(again.kind(), ErrorKind::Locked, "{name}: {again}"),
        Ok(_) => panic!("{name}: the old holder's set opened a store the standby holds"),
    }

    // The log: the holder's acknowledged events, then the standby's, and none of the holder's
    // after the standby's first.
    let mut cursor = standby.load_events_by_type(&["Failover"], 0).await.unwrap();
    let mut log = Vec::new();
    while let Some(e) = cursor.next().await.unwrap() {
        log.push(e.envelope.message_id);
    }
    let first = log.iter().position(|id| id == "standby-first").expect("the standby's event");
    assert!(
        log[first..].iter().all(|id| !id.starts_with("h-")),
        "{name}: a holder write committed after the takeover: {log:?}"
    );
    for attempt in &attempts {
        if attempt.outcome.is_ok() {
            assert!(log[..first].contains(&attempt.id), "{name}: acknowledged {} is missing", attempt.id);
        } else {
            assert_eq!(attempt.outcome, Err(ErrorKind::Fenced), "{name}: {attempt:?}");
        }
    }
    standby.close().await.unwrap();
    let _ = holder.close().await;
}

#[test]
#[cfg_attr(not(vellum_postgres), ignore = "VELLUM_POSTGRES_URL is not set")]
fn postgres_partitioned_holder_is_fenced_and_the_standby_takes_over() {
    runtime().block_on(with_schema(|target| async move {
        let Target::Postgres { url, schema } = target else { unreachable!() };
        let proxy = Proxy::start(support::proxy::upstream(&url, 5432)).await;
        let proxied = support::proxy::via(&url, proxy.port());
        let options = || PostgresOptions::new().schema(schema.as_str());
        let via_proxy = PostgresProvider::from_url_with(&proxied, options()).unwrap();
        let direct = PostgresProvider::from_url_with(&url, options()).unwrap();
        takeover_after_partition("PostgreSQL", &proxy, via_proxy, direct, &unique("partition")).await;
    }));
}

#[test]
#[cfg_attr(not(vellum_mysql), ignore = "VELLUM_MYSQL_URL is not set")]
fn mysql_partitioned_holder_is_fenced_and_the_standby_takes_over() {
    runtime().block_on(async {
        let url = mysql_url();
        let proxy = Proxy::start(support::proxy::upstream(&url, 3306)).await;
        // Over TCP to the proxy: mysql_async would otherwise switch a loopback connection to the
        // server's socket, around the proxy.
        let proxied =
            support::proxy::with_param(&support::proxy::via(&url, proxy.port()), "prefer_socket=false");
        let via_proxy = MysqlProvider::from_url(&proxied).unwrap();
        let direct = MysqlProvider::from_url(&url).unwrap();
        takeover_after_partition("MySQL", &proxy, via_proxy, direct, &unique("partition")).await;
    });
}

/// docs/failover.md#leases: with a 2 s failover timeout, a quiet store keeps its lock through
/// several timeouts of silence (its heartbeats keep the session), and a quiet store cut off from
/// the server learns it is fenced from its unanswered heartbeat, without writing.
async fn quiet_store_keeps_its_lease_and_a_cut_off_one_is_fenced<P: Provider>(
    name: &str,
    proxy: &Proxy,
    provider: P,
) {
    let app_key = unique("quiet");
    let store = provider.open(&app_key).await.unwrap();
    store.persist(event("q-0")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(6500)).await;
    assert!(!store.is_fenced(), "{name}: a quiet healthy store lost its lease");
    store.persist(event("q-1")).await.unwrap_or_else(|e| panic!("{name}: quiet store: {e}"));

    tokio::time::sleep(Duration::from_millis(100)).await;
    proxy.pause();
    let cut = Instant::now();
    while !store.is_fenced() && cut.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let noticed = cut.elapsed();
    report!(
        "{name}: an idle store cut off (2 s failover timeout) knew it was fenced after {noticed:?}, without writing"
    );
    // A heartbeat after a third of the timeout idle, unanswered for half of it: 1.67 s at most.
    assert!(store.is_fenced() && noticed < Duration::from_secs(3), "{name}: fenced after {noticed:?}");
    proxy.resume();
    let err = store.persist(event("q-2")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Fenced, "{name}: {err}");
    let _ = store.close().await;
}

#[test]
#[cfg_attr(not(vellum_postgres), ignore = "VELLUM_POSTGRES_URL is not set")]
fn postgres_quiet_store_keeps_its_lease_and_a_cut_off_one_is_fenced() {
    runtime().block_on(with_schema(|target| async move {
        let Target::Postgres { url, schema } = target else { unreachable!() };
        let proxy = Proxy::start(support::proxy::upstream(&url, 5432)).await;
        let proxied = support::proxy::via(&url, proxy.port());
        let options = PostgresOptions::new().schema(schema.as_str()).failover_timeout(Duration::from_secs(2));
        let provider = PostgresProvider::from_url_with(&proxied, options).unwrap();
        quiet_store_keeps_its_lease_and_a_cut_off_one_is_fenced("PostgreSQL", &proxy, provider).await;
    }));
}

#[test]
#[cfg_attr(not(vellum_mysql), ignore = "VELLUM_MYSQL_URL is not set")]
fn mysql_quiet_store_keeps_its_lease_and_a_cut_off_one_is_fenced() {
    runtime().block_on(async {
        let url = mysql_url();
        let proxy = Proxy::start(support::proxy::upstream(&url, 3306)).await;
        let proxied =
            support::proxy::with_param(&support::proxy::via(&url, proxy.port()), "prefer_socket=false");
        let options = MysqlOptions::default().failover_timeout(Duration::from_secs(2));
        let provider = MysqlProvider::from_url_with(&proxied, options).unwrap();
        quiet_store_keeps_its_lease_and_a_cut_off_one_is_fenced("MySQL", &proxy, provider).await;
    });
}
