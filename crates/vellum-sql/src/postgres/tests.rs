//! PostgreSQL dialect tests: the conformance suite (which includes hostile keys and data), locking
//! and fencing, schema management and caller-owned pools. They need `VELLUM_POSTGRES_URL`: built
//! without it, they are reported as ignored (see `build.rs`); with it, a server that cannot be
//! reached fails them. Each test works in its own randomly named schema and drops it afterwards.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vellum_conformance::{Backend, Skip};
use vellum_core::{
    AggregateMetaData, Batch, DataStore, Error, EventRepository, Operation, Persister, Provider,
};

use super::{PostgresOptions, PostgresProvider, create_schema, drop_schema};
use crate::schema::SCHEMA_VERSION;
use crate::test_support::event;

const URL_VAR: &str = "VELLUM_POSTGRES_URL";
const CHILD_VAR: &str = "VELLUM_POSTGRES_LOCK_CHILD";

fn url() -> Option<String> {
    std::env::var(URL_VAR).ok().filter(|u| !u.is_empty())
}

/// A schema name no other test (in this or another process) uses.
fn unique_schema() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
    let seed = (nanos, std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("vellum_t_{:016x}", RandomState::new().hash_one(seed))
}

/// One test's storage: a schema of its own, dropped in `teardown`.
struct Pg {
    url: String,
    schema: String,
}

impl Pg {
    fn options(&self) -> PostgresOptions {
        PostgresOptions::new().schema(&self.schema)
    }

    fn provider_with(&self, options: PostgresOptions) -> PostgresProvider {
        PostgresProvider::from_url_with(&self.url, options).expect("build a provider")
    }

    async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) =
            tokio_postgres::connect(&self.url, tokio_postgres::NoTls).await.expect("connect");
        tokio::spawn(connection);
        client
    }
}

impl Backend for Pg {
    type Provider = PostgresProvider;

    async fn provider(&self) -> PostgresProvider {
        self.provider_with(self.options())
    }

    async fn teardown(self) {
        let client = self.client().await;
        drop_schema(&client, &self.schema).await.expect("drop the test schema");
    }
}

/// A fresh schema on the server of `VELLUM_POSTGRES_URL`, which must be set: the tests run only
/// when it was set at build time (without it they are ignored).
fn fresh() -> Pg {
    let url = url().unwrap_or_else(|| panic!("{URL_VAR} is not set; the PostgreSQL tests need a server"));
    Pg { url, schema: unique_schema() }
}

#[allow(clippy::unused_async)]
async fn backend() -> Result<Pg, Skip> {
    Ok(fresh())
}

mod conformance {
    use super::backend;

    vellum_conformance::conformance_tests!(
        backend,
        #[cfg_attr(not(vellum_postgres), ignore = "VELLUM_POSTGRES_URL is not set")]
    );
}

/// The suite again through a caller-owned pool ([`PostgresProvider::from_pool`]), each test in
/// a schema of its own as above.
mod conformance_from_pool {
    use vellum_conformance::{Backend, Skip};

    use super::{Pg, PostgresProvider, fresh};

    /// A fresh schema and a pool the test owns; every provider is a new value over that pool.
    struct PgPool {
        pg: Pg,
        pool: deadpool_postgres::Pool,
    }

    impl Backend for PgPool {
        type Provider = PostgresProvider;

        async fn provider(&self) -> PostgresProvider {
            PostgresProvider::from_pool(self.pool.clone(), self.pg.options())
                .expect("a provider over the pool")
        }

        async fn teardown(self) {
            self.pool.close();
            self.pg.teardown().await;
        }
    }

    #[allow(clippy::unused_async)]
    async fn backend() -> Result<PgPool, Skip> {
        let pg = fresh();
        let config: tokio_postgres::Config = pg.url.parse().expect("VELLUM_POSTGRES_URL parses");
        let manager = deadpool_postgres::Manager::new(config, tokio_postgres::NoTls);
        let pool = deadpool_postgres::Pool::builder(manager).max_size(8).build().expect("build the pool");
        Ok(PgPool { pg, pool })
    }

    vellum_conformance::conformance_tests!(
        backend,
        #[cfg_attr(not(vellum_postgres), ignore = "VELLUM_POSTGRES_URL is not set")]
    );
}

