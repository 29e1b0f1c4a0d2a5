//! TLS for MySQL/MariaDB: the mysql client's URL parameters (`ssl-mode`, `ssl-ca`, `ssl-cert`,
//! `ssl-key`) read off a `mysql://` URL and turned into `mysql_async`'s [`SslOpts`] (its
//! `rustls-tls` feature, ring provider), and the two cases `mysql_async` cannot do alone:
//!
//! - `PREFERRED` against a server without TLS: `mysql_async` fails
//!   (`NoClientSslFlagFromServer`); the provider connects again without TLS ([`fallback`]).
//! - `VERIFY_CA` (the chain but not the host name): `mysql_async`'s "skip domain validation"
//!   looks for a message rustls no longer writes, so the first connection verifies the host
//!   too; when only the name is wrong (which webpki reports only once the chain is good), the
//!   provider connects again verifying the chain against a name the certificate carries.
//!
//! | `ssl-mode` | TLS | verifies |
//! |---|---|---|
//! | `DISABLED` | never | - |
//! | `PREFERRED` (default without `ssl-ca`) | if the server offers it, else plain text | nothing |
//! | `REQUIRED` | always | nothing |
//! | `VERIFY_CA` (default with `ssl-ca`) | always | the chain against `ssl-ca` (required) |
//! | `VERIFY_IDENTITY` | always | the chain and that the certificate names the host |

use mysql_async::{ClientIdentity, Opts, OptsBuilder, SslOpts};
use vellum_core::{Error, ErrorKind, Result};

use crate::tls::{Files, misconfigured, percent_decode};

const DIALECT: &str = "mysql";

/// `ssl-mode`, as the mysql client spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// `DISABLED`: plain text.
    Disabled,
    /// `PREFERRED`: TLS when the server offers it, no verification.
    Preferred,
    /// `REQUIRED`: TLS, no verification.
    Required,
    /// `VERIFY_CA`: TLS, the chain verified against `ssl-ca`.
    VerifyCa,
    /// `VERIFY_IDENTITY`: TLS, the chain and the host name.
    VerifyIdentity,
}

/// The TLS settings read off a connection URL.
#[derive(Debug)]
pub(super) struct UrlTls {
    /// The URL without the TLS parameters, for `mysql_async`.
    pub url: String,
    /// The mode asked for (or defaulted).
    pub mode: Mode,
    /// What `mysql_async` is told; `None` for `DISABLED`.
    pub ssl: Option<SslOpts>,
    /// `ssl-ca=FILE`, when given: named in certificate errors.
    pub ca: Option<String>,
}

/// `mysql_async`'s own TLS parameters, refused in favour of `ssl-mode`.
const DRIVER_PARAMS: [&str; 4] = ["require_ssl", "verify_ca", "verify_identity", "built_in_roots"];

/// Splits the TLS parameters off a `mysql://` URL and checks the files they name.
pub(super) fn from_url(url: &str) -> Result<UrlTls> {
    const PARAMS: [&str; 4] = ["ssl-mode", "ssl-ca", "ssl-cert", "ssl-key"];
    let mut values: [Option<String>; 4] = [None, None, None, None];
    let stripped = match url.split_once('?') {
        Some((base, query)) => {
            let mut kept = Vec::new();
            for pair in query.split('&') {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                if DRIVER_PARAMS.contains(&key) {
                    return Err(misconfigured(
                        DIALECT,
                        format!(
                            "{key} is not supported: use ssl-mode=DISABLED|PREFERRED|REQUIRED|VERIFY_CA|VERIFY_IDENTITY"
                        ),
                    ));
                }
                let Some(i) = PARAMS.iter().position(|p| *p == key) else {
                    kept.push(pair);
                    continue;
                };
                if values[i].is_some() {
                    return Err(misconfigured(DIALECT, format!("{key} is given twice")));
                }
                values[i] = Some(percent_decode(DIALECT, key, value)?);
            }
            if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) }
        }
        None => url.to_owned(),
    };
    let [mode, ca, cert, key] = values;
    let mode = match mode.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None if ca.is_some() => Mode::VerifyCa,
        None | Some("PREFERRED") => Mode::Preferred,
        Some("DISABLED") => Mode::Disabled,
        Some("REQUIRED") => Mode::Required,
        Some("VERIFY_CA") => Mode::VerifyCa,
        Some("VERIFY_IDENTITY") => Mode::VerifyIdentity,
        Some(_) => {
            return Err(misconfigured(
                DIALECT,
                format!(
                    "ssl-mode={:?} is not one of DISABLED, PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY",
                    mode.unwrap_or_default()
                ),
            ));
        }
    };
    if matches!(mode, Mode::VerifyCa | Mode::VerifyIdentity) && ca.is_none() {
        let name = if mode == Mode::VerifyCa { "VERIFY_CA" } else { "VERIFY_IDENTITY" };
        return Err(misconfigured(
            DIALECT,
            format!(
                "ssl-mode={name} needs ssl-ca=FILE, the CA certificate(s) to verify the server's certificate against"
            ),
        ));
    }
    // Read now, so a bad file is an error here naming it, not at every connection.
    Files::load(
        DIALECT,
        ca.as_deref().map(|f| ("ssl-ca", f)),
        cert.as_deref().map(|f| ("ssl-cert", f)),
        key.as_deref().map(|f| ("ssl-key", f)),
    )?;
    let ssl = (mode != Mode::Disabled).then(|| {
        let identity = match (&cert, &key) {
            (Some(cert), Some(key)) => Some(ClientIdentity::new(
                std::path::PathBuf::from(cert).into(),
                std::path::PathBuf::from(key).into(),
            )),
            _ => None,
        };
        let ssl = SslOpts::default().with_client_identity(identity);
        match (&ca, mode) {
            (Some(ca), Mode::VerifyCa | Mode::VerifyIdentity) => ssl
                .with_root_certs(vec![std::path::PathBuf::from(ca).into()])
                .with_disable_built_in_roots(true)
                .with_danger_skip_domain_validation(mode == Mode::VerifyCa),
            // No verification; mysql_async still builds a verifier, which needs some root.
            _ => ssl.with_danger_accept_invalid_certs(true),
        }
    });
    Ok(UrlTls { url: stripped, mode, ssl, ca: ca.map(|f| format!("ssl-ca={f}")) })
}

