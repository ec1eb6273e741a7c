//! How the generator's clients reach the broker: plain TCP, TLS with a certificate, TLS-PSK,
//! or MQTT over WebSocket (over TCP or TLS), so that each transport's cost is measured with
//! the same scenarios.
//!
//! Every transport ends in a [`BenchStream`]: the TCP socket itself, or the layers over it as
//! one tokio stream. TLS is tokio-rustls (TLS 1.3 unless the broker offers only 1.2); TLS-PSK
//! and WebSocket are the device client's own code in `aliot-io` (`tls_psk::connect`,
//! `websocket::connect`), over futures-io adapters.

use std::fmt;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use aliot_auth::{DeviceIdentity, DeviceSecret};
use aliot_io::client::TlsOptions;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_util::compat::{FuturesAsyncReadCompatExt as _, TokioAsyncReadCompatExt as _};

use super::LoadError;
use super::login::PlatformDevices;

/// The transport of every simulated client.
#[derive(Clone, Default)]
pub enum Transport {
    /// MQTT on the TCP socket.
    #[default]
    Tcp,
    /// TLS with the broker's certificate (checked against the CA given, for the name
    /// `localhost` or the IP address).
    Tls(Arc<rustls::ClientConfig>),
    /// TLS-PSK, each client as its platform device (the key derived from its secret).
    Psk(PlatformDevices),
    /// MQTT over WebSocket at `path`, over TLS when `tls` is given.
    WebSocket {
        /// The request path, e.g. `/mqtt`.
        path: String,
        /// TLS under the WebSocket (`wss://`).
        tls: Option<Arc<rustls::ClientConfig>>,
    },
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Transport {
    /// Its name in reports: `tcp`, `tls`, `psk`, `ws` or `wss`.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls(_) => "tls",
            Transport::Psk(_) => "psk",
            Transport::WebSocket { tls: None, .. } => "ws",
            Transport::WebSocket { tls: Some(_), .. } => "wss",
        }
    }

    /// A TLS client configuration trusting only the CA certificates in the PEM file `ca`.
    ///
    /// # Errors
    ///
    /// [`LoadError::Parameter`] when the file cannot be read or holds no usable certificate.
    pub fn tls_config(ca: &Path) -> Result<Arc<rustls::ClientConfig>, LoadError> {
        let bad = |why: String| LoadError::Parameter(format!("--ca {}: {why}", ca.display()));
        let pem = std::fs::read(ca).map_err(|error| bad(error.to_string()))?;
        // The device client's own TLS options: the same provider, versions and roots.
        TlsOptions::only_ca_pem(&pem)
            .map_err(|error| bad(error.to_string()))?
            .client_config()
            .map_err(|error| bad(error.to_string()))
    }

    /// Puts this transport's layers over a connected socket, as `device` when the transport
    /// needs one (TLS-PSK).
    ///
    /// # Errors
    ///
    /// The handshake's or the upgrade's failure, as an I/O error.
    pub async fn secure(
        &self,
        tcp: TcpStream,
        device: Option<&DeviceIdentity>,
        max_packet_size: usize,
    ) -> io::Result<BenchStream> {
        let addr = tcp.peer_addr()?;
        match self {
            Transport::Tcp => Ok(BenchStream::Tcp(tcp)),
            Transport::Tls(config) => Ok(BenchStream::layered(tls(config, tcp).await?)),
            Transport::Psk(devices) => {
                let device = device.ok_or_else(|| {
                    io::Error::other("TLS-PSK needs platform devices (--platform)")
                })?;
                let secret: DeviceSecret = devices.secret_of(device);
                let stream = aliot_io::tls_psk::connect(tcp.compat(), device, &secret).await?;
                Ok(BenchStream::layered(stream.compat()))
            }
            Transport::WebSocket { path, tls: None } => {
                let url = format!("ws://{addr}{path}");
                websocket(tcp, &url, max_packet_size).await
            }
            Transport::WebSocket {
                path,
                tls: Some(config),
            } => {
                let url = format!("wss://{addr}{path}");
                let stream = tls(config, tcp).await?;
                websocket(stream, &url, max_packet_size).await
            }
        }
    }
}

/// The TLS handshake, checking the broker's certificate for the name `localhost` (the name
/// the benchmark's certificates carry, with 127.0.0.1).
async fn tls(
    config: &Arc<rustls::ClientConfig>,
    tcp: TcpStream,
) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let name = ServerName::try_from("localhost").map_err(io::Error::other)?;
    TlsConnector::from(Arc::clone(config))
        .connect(name, tcp)
        .await
}

/// The WebSocket upgrade over `stream`.
async fn websocket<S>(stream: S, url: &str, max_packet_size: usize) -> io::Result<BenchStream>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let stream = aliot_io::websocket::connect(stream.compat(), url, max_packet_size)
        .await
        .map_err(io::Error::other)?;
    Ok(BenchStream::layered(stream.compat()))
}

/// A stream with layers over its socket.
pub trait Layered: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Layered for T {}

/// A client's byte stream to the broker: the socket, or layers over it.
pub enum BenchStream {
    /// Plain TCP, `TCP_NODELAY` set.
    Tcp(TcpStream),
    /// TLS, TLS-PSK or WebSocket over the socket.
    Layered(Box<dyn Layered>),
}

impl BenchStream {
    fn layered(stream: impl AsyncRead + AsyncWrite + Unpin + Send + 'static) -> Self {
        BenchStream::Layered(Box::new(stream))
    }
}

impl fmt::Debug for BenchStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchStream::Tcp(tcp) => f.debug_tuple("Tcp").field(tcp).finish(),
            BenchStream::Layered(_) => f.write_str("Layered"),
        }
    }
}

impl AsyncRead for BenchStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BenchStream::Tcp(tcp) => Pin::new(tcp).poll_read(cx, buf),
            BenchStream::Layered(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BenchStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BenchStream::Tcp(tcp) => Pin::new(tcp).poll_write(cx, buf),
            BenchStream::Layered(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BenchStream::Tcp(tcp) => Pin::new(tcp).poll_flush(cx),
            BenchStream::Layered(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BenchStream::Tcp(tcp) => Pin::new(tcp).poll_shutdown(cx),
            BenchStream::Layered(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}