/// Runs `test` against a fresh backend on a multi-threaded runtime, tearing it down after.
fn run<F, Fut>(test: F)
where
    F: FnOnce(&'static Pg) -> Fut,
    Fut: Future<Output = ()>,
{
    let rt = vellum_conformance::runtime();
    rt.block_on(async {
        let pg = fresh();
        let pg: &'static Pg = Box::leak(Box::new(pg));
        tokio::time::timeout(Duration::from_secs(120), test(pg)).await.expect("test timed out");
        let client = pg.client().await;
        drop_schema(&client, &pg.schema).await.expect("drop the test schema");
    });
}

// ---------------------------------------------------------------------------------------------
// Locking and fencing (docs/locking.md#fencing)

#[cfg_attr(not(vellum_postgres), ignore = "VELLUM_POSTGRES_URL is not set")]
#[test]
fn second_open_in_process_is_locked_and_close_releases() {
    run(|pg| async move {
        let a = pg.provider().await;
        let b = pg.provider().await;
        let store = a.open("app").await.unwrap();
        let started = std::time::Instant::now();
        assert!(matches!(b.open("app").await, Err(Error::Locked { app_key }) if app_key == "app"));
        assert!(matches!(a.open("app").await, Err(Error::Locked { .. })));
        assert!(started.elapsed() < Duration::from_secs(5), "Locked must be prompt");
        store.close().await.unwrap();
        let again = b.open("app").await.unwrap();
        again.close().await.unwrap();
    });
}

/// Child mode for the cross-process tests: opens the key named in the environment, reports it,
/// and holds it until killed. Without the variable it does nothing.
#[cfg_attr(not(vellum_postgres), ignore = "VELLUM_POSTGRES_URL is not set")]
#[test]
fn lock_holder_child_process() {
    let Ok(spec) = std::env::var(CHILD_VAR) else { return };
    let Some((schema, app_key)) = spec.split_once('|') else { panic!("bad {CHILD_VAR}: {spec}") };
    let url = url().expect("the child needs the URL");
    let rt = vellum_conformance::runtime();
    rt.block_on(async {
        let provider = PostgresProvider::from_url_with(&url, PostgresOptions::new().schema(schema)).unwrap();
        let store = provider.open(app_key).await.expect("child: open");
        store
            .persist(Batch::from(vec![Operation::SaveEvent(event("<from-child>", "A"))]))
            .await
            .expect("child: persist");
        println!("VELLUM-CHILD-LOCKED");
        tokio::time::sleep(Duration::from_secs(120)).await;
        drop(store);
    });
}

#[cfg_attr(not(vellum_postgres), ignore = "VELLUM_POSTGRES_URL is not set")]
#[test]
fn open_held_by_another_process_is_locked_until_it_is_killed() {
    run(|pg| async move {
        let app_key = "cross-process 'app'";
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "postgres::tests::lock_holder_child_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_VAR, format!("{}|{app_key}", pg.schema))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the child");
        let stdout = child.stdout.take().unwrap();
        let ready = tokio::task::spawn_blocking(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .any(|line| line.contains("VELLUM-CHILD-LOCKED"))
        })
        .await
        .unwrap();
        assert!(ready, "the child did not report holding the lock");

        let provider = pg.provider().await;
        let started = std::time::Instant::now();
        match provider.open(app_key).await {
            Err(Error::Locked { app_key: got }) => assert_eq!(got, app_key),
            other => panic!("expected Locked while the child holds the key, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(5), "Locked must be prompt");

        child.kill().unwrap();
        child.wait().unwrap();
        // The server notices the dead client and ends its session, releasing the lock.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let store = loop {
            match provider.open(app_key).await {
                Ok(store) => break store,
                Err(Error::Locked { .. }) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("open after killing the holder: {e:?}"),
            }
        };
        assert_eq!(store.next_event_offset().await.unwrap(), 1, "the child's event is there");
        store.close().await.unwrap();
    });
}

