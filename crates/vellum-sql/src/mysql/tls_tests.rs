//! TLS against MariaDB/MySQL: the server of `VELLUM_MYSQL_URL` with TLS on and the test
//! certificates of `VELLUM_TLS_DIR` (both made by `.ci/tls`: a server certificate for
//! `localhost` only, a client certificate, and an unrelated CA), and a fake server without TLS
//! for `REQUIRED` and `PREFERRED`. Each TLS failure's text is printed (`--nocapture` shows it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use vellum_core::{Batch, DataStore, ErrorKind, Operation, Persister, Provider};

use super::MysqlProvider;
use crate::test_support::event;
use crate::tls::tests::chain;

fn tls_dir() -> String {
    std::env::var("VELLUM_TLS_DIR").expect("VELLUM_TLS_DIR is not set")
}

fn base_url() -> String {
    std::env::var("VELLUM_MYSQL_URL").expect("VELLUM_MYSQL_URL is not set")
}

/// `VELLUM_MYSQL_URL` as `user`, to `host`, database `db`, with `params` added.
fn url(user: Option<&str>, host: &str, db: &str, params: &str) -> String {
    let base = base_url();
    let (scheme, rest) = base.split_once("://").expect("a mysql:// URL");
    let authority = rest.split_once('/').map_or(rest, |(a, _)| a);
    let (userinfo, hostport) = authority.rsplit_once('@').map_or(("", authority), |(u, h)| (u, h));
    let userinfo = user.unwrap_or(userinfo);
    let port = hostport.rsplit_once(':').map_or_else(String::new, |(_, p)| format!(":{p}"));
    let user = if userinfo.is_empty() { String::new() } else { format!("{userinfo}@") };
    format!("{scheme}://{user}{host}{port}/{db}?{params}")
}

/// A database of its own, made and dropped over a plain connection.
struct Db(String);

impl Db {
    async fn create() -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let name = format!("vellum_tls_{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let mut conn = admin().await;
        conn.query_drop(format!("CREATE DATABASE IF NOT EXISTS `{name}`")).await.expect("create database");
        let _ = conn.disconnect().await;
        Self(name)
    }

    async fn drop(self) {
        let mut conn = admin().await;
        conn.query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.0)).await.expect("drop database");
        let _ = conn.disconnect().await;
    }
}

async fn admin() -> Conn {
    Conn::new(Opts::from_url(&base_url()).expect("VELLUM_MYSQL_URL parses")).await.expect("connect")
}

fn provider(url: &str) -> MysqlProvider {
    MysqlProvider::from_url(url).unwrap_or_else(|e| panic!("{url}: {}", chain(&e)))
}

/// The session's TLS version ("" when in plain text) and user.
async fn session(conn: &mut Conn) -> (String, String) {
    let row: Option<(String, String)> =
        conn.query_first("SHOW SESSION STATUS LIKE 'Ssl_version'").await.expect("Ssl_version");
    let user: Option<String> = conn.query_first("SELECT CURRENT_USER()").await.expect("CURRENT_USER()");
    (row.map(|(_, v)| v).unwrap_or_default(), user.unwrap_or_default())
}

/// Opens a store over `url` in `db`, persists, and returns the TLS version and user of a store's
/// dedicated connection (made as the lock connection is) and of a pooled one.
async fn open_and_check(url: &str) -> [(String, String); 2] {
    static N: AtomicU64 = AtomicU64::new(0);
    let provider = provider(url);
    let app = format!("tls-app-{}", N.fetch_add(1, Ordering::Relaxed));
    let store = provider.open(&app).await.unwrap_or_else(|e| panic!("{url}: {}", chain(&e)));
    store.persist(Batch::from(vec![Operation::SaveEvent(event("<tls>", "A"))])).await.expect("persist");
    let mut dedicated = provider.dedicated_conn(|| "test".to_owned()).await.expect("a dedicated connection");
    let lock = session(&mut dedicated).await;
    let _ = dedicated.disconnect().await;
    let mut pooled = provider.pool().get_conn().await.expect("a pooled connection");
    let pool = session(&mut pooled).await;
    drop(pooled);
    store.close().await.expect("close");
    provider.disconnect().await.expect("disconnect");
    [lock, pool]
}

