//! Dynamic registration ("one product, one secret", PLATFORM-PROTOCOLS §2): a device proves it
//! belongs to a product with the product's secret and is given its own credentials.
//!
//! Over MQTT the client id's `authType` says which way: `register` (a device registered
//! beforehand gets its DeviceSecret), `regnwl` (a device not registered beforehand is created
//! and gets a token) and `connwl` (the token login that follows `regnwl`: the password is the
//! token itself). Over HTTP the same proof comes in a form. Both sign
//! `deviceName${dn}productKey${pk}random${random}` with the product secret.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::str::FromStr;

use subtle::ConstantTimeEq;
use thiserror::Error;

use crate::client_id::{ClientId, ClientIdError, SignMethod};
use crate::identity::DeviceIdentity;
use crate::sign::{decode_hex_into, hmac_digest, sign_content};
use crate::verify::{AuthError, ConnectFields};

/// The client id key that says how a device authenticates (`authType`).
pub const AUTH_TYPE_KEY: &str = "authType";
/// The client id key of a registration's random text (`random`), part of what is signed.
pub const RANDOM_KEY: &str = "random";

/// How a CONNECT authenticates, from the client id's `authType` (none: the device secret's
/// signature).
///
/// ```
/// use aliot_auth::{AuthType, ClientId};
///
/// let client_id = ClientId::parse("dev-001.a1TestPK001|random=ab12,authType=register,securemode=2,signmethod=hmacsha256|")?;
/// assert_eq!(client_id.auth_type()?, Some(AuthType::Register));
/// assert_eq!("connwl".parse::<AuthType>()?, AuthType::TokenLogin);
/// # Ok::<(), aliot_auth::ClientIdError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthType {
    /// `register`: a device registered beforehand asks for its DeviceSecret.
    Register,
    /// `regnwl`: a device not registered beforehand is created and asks for a token.
    RegisterWithoutPreRegistration,
    /// `connwl`: a device created by `regnwl` logs in with its token as the password.
    TokenLogin,
}

impl AuthType {
    /// The value in the client id.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::RegisterWithoutPreRegistration => "regnwl",
            Self::TokenLogin => "connwl",
        }
    }
}

impl fmt::Display for AuthType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AuthType {
    type Err = ClientIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        [
            Self::Register,
            Self::RegisterWithoutPreRegistration,
            Self::TokenLogin,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == text)
        .ok_or_else(|| ClientIdError::UnknownAuthType(text.into()))
    }
}

impl ClientId {
    /// The client id's `authType`, if it has one.
    pub fn auth_type(&self) -> Result<Option<AuthType>, ClientIdError> {
        self.param(AUTH_TYPE_KEY).map(str::parse).transpose()
    }
}

/// Which registration a device asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegistrationKind {
    /// The device was registered beforehand; it gets its DeviceSecret (`/ext/register`).
    PreRegistered,
    /// The device is created if it does not exist; it gets a token (`/ext/regnwl`).
    WithoutPreRegistration,
}

/// A device's request to be registered, with its proof: the HMAC with its product's secret of
/// `deviceName${dn}productKey${pk}random${random}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrationRequest {
    /// The device.
    pub identity: DeviceIdentity,
    /// Which registration.
    pub kind: RegistrationKind,
    /// The client id's id part (over MQTT), or empty (over HTTP).
    pub client_id: String,
    /// The device's random text, part of what is signed.
    pub random: String,
    /// The HMAC the proof is made with.
    pub sign_method: SignMethod,
    /// The proof, decoded from hex.
    sign: Vec<u8>,
}

impl RegistrationRequest {
    /// A request from its parts; `sign` is the proof in hex, either case.
    ///
    /// ```
    /// use aliot_auth::{DeviceIdentity, RegistrationKind, RegistrationRequest, SignMethod, registration_sign};
    ///
    /// let identity = DeviceIdentity::new("a1DynReg0001", "factory-17");
    /// let sign = registration_sign(b"product-secret", &identity, "8Kq3", SignMethod::HmacSha256);
    /// let request = RegistrationRequest::new(identity, RegistrationKind::PreRegistered, "8Kq3", SignMethod::HmacSha256, &sign)?;
    /// assert!(request.sign_matches(b"product-secret"));
    /// assert!(!request.sign_matches(b"another secret"));
    /// # Ok::<(), aliot_auth::AuthError>(())
    /// ```
    pub fn new(
        identity: DeviceIdentity,
        kind: RegistrationKind,
        random: &str,
        sign_method: SignMethod,
        sign: &str,
    ) -> Result<Self, AuthError> {
        if random.is_empty() {
            return Err(AuthError::MissingRandom);
        }
        let sign = decode_sign(sign.as_bytes(), sign_method)?;
        Ok(RegistrationRequest {
            identity,
            kind,
            client_id: String::new(),
            random: random.into(),
            sign_method,
            sign,
        })
    }

