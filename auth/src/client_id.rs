//! The platform's MQTT client id: `${clientId}|securemode=3,signmethod=hmacsha1,timestamp=…|`.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::str::FromStr;

use thiserror::Error;

/// The most characters the id part of a client id may have (SPEC §2).
pub const MAX_ID_CHARS: usize = 64;

/// The extension key naming the transport security mode.
pub const SECURE_MODE_KEY: &str = "securemode";
/// The extension key naming the HMAC used for the password.
pub const SIGN_METHOD_KEY: &str = "signmethod";
/// The extension key carrying the timestamp that is signed with the other fields.
pub const TIMESTAMP_KEY: &str = "timestamp";

/// The bar that opens and closes the extension.
const BAR: char = '|';
/// The separator of the extension's pairs.
const PAIR_SEPARATOR: char = ',';
/// The separator of a key from its value.
const KEY_VALUE_SEPARATOR: char = '=';

/// A client id the platform does not accept, or an extension pair that cannot be written.
///
/// A broker answers every one of these with CONNACK 2 (identifier rejected).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ClientIdError {
    /// No `|` at all: a plain MQTT client id, fine for generic MQTT but carrying no platform
    /// extension, so not platform credentials.
    #[error("client id `{0}` has no `|…|` extension: it is a plain MQTT client id")]
    MissingExtension(String),
    /// The extension opened by the first `|` is never closed by a second one.
    #[error("the client id extension opened by `|` is not closed by a second `|`")]
    MissingClosingBar,
    /// Something follows the `|` that closes the extension.
    #[error("text `{0}` follows the `|` that closes the client id extension")]
    TextAfterClosingBar(String),
    /// Nothing before the first `|`.
    #[error("the id part of the client id (before the first `|`) is empty")]
    EmptyId,
    /// The id part is longer than [`MAX_ID_CHARS`] characters.
    #[error(
        "the id part of the client id is {len} characters long, more than the {MAX_ID_CHARS} allowed"
    )]
    IdTooLong {
        /// How many characters the id part has.
        len: usize,
    },
    /// An id given to [`ClientId::new`] contains `|`, which would end it early.
    #[error("the id `{0}` contains `|`, which ends the id part of a client id")]
    BarInId(String),
    /// An empty pair (`,,`) that is not the last one; only one trailing empty pair is tolerated.
    #[error("the client id extension has an empty pair before its last one")]
    EmptyPair,
    /// A pair with no `=`.
    #[error("the client id extension pair `{0}` has no `=` between key and value")]
    MalformedPair(String),
    /// A pair whose key is empty (`=3`).
    #[error("the client id extension pair `{0}` has an empty key")]
    EmptyKey(String),
    /// A key or value that could not be read back from a formatted client id.
    #[error(
        "the pair `{0}` cannot be written in a client id extension: a key must be non-empty \
         with no `=`, `,`, `|` or surrounding white space, a value must have no `,`, `|` or \
         surrounding white space"
    )]
    UnrepresentablePair(String),
    /// A `securemode` other than `2` (TLS), `3` (TCP) or `-2` (dynamic registration): `-1`,
    /// `8` (ID²) and the rest are not supported.
    #[error(
        "securemode `{0}` is not supported: only 2 (TLS), 3 (plain TCP) and -2 (dynamic registration) are"
    )]
    UnsupportedSecureMode(String),
    /// A `signmethod` other than `hmacsha1`, `hmacsha256` or `hmacmd5`.
    #[error("signmethod `{0}` is unknown: expected hmacsha1, hmacsha256 or hmacmd5")]
    UnknownSignMethod(String),
    /// `securemode`, `signmethod` or `timestamp` given twice, so its meaning is ambiguous.
    #[error("the client id extension gives `{0}` more than once")]
    DuplicateKey(String),
    /// An `authType` other than `register`, `regnwl` or `connwl`.
    #[error("authType `{0}` is unknown: expected register, regnwl or connwl")]
    UnknownAuthType(String),
}

