//! MySQL/MariaDB tests: the conformance suite, locks, fencing, hostile input and schema.
//!
//! They need a server: `VELLUM_MYSQL_URL=mysql://root@127.0.0.1:3306/test`; built without it,
//! they are reported as ignored (see `build.rs`), and with it, a server that cannot be reached
//! fails them. Each test works in its own database `vellum_test_<random>`, dropped at the end, so
//! parallel and repeated runs do not interfere.

use std::hash::{BuildHasher, RandomState};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};
use vellum_conformance::Backend;
use vellum_core::{
    AggregateMetaData, AggregateRepository, Batch, DataStore, Envelope, Error, EventRepository, Identity,
    OffsetRepository, Operation, Packet, Persister, ProcessInstance, ProcessRepository, Provider,
    QueueMessage, QueueRepository,
};

use super::{MAX_KEY_BYTES, MysqlOptions, MysqlProvider};
use crate::schema::SCHEMA_VERSION;
use crate::test_support::event;

const URL_VAR: &str = "VELLUM_MYSQL_URL";

/// A database of its own for one test.
pub(super) struct TestDb {
    base: Opts,
    opts: Opts,
    name: String,
}

fn unique() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let seed = RandomState::new().hash_one((std::process::id(), n, SystemTime::now()));
    format!("{seed:016x}")
}

impl TestDb {
    /// A fresh database on the server of `VELLUM_MYSQL_URL`, which must be set: the tests run
    /// only when it was set at build time (without it they are ignored).
    pub(super) async fn create() -> Self {
        let url = std::env::var(URL_VAR)
            .unwrap_or_else(|_| panic!("{URL_VAR} is not set; the MySQL tests need a server"));
        let base = Opts::from_url(&url).expect("VELLUM_MYSQL_URL parses");
        Self::create_named(base, format!("vellum_test_{}", unique())).await
    }

    async fn create_named(base: Opts, name: String) -> Self {
        let mut conn = Conn::new(base.clone()).await.expect("connect to VELLUM_MYSQL_URL");
        conn.query_drop(format!("CREATE DATABASE IF NOT EXISTS `{name}`"))
            .await
            .expect("create the test database");
        let _ = conn.disconnect().await;
        let opts = OptsBuilder::from_opts(base.clone()).db_name(Some(&name)).into();
        Self { base, opts, name }
    }

    async fn conn(&self) -> Conn {
        Conn::new(self.opts.clone()).await.expect("connect to the test database")
    }

    async fn drop_db(&self) {
        let mut conn = Conn::new(self.base.clone()).await.expect("connect to VELLUM_MYSQL_URL");
        conn.query_drop("SET SESSION lock_wait_timeout = 20").await.expect("set lock_wait_timeout");
        conn.query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.name))
            .await
            .expect("drop the test database");
        let _ = conn.disconnect().await;
    }
}

impl Backend for TestDb {
    type Provider = MysqlProvider;

    async fn provider(&self) -> MysqlProvider {
        MysqlProvider::from_opts(self.opts.clone())
    }

    async fn teardown(self) {
        self.drop_db().await;
    }
}

mod conformance {
    use vellum_conformance::Skip;

    use super::TestDb;

    async fn backend() -> Result<TestDb, Skip> {
        Ok(TestDb::create().await)
    }

    vellum_conformance::conformance_tests!(
        backend,
        #[cfg_attr(not(vellum_mysql), ignore = "VELLUM_MYSQL_URL is not set")]
    );
}

/// The suite again through a caller-owned pool ([`MysqlProvider::from_pool`]), each test in a
/// database of its own as above.
mod conformance_from_pool {
    use vellum_conformance::{Backend, Skip};

    use super::{MysqlOptions, MysqlProvider, TestDb};

    /// A fresh database and a pool the test owns; every provider is a new value over that pool.
    struct PooledDb {
        db: TestDb,
        pool: mysql_async::Pool,
    }

    impl Backend for PooledDb {
        type Provider = MysqlProvider;

        async fn provider(&self) -> MysqlProvider {
            MysqlProvider::from_pool(self.pool.clone(), MysqlOptions::default())
        }

        async fn teardown(self) {
            self.pool.disconnect().await.expect("disconnect the test's pool");
            self.db.drop_db().await;
        }
    }

    async fn backend() -> Result<PooledDb, Skip> {
        let db = TestDb::create().await;
        let pool = mysql_async::Pool::new(db.opts.clone());
        Ok(PooledDb { db, pool })
    }

    vellum_conformance::conformance_tests!(
        backend,
        #[cfg_attr(not(vellum_mysql), ignore = "VELLUM_MYSQL_URL is not set")]
    );
}

