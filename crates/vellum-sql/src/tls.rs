//! TLS shared by the server dialects (PostgreSQL, MySQL/MariaDB), on rustls with the `ring`
//! provider: no OpenSSL, no process-wide provider needed.
//!
//! A dialect parses its own URL parameters (`postgres/tls.rs`, `mysql/tls.rs`) into a
//! [`Verify`] level and file names; this module reads the PEM files ([`Files`]), builds the
//! rustls client configuration for a level ([`client_config`]) and turns a failed handshake into
//! an error that says what was wrong with the certificate ([`describe`]).

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use vellum_core::{Error, ErrorKind, Result};

/// What the client checks of the server's certificate.
// The MySQL dialect leaves verification to mysql_async, so without PostgreSQL some of this
// module is unused.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verify {
    /// Nothing: the connection is encrypted, but the server is not authenticated
    /// (libpq `prefer`/`require`, MySQL `PREFERRED`/`REQUIRED`).
    Nothing,
    /// The chain up to a trusted CA, not the host name (`verify-ca`, `VERIFY_CA`).
    Chain,
    /// The chain and that the certificate names the host connected to (`verify-full`,
    /// `VERIFY_IDENTITY`).
    ChainAndHost,
}

/// The ring provider: every configuration is built with it explicitly, so whatever crypto
/// provider the process installed (or none, or several features) never matters or panics.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring())
}

/// rustls's ring provider. rustls 0.23.48 deprecates it for lacking post-quantum key exchange
/// (only aws-lc-rs has that, and it needs cmake and a long build); it is still maintained and
/// fine for database connections.
#[allow(deprecated)]
fn ring() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// For drivers that build their rustls configuration with the process-level default provider
/// (`mysql_async` does): installs ring as that default unless the process chose one already,
/// so rustls never panics for want of one.
#[cfg(feature = "mysql")]
pub(crate) fn ensure_process_provider() {
    if CryptoProvider::get_default().is_none() {
        // Losing a race to another installer is fine: a provider is installed either way.
        let _ = ring().install_default();
    }
}

/// A `Misconfigured` error about TLS parameters of a `dialect`'s connection URL.
pub(crate) fn misconfigured(dialect: &str, reason: impl Into<String>) -> Error {
    Error::storage_kind(
        ErrorKind::Misconfigured,
        format!("{dialect}: TLS parameters of the connection URL"),
        reason.into(),
    )
}

/// The certificate and key files a connection uses, read and checked up front.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
#[derive(Debug, Default)]
pub(crate) struct Files {
    /// The CA certificates the server's chain is verified against (`sslrootcert`, `ssl-ca`),
    /// with the parameter and file they came from, for error messages.
    pub roots: Option<(Vec<CertificateDer<'static>>, String)>,
    /// The client certificate chain and its key (`sslcert` + `sslkey`, `ssl-cert` + `ssl-key`).
    pub client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
}

impl Files {
    /// Reads the files named by the parameters (`(parameter name, file)` each): the CA file and
    /// the client pair, which must come together. Every error names the parameter and file.
    pub(crate) fn load(
        dialect: &str,
        ca: Option<(&str, &str)>,
        cert: Option<(&str, &str)>,
        key: Option<(&str, &str)>,
    ) -> Result<Self> {
        let roots = match ca {
            Some((param, path)) => {
                let certs = read_certs(dialect, param, path)?;
                // Each must parse as a trust anchor, or verification fails later and obscurely.
                let mut store = RootCertStore::empty();
                for cert in &certs {
                    store.add(cert.clone()).map_err(|e| {
                        misconfigured(
                            dialect,
                            format!("{param}={path}: a certificate in it is not a usable CA: {e}"),
                        )
                    })?;
                }
                Some((certs, format!("{param}={path}")))
            }
            None => None,
        };
        let client = match (cert, key) {
            (None, None) => None,
            (Some((param, _)), None) => {
                let other = if param == "sslcert" { "sslkey" } else { "ssl-key" };
                return Err(misconfigured(
                    dialect,
                    format!("{param} is given without {other}: give both or neither"),
                ));
            }
            (None, Some((param, _))) => {
                let other = if param == "sslkey" { "sslcert" } else { "ssl-cert" };
                return Err(misconfigured(
                    dialect,
                    format!("{param} is given without {other}: give both or neither"),
                ));
            }
            (Some((cert_param, cert_path)), Some((key_param, key_path))) => {
                let chain = read_certs(dialect, cert_param, cert_path)?;
                let bytes = read_file(dialect, key_param, key_path)?;
                let key = PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
                    misconfigured(
                        dialect,
                        format!("{key_param}={key_path}: no usable PEM private key in it ({e})"),
                    )
                })?;
                // Check the pair now: rustls refuses a key it cannot use or that does not
                // match the certificate.
                let resolver = provider().key_provider.load_private_key(key.clone_key()).map_err(|e| {
                    misconfigured(dialect, format!("{key_param}={key_path}: unusable private key: {e}"))
                })?;
                if let Some(end_entity) = chain.first() {
                    let certified = rustls::sign::CertifiedKey::new(vec![end_entity.clone()], resolver);
                    if let Err(e) = certified.keys_match() {
                        // Only a definite mismatch is an error; "unknown" means rustls cannot tell.
                        if !matches!(e, rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) {
                            return Err(misconfigured(
                                dialect,
                                format!(
                                    "{key_param}={key_path} is not the key of {cert_param}={cert_path}: {e}"
                                ),
                            ));
                        }
                    }
                }
                Some((chain, key))
            }
        };
        Ok(Self { roots, client })
    }
}

