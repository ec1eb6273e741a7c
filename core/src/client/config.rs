//! What a device client is configured with: how it logs in, who it is, and its limits.

use core::fmt;
use core::time::Duration;

use aliot_auth::{ConnectCredentials, DeviceIdentity};
use bytes::Bytes;

use crate::codec::{
    BinaryField, DEFAULT_MAX_PACKET_SIZE, MAX_STRING_LEN, ProtocolVersion, Utf8Bytes,
    Utf8BytesError,
};

/// Keepalive announced in CONNECT when none is configured: 60 s, as the platform's SDKs use
/// (the platform accepts 30 to 1,200 s).
pub const DEFAULT_KEEP_ALIVE_SECS: u16 = 60;

/// How long the client waits for any packet after a PINGREQ before it declares the connection
/// dead: 10 s.
pub const DEFAULT_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the client waits for CONNACK after CONNECT: 10 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How many packets awaiting an acknowledgement (QoS 1 PUBLISH, SUBSCRIBE, UNSUBSCRIBE) may be
/// out at once: 32.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 32;

/// How many commands may wait to be sent (while disconnected or behind a full window): 1,024.
pub const DEFAULT_MAX_QUEUED: usize = 1_024;

/// How many RRPC requests may wait for their response at once: 32. The platform gives a call
/// at most 8 s, so this is far more than a device answering in time ever holds.
pub const DEFAULT_MAX_PENDING_RRPC: usize = 32;

/// How many topic filters go in one SUBSCRIBE when the connection subscribes again after a
/// session loss: 16, so that a device with many filters sends a few packets of moderate size.
pub const RESUBSCRIBE_CHUNK: usize = 16;

/// Why a client id, user name or password cannot go into a CONNECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// The client id is not an MQTT string.
    #[error("the client id is not an MQTT string: {0}")]
    ClientId(Utf8BytesError),
    /// The user name is not an MQTT string.
    #[error("the user name is not an MQTT string: {0}")]
    Username(Utf8BytesError),
    /// The password does not fit its 16-bit length prefix.
    #[error("{field} is {len} bytes, over the 65,535 its length prefix can hold")]
    PasswordTooLong {
        /// Always the password; kept so the message names the field as the codec does.
        field: BinaryField,
        /// The password's length in bytes.
        len: usize,
    },
}

/// What a client puts in its CONNECT to log in: a client id and, optionally, a user name with
/// an optional password (MQTT allows a password only with a user name).
///
/// The fields are checked when the value is built, so a CONNECT made from them always encodes.
/// `Debug` does not show the password.
///
/// ```
/// use aliot_auth::{DeviceIdentity, DeviceSecret, SecureMode, SignRequest};
/// use aliot_core::client::Credentials;
///
/// // A generic MQTT broker with a plain login.
/// let plain = Credentials::with_password("sensor-7", "alice", "s3cret")?;
/// assert_eq!(plain.username(), Some("alice"));
///
/// // The platform: signed credentials.
/// let identity = DeviceIdentity::new("a1TestPK001", "dev-001");
/// let secret = DeviceSecret::new("0123456789abcdef0123456789abcdef");
/// let signed = SignRequest::new(&identity, &secret, SecureMode::Tls)
///     .timestamp("2524608000000")
///     .sign()?;
/// let platform = Credentials::try_from(signed)?;
/// assert_eq!(platform.username(), Some("dev-001&a1TestPK001"));
/// # Ok::<(), Box<dyn core::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    client_id: Utf8Bytes,
    username: Option<Utf8Bytes>,
    password: Option<Bytes>,
}

impl Credentials {
    /// Only a client id, no user name or password (open brokers).
    ///
    /// # Errors
    ///
    /// [`CredentialsError::ClientId`] when `client_id` is not an MQTT string.
    pub fn anonymous(client_id: &str) -> Result<Self, CredentialsError> {
        Ok(Self {
            client_id: Utf8Bytes::try_from(client_id).map_err(CredentialsError::ClientId)?,
            username: None,
            password: None,
        })
    }