/// Runs `test` against a fresh database on a fresh runtime, then drops the database.
fn run<F, Fut>(name: &str, test: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = TestDb>,
{
    vellum_conformance::runtime().block_on(async {
        let db = TestDb::create().await;
        let db = tokio::time::timeout(Duration::from_secs(120), test(db))
            .await
            .unwrap_or_else(|_| panic!("{name} timed out"));
        db.drop_db().await;
    });
}

async fn persist(store: &impl Persister, ops: Vec<Operation>) -> vellum_core::PersistResult {
    store.persist(Batch::from(ops)).await.expect("persist")
}

// ---------------------------------------------------------------------------------------------
// Locks (docs/locking.md#mysql-and-mariadb)

const CHILD_DB: &str = "VELLUM_MYSQL_LOCK_CHILD_DB";
const CHILD_KEY: &str = "<child-key>";

/// Child mode of [`second_process_gets_locked_until_the_holder_is_killed`]: opens the key in the
/// database named by the env var, prints a line, and sleeps until killed.
#[cfg_attr(not(vellum_mysql), ignore = "VELLUM_MYSQL_URL is not set")]
#[test]
fn lock_child() {
    let Ok(name) = std::env::var(CHILD_DB) else {
        return;
    };
    let url = std::env::var(URL_VAR).expect("the child needs VELLUM_MYSQL_URL");
    vellum_conformance::runtime().block_on(async {
        let base = Opts::from_url(&url).expect("URL parses");
        let opts: Opts = OptsBuilder::from_opts(base).db_name(Some(name)).into();
        let provider = MysqlProvider::from_opts(opts);
        let _store = provider.open(CHILD_KEY).await.expect("the child opens the key");
        println!("child holds the lock");
        tokio::time::sleep(Duration::from_secs(120)).await;
    });
}

#[cfg_attr(not(vellum_mysql), ignore = "VELLUM_MYSQL_URL is not set")]
#[test]
fn second_process_gets_locked_until_the_holder_is_killed() {
    run("second_process_gets_locked_until_the_holder_is_killed", |db| async move {
        let mut child = Command::new(std::env::current_exe().expect("current exe"))
            .args(["--exact", "mysql::tests::lock_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_DB, &db.name)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the child");
        let stdout = child.stdout.take().expect("child stdout");
        let line = tokio::task::spawn_blocking(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            while reader.read_line(&mut line).expect("read the child's output") > 0 {
                if line.contains("child holds the lock") {
                    return true;
                }
                line.clear();
            }
            false
        })
        .await
        .expect("reader task");
        assert!(line, "the child did not take the lock");

        let provider = db.provider().await;
        let started = Instant::now();
        let err = provider.open(CHILD_KEY).await.expect_err("the child holds the key");
        assert!(matches!(&err, Error::Locked { app_key } if app_key == CHILD_KEY), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(2), "Locked must come promptly");
        // Another key is free.
        provider.open("<other>").await.expect("another key opens").close().await.expect("close");

        child.kill().expect("kill the child");
        let _ = child.wait();
        // The server frees the lock when it notices the dead session (at once, on loopback).
        let deadline = Instant::now() + Duration::from_secs(20);
        let store = loop {
            match provider.open(CHILD_KEY).await {
                Ok(store) => break store,
                Err(Error::Locked { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("open after the holder died: {e:?}"),
            }
        };
        persist(&store, vec![Operation::SaveEvent(event("<after-kill>", "A"))]).await;
        store.close().await.expect("close");
        db
    });
}

#[cfg_attr(not(vellum_mysql), ignore = "VELLUM_MYSQL_URL is not set")]
#[test]
fn same_process_second_open_is_locked_and_close_frees_it() {
    run("same_process_second_open_is_locked_and_close_frees_it", |db| async move {
        let first = db.provider().await;
        let second = db.provider().await;
        let store = first.open("<app>").await.expect("open");
        for provider in [&first, &second] {
            let started = Instant::now();
            let err = provider.open("<app>").await.expect_err("locked");
            assert!(matches!(err, Error::Locked { .. }), "{err:?}");
            assert!(started.elapsed() < Duration::from_secs(2));
        }
        store.close().await.expect("close");
        second.open("<app>").await.expect("reopen after close").close().await.expect("close");
        db
    });
}

/// docs/locking.md#fencing: killing the store's lock connection server-side frees the key for
/// another store, and the first store refuses every further write.
#[cfg_attr(not(vellum_mysql), ignore = "VELLUM_MYSQL_URL is not set")]
#[test]
fn killed_lock_connection_fences_the_store() {
    run("killed_lock_connection_fences_the_store", |db| async move {
        let provider = db.provider().await;
        let store = provider.open("<app>").await.expect("open");
        persist(&store, vec![Operation::SaveEvent(event("<e0>", "A"))]).await;

        let mut admin = db.conn().await;
        let holder: Option<u64> =
            admin.exec_first("SELECT IS_USED_LOCK(?)", (store.lock_name(),)).await.expect("IS_USED_LOCK");
        let holder = holder.expect("the store holds its lock");
        admin.query_drop(format!("KILL CONNECTION {holder}")).await.expect("kill the lock connection");

        for i in 1..=2 {
            let err = store
                .persist(Batch::from(vec![Operation::SaveEvent(event(&format!("<e{i}>"), "A"))]))
                .await
                .expect_err("a fenced store refuses writes");
            // The first write that meets the dead connection is already reported as fenced.
            assert_eq!(err.kind(), vellum_core::ErrorKind::Fenced, "{err:?}");
        }
        let err =
            store.persist(Batch::from(vec![Operation::SaveEvent(event("<e3>", "A"))])).await.unwrap_err();
        assert!(err.to_string().contains("lost its lock"), "{err}");
        assert_eq!(err.kind(), vellum_core::ErrorKind::Fenced);
        assert!(vellum_core::DataStore::is_fenced(&store), "the store says it is fenced");
        eprintln!("mysql, persist after the lock connection was killed: {err}");
        // Reads still work, and another store takes the key over.
        assert_eq!(store.next_event_offset().await.expect("read"), 1);
        let other = provider.open("<app>").await.expect("the key is free again");
        let result = persist(&other, vec![Operation::SaveEvent(event("<e1>", "A"))]).await;
        assert_eq!(result.event_offsets["<e1>"], 1);
        store.close().await.expect("close the fenced store");
        other.close().await.expect("close");
        let _ = admin.disconnect().await;
        db
    });
}

// ---------------------------------------------------------------------------------------------
// Hostile input

#[cfg_attr(not(vellum_mysql), ignore = "VELLUM_MYSQL_URL is not set")]
#[test]
fn hostile_keys_and_data_round_trip_verbatim() {
    run("hostile_keys_and_data_round_trip_verbatim", |db| async move {
        let provider = db.provider().await;
        let nasty = [
            "",
            "'",
            "\"",
            "'; DROP TABLE vellum_event; --",
            "%",
            "_",
            "\\",
            "\\'",
            "a ",
            "A",
            "a",
            "应用-🚀",
            "\u{0}nul",
            "`backtick`",
        ];
        let big: Vec<u8> = (0..(1 << 20)).map(|i: u32| (i % 251) as u8).collect();
        let store = provider.open(nasty[3]).await.expect("open a hostile app key");
        let at = SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        for (i, &key) in nasty.iter().enumerate() {
            let mut envelope = event(&format!("{key}#{i}"), key);
            envelope.source_handler = Some(Identity::new(key, key));
            envelope.source_instance_id = key.into();
            envelope.description = key.into();
            envelope.data.clone_from(&big);
            let ops = vec![
                Operation::SaveEvent(envelope.clone()),
                Operation::SaveAggregateMetaData(AggregateMetaData {
                    handler_key: key.into(),
                    instance_id: key.into(),
                    revision: 0,
                    last_event_id: key.into(),
                }),
                Operation::SaveProcessInstance(ProcessInstance {
                    handler_key: format!("p{key}"),
                    instance_id: key.into(),
                    revision: 0,
                    packet: Packet::new(key, big.clone()),
                }),
                Operation::SaveOffset {
                    application_key: key.into(),
                    current_offset: 0,
                    next_offset: i as u64 + 1,
                },
                Operation::SaveQueueMessage(QueueMessage {
                    revision: 0,
                    failure_count: i as u64,
                    next_attempt_at: at,
                    envelope: Envelope { message_id: format!("{key}@q{i}"), ..envelope.clone() },
                }),
            ];
            let result = persist(&store, ops).await;
            assert_eq!(result.event_offsets[&envelope.message_id], i as u64);
        }
        for (i, &key) in nasty.iter().enumerate() {
            let md = store.load_aggregate_meta_data(key, key).await.expect("aggregate");
            assert_eq!((md.revision, md.last_event_id.as_str()), (1, key), "aggregate {key:?}");
            let p = store.load_process_instance(&format!("p{key}"), key).await.expect("process");
            assert_eq!((p.revision, p.packet.media_type.as_str()), (1, key), "process {key:?}");
            assert!(p.packet.data == big, "process data of {key:?}");
            assert_eq!(store.load_offset(key).await.expect("offset"), i as u64 + 1, "offset {key:?}");
            let by_type = store
                .load_events_by_type(&[key], 0)
                .await
                .expect("by type")
                .collect()
                .await
                .expect("by type");
            assert_eq!(by_type.len(), 1, "events of type {key:?}");
            assert_eq!(by_type[0].offset, i as u64);
            assert_eq!(by_type[0].envelope.source_instance_id, key);
            assert!(by_type[0].envelope.data == big);
            let by_source = store
                .load_events_by_source(key, key)
                .await
                .expect("by source")
                .collect()
                .await
                .expect("by source");
            assert_eq!(by_source.len(), 1, "events of source {key:?}");
        }
        let queue = store.load_queue_messages(100).await.expect("queue");
        assert_eq!(queue.len(), nasty.len());
        for (i, m) in queue.iter().enumerate() {
            assert_eq!(m.id(), format!("{}@q{i}", nasty[i]), "FIFO order among equal times");
            assert_eq!(m.next_attempt_at, at);
            assert!(m.envelope.data == big);
        }
        // Wildcards are not wildcards, and case and trailing spaces matter.
        assert_eq!(store.load_offset("x").await.expect("offset"), 0);
        assert_eq!(store.load_aggregate_meta_data("a  ", "a  ").await.expect("aggregate").revision, 0);
        store.close().await.expect("close");
        db
    });
}

#[cfg_attr(not(vellum_mysql), ignore = "VELLUM_MYSQL_URL is not set")]
#[test]
fn too_long_keys_fail_their_batch_with_a_clear_error() {
    run("too_long_keys_fail_their_batch_with_a_clear_error", |db| async move {
        let provider = db.provider().await;
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        let err = provider.open(&long).await.expect_err("a too long app key");
        assert!(err.to_string().contains("cannot store"), "{err}");
        assert_eq!(err.kind(), vellum_core::ErrorKind::InvalidInput);
        let store = provider.open("<app>").await.expect("open");
        let ok = "k".repeat(MAX_KEY_BYTES);
        persist(
            &store,
            vec![Operation::SaveAggregateMetaData(AggregateMetaData::new(ok.clone(), ok.clone()))],
        )
        .await;
        let err = store
            .persist(Batch::from(vec![
                Operation::SaveEvent(event("<fine>", "A")),
                Operation::SaveAggregateMetaData(AggregateMetaData::new("h", long.clone())),
            ]))
            .await
            .expect_err("too long");
        let text = std::error::Error::source(&err).map(ToString::to_string).unwrap_or_default();
        assert!(text.contains("instance ID of operation 1"), "{err}: {text}");
        assert_eq!(err.kind(), vellum_core::ErrorKind::InvalidInput);
        assert!(!err.is_retryable());
        assert!(text.contains(&MAX_KEY_BYTES.to_string()), "{text}");
        assert_eq!(store.next_event_offset().await.expect("read"), 0, "nothing of the batch was written");
        store.close().await.expect("close");
        db
    });
}

// ---------------------------------------------------------------------------------------------
// Schema

#[cfg_attr(not(vellum_mysql), ignore = "VELLUM_MYSQL_URL is not set")]
#[test]
fn schema_create_and_drop_are_idempotent() {
    run("schema_create_and_drop_are_idempotent", |db| async move {
        let mut conn = db.conn().await;
        super::create_schema(&mut conn).await.expect("create");
        super::create_schema(&mut conn).await.expect("create again");
        let provider = db.provider().await;
        let store = provider.open("<app>").await.expect("open");
        persist(&store, vec![Operation::SaveEvent(event("<e>", "A"))]).await;
        store.close().await.expect("close");
        super::drop_schema(&mut conn).await.expect("drop");
        super::drop_schema(&mut conn).await.expect("drop again");
        let tables: Vec<String> = conn.query("SHOW TABLES").await.expect("show tables");
        assert!(tables.is_empty(), "{tables:?}");
        let _ = conn.disconnect().await;
        db
    });
}

#[cfg_attr(not(vellum_mysql), ignore = "VELLUM_MYSQL_URL is not set")]
#[test]
fn schema_is_created_on_open_unless_turned_off() {
    run("schema_is_created_on_open_unless_turned_off", |db| async move {
        let off = db.provider().await.with_options(MysqlOptions::default().migrate(false));
        let err = off.open("<app>").await.expect_err("no schema, no migration");
        let text = std::error::Error::source(&err).map(ToString::to_string).unwrap_or_default();
        assert!(text.contains("no vellum schema") && text.contains("create_schema"), "{err}: {text}");

        let on = db.provider().await;
        let store = on.open("<app>").await.expect("open migrates");
        store.close().await.expect("close");
        let store = off.open("<app>").await.expect("schema exists now");
        store.close().await.expect("close");
        db
    });
}

#[cfg_attr(not(vellum_mysql), ignore = "VELLUM_MYSQL_URL is not set")]
#[test]
fn newer_schema_is_refused() {
    run("newer_schema_is_refused", |db| async move {
        let provider = db.provider().await;
        provider.create_schema().await.expect("create");
        let mut conn = db.conn().await;
        conn.exec_drop("UPDATE vellum_schema SET version = ?", (SCHEMA_VERSION + 1,)).await.expect("bump");
        let err = provider.open("<app>").await.expect_err("newer schema");
        let text = format!(
            "{err}: {}",
            std::error::Error::source(&err).map(ToString::to_string).unwrap_or_default()
        );
        assert!(text.contains(&format!("version {}", SCHEMA_VERSION + 1)), "{text}");
        assert!(text.contains(&format!("version {SCHEMA_VERSION}")), "{text}");
        let err = provider.create_schema().await.expect_err("create_schema refuses too");
        assert!(matches!(err, Error::Storage { .. }));
        let _ = conn.disconnect().await;
        db
    });
}

// ---------------------------------------------------------------------------------------------
// Group commit

/// Many concurrent writers: every batch succeeds, offsets are dense, and groups really form
/// (fewer transactions than batches is not observable here, but the result must be serial).
#[cfg_attr(not(vellum_mysql), ignore = "VELLUM_MYSQL_URL is not set")]
#[test]
fn concurrent_writers_get_dense_offsets() {
    run("concurrent_writers_get_dense_offsets", |db| async move {
        let provider = db.provider().await;
        let store = std::sync::Arc::new(provider.open("<app>").await.expect("open"));
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let store = std::sync::Arc::clone(&store);
                tokio::spawn(async move {
                    let ops = vec![
                        Operation::SaveEvent(event(&format!("<e{i}>"), "A")),
                        Operation::SaveAggregateMetaData(AggregateMetaData::new("<h>", format!("<i{i}>"))),
                    ];
                    store.persist(Batch::from(ops)).await.expect("persist")
                })
            })
            .collect();
        let mut offsets = Vec::new();
        for task in tasks {
            offsets.extend(task.await.expect("task").event_offsets.into_values());
        }
        offsets.sort_unstable();
        assert_eq!(offsets, (0..64).collect::<Vec<u64>>());
        assert_eq!(store.next_event_offset().await.expect("read"), 64);
        store.close().await.expect("close");
        db
    });
}

/// A provider over a caller-owned pool works and leaves the pool usable after close.
#[cfg_attr(not(vellum_mysql), ignore = "VELLUM_MYSQL_URL is not set")]
#[test]
fn caller_owned_pool_is_not_closed() {
    run("caller_owned_pool_is_not_closed", |db| async move {
        let pool = mysql_async::Pool::new(db.opts.clone());
        let provider = MysqlProvider::from_pool(pool.clone(), MysqlOptions::default());
        let store = provider.open("<app>").await.expect("open");
        persist(&store, vec![Operation::SaveEvent(event("<e>", "A"))]).await;
        store.close().await.expect("close");
        provider.disconnect().await.expect("a borrowed pool is left alone");
        let mut conn = pool.get_conn().await.expect("the caller's pool still works");
        let n: Option<i64> = conn.query_first("SELECT COUNT(*) FROM vellum_event").await.expect("count");
        assert_eq!(n, Some(1));
        drop(conn);
        pool.disconnect().await.expect("disconnect");
        db
    });
}

/// The URL constructor opens a working provider; a bad URL is an error, not a panic.
#[cfg_attr(not(vellum_mysql), ignore = "VELLUM_MYSQL_URL is not set")]
#[test]
fn provider_from_url() {
    run("provider_from_url", |db| async move {
        let url = std::env::var(URL_VAR).expect("URL");
        let (head, _) = url.split_once('?').unwrap_or((&url, ""));
        let (server, _) = head.rsplit_once('/').expect("a URL with a path");
        let provider = MysqlProvider::from_url(&format!("{server}/{}", db.name)).expect("URL parses");
        let store = provider.open("<app>").await.expect("open");
        persist(&store, vec![Operation::SaveEvent(event("<e>", "A"))]).await;
        store.close().await.expect("close");
        provider.disconnect().await.expect("disconnect");
        assert!(MysqlProvider::from_url("postgres://nope").is_err());
        db
    });
}

/// A row bigger than the server's `max_allowed_packet` fails its own batch with a clear error
/// (instead of making the server drop the lock connection); the store keeps working.
#[cfg_attr(not(vellum_mysql), ignore = "VELLUM_MYSQL_URL is not set")]
#[test]
fn oversized_rows_fail_their_batch_and_the_store_keeps_working() {
    run("oversized_rows_fail_their_batch_and_the_store_keeps_working", |db| async move {
        let provider = db.provider().await;
        let store = provider.open("<app>").await.expect("open");
        let mut conn = db.conn().await;
        let max: Option<u64> =
            conn.query_first("SELECT @@max_allowed_packet").await.expect("max_allowed_packet");
        let max = usize::try_from(max.expect("a value")).expect("fits usize");
        let mut huge = event("<huge>", "A");
        huge.data = vec![7; max + 1];
        let err = store.persist(Batch::from(vec![Operation::SaveEvent(huge)])).await.expect_err("too big");
        let text = std::error::Error::source(&err).map(ToString::to_string).unwrap_or_default();
        assert!(text.contains("max_allowed_packet"), "{err}: {text}");
        let result = persist(&store, vec![Operation::SaveEvent(event("<fine>", "A"))]).await;
        assert_eq!(result.event_offsets["<fine>"], 0);
        store.close().await.expect("close");
        let _ = conn.disconnect().await;
        db
    });
}

/// A server that cannot be reached is `Unavailable`, which a caller may retry (needs no server).
#[test]
fn an_unreachable_server_is_unavailable() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let provider = MysqlProvider::from_url("mysql://root@127.0.0.1:1/test").unwrap();
        let err = provider.open("app").await.unwrap_err();
        assert_eq!(err.kind(), vellum_core::ErrorKind::Unavailable, "{err:?}");
        assert!(err.is_retryable());
    });
}