/// The HMAC a device signs its CONNECT password with (`signmethod`).
///
/// Written and read as `hmacsha1`, `hmacsha256` and `hmacmd5`, exactly (lowercase), as every
/// platform SDK sends them. The default is [`SignMethod::HmacMd5`], the platform's default when
/// a client id names no `signmethod`.
///
/// ```
/// use aliot_auth::SignMethod;
///
/// let method: SignMethod = "hmacsha256".parse()?;
/// assert_eq!(method, SignMethod::HmacSha256);
/// assert_eq!(method.to_string(), "hmacsha256");
/// assert_eq!(SignMethod::default(), SignMethod::HmacMd5);
/// # Ok::<(), aliot_auth::ClientIdError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum SignMethod {
    /// HMAC-SHA1 (`hmacsha1`), 20-byte digest.
    HmacSha1,
    /// HMAC-SHA256 (`hmacsha256`), 32-byte digest.
    HmacSha256,
    /// HMAC-MD5 (`hmacmd5`), 16-byte digest; the platform default.
    #[default]
    HmacMd5,
}

impl SignMethod {
    /// Every sign method, in the order of the enum.
    pub const ALL: [SignMethod; 3] = [Self::HmacSha1, Self::HmacSha256, Self::HmacMd5];

    /// The name used in the client id extension.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::HmacSha1 => "hmacsha1",
            Self::HmacSha256 => "hmacsha256",
            Self::HmacMd5 => "hmacmd5",
        }
    }

    /// How many bytes the method's digest has (the password has twice as many hex digits).
    pub const fn digest_len(self) -> usize {
        match self {
            Self::HmacSha1 => 20,
            Self::HmacSha256 => 32,
            Self::HmacMd5 => 16,
        }
    }
}

impl fmt::Display for SignMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SignMethod {
    type Err = ClientIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|method| method.as_str() == text)
            .ok_or_else(|| ClientIdError::UnknownSignMethod(text.into()))
    }
}

/// The transport security a device declares (`securemode`): `2` for TLS, `3` for plain TCP,
/// `-2` for dynamic registration and the token login that follows it on the platform's newer
/// instances (PLATFORM-PROTOCOLS §2).
///
/// ```
/// use aliot_auth::{ClientIdError, SecureMode};
///
/// assert_eq!("2".parse::<SecureMode>()?, SecureMode::Tls);
/// assert_eq!(SecureMode::Tcp.to_string(), "3");
/// assert_eq!("-2".parse::<SecureMode>()?, SecureMode::Registration);
/// assert!(matches!("8".parse::<SecureMode>(), Err(ClientIdError::UnsupportedSecureMode(_))));
/// # Ok::<(), ClientIdError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SecureMode {
    /// `securemode=2`: TLS.
    Tls,
    /// `securemode=3`: plain TCP.
    Tcp,
    /// `securemode=-2`: dynamic registration (`authType=register`, `regnwl`) or the token
    /// login after it (`authType=connwl`), over TLS.
    Registration,
}

impl SecureMode {
    /// The value used in the client id extension.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Tls => "2",
            Self::Tcp => "3",
            Self::Registration => "-2",
        }
    }
}

impl fmt::Display for SecureMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SecureMode {
    type Err = ClientIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "2" => Ok(Self::Tls),
            "3" => Ok(Self::Tcp),
            "-2" => Ok(Self::Registration),
            _ => Err(ClientIdError::UnsupportedSecureMode(text.into())),
        }
    }
}

