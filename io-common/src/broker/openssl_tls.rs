//! The listeners whose TLS is OpenSSL's (feature `openssl`): TLS-PSK, and certificate TLS with
//! 1.0 and 1.1 allowed. rustls has neither (no PSK cipher suites, no TLS before 1.2), and stays
//! the TLS of every other listener.
//!
//! A PSK handshake asks the broker's [`Authenticator`] for the key of the device its identity
//! names ([`Authenticator::psk_key`], which derives it from the registry's secret); an identity
//! it refuses ends the handshake (`unknown_psk_identity`) and is counted. The device it proved
//! goes with the connection, whose CONNECT must then be that device's.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use aliot_auth::{DeviceIdentity, PskIdentity};
use aliot_core::Authenticator;
use async_openssl::SslStream;
use futures_io::{AsyncRead, AsyncWrite};
use openssl::error::ErrorStack;
use openssl::ssl::{
    Ssl, SslContext, SslContextBuilder, SslFiletype, SslMethod, SslMode, SslVersion,
};
use tracing::info;

use super::handle::TransportCounters;
use super::{LegacyTlsVersion, OpenSslTls};
use crate::tls_psk::PSK_CIPHER;

/// Why an OpenSSL listener could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up OpenSSL for {what}: {source}")]
pub struct OpenSslSetupError {
    what: String,
    source: ErrorStack,
}

/// What an OpenSSL listener's connections are handed through: its context, shared.
#[derive(Clone)]
pub(crate) struct OpenSslAcceptor {
    context: SslContext,
    psk: bool,
    counters: Arc<TransportCounters>,
}

impl fmt::Debug for OpenSslAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenSslAcceptor")
            .field("psk", &self.psk)
            .finish_non_exhaustive()
    }
}

/// Checks that a legacy listener's certificate and key load into OpenSSL, for the
/// configuration's early refusal.
pub(crate) fn check_legacy(
    cert: &Path,
    key: &Path,
    min_version: LegacyTlsVersion,
) -> Result<(), OpenSslSetupError> {
    legacy_context(cert, key, min_version).map(drop)
}

impl OpenSslAcceptor {
    /// The acceptor of a listener configured with `tls`, asking `authenticator` for PSK keys.
    pub(crate) fn new(
        tls: &OpenSslTls,
        authenticator: Arc<dyn Authenticator + Send + Sync>,
        counters: Arc<TransportCounters>,
    ) -> Result<Self, OpenSslSetupError> {
        let (context, psk) = match tls {
            OpenSslTls::Psk => (psk_context(authenticator, Arc::clone(&counters))?, true),
            OpenSslTls::Legacy {
                cert,
                key,
                min_version,
            } => (legacy_context(cert, key, *min_version)?, false),
        };
        Ok(OpenSslAcceptor {
            context,
            psk,
            counters,
        })
    }

    /// The TLS handshake on `stream`; the stream, and on a PSK listener the device the
    /// handshake proved. Not bounded in time: the caller is.
    pub(crate) async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
        peer: std::net::SocketAddr,
    ) -> Result<(SslStream<S>, Option<Arc<DeviceIdentity>>), AcceptError> {
        let ssl = Ssl::new(&self.context).map_err(|error| AcceptError(error.to_string()))?;
        let mut stream =
            SslStream::new(ssl, stream).map_err(|error| AcceptError(error.to_string()))?;
        std::pin::Pin::new(&mut stream)
            .accept()
            .await
            .map_err(|error| AcceptError(describe(&error)))?;
        let device = if self.psk {
            // The callback accepted this identity, so it parses.
            let identity = stream.ssl().psk_identity().map(PskIdentity::parse);
            match identity {
                Some(Ok(identity)) => Some(Arc::new(identity.device)),
                _ => return Err(AcceptError("no PSK identity after the handshake".into())),
            }
        } else {
            None
        };
        let counter = match stream.ssl().version2() {
            Some(version) if version == SslVersion::TLS1 => Some(&self.counters.tls_1_0_handshakes),
            Some(version) if version == SslVersion::TLS1_1 => {
                Some(&self.counters.tls_1_1_handshakes)
            }
            _ => None,
        };
        if let Some(counter) = counter {
            counter.fetch_add(1, Ordering::Relaxed);
            info!(
                %peer,
                version = stream.ssl().version_str(),
                cipher = stream.ssl().current_cipher().map(|cipher| cipher.name()),
                "legacy TLS handshake accepted"
            );
        }
        Ok((stream, device))
    }
}