// ---------------------------------------------------------------------------------------------
// Checksums (schema 2)

/// The tables as schema version 1 created them (rows without checksums).
fn schema_1_ddl() -> Vec<String> {
    let key = format!("VARBINARY({MAX_KEY_BYTES})");
    let table = "ENGINE=InnoDB ROW_FORMAT=DYNAMIC";
    vec![
        format!("CREATE TABLE vellum_schema (version BIGINT NOT NULL PRIMARY KEY) {table}"),
        format!(
            "CREATE TABLE vellum_app (app_key {key} NOT NULL PRIMARY KEY, next_offset BIGINT NOT NULL, \
             next_sequence BIGINT NOT NULL) {table}"
        ),
        format!(
            "CREATE TABLE vellum_event (app_key {key} NOT NULL, event_offset BIGINT NOT NULL, \
             message_id {key} NOT NULL, portable_name {key} NOT NULL, handler_key {key} NOT NULL, \
             instance_id {key} NOT NULL, envelope LONGBLOB NOT NULL, PRIMARY KEY (app_key, event_offset), \
             UNIQUE KEY by_message_id (app_key, message_id), \
             KEY by_type (app_key, portable_name, event_offset), \
             KEY by_source (app_key, handler_key, instance_id, event_offset)) {table}"
        ),
        format!(
            "CREATE TABLE vellum_aggregate (app_key {key} NOT NULL, handler_key {key} NOT NULL, \
             instance_id {key} NOT NULL, revision BIGINT NOT NULL, last_event_id LONGBLOB NOT NULL, \
             PRIMARY KEY (app_key, handler_key, instance_id)) {table}"
        ),
        format!(
            "CREATE TABLE vellum_process (app_key {key} NOT NULL, handler_key {key} NOT NULL, \
             instance_id {key} NOT NULL, revision BIGINT NOT NULL, media_type LONGBLOB NOT NULL, \
             data LONGBLOB NOT NULL, PRIMARY KEY (app_key, handler_key, instance_id)) {table}"
        ),
        format!(
            "CREATE TABLE vellum_queue (app_key {key} NOT NULL, message_id {key} NOT NULL, \
             revision BIGINT NOT NULL, failure_count BIGINT NOT NULL, next_attempt_at BIGINT NOT NULL, \
             sequence BIGINT NOT NULL, timeout_handler_key {key} NULL, timeout_instance_id {key} NULL, \
             envelope LONGBLOB NOT NULL, PRIMARY KEY (app_key, message_id), \
             KEY by_next_attempt (app_key, next_attempt_at, sequence, message_id), \
             KEY by_timeout (app_key, timeout_handler_key, timeout_instance_id)) {table}"
        ),
        format!(
            "CREATE TABLE vellum_offset (app_key {key} NOT NULL, source_app_key {key} NOT NULL, \
             next_offset BIGINT NOT NULL, PRIMARY KEY (app_key, source_app_key)) {table}"
        ),
    ]
}