    /// The request a CONNECT makes, if its client id's `authType` is `register` or `regnwl`
    /// (`None` for any other CONNECT): the username names the device, the password is the
    /// proof in hex, the client id's `random` and `signmethod` (default `hmacmd5`, as for
    /// every signature of the platform) what it was made with.
    pub fn from_connect(fields: &ConnectFields<'_>) -> Result<Option<Self>, AuthError> {
        let client_id = ClientId::parse(fields.client_id)?;
        let kind = match client_id.auth_type()? {
            Some(AuthType::Register) => RegistrationKind::PreRegistered,
            Some(AuthType::RegisterWithoutPreRegistration) => {
                RegistrationKind::WithoutPreRegistration
            }
            Some(AuthType::TokenLogin) | None => return Ok(None),
        };
        let username = fields.username.ok_or(AuthError::MissingUsername)?;
        let identity = DeviceIdentity::from_username(username)?;
        let password = fields.password.ok_or(AuthError::MissingPassword)?;
        let random = client_id.param(RANDOM_KEY).unwrap_or_default();
        let sign_method = client_id.sign_method.unwrap_or_default();
        if random.is_empty() {
            return Err(AuthError::MissingRandom);
        }
        let sign = decode_sign(password, sign_method)?;
        Ok(Some(RegistrationRequest {
            identity,
            kind,
            random: random.into(),
            client_id: client_id.id,
            sign_method,
            sign,
        }))
    }

    /// Whether the proof is the product secret's, compared in constant time.
    pub fn sign_matches(&self, product_secret: &[u8]) -> bool {
        let content = registration_content(&self.identity, &self.random);
        let expected = hmac_digest(self.sign_method, product_secret, content.as_bytes());
        bool::from(expected.as_slice().ct_eq(&self.sign))
    }
}

/// The proof a device sends to register: the lowercase hex HMAC (`method`) with its product's
/// secret of `deviceName${dn}productKey${pk}random${random}`.
pub fn registration_sign(
    product_secret: &[u8],
    identity: &DeviceIdentity,
    random: &str,
    method: SignMethod,
) -> String {
    sign_content(
        method,
        product_secret,
        &registration_content(identity, random),
    )
}

fn registration_content(identity: &DeviceIdentity, random: &str) -> String {
    let mut content = String::from("deviceName");
    content.push_str(&identity.device_name);
    content.push_str("productKey");
    content.push_str(&identity.product_key);
    content.push_str("random");
    content.push_str(random);
    content
}

/// A proof in hex, either case, of the digest length of `method`.
fn decode_sign(text: &[u8], method: SignMethod) -> Result<Vec<u8>, AuthError> {
    if !text.iter().all(u8::is_ascii_hexdigit) {
        return Err(AuthError::PasswordNotHex);
    }
    let mut sign = vec![0; method.digest_len()];
    decode_hex_into(text, &mut sign).ok_or(AuthError::PasswordWrongLength {
        method,
        expected: method.digest_len() * 2,
        found: text.len(),
    })?;
    Ok(sign)
}

