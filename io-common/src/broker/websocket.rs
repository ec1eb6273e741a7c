//! The broker's side of MQTT over WebSocket: the HTTP/1.1 upgrade (RFC 6455 §4.2) of a
//! connection to a WebSocket listener, before the MQTT loop runs on
//! [`WebSocketBytes`](crate::websocket::WebSocketBytes).
//!
//! [`answer_upgrade`] decides what a request head gets, with no I/O: `101 Switching Protocols`
//! with the `mqtt` (or `mqttv3.1`) subprotocol, or an HTTP error whose body says why, so that
//! a browser, `curl` or a misconfigured client learns what is wrong rather than waiting on a
//! connection that never answers. [`accept`] reads the head (at most [`MAX_REQUEST_HEAD`]
//! bytes), writes the answer and hands the bytes read past the head, if any, to the WebSocket.
//! The caller bounds the whole by the connect timeout.

use std::fmt::Write as _;
use std::io;

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::handshake::derive_accept_key;
use async_tungstenite::tungstenite::protocol::Role;
use futures_io::{AsyncRead, AsyncWrite};
use futures_util::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::websocket::{self, SUBPROTOCOLS, WebSocketBytes};

/// The largest HTTP request head the broker reads (the request line and every header): a
/// WebSocket client sends a few hundred bytes; beyond this, `431`.
pub(crate) const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// Headers in a request head, at most; beyond, `431`.
const MAX_HEADERS: usize = 32;

/// What a request head gets.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The head is not complete yet: read more.
    Incomplete,
    /// `101 Switching Protocols`: write `response`; the WebSocket begins after the head's
    /// `head_len` bytes.
    Upgrade {
        /// The bytes of the request head, with its blank line.
        head_len: usize,
        /// The response to write.
        response: String,
        /// The subprotocol chosen, if the client offered one.
        subprotocol: Option<&'static str>,
    },
    /// An HTTP error: write it, then close.
    Refuse(Refusal),
}

/// An HTTP error answer to a request that is no MQTT WebSocket upgrade.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// The status code.
    pub(crate) status: u16,
    /// Why, for the body and the log.
    pub(crate) why: String,
}

impl Refusal {
    fn new(status: u16, why: impl Into<String>) -> Self {
        Refusal {
            status,
            why: why.into(),
        }
    }

    /// The whole response: status line, headers, the reason as a plain-text body.
    pub(crate) fn response(&self) -> String {
        let reason = match self.status {
            404 => "Not Found",
            426 => "Upgrade Required",
            431 => "Request Header Fields Too Large",
            _ => "Bad Request",
        };
        let body = format!("{}\n", self.why);
        let mut response = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: {}\r\nConnection: close\r\n",
            self.status,
            body.len()
        );
        if self.status == 426 {
            response.push_str("Sec-WebSocket-Version: 13\r\n");
        }
        response.push_str("\r\n");
        response.push_str(&body);
        response
    }
}

