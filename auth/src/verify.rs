//! Verifying a CONNECT on the broker side, and why one is refused.

use alloc::string::String;
use alloc::sync::Arc;
use core::hint::black_box;

use aliot_topic::ProductCategories;
use subtle::ConstantTimeEq;
use thiserror::Error;

use crate::SignMethod;
use crate::client_id::{ClientId, ClientIdError};
use crate::identity::DeviceIdentity;
use crate::registration::AuthType;
use crate::registry::DeviceRegistry;
use crate::sign::{content, decode_hex_into, hmac_digest};

/// Timestamps below this many units are read as seconds, the rest as milliseconds.
///
/// 10¹¹ milliseconds is March 1973 and 10¹¹ seconds is the year 5138, so a real clock's
/// reading in either unit falls on its own side (the Python SDK sends seconds, the others
/// milliseconds).
pub const SECONDS_TIMESTAMP_BELOW: u64 = 100_000_000_000;

/// The CONNECT return codes a refused device gets (MQTT 3.1.1 §3.2.2.3).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalCode {
    /// 2: the client id or its extension is malformed or not supported.
    IdentifierRejected = 2,
    /// 3: the broker cannot authenticate anyone as configured (not the device's fault).
    ServerUnavailable = 3,
    /// 4: the username or password is missing or malformed.
    BadUserNameOrPassword = 4,
    /// 5: unknown device, wrong signature, or a timestamp outside the allowed skew.
    NotAuthorized = 5,
}

impl RefusalCode {
    /// The CONNACK return code byte.
    pub const fn code(self) -> u8 {
        self as u8
    }
}

/// Why a CONNECT was refused; [`AuthError::connack_code`] says what the device is told.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum AuthError {
    /// The client id is not a platform client id (CONNACK 2).
    #[error("client id refused: {0}")]
    ClientId(#[from] ClientIdError),
    /// The CONNECT has no username (CONNACK 4).
    #[error("the CONNECT has no username; expected `deviceName&productKey`")]
    MissingUsername,
    /// The username has no `&` between device name and product key (CONNACK 4).
    #[error("username `{0}` has no `&`; expected `deviceName&productKey`")]
    UsernameWithoutSeparator(String),
    /// The username has more than one `&`, so which part is which is ambiguous (CONNACK 4).
    #[error("username `{0}` has more than one `&`; expected `deviceName&productKey`")]
    UsernameWithSeveralSeparators(String),
    /// Nothing before the username's `&` (CONNACK 4).
    #[error("the username's device name (before `&`) is empty")]
    EmptyDeviceName,
    /// Nothing after the username's `&` (CONNACK 4).
    #[error("the username's product key (after `&`) is empty")]
    EmptyProductKey,
    /// The CONNECT has no password (CONNACK 4).
    #[error("the CONNECT has no password; expected the hex HMAC of the signed content")]
    MissingPassword,
    /// The password is not hex digits (CONNACK 4).
    #[error("the password is not hex digits")]
    PasswordNotHex,
    /// The password does not have the digest length of the sign method (CONNACK 4).
    #[error("the password has {found} characters, but a {method} digest is {expected} hex digits")]
    PasswordWrongLength {
        /// The sign method in effect.
        method: SignMethod,
        /// How many hex digits its digest has.
        expected: usize,
        /// How many bytes the password has.
        found: usize,
    },
    /// The registry has no such device (CONNACK 5).
    #[error("device {0} is not registered")]
    UnknownDevice(DeviceIdentity),
    /// The password is not the HMAC of the content under the device's secret (CONNACK 5).
    #[error("the password of device {0} is not the signature of its CONNECT fields")]
    SignatureMismatch(DeviceIdentity),
    /// The timestamp check is on, and the client id has no timestamp (CONNACK 5).
    #[error("the client id has no timestamp, which this broker requires")]
    MissingTimestamp,
    /// The timestamp check is on, and the timestamp is not a decimal number (CONNACK 2).
    #[error("timestamp `{0}` is not a decimal number of milliseconds or seconds")]
    TimestampNotDecimal(String),
    /// The timestamp is further from the broker's clock than allowed (CONNACK 5).
    #[error(
        "timestamp {timestamp_ms} ms is {} ms away from the broker's clock {now_ms} ms, more than the {max_skew_ms} ms allowed",
        timestamp_ms.abs_diff(*now_ms)
    )]
    TimestampOutOfWindow {
        /// The device's timestamp, in milliseconds.
        timestamp_ms: u64,
        /// The broker's clock, in milliseconds.
        now_ms: u64,
        /// The allowed distance.
        max_skew_ms: u64,
    },
    /// A registration CONNECT (`authType=register` or `regnwl`) without `random` in its client
    /// id (CONNACK 2).
    #[error("the registration's client id has no `random`")]
    MissingRandom,
    /// A registration CONNECT (`authType=register` or `regnwl`) where a login was expected: it
    /// is answered by the registry, not verified as a login (CONNACK 5).
    #[error("authType={0} is a registration, not a login")]
    RegistrationNotLogin(AuthType),
    /// A token login (`authType=connwl`) of a device that has no token (CONNACK 5).
    #[error("device {0} has no token: it was not registered with authType=regnwl")]
    NoToken(DeviceIdentity),
    /// A maximum skew is configured, but no clock reading was passed in (CONNACK 3).
    #[error("a maximum timestamp skew is set but VerifyOptions::now_ms is not")]
    ClockNotGiven,
}

