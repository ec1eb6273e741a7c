//! Opening the byte stream to the broker: TCP, then TLS when configured.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_io::{AsyncRead, AsyncWrite};
use futures_rustls::TlsConnector;
use rustls::pki_types::ServerName;

use crate::runtime::{Runtime, timeout_at};

use super::error::ConnectError;
use super::options::ClientOptions;

/// A byte stream to the broker: plain TCP or TLS over TCP.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A dial in progress.
pub(crate) type Dialing = Pin<Box<dyn Future<Output = Result<Box<dyn Io>, ConnectError>> + Send>>;

/// Where and how to open a stream; built once per client, checked when built.
pub(crate) struct Dialer<R: Runtime> {
    runtime: R,
    host: String,
    port: u16,
    /// `host:port` as the errors show it.
    address: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    timeout: Duration,
}

impl<R: Runtime> Dialer<R> {
    /// Checks the TLS options and builds the connector.
    pub(crate) fn new(runtime: R, options: &ClientOptions) -> Result<Self, ConnectError> {
        let address = if options.host.contains(':') {
            format!("[{}]:{}", options.host, options.port)
        } else {
            format!("{}:{}", options.host, options.port)
        };
        let tls = match &options.tls {
            None => None,
            Some(tls) => {
                let name = tls
                    .server_name
                    .clone()
                    .unwrap_or_else(|| options.host.clone());
                let server_name = ServerName::try_from(name.clone())
                    .map_err(|_| ConnectError::InvalidServerName { name })?;
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                    .map_err(ConnectError::TlsConfig)?
                    .with_root_certificates(tls.roots.clone())
                    .with_no_client_auth();
                Some((TlsConnector::from(Arc::new(config)), server_name))
            }
        };
        Ok(Dialer {
            runtime,
            host: options.host.clone(),
            port: options.port,
            address,
            tls,
            timeout: options.connect_timeout,
        })
    }

    /// Whether the stream is TLS (the device then signs with `securemode=2`).
    pub(crate) fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Opens a stream: TCP connect and TLS handshake, together within the connect timeout.
    pub(crate) fn dial(self: &Arc<Self>) -> Dialing {
        let dialer = Arc::clone(self);
        Box::pin(async move {
            let timeout = dialer.timeout;
            let deadline = Instant::now() + timeout;
            match timeout_at(&dialer.runtime, deadline, dialer.open()).await {
                Some(result) => result,
                None => Err(ConnectError::DialTimeout {
                    address: dialer.address.clone(),
                    timeout,
                }),
            }
        })
    }

    async fn open(&self) -> Result<Box<dyn Io>, ConnectError> {
        // TCP_NODELAY is set by the runtime: small packets (PUBACK, PINGREQ) go out at once.
        let tcp = self
            .runtime
            .connect(&self.host, self.port)
            .await
            .map_err(|source| ConnectError::Io {
                address: self.address.clone(),
                source,
            })?;
        match &self.tls {
            None => Ok(Box::new(tcp)),
            Some((connector, name)) => match connector.connect(name.clone(), tcp).await {
                Ok(stream) => Ok(Box::new(stream)),
                Err(source) => Err(ConnectError::TlsHandshake {
                    address: self.address.clone(),
                    source,
                }),
            },
        }
    }
}
