//! TLS for PostgreSQL: libpq's URL parameters (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`)
//! read off a `postgres://` URL, and [`MakeRustlsConnect`], tokio-postgres's TLS hook over
//! tokio-rustls, used by the pool and by every store's lock connection.
//!
//! | `sslmode` | TLS | verifies |
//! |---|---|---|
//! | `disable` | never | - |
//! | `prefer` (default) | if the server offers it, else plain text | nothing |
//! | `require` | always | nothing; the chain if `sslrootcert` is given (as libpq) |
//! | `verify-ca` | always | the chain against `sslrootcert` (required) |
//! | `verify-full` | always | the chain and that the certificate names the host |

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use vellum_core::{Error, ErrorKind, Result};

use crate::tls::{Files, Verify, client_config, misconfigured, percent_decode};

const DIALECT: &str = "postgres";

/// The TLS settings read off a connection URL.
pub(super) struct UrlTls {
    /// The URL without vellum's TLS parameters, for tokio-postgres.
    pub url: String,
    /// What tokio-postgres does about TLS: disable, prefer or require.
    pub mode: SslMode,
    /// The connector (also for `disable`, where it is never used).
    pub connector: MakeRustlsConnect,
    /// `sslrootcert=FILE`, when given: named in certificate errors.
    pub ca: Option<String>,
}

/// Splits the TLS parameters off a `postgres://` URL and reads the files they name. A URL
/// in libpq's `key=value` form is passed through unchanged (tokio-postgres's own `sslmode`,
/// no verification).
pub(super) fn from_url(url: &str) -> Result<UrlTls> {
    const PARAMS: [&str; 3] = ["sslrootcert", "sslcert", "sslkey"];
    let mut sslmode = None;
    let mut files: [Option<String>; 3] = [None, None, None];
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let stripped = match url.split_once('?') {
        Some((base, query)) if is_url => {
            let mut kept = Vec::new();
            for pair in query.split('&') {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                let slot = if key == "sslmode" {
                    &mut sslmode
                } else if let Some(i) = PARAMS.iter().position(|p| *p == key) {
                    &mut files[i]
                } else {
                    kept.push(pair);
                    continue;
                };
                if slot.is_some() {
                    return Err(misconfigured(DIALECT, format!("{key} is given twice")));
                }
                *slot = Some(percent_decode(DIALECT, key, value)?);
            }
            if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) }
        }
        _ => url.to_owned(),
    };
    let [rootcert, cert, key] = files;
    let (mode, verify) = match sslmode.as_deref() {
        None | Some("prefer") => (SslMode::Prefer, Verify::Nothing),
        Some("disable") => (SslMode::Disable, Verify::Nothing),
        Some("require") if rootcert.is_some() => (SslMode::Require, Verify::Chain),
        Some("require") => (SslMode::Require, Verify::Nothing),
        Some("verify-ca") => (SslMode::Require, Verify::Chain),
        Some("verify-full") => (SslMode::Require, Verify::ChainAndHost),
        Some("allow") => {
            return Err(misconfigured(
                DIALECT,
                "sslmode=allow is not supported: use prefer (TLS when the server offers it) or disable",
            ));
        }
        Some(other) => {
            return Err(misconfigured(
                DIALECT,
                format!("sslmode={other:?} is not one of disable, prefer, require, verify-ca, verify-full"),
            ));
        }
    };
    if verify != Verify::Nothing && rootcert.is_none() {
        return Err(misconfigured(
            DIALECT,
            format!(
                "sslmode={} needs sslrootcert=FILE, the CA certificate(s) to verify the server's certificate against",
                sslmode.as_deref().unwrap_or_default()
            ),
        ));
    }
    let files = Files::load(
        DIALECT,
        rootcert.as_deref().map(|f| ("sslrootcert", f)),
        cert.as_deref().map(|f| ("sslcert", f)),
        key.as_deref().map(|f| ("sslkey", f)),
    )?;
    let config = client_config(DIALECT, verify, &files)?;
    Ok(UrlTls {
        url: stripped,
        mode,
        connector: MakeRustlsConnect { config },
        ca: rootcert.map(|f| format!("sslrootcert={f}")),
    })
}

