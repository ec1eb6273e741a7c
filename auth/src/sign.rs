//! Signing the CONNECT fields: the content string, the HMAC, and the three fields a device sends.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use hmac::digest::Digest;
use hmac::{Hmac, Mac, digest::KeyInit};
use md5::Md5;
use sha1::Sha1;
use sha2::Sha256;

use crate::client_id::{ClientId, ClientIdError, SECURE_MODE_KEY, SIGN_METHOD_KEY, TIMESTAMP_KEY};
use crate::identity::{DeviceIdentity, DeviceSecret};
use crate::{SecureMode, SignMethod};

/// The block length of SHA-1, SHA-256 and MD5 alike: the length of an HMAC key block.
const HASH_BLOCK_LEN: usize = 64;

/// The lowercase hex digits.
const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// What a device puts in its MQTT CONNECT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectCredentials {
    /// The MQTT client id: `${clientId}|securemode=…,signmethod=…[,timestamp=…]|`.
    pub client_id: String,
    /// The MQTT username: `${deviceName}&${productKey}`.
    pub username: String,
    /// The MQTT password: the lowercase hex HMAC of the content.
    pub password: String,
}

/// The string a device signs (SPEC §2): the pairs `clientId`, `deviceName`, `productKey` and,
/// when present, `timestamp`, sorted by name, each name followed by its value, no separators.
///
/// `client_id` is the id part of the client id (before the first `|`).
///
/// ```
/// use aliot_auth::{DeviceIdentity, content};
///
/// let identity = DeviceIdentity::new("pk", "device");
/// assert_eq!(
///     content("12345", &identity, Some("789")),
///     "clientId12345deviceNamedeviceproductKeypktimestamp789"
/// );
/// assert_eq!(content("12345", &identity, None), "clientId12345deviceNamedeviceproductKeypk");
/// ```
pub fn content(client_id: &str, identity: &DeviceIdentity, timestamp: Option<&str>) -> String {
    const NAMES_LEN: usize = "clientIddeviceNameproductKeytimestamp".len();
    let mut text = String::with_capacity(
        NAMES_LEN
            + client_id.len()
            + identity.device_name.len()
            + identity.product_key.len()
            + timestamp.map_or(0, str::len),
    );
    text.push_str("clientId");
    text.push_str(client_id);
    text.push_str("deviceName");
    text.push_str(&identity.device_name);
    text.push_str("productKey");
    text.push_str(&identity.product_key);
    if let Some(timestamp) = timestamp {
        text.push_str("timestamp");
        text.push_str(timestamp);
    }
    text
}

/// The lowercase hex HMAC of `content` under `key` with `method`.
///
/// ```
/// use aliot_auth::{SignMethod, sign_content};
///
/// let content = "clientId12345deviceNamedeviceproductKeypktimestamp789";
/// assert_eq!(
///     sign_content(SignMethod::HmacSha1, b"secret", content),
///     "fafd82a3d602b37fb0fa8b7892f24a477f851a14"
/// );
/// ```
pub fn sign_content(method: SignMethod, key: &[u8], content: &str) -> String {
    to_hex(hmac_digest(method, key, content.as_bytes()).as_slice())
}

/// Signs a CONNECT: the client id `${client_id}|securemode=…,signmethod=…[,timestamp=…]|`,
/// the username `${deviceName}&${productKey}` and the lowercase hex password.
///
/// It writes its inputs as given and checks none of them: a `client_id` with `|`, or a
/// timestamp with `,`, makes a client id the broker refuses. [`SignRequest::sign`] checks them,
/// and takes extra extension pairs.
///
/// ```
/// use aliot_auth::{DeviceIdentity, DeviceSecret, SecureMode, SignMethod, sign};
///
/// let credentials = sign(
///     &DeviceIdentity::new("a1TestPK001", "dev-001"),
///     &DeviceSecret::new("0123456789abcdef0123456789abcdef"),
///     SignMethod::HmacSha256,
///     "a1TestPK001.dev-001",
///     Some("2524608000000"),
///     SecureMode::Tls,
/// );
/// assert_eq!(
///     credentials.client_id,
///     "a1TestPK001.dev-001|securemode=2,signmethod=hmacsha256,timestamp=2524608000000|"
/// );
/// assert_eq!(credentials.username, "dev-001&a1TestPK001");
/// assert_eq!(
///     credentials.password,
///     "cc10d0112dbafa9a6fc0d8fc3e5b6ba3ff9cb258d2f77c0e9153a83e4bcae470"
/// );
/// ```
pub fn sign(
    identity: &DeviceIdentity,
    secret: &DeviceSecret,
    method: SignMethod,
    client_id: &str,
    timestamp: Option<&str>,
    secure_mode: SecureMode,
) -> ConnectCredentials {
    let mut mqtt_client_id = String::with_capacity(client_id.len() + 64);
    mqtt_client_id.push_str(client_id);
    mqtt_client_id.push('|');
    mqtt_client_id.push_str(SECURE_MODE_KEY);
    mqtt_client_id.push('=');
    mqtt_client_id.push_str(secure_mode.as_str());
    mqtt_client_id.push(',');
    mqtt_client_id.push_str(SIGN_METHOD_KEY);
    mqtt_client_id.push('=');
    mqtt_client_id.push_str(method.as_str());
    if let Some(timestamp) = timestamp {
        mqtt_client_id.push(',');
        mqtt_client_id.push_str(TIMESTAMP_KEY);
        mqtt_client_id.push('=');
        mqtt_client_id.push_str(timestamp);
    }
    mqtt_client_id.push('|');
    ConnectCredentials {
        client_id: mqtt_client_id,
        username: identity.username(),
        password: sign_content(
            method,
            secret.as_bytes(),
            &content(client_id, identity, timestamp),
        ),
    }
}

