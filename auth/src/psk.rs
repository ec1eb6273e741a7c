//! TLS-PSK, the platform's "TCP plus symmetric encryption" level (PLATFORM-PROTOCOLS §7): a TLS
//! 1.2 handshake with `TLS_PSK_WITH_AES_128_CBC_SHA`, where the device names itself in the PSK
//! identity and both ends derive the key from the device secret, so the device needs no
//! certificate.
//!
//! The identity is `devicename|hmacsha256|${productKey}&${deviceName}|${timestamp}`; the key is
//! the 64 characters (as bytes, not the 32 bytes they spell) of the uppercase hex
//! HMAC-SHA256 of `id${productKey}&${deviceName}timestamp${timestamp}` under the device secret,
//! as the platform's C SDK computes them. The MQTT CONNECT on top is signed as usual.

use alloc::format;
use alloc::string::String;

use thiserror::Error;

use crate::client_id::SignMethod;
use crate::identity::{DeviceIdentity, DeviceSecret};
use crate::sign::{hmac_digest, to_hex};

/// The PSK identity of a device: who it is and the timestamp its key is derived with.
///
/// ```
/// use aliot_auth::{DeviceIdentity, DeviceSecret, PskIdentity};
///
/// let device = DeviceIdentity::new("a1TestPK001", "dev-001");
/// let identity = PskIdentity::new(device.clone(), "2524608000000");
/// assert_eq!(identity.to_string(), "devicename|hmacsha256|a1TestPK001&dev-001|2524608000000");
///
/// // The broker reads it back from the handshake and derives the same key.
/// let read = PskIdentity::parse(identity.to_string().as_bytes())?;
/// assert_eq!(read.device, device);
/// let key = read.key(&DeviceSecret::new("0123456789abcdef0123456789abcdef"));
/// assert_eq!(key.as_bytes(), b"B5A163848724EE2305D94FA7D542E25A47261A21B9AC7F3917FA92F03A4EA352");
/// # Ok::<(), aliot_auth::PskIdentityError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PskIdentity {
    /// The device.
    pub device: DeviceIdentity,
    /// The timestamp (milliseconds, as the device wrote it) the key is derived with.
    pub timestamp: String,
}

/// The pre-shared key of a device: 64 ASCII characters, uppercase hex.
#[derive(Clone, PartialEq, Eq)]
pub struct PskKey(String);

impl PskKey {
    /// The key's bytes, as TLS uses them.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The key's bytes in lowercase hex (128 characters): the form `mosquitto_pub --psk`
    /// and `openssl s_client -psk` take.
    pub fn to_hex(&self) -> String {
        to_hex(self.as_bytes())
    }
}

impl core::fmt::Debug for PskKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("PskKey(<redacted>)")
    }
}

/// Why a PSK identity is not the platform's.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum PskIdentityError {
    /// Not UTF-8.
    #[error("the PSK identity is not UTF-8")]
    NotUtf8,
    /// Not four `|`-separated fields starting `devicename|hmacsha256|`.
    #[error(
        "the PSK identity {0:?} is not `devicename|hmacsha256|${{productKey}}&${{deviceName}}|${{timestamp}}`"
    )]
    Malformed(String),
}

/// The only authentication type and sign method of the platform's PSK identities.
const PREFIX: &str = "devicename|hmacsha256|";

impl PskIdentity {
    /// The identity of `device` with this timestamp.
    pub fn new(device: DeviceIdentity, timestamp: impl Into<String>) -> Self {
        PskIdentity {
            device,
            timestamp: timestamp.into(),
        }
    }

    /// Reads the identity a client sent in its handshake.
    ///
    /// # Errors
    ///
    /// [`PskIdentityError`] when it is not the platform's form, an empty product key, device
    /// name or timestamp included.
    pub fn parse(identity: &[u8]) -> Result<Self, PskIdentityError> {
        let text = core::str::from_utf8(identity).map_err(|_| PskIdentityError::NotUtf8)?;
        let malformed = || PskIdentityError::Malformed(text.into());
        let rest = text.strip_prefix(PREFIX).ok_or_else(malformed)?;
        let (device, timestamp) = rest.split_once('|').ok_or_else(malformed)?;
        let (product_key, device_name) = device.split_once('&').ok_or_else(malformed)?;
        let empty = [product_key, device_name, timestamp]
            .iter()
            .any(|field| field.is_empty());
        if empty || timestamp.contains('|') || device_name.contains('&') {
            return Err(malformed());
        }
        Ok(PskIdentity::new(
            DeviceIdentity::new(product_key, device_name),
            timestamp,
        ))
    }

    /// The key both ends derive for this identity from the device's secret.
    pub fn key(&self, secret: &DeviceSecret) -> PskKey {
        let content = format!(
            "id{}&{}timestamp{}",
            self.device.product_key, self.device.device_name, self.timestamp
        );
        let digest = hmac_digest(
            SignMethod::HmacSha256,
            secret.as_bytes(),
            content.as_bytes(),
        );
        PskKey(to_hex(digest.as_slice()).to_ascii_uppercase())
    }
}

impl core::fmt::Display for PskIdentity {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{PREFIX}{}&{}|{}",
            self.device.product_key, self.device.device_name, self.timestamp
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_not_in_the_platforms_form_are_refused() {
        for bad in [
            "",
            "devicename|hmacsha256|a1PK&dev",
            "devicename|hmacsha1|a1PK&dev|1",
            "x509|hmacsha256|a1PK&dev|1",
            "devicename|hmacsha256|a1PKdev|1",
            "devicename|hmacsha256|&dev|1",
            "devicename|hmacsha256|a1PK&|1",
            "devicename|hmacsha256|a1PK&dev|",
            "devicename|hmacsha256|a1PK&dev|1|2",
            "devicename|hmacsha256|a1PK&d&ev|1",
        ] {
            assert!(
                matches!(
                    PskIdentity::parse(bad.as_bytes()),
                    Err(PskIdentityError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
        assert_eq!(
            PskIdentity::parse(&[0xff, 0xfe]),
            Err(PskIdentityError::NotUtf8)
        );
    }

    #[test]
    fn the_key_is_the_uppercase_hex_text_of_the_hmac() {
        let identity = PskIdentity::new(DeviceIdentity::new("a1PK", "dev"), "1");
        let key = identity.key(&DeviceSecret::new("secret"));
        assert_eq!(key.as_bytes().len(), 64);
        assert!(
            key.as_bytes()
                .iter()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b))
        );
        assert_eq!(format!("{key:?}"), "PskKey(<redacted>)");
        // The hex tools take: two lowercase digits per character of the key.
        assert_eq!(key.to_hex().len(), 128);
        assert!(
            key.to_hex()
                .starts_with(&format!("{:02x}", key.as_bytes()[0]))
        );
        // Another timestamp, another key.
        let later = PskIdentity::new(DeviceIdentity::new("a1PK", "dev"), "2");
        assert_ne!(later.key(&DeviceSecret::new("secret")), key);
    }
}