/// Every record of a store, through the export pages (which check every row's sums).
async fn export_all(store: &super::MysqlStore) -> Vec<vellum_core::Record> {
    use vellum_core::{BulkStore, ExportFrom};
    let mut records = Vec::new();
    for from in [
        ExportFrom::Aggregates(None),
        ExportFrom::Processes(None),
        ExportFrom::Offsets(None),
        ExportFrom::Queue(None),
        ExportFrom::Events(0),
    ] {
        records.extend(store.export_page(from, 100).await.expect("export"));
    }
    records
}

/// Creates the tables of schema version 1 in `conn`'s database and fills them with one row of
/// each kind for `app` (two events): returns the events and the queued message.
async fn schema_1_database(conn: &mut Conn, app: &str) -> ([Envelope; 2], Envelope) {
    for statement in schema_1_ddl() {
        conn.query_drop(statement).await.expect("schema 1 DDL");
    }
    let events = [event("<e0>", "A"), event("<e1>", "B")];
    for (offset, e) in events.iter().enumerate() {
        conn.exec_drop(
            "INSERT INTO vellum_event (app_key, event_offset, message_id, portable_name, handler_key, \
             instance_id, envelope) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                app,
                i64::try_from(offset).expect("small"),
                &e.message_id,
                &e.portable_name,
                e.source_handler_key(),
                &e.source_instance_id,
                e.to_bytes(),
            ),
        )
        .await
        .expect("insert a schema 1 event");
    }
    let queued = Envelope { message_id: "<q>".into(), ..event("<q>", "Cmd") };
    let rows: [(&str, Vec<mysql_async::Value>); 6] = [
        ("INSERT INTO vellum_schema (version) VALUES (?)", vec![1.into()]),
        (
            "INSERT INTO vellum_app (app_key, next_offset, next_sequence) VALUES (?, ?, ?)",
            vec![app.into(), 2.into(), 1.into()],
        ),
        (
            "INSERT INTO vellum_aggregate (app_key, handler_key, instance_id, revision, last_event_id) \
             VALUES (?, ?, ?, ?, ?)",
            vec![app.into(), "<h>".into(), "<i>".into(), 3.into(), "<e1>".into()],
        ),
        (
            "INSERT INTO vellum_process (app_key, handler_key, instance_id, revision, media_type, data) \
             VALUES (?, ?, ?, ?, ?, ?)",
            vec![
                app.into(),
                "<p>".into(),
                "<i>".into(),
                2.into(),
                "text/plain".into(),
                b"state".to_vec().into(),
            ],
        ),
        (
            "INSERT INTO vellum_queue (app_key, message_id, revision, failure_count, next_attempt_at, \
             sequence, timeout_handler_key, timeout_instance_id, envelope) \
             VALUES (?, ?, ?, ?, ?, ?, NULL, NULL, ?)",
            vec![
                app.into(),
                "<q>".into(),
                1.into(),
                2.into(),
                1_700_000_000_123_456_i64.into(),
                0.into(),
                queued.to_bytes().into(),
            ],
        ),
        (
            "INSERT INTO vellum_offset (app_key, source_app_key, next_offset) VALUES (?, ?, ?)",
            vec![app.into(), "<src>".into(), 7.into()],
        ),
    ];
    for (sql, params) in rows {
        conn.exec_drop(sql, params).await.expect("insert a schema 1 row");
    }

    (events, queued)
}