/// A CONNECT to sign, with every choice a device can make; [`SignRequest::sign`] checks it.
///
/// Defaults: sign method [`SignMethod::HmacSha256`] (the strongest the platform offers), the
/// id part `${productKey}.${deviceName}` (as the platform's C SDK), no timestamp, no extra pairs.
///
/// ```
/// use aliot_auth::{DeviceIdentity, DeviceSecret, SecureMode, SignMethod, SignRequest};
///
/// let identity = DeviceIdentity::new("pk", "dn");
/// let secret = DeviceSecret::new("secret");
/// let credentials = SignRequest::new(&identity, &secret, SecureMode::Tcp)
///     .method(SignMethod::HmacSha1)
///     .client_id("pk&dn")
///     .timestamp("1700000000")
///     .param("lan", "Rust")
///     .sign()?;
/// assert_eq!(
///     credentials.client_id,
///     "pk&dn|securemode=3,signmethod=hmacsha1,timestamp=1700000000,lan=Rust|"
/// );
/// # Ok::<(), aliot_auth::ClientIdError>(())
/// ```
#[derive(Clone, Debug)]
pub struct SignRequest<'a> {
    identity: &'a DeviceIdentity,
    secret: &'a DeviceSecret,
    secure_mode: SecureMode,
    method: SignMethod,
    client_id: Option<String>,
    timestamp: Option<String>,
    params: Vec<(String, String)>,
}

impl<'a> SignRequest<'a> {
    /// A request for this device over a transport of this secure mode, with the defaults.
    pub fn new(
        identity: &'a DeviceIdentity,
        secret: &'a DeviceSecret,
        secure_mode: SecureMode,
    ) -> Self {
        Self {
            identity,
            secret,
            secure_mode,
            method: SignMethod::HmacSha256,
            client_id: None,
            timestamp: None,
            params: Vec::new(),
        }
    }

    /// Signs with this method.
    pub fn method(mut self, method: SignMethod) -> Self {
        self.method = method;
        self
    }

    /// Uses this id part (before the first `|`) instead of `${productKey}.${deviceName}`.
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }

    /// Sends and signs this timestamp (milliseconds, or seconds as the Python SDK does).
    pub fn timestamp(mut self, timestamp: impl Into<String>) -> Self {
        self.timestamp = Some(timestamp.into());
        self
    }

    /// Appends an extra extension pair (e.g. `_v=…`, `lan=…`), after the known ones.
    pub fn param(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.params.push((key.into(), value.into()));
        self
    }

    /// The CONNECT fields, once every part is checked to read back as written.
    ///
    /// Fails on an id part that is empty, longer than 64 characters or holds `|`, on a
    /// timestamp or pair that would not read back, and on an extra pair whose key is
    /// `securemode`, `signmethod`, `timestamp` or one given before
    /// ([`ClientIdError::DuplicateKey`]).
    pub fn sign(&self) -> Result<ConnectCredentials, ClientIdError> {
        let id = match &self.client_id {
            Some(id) => id.clone(),
            None => {
                let mut id = self.identity.product_key.clone();
                id.push('.');
                id.push_str(&self.identity.device_name);
                id
            }
        };
        let mut client_id = ClientId::new(id)?
            .with_secure_mode(self.secure_mode)
            .with_sign_method(self.method);
        if let Some(timestamp) = &self.timestamp {
            client_id = client_id.with_timestamp(timestamp.as_str())?;
        }
        for (key, value) in &self.params {
            if client_id.param(key).is_some() || key == TIMESTAMP_KEY {
                return Err(ClientIdError::DuplicateKey(key.clone()));
            }
            client_id = client_id.with_param(key.as_str(), value.as_str())?;
        }
        let password = sign_content(
            self.method,
            self.secret.as_bytes(),
            &content(&client_id.id, self.identity, self.timestamp.as_deref()),
        );
        Ok(ConnectCredentials {
            client_id: client_id.to_string(),
            username: self.identity.username(),
            password,
        })
    }
}