/// A failed OpenSSL handshake, in words.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct AcceptError(String);

/// An OpenSSL handshake error with its reasons, which OpenSSL's own `Display` leaves terse.
fn describe(error: &openssl::ssl::Error) -> String {
    match error.ssl_error() {
        Some(stack) => {
            let reasons: Vec<String> = stack
                .errors()
                .iter()
                .map(|error| error.reason().unwrap_or("unknown reason").to_owned())
                .collect();
            if reasons.is_empty() {
                error.to_string()
            } else {
                reasons.join("; ")
            }
        }
        None => error.to_string(),
    }
}

/// A server context builder whose connections give their record buffers back while idle
/// (`SSL_MODE_RELEASE_BUFFERS`): measured on idle TLS-PSK connections, 59 KiB of broker
/// memory each without it and 43.5 KiB with it (before the handshake's futures were freed
/// too, which brought it to 19 KiB).
fn server_builder() -> Result<SslContextBuilder, ErrorStack> {
    let mut builder = SslContextBuilder::new(SslMethod::tls_server())?;
    builder.set_mode(SslMode::RELEASE_BUFFERS);
    Ok(builder)
}

/// TLS 1.2 with the platform's one PSK suite, keys from the authenticator.
fn psk_context(
    authenticator: Arc<dyn Authenticator + Send + Sync>,
    counters: Arc<TransportCounters>,
) -> Result<SslContext, OpenSslSetupError> {
    let setup = |source| OpenSslSetupError {
        what: "a TLS-PSK listener".into(),
        source,
    };
    let mut builder = server_builder().map_err(setup)?;
    builder
        .set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(setup)?;
    builder
        .set_max_proto_version(Some(SslVersion::TLS1_2))
        .map_err(setup)?;
    builder.set_cipher_list(PSK_CIPHER).map_err(setup)?;
    builder.set_psk_server_callback(move |_ssl, identity, key_out| {
        let Some(identity) = identity else {
            counters
                .psk_identities_refused
                .fetch_add(1, Ordering::Relaxed);
            info!("TLS-PSK handshake refused: no identity");
            return Ok(0);
        };
        let key = PskIdentity::parse(identity)
            .ok()
            .and_then(|identity| authenticator.psk_key(&identity));
        match key {
            // OpenSSL's buffer holds 256 bytes or more; a key of 64 fits.
            Some(key) if key.as_bytes().len() <= key_out.len() => {
                key_out[..key.as_bytes().len()].copy_from_slice(key.as_bytes());
                Ok(key.as_bytes().len())
            }
            _ => {
                counters
                    .psk_identities_refused
                    .fetch_add(1, Ordering::Relaxed);
                info!(
                    identity = %String::from_utf8_lossy(identity),
                    "TLS-PSK handshake refused: the identity names no registered device"
                );
                // Zero: OpenSSL ends the handshake with `unknown_psk_identity`.
                Ok(0)
            }
        }
    });
    Ok(builder.build())
}

/// Certificate TLS from `min_version` up to 1.3.
fn legacy_context(
    cert: &Path,
    key: &Path,
    min_version: LegacyTlsVersion,
) -> Result<SslContext, OpenSslSetupError> {
    let setup = |source| OpenSslSetupError {
        what: format!(
            "TLS from version {min_version} with {} and {}",
            cert.display(),
            key.display()
        ),
        source,
    };
    let mut builder = server_builder().map_err(setup)?;
    builder.set_certificate_chain_file(cert).map_err(setup)?;
    builder
        .set_private_key_file(key, SslFiletype::PEM)
        .map_err(setup)?;
    builder.check_private_key().map_err(setup)?;
    let min = match min_version {
        LegacyTlsVersion::Tls1_0 => SslVersion::TLS1,
        LegacyTlsVersion::Tls1_1 => SslVersion::TLS1_1,
    };
    builder.set_min_proto_version(Some(min)).map_err(setup)?;
    builder.set_max_proto_version(None).map_err(setup)?;
    // TLS 1.0 and 1.1 sign with SHA-1, which OpenSSL 3 allows only at security level 0.
    builder
        .set_cipher_list("DEFAULT:@SECLEVEL=0")
        .map_err(setup)?;
    Ok(builder.build())
}
