//! Who is connecting: turning a CONNECT into an identity and an ACL, or a refusal.
//!
//! The broker asks an [`Authenticator`] once per connection. [`PlatformAuthenticator`] implements
//! the platform's scheme (SPEC §2) over any [`DeviceRegistry`], with the optional open mode of
//! SPEC §1; another scheme (ID², a certificate per device) is another implementation.

use alloc::string::String;
use alloc::sync::Arc;
use core::fmt;

use aliot_auth::{
    AuthError, ConnectFields, DeviceIdentity, DeviceRegistry, PskIdentity, PskKey, RefusalCode,
    RegistrationRefused, VerifyOptions,
};
use aliot_topic::Acl;

use crate::codec::{Connect, ConnectReturnCode};

/// The key a session is kept under: the same key on a later CONNECT takes the session over.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClientKey {
    /// A platform device (productKey + deviceName), authenticated by its signature.
    Device(DeviceIdentity),
    /// A generic MQTT client admitted by open mode, known by its client id.
    Client(String),
    /// A client of open mode that sent an empty client id with cleanSession=1: its session is
    /// its own and is never taken over or resumed.
    Anonymous,
}

impl ClientKey {
    /// The platform device behind this key, if it is one.
    pub fn device(&self) -> Option<&DeviceIdentity> {
        match self {
            ClientKey::Device(identity) => Some(identity),
            _ => None,
        }
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientKey::Device(identity) => write!(f, "device {identity}"),
            ClientKey::Client(id) => write!(f, "client {id:?}"),
            ClientKey::Anonymous => f.write_str("anonymous client"),
        }
    }
}

/// What an accepted CONNECT proved: whose session it is and what it may touch.
#[derive(Clone, Debug)]
pub struct Authenticated {
    /// The session key.
    pub key: ClientKey,
    /// The topics this connection may publish to and subscribe to.
    pub acl: Acl,
    /// What the client id's extension asks of the platform (`_ss`, `ext`).
    pub features: ClientFeatures,
    /// The platform's id of the device (`iotId`), if the registry gives one.
    pub iot_id: Option<String>,
}

/// What a platform client asks for in its client id's extension, beyond authentication
/// (PLATFORM-PROTOCOLS §0.1). A generic MQTT client asks for none of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientFeatures {
    /// `_ss=1`: system downlinks and replies arrive without a SUBSCRIBE (automatic
    /// subscription); an UNSUBSCRIBE of a filter that matches them stops them.
    pub auto_subscribe: bool,
    /// `ext` bit 0: synchronous calls come in the `/ext/rrpc/{id}/{topic}` form.
    pub rrpc_ext: bool,
}

/// Facts about the connection that are not in the CONNECT packet, supplied by the adapter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthContext {
    /// Wall-clock time in milliseconds since the Unix epoch when the connection was accepted,
    /// for the optional timestamp skew check; `None` when the caller has no wall clock.
    pub wall_clock_ms: Option<u64>,
    /// Whether the transport is TLS.
    pub tls: bool,
    /// The client's address, as the transport sees it (the `clientIp` of its status
    /// messages); `None` when the caller does not know it.
    pub client_ip: Option<core::net::IpAddr>,
    /// The device a TLS-PSK handshake named and proved ([`Authenticator::psk_key`]): the
    /// CONNECT on top must be that device's own, or it is refused. `None` on other
    /// transports.
    pub psk_device: Option<Arc<DeviceIdentity>>,
}

/// Why a CONNECT was refused: the CONNACK code the device gets, and the reason for the log.
#[derive(Debug)]
pub struct Refusal {
    /// The CONNACK return code sent before closing.
    pub code: ConnectReturnCode,
    /// What was wrong.
    pub reason: RefusalReason,
}