/// An HMAC digest of one of the three methods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HmacDigest {
    /// HMAC-SHA1.
    Sha1([u8; 20]),
    /// HMAC-SHA256.
    Sha256([u8; 32]),
    /// HMAC-MD5.
    Md5([u8; 16]),
}

impl HmacDigest {
    /// The digest's bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Self::Sha1(bytes) => bytes,
            Self::Sha256(bytes) => bytes,
            Self::Md5(bytes) => bytes,
        }
    }
}

/// The HMAC of `content` under `key` with `method` (RFC 2104).
pub(crate) fn hmac_digest(method: SignMethod, key: &[u8], content: &[u8]) -> HmacDigest {
    match method {
        SignMethod::HmacSha1 => {
            let mut mac = <Hmac<Sha1> as KeyInit>::new(&key_block::<Sha1>(key).into());
            mac.update(content);
            HmacDigest::Sha1(mac.finalize().into_bytes().into())
        }
        SignMethod::HmacSha256 => {
            let mut mac = <Hmac<Sha256> as KeyInit>::new(&key_block::<Sha256>(key).into());
            mac.update(content);
            HmacDigest::Sha256(mac.finalize().into_bytes().into())
        }
        SignMethod::HmacMd5 => {
            let mut mac = <Hmac<Md5> as KeyInit>::new(&key_block::<Md5>(key).into());
            mac.update(content);
            HmacDigest::Md5(mac.finalize().into_bytes().into())
        }
    }
}

/// The HMAC key block of RFC 2104 §2: a key longer than the hash block is hashed first, then
/// the key is padded with zeros to the block length.
///
/// Handing the `hmac` crate a key of exactly one block (`KeyInit::new`) gives the same MAC as
/// handing it the raw key, with a constructor that cannot fail, where `new_from_slice` returns
/// a `Result` whose error never happens for HMAC and would need an `expect`.
fn key_block<H: Digest>(key: &[u8]) -> [u8; HASH_BLOCK_LEN] {
    let mut block = [0u8; HASH_BLOCK_LEN];
    if key.len() > HASH_BLOCK_LEN {
        let hashed = H::digest(key);
        block
            .iter_mut()
            .zip(hashed)
            .for_each(|(slot, byte)| *slot = byte);
    } else {
        block
            .iter_mut()
            .zip(key)
            .for_each(|(slot, byte)| *slot = *byte);
    }
    block
}

/// Lowercase hex of `bytes`.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        for nibble in [byte >> 4, byte & 0x0f] {
            // A nibble is below 16: always a digit.
            if let Some(&digit) = HEX_DIGITS.get(usize::from(nibble)) {
                text.push(char::from(digit));
            }
        }
    }
    text
}

/// The value of one hex digit, upper or lower case.
fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// Decodes hex text (either case) into `out`, which must have exactly half as many bytes as
/// `text` has digits; `None` when a character is not a hex digit or the lengths disagree.
pub(crate) fn decode_hex_into(text: &[u8], out: &mut [u8]) -> Option<()> {
    if text.len() != out.len() * 2 {
        return None;
    }
    for (slot, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        let [high, low] = pair else {
            return None;
        };
        *slot = (hex_value(*high)? << 4) | hex_value(*low)?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_in_either_case() {
        let bytes = [0x00, 0x0f, 0xa5, 0xff, 0x10];
        let text = to_hex(&bytes);
        assert_eq!(text, "000fa5ff10");
        let mut out = [0u8; 5];
        assert_eq!(decode_hex_into(b"000FA5fF10", &mut out), Some(()));
        assert_eq!(out, bytes);
    }

    #[test]
    fn hex_decoding_refuses_non_digits_and_wrong_lengths() {
        let mut out = [0u8; 2];
        assert_eq!(decode_hex_into(b"00g0", &mut out), None);
        assert_eq!(decode_hex_into(b"000", &mut out), None);
        assert_eq!(decode_hex_into(b"000000", &mut out), None);
        assert_eq!(decode_hex_into(b"0 00", &mut out), None);
    }

    #[test]
    fn key_block_pads_short_keys_and_hashes_long_ones() {
        let short = key_block::<Sha1>(b"key");
        assert_eq!(&short[..3], b"key");
        assert!(short[3..].iter().all(|byte| *byte == 0));
        let long = [0xaa; 80];
        let hashed = key_block::<Sha1>(&long);
        assert_eq!(&hashed[..20], Sha1::digest(long).as_slice());
        assert!(hashed[20..].iter().all(|byte| *byte == 0));
        let exact = [0x55; HASH_BLOCK_LEN];
        assert_eq!(key_block::<Sha1>(&exact), exact);
    }
}
