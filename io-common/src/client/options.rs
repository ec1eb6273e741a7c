//! What a [`Client`](super::Client) connects to and how: the endpoint, TLS, the login and the
//! MQTT settings.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use aliot_auth::{DeviceIdentity, DeviceSecret, SecureMode, SignMethod, SignRequest};
use aliot_core::client::{
    Backoff, ClientConfig, Credentials, DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEEP_ALIVE_SECS,
    DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_PENDING_RRPC, DEFAULT_MAX_QUEUED, DEFAULT_PING_TIMEOUT,
    SessionLostPolicy,
};
use aliot_core::codec::{DEFAULT_MAX_PACKET_SIZE, ProtocolVersion};

use super::error::ConnectError;

/// The platform's MQTT port, plain TCP or TLS alike.
pub const PLATFORM_PORT: u16 = 1883;

/// The other port the platform serves MQTT over TLS on.
pub const PLATFORM_TLS_PORT: u16 = 443;

/// How many received messages wait for [`Messages::recv`](super::Messages::recv) by default
/// before the client stops reading from the broker: 256.
pub const DEFAULT_MESSAGE_CAPACITY: usize = 256;

/// The host of a device's legacy public-instance endpoint:
/// `${productKey}.iot-as-mqtt.${regionId}.aliyuncs.com`.
///
/// ```
/// use aliot_io::client::legacy_endpoint_host;
///
/// assert_eq!(
///     legacy_endpoint_host("a1TestPK001", "cn-shanghai"),
///     "a1TestPK001.iot-as-mqtt.cn-shanghai.aliyuncs.com"
/// );
/// ```
pub fn legacy_endpoint_host(product_key: &str, region_id: &str) -> String {
    format!("{product_key}.iot-as-mqtt.{region_id}.aliyuncs.com")
}

/// The host of an instance's endpoint (instances created since 2021):
/// `${instanceId}.mqtt.iothub.aliyuncs.com`.
///
/// ```
/// use aliot_io::client::instance_endpoint_host;
///
/// assert_eq!(
///     instance_endpoint_host("iot-06z00abc"),
///     "iot-06z00abc.mqtt.iothub.aliyuncs.com"
/// );
/// ```
pub fn instance_endpoint_host(instance_id: &str) -> String {
    format!("{instance_id}.mqtt.iothub.aliyuncs.com")
}

/// How the client logs in.
#[derive(Clone, Debug)]
pub enum Login {
    /// A platform device. The client signs the CONNECT (SPEC §2) with the device secret at
    /// every connect, with a fresh millisecond timestamp and `securemode` 2 over TLS or 3 over
    /// TCP, and answers RRPC calls addressed to the device.
    Device {
        /// Product key and device name.
        identity: DeviceIdentity,
        /// The device secret (never sent; only the signature is).
        secret: DeviceSecret,
        /// The HMAC to sign with.
        sign_method: SignMethod,
        /// The id part of the MQTT client id; `${productKey}.${deviceName}` when `None`.
        client_id: Option<String>,
    },
    /// Ready credentials: for a generic MQTT broker, a broker in open mode, or credentials
    /// signed elsewhere. With an `identity`, RRPC calls to that device are recognised.
    Credentials {
        /// Client id, user name and password, sent as they are at every connect.
        credentials: Credentials,
        /// The platform device these credentials are, if any.
        identity: Option<DeviceIdentity>,
    },
}

impl Login {
    /// A platform device signing with HMAC-SHA256 (as the platform's C SDK does) and the
    /// client id `${productKey}.${deviceName}`.
    pub fn device(identity: DeviceIdentity, secret: DeviceSecret) -> Self {
        Login::Device {
            identity,
            secret,
            sign_method: SignMethod::HmacSha256,
            client_id: None,
        }
    }

    /// Ready credentials, no device identity.
    pub fn credentials(credentials: Credentials) -> Self {
        Login::Credentials {
            credentials,
            identity: None,
        }
    }