fn read_file(dialect: &str, param: &str, path: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        Error::storage_kind(
            ErrorKind::Misconfigured,
            format!("{dialect}: TLS parameters of the connection URL"),
            format!("{param}={path}: cannot read the file: {e}"),
        )
    })
}

fn read_certs(dialect: &str, param: &str, path: &str) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = read_file(dialect, param, path)?;
    let certs =
        CertificateDer::pem_slice_iter(&bytes).collect::<std::result::Result<Vec<_>, _>>().map_err(|e| {
            misconfigured(dialect, format!("{param}={path}: not a valid PEM certificate file ({e})"))
        })?;
    if certs.is_empty() {
        return Err(misconfigured(
            dialect,
            format!("{param}={path}: no PEM certificate (BEGIN CERTIFICATE) in it"),
        ));
    }
    Ok(certs)
}

/// A rustls client configuration verifying `verify` against `files.roots`, presenting
/// `files.client` when the server asks for a client certificate.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn client_config(dialect: &str, verify: Verify, files: &Files) -> Result<Arc<ClientConfig>> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| misconfigured(dialect, format!("building the TLS configuration: {e}")))?;
    let verifier: Arc<dyn ServerCertVerifier> = match (verify, &files.roots) {
        (Verify::Nothing, _) => Arc::new(NoVerification(Arc::clone(&provider))),
        (Verify::Chain | Verify::ChainAndHost, None) => {
            return Err(misconfigured(dialect, "verifying the server's certificate needs a CA file"));
        }
        (Verify::Chain | Verify::ChainAndHost, Some((certs, _))) => {
            let mut store = RootCertStore::empty();
            for cert in certs {
                store
                    .add(cert.clone())
                    .map_err(|e| misconfigured(dialect, format!("a CA certificate: {e}")))?;
            }
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(store), Arc::clone(&provider))
                .build()
                .map_err(|e| misconfigured(dialect, format!("building the certificate verifier: {e}")))?;
            if verify == Verify::Chain { Arc::new(ChainOnly(webpki)) } else { webpki }
        }
    };
    let builder = builder.dangerous().with_custom_certificate_verifier(verifier);
    let config = match &files.client {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .map_err(|e| misconfigured(dialect, format!("the client certificate and key: {e}")))?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Accepts any server certificate (encryption without authentication), still checking the
/// handshake's signatures with the certificate's key.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Verifies the chain but not the host name (libpq's `verify-ca`). webpki checks the chain
/// before the name, so a name mismatch means the chain was good.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The rustls error somewhere in `error`'s chain (also inside `io::Error`s, whose `source`
/// skips the error they wrap).
pub(crate) fn rustls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(error);
    while let Some(current) = next {
        if let Some(found) = current.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        if let Some(io) = current.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(found) = rustls_error(inner)
        {
            return Some(found);
        }
        next = current.source();
    }
    None
}