/// `opts` set up for `tls`: its `SslOpts`, and no switch to the Unix socket (which
/// `mysql_async` makes for a local server, and over which it does no TLS) unless TLS is off.
pub(super) fn apply(opts: Opts, tls: &UrlTls) -> Opts {
    if tls.ssl.is_some() {
        crate::tls::ensure_process_provider();
    }
    let builder = OptsBuilder::from_opts(opts).ssl_opts(tls.ssl.clone());
    if tls.mode == Mode::Disabled { builder.into() } else { builder.prefer_socket(false).into() }
}

/// The options to connect with again after `error`, when `mode` allows working around it:
/// plain text for `PREFERRED` against a server without TLS; for `VERIFY_CA`, the chain checked
/// against a host name the server's certificate carries.
pub(super) fn fallback(mode: Mode, opts: &Opts, error: &mysql_async::Error) -> Option<Opts> {
    match mode {
        Mode::Preferred if no_tls(error) => Some(OptsBuilder::from_opts(opts.clone()).ssl_opts(None).into()),
        Mode::VerifyCa => {
            let Some(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForNameContext {
                presented,
                ..
            })) = crate::tls::rustls_error(error)
            else {
                return None;
            };
            let name = presented.iter().find_map(|p| crate::tls::presented_name(p))?;
            let ssl = opts.ssl_opts()?.clone().with_danger_tls_hostname_override(Some(name));
            Some(OptsBuilder::from_opts(opts.clone()).ssl_opts(ssl).into())
        }
        _ => None,
    }
}

/// Whether `error` says the server does not offer TLS.
fn no_tls(error: &mysql_async::Error) -> bool {
    matches!(error, mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer))
}

/// A connection error, with a TLS failure said in words (`Misconfigured`: trying again will not
/// help); `None` when `error` is not about TLS.
pub(super) fn connect_error(context: String, error: &mysql_async::Error, ca: Option<&str>) -> Option<Error> {
    let reason = if no_tls(error) {
        "TLS: the server does not support TLS, and the URL's ssl-mode requires it \
         (ssl-mode=PREFERRED would connect in plain text)"
            .to_owned()
    } else {
        crate::tls::describe(error, ca)?
    };
    Some(Error::storage_kind(ErrorKind::Misconfigured, context, reason))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::tests::chain;

    fn parse(url: &str) -> UrlTls {
        from_url(url).unwrap_or_else(|e| panic!("{url}: {}", chain(&e)))
    }

    #[test]
    fn modes_and_defaults() {
        let plain = parse("mysql://root@h/db");
        assert_eq!((plain.url.as_str(), plain.mode), ("mysql://root@h/db", Mode::Preferred));
        assert!(plain.ssl.as_ref().is_some_and(SslOpts::accept_invalid_certs));
        let off = parse("mysql://root@h/db?ssl-mode=disabled&pool_max=3");
        assert_eq!((off.url.as_str(), off.mode), ("mysql://root@h/db?pool_max=3", Mode::Disabled));
        assert!(off.ssl.is_none());
        assert_eq!(parse("mysql://root@h/db?ssl-mode=Required").mode, Mode::Required);
        assert_eq!(parse("mysql://root@h/db?ssl-mode=PREFERRED").mode, Mode::Preferred);
    }

    #[test]
    fn bad_parameters_are_misconfigured_naming_them() {
        let cases = [
            ("mysql://root@h/db?ssl-mode=VERIFY_CA", "ssl-mode=VERIFY_CA needs ssl-ca"),
            ("mysql://root@h/db?ssl-mode=verify_identity", "ssl-mode=VERIFY_IDENTITY needs ssl-ca"),
            ("mysql://root@h/db?ssl-mode=sometimes", "ssl-mode=\"sometimes\" is not one of"),
            (
                "mysql://root@h/db?ssl-ca=/nonexistent/vellum-ca.pem",
                "ssl-ca=/nonexistent/vellum-ca.pem: cannot read",
            ),
            ("mysql://root@h/db?ssl-cert=/nonexistent/c.pem", "ssl-cert is given without ssl-key"),
            ("mysql://root@h/db?require_ssl=true", "require_ssl is not supported: use ssl-mode"),
            ("mysql://root@h/db?ssl-mode=REQUIRED&ssl-mode=DISABLED", "ssl-mode is given twice"),
        ];
        for (url, expected) in cases {
            let error = from_url(url).expect_err(url);
            assert_eq!(error.kind(), ErrorKind::Misconfigured, "{url}");
            let text = chain(&error);
            eprintln!("{url}\n  -> {text}");
            assert!(text.contains(expected), "{url}: {text}");
        }
    }

    #[test]
    fn unknown_parameters_are_still_refused() {
        let error =
            super::super::MysqlProvider::from_url("mysql://root@127.0.0.1:1/db?ssl-mode=REQUIRED&nonsense=1")
                .expect_err("unknown parameter");
        let text = chain(&error);
        eprintln!("unknown parameter: {text}");
        assert!(text.contains("nonsense"), "{text}");
    }
}