#[cfg_attr(not(vellum_postgres), ignore = "VELLUM_POSTGRES_URL is not set")]
#[test]
fn terminating_the_lock_session_fences_the_store() {
    run(|pg| async move {
        let provider = pg.provider().await;
        let store = provider.open("fenced").await.unwrap();
        store.persist(Batch::from(vec![Operation::SaveEvent(event("<e0>", "A"))])).await.unwrap();

        let admin = pg.client().await;
        let row =
            admin.query_one("SELECT pg_terminate_backend($1)", &[&store.lock_backend_pid()]).await.unwrap();
        assert!(row.get::<_, bool>(0), "terminate the lock session");

        for i in 1..4 {
            let result =
                store.persist(Batch::from(vec![Operation::SaveEvent(event(&format!("<e{i}>"), "A"))])).await;
            match result {
                Err(e @ Error::Storage { .. }) => {
                    assert_eq!(e.kind(), vellum_core::ErrorKind::Fenced, "{e}");
                    assert!(!e.is_retryable());
                    assert!(e.to_string().contains("lost its lock connection"), "unclear error: {e}");
                    assert!(vellum_core::DataStore::is_fenced(&store), "the store says it is fenced");
                    eprintln!("postgres, persist after the lock session was terminated: {e}");
                }
                other => panic!("persist after losing the lock: expected a storage error, got {other:?}"),
            }
        }
        // Reads still work; nothing was written after the lock was lost.
        assert_eq!(store.next_event_offset().await.unwrap(), 1);
        store.close().await.unwrap();
        // The key is free again (the session died), and the data is intact.
        let store = provider.open("fenced").await.unwrap();
        let result =
            store.persist(Batch::from(vec![Operation::SaveEvent(event("<e9>", "A"))])).await.unwrap();
        assert_eq!(result.event_offsets["<e9>"], 1);
        store.close().await.unwrap();
    });
}

/// docs/locking.md#postgresql: lock keys are allocated (schema OID, lock id), so no two
/// applications share one, in one schema or across schemas, and a key is stable across opens.
#[cfg_attr(not(vellum_postgres), ignore = "VELLUM_POSTGRES_URL is not set")]
#[test]
fn lock_keys_are_allocated_and_never_shared() {
    run(|pg| async move {
        let provider = pg.provider().await;
        let other = Pg { url: pg.url.clone(), schema: unique_schema() };
        let elsewhere = other.provider().await;
        let mut keys = std::collections::HashMap::new();
        for (name, p) in [("here", &provider), ("elsewhere", &elsewhere)] {
            for app in ["a", "b", "", "\u{1F600}", "a "] {
                let store = p.open(app).await.unwrap();
                let key = store.advisory_lock_key();
                assert!(keys.insert(key, (name, app)).is_none(), "{name}/{app:?} shares key {key:#x}");
                store.close().await.unwrap();
                let again = p.open(app).await.unwrap();
                assert_eq!(again.advisory_lock_key(), key, "{name}/{app:?}: the key is stable");
                again.close().await.unwrap();
            }
        }
        let client = other.client().await;
        drop_schema(&client, &other.schema).await.unwrap();
    });
}

// ---------------------------------------------------------------------------------------------
// Hostile input

// ---------------------------------------------------------------------------------------------
// Schema management

#[cfg_attr(not(vellum_postgres), ignore = "VELLUM_POSTGRES_URL is not set")]
#[test]
fn create_and_drop_schema_are_idempotent() {
    run(|pg| async move {
        let client = pg.client().await;
        create_schema(&client, &pg.schema).await.unwrap();
        create_schema(&client, &pg.schema).await.unwrap();
        let provider = pg.provider().await;
        provider.create_schema().await.unwrap();
        drop_schema(&client, &pg.schema).await.unwrap();
        drop_schema(&client, &pg.schema).await.unwrap();
        provider.drop_schema().await.unwrap();
        // Concurrent creation does not race.
        let (a, b) = tokio::join!(create_schema(&client, &pg.schema), provider.create_schema());
        a.unwrap();
        b.unwrap();
    });
}

#[cfg_attr(not(vellum_postgres), ignore = "VELLUM_POSTGRES_URL is not set")]
#[test]
fn opening_migrates_automatically() {
    run(|pg| async move {
        let provider = pg.provider().await;
        let store = provider.open("app").await.unwrap();
        store.persist(Batch::from(vec![Operation::SaveEvent(event("<e>", "A"))])).await.unwrap();
        store.close().await.unwrap();
        let client = pg.client().await;
        let row =
            client.query_one(&format!("SELECT version FROM {}.vellum_schema", pg.schema), &[]).await.unwrap();
        assert_eq!(row.get::<_, i64>(0), SCHEMA_VERSION);
    });
}

