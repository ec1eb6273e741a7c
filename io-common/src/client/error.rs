//! Why a connection could not be made, and why a request failed.

use std::io;
use std::time::Duration;

use aliot_auth::ClientIdError;
use aliot_core::client::{ClientError, CredentialsError, DisconnectReason};
use aliot_core::codec::{ConnectReturnCode, PacketId};

/// Why [`Client::connect`](super::Client::connect), or a later reconnect attempt, failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The device credentials cannot be signed (a client id that is empty, over 64
    /// characters or holds `|`).
    #[error("cannot sign the device credentials: {0}")]
    Sign(ClientIdError),
    /// The credentials cannot go into a CONNECT.
    #[error("the credentials cannot go into a CONNECT: {0}")]
    Credentials(CredentialsError),
    /// The TLS server name is not a DNS name or an IP address.
    #[error("{name:?} is not a valid TLS server name")]
    InvalidServerName {
        /// The name given (or the host).
        name: String,
    },
    /// TLS-PSK needs what these options do not have: a [`Login::Device`] (its secret makes
    /// the key), or the cargo feature `openssl`.
    ///
    /// [`Login::Device`]: super::Login::Device
    #[error("TLS-PSK is not available: {0}")]
    PskUnavailable(&'static str),
    /// rustls refused the TLS client configuration.
    #[error("cannot build the TLS configuration: {0}")]
    TlsConfig(rustls::Error),
    /// The host could not be resolved or the TCP connection was refused or failed.
    #[error("cannot connect to {address}: {source}")]
    Io {
        /// `host:port`.
        address: String,
        /// What the operating system said.
        source: io::Error,
    },
    /// The TCP connect and TLS handshake took longer than the connect timeout.
    #[error("connecting to {address} took longer than {timeout:?}")]
    DialTimeout {
        /// `host:port`.
        address: String,
        /// The connect timeout.
        timeout: Duration,
    },
    /// The TLS handshake failed (an untrusted certificate, a name mismatch, no common
    /// protocol version, a TLS-PSK identity or key the broker refused...).
    #[error("TLS handshake with {address} failed: {source}")]
    TlsHandshake {
        /// `host:port`.
        address: String,
        /// What rustls said.
        source: io::Error,
    },
    /// The WebSocket upgrade failed: the broker answered with an HTTP error (a wrong path, no
    /// WebSocket on that port), chose no MQTT subprotocol, or broke the handshake.
    #[error("the WebSocket upgrade at {url} failed: {reason}")]
    WebSocketUpgrade {
        /// `ws://host:port/path` or `wss://…`.
        url: String,
        /// What the broker answered, or what was wrong with it.
        reason: String,
    },
    /// The broker refused the CONNECT: 4 for a malformed user name or password, 5 for an
    /// unknown device or a wrong signature.
    #[error("the broker refused the connection: {0}")]
    Refused(ConnectReturnCode),
    /// The connection ended before CONNACK (no CONNACK in time, the broker closed the
    /// transport or broke the protocol).
    #[error("the connection ended before CONNACK: {0}")]
    BeforeConnAck(DisconnectReason),
    /// The client's task ended before the connection was made (the runtime is shutting down).
    #[error("the client task ended before the connection was made")]
    Stopped,
}

impl From<DisconnectReason> for ConnectError {
    fn from(reason: DisconnectReason) -> Self {
        match reason {
            DisconnectReason::Refused(code) => ConnectError::Refused(code),
            reason => ConnectError::BeforeConnAck(reason),
        }
    }
}

/// Why a request of a [`Client`](super::Client) failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The client refused the command; nothing was sent (a full queue, QoS 2, an empty filter
    /// list, a packet over the size limit...).
    #[error("the command was refused: {0}")]
    Rejected(ClientError),
    /// The QoS 1 PUBLISH with this id was unacknowledged when the broker lost the session,
    /// and [`SessionLostPolicy::ReportFailed`](aliot_core::client::SessionLostPolicy) is set:
    /// it will not be sent again.
    #[error("the QoS 1 PUBLISH {0} was dropped unacknowledged when the session was lost")]
    PublishFailed(PacketId),
    /// The connection closed before the QoS 0 PUBLISH was written to it; it is not sent again
    /// (QoS 0 is at most once).
    #[error("the connection closed before the QoS 0 PUBLISH was written")]
    NotWritten,
    /// The client has stopped ([`Client::disconnect`](super::Client::disconnect) was called on
    /// a clone, or the runtime is shutting down).
    #[error("the client has stopped")]
    Closed,
}
