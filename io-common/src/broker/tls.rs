//! TLS for the listeners: a rustls server configuration with aliot's provider
//! ([`crate::tls_crypto`]), TLS 1.2 and 1.3.

use std::fs::File;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// A PEM file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: io::Error,
    },
    /// A PEM file holds a section that does not parse.
    #[error("{path} is not valid PEM: {source}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        source: io::Error,
    },
    /// The certificate file holds no certificate.
    #[error("{0} holds no CERTIFICATE section")]
    NoCertificate(PathBuf),
    /// The key file holds no private key.
    #[error("{0} holds no private key (PKCS#8, PKCS#1 or SEC1)")]
    NoPrivateKey(PathBuf),
    /// rustls refused the certificate chain and key (for instance a key that does not match
    /// the certificate, or of an unsupported type).
    #[error("the certificate and key are not usable: {0}")]
    Rejected(#[from] rustls::Error),
}

/// Loads a PEM certificate chain (leaf first) and a PEM private key into a rustls
/// `ServerConfig` ([`crate::tls_crypto`]'s provider, TLS 1.2 and 1.3, no client certificates).
pub fn load_tls_config(
    cert_pem: &Path,
    key_pem: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsConfigError> {
    let mut certs_reader = open(cert_pem)?;
    let certs = rustls_pemfile::certs(&mut certs_reader)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsConfigError::Pem {
            path: cert_pem.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsConfigError::NoCertificate(cert_pem.to_path_buf()));
    }
    let mut key_reader = open(key_pem)?;
    let key = rustls_pemfile::private_key(&mut key_reader)
        .map_err(|source| TlsConfigError::Pem {
            path: key_pem.to_path_buf(),
            source,
        })?
        .ok_or_else(|| TlsConfigError::NoPrivateKey(key_pem.to_path_buf()))?;
    tls_config(certs, key)
}

/// A rustls `ServerConfig` ([`crate::tls_crypto`]'s provider, TLS 1.2 and 1.3, no client
/// certificates) from a
/// certificate chain (leaf first) and its private key, already decoded.
///
/// The broker chooses the cipher suite, AES-128-GCM with SHA-256 first (TLS 1.3's mandatory
/// suite, and TLS 1.2's ECDHE equivalent), whatever the client lists first: rustls and OpenSSL
/// clients list AES-256-GCM with SHA-384 first, whose key schedule hashes with SHA-512's
/// block function, a tenth of the broker's CPU per handshake, for no security a device needs.
pub fn tls_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, TlsConfigError> {
    use rustls::crypto::ring::cipher_suite::{
        TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
    };
    let mut provider = crate::tls_crypto::provider();
    provider.cipher_suites = vec![
        TLS13_AES_128_GCM_SHA256,
        TLS13_AES_256_GCM_SHA384,
        TLS13_CHACHA20_POLY1305_SHA256,
        TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ];
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.ignore_client_order = true;
    // The broker's connections do their own record layer after the handshake
    // (`tls_records`), from the keys rustls hands over.
    config.enable_secret_extraction = true;
    // Stateless session tickets (the state sealed in the ticket, under keys rotated every
    // 6 hours): every device may resume, not only the last 256 that rustls's in-memory
    // session cache holds; a resumed handshake spares both ends the certificate and its
    // signature. One ticket per connection, not rustls's default two: a device makes one
    // connection at a time, and each resumed connection gets its next ticket.
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    config.send_tls13_tickets = 1;
    Ok(Arc::new(config))
}

fn open(path: &Path) -> Result<BufReader<File>, TlsConfigError> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|source| TlsConfigError::Read {
            path: path.to_path_buf(),
            source,
        })
}