impl AuthError {
    /// The CONNACK return code for this refusal.
    ///
    /// ```
    /// use aliot_auth::{AuthError, ClientIdError, RefusalCode};
    ///
    /// let malformed = AuthError::from(ClientIdError::MissingClosingBar);
    /// assert_eq!(malformed.connack_code(), RefusalCode::IdentifierRejected);
    /// assert_eq!(AuthError::PasswordNotHex.connack_code() as u8, 4);
    /// ```
    pub fn connack_code(&self) -> RefusalCode {
        match self {
            Self::ClientId(_) | Self::TimestampNotDecimal(_) | Self::MissingRandom => {
                RefusalCode::IdentifierRejected
            }
            Self::MissingUsername
            | Self::UsernameWithoutSeparator(_)
            | Self::UsernameWithSeveralSeparators(_)
            | Self::EmptyDeviceName
            | Self::EmptyProductKey
            | Self::MissingPassword
            | Self::PasswordNotHex
            | Self::PasswordWrongLength { .. } => RefusalCode::BadUserNameOrPassword,
            Self::UnknownDevice(_)
            | Self::SignatureMismatch(_)
            | Self::MissingTimestamp
            | Self::TimestampOutOfWindow { .. }
            | Self::RegistrationNotLogin(_)
            | Self::NoToken(_) => RefusalCode::NotAuthorized,
            Self::ClockNotGiven => RefusalCode::ServerUnavailable,
        }
    }
}

/// The fields of a CONNECT the broker verifies.
#[derive(Clone, Copy, Debug)]
pub struct ConnectFields<'a> {
    /// The MQTT client id.
    pub client_id: &'a str,
    /// The MQTT username, if the CONNECT has one.
    pub username: Option<&'a str>,
    /// The MQTT password, if the CONNECT has one.
    pub password: Option<&'a [u8]>,
}

/// How strict verification is. The default checks no timestamp, as the platform.
///
/// Time is passed in, never read: set `now_ms` to the broker's clock (milliseconds since the
/// Unix epoch) for each CONNECT when `max_timestamp_skew_ms` is set.
#[derive(Clone, Copy, Debug, Default)]
pub struct VerifyOptions {
    /// The most a device's timestamp may differ from `now_ms`, either way; `None` turns the
    /// check off. With it on, a client id without timestamp is refused.
    pub max_timestamp_skew_ms: Option<u64>,
    /// The broker's clock, in milliseconds since the Unix epoch.
    pub now_ms: Option<u64>,
}

/// An authenticated device.
#[derive(Clone, Debug)]
pub struct Verified {
    /// Who it is (from the username).
    pub identity: DeviceIdentity,
    /// Its client id, parsed.
    pub client_id: ClientId,
    /// Its product's topic categories.
    pub categories: Arc<ProductCategories>,
    /// The platform's id of the device, if the registry gave one.
    pub iot_id: Option<String>,
}