    /// A client id and a user name, no password.
    ///
    /// # Errors
    ///
    /// [`CredentialsError::ClientId`] or [`CredentialsError::Username`] when one is not an
    /// MQTT string.
    pub fn with_username(client_id: &str, username: &str) -> Result<Self, CredentialsError> {
        let mut credentials = Self::anonymous(client_id)?;
        credentials.username =
            Some(Utf8Bytes::try_from(username).map_err(CredentialsError::Username)?);
        Ok(credentials)
    }

    /// A client id, a user name and a password (binary data in MQTT).
    ///
    /// # Errors
    ///
    /// [`CredentialsError::ClientId`] or [`CredentialsError::Username`] when one is not an
    /// MQTT string, [`CredentialsError::PasswordTooLong`] over 65,535 bytes.
    pub fn with_password(
        client_id: &str,
        username: &str,
        password: impl Into<Bytes>,
    ) -> Result<Self, CredentialsError> {
        let password = password.into();
        if password.len() > MAX_STRING_LEN {
            return Err(CredentialsError::PasswordTooLong {
                field: BinaryField::Password,
                len: password.len(),
            });
        }
        let mut credentials = Self::with_username(client_id, username)?;
        credentials.password = Some(password);
        Ok(credentials)
    }

    /// The MQTT client id.
    #[must_use]
    pub fn client_id(&self) -> &str {
        self.client_id.as_str()
    }

    /// The MQTT user name, if any.
    #[must_use]
    pub fn username(&self) -> Option<&str> {
        self.username.as_ref().map(Utf8Bytes::as_str)
    }

    /// The MQTT password, if any.
    #[must_use]
    pub fn password(&self) -> Option<&[u8]> {
        self.password.as_deref()
    }

    /// The three fields as the CONNECT carries them.
    pub(crate) fn connect_fields(&self) -> (Utf8Bytes, Option<Utf8Bytes>, Option<Bytes>) {
        (
            self.client_id.clone(),
            self.username.clone(),
            self.password.clone(),
        )
    }
}

impl TryFrom<ConnectCredentials> for Credentials {
    type Error = CredentialsError;

