//! TLS against PostgreSQL: the server of `VELLUM_POSTGRES_URL` with TLS on and the test
//! certificates of `VELLUM_TLS_DIR` (both made by `.ci/tls`: a server certificate for
//! `localhost` only, a client certificate, and an unrelated CA), and a fake server without TLS
//! for `require` and `prefer`. Each TLS failure's text is printed (`--nocapture` shows it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use vellum_core::{Batch, DataStore, ErrorKind, Operation, Persister, Provider};

use super::{PostgresOptions, PostgresProvider};
use crate::test_support::event;
use crate::tls::tests::chain;

fn tls_dir() -> String {
    std::env::var("VELLUM_TLS_DIR").expect("VELLUM_TLS_DIR is not set")
}

/// `VELLUM_POSTGRES_URL` with its host replaced by `host` and `params` added.
fn url(host: &str, params: &str) -> String {
    let base = std::env::var("VELLUM_POSTGRES_URL").expect("VELLUM_POSTGRES_URL is not set");
    let (scheme, rest) = base.split_once("://").expect("a postgres:// URL");
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (user, hostport) = authority.rsplit_once('@').map_or(("", authority), |(u, h)| (u, h));
    let port = hostport.rsplit_once(':').map(|(_, p)| p);
    let user = if user.is_empty() { String::new() } else { format!("{user}@") };
    let port = port.map_or_else(String::new, |p| format!(":{p}"));
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{scheme}://{user}{host}{port}/{path}{sep}{params}")
}