/// Verifies a CONNECT against the registry (SPEC §2).
///
/// In order: the client id is parsed (errors → CONNACK 2); the username `${deviceName}&${productKey}`
/// names the device and the password must be hex of the sign method's digest length, either case
/// (→ 4); the device must be registered and the password must equal the HMAC of
/// [`content`](crate::content) under its secret, compared in constant time (→ 5); then, only if
/// `options` turns it on, the timestamp must lie within the skew (→ 5, or 2 if not a number).
///
/// A client id without `signmethod` is signed with `hmacmd5`, the platform's default. A client id
/// without `securemode` is accepted: the transport the device really uses is the adapter's to
/// know, and [`Verified::client_id`] tells it what the device declared. The client id's id part
/// is signed but not compared with the username (the platform's SDKs use several forms).
///
/// An unknown device costs the same HMAC as a known one, so timing does not tell which devices
/// exist.
///
/// ```
/// use aliot_auth::{
///     ConnectFields, DeviceSecret, MemoryRegistry, SecureMode, SignMethod, SignRequest,
///     VerifyOptions, DeviceIdentity, verify,
/// };
/// use aliot_topic::ProductCategories;
///
/// let mut registry = MemoryRegistry::new();
/// registry.add_product("a1TestPK001", ProductCategories::defaults());
/// registry.add_device("a1TestPK001", "dev-001", DeviceSecret::new("s3cr3t"))?;
///
/// let identity = DeviceIdentity::new("a1TestPK001", "dev-001");
/// let secret = DeviceSecret::new("s3cr3t");
/// let credentials = SignRequest::new(&identity, &secret, SecureMode::Tls).sign()?;
/// let fields = ConnectFields {
///     client_id: &credentials.client_id,
///     username: Some(&credentials.username),
///     password: Some(credentials.password.as_bytes()),
/// };
/// let verified = verify(&fields, &registry, &VerifyOptions::default())?;
/// assert_eq!(verified.identity, identity);
/// assert_eq!(verified.client_id.sign_method, Some(SignMethod::HmacSha256));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn verify<R: DeviceRegistry + ?Sized>(
    fields: &ConnectFields<'_>,
    registry: &R,
    options: &VerifyOptions,
) -> Result<Verified, AuthError> {
    let skew_check = match (options.max_timestamp_skew_ms, options.now_ms) {
        (None, _) => None,
        (Some(max_skew_ms), Some(now_ms)) => Some((max_skew_ms, now_ms)),
        (Some(_), None) => return Err(AuthError::ClockNotGiven),
    };

    let client_id = ClientId::parse(fields.client_id)?;
    let auth_type = client_id.auth_type()?;
    let username = fields.username.ok_or(AuthError::MissingUsername)?;
    let identity = DeviceIdentity::from_username(username)?;
    let password = fields.password.ok_or(AuthError::MissingPassword)?;
    match auth_type {
        None => {}
        Some(AuthType::TokenLogin) => return verify_token(client_id, identity, password, registry),
        Some(registration) => return Err(AuthError::RegistrationNotLogin(registration)),
    }
    let method = client_id.sign_method.unwrap_or_default();
    let mut decoded = [0u8; 32];
    let decoded = decoded.get_mut(..method.digest_len()).unwrap_or_default();
    if !password.iter().all(u8::is_ascii_hexdigit) {
        return Err(AuthError::PasswordNotHex);
    }
    if decode_hex_into(password, decoded).is_none() {
        return Err(AuthError::PasswordWrongLength {
            method,
            expected: method.digest_len() * 2,
            found: password.len(),
        });
    }

    let signed = content(&client_id.id, &identity, client_id.timestamp.as_deref());
    let Some(record) = registry.lookup(&identity.product_key, &identity.device_name) else {
        // Spend what a known device costs, so the answer's timing does not say who exists.
        let expected = hmac_digest(method, &[], signed.as_bytes());
        black_box(expected.as_slice().ct_eq(decoded));
        return Err(AuthError::UnknownDevice(identity));
    };
    let expected = hmac_digest(method, record.secret.as_bytes(), signed.as_bytes());
    if !bool::from(expected.as_slice().ct_eq(decoded)) {
        return Err(AuthError::SignatureMismatch(identity));
    }

    if let Some((max_skew_ms, now_ms)) = skew_check {
        check_timestamp(client_id.timestamp.as_deref(), max_skew_ms, now_ms)?;
    }
    Ok(Verified {
        identity,
        client_id,
        categories: record.categories,
        iot_id: record.iot_id,
    })
}

