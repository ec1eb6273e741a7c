//! Opening the byte stream to the broker: TCP, then TLS when configured, then the WebSocket
//! upgrade when configured.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Error as WsError;
use async_tungstenite::tungstenite::client::IntoClientRequest as _;
use async_tungstenite::tungstenite::http::HeaderValue;
use futures_io::{AsyncRead, AsyncWrite};
use futures_rustls::TlsConnector;
use rustls::pki_types::ServerName;

use crate::runtime::{Runtime, timeout_at};
use crate::websocket::{self, WebSocketBytes};

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
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                    .map_err(ConnectError::TlsConfig)?
                    .with_root_certificates(tls.roots.clone())
                    .with_no_client_auth();
                Some((TlsConnector::from(Arc::new(config)), server_name))
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
            let stream = psk::connect(tcp, identity, secret)
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

    /// The WebSocket upgrade at `url`, asking for the subprotocol `mqtt` (tungstenite checks
    /// that the broker chose it).
    async fn upgrade(&self, stream: Box<dyn Io>, url: &str) -> Result<Box<dyn Io>, ConnectError> {
        let failed = |reason: String| ConnectError::WebSocketUpgrade {
            url: url.to_owned(),
            reason,
        };
        let mut request = url
            .into_client_request()
            .map_err(|error| failed(describe(error)))?;
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
        let config = websocket::config(self.max_packet_size);
        let (socket, _response) =
            async_tungstenite::client_async_with_config(request, stream, Some(config))
                .await
                .map_err(|error| failed(describe(error)))?;
        Ok(Box::new(WebSocketBytes::new(socket)))
    }
}

/// A failed WebSocket handshake in words: an HTTP error answer with its status and body (the
/// broker says there why it refused), anything else as tungstenite puts it.
fn describe(error: WsError) -> String {
    match error {
        WsError::Http(response) => {
            let status = response.status();
            let body = response
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            let body = body.trim();
            if body.is_empty() {
                format!("HTTP {status}")
            } else {
                format!("HTTP {status}: {body}")
            }
        }
        other => other.to_string(),
    }
}

/// The device side of TLS-PSK (PLATFORM-PROTOCOLS §7), through OpenSSL.
#[cfg(feature = "openssl")]
mod psk {
    use std::io;
    use std::pin::Pin;

    use aliot_auth::{DeviceIdentity, DeviceSecret, PskIdentity};
    use async_openssl::SslStream;
    use futures_io::{AsyncRead, AsyncWrite};
    use openssl::ssl::{Ssl, SslContextBuilder, SslMethod, SslVersion};

    use crate::broker::wall_clock_ms;

    /// The PSK handshake on `stream` as `device`: the identity with the current time, the key
    /// derived from `secret`, TLS 1.2 with `TLS_PSK_WITH_AES_128_CBC_SHA` only.
    pub(super) async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
        stream: S,
        device: &DeviceIdentity,
        secret: &DeviceSecret,
    ) -> io::Result<SslStream<S>> {
        let timestamp = wall_clock_ms().unwrap_or(0).to_string();
        let identity = PskIdentity::new(device.clone(), timestamp);
        let key = identity.key(secret);
        let identity = identity.to_string();
        let mut builder =
            SslContextBuilder::new(SslMethod::tls_client()).map_err(io::Error::other)?;
        builder
            .set_min_proto_version(Some(SslVersion::TLS1_2))
            .map_err(io::Error::other)?;
        builder
            .set_max_proto_version(Some(SslVersion::TLS1_2))
            .map_err(io::Error::other)?;
        builder
            .set_cipher_list("PSK-AES128-CBC-SHA")
            .map_err(io::Error::other)?;
        builder.set_psk_client_callback(move |_ssl, _hint, identity_out, key_out| {
            // The identity goes out NUL-terminated.
            let fits = identity.len() < identity_out.len() && key.as_bytes().len() <= key_out.len();
            if !fits {
                return Ok(0);
            }
            identity_out[..identity.len()].copy_from_slice(identity.as_bytes());
            identity_out[identity.len()] = 0;
            key_out[..key.as_bytes().len()].copy_from_slice(key.as_bytes());
            Ok(key.as_bytes().len())
        });
        let context = builder.build();
        let ssl = Ssl::new(&context).map_err(io::Error::other)?;
        let mut stream = SslStream::new(ssl, stream).map_err(io::Error::other)?;
        Pin::new(&mut stream)
            .connect()
            .await
            .map_err(|error| match error.into_io_error() {
                Ok(error) => error,
                Err(error) => io::Error::new(io::ErrorKind::ConnectionRefused, error.to_string()),
            })?;
        Ok(stream)
    }
}