    /// The platform's signed client id, user name and password (the password is the hex
    /// digest, sent as its ASCII bytes).
    fn try_from(signed: ConnectCredentials) -> Result<Self, Self::Error> {
        let client_id =
            Utf8Bytes::try_from(signed.client_id).map_err(CredentialsError::ClientId)?;
        let username = Utf8Bytes::try_from(signed.username).map_err(CredentialsError::Username)?;
        let password = Bytes::from(signed.password);
        if password.len() > MAX_STRING_LEN {
            return Err(CredentialsError::PasswordTooLong {
                field: BinaryField::Password,
                len: password.len(),
            });
        }
        Ok(Self {
            client_id,
            username: Some(username),
            password: Some(password),
        })
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

/// What happens, on a connection whose CONNACK says the broker holds no session (or with
/// cleanSession=1), to QoS 1 PUBLISHes sent earlier and never acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SessionLostPolicy {
    /// Send them again as new messages (DUP=0, same packet ids), before anything newer. The
    /// broker may then deliver a message twice, but none is lost. The default.
    #[default]
    ResendAsNew,
    /// Drop them and report each with [`Event::PublishFailed`](super::Event::PublishFailed).
    ReportFailed,
}

/// How a [`Connection`](super::Connection) logs in and behaves.
///
/// Built with [`ClientConfig::new`]; every other field has a documented default and can be
/// changed in place.
///
/// ```
/// use aliot_auth::DeviceIdentity;
/// use aliot_core::client::{ClientConfig, Credentials, SessionLostPolicy};
/// use core::time::Duration;
///
/// let mut config = ClientConfig::new(Credentials::anonymous("sensor-7")?)
///     .with_identity(DeviceIdentity::new("a1TestPK001", "dev-001"));
/// config.clean_session = false;
/// config.keep_alive_secs = 300;
/// config.ping_timeout = Duration::from_secs(5);
/// config.session_lost = SessionLostPolicy::ReportFailed;
/// assert_eq!(config.max_in_flight, 32);
/// # Ok::<(), aliot_core::client::CredentialsError>(())
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Client id, user name and password of the CONNECT.
    pub credentials: Credentials,
    /// The device this client is, if it is a platform device: needed to recognise RRPC calls
    /// and answer them. Default: none (RRPC requests arrive as plain messages).
    pub identity: Option<DeviceIdentity>,
    /// MQTT 3.1.1 (default) or 3.1.
    pub protocol: ProtocolVersion,
    /// cleanSession of the CONNECT. Default `true`: a fresh session each time. Set `false` to
    /// have the broker keep subscriptions and QoS 1 messages while the device is away and to
    /// re-send unacknowledged PUBLISHes with DUP=1 when the session is resumed.
    pub clean_session: bool,
    /// Keepalive in seconds, announced in CONNECT; a PINGREQ goes out when nothing was sent
    /// for this long. 0: no keepalive, no pings. Default [`DEFAULT_KEEP_ALIVE_SECS`].
    pub keep_alive_secs: u16,
    /// How long to wait for any packet after a PINGREQ before declaring the connection dead.
    /// Default [`DEFAULT_PING_TIMEOUT`].
    pub ping_timeout: Duration,
    /// How long to wait for CONNACK after CONNECT. Default [`DEFAULT_CONNECT_TIMEOUT`].
    pub connect_timeout: Duration,
    /// How many QoS 1 PUBLISH, SUBSCRIBE and UNSUBSCRIBE packets may await their
    /// acknowledgement at once; later commands wait in order. 0 is taken as 1. Default
    /// [`DEFAULT_MAX_IN_FLIGHT`].
    pub max_in_flight: usize,
    /// How many commands may wait to be sent; past it a command fails with
    /// [`ClientError::QueueFull`](super::ClientError::QueueFull). Default [`DEFAULT_MAX_QUEUED`].
    pub max_queued: usize,
    /// Largest packet, fixed header included, accepted from the broker or built by a command.
    /// Default [`DEFAULT_MAX_PACKET_SIZE`] (256 KiB, the platform's limit).
    pub max_packet_size: usize,
    /// What to do with unacknowledged QoS 1 PUBLISHes when the session is not resumed.
    /// Default [`SessionLostPolicy::ResendAsNew`]: nothing is lost.
    pub session_lost: SessionLostPolicy,
    /// How many RRPC requests may await [`respond_rrpc`](super::Connection::respond_rrpc); past
    /// it the oldest is forgotten (its caller has timed out by then). Default
    /// [`DEFAULT_MAX_PENDING_RRPC`].
    pub max_pending_rrpc: usize,
    /// Whether to subscribe again, after a CONNACK without the session, to every filter the
    /// broker had accepted and the application did not drop
    /// ([`Event::Resubscribed`](super::Event::Resubscribed) reports each answer). Default
    /// `true`: a device keeps receiving what it subscribed to across reconnects, whatever
    /// cleanSession is. Set `false` to subscribe again yourself on
    /// `Connected { session_present: false }`.
    pub resubscribe_on_session_loss: bool,
}

impl ClientConfig {
    /// A configuration with these credentials and every default.
    #[must_use]
    pub fn new(credentials: Credentials) -> Self {
        Self {
            credentials,
            identity: None,
            protocol: ProtocolVersion::V3_1_1,
            clean_session: true,
            keep_alive_secs: DEFAULT_KEEP_ALIVE_SECS,
            ping_timeout: DEFAULT_PING_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_queued: DEFAULT_MAX_QUEUED,
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            session_lost: SessionLostPolicy::ResendAsNew,
            max_pending_rrpc: DEFAULT_MAX_PENDING_RRPC,
            resubscribe_on_session_loss: true,
        }
    }

    /// The same configuration for the platform device `identity`.
    #[must_use]
    pub fn with_identity(mut self, identity: DeviceIdentity) -> Self {
        self.identity = Some(identity);
        self
    }
}