/// Why a registration was refused, with the platform's error code (over HTTP the answer names
/// it; over MQTT the device gets CONNACK 5, or 3 for [`Throttled`](Self::Throttled) and
/// [`Unavailable`](Self::Unavailable)).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum RegistrationRefused {
    /// No such product, or dynamic registration is off for it.
    #[error(
        "iot.auth.ProductNotSupportDynamicRegister: product {0} does not allow dynamic registration"
    )]
    NotAllowed(String),
    /// The proof is not the product secret's.
    #[error("iot.auth.SignCheckError: the sign does not match")]
    BadSign,
    /// The device is not registered (`register` needs pre-registration).
    #[error("iot.device.NotExistedDevice: device {0} is not registered")]
    NoDevice(DeviceIdentity),
    /// The device is activated (or disabled): `ResetThing` first.
    #[error("iot.device.AlreadyActivated: device {0} is activated; reset it to register it again")]
    Activated(DeviceIdentity),
    /// A device name the registry cannot take (`regnwl` creates the device).
    #[error("iot.common.InvalidFormattedParameter: {0}")]
    InvalidDeviceName(String),
    /// Too many attempts for the product.
    #[error("iot.common.Throttling: too many registration attempts for product {0}; try later")]
    Throttled(String),
    /// Registration over MQTT needs TLS, as on the platform: the answer is a secret.
    #[error("iot.auth.TlsRequired: dynamic registration over MQTT needs TLS (securemode=2)")]
    NeedsTls,
    /// The broker has no registry to register devices in.
    #[error("iot.common.ServiceUnavailable: this broker has no registry to register devices in")]
    Unavailable,
}

impl RegistrationRefused {
    /// The platform's error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotAllowed(_) => "iot.auth.ProductNotSupportDynamicRegister",
            Self::BadSign => "iot.auth.SignCheckError",
            Self::NoDevice(_) => "iot.device.NotExistedDevice",
            Self::Activated(_) => "iot.device.AlreadyActivated",
            Self::InvalidDeviceName(_) => "iot.common.InvalidFormattedParameter",
            Self::Throttled(_) => "iot.common.Throttling",
            Self::NeedsTls => "iot.auth.TlsRequired",
            Self::Unavailable => "iot.common.ServiceUnavailable",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(client_id: &'a str, password: &'a str) -> ConnectFields<'a> {
        ConnectFields {
            client_id,
            username: Some("factory-17&a1DynReg0001"),
            password: Some(password.as_bytes()),
        }
    }

    #[test]
    fn the_python_sdks_register_connect_is_read_and_its_sign_checked() {
        let identity = DeviceIdentity::new("a1DynReg0001", "factory-17");
        let sign = registration_sign(b"ps", &identity, "Rnd15charsXXXXX", SignMethod::HmacSha256);
        let client_id = "factory-17.a1DynReg0001|random=Rnd15charsXXXXX,authType=register,securemode=2,signmethod=hmacsha256|";
        let request = RegistrationRequest::from_connect(&fields(client_id, &sign))
            .unwrap()
            .unwrap();
        assert_eq!(request.identity, identity);
        assert_eq!(request.kind, RegistrationKind::PreRegistered);
        assert_eq!(request.client_id, "factory-17.a1DynReg0001");
        assert!(request.sign_matches(b"ps"));
        assert!(!request.sign_matches(b"pt"));
        // The C SDK's uppercase hex is the same proof.
        let upper = sign.to_ascii_uppercase();
        let request = RegistrationRequest::from_connect(&fields(client_id, &upper))
            .unwrap()
            .unwrap();
        assert!(request.sign_matches(b"ps"));
    }

    #[test]
    fn other_connects_are_not_registrations_and_bad_ones_are_refused() {
        let plain = "dev|securemode=2,signmethod=hmacsha1|";
        assert_eq!(
            RegistrationRequest::from_connect(&fields(plain, "00")),
            Ok(None)
        );
        let token = "a1.dev|authType=connwl,securemode=-2,_ss=1|";
        assert_eq!(
            RegistrationRequest::from_connect(&fields(token, "tok")),
            Ok(None)
        );
        let no_random = "dev|authType=regnwl,securemode=-2,signmethod=hmacsha256|";
        assert_eq!(
            RegistrationRequest::from_connect(&fields(no_random, &"0".repeat(64))),
            Err(AuthError::MissingRandom)
        );
        let unknown = "dev|authType=certificate|";
        assert_eq!(
            RegistrationRequest::from_connect(&fields(unknown, "00")),
            Err(AuthError::ClientId(ClientIdError::UnknownAuthType(
                "certificate".into()
            )))
        );
        let short = "dev|random=1,authType=register,signmethod=hmacsha256|";
        assert!(matches!(
            RegistrationRequest::from_connect(&fields(short, "abcd")),
            Err(AuthError::PasswordWrongLength { .. })
        ));
    }
}