/// A database at schema version 1, holding every kind of row of one application, is upgraded
/// by opening it (migration on): the checksum columns are filled, every row reads back as it
/// was written, and the store keeps writing.
#[cfg_attr(not(vellum_mysql), ignore = "VELLUM_MYSQL_URL is not set")]
#[test]
fn schema_1_database_is_upgraded_on_open_and_reads_back_equal() {
    run("schema_1_database_is_upgraded_on_open_and_reads_back_equal", |db| async move {
        let mut conn = db.conn().await;
        let app = "<app>";
        let (events, queued) = schema_1_database(&mut conn, app).await;
        let at = SystemTime::UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);

        let provider = db.provider().await;
        assert_eq!(provider.schema_version().await.expect("version"), Some(1));
        let store = provider.open(app).await.expect("open upgrades");
        assert_eq!(provider.schema_version().await.expect("version"), Some(SCHEMA_VERSION));
        let unsummed: Option<i64> = conn
            .query_first(
                "SELECT (SELECT COUNT(*) FROM vellum_app WHERE checksum = 0) \
                 + (SELECT COUNT(*) FROM vellum_event WHERE checksum = 0) \
                 + (SELECT COUNT(*) FROM vellum_aggregate WHERE checksum = 0) \
                 + (SELECT COUNT(*) FROM vellum_process WHERE checksum = 0) \
                 + (SELECT COUNT(*) FROM vellum_queue WHERE envelope_checksum = 0 OR state_checksum = 0) \
                 + (SELECT COUNT(*) FROM vellum_offset WHERE checksum = 0)",
            )
            .await
            .expect("count rows without sums");
        assert_eq!(unsummed, Some(0), "every row is summed");

        let md = store.load_aggregate_meta_data("<h>", "<i>").await.expect("aggregate");
        assert_eq!((md.revision, md.last_event_id.as_str()), (3, "<e1>"));
        let p = store.load_process_instance("<p>", "<i>").await.expect("process");
        assert_eq!(
            (p.revision, p.packet.media_type.as_str(), p.packet.data.as_slice()),
            (2, "text/plain", &b"state"[..])
        );
        assert_eq!(store.load_offset("<src>").await.expect("offset"), 7);
        let queue = store.load_queue_messages(10).await.expect("queue");
        assert_eq!(queue.len(), 1);
        assert_eq!((queue[0].revision, queue[0].failure_count, queue[0].next_attempt_at), (1, 2, at));
        assert_eq!(queue[0].envelope, queued);
        assert_eq!(store.next_event_offset().await.expect("next offset"), 2);
        let by_type = store.load_events_by_type(&["A", "B"], 0).await.expect("by type").collect().await;
        let by_type = by_type.expect("by type");
        assert_eq!(
            by_type.iter().map(|e| (e.offset, &e.envelope)).collect::<Vec<_>>(),
            [(0, &events[0]), (1, &events[1])]
        );
        let by_source = store
            .load_events_by_source("<handler-key>", "<instance>")
            .await
            .expect("by source")
            .collect()
            .await;
        assert_eq!(by_source.expect("by source").len(), 2);
        assert_eq!(export_all(&store).await.len(), 6, "two events and one row of each other kind");

        // The writer reads the upgraded counter row (it checks its sum) and writes on.
        let result = persist(&store, vec![Operation::SaveEvent(event("<e2>", "A"))]).await;
        assert_eq!(result.event_offsets["<e2>"], 2);
        store.close().await.expect("close");
        // Upgraded once: opening again finds the current version and changes nothing.
        let store = provider.open(app).await.expect("reopen");
        assert_eq!(store.next_event_offset().await.expect("next offset"), 3);
        store.close().await.expect("close");
        let _ = conn.disconnect().await;
        db
    });
}