/// What was wrong with a refused CONNECT.
#[derive(Debug, thiserror::Error)]
pub enum RefusalReason {
    /// The credentials did not verify.
    #[error("authentication failed: {0}")]
    Auth(AuthError),
    /// The protocol name or level is not MQTT 3.1 or 3.1.1.
    #[error("unsupported protocol name or level")]
    UnsupportedProtocol,
    /// The CONNECT carried a will, which the profile does not support.
    #[error("will messages are not supported")]
    WillNotSupported,
    /// The keepalive is below the profile's minimum of 30 s (0 included).
    #[error("keepalive {0} s is outside 30..=1200 s")]
    KeepAliveOutOfRange(u16),
    /// cleanSession=0 needs a client id to keep the session under.
    #[error("an empty client id needs cleanSession=1")]
    EmptyClientIdWithSession,
    /// A dynamic registration was refused.
    #[error("dynamic registration refused: {0}")]
    Registration(RegistrationRefused),
    /// The CONNECT on a TLS-PSK connection is not of the device the handshake named.
    #[error("the CONNECT is not of {0}, whose pre-shared key the TLS handshake used")]
    NotThePskDevice(Arc<DeviceIdentity>),
    /// This node of a cluster cannot reach the others, and takes no new connections meanwhile
    /// (the device should try another node).
    #[error("this node cannot reach its cluster: try another node")]
    ClusterUnreachable,
}

impl Refusal {
    fn new(code: ConnectReturnCode, reason: RefusalReason) -> Self {
        Refusal { code, reason }
    }

    /// A refused dynamic registration: CONNACK 5, or 3 when the broker cannot register
    /// anyone or the product's attempts come too fast (the device should try later).
    ///
    /// ```
    /// use aliot_auth::RegistrationRefused;
    /// use aliot_core::Refusal;
    ///
    /// assert_eq!(Refusal::registration(RegistrationRefused::BadSign).code.to_u8(), 5);
    /// assert_eq!(Refusal::registration(RegistrationRefused::Throttled("a1PK".into())).code.to_u8(), 3);
    /// ```
    pub fn registration(refused: RegistrationRefused) -> Self {
        let code = match refused {
            RegistrationRefused::Throttled(_) | RegistrationRefused::Unavailable => {
                ConnectReturnCode::ServerUnavailable
            }
            _ => ConnectReturnCode::NotAuthorized,
        };
        Refusal::new(code, RefusalReason::Registration(refused))
    }
}

/// Decides who a CONNECT is. Called once per connection, from the connection's own task.
pub trait Authenticator {
    /// Accepts the CONNECT with an identity and ACL, or refuses it with a CONNACK code.
    fn authenticate(
        &self,
        connect: &Connect,
        context: &AuthContext,
    ) -> Result<Authenticated, Refusal>;

    /// Whether `device` is registered, for server-side calls that name a device (RRPC,
    /// publishing to it), so that an unknown device is told apart from an offline one.
    /// `None` when this authenticator cannot tell (the default).
    fn knows_device(&self, device: &DeviceIdentity) -> Option<bool> {
        let _ = device;
        None
    }

    /// The TLS-PSK key of the device a PSK identity names (PLATFORM-PROTOCOLS §7), for the
    /// handshake of a PSK listener: `None` refuses the handshake (an identity that is not the
    /// platform's, an unknown device, or an authenticator without secrets; the default).
    fn psk_key(&self, identity: &PskIdentity) -> Option<PskKey> {
        let _ = identity;
        None
    }

    /// The ACL a session kept under `key` has now, for a session restored after a restart
    /// (its device has not connected yet). The default allows nothing: until the device
    /// connects again, nothing is sent to it that its ACL would be asked about.
    fn session_acl(&self, key: &ClientKey) -> Acl {
        let _ = key;
        Acl::deny_all()
    }
}

/// The platform's authentication (SPEC §2) over a device registry, with optional open mode.
///
/// In open mode (SPEC §1, for local development and generic MQTT tools) a CONNECT whose client id
/// has no `|` extension is admitted as a generic client with an ACL that allows every topic; a
/// CONNECT in the platform's form is still verified, so a device with platform credentials gets
/// its own identity and ACL, and wrong credentials are still refused.
#[derive(Clone, Debug)]
pub struct PlatformAuthenticator<R> {
    registry: R,
    open: bool,
    max_timestamp_skew_ms: Option<u64>,
}

impl<R: DeviceRegistry> PlatformAuthenticator<R> {
    /// Platform authentication only (open mode off), no timestamp skew check.
    pub fn new(registry: R) -> Self {
        PlatformAuthenticator {
            registry,
            open: false,
            max_timestamp_skew_ms: None,
        }
    }

