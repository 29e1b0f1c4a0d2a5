//! A TCP proxy that can cut a link without closing it: while paused it reads nothing from
//! either side, so what one end sends stays in the sockets (as on a network partition), and
//! neither end sees the connection close or reset. Resumed, it forwards again, end-of-stream
//! included.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A running proxy to one upstream address.
pub struct Proxy {
    port: u16,
    paused: Arc<watch::Sender<bool>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards every connection to `upstream`.
    pub async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let port = listener.local_addr().expect("the proxy's address").port();
        let paused = Arc::new(watch::Sender::new(false));
        let states = Arc::clone(&paused);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else { continue };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pump(client_read, server_write, states.subscribe()));
                tokio::spawn(pump(server_read, client_write, states.subscribe()));
            }
        });
        Self { port, paused, accept }
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops forwarding in both directions, keeping every socket open.
    pub fn pause(&self) {
        self.paused.send_replace(true);
    }

    /// Forwards again.
    pub fn resume(&self) {
        self.paused.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Copies `from` to `to`, never reading while paused; passes end-of-stream on.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut paused: watch::Receiver<bool>) {
    let mut buf = vec![0; 64 << 10];
    loop {
        if paused.wait_for(|p| !*p).await.is_err() {
            return;
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => read.unwrap_or(0),
            // Paused while waiting to read: stop reading.
            _ = paused.wait_for(|p| *p) => continue,
        };
        // Data read just as the pause began is held until it ends.
        if paused.wait_for(|p| !*p).await.is_err() {
            return;
        }
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            let _ = to.shutdown().await;
            return;
        }
    }
}

/// The `host:port` a `scheme://user@host:port/db` URL names (`default_port` if none).
pub fn upstream(url: &str, default_port: u16) -> String {
    let authority = authority(url);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    if host_port.contains(':') { host_port.to_owned() } else { format!("{host_port}:{default_port}") }
}

/// `url` with its host and port replaced by the proxy's.
pub fn via(url: &str, port: u16) -> String {
    let authority = authority(url);
    let replaced = match authority.rsplit_once('@') {
        Some((user, _)) => format!("{user}@127.0.0.1:{port}"),
        None => format!("127.0.0.1:{port}"),
    };
    url.replacen(authority, &replaced, 1)
}

/// `url` with one more query parameter.
pub fn with_param(url: &str, param: &str) -> String {
    if url.contains('?') { format!("{url}&{param}") } else { format!("{url}?{param}") }
}

fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    rest.split(['/', '?']).next().unwrap_or(rest)
}
