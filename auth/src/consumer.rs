//! A business server's login to the server-side subscription (PLATFORM-PROTOCOLS §8): the
//! AMQP SASL PLAIN user name and password the platform's consumer demos send.
//!
//! The user name is `${clientId}|authMode=aksign,signMethod=hmacsha1,timestamp=…,authId=${accessKeyId},
//! iotInstanceId=…,consumerGroupId=…|` (keys in any order; `iotInstanceId` may be empty or
//! absent; `encode=base64` asks for base64 bodies); the password is the base64 HMAC, with the
//! AccessKey's secret, of `authId=${accessKeyId}&timestamp=${timestamp}`.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use subtle::ConstantTimeEq;

use crate::SignMethod;
use crate::sign::hmac_digest;

/// The longest client id the platform takes.
pub const MAX_CONSUMER_CLIENT_ID: usize = 64;

/// A consumer's login, read from its user name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerLogin {
    /// Its client id (before the first `|`).
    pub client_id: String,
    /// The AccessKey ID it signed with (`authId`).
    pub access_key_id: String,
    /// The consumer group it consumes (`consumerGroupId`).
    pub consumer_group_id: String,
    /// The HMAC its password is made with (`signMethod`).
    pub sign_method: SignMethod,
    /// Its `timestamp`, as sent (signed as text).
    pub timestamp: String,
    /// Its `iotInstanceId`, if it gave one.
    pub instance_id: Option<String>,
    /// Whether it asked for base64 bodies (`encode=base64`).
    pub base64_bodies: bool,
}

/// Why a consumer's user name is not one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConsumerLoginError {
    /// No `|…|` extension.
    #[error("the user name is not `clientId|key=value,…|`")]
    NotExtended,
    /// A client id that is empty or longer than 64 characters.
    #[error("the client id must be 1 to 64 characters")]
    ClientId,
    /// `authMode` is not `aksign`.
    #[error("authMode must be aksign, not {0:?}")]
    AuthMode(String),
    /// A key the login needs is missing.
    #[error("the user name has no {0}")]
    Missing(&'static str),
    /// A `signMethod` that is not hmacmd5, hmacsha1 or hmacsha256.
    #[error("unknown signMethod {0:?}")]
    SignMethod(String),
}

impl ConsumerLogin {
    /// Reads a user name.
    ///
    /// ```
    /// use aliot_auth::{ConsumerLogin, SignMethod};
    ///
    /// let login = ConsumerLogin::parse(
    ///     "app-1|authMode=aksign,signMethod=Hmacsha1,timestamp=1573489088171,authId=LTAI4Fn,iotInstanceId=,consumerGroupId=DEFAULT_GROUP|",
    /// )?;
    /// assert_eq!(login.access_key_id, "LTAI4Fn");
    /// assert_eq!(login.consumer_group_id, "DEFAULT_GROUP");
    /// assert_eq!(login.sign_method, SignMethod::HmacSha1);
    /// assert_eq!(login.instance_id, None);
    /// # Ok::<(), aliot_auth::ConsumerLoginError>(())
    /// ```
    pub fn parse(username: &str) -> Result<ConsumerLogin, ConsumerLoginError> {
        let (client_id, rest) = username
            .split_once('|')
            .ok_or(ConsumerLoginError::NotExtended)?;
        let extension = rest
            .strip_suffix('|')
            .filter(|extension| !extension.contains('|'))
            .ok_or(ConsumerLoginError::NotExtended)?;
        if client_id.is_empty() || client_id.chars().count() > MAX_CONSUMER_CLIENT_ID {
            return Err(ConsumerLoginError::ClientId);
        }
        let pairs: Vec<(&str, &str)> = extension
            .split(',')
            .filter_map(|pair| pair.split_once('='))
            .map(|(key, value)| (key.trim(), value.trim()))
            .collect();
        let get = |key: &str| pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        let need = |key: &'static str| {
            get(key)
                .filter(|value| !value.is_empty())
                .ok_or(ConsumerLoginError::Missing(key))
        };
        let auth_mode = need("authMode")?;
        if auth_mode != "aksign" {
            return Err(ConsumerLoginError::AuthMode(auth_mode.into()));
        }
        let method = need("signMethod")?;
        // The Go demo writes `Hmacsha1`: the names are compared without case.
        let sign_method = method
            .to_ascii_lowercase()
            .parse::<SignMethod>()
            .map_err(|_| ConsumerLoginError::SignMethod(method.into()))?;
        Ok(ConsumerLogin {
            client_id: client_id.into(),
            access_key_id: need("authId")?.into(),
            consumer_group_id: need("consumerGroupId")?.into(),
            sign_method,
            timestamp: need("timestamp")?.into(),
            instance_id: get("iotInstanceId")
                .filter(|id| !id.is_empty())
                .map(ToString::to_string),
            base64_bodies: get("encode") == Some("base64"),
        })
    }

    /// Whether `password` is the base64 HMAC of `authId=…&timestamp=…` with the AccessKey's
    /// `secret`, compared in constant time.
    ///
    /// ```
    /// use aliot_auth::ConsumerLogin;
    ///
    /// let login = ConsumerLogin::parse(
    ///     "app-1|authMode=aksign,signMethod=hmacsha1,timestamp=1573489088171,authId=LTAI4Fn,consumerGroupId=g1|",
    /// )?;
    /// assert!(login.password_matches(b"secret", "XfuNXew9DjzgWjSaCDQnmHo96r8="));
    /// assert!(!login.password_matches(b"other", "XfuNXew9DjzgWjSaCDQnmHo96r8="));
    /// # Ok::<(), aliot_auth::ConsumerLoginError>(())
    /// ```
    pub fn password_matches(&self, secret: &[u8], password: &str) -> bool {
        let expected = consumer_password_digest(
            self.sign_method,
            secret,
            &self.access_key_id,
            &self.timestamp,
        );
        let Some(given) = decode_base64(password.trim()) else {
            return false;
        };
        bool::from(expected.as_slice().ct_eq(&given))
    }
}