/// A token login (`authType=connwl`, PLATFORM-PROTOCOLS §2.2): the password is the token the
/// device was given at its registration, compared in constant time. No timestamp is signed.
fn verify_token<R: DeviceRegistry + ?Sized>(
    client_id: ClientId,
    identity: DeviceIdentity,
    password: &[u8],
    registry: &R,
) -> Result<Verified, AuthError> {
    let Some(record) = registry.lookup(&identity.product_key, &identity.device_name) else {
        black_box(password.ct_eq(password));
        return Err(AuthError::UnknownDevice(identity));
    };
    let Some(token) = &record.token else {
        return Err(AuthError::NoToken(identity));
    };
    if !bool::from(token.as_bytes().ct_eq(password)) {
        return Err(AuthError::SignatureMismatch(identity));
    }
    Ok(Verified {
        identity,
        client_id,
        categories: record.categories,
        iot_id: record.iot_id,
    })
}

/// Checks a timestamp (milliseconds, or seconds below [`SECONDS_TIMESTAMP_BELOW`]) against the
/// clock.
fn check_timestamp(
    timestamp: Option<&str>,
    max_skew_ms: u64,
    now_ms: u64,
) -> Result<(), AuthError> {
    let timestamp = timestamp.ok_or(AuthError::MissingTimestamp)?;
    let not_decimal = || AuthError::TimestampNotDecimal(timestamp.into());
    if timestamp.is_empty() || !timestamp.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(not_decimal());
    }
    let value: u64 = timestamp.parse().map_err(|_| not_decimal())?;
    let timestamp_ms = if value < SECONDS_TIMESTAMP_BELOW {
        value * 1000
    } else {
        value
    };
    if timestamp_ms.abs_diff(now_ms) > max_skew_ms {
        return Err(AuthError::TimestampOutOfWindow {
            timestamp_ms,
            now_ms,
            max_skew_ms,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_in_seconds_and_milliseconds_are_both_understood() {
        let now_ms = 1_700_000_000_500;
        assert_eq!(check_timestamp(Some("1700000000"), 1_000, now_ms), Ok(()));
        assert_eq!(
            check_timestamp(Some("1700000000000"), 1_000, now_ms),
            Ok(())
        );
        assert_eq!(
            check_timestamp(Some("1700000002"), 1_000, now_ms),
            Err(AuthError::TimestampOutOfWindow {
                timestamp_ms: 1_700_000_002_000,
                now_ms,
                max_skew_ms: 1_000
            })
        );
    }

    #[test]
    fn timestamps_must_be_plain_decimal_numbers() {
        for bad in [
            "",
            "+1700000000",
            "-1",
            "17e8",
            " 1",
            "99999999999999999999999",
        ] {
            assert_eq!(
                check_timestamp(Some(bad), 1_000, 0),
                Err(AuthError::TimestampNotDecimal(bad.into())),
                "{bad:?}"
            );
        }
        assert_eq!(
            check_timestamp(None, 1_000, 0),
            Err(AuthError::MissingTimestamp)
        );
    }

    #[test]
    fn every_refusal_has_its_code() {
        assert_eq!(RefusalCode::IdentifierRejected.code(), 2);
        assert_eq!(RefusalCode::ServerUnavailable.code(), 3);
        assert_eq!(RefusalCode::BadUserNameOrPassword.code(), 4);
        assert_eq!(RefusalCode::NotAuthorized.code(), 5);
        assert_eq!(
            AuthError::TimestampNotDecimal("x".into()).connack_code(),
            RefusalCode::IdentifierRejected
        );
        assert_eq!(
            AuthError::ClockNotGiven.connack_code(),
            RefusalCode::ServerUnavailable
        );
    }
}