/// A parsed platform client id: `${clientId}|k=v,k=v,...|`.
///
/// `params` holds every pair of the extension in order, the known ones included; the typed
/// fields are the known pairs read. Formatting (`Display`) writes `id|pairs|` in the order of
/// `params`, taking the value of a known key from its typed field (and leaving the pair out if
/// that field is `None`), then appends any typed field whose key is not in `params`.
///
/// Parsing tolerates unknown keys, one empty trailing pair (`…,ext=3,|`) and white space,
/// newlines included, around pairs, keys and values.
///
/// ```
/// use aliot_auth::{ClientId, SecureMode, SignMethod};
///
/// let client_id = ClientId::parse(
///     "a1TestPK001.dev-001|timestamp=2524608000000,_ss=1,securemode=2,signmethod=hmacsha256,ext=3,|",
/// )?;
/// assert_eq!(client_id.id, "a1TestPK001.dev-001");
/// assert_eq!(client_id.secure_mode, Some(SecureMode::Tls));
/// assert_eq!(client_id.sign_method, Some(SignMethod::HmacSha256));
/// assert_eq!(client_id.timestamp.as_deref(), Some("2524608000000"));
/// assert_eq!(client_id.param("ext"), Some("3"));
/// assert_eq!(
///     client_id.to_string(),
///     "a1TestPK001.dev-001|timestamp=2524608000000,_ss=1,securemode=2,signmethod=hmacsha256,ext=3|"
/// );
/// # Ok::<(), aliot_auth::ClientIdError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientId {
    /// The id part, before the first `|` (the `clientId` of the signed content).
    pub id: String,
    /// `securemode`, if given.
    pub secure_mode: Option<SecureMode>,
    /// `signmethod`, if given (when absent the platform uses [`SignMethod::HmacMd5`]).
    pub sign_method: Option<SignMethod>,
    /// `timestamp`, if given, as sent (milliseconds from the C and Node SDKs, seconds from the
    /// Python SDK); it is signed as text.
    pub timestamp: Option<String>,
    /// Every pair of the extension in order, known ones included.
    pub params: Vec<(String, String)>,
}

impl ClientId {
    /// A client id with this id part and an empty extension (`id||`).
    ///
    /// The id must be 1 to [`MAX_ID_CHARS`] characters with no `|`.
    pub fn new(id: impl Into<String>) -> Result<Self, ClientIdError> {
        let id = id.into();
        if id.contains(BAR) {
            return Err(ClientIdError::BarInId(id));
        }
        check_id(&id)?;
        Ok(Self {
            id,
            secure_mode: None,
            sign_method: None,
            timestamp: None,
            params: Vec::new(),
        })
    }

    /// Reads a platform client id.
    ///
    /// The id part is what precedes the first `|`; the extension runs to the second `|`, which
    /// must end the text. The extension is comma-separated `key=value` pairs; white space
    /// around a pair, key or value is dropped, unknown keys are kept in `params`, and the last
    /// pair may be empty. `securemode`, `signmethod` and `timestamp` may each appear once.
    pub fn parse(text: &str) -> Result<Self, ClientIdError> {
        let Some((id, rest)) = text.split_once(BAR) else {
            return Err(ClientIdError::MissingExtension(text.into()));
        };
        let Some((extension, after)) = rest.split_once(BAR) else {
            return Err(ClientIdError::MissingClosingBar);
        };
        if !after.is_empty() {
            return Err(ClientIdError::TextAfterClosingBar(after.into()));
        }
        check_id(id)?;

        let mut client_id = Self {
            id: id.into(),
            secure_mode: None,
            sign_method: None,
            timestamp: None,
            params: Vec::new(),
        };
        let mut pairs = extension.split(PAIR_SEPARATOR).peekable();
        while let Some(pair) = pairs.next() {
            let pair = pair.trim();
            if pair.is_empty() {
                if pairs.peek().is_none() {
                    break;
                }
                return Err(ClientIdError::EmptyPair);
            }
            let Some((key, value)) = pair.split_once(KEY_VALUE_SEPARATOR) else {
                return Err(ClientIdError::MalformedPair(pair.into()));
            };
            let (key, value) = (key.trim(), value.trim());
            if key.is_empty() {
                return Err(ClientIdError::EmptyKey(pair.into()));
            }
            if client_id
                .known_value(key)
                .is_some_and(|typed| typed.is_some())
            {
                return Err(ClientIdError::DuplicateKey(key.into()));
            }
            match key {
                SECURE_MODE_KEY => client_id.secure_mode = Some(value.parse()?),
                SIGN_METHOD_KEY => client_id.sign_method = Some(value.parse()?),
                TIMESTAMP_KEY => client_id.timestamp = Some(value.into()),
                _ => {}
            }
            client_id.params.push((key.into(), value.into()));
        }
        Ok(client_id)
    }