/// The error of opening a store over `url`, printed.
async fn open_error(url: &str, case: &str) -> String {
    let provider = provider(url);
    let Err(error) = provider.open("tls-app").await else { panic!("{case}: {url} connected") };
    let text = chain(&error);
    eprintln!("mysql {case}: {text}");
    assert_eq!(error.kind(), ErrorKind::Misconfigured, "{case}: {text}");
    text
}

#[cfg_attr(not(all(vellum_mysql, vellum_tls)), ignore = "VELLUM_MYSQL_URL or VELLUM_TLS_DIR is not set")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_identity_to_localhost_encrypts_and_sends_the_client_certificate() {
    let dir = tls_dir();
    let db = Db::create().await;
    // A user the server admits only with the CI's client certificate.
    let mut conn = admin().await;
    for statement in [
        "CREATE USER IF NOT EXISTS 'vellum_x509'@'127.0.0.1' \
         REQUIRE SUBJECT '/CN=vellum-ci-client' AND ISSUER '/CN=vellum CI test CA'",
        "GRANT ALL PRIVILEGES ON *.* TO 'vellum_x509'@'127.0.0.1'",
    ] {
        conn.query_drop(statement).await.expect(statement);
    }
    let _ = conn.disconnect().await;
    let ca = format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={dir}/ca.pem");
    let url = url(
        Some("vellum_x509"),
        "localhost",
        &db.0,
        &format!("{ca}&ssl-cert={dir}/client.pem&ssl-key={dir}/client-key.pem"),
    );
    for (which, (version, user)) in
        ["dedicated connection", "pooled connection"].into_iter().zip(open_and_check(&url).await)
    {
        assert!(version.starts_with("TLS"), "{which} is not encrypted: Ssl_version {version:?}");
        assert_eq!(user, "vellum_x509@127.0.0.1", "{which}");
    }
    // Without the certificate the same user is refused: the server did check it.
    let without = self::url(Some("vellum_x509"), "localhost", &db.0, &ca);
    let error = provider(&without).open("tls-app").await.expect_err("no client certificate");
    eprintln!("mysql VERIFY_IDENTITY without the client certificate: {}", chain(&error));
    db.drop().await;
}

#[cfg_attr(not(all(vellum_mysql, vellum_tls)), ignore = "VELLUM_MYSQL_URL or VELLUM_TLS_DIR is not set")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_ca_required_and_preferred_to_an_address_the_certificate_does_not_name() {
    let dir = tls_dir();
    let db = Db::create().await;
    for params in [
        format!("ssl-mode=VERIFY_CA&ssl-ca={dir}/ca.pem"),
        format!("ssl-ca={dir}/ca.pem"),
        "ssl-mode=required".to_owned(),
        String::new(),
    ] {
        let url = url(None, "127.0.0.1", &db.0, &params);
        for (which, (version, _)) in
            ["dedicated connection", "pooled connection"].into_iter().zip(open_and_check(&url).await)
        {
            assert!(
                version.starts_with("TLS"),
                "{params:?}: {which} is not encrypted: Ssl_version {version:?}"
            );
        }
    }
    let url = url(None, "127.0.0.1", &db.0, "ssl-mode=DISABLED");
    for (which, (version, _)) in
        ["dedicated connection", "pooled connection"].into_iter().zip(open_and_check(&url).await)
    {
        assert_eq!(version, "", "DISABLED: {which} is encrypted");
    }
    db.drop().await;
}

#[cfg_attr(not(all(vellum_mysql, vellum_tls)), ignore = "VELLUM_MYSQL_URL or VELLUM_TLS_DIR is not set")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_not_trusted() {
    let dir = tls_dir();
    for mode in ["VERIFY_IDENTITY", "VERIFY_CA"] {
        let url = url(None, "localhost", "test", &format!("ssl-mode={mode}&ssl-ca={dir}/other-ca.pem"));
        let text = open_error(&url, mode).await;
        assert!(text.contains("not trusted: unknown issuer"), "{mode}: {text}");
        assert!(text.contains("other-ca.pem"), "{mode}: {text}");
    }
}