fn schema() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("vellum_tls_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

fn provider(url: &str, schema: &str) -> PostgresProvider {
    PostgresProvider::from_url_with(url, PostgresOptions::new().schema(schema))
        .unwrap_or_else(|e| panic!("{url}: {}", chain(&e)))
}

/// Whether the server session `pid` is encrypted, and its client certificate's DN.
async fn ssl_of(provider: &PostgresProvider, pid: Option<i32>) -> (bool, Option<String>) {
    let client = provider.pool().get().await.expect("a pooled connection");
    let row = client
        .query_one(
            "SELECT ssl, client_dn FROM pg_stat_ssl WHERE pid = coalesce($1, pg_backend_pid())",
            &[&pid],
        )
        .await
        .expect("pg_stat_ssl");
    (row.get(0), row.get(1))
}

/// Opens a store over `url`, persists, and returns the encryption of the lock connection and
/// of a pooled one; drops the schema after.
async fn open_and_check(url: &str) -> [(bool, Option<String>); 2] {
    let schema = schema();
    let provider = provider(url, &schema);
    let store = provider.open("tls-app").await.unwrap_or_else(|e| panic!("{url}: {}", chain(&e)));
    store.persist(Batch::from(vec![Operation::SaveEvent(event("<tls>", "A"))])).await.expect("persist");
    let lock = ssl_of(&provider, Some(store.lock_backend_pid())).await;
    let pooled = ssl_of(&provider, None).await;
    store.close().await.expect("close");
    provider.drop_schema().await.expect("drop the schema");
    [lock, pooled]
}

/// The error of opening a store over `url`, printed.
async fn open_error(url: &str, case: &str) -> String {
    let schema = schema();
    let provider = provider(url, &schema);
    let Err(error) = provider.open("tls-app").await else { panic!("{case}: {url} connected") };
    let text = chain(&error);
    eprintln!("postgres {case}: {text}");
    assert_eq!(error.kind(), ErrorKind::Misconfigured, "{case}: {text}");
    text
}

#[cfg_attr(
    not(all(vellum_postgres, vellum_tls)),
    ignore = "VELLUM_POSTGRES_URL or VELLUM_TLS_DIR is not set"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_to_localhost_encrypts_the_lock_and_pooled_connections() {
    let dir = tls_dir();
    let url = url(
        "localhost",
        &format!(
            "sslmode=verify-full&sslrootcert={dir}/ca.pem&sslcert={dir}/client.pem&sslkey={dir}/client-key.pem"
        ),
    );
    for (which, (ssl, dn)) in
        ["lock connection", "pooled connection"].into_iter().zip(open_and_check(&url).await)
    {
        assert!(ssl, "{which} is not encrypted");
        assert!(dn.as_deref().is_some_and(|dn| dn.contains("vellum-ci-client")), "{which}: client_dn {dn:?}");
    }
}

#[cfg_attr(
    not(all(vellum_postgres, vellum_tls)),
    ignore = "VELLUM_POSTGRES_URL or VELLUM_TLS_DIR is not set"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_ca_and_require_to_an_address_the_certificate_does_not_name() {
    let dir = tls_dir();
    for params in [format!("sslmode=verify-ca&sslrootcert={dir}/ca.pem"), "sslmode=require".to_owned()] {
        let url = url("127.0.0.1", &params);
        for (which, (ssl, dn)) in
            ["lock connection", "pooled connection"].into_iter().zip(open_and_check(&url).await)
        {
            assert!(ssl, "{params}: {which} is not encrypted");
            assert_eq!(dn, None, "{params}: no client certificate was given");
        }
    }
}

#[cfg_attr(
    not(all(vellum_postgres, vellum_tls)),
    ignore = "VELLUM_POSTGRES_URL or VELLUM_TLS_DIR is not set"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_is_the_default_and_encrypts() {
    let url = std::env::var("VELLUM_POSTGRES_URL").expect("VELLUM_POSTGRES_URL");
    for (which, (ssl, _)) in
        ["lock connection", "pooled connection"].into_iter().zip(open_and_check(&url).await)
    {
        assert!(ssl, "{which} is not encrypted with the default sslmode (prefer)");
    }
    // libpq's key=value form with only a hostaddr: TLS needs a name, the address serves.
    let config: tokio_postgres::Config = url.parse().expect("VELLUM_POSTGRES_URL parses");
    let user = config.get_user().unwrap_or("postgres");
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let dbname = config.get_dbname().unwrap_or("postgres");
    let keyvalue = format!("hostaddr=127.0.0.1 port={port} user={user} dbname={dbname}");
    for (which, (ssl, _)) in
        ["lock connection", "pooled connection"].into_iter().zip(open_and_check(&keyvalue).await)
    {
        assert!(ssl, "{which} is not encrypted over {keyvalue:?}");
    }
    let url = self::url("127.0.0.1", "sslmode=disable");
    for (which, (ssl, _)) in
        ["lock connection", "pooled connection"].into_iter().zip(open_and_check(&url).await)
    {
        assert!(!ssl, "{which} is encrypted with sslmode=disable");
    }
}

#[cfg_attr(
    not(all(vellum_postgres, vellum_tls)),
    ignore = "VELLUM_POSTGRES_URL or VELLUM_TLS_DIR is not set"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_not_trusted() {
    let dir = tls_dir();
    for mode in ["verify-full", "verify-ca", "require"] {
        let text =
            open_error(&url("localhost", &format!("sslmode={mode}&sslrootcert={dir}/other-ca.pem")), mode)
                .await;
        assert!(text.contains("not trusted: unknown issuer"), "{mode}: {text}");
        assert!(text.contains("other-ca.pem"), "{mode}: {text}");
    }
    // The pool says the same.
    let schema = schema();
    let provider =
        provider(&url("localhost", &format!("sslmode=verify-full&sslrootcert={dir}/other-ca.pem")), &schema);
    let error = provider.schema_version().await.expect_err("wrong CA");
    let text = chain(&error);
    eprintln!("postgres pool with the wrong CA: {text}");
    assert!(text.contains("unknown issuer"), "{text}");
}

#[cfg_attr(
    not(all(vellum_postgres, vellum_tls)),
    ignore = "VELLUM_POSTGRES_URL or VELLUM_TLS_DIR is not set"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_to_an_address_the_certificate_does_not_name_fails() {
    let dir = tls_dir();
    let text = open_error(
        &url("127.0.0.1", &format!("sslmode=verify-full&sslrootcert={dir}/ca.pem")),
        "verify-full",
    )
    .await;
    assert!(text.contains("not valid for host 127.0.0.1"), "{text}");
}

/// A fake server without TLS: answers the `SSLRequest` with `N`, then reports the first bytes
/// of the next message and hangs up. Returns its address and what it saw.
async fn fake_server_without_tls() -> (String, tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address").to_string();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = [0u8; 8];
            if socket.read_exact(&mut request).await.is_err() {
                continue;
            }
            // SSLRequest: length 8, code 80877103.
            assert_eq!(request, [0, 0, 0, 8, 4, 210, 22, 47], "not an SSLRequest");
            let _ = socket.write_all(b"N").await;
            let mut next = [0u8; 8];
            let n = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut next)).await;
            let _ = tx.send(match n {
                Ok(Ok(n)) => next[..n].to_vec(),
                _ => Vec::new(),
            });
        }
    });
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_against_a_server_without_tls_fails_and_prefer_goes_plain() {
    let (addr, mut seen) = fake_server_without_tls().await;
    let url = format!("postgres://postgres@{addr}/test?sslmode=require&connect_timeout=5");
    let text = open_error(&url, "require, server without TLS").await;
    assert!(text.contains("server does not support TLS"), "{text}");
    assert_eq!(seen.recv().await.as_deref(), Some(&[][..]), "require must hang up after the N");

    let url = format!("postgres://postgres@{addr}/test?sslmode=prefer&connect_timeout=5");
    let provider = provider(&url, &schema());
    let error = provider.open("tls-app").await.expect_err("the fake server hangs up");
    eprintln!("postgres prefer, server without TLS (then hung up): {}", chain(&error));
    let startup = seen.recv().await.expect("a second connection");
    // StartupMessage in plain text: length, then protocol 3.0.
    assert_eq!(startup.get(4..8), Some(&[0, 3, 0, 0][..]), "not a plaintext StartupMessage: {startup:?}");
}