    /// The device this login is, if any.
    pub fn identity(&self) -> Option<&DeviceIdentity> {
        match self {
            Login::Device { identity, .. } => Some(identity),
            Login::Credentials { identity, .. } => identity.as_ref(),
        }
    }

    /// The credentials of one CONNECT: signed now for a device, as given otherwise. With
    /// `announce`, a device's client id carries `_ss=1` and `ext=1` (see
    /// [`ClientOptions::announce_features`]).
    pub(crate) fn credentials_now(
        &self,
        tls: bool,
        announce: bool,
    ) -> Result<Credentials, ConnectError> {
        match self {
            Login::Credentials { credentials, .. } => Ok(credentials.clone()),
            Login::Device {
                identity,
                secret,
                sign_method,
                client_id,
            } => {
                let mode = if tls {
                    SecureMode::Tls
                } else {
                    SecureMode::Tcp
                };
                let mut request = SignRequest::new(identity, secret, mode)
                    .method(*sign_method)
                    .timestamp(unix_millis().to_string());
                if let Some(client_id) = client_id {
                    request = request.client_id(client_id.clone());
                }
                if announce {
                    request = request.param("_ss", "1").param("ext", "1");
                }
                let signed = request.sign().map_err(ConnectError::Sign)?;
                Credentials::try_from(signed).map_err(ConnectError::Credentials)
            }
        }
    }
}

/// Milliseconds since the Unix epoch, the timestamp the platform's SDKs sign (0 if the system
/// clock is before 1970).
fn unix_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis())
}

/// Why CA certificates could not be added to [`TlsOptions`].
#[derive(Debug, thiserror::Error)]
pub enum TlsOptionsError {
    /// The PEM text has a section that does not parse.
    #[error("the CA PEM does not parse: {0}")]
    Pem(io::Error),
    /// The PEM text holds no `CERTIFICATE` section.
    #[error("the CA PEM holds no CERTIFICATE section")]
    NoCertificate,
    /// A certificate is not usable as a trust anchor.
    #[error("a CA certificate is not usable as a root: {0}")]
    Rejected(rustls::Error),
}

/// TLS for the connection: futures-rustls with aliot's provider ([`crate::tls_crypto`]), TLS 1.2
/// and 1.3.
///
/// ```
/// use aliot_io::client::TlsOptions;
///
/// // Mozilla's roots, the name checked is the host the client connects to.
/// let public = TlsOptions::new();
/// assert!(!public.roots.is_empty());
///
/// // A private broker: trust only its CA, check the name its certificate was made for.
/// # let ca_pem = rcgen::generate_simple_self_signed(vec!["broker.local".into()])?.cert.pem();
/// let private = TlsOptions::only_ca_pem(ca_pem.as_bytes())?.with_server_name("broker.local");
/// assert_eq!(private.roots.len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct TlsOptions {
    /// The certificates trusted as roots. [`TlsOptions::new`] starts with Mozilla's (the
    /// `webpki-roots` crate, compiled in).
    pub roots: rustls::RootCertStore,
    /// The name the server's certificate must carry; the host connected to when `None`.
    pub server_name: Option<String>,
}

impl Default for TlsOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl TlsOptions {
    /// Mozilla's root certificates, the host as server name.
    pub fn new() -> Self {
        TlsOptions {
            roots: webpki_roots::TLS_SERVER_ROOTS.iter().cloned().collect(),
            server_name: None,
        }
    }

    /// Only the CA certificates of `pem` as roots (a private broker, a test certificate).
    ///
    /// # Errors
    ///
    /// [`TlsOptionsError`] when the PEM does not parse, holds no certificate, or one is not
    /// usable as a root.
    pub fn only_ca_pem(pem: &[u8]) -> Result<Self, TlsOptionsError> {
        TlsOptions {
            roots: rustls::RootCertStore::empty(),
            server_name: None,
        }
        .with_ca_pem(pem)
    }