#[cfg_attr(not(vellum_postgres), ignore = "VELLUM_POSTGRES_URL is not set")]
#[test]
fn no_migrate_without_schema_is_a_clear_error() {
    run(|pg| async move {
        let provider = pg.provider_with(pg.options().migrate(false));
        let err = provider.open("app").await.unwrap_err();
        let text = format!(
            "{err} / {}",
            std::error::Error::source(&err).map(ToString::to_string).unwrap_or_default()
        );
        assert!(text.contains("create_schema") && text.contains(&pg.schema), "unclear: {text}");
        provider.create_schema().await.unwrap();
        provider.open("app").await.unwrap().close().await.unwrap();
    });
}

#[cfg_attr(not(vellum_postgres), ignore = "VELLUM_POSTGRES_URL is not set")]
#[test]
fn newer_schema_version_is_refused() {
    run(|pg| async move {
        let provider = pg.provider().await;
        provider.create_schema().await.unwrap();
        let client = pg.client().await;
        let newer = SCHEMA_VERSION + 1;
        client
            .execute(&format!("UPDATE {}.vellum_schema SET version = $1", pg.schema), &[&newer])
            .await
            .unwrap();
        for options in [pg.options(), pg.options().migrate(false)] {
            let err = pg.provider_with(options).open("app").await.unwrap_err();
            let text = format!(
                "{err} / {}",
                std::error::Error::source(&err).map(ToString::to_string).unwrap_or_default()
            );
            assert!(
                text.contains(&newer.to_string()) && text.contains(&SCHEMA_VERSION.to_string()),
                "must name both versions: {text}"
            );
        }
        assert!(create_schema(&client, &pg.schema).await.is_err(), "create_schema refuses too");
    });
}

#[test]
fn invalid_schema_names_are_rejected() {
    for bad in ["", "Upper", "1abc", "a-b", "a b", "pg_x", "a\"b", &"x".repeat(64)] {
        let result =
            PostgresProvider::from_url_with("postgres://u@localhost/db", PostgresOptions::new().schema(bad));
        assert!(result.is_err(), "{bad:?} accepted");
    }
}

// ---------------------------------------------------------------------------------------------
// Caller-owned pool and group commit

#[cfg_attr(not(vellum_postgres), ignore = "VELLUM_POSTGRES_URL is not set")]
#[test]
fn caller_owned_pool_is_never_closed() {
    run(|pg| async move {
        let config: tokio_postgres::Config = pg.url.parse().unwrap();
        let manager = deadpool_postgres::Manager::new(config, tokio_postgres::NoTls);
        let pool = deadpool_postgres::Pool::builder(manager).max_size(4).build().unwrap();
        let provider = PostgresProvider::from_pool(pool.clone(), pg.options()).unwrap();
        let store = provider.open("pooled").await.unwrap();
        assert!(matches!(provider.open("pooled").await, Err(Error::Locked { .. })));
        store.persist(Batch::from(vec![Operation::SaveEvent(event("<e>", "A"))])).await.unwrap();
        assert_eq!(store.next_event_offset().await.unwrap(), 1);
        store.close().await.unwrap();
        drop(provider);
        let client = pool.get().await.unwrap();
        client.query_one("SELECT 1", &[]).await.unwrap();
        assert!(!pool.is_closed());
    });
}

#[cfg_attr(not(vellum_postgres), ignore = "VELLUM_POSTGRES_URL is not set")]
#[test]
fn concurrent_persists_group_and_keep_offsets_dense() {
    run(|pg| async move {
        let provider = pg.provider().await;
        let store = std::sync::Arc::new(provider.open("group").await.unwrap());
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let store = std::sync::Arc::clone(&store);
                tokio::spawn(async move {
                    let ops = vec![
                        Operation::SaveEvent(event(&format!("<e{i}>"), "A")),
                        Operation::SaveAggregateMetaData(AggregateMetaData::new("h", format!("<i{i}>"))),
                        // Every batch also touches one shared aggregate; exactly one wins.
                        Operation::SaveAggregateMetaData(AggregateMetaData::new("shared", "x")),
                    ];
                    store.persist(Batch::from(ops)).await
                })
            })
            .collect();
        let mut offsets = HashMap::new();
        let mut conflicts = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(result) => offsets.extend(result.event_offsets),
                Err(e) if e.is_conflict() => conflicts += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(offsets.len(), 1);
        assert_eq!(conflicts, 199);
        assert_eq!(store.next_event_offset().await.unwrap(), 1);
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let store = std::sync::Arc::clone(&store);
                tokio::spawn(async move {
                    store
                        .persist(Batch::from(vec![Operation::SaveEvent(event(&format!("<f{i}>"), "B"))]))
                        .await
                })
            })
            .collect();
        let mut all: Vec<u64> = Vec::new();
        for task in tasks {
            all.extend(task.await.unwrap().unwrap().event_offsets.into_values());
        }
        all.sort_unstable();
        assert_eq!(all, (1..=200).collect::<Vec<u64>>());
        store.close().await.unwrap();
    });
}