    /// The value of the first pair with this key, as sent.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }

    /// Whether the client asks for the platform's automatic subscription (`_ss=1`,
    /// PLATFORM-PROTOCOLS §0.2): it gets its system downlinks and the replies to its requests
    /// without a SUBSCRIBE. The C SDK 4.x and the Python SDK send it and never subscribe to
    /// system topics.
    ///
    /// ```
    /// use aliot_auth::ClientId;
    /// let c4 = ClientId::parse("pk.dn|timestamp=2524608000000,_ss=1,securemode=2,signmethod=hmacsha256,ext=3,|")?;
    /// assert!(c4.auto_subscribe() && c4.rrpc_ext());
    /// let node = ClientId::parse("pk&dn|securemode=3,signmethod=hmacsha1,timestamp=1,lan=NodeJS|")?;
    /// assert!(!node.auto_subscribe() && !node.rrpc_ext());
    /// # Ok::<(), aliot_auth::ClientIdError>(())
    /// ```
    pub fn auto_subscribe(&self) -> bool {
        self.param("_ss") == Some("1")
    }

    /// Whether the client takes synchronous calls in the `/ext/rrpc/{id}/{topic}` form: bit 0
    /// of the `ext` bitmap (PLATFORM-PROTOCOLS §1.5; C SDK 4.x sends `ext=3`, Python `ext=1`).
    /// Such a client subscribes to a custom topic's plain form and expects the call on
    /// `/ext/rrpc/{id}/{topic}`.
    pub fn rrpc_ext(&self) -> bool {
        self.param("ext")
            .and_then(|bits| bits.trim().parse::<u32>().ok())
            .is_some_and(|bits| bits & 1 == 1)
    }

    /// Sets `securemode`, keeping `params` in step.
    pub fn with_secure_mode(mut self, mode: SecureMode) -> Self {
        self.secure_mode = Some(mode);
        self.set_param(SECURE_MODE_KEY, mode.as_str());
        self
    }

    /// Sets `signmethod`, keeping `params` in step.
    pub fn with_sign_method(mut self, method: SignMethod) -> Self {
        self.sign_method = Some(method);
        self.set_param(SIGN_METHOD_KEY, method.as_str());
        self
    }

    /// Sets `timestamp`, keeping `params` in step. It must be writable as a value (no `,`,
    /// `|` or surrounding white space).
    pub fn with_timestamp(self, timestamp: impl Into<String>) -> Result<Self, ClientIdError> {
        self.with_param(TIMESTAMP_KEY, timestamp)
    }