    /// The rustls client configuration of these options: [`crate::tls_crypto`]'s provider, TLS
    /// 1.3 and 1.2, these roots, no client certificate. What the device client dials with.
    ///
    /// # Errors
    ///
    /// rustls's refusal of the configuration.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
        let config =
            rustls::ClientConfig::builder_with_provider(Arc::new(crate::tls_crypto::provider()))
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
                .with_root_certificates(self.roots.clone())
                .with_no_client_auth();
        Ok(Arc::new(config))
    }

    /// These roots plus the CA certificates of `pem`.
    ///
    /// # Errors
    ///
    /// As [`only_ca_pem`](Self::only_ca_pem).
    pub fn with_ca_pem(mut self, pem: &[u8]) -> Result<Self, TlsOptionsError> {
        let mut reader = pem;
        let certificates = rustls_pemfile::certs(&mut reader)
            .collect::<Result<Vec<_>, _>>()
            .map_err(TlsOptionsError::Pem)?;
        if certificates.is_empty() {
            return Err(TlsOptionsError::NoCertificate);
        }
        for certificate in certificates {
            self.roots
                .add(certificate)
                .map_err(TlsOptionsError::Rejected)?;
        }
        Ok(self)
    }

    /// Checks the server's certificate against `name` instead of the host.
    pub fn with_server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }
}