/// An event whose stored bytes were changed behind vellum's back reads as `Corrupt`, naming
/// the row and the table; so does an event found by a type its (damaged) `portable_name`
/// column claims but its envelope does not have.
#[cfg_attr(not(vellum_mysql), ignore = "VELLUM_MYSQL_URL is not set")]
#[test]
fn tampered_events_read_as_corrupt() {
    run("tampered_events_read_as_corrupt", |db| async move {
        use vellum_core::{BulkStore, ErrorKind, ExportFrom};
        let provider = db.provider().await;
        let store = provider.open("<app>").await.expect("open");
        let ops = ["<e0>", "<e1>", "<e2>"].iter().map(|id| Operation::SaveEvent(event(id, "A"))).collect();
        persist(&store, ops).await;
        let mut conn = db.conn().await;

        let mut changed = event("<e1>", "A");
        changed.data = b"{\"forged\":true}".to_vec();
        conn.exec_drop(
            "UPDATE vellum_event SET envelope = ? WHERE app_key = ? AND event_offset = 1",
            (changed.to_bytes(), "<app>"),
        )
        .await
        .expect("tamper with the envelope");
        let err = async { store.load_events_by_type(&["A"], 0).await?.collect().await }
            .await
            .expect_err("a damaged envelope");
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err:?}");
        let text = err.to_string();
        assert!(text.contains("offset 1") && text.contains("vellum_event"), "{text}");
        let err = store.export_page(ExportFrom::Events(0), 10).await.expect_err("export checks too");
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err:?}");
        let ok = async { store.load_events_by_source("<handler-key>", "<instance>").await?.collect().await };
        assert_eq!(ok.await.expect_err("by source reads offset 1 too").kind(), ErrorKind::Corrupt);

        // Another type in the index column than in the envelope (which its sum covers).
        conn.exec_drop(
            "UPDATE vellum_event SET portable_name = ? WHERE app_key = ? AND event_offset = 2",
            ("Forged", "<app>"),
        )
        .await
        .expect("tamper with the portable name");
        let err = async { store.load_events_by_type(&["Forged"], 0).await?.collect().await }
            .await
            .expect_err("found by a type it does not have");
        assert_eq!(err.kind(), ErrorKind::Corrupt, "{err:?}");
        let text = err.to_string();
        assert!(text.contains("offset 2") && text.contains("vellum_event"), "{text}");
        store.close().await.expect("close");
        let _ = conn.disconnect().await;
        db
    });
}