/// What the request head in `request` gets on a listener at `path`: see the [module
/// docs](self). Pure: no I/O, no clock.
pub(crate) fn answer_upgrade(request: &[u8], path: &str) -> Answer {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_len = match parsed.parse(request) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Answer::Incomplete,
        Err(httparse::Error::TooManyHeaders) => {
            return Answer::Refuse(Refusal::new(
                431,
                format!("more than {MAX_HEADERS} request headers"),
            ));
        }
        Err(error) => {
            return Answer::Refuse(Refusal::new(
                400,
                format!(
                    "not an HTTP request ({error}): this port takes MQTT over WebSocket at {path}"
                ),
            ));
        }
    };
    let headers: &[httparse::Header<'_>] = parsed.headers;
    let header = |name| values(headers, name);
    let tokens = |name| values(headers, name).flat_map(comma_separated);
    if parsed.method != Some("GET") {
        return Answer::Refuse(Refusal::new(
            400,
            format!(
                "a WebSocket upgrade is a GET request: this port takes MQTT over WebSocket at {path}"
            ),
        ));
    }
    let target = parsed.path.unwrap_or_default();
    let target_path = target.split_once('?').map_or(target, |(path, _)| path);
    if target_path != path {
        return Answer::Refuse(Refusal::new(
            404,
            format!("no WebSocket at {target_path}: MQTT over WebSocket is at {path}"),
        ));
    }
    let upgrade = tokens("Upgrade").any(|token| token.eq_ignore_ascii_case("websocket"));
    let connection = tokens("Connection").any(|token| token.eq_ignore_ascii_case("upgrade"));
    if !upgrade || !connection {
        return Answer::Refuse(Refusal::new(
            400,
            format!(
                "not a WebSocket upgrade (it needs `Upgrade: websocket` and `Connection: Upgrade`): \
                 this port takes MQTT over WebSocket at {path}"
            ),
        ));
    }
    if !header("Sec-WebSocket-Version").any(|version| version.trim() == "13") {
        return Answer::Refuse(Refusal::new(426, "only WebSocket version 13 is spoken"));
    }
    let Some(key) = header("Sec-WebSocket-Key").next().map(str::trim) else {
        return Answer::Refuse(Refusal::new(400, "no Sec-WebSocket-Key header"));
    };
    // RFC 6455 §4.1: the key is 16 random bytes in base64, 24 characters.
    if key.len() != 24 {
        return Answer::Refuse(Refusal::new(
            400,
            "the Sec-WebSocket-Key is not 16 bytes in base64",
        ));
    }
    let offered: Vec<&str> = tokens("Sec-WebSocket-Protocol").collect();
    let subprotocol = SUBPROTOCOLS
        .iter()
        .find(|ours| offered.iter().any(|theirs| theirs == *ours))
        .copied();
    // A client that offers subprotocols must get one of them (RFC 6455 §4.1); one that offers
    // none is served without (some MQTT clients do not name it).
    if subprotocol.is_none() && !offered.is_empty() {
        return Answer::Refuse(Refusal::new(
            400,
            format!(
                "none of the subprotocols offered ({}) is MQTT's: `mqtt` or `mqttv3.1`",
                offered.join(", ")
            ),
        ));
    }
    let mut response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n",
        derive_accept_key(key.as_bytes())
    );
    if let Some(subprotocol) = subprotocol {
        let _ = write!(response, "Sec-WebSocket-Protocol: {subprotocol}\r\n");
    }
    response.push_str("\r\n");
    Answer::Upgrade {
        head_len,
        response,
        subprotocol,
    }
}

/// The values of every header called `name` (in any case) that are text.
fn values<'a>(
    headers: &'a [httparse::Header<'a>],
    name: &'static str,
) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .iter()
        .filter(move |header| header.name.eq_ignore_ascii_case(name))
        .filter_map(|header| std::str::from_utf8(header.value).ok())
}

/// The comma-separated tokens of a header value, trimmed, empty ones left out.
fn comma_separated(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(',')
        .map(str::trim)
        .filter(|token| !token.is_empty())
}

/// Why a connection to a WebSocket listener did not become one.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpgradeError {
    /// The request was answered with an HTTP error.
    #[error("HTTP {}: {}", .0.status, .0.why)]
    Refused(Refusal),
    /// The connection ended or failed before the upgrade was done.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads the upgrade request from `stream`, answers it, and returns the WebSocket as an MQTT