/// Everything [`Client::connect`](super::Client::connect) needs.
///
/// Built with [`new`](Self::new) (any host and port, plain TCP) or one of the platform
/// constructors; every other field has a documented default and can be changed in place.
///
/// The platform's endpoints (SPEC §6):
///
/// | instance | host | port |
/// |---|---|---|
/// | legacy public instance | `${productKey}.iot-as-mqtt.${regionId}.aliyuncs.com` ([`legacy_endpoint_host`]) | 1883, TCP or TLS |
/// | new instance | `${instanceId}.mqtt.iothub.aliyuncs.com` ([`instance_endpoint_host`]) | 1883, TCP or TLS; TLS also on 443 |
///
/// ```
/// use aliot_auth::{DeviceIdentity, DeviceSecret};
/// use aliot_io::client::{ClientOptions, Login, TlsOptions, PLATFORM_TLS_PORT};
/// use std::time::Duration;
///
/// let identity = DeviceIdentity::new("a1TestPK001", "dev-001");
/// let secret = DeviceSecret::new("0123456789abcdef0123456789abcdef");
///
/// // The platform, over TLS with Mozilla's roots.
/// let platform = ClientOptions::legacy_platform("cn-shanghai", identity.clone(), secret.clone());
/// assert_eq!(platform.host, "a1TestPK001.iot-as-mqtt.cn-shanghai.aliyuncs.com");
/// assert_eq!(platform.port, 1883);
/// assert!(platform.tls.is_some());
///
/// // A new instance on 443.
/// let mut instance = ClientOptions::platform_instance("iot-06z00abc", identity.clone(), secret.clone());
/// instance.port = PLATFORM_TLS_PORT;
///
/// // The local broker over plain TCP, keeping the session across reconnects.
/// let mut local = ClientOptions::new("127.0.0.1", 1883, Login::device(identity, secret));
/// local.clean_session = false;
/// local.keep_alive_secs = 30;
/// local.backoff.max = Duration::from_secs(10);
/// assert!(local.tls.is_none());
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientOptions {
    /// Host name or IP address of the broker.
    pub host: String,
    /// Its MQTT port.
    pub port: u16,
    /// TLS, or plain TCP when `None`.
    pub tls: Option<TlsOptions>,
    /// TLS-PSK instead of certificate TLS (the platform's "TCP plus symmetric encryption"):
    /// TLS 1.2 with `TLS_PSK_WITH_AES_128_CBC_SHA`, the identity and key derived from a
    /// [`Login::Device`]'s secret, no certificate; the CONNECT is signed `securemode=2`. Needs
    /// the cargo feature `openssl`. See [`with_tls_psk`](Self::with_tls_psk). Default `false`.
    pub tls_psk: bool,
    /// MQTT over WebSocket at this request path (e.g. `/mqtt`; `ws://`, or `wss://` with
    /// [`tls`](Self::tls)), or MQTT straight over the stream when `None` (the default). See
    /// [`with_websocket`](Self::with_websocket).
    pub websocket: Option<String>,
    /// How the client logs in.
    pub login: Login,
    /// MQTT 3.1.1 (default) or 3.1.
    pub protocol: ProtocolVersion,
    /// cleanSession of the CONNECT. Default `true`: the client re-subscribes by itself after
    /// a reconnect. `false`: the broker keeps subscriptions and QoS 1 messages while the
    /// device is away.
    pub clean_session: bool,
    /// Keepalive in seconds (the platform accepts 30 to 1,200). Default
    /// [`DEFAULT_KEEP_ALIVE_SECS`].
    pub keep_alive_secs: u16,
    /// How long the TCP connect and TLS handshake may take, and then the wait for CONNACK.
    /// Default [`DEFAULT_CONNECT_TIMEOUT`].
    pub connect_timeout: Duration,
    /// How long to wait for an answer to PINGREQ. Default [`DEFAULT_PING_TIMEOUT`].
    pub ping_timeout: Duration,
    /// QoS 1 PUBLISH, SUBSCRIBE and UNSUBSCRIBE awaiting acknowledgement at once. Default
    /// [`DEFAULT_MAX_IN_FLIGHT`].
    pub max_in_flight: usize,
    /// Commands waiting to be sent (while offline or behind a full window) before further
    /// ones are refused. Default [`DEFAULT_MAX_QUEUED`].
    pub max_queued: usize,
    /// Largest packet sent or accepted. Default [`DEFAULT_MAX_PACKET_SIZE`] (256 KiB).
    pub max_packet_size: usize,
    /// What becomes of unacknowledged QoS 1 PUBLISHes when the session is not resumed.
    /// Default: sent again.
    pub session_lost: SessionLostPolicy,
    /// RRPC requests awaiting their answer at once. Default [`DEFAULT_MAX_PENDING_RRPC`].
    pub max_pending_rrpc: usize,
    /// Delays between reconnect attempts. Default [`Backoff::default`]: 1 s doubling to 60 s,
    /// equal jitter.
    pub backoff: Backoff,
    /// Received messages waiting for [`Messages::recv`](super::Messages::recv); while full,
    /// the client stops reading from the broker (past the ping timeout it then takes the
    /// connection for dead and makes a new one). Default [`DEFAULT_MESSAGE_CAPACITY`].
    pub message_capacity: usize,
    /// Whether a device login ([`Login::Device`]) announces in its client id, as the C SDK
    /// 4.x and the Python SDK do, `_ss=1` (the broker delivers the device's system downlinks
    /// without SUBSCRIBE: replies, property sets, service calls, shadow, OTA, NTP) and
    /// `ext=1` (synchronous service calls come as
    /// `/ext/rrpc/{id}/sys/{pk}/{dn}/thing/service/{identifier}`). Default `true`; the
    /// thing-model helpers ([`Client::post_properties`](super::Client::post_properties), …)
    /// need it, or the matching SUBSCRIBEs. [`Login::Credentials`] are sent as given.
    pub announce_features: bool,
    /// How long a service request ([`Client::post_properties`](super::Client::post_properties),
    /// [`ntp_sync`](super::Client::ntp_sync), the shadow's…) waits for the platform's reply.
    /// Default [`DEFAULT_REPLY_TIMEOUT`](super::DEFAULT_REPLY_TIMEOUT) (10 s).
    pub reply_timeout: Duration,
}