/// A simple group's statement whose probe does not hold (a batch that failed against the
/// assumed state assumed aggregate `c` at revision 1; it is at 2) fails with the check's
/// division by zero and writes nothing; with the probe holding, the same statement commits.
#[cfg_attr(not(vellum_postgres), ignore = "VELLUM_POSTGRES_URL is not set")]
#[test]
fn a_simple_statement_whose_probe_fails_writes_nothing() {
    use super::simple::Simple;
    use super::sql::DIVISION_BY_ZERO;
    use super::writer::{Expected, Writes};
    use vellum_core::provider::{Counters, plan_group};
    run(|pg| async move {
        let provider = pg.provider().await;
        let store = provider.open("app").await.unwrap();
        let save_c = |revision| {
            Operation::SaveAggregateMetaData(AggregateMetaData {
                revision,
                ..AggregateMetaData::new("h", "c")
            })
        };
        store.persist(Batch::from(vec![save_c(0)])).await.unwrap();
        store.persist(Batch::from(vec![save_c(1)])).await.unwrap();
        store.close().await.unwrap();
        let client = pg.client().await;
        let group = |c_assumed| {
            vec![
                Batch::from(vec![Operation::SaveEvent(event("m1", "T"))]),
                // Fails whole against the assumed state (m1 is the first batch's), so "c" is probed.
                Batch::from(vec![Operation::SaveEvent(event("m1", "T")), save_c(c_assumed)]),
            ]
        };
        let counters = Counters { next_offset: 0, next_sequence: 0 };
        for (c_assumed, commits) in [(1, false), (2, true)] {
            let batches = group(c_assumed);
            let (mut snapshot, expected) = Expected::of(&batches, counters);
            let planned = plan_group(&batches, &mut snapshot, counters).unwrap();
            let writes = Writes::of("app", &planned.plan.writes);
            let simple = Simple::new("app", "channel", &writes, planned.plan.after, &expected).unwrap();
            let statement = client.prepare(&simple.shape.text(&pg.schema)).await.unwrap();
            let result = client.execute(&statement, &simple.params()).await;
            let stored: i64 = client
                .query_one(&format!("SELECT count(*) FROM {}.vellum_event", pg.schema), &[])
                .await
                .unwrap()
                .get(0);
            if commits {
                result.unwrap();
                assert_eq!(stored, 1);
            } else {
                let code = result.unwrap_err().code().map(|c| c.code().to_owned());
                assert_eq!(code.as_deref(), Some(DIVISION_BY_ZERO));
                assert_eq!(stored, 0, "a failed check wrote its event");
            }
        }
        let store = provider.open("app").await.unwrap();
        assert_eq!(store.next_event_offset().await.unwrap(), 1);
        store.close().await.unwrap();
    });
}

/// Every shape of a simple group's statement is valid SQL over the real schema: the server
/// prepares each (the unit tests check only how they number their parameters).
#[cfg_attr(not(vellum_postgres), ignore = "VELLUM_POSTGRES_URL is not set")]
#[test]
fn every_simple_statement_shape_prepares() {
    use super::simple::Shape;
    run(|pg| async move {
        let provider = pg.provider().await;
        provider.create_schema().await.unwrap();
        let client = pg.client().await;
        let mut prepared = 0;
        for shape in Shape::all() {
            let text = shape.text(&pg.schema);
            if let Err(e) = client.prepare(&text).await {
                panic!("shape {shape:?} does not prepare: {e:?}\n{text}");
            }
            prepared += 1;
        }
        assert_eq!(prepared, Shape::all().count());
        assert!(prepared > 256, "one-row and many-row variants: {prepared}");
    });
}

/// A server that cannot be reached is `Unavailable`, which a caller may retry (needs no server).
#[test]
fn an_unreachable_server_is_unavailable() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let provider = PostgresProvider::from_url("postgres://postgres@127.0.0.1:1/test").unwrap();
        let err = provider.open("app").await.unwrap_err();
        assert_eq!(err.kind(), vellum_core::ErrorKind::Unavailable, "{err:?}");
        assert!(err.is_retryable());
    });
}

