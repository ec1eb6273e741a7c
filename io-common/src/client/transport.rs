//! Opening the byte stream to the broker: TCP, then TLS when configured, then the WebSocket
//! upgrade when configured.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_io::{AsyncRead, AsyncWrite};
use futures_rustls::TlsConnector;
use rustls::pki_types::ServerName;

use crate::runtime::{Runtime, timeout_at};
use crate::websocket;

use super::error::ConnectError;
use super::options::ClientOptions;

/// A byte stream to the broker: plain TCP or TLS over TCP, and MQTT over WebSocket over
/// either.
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
    /// TLS-PSK: the device whose secret makes the identity and key.
    #[cfg(feature = "openssl")]
    psk: Option<(aliot_auth::DeviceIdentity, aliot_auth::DeviceSecret)>,
    /// `ws://host:port/path` or `wss://…`, when MQTT goes over WebSocket.
    websocket_url: Option<String>,
    /// The largest MQTT packet, which bounds the WebSocket messages taken.
    max_packet_size: usize,
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
                let config = tls.client_config().map_err(ConnectError::TlsConfig)?;
                Some((TlsConnector::from(config), server_name))
            }
        };
        #[cfg(feature = "openssl")]
        let (psk, tls) = match (&options.tls_psk, &options.login) {
            (false, _) => (None, tls),
            (
                true,
                super::Login::Device {
                    identity, secret, ..
                },
            ) => (Some((identity.clone(), secret.clone())), None),
            (true, _) => {
                return Err(ConnectError::PskUnavailable(
                    "its key is derived from a device secret: log in with Login::Device",
                ));
            }
        };
        #[cfg(not(feature = "openssl"))]
        if options.tls_psk {
            return Err(ConnectError::PskUnavailable(
                "this build has no OpenSSL: enable the cargo feature `openssl`",
            ));
        }
        #[cfg(feature = "openssl")]
        let secured = tls.is_some() || psk.is_some();
        #[cfg(not(feature = "openssl"))]
        let secured = tls.is_some();
        let websocket_url = options.websocket.as_ref().map(|path| {
            let scheme = if secured { "wss" } else { "ws" };
            let slash = if path.starts_with('/') { "" } else { "/" };
            format!("{scheme}://{address}{slash}{path}")
        });
        Ok(Dialer {
            runtime,
            host: options.host.clone(),
            port: options.port,
            address,
            tls,
            #[cfg(feature = "openssl")]
            psk,
            websocket_url,
            max_packet_size: options.max_packet_size,
            timeout: options.connect_timeout,
        })
    }

    /// Whether the stream is TLS (the device then signs with `securemode=2`).
    pub(crate) fn is_tls(&self) -> bool {
        #[cfg(feature = "openssl")]
        if self.psk.is_some() {
            return true;
        }
        self.tls.is_some()
    }

    /// Opens a stream: TCP connect, TLS handshake and WebSocket upgrade, together within the
    /// connect timeout.
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
        #[cfg(feature = "openssl")]
        if let Some((identity, secret)) = &self.psk {
            let stream = crate::tls_psk::connect(tcp, identity, secret)
                .await
                .map_err(|source| ConnectError::TlsHandshake {
                    address: self.address.clone(),
                    source,
                })?;
            return match &self.websocket_url {
                None => Ok(Box::new(stream)),
                Some(url) => self.upgrade(Box::new(stream), url).await,
            };
        }
        let stream: Box<dyn Io> = match &self.tls {
            None => Box::new(tcp),
            Some((connector, name)) => match connector.connect(name.clone(), tcp).await {
                Ok(stream) => Box::new(stream),
                Err(source) => {
                    return Err(ConnectError::TlsHandshake {
                        address: self.address.clone(),
                        source,
                    });
                }
            },
        };
        match &self.websocket_url {
            None => Ok(stream),
            Some(url) => self.upgrade(stream, url).await,
        }
    }

    /// The WebSocket upgrade at `url` (see [`websocket::connect`]).
    async fn upgrade(&self, stream: Box<dyn Io>, url: &str) -> Result<Box<dyn Io>, ConnectError> {
        match websocket::connect(stream, url, self.max_packet_size).await {
            Ok(stream) => Ok(Box::new(stream)),
            Err(error) => Err(ConnectError::WebSocketUpgrade {
                url: url.to_owned(),
                reason: error.to_string(),
            }),
        }
    }
}