    /// Sets a pair: replaces the value of the first pair with this key, or appends the pair.
    ///
    /// A known key (`securemode`, `signmethod`, `timestamp`) also sets its typed field, so its
    /// value must be valid for it. Key and value must read back the same after formatting.
    ///
    /// ```
    /// use aliot_auth::{ClientId, SecureMode};
    ///
    /// let client_id = ClientId::new("pk&dn")?
    ///     .with_param("securemode", "3")?
    ///     .with_param("lan", "Rust")?;
    /// assert_eq!(client_id.secure_mode, Some(SecureMode::Tcp));
    /// assert_eq!(client_id.to_string(), "pk&dn|securemode=3,lan=Rust|");
    /// assert!(client_id.clone().with_param("a,b", "1").is_err());
    /// # Ok::<(), aliot_auth::ClientIdError>(())
    /// ```
    pub fn with_param(
        mut self,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Self, ClientIdError> {
        let (key, value) = (key.into(), value.into());
        if !is_writable_key(&key) || !is_writable_value(&value) {
            let mut pair = key;
            pair.push(KEY_VALUE_SEPARATOR);
            pair.push_str(&value);
            return Err(ClientIdError::UnrepresentablePair(pair));
        }
        match key.as_str() {
            SECURE_MODE_KEY => self.secure_mode = Some(value.parse()?),
            SIGN_METHOD_KEY => self.sign_method = Some(value.parse()?),
            TIMESTAMP_KEY => self.timestamp = Some(value.clone()),
            _ => {}
        }
        self.set_param(&key, &value);
        Ok(self)
    }

    /// Replaces the value of the first pair with `key`, or appends the pair.
    fn set_param(&mut self, key: &str, value: &str) {
        match self.params.iter_mut().find(|(name, _)| name == key) {
            Some((_, old)) => {
                old.clear();
                old.push_str(value);
            }
            None => self.params.push((key.into(), value.into())),
        }
    }

    /// The value formatted for a known key, from its typed field, or `None` for an unknown key
    /// (`Some(None)` for a known key whose field is unset).
    fn known_value(&self, key: &str) -> Option<Option<&str>> {
        match key {
            SECURE_MODE_KEY => Some(self.secure_mode.map(SecureMode::as_str)),
            SIGN_METHOD_KEY => Some(self.sign_method.map(SignMethod::as_str)),
            TIMESTAMP_KEY => Some(self.timestamp.as_deref()),
            _ => None,
        }
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)?;
        f.write_str("|")?;
        let mut separator = "";
        let mut write_pair = |f: &mut fmt::Formatter<'_>, key: &str, value: &str| {
            let result = write!(f, "{separator}{key}={value}");
            separator = ",";
            result
        };
        for (key, value) in &self.params {
            match self.known_value(key) {
                None => write_pair(f, key, value)?,
                Some(Some(typed)) => write_pair(f, key, typed)?,
                Some(None) => {}
            }
        }
        for key in [SECURE_MODE_KEY, SIGN_METHOD_KEY, TIMESTAMP_KEY] {
            if let Some(Some(typed)) = self.known_value(key)
                && self.param(key).is_none()
            {
                write_pair(f, key, typed)?;
            }
        }
        f.write_str("|")
    }
}