/// PostgreSQL text cannot hold NUL: a batch with one is refused before it is queued, naming
/// the field, as `InvalidInput`, and nothing of it is written.
#[cfg_attr(not(vellum_postgres), ignore = "VELLUM_POSTGRES_URL is not set")]
#[test]
fn a_nul_in_a_key_is_invalid_input_naming_the_field() {
    run(|pg| async move {
        let provider = pg.provider().await;
        let store = provider.open("nul").await.unwrap();
        let err = store
            .persist(Batch::from(vec![
                Operation::SaveEvent(event("<fine>", "A")),
                Operation::SaveAggregateMetaData(vellum_core::AggregateMetaData::new("h", "a\0b")),
            ]))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), vellum_core::ErrorKind::InvalidInput, "{err:?}");
        let text = std::error::Error::source(&err).map(ToString::to_string).unwrap_or_default();
        assert!(text.contains("instance ID of operation 1"), "{err}: {text}");
        assert_eq!(store.next_event_offset().await.unwrap(), 0, "nothing of the batch was written");
        store.close().await.unwrap();
    });
}

// ---------------------------------------------------------------------------------------------
// Integrity (docs/integrity.md)

/// Stores five events of type `T` in `app`, closed again.
async fn five_events(provider: &PostgresProvider) {
    let store = provider.open("app").await.unwrap();
    let events: Vec<Operation> = (0..5).map(|i| Operation::SaveEvent(event(&format!("e{i}"), "T"))).collect();
    store.persist(Batch::from(events)).await.unwrap();
    store.close().await.unwrap();
}

#[cfg_attr(not(vellum_postgres), ignore = "VELLUM_POSTGRES_URL is not set")]
#[test]
fn a_schema_1_database_is_upgraded_with_checksums() {
    use vellum_core::BulkStore;
    run(|pg| async move {
        let provider = pg.provider().await;
        five_events(&provider).await;
        // Back to schema 1: the same rows without their checksum columns.
        let client = pg.client().await;
        let s = &pg.schema;
        for (table, column) in [
            ("vellum_app", "checksum"),
            ("vellum_event", "checksum"),
            ("vellum_aggregate", "checksum"),
            ("vellum_process", "checksum"),
            ("vellum_queue", "envelope_checksum"),
            ("vellum_queue", "state_checksum"),
            ("vellum_offset", "checksum"),
        ] {
            client.batch_execute(&format!("ALTER TABLE {s}.{table} DROP COLUMN {column}")).await.unwrap();
        }
        client.batch_execute(&format!("UPDATE {s}.vellum_schema SET version = 1")).await.unwrap();
        let store = pg.provider().await.open("app").await.unwrap();
        assert_eq!(store.next_event_offset().await.unwrap(), 5);
        let mut cursor = store.load_events_by_type(&["T"], 0).await.unwrap();
        let mut n = 0;
        while let Some(e) = cursor.next().await.unwrap() {
            assert_eq!(e.envelope, event(&format!("e{n}"), "T"));
            n += 1;
        }
        assert_eq!(n, 5);
        assert!(store.verify(&mut |_| {}).await.unwrap().is_clean());
        store.close().await.unwrap();
        let version: i64 =
            client.query_one(&format!("SELECT version FROM {s}.vellum_schema"), &[]).await.unwrap().get(0);
        assert_eq!(version, SCHEMA_VERSION);
    });
}