    /// Turns open mode on or off.
    pub fn with_open_mode(mut self, open: bool) -> Self {
        self.open = open;
        self
    }

    /// Refuses signatures whose `timestamp` is further than this from the wall clock
    /// (off by default, as on the platform). Needs [`AuthContext::wall_clock_ms`].
    pub fn with_max_timestamp_skew_ms(mut self, skew: Option<u64>) -> Self {
        self.max_timestamp_skew_ms = skew;
        self
    }

    /// The registry devices are looked up in.
    pub fn registry(&self) -> &R {
        &self.registry
    }
}

impl<R: DeviceRegistry> Authenticator for PlatformAuthenticator<R> {
    fn psk_key(&self, identity: &PskIdentity) -> Option<PskKey> {
        let device = &identity.device;
        self.registry
            .lookup(&device.product_key, &device.device_name)
            .map(|record| identity.key(&record.secret))
    }

    fn knows_device(&self, device: &DeviceIdentity) -> Option<bool> {
        Some(
            self.registry
                .lookup(&device.product_key, &device.device_name)
                .is_some(),
        )
    }

    /// A device's ACL by its product's categories (none for a device no longer registered);
    /// a generic client's is open in open mode.
    fn session_acl(&self, key: &ClientKey) -> Acl {
        match key {
            ClientKey::Device(device) => self
                .registry
                .lookup(&device.product_key, &device.device_name)
                .map_or_else(Acl::deny_all, |record| {
                    Acl::for_device(&device.product_key, &device.device_name, &record.categories)
                }),
            ClientKey::Client(_) if self.open => Acl::open(),
            ClientKey::Client(_) | ClientKey::Anonymous => Acl::deny_all(),
        }
    }

    fn authenticate(
        &self,
        connect: &Connect,
        context: &AuthContext,
    ) -> Result<Authenticated, Refusal> {
        let client_id = connect.client_id.as_str();
        if self.open && !client_id.contains('|') {
            let key = if client_id.is_empty() {
                ClientKey::Anonymous
            } else {
                ClientKey::Client(String::from(client_id))
            };
            return Ok(Authenticated {
                key,
                acl: Acl::open(),
                features: ClientFeatures::default(),
                iot_id: None,
            });
        }
        let fields = ConnectFields {
            client_id,
            username: connect.username.as_ref().map(|u| u.as_str()),
            password: connect.password.as_deref(),
        };
        let options = VerifyOptions {
            max_timestamp_skew_ms: self.max_timestamp_skew_ms,
            now_ms: context.wall_clock_ms,
        };
        match aliot_auth::verify(&fields, &self.registry, &options) {
            Ok(verified) => {
                let acl = Acl::for_device(
                    &verified.identity.product_key,
                    &verified.identity.device_name,
                    &verified.categories,
                );
                let features = ClientFeatures {
                    auto_subscribe: verified.client_id.auto_subscribe(),
                    rrpc_ext: verified.client_id.rrpc_ext(),
                };
                Ok(Authenticated {
                    key: ClientKey::Device(verified.identity),
                    acl,
                    features,
                    iot_id: verified.iot_id,
                })
            }
            Err(error) => Err(auth_refusal(error)),
        }
    }
}

/// The refusal of a CONNECT whose credentials did not verify.
pub(crate) fn auth_refusal(error: AuthError) -> Refusal {
    Refusal::new(
        refusal_code(error.connack_code()),
        RefusalReason::Auth(error),
    )
}

/// The CONNACK code for an authentication refusal.
pub(crate) fn refusal_code(code: RefusalCode) -> ConnectReturnCode {
    match code {
        RefusalCode::IdentifierRejected => ConnectReturnCode::IdentifierRejected,
        RefusalCode::BadUserNameOrPassword => ConnectReturnCode::BadUserNameOrPassword,
        RefusalCode::NotAuthorized => ConnectReturnCode::NotAuthorized,
        RefusalCode::ServerUnavailable => ConnectReturnCode::ServerUnavailable,
    }
}

/// A refusal for a profile rule checked before authentication.
pub(crate) fn profile_refusal(code: ConnectReturnCode, reason: RefusalReason) -> Refusal {
    Refusal::new(code, reason)
}