/// What a failed TLS handshake means, in words naming the certificate problem, when `error`
/// came from rustls; `ca` names where the trusted CAs came from (e.g. `sslrootcert=FILE`).
pub(crate) fn describe(error: &(dyn std::error::Error + 'static), ca: Option<&str>) -> Option<String> {
    let tls = rustls_error(error)?;
    let from = ca.map_or_else(String::new, |ca| format!(" in {ca}"));
    Some(match tls {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
            "TLS: the server's certificate is not trusted: unknown issuer (it is not signed by a CA{from})"
        ),
        rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
            expected,
            presented,
        }) => {
            let host = match expected {
                ServerName::DnsName(name) => name.as_ref().to_owned(),
                ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
                other => format!("{other:?}"),
            };
            format!(
                "TLS: the server's certificate is not valid for host {host} (it names {}); connect by a \
                 name it carries, or verify the chain only (verify-ca / VERIFY_CA)",
                if presented.is_empty() {
                    "no host".to_owned()
                } else {
                    let names: Vec<String> =
                        presented.iter().map(|p| listed_name(p).unwrap_or(p).to_owned()).collect();
                    names.join(", ")
                }
            )
        }
        rustls::Error::InvalidCertificate(CertificateError::NotValidForName) => {
            "TLS: the server's certificate is not valid for the host name connected to".to_owned()
        }
        rustls::Error::InvalidCertificate(other) => {
            format!(
                "TLS: the server's certificate is not valid: {}",
                rustls::Error::InvalidCertificate(other.clone())
            )
        }
        rustls::Error::AlertReceived(alert) => format!(
            "TLS: the server ended the handshake with alert {alert:?} (does it want a client certificate, \
             or one signed by another CA?)"
        ),
        other => format!("TLS handshake failed: {other}"),
    })
}

/// The DNS name or IP address in one of the names rustls lists as a certificate's
/// (`DnsName("db.example")`, `IpAddress(10.0.0.1)`), as written there (wildcards included).
fn listed_name(presented: &str) -> Option<&str> {
    if let Some(rest) = presented.strip_prefix("DnsName(\"") {
        return rest.strip_suffix("\")");
    }
    presented.strip_prefix("IpAddress(")?.strip_suffix(')')
}

/// A host name to connect as that one of the names rustls lists as a certificate's
/// (see `listed_name`) covers: a wildcard becomes a concrete name under it.
#[cfg_attr(not(feature = "mysql"), allow(dead_code))]
pub(crate) fn presented_name(presented: &str) -> Option<String> {
    let name = listed_name(presented)?;
    if presented.starts_with("IpAddress(") {
        return name.parse::<std::net::IpAddr>().ok().map(|ip| ip.to_string());
    }
    Some(match name.strip_prefix("*.") {
        Some(parent) => format!("vellum.{parent}"),
        None => name.to_owned(),
    })
}

/// Decodes `%XX` escapes of a URL query value (`+` stays `+`).
pub(crate) fn percent_decode(dialect: &str, param: &str, value: &str) -> Result<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let byte = hex
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| misconfigured(dialect, format!("{param}: bad percent-escape in {value:?}")))?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| misconfigured(dialect, format!("{param}: {value:?} is not UTF-8 once decoded")))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn names_from_rustls_lists() {
        assert_eq!(presented_name("DnsName(\"localhost\")").as_deref(), Some("localhost"));
        assert_eq!(presented_name("DnsName(\"*.db.example\")").as_deref(), Some("vellum.db.example"));
        assert_eq!(presented_name("IpAddress(127.0.0.1)").as_deref(), Some("127.0.0.1"));
        assert_eq!(presented_name("DirectoryName"), None);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("x", "p", "/a%20b/c.pem").ok().as_deref(), Some("/a b/c.pem"));
        assert!(percent_decode("x", "p", "/a%2").is_err());
        assert!(percent_decode("x", "p", "%ff").is_err());
    }

    #[test]
    fn missing_and_bad_files_are_misconfigured_naming_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.pem");
        let missing = missing.to_str().expect("utf-8");
        let error = Files::load("postgres", Some(("sslrootcert", missing)), None, None).expect_err("missing");
        assert_eq!(error.kind(), ErrorKind::Misconfigured);
        let text = crate::tls::tests::chain(&error);
        eprintln!("missing CA file: {text}");
        assert!(
            text.contains("sslrootcert=") && text.contains("missing.pem") && text.contains("cannot read"),
            "{text}"
        );

        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").expect("write");
        let junk = junk.to_str().expect("utf-8");
        let error = Files::load("mysql", Some(("ssl-ca", junk)), None, None).expect_err("junk");
        let text = chain(&error);
        eprintln!("junk CA file: {text}");
        assert!(text.contains("ssl-ca=") && text.contains("no PEM certificate"), "{text}");

        let error = Files::load("postgres", None, Some(("sslcert", junk)), None).expect_err("half pair");
        let text = chain(&error);
        eprintln!("sslcert without sslkey: {text}");
        assert!(text.contains("sslcert is given without sslkey"), "{text}");
    }

    /// An error and its sources, joined.
    pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
        let mut text = error.to_string();
        let mut next = error.source();
        while let Some(source) = next {
            text.push_str(": ");
            text.push_str(&source.to_string());
            next = source.source();
        }
        text
    }
}