impl ClientOptions {
    /// Connects to `host:port` over plain TCP with this login and every default.
    pub fn new(host: impl Into<String>, port: u16, login: Login) -> Self {
        ClientOptions {
            host: host.into(),
            port,
            tls: None,
            websocket: None,
            tls_psk: false,
            login,
            protocol: ProtocolVersion::V3_1_1,
            clean_session: true,
            keep_alive_secs: DEFAULT_KEEP_ALIVE_SECS,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            ping_timeout: DEFAULT_PING_TIMEOUT,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_queued: DEFAULT_MAX_QUEUED,
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            session_lost: SessionLostPolicy::ResendAsNew,
            max_pending_rrpc: DEFAULT_MAX_PENDING_RRPC,
            backoff: Backoff::default(),
            message_capacity: DEFAULT_MESSAGE_CAPACITY,
            announce_features: true,
            reply_timeout: super::things::DEFAULT_REPLY_TIMEOUT,
        }
    }

    /// A device on the platform's legacy public instance of `region_id` (e.g. `cn-shanghai`):
    /// [`legacy_endpoint_host`], port 1883, TLS with Mozilla's roots.
    pub fn legacy_platform(
        region_id: &str,
        identity: DeviceIdentity,
        secret: DeviceSecret,
    ) -> Self {
        let host = legacy_endpoint_host(&identity.product_key, region_id);
        Self::new(host, PLATFORM_PORT, Login::device(identity, secret)).with_tls(TlsOptions::new())
    }

    /// A device on the platform instance `instance_id`: [`instance_endpoint_host`], port
    /// 1883 (set [`PLATFORM_TLS_PORT`] for 443), TLS with Mozilla's roots.
    pub fn platform_instance(
        instance_id: &str,
        identity: DeviceIdentity,
        secret: DeviceSecret,
    ) -> Self {
        let host = instance_endpoint_host(instance_id);
        Self::new(host, PLATFORM_PORT, Login::device(identity, secret)).with_tls(TlsOptions::new())
    }

    /// The same options over TLS.
    pub fn with_tls(mut self, tls: TlsOptions) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The same options over TLS-PSK (see [`tls_psk`](Self::tls_psk)), e.g. to a broker
    /// listener with `psk = true`; any [`tls`](Self::tls) is not used.
    pub fn with_tls_psk(mut self) -> Self {
        self.tls_psk = true;
        self
    }

    /// The same options over WebSocket: the HTTP upgrade at `path` (`/mqtt` on aliot's
    /// WebSocket listeners unless configured otherwise) with the subprotocol `mqtt`, then
    /// MQTT in binary messages; `wss://` when TLS is set too.
    ///
    /// ```
    /// use aliot_auth::{DeviceIdentity, DeviceSecret};
    /// use aliot_io::client::{ClientOptions, Login};
    ///
    /// let identity = DeviceIdentity::new("a1TestPK001", "dev-001");
    /// let secret = DeviceSecret::new("0123456789abcdef0123456789abcdef");
    /// // ws://127.0.0.1:8083/mqtt
    /// let options = ClientOptions::new("127.0.0.1", 8083, Login::device(identity, secret))
    ///     .with_websocket("/mqtt");
    /// assert_eq!(options.websocket.as_deref(), Some("/mqtt"));
    /// ```
    pub fn with_websocket(mut self, path: impl Into<String>) -> Self {
        self.websocket = Some(path.into());
        self
    }

    /// The sans-IO configuration for these options, with these credentials.
    pub(crate) fn client_config(&self, credentials: Credentials) -> ClientConfig {
        let mut config = ClientConfig::new(credentials);
        config.identity = self.login.identity().cloned();
        config.protocol = self.protocol;
        config.clean_session = self.clean_session;
        config.keep_alive_secs = self.keep_alive_secs;
        config.ping_timeout = self.ping_timeout;
        config.connect_timeout = self.connect_timeout;
        config.max_in_flight = self.max_in_flight;
        config.max_queued = self.max_queued;
        config.max_packet_size = self.max_packet_size;
        config.session_lost = self.session_lost;
        config.max_pending_rrpc = self.max_pending_rrpc;
        config
    }
}
