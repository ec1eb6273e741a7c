//! MQTT over WebSocket (MQTT 3.1.1 §6): the byte stream both ends run the MQTT loop on.
//!
//! After the HTTP upgrade (the broker's side is in `broker::websocket`, the client's is
//! [`connect`]), MQTT travels in binary WebSocket messages. The MQTT loops want a byte
//! stream, so [`WebSocketBytes`] turns the messages back into one: a read hands out the bytes
//! of the binary messages in order, whatever their boundaries (a message may carry part of an
//! MQTT packet or several packets, §6 says both are allowed); a write sends its bytes as one
//! binary message of at most 64 KiB. The framing, masking, control frames (ping, pong, close) and their limits
//! are tungstenite's, through async-tungstenite on futures-io streams, so any runtime serves.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::client::IntoClientRequest as _;
use async_tungstenite::tungstenite::http::HeaderValue;
use async_tungstenite::tungstenite::protocol::WebSocketConfig;
use async_tungstenite::tungstenite::{Bytes, Error as WsError, Message};
use futures_io::{AsyncRead, AsyncWrite};
use futures_util::{Sink as _, Stream as _};

/// The WebSocket subprotocols of MQTT, in the order the broker prefers them: `mqtt` (MQTT
/// 3.1.1 §6) and `mqttv3.1`, which MQTT 3.1 clients (MQTT.js with `protocolVersion: 3`, for
/// one) ask for.
pub const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// Bytes of a WebSocket message the receiver takes at most beyond the largest MQTT packet it
/// accepts: a message may carry several small packets after a large one, and the MQTT loop
/// enforces the packet limit itself.
const MESSAGE_SLACK: usize = 64 * 1024;

/// The largest WebSocket message a write sends: a longer write sends this much and reports
/// it, and the caller writes the rest in the next message. The MQTT loop hands over all its
/// pending output at once (up to the broker's `max_pending_output`, 1 MiB by default), which
/// as one message would exceed what clients accept (aliot's own take the largest packet plus
/// 64 KiB); MQTT over WebSocket lets a packet span messages, so the cut costs nothing.
const MAX_OUTGOING_MESSAGE: usize = 64 * 1024;

/// Control frames (ping, pong) one read takes before it yields, when they come without data.
const MAX_CONTROL_FRAMES_PER_READ: usize = 32;

/// Bytes tungstenite reads from the socket at a time. Its read buffer is allocated when the
/// stream is made and kept for the connection's life, so it is small: an idle connection holds
/// it. A longer frame grows it for as long as that frame takes.
const READ_BUFFER: usize = 4 * 1024;

/// The tungstenite limits for an MQTT stream whose packets are at most `max_packet_size`.
pub(crate) fn config(max_packet_size: usize) -> WebSocketConfig {
    let max_message = max_packet_size.saturating_add(MESSAGE_SLACK);
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        // Every write is one whole message, already gathered by the MQTT loop: send it as it
        // comes rather than buffer it further.
        .write_buffer_size(0)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

/// A WebSocket connection as a byte stream of MQTT: see the [module docs](self).
///
/// A text message, which MQTT does not use, ends the stream with an `InvalidData` error; a
/// close message ends it like the end of a TCP stream.
pub struct WebSocketBytes<S> {
    socket: WebSocketStream<S>,
    /// What is left of the binary message being read.
    unread: Bytes,
}

impl<S> WebSocketBytes<S> {
    /// The byte stream of a WebSocket whose handshake is done.
    pub(crate) fn new(socket: WebSocketStream<S>) -> Self {
        WebSocketBytes {
            socket,
            unread: Bytes::new(),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WebSocketBytes<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut control_frames = 0;
        while this.unread.is_empty() {
            // A peer sending only pings (or pongs) must not keep this task from yielding:
            // after a few, come back later (a runtime without a cooperative budget, as smol's,
            // would otherwise run this loop for as long as the flood lasts).
            if control_frames == MAX_CONTROL_FRAMES_PER_READ {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            match ready!(Pin::new(&mut this.socket).poll_next(cx)) {
                None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(0)),
                Some(Ok(Message::Binary(data))) => this.unread = data,
                // Answered by tungstenite itself (a ping's pong goes out with the next write
                // or flush).
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                    control_frames += 1;
                }
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a text WebSocket message: MQTT travels in binary messages only",
                    )));
                }
                Some(Err(error)) => return Poll::Ready(Err(io_error(error))),
            }
        }
        let n = buf.len().min(this.unread.len());
        let data = this.unread.split_to(n);
        buf[..n].copy_from_slice(&data);
        Poll::Ready(Ok(n))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WebSocketBytes<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let socket = &mut self.get_mut().socket;
        ready!(Pin::new(&mut *socket).poll_ready(cx)).map_err(io_error)?;
        let message = &buf[..buf.len().min(MAX_OUTGOING_MESSAGE)];
        Pin::new(socket)
            .start_send(Message::Binary(Bytes::copy_from_slice(message)))
            .map_err(io_error)?;
        Poll::Ready(Ok(message.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket)
            .poll_flush(cx)
            .map_err(io_error)
    }

    /// Sends a close message and flushes it; the socket itself closes when the stream is
    /// dropped (after the peer's close message was read, when the caller reads on).
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket)
            .poll_close(cx)
            .map_err(io_error)
    }
}

/// Why a client's WebSocket upgrade failed: what the broker answered (an HTTP error with its
/// reason), or what was wrong with the handshake.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UpgradeFailed(String);

/// The client side: the upgrade at `url` (`ws://host:port/path` or `wss://…`, the scheme only
/// naming what `stream` already is) asking for the subprotocol `mqtt`, which tungstenite checks
/// the broker chose; then the MQTT byte stream, taking messages of at most `max_packet_size`
/// plus some slack.
///
/// # Errors
///
/// [`UpgradeFailed`] with the broker's HTTP status and reason, or the handshake's error.
pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    url: &str,
    max_packet_size: usize,
) -> Result<WebSocketBytes<S>, UpgradeFailed> {
    let mut request = url
        .into_client_request()
        .map_err(|error| UpgradeFailed(describe(error)))?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(SUBPROTOCOLS[0]),
    );
    let (socket, _response) =
        async_tungstenite::client_async_with_config(request, stream, Some(config(max_packet_size)))
            .await
            .map_err(|error| UpgradeFailed(describe(error)))?;
    Ok(WebSocketBytes::new(socket))
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

/// A tungstenite error as the I/O error a byte stream would give.
fn io_error(error: WsError) -> io::Error {
    match error {
        WsError::Io(error) => error,
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            io::Error::new(io::ErrorKind::NotConnected, "the WebSocket is closed")
        }
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}