impl FromStr for ClientId {
    type Err = ClientIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

/// Checks the id part: 1 to [`MAX_ID_CHARS`] characters.
fn check_id(id: &str) -> Result<(), ClientIdError> {
    if id.is_empty() {
        return Err(ClientIdError::EmptyId);
    }
    let len = id.chars().count();
    if len > MAX_ID_CHARS {
        return Err(ClientIdError::IdTooLong { len });
    }
    Ok(())
}

/// Whether a key reads back unchanged from `key=value` inside the extension.
fn is_writable_key(key: &str) -> bool {
    !key.is_empty()
        && key.trim() == key
        && !key.contains([KEY_VALUE_SEPARATOR, PAIR_SEPARATOR, BAR])
}

/// Whether a value reads back unchanged from `key=value` inside the extension.
fn is_writable_value(value: &str) -> bool {
    value.trim() == value && !value.contains([PAIR_SEPARATOR, BAR])
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(key, value)| (String::from(*key), String::from(*value)))
            .collect()
    }

    #[test]
    fn empty_extension_has_no_pairs() {
        let parsed = ClientId::parse("dev||").unwrap();
        assert_eq!(parsed.id, "dev");
        assert!(parsed.params.is_empty());
        assert_eq!(parsed.to_string(), "dev||");
    }

    #[test]
    fn white_space_around_pairs_keys_and_values_is_dropped() {
        let parsed =
            ClientId::parse("x| securemode = 3 ,\n\t signmethod=hmacmd5\r\n, a = b c |").unwrap();
        assert_eq!(parsed.secure_mode, Some(SecureMode::Tcp));
        assert_eq!(parsed.sign_method, Some(SignMethod::HmacMd5));
        assert_eq!(
            parsed.params,
            pairs(&[("securemode", "3"), ("signmethod", "hmacmd5"), ("a", "b c")])
        );
    }

    #[test]
    fn a_value_may_contain_equals_signs() {
        let parsed = ClientId::parse("x|token=a=b==|").unwrap();
        assert_eq!(parsed.param("token"), Some("a=b=="));
        assert_eq!(parsed.to_string(), "x|token=a=b==|");
    }

    #[test]
    fn only_one_trailing_empty_pair_is_tolerated() {
        assert!(ClientId::parse("x|a=1,|").is_ok());
        assert!(ClientId::parse("x|a=1, \n |").is_ok());
        assert_eq!(ClientId::parse("x|a=1,,|"), Err(ClientIdError::EmptyPair));
        assert_eq!(ClientId::parse("x|,a=1|"), Err(ClientIdError::EmptyPair));
        assert_eq!(ClientId::parse("x|,|"), Err(ClientIdError::EmptyPair));
    }

    #[test]
    fn id_length_is_counted_in_characters() {
        let sixty_four_wide = "é".repeat(MAX_ID_CHARS);
        assert!(ClientId::parse(&alloc::format!("{sixty_four_wide}||")).is_ok());
        assert_eq!(
            ClientId::parse(&alloc::format!("{sixty_four_wide}e||")),
            Err(ClientIdError::IdTooLong { len: 65 })
        );
    }

    #[test]
    fn unknown_keys_may_repeat_known_keys_may_not() {
        let parsed = ClientId::parse("x|lan=C,lan=Rust|").unwrap();
        assert_eq!(parsed.params, pairs(&[("lan", "C"), ("lan", "Rust")]));
        assert_eq!(
            ClientId::parse("x|timestamp=1,timestamp=1|"),
            Err(ClientIdError::DuplicateKey("timestamp".into()))
        );
    }

    #[test]
    fn display_takes_known_values_from_the_typed_fields() {
        let mut parsed = ClientId::parse("x|signmethod=hmacsha1,a=1,securemode=3|").unwrap();
        parsed.sign_method = Some(SignMethod::HmacSha256);
        parsed.secure_mode = None;
        parsed.timestamp = Some("42".into());
        assert_eq!(
            parsed.to_string(),
            "x|signmethod=hmacsha256,a=1,timestamp=42|"
        );
    }

    #[test]
    fn builder_keeps_params_and_fields_in_step() {
        let built = ClientId::new("dev")
            .unwrap()
            .with_secure_mode(SecureMode::Tls)
            .with_sign_method(SignMethod::HmacSha1)
            .with_timestamp("1")
            .unwrap()
            .with_secure_mode(SecureMode::Tcp);
        assert_eq!(
            built.params,
            pairs(&[
                ("securemode", "3"),
                ("signmethod", "hmacsha1"),
                ("timestamp", "1")
            ])
        );
        assert_eq!(ClientId::parse(&built.to_string()), Ok(built));
    }

    #[test]
    fn builder_refuses_what_would_not_read_back() {
        assert_eq!(
            ClientId::new("a|b"),
            Err(ClientIdError::BarInId("a|b".into()))
        );
        assert_eq!(ClientId::new(""), Err(ClientIdError::EmptyId));
        let base = ClientId::new("dev").unwrap();
        for (key, value) in [
            ("", "1"),
            (" k", "1"),
            ("k=", "1"),
            ("k,", "1"),
            ("k|", "1"),
            ("k", "1,2"),
            ("k", "1|"),
            ("k", " 1"),
        ] {
            assert_eq!(
                base.clone().with_param(key, value),
                Err(ClientIdError::UnrepresentablePair(alloc::format!(
                    "{key}={value}"
                ))),
                "{key:?}={value:?}"
            );
        }
        assert_eq!(
            base.clone().with_param("securemode", "8"),
            Err(ClientIdError::UnsupportedSecureMode("8".into()))
        );
        assert_eq!(
            base.with_param("signmethod", "HMACSHA1"),
            Err(ClientIdError::UnknownSignMethod("HMACSHA1".into()))
        );
    }

    #[test]
    fn sign_method_and_secure_mode_round_trip_their_text() {
        for method in SignMethod::ALL {
            assert_eq!(method.to_string().parse::<SignMethod>(), Ok(method));
        }
        for mode in [SecureMode::Tls, SecureMode::Tcp] {
            assert_eq!(mode.to_string().parse::<SecureMode>(), Ok(mode));
        }
        let all: Vec<usize> = SignMethod::ALL.iter().map(|m| m.digest_len()).collect();
        assert_eq!(all, vec![20, 32, 16]);
    }
}