/// What a consumer's password is the base64 of: the HMAC (`method`), keyed by the AccessKey's
/// secret, of `authId=${accessKeyId}&timestamp=${timestamp}`. The consumer signs with it, the
/// broker checks with it ([`ConsumerLogin::password_matches`]).
///
/// ```
/// use aliot_auth::{SignMethod, consumer_password_digest};
///
/// let digest = consumer_password_digest(SignMethod::HmacSha1, b"secret", "LTAI4Fn", "1573489088171");
/// assert_eq!(digest.len(), 20);
/// ```
pub fn consumer_password_digest(
    method: SignMethod,
    secret: &[u8],
    access_key_id: &str,
    timestamp: &str,
) -> Vec<u8> {
    let content = alloc::format!("authId={access_key_id}&timestamp={timestamp}");
    hmac_digest(method, secret, content.as_bytes())
        .as_slice()
        .to_vec()
}

/// Standard base64 (padding optional), or `None` for text that is not.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    };
    let text = text.trim_end_matches('=').as_bytes();
    let mut bytes = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.chunks(4) {
        let mut acc = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            acc |= value(*c)? << (18 - 6 * i);
        }
        let [_, a, b, c] = acc.to_be_bytes();
        match chunk.len() {
            4 => bytes.extend_from_slice(&[a, b, c]),
            3 => bytes.extend_from_slice(&[a, b]),
            2 => bytes.push(a),
            _ => return None,
        }
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_missing_or_wrong_part_is_named() {
        let base = "authMode=aksign,signMethod=hmacsha256,timestamp=1,authId=AK,consumerGroupId=g";
        assert!(ConsumerLogin::parse(&alloc::format!("c|{base}|")).is_ok());
        assert_eq!(
            ConsumerLogin::parse(&alloc::format!("c|{base}")),
            Err(ConsumerLoginError::NotExtended)
        );
        assert_eq!(
            ConsumerLogin::parse(&alloc::format!("|{base}|")),
            Err(ConsumerLoginError::ClientId)
        );
        let without_group = base.replace(",consumerGroupId=g", "");
        assert_eq!(
            ConsumerLogin::parse(&alloc::format!("c|{without_group}|")),
            Err(ConsumerLoginError::Missing("consumerGroupId"))
        );
        let other_mode = base.replace("aksign", "stsign");
        assert!(matches!(
            ConsumerLogin::parse(&alloc::format!("c|{other_mode}|")),
            Err(ConsumerLoginError::AuthMode(_))
        ));
        let other_method = base.replace("hmacsha256", "rsa");
        assert!(matches!(
            ConsumerLogin::parse(&alloc::format!("c|{other_method}|")),
            Err(ConsumerLoginError::SignMethod(_))
        ));
    }

    #[test]
    fn base64_decodes_with_and_without_padding_and_refuses_the_rest() {
        assert_eq!(decode_base64("aGk="), Some(b"hi".to_vec()));
        assert_eq!(decode_base64("aGk"), Some(b"hi".to_vec()));
        assert_eq!(decode_base64("aGVsbG8h"), Some(b"hello!".to_vec()));
        assert_eq!(decode_base64("a"), None);
        assert_eq!(decode_base64("a*=="), None);
    }
}