/// A connection error, with a TLS failure said in words (`Misconfigured`: trying again will not
/// help); `None` when `error` is not about TLS.
pub(super) fn connect_error(
    context: String,
    error: &(dyn std::error::Error + 'static),
    ca: Option<&str>,
) -> Option<Error> {
    let reason = crate::tls::describe(error, ca).or_else(|| {
        let mut next = Some(error);
        while let Some(e) = next {
            if e.to_string().contains("server does not support TLS") {
                return Some(
                    "TLS: the server does not support TLS, and the URL's sslmode requires it \
                     (sslmode=prefer would connect in plain text)"
                        .to_owned(),
                );
            }
            next = e.source();
        }
        None
    })?;
    Some(Error::storage_kind(ErrorKind::Misconfigured, context, reason))
}

/// tokio-postgres's TLS hook over tokio-rustls: makes a [`RustlsConnect`] per connection for
/// the host being connected to.
#[derive(Clone)]
pub struct MakeRustlsConnect {
    config: Arc<ClientConfig>,
}

impl std::fmt::Debug for MakeRustlsConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MakeRustlsConnect").finish_non_exhaustive()
    }
}

impl<S> MakeTlsConnect<S> for MakeRustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, domain: &str) -> std::result::Result<RustlsConnect, Self::Error> {
        let name = ServerName::try_from(domain)?.to_owned();
        Ok(RustlsConnect { config: Arc::clone(&self.config), name })
    }
}

/// One connection's TLS handshake, for one server name.
pub struct RustlsConnect {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let stream = tokio_rustls::TlsConnector::from(self.config).connect(self.name, stream).await?;
            Ok(RustlsStream(stream))
        })
    }
}

/// A TLS-encrypted connection to the server.
pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        // SCRAM without channel binding: tls-server-end-point needs the hash named by the
        // certificate's signature algorithm, which rustls does not expose.
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::tests::chain;

    fn mode(url: &str) -> (String, SslMode) {
        let parsed = from_url(url).unwrap_or_else(|e| panic!("{url}: {}", chain(&e)));
        (parsed.url, parsed.mode)
    }

    #[test]
    fn strips_tls_parameters_and_keeps_the_rest() {
        assert_eq!(mode("postgres://u@h/db"), ("postgres://u@h/db".to_owned(), SslMode::Prefer));
        assert_eq!(
            mode("postgres://u@h/db?sslmode=disable&application_name=x"),
            ("postgres://u@h/db?application_name=x".to_owned(), SslMode::Disable)
        );
        assert_eq!(
            mode("postgresql://u@h/db?connect_timeout=3&sslmode=require"),
            ("postgresql://u@h/db?connect_timeout=3".to_owned(), SslMode::Require)
        );
        assert_eq!(mode("postgres://u@h/db?sslmode=prefer").1, SslMode::Prefer);
        // The key=value form goes through untouched.
        assert_eq!(mode("host=h user=u sslmode=require").0, "host=h user=u sslmode=require");
    }

    #[test]
    fn bad_parameters_are_misconfigured_naming_them() {
        let cases = [
            ("postgres://u@h/db?sslmode=verify-ca", "sslmode=verify-ca needs sslrootcert"),
            ("postgres://u@h/db?sslmode=verify-full", "sslmode=verify-full needs sslrootcert"),
            ("postgres://u@h/db?sslmode=bogus", "sslmode=\"bogus\" is not one of"),
            ("postgres://u@h/db?sslmode=allow", "sslmode=allow is not supported"),
            ("postgres://u@h/db?sslmode=require&sslmode=disable", "sslmode is given twice"),
            (
                "postgres://u@h/db?sslrootcert=/nonexistent/vellum-ca.pem",
                "sslrootcert=/nonexistent/vellum-ca.pem: cannot read",
            ),
            (
                "postgres://u@h/db?sslcert=/nonexistent/c.pem&sslkey=/nonexistent/k.pem",
                "sslcert=/nonexistent/c.pem: cannot read",
            ),
            ("postgres://u@h/db?sslkey=/nonexistent/k.pem", "sslkey is given without sslcert"),
        ];
        for (url, expected) in cases {
            let Err(error) = from_url(url) else { panic!("{url} was accepted") };
            assert_eq!(error.kind(), ErrorKind::Misconfigured, "{url}");
            let text = chain(&error);
            eprintln!("{url}\n  -> {text}");
            assert!(text.contains(expected), "{url}: {text}");
        }
    }

    #[test]
    fn the_provider_refuses_bad_tls_parameters_without_a_server() {
        let error =
            super::super::PostgresProvider::from_url("postgres://u@127.0.0.1:1/db?sslmode=verify-full")
                .expect_err("verify-full without sslrootcert");
        assert_eq!(error.kind(), ErrorKind::Misconfigured);
        eprintln!("from_url: {}", chain(&error));
    }
}