#[cfg_attr(not(all(vellum_mysql, vellum_tls)), ignore = "VELLUM_MYSQL_URL or VELLUM_TLS_DIR is not set")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_identity_to_an_address_the_certificate_does_not_name_fails() {
    let dir = tls_dir();
    let url = url(None, "127.0.0.1", "test", &format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={dir}/ca.pem"));
    let text = open_error(&url, "VERIFY_IDENTITY").await;
    assert!(text.contains("not valid for host 127.0.0.1"), "{text}");
}

/// A fake server without TLS: sends a v10 handshake whose capabilities lack `CLIENT_SSL`, then
/// reports the client's answer (empty if it hung up) and hangs up. Returns its address.
async fn fake_server_without_tls() -> (String, tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>) {
    const CLIENT_SSL: u32 = 0x0800;
    // LONG_PASSWORD, FOUND_ROWS, LONG_FLAG, CONNECT_WITH_DB, PROTOCOL_41, TRANSACTIONS,
    // SECURE_CONNECTION, PLUGIN_AUTH.
    const CAPABILITIES: u32 = 0x0001 | 0x0002 | 0x0004 | 0x0008 | 0x0200 | 0x2000 | 0x8000 | 0x0008_0000;
    let mut payload = vec![10];
    payload.extend_from_slice(b"8.0.99-vellum-fake\0");
    payload.extend_from_slice(&7u32.to_le_bytes());
    payload.extend_from_slice(b"abcdefgh\0");
    payload.extend_from_slice(&(CAPABILITIES as u16).to_le_bytes());
    payload.push(0x21);
    payload.extend_from_slice(&2u16.to_le_bytes());
    payload.extend_from_slice(&((CAPABILITIES >> 16) as u16).to_le_bytes());
    payload.push(21);
    payload.extend_from_slice(&[0; 10]);
    payload.extend_from_slice(b"ijklmnopqrst\0");
    payload.extend_from_slice(b"mysql_native_password\0");
    let mut packet = (payload.len() as u32).to_le_bytes()[..3].to_vec();
    packet.push(0);
    packet.extend_from_slice(&payload);
    assert_eq!(CAPABILITIES & CLIENT_SSL, 0);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address").to_string();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            if socket.write_all(&packet).await.is_err() {
                continue;
            }
            let mut answer = vec![0u8; 512];
            let n = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut answer)).await;
            answer.truncate(match n {
                Ok(Ok(n)) => n,
                _ => 0,
            });
            let _ = tx.send(answer);
        }
    });
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_against_a_server_without_tls_fails_and_preferred_goes_plain() {
    let (addr, mut seen) = fake_server_without_tls().await;
    let text =
        open_error(&format!("mysql://root@{addr}/test?ssl-mode=REQUIRED"), "REQUIRED, server without TLS")
            .await;
    assert!(text.contains("server does not support TLS"), "{text}");
    assert_eq!(seen.recv().await.as_deref(), Some(&[][..]), "REQUIRED must hang up after the handshake");

    let provider = provider(&format!("mysql://root@{addr}/test?ssl-mode=PREFERRED"));
    let error = provider.open("tls-app").await.expect_err("the fake server hangs up");
    eprintln!("mysql PREFERRED, server without TLS (then hung up): {}", chain(&error));
    assert_eq!(seen.recv().await.as_deref(), Some(&[][..]), "the first try asks for TLS and hangs up");
    let answer = seen.recv().await.expect("a second connection, in plain text");
    // HandshakeResponse41: 4-byte header, capability flags without CLIENT_SSL, then the user.
    let flags = answer.get(4..8).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    assert!(flags.is_some_and(|f| f & 0x0800 == 0), "not a plaintext handshake response: {answer:?}");
    assert!(answer.windows(5).any(|w| w == b"root\0"), "the user name is not in plain text: {answer:?}");
    assert!(provider.tls.fallback.get().is_some(), "the provider fell back to plain text");
}