#[cfg_attr(not(vellum_postgres), ignore = "VELLUM_POSTGRES_URL is not set")]
#[test]
fn changed_rows_are_corrupt_errors_and_verify_names_them() {
    use vellum_core::{BulkStore, ErrorKind};
    run(|pg| async move {
        let provider = pg.provider().await;
        five_events(&provider).await;
        let client = pg.client().await;
        let s = &pg.schema;
        client
            .batch_execute(&format!(
                "UPDATE {s}.vellum_event SET envelope = set_byte(envelope, 3, get_byte(envelope, 3) # 1) \
                 WHERE event_offset = 2; \
                 UPDATE {s}.vellum_event SET portable_name = 'Other' WHERE event_offset = 4"
            ))
            .await
            .unwrap();
        let store = provider.open("app").await.unwrap();
        let mut cursor = store.load_events_by_type(&["T"], 0).await.unwrap();
        let error = cursor.next().await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Corrupt, "{error}");
        assert!(
            error.to_string().contains("offset 2") && error.to_string().contains("vellum_event"),
            "{error}"
        );
        let mut other = store.load_events_by_type(&["Other"], 0).await.unwrap();
        assert_eq!(other.next().await.unwrap_err().kind(), ErrorKind::Corrupt);
        let report = store.verify(&mut |_| {}).await.unwrap();
        let problems: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
        assert!(
            problems.iter().any(|p| p.starts_with("event at offset 2") && p.contains("checksum")),
            "{problems:#?}"
        );
        assert!(
            problems.iter().any(|p| p.starts_with("event at offset 4") && p.contains("portable_name")),
            "{problems:#?}"
        );
        store.close().await.unwrap();
    });
}

/// The `LISTEN` session of the reader of `app` (its channel names the application's lock key).
async fn listener_pid(admin: &tokio_postgres::Client, reader: &super::PostgresReader) -> Option<i32> {
    let statement = format!("LISTEN {}", super::listen::channel(reader.dialect().lock_key));
    let row = admin
        .query_opt("SELECT pid FROM pg_stat_activity WHERE query = $1 AND state = 'idle'", &[&statement])
        .await
        .unwrap();
    row.map(|r| r.get(0))
}

/// Waits until the reader's listener session is up.
async fn wait_for_listener(admin: &tokio_postgres::Client, reader: &super::PostgresReader) -> i32 {
    for _ in 0..500 {
        if let Some(pid) = listener_pid(admin, reader).await {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the reader's LISTEN session never showed up");
}

/// docs/events.md#reading-beside-the-engine: a reader's followers are woken by the committing
/// transaction's NOTIFY: with a poll cap of an hour, a new event still arrives at once; and
/// when the listener's session is killed, it reconnects and the follower gets what was
/// committed meanwhile.
#[cfg_attr(not(vellum_postgres), ignore = "VELLUM_POSTGRES_URL is not set")]
#[test]
fn reader_followers_wake_on_notify_and_survive_a_lost_listener() {
    run(|pg| async move {
        let provider = pg.provider().await;
        let store = provider.open("notified").await.unwrap();
        let save = |id: &str| Batch::from(vec![Operation::SaveEvent(event(id, "A"))]);
        store.persist(save("<e0>")).await.unwrap();
        let reader = provider.open_reader("notified").await.unwrap();
        let admin = pg.client().await;
        let first_pid = wait_for_listener(&admin, &reader).await;
        let cursor = vellum_core::EventRepository::load_all_events(&reader, 0).await.unwrap();
        let mut follower = cursor.follow().with_poll_cap(Duration::from_secs(3600));
        assert_eq!(follower.next().await.unwrap().offset, 0);

        let waiting = tokio::spawn(async move {
            let next = follower.next().await.map(|e| e.offset);
            (follower, next)
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiting.is_finished());
        let committed = std::time::Instant::now();
        store.persist(save("<e1>")).await.unwrap();
        let (mut follower, next) =
            tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap();
        assert_eq!(next.unwrap(), 1);
        eprintln!("postgres: NOTIFY woke the reader's follower {:?} after the commit", committed.elapsed());

        // The listener's session dies; an event is committed while it reconnects.
        let row = admin.query_one("SELECT pg_terminate_backend($1)", &[&first_pid]).await.unwrap();
        assert!(row.get::<_, bool>(0));
        store.persist(save("<e2>")).await.unwrap();
        let next = tokio::time::timeout(Duration::from_secs(10), follower.next()).await.unwrap().unwrap();
        assert_eq!(next.offset, 2, "the event committed while the listener was down");
        let second_pid = wait_for_listener(&admin, &reader).await;
        assert_ne!(second_pid, first_pid, "a new LISTEN session");
        let waiting = tokio::spawn(async move { follower.next().await.map(|e| e.offset) });
        tokio::time::sleep(Duration::from_millis(100)).await;
        store.persist(save("<e3>")).await.unwrap();
        assert_eq!(tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap().unwrap(), 3);

        vellum_core::EventReader::close(&reader).await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_secs(5), async {
                while listener_pid(&admin, &reader).await.is_some() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await
            .is_ok(),
            "closing the reader ends its LISTEN session"
        );
        store.close().await.unwrap();
    });
}