/// byte stream whose messages are at most `max_packet_size` plus some slack; an HTTP error
/// answer is written (and the stream closed) before the error is returned. Not bounded in
/// time: the caller is.
pub(crate) async fn accept<S>(
    mut stream: S,
    path: &str,
    max_packet_size: usize,
) -> Result<WebSocketBytes<S>, UpgradeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut request = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let answer = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before the end of the HTTP request",
            )
            .into());
        }
        request.extend_from_slice(&chunk[..n]);
        match answer_upgrade(&request, path) {
            Answer::Incomplete if request.len() >= MAX_REQUEST_HEAD => {
                break Answer::Refuse(Refusal::new(
                    431,
                    format!("the request head is longer than {MAX_REQUEST_HEAD} bytes"),
                ));
            }
            Answer::Incomplete => {}
            answer => break answer,
        }
    };
    match answer {
        Answer::Upgrade {
            head_len, response, ..
        } => {
            stream.write_all(response.as_bytes()).await?;
            stream.flush().await?;
            // What the client sent after its head (its first frames, if it did not wait).
            request.drain(..head_len);
            let socket = WebSocketStream::from_partially_read(
                stream,
                request,
                Role::Server,
                Some(websocket::config(max_packet_size)),
            )
            .await;
            Ok(WebSocketBytes::new(socket))
        }
        Answer::Refuse(refusal) => {
            // Best effort: the refusal is what matters, whether or not the client reads it.
            let _ = stream.write_all(refusal.response().as_bytes()).await;
            let _ = stream.close().await;
            Err(UpgradeError::Refused(refusal))
        }
        Answer::Incomplete => unreachable!("the loop ends on a complete answer"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6455 §1.3's example key and its accept value.
    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    fn request(path: &str, extra: &str) -> String {
        format!(
            "GET {path} HTTP/1.1\r\nHost: broker\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
             Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
    }

    #[test]
    fn an_mqtt_upgrade_is_switched_with_the_mqtt_subprotocol() {
        let text = request("/mqtt", "Sec-WebSocket-Protocol: mqttv3.1, mqtt\r\n");
        let mut bytes = text.clone().into_bytes();
        bytes.extend_from_slice(b"\x82\x80");
        let Answer::Upgrade {
            head_len,
            response,
            subprotocol,
        } = answer_upgrade(&bytes, "/mqtt")
        else {
            panic!("not upgraded");
        };
        assert_eq!(head_len, text.len());
        assert_eq!(subprotocol, Some("mqtt"));
        assert!(response.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(response.contains(&format!("Sec-WebSocket-Accept: {ACCEPT}\r\n")));
        assert!(response.contains("Sec-WebSocket-Protocol: mqtt\r\n"));
        assert!(response.ends_with("\r\n\r\n"));
    }

    #[test]
    fn mqtt_3_1_clients_get_their_subprotocol_and_a_query_string_is_ignored() {
        let text = request("/mqtt?client=web", "Sec-WebSocket-Protocol: mqttv3.1\r\n");
        let Answer::Upgrade { subprotocol, .. } = answer_upgrade(text.as_bytes(), "/mqtt") else {
            panic!("not upgraded");
        };
        assert_eq!(subprotocol, Some("mqttv3.1"));
    }

    #[test]
    fn a_client_naming_no_subprotocol_is_served_without() {
        let text = request("/", "");
        let Answer::Upgrade {
            subprotocol,
            response,
            ..
        } = answer_upgrade(text.as_bytes(), "/")
        else {
            panic!("not upgraded");
        };
        assert_eq!(subprotocol, None);
        assert!(!response.contains("Sec-WebSocket-Protocol"));
    }

    #[test]
    fn a_partial_head_asks_for_more() {
        let text = request("/mqtt", "");
        assert_eq!(
            answer_upgrade(&text.as_bytes()[..40], "/mqtt"),
            Answer::Incomplete
        );
    }

    fn refused(request: &[u8]) -> Refusal {
        match answer_upgrade(request, "/mqtt") {
            Answer::Refuse(refusal) => refusal,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn what_is_not_an_mqtt_upgrade_gets_an_http_error_saying_why() {
        // Plain HTTP, as a browser or curl sends it.
        let plain = refused(b"GET /mqtt HTTP/1.1\r\nHost: broker\r\n\r\n");
        assert_eq!(plain.status, 400);
        assert!(
            plain.why.contains("not a WebSocket upgrade"),
            "{}",
            plain.why
        );
        // MQTT itself, on the wrong port: a CONNECT is no HTTP.
        let mqtt = refused(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00");
        assert_eq!(mqtt.status, 400);
        assert!(mqtt.response().starts_with("HTTP/1.1 400 Bad Request\r\n"));
        // The wrong path.
        let elsewhere = refused(request("/ws", "").as_bytes());
        assert_eq!(elsewhere.status, 404);
        assert!(elsewhere.why.contains("/mqtt"));
        // Another WebSocket protocol.
        let other = refused(request("/mqtt", "Sec-WebSocket-Protocol: chat\r\n").as_bytes());
        assert_eq!(other.status, 400);
        assert!(other.why.contains("chat"));
        // An old WebSocket version.
        let old = refused(
            request("/mqtt", "")
                .replace("Version: 13", "Version: 8")
                .as_bytes(),
        );
        assert_eq!(old.status, 426);
        assert!(old.response().contains("Sec-WebSocket-Version: 13\r\n"));
        // Not a GET.
        let post = refused(request("/mqtt", "").replacen("GET", "POST", 1).as_bytes());
        assert_eq!(post.status, 400);
    }

    #[test]
    fn a_refusal_is_a_complete_http_response() {
        let response = Refusal::new(404, "no WebSocket at /x").response();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        assert!(head.contains("Connection: close"));
        assert_eq!(body, "no WebSocket at /x\n");
    }
}
