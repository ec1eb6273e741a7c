//! The platform's OpenAPI request signature, RPC style, version 1.0, as the official server
//! SDKs send it: every parameter but `Signature` (the common ones and the action's, from the
//! query string and a form body alike), sorted by name, each name and value percent-encoded
//! (RFC 3986: `A-Z a-z 0-9 - _ . ~` kept, a space as `%20`), joined as `name=value` with `&`;
//! the string to sign is `METHOD&%2F&` and that string percent-encoded once more; the
//! signature is the base64 of its HMAC-SHA1 with the AccessKey secret and `&` as the key.
//!
//! A request is refused when a common parameter is missing (`MissingParameter`), its
//! AccessKey is not one of the configuration's (`InvalidAccessKeyId.NotFound`), its signature
//! differs (`SignatureDoesNotMatch`), its `Timestamp` is more than [`TIMESTAMP_WINDOW`] away
//! from the broker's clock (`InvalidTimeStamp.Expired`), or its `SignatureNonce` was seen
//! within that window (`SignatureNonceUsed`): a replayed request is refused.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;

/// How far a request's `Timestamp` may be from the broker's clock, either way (the platform's
/// 15 minutes); its nonce is remembered as long.
pub const TIMESTAMP_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Nonces remembered at most (ours): beyond, the oldest are forgotten early, and a request
/// with a nonce older than what is remembered is refused as if replayed.
const MAX_NONCES: usize = 1_000_000;

/// One `[[access_key]]` of the configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessKey {
    /// The AccessKey ID, sent in the clear.
    pub id: String,
    /// The AccessKey secret, the HMAC key.
    pub secret: String,
}

/// The AccessKeys a node accepts, shared by the OpenAPI, the console and the AMQP listener:
/// its configuration's, and in a cluster the other nodes' too, replaced as they change
/// ([`replace`](Self::replace)). Cheap to clone: clones share them.
#[derive(Clone, Default)]
pub struct AccessKeys(std::sync::Arc<std::sync::RwLock<std::sync::Arc<[AccessKey]>>>);

impl AccessKeys {
    /// These keys.
    pub fn new(keys: Vec<AccessKey>) -> Self {
        AccessKeys(std::sync::Arc::new(std::sync::RwLock::new(keys.into())))
    }

    /// The configuration's `[[access_key]]`s.
    pub fn configured(settings: &[aliot_io::config::AccessKeySettings]) -> Self {
        AccessKeys::new(
            settings
                .iter()
                .map(|key| AccessKey {
                    id: key.id.clone(),
                    secret: key.secret.clone(),
                })
                .collect(),
        )
    }

    /// The keys now.
    pub fn current(&self) -> std::sync::Arc<[AccessKey]> {
        std::sync::Arc::clone(
            &self
                .0
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// From now on, these keys (requests under way finish with the keys they started with).
    pub fn replace(&self, keys: Vec<AccessKey>) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = keys.into();
    }
}

impl From<Vec<AccessKey>> for AccessKeys {
    fn from(keys: Vec<AccessKey>) -> Self {
        AccessKeys::new(keys)
    }
}

impl std::fmt::Debug for AccessKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.current().iter()).finish()
    }
}

impl std::fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Why a signed request is refused, with the platform's error code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// A common parameter is missing.
    #[error("MissingParameter: {0} is mandatory for this action")]
    Missing(&'static str),
    /// `SignatureMethod` or `SignatureVersion` is not HMAC-SHA1 / 1.0.
    #[error("InvalidParameter: SignatureMethod HMAC-SHA1 and SignatureVersion 1.0 are supported")]
    Unsupported,
    /// No such AccessKey.
    #[error("InvalidAccessKeyId.NotFound: the AccessKey ID does not exist")]
    UnknownAccessKey,
    /// The signature is not the one the secret gives.
    #[error(
        "SignatureDoesNotMatch: the request signature does not conform to Aliyun standards \
         (server string to sign: {0})"
    )]
    Mismatch(String),
    /// `Timestamp` is not `YYYY-MM-DDThh:mm:ssZ`.
    #[error("InvalidTimeStamp.Format: Timestamp must be ISO 8601 UTC, e.g. 2026-12-05T10:00:00Z")]
    BadTimestamp,
    /// `Timestamp` is too far from now.
    #[error("InvalidTimeStamp.Expired: Timestamp is more than 15 minutes from the server's time")]
    Expired,
    /// The nonce was used already.
    #[error("SignatureNonceUsed: the SignatureNonce has been used already")]
    NonceUsed,
}

impl SignatureError {
    /// The platform's error code.
    pub fn code(&self) -> &'static str {
        match self {
            SignatureError::Missing(_) => "MissingParameter",
            SignatureError::Unsupported => "InvalidParameter",
            SignatureError::UnknownAccessKey => "InvalidAccessKeyId.NotFound",
            SignatureError::Mismatch(_) => "SignatureDoesNotMatch",
            SignatureError::BadTimestamp => "InvalidTimeStamp.Format",
            SignatureError::Expired => "InvalidTimeStamp.Expired",
            SignatureError::NonceUsed => "SignatureNonceUsed",
        }
    }
}

/// Percent-encodes as the signature wants: RFC 3986's unreserved characters stay, every other
/// byte of the UTF-8 is `%XX` (upper case).
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The string a request's signature covers: `METHOD&%2F&` and the percent-encoded canonical
/// query of every parameter but `Signature`.
pub fn string_to_sign(method: &str, params: &BTreeMap<String, String>) -> String {
    let canonical = params
        .iter()
        .filter(|(name, _)| name.as_str() != "Signature")
        .map(|(name, value)| format!("{}={}", percent_encode(name), percent_encode(value)))
        .collect::<Vec<_>>()
        .join("&");
    format!(
        "{method}&{}&{}",
        percent_encode("/"),
        percent_encode(&canonical)
    )
}

/// The signature of `string_to_sign` with `secret`.
pub fn sign(secret: &str, string_to_sign: &str) -> String {
    let key = format!("{secret}&");
    // An HMAC takes a key of any length.
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(key.as_bytes()) else {
        return String::new();
    };
    mac.update(string_to_sign.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

/// `YYYY-MM-DDThh:mm:ssZ` as ms since the Unix epoch.
pub fn parse_timestamp(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    let shape_ok = bytes.len() == 20
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && bytes[10] == b'T'
        && bytes[13] == b':'
        && bytes[16] == b':'
        && bytes[19] == b'Z';
    if !shape_ok {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<u64> {
        let digits = text.get(range)?;
        digits
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| digits.parse().ok())
            .flatten()
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1970..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm), for years from 1970.
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let year_of_era = y - era * 400;
    let day_of_year = (153 * m + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = (era * 146_097 + day_of_era).checked_sub(719_468)?;
    Some(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000)
}

/// The nonces seen within the timestamp window, so that a replayed request is refused.
#[derive(Debug, Default)]
pub struct NonceCache {
    seen: HashMap<String, u64>,
    /// `(when it was seen, nonce)`, oldest first.
    order: VecDeque<(u64, String)>,
    /// Nonces seen before this wall-clock ms may have been forgotten (too old, or too many).
    forgotten_before: u64,
}

impl NonceCache {
    /// Remembers `nonce` at `now_ms`; `false` if it was seen within the window.
    fn remember(&mut self, nonce: &str, timestamp_ms: u64, now_ms: u64) -> bool {
        let window = TIMESTAMP_WINDOW.as_millis() as u64;
        while let Some((at, _)) = self.order.front() {
            if *at + 2 * window > now_ms && self.order.len() < MAX_NONCES {
                break;
            }
            if let Some((at, old)) = self.order.pop_front() {
                self.seen.remove(&old);
                self.forgotten_before = self.forgotten_before.max(at + 1);
            }
        }
        // A request older than what is still remembered could be a replay of a forgotten one.
        if timestamp_ms.saturating_add(window) < self.forgotten_before
            || self.seen.contains_key(nonce)
        {
            return false;
        }
        self.seen.insert(nonce.to_owned(), now_ms);
        self.order.push_back((now_ms, nonce.to_owned()));
        true
    }
}

/// Checks a request's signature against the AccessKeys, at `now_ms` (the wall clock), and
/// remembers its nonce. Gives the AccessKey that signed it.
pub fn verify<'k>(
    method: &str,
    params: &BTreeMap<String, String>,
    keys: &'k [AccessKey],
    now_ms: u64,
    nonces: &mut NonceCache,
) -> Result<&'k AccessKey, SignatureError> {
    let param = |name: &'static str| {
        params
            .get(name)
            .filter(|value| !value.is_empty())
            .ok_or(SignatureError::Missing(name))
    };
    let id = param("AccessKeyId")?;
    let signature = param("Signature")?;
    let nonce = param("SignatureNonce")?;
    let timestamp = param("Timestamp")?;
    let method_ok = param("SignatureMethod")? == "HMAC-SHA1";
    let version_ok = param("SignatureVersion")? == "1.0";
    if !method_ok || !version_ok {
        return Err(SignatureError::Unsupported);
    }
    let key = keys
        .iter()
        .find(|key| key.id == *id)
        .ok_or(SignatureError::UnknownAccessKey)?;
    let to_sign = string_to_sign(method, params);
    let expected = sign(&key.secret, &to_sign);
    if !bool::from(expected.as_bytes().ct_eq(signature.as_bytes())) {
        return Err(SignatureError::Mismatch(to_sign));
    }
    let at = parse_timestamp(timestamp).ok_or(SignatureError::BadTimestamp)?;
    let window = TIMESTAMP_WINDOW.as_millis() as u64;
    if at.abs_diff(now_ms) > window {
        return Err(SignatureError::Expired);
    }
    if !nonces.remember(nonce, at, now_ms) {
        return Err(SignatureError::NonceUsed);
    }
    Ok(key)
}

/// The newer SDKs' signature, `ACS3-HMAC-SHA256` in the `Authorization` header
/// (`Credential=<AccessKey ID>,SignedHeaders=<names>,Signature=<hex>`): the canonical request
/// (`METHOD\n/path\nsorted query\nsigned headers as name:value lines\nnames;joined\n` and
/// the hex SHA-256 of the body) is hashed, `ACS3-HMAC-SHA256\n<hex hash>` is signed with
/// HMAC-SHA256 and the secret. The date is `x-acs-date`, the nonce `x-acs-signature-nonce`,
/// both signed.
pub struct SignedV3<'a> {
    /// The HTTP method.
    pub method: &'a str,
    /// The path, as sent.
    pub path: &'a str,
    /// The query string's parameters (not the body's).
    pub query: &'a BTreeMap<String, String>,
    /// The request's headers, names in lower case.
    pub headers: &'a BTreeMap<String, Vec<String>>,
    /// The body, as sent.
    pub body: &'a [u8],
    /// The `Authorization` header.
    pub authorization: &'a str,
}

/// Hex of bytes, lower case.
pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Checks an `ACS3-HMAC-SHA256` request at `now_ms` and remembers its nonce; the AccessKey
/// that signed it.
pub fn verify_v3<'k>(
    request: &SignedV3<'_>,
    keys: &'k [AccessKey],
    now_ms: u64,
    nonces: &mut NonceCache,
) -> Result<&'k AccessKey, SignatureError> {
    let fields = request
        .authorization
        .strip_prefix("ACS3-HMAC-SHA256 ")
        .ok_or(SignatureError::Unsupported)?;
    let field = |name: &str| {
        fields
            .split(',')
            .find_map(|part| part.trim().strip_prefix(name)?.strip_prefix('='))
    };
    let id = field("Credential").ok_or(SignatureError::Missing("Credential"))?;
    let signed_headers = field("SignedHeaders").ok_or(SignatureError::Missing("SignedHeaders"))?;
    let signature = field("Signature").ok_or(SignatureError::Missing("Signature"))?;
    let header = |name: &str| {
        request
            .headers
            .get(name)
            .and_then(|values| values.first())
            .map(String::as_str)
    };
    let date = header("x-acs-date").ok_or(SignatureError::Missing("x-acs-date"))?;
    let nonce =
        header("x-acs-signature-nonce").ok_or(SignatureError::Missing("x-acs-signature-nonce"))?;
    let names: Vec<&str> = signed_headers.split(';').collect();
    if !names.contains(&"x-acs-date") || !names.contains(&"x-acs-signature-nonce") {
        return Err(SignatureError::Missing(
            "x-acs-date and x-acs-signature-nonce signed",
        ));
    }
    let key = keys
        .iter()
        .find(|key| key.id == id)
        .ok_or(SignatureError::UnknownAccessKey)?;
    let query = request
        .query
        .iter()
        .map(|(name, value)| format!("{}={}", percent_encode(name), percent_encode(value)))
        .collect::<Vec<_>>()
        .join("&");
    let mut canonical_headers = String::new();
    for name in &names {
        let mut values: Vec<&str> = request
            .headers
            .get(*name)
            .map(|values| values.iter().map(|value| value.trim()).collect())
            .unwrap_or_default();
        values.sort_unstable();
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    let canonical = format!(
        "{}\n{}\n{query}\n{canonical_headers}\n{signed_headers}\n{}",
        request.method,
        if request.path.is_empty() {
            "/"
        } else {
            request.path
        },
        hex(&Sha256::digest(request.body)),
    );
    let to_sign = format!(
        "ACS3-HMAC-SHA256\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key.secret.as_bytes()) else {
        return Err(SignatureError::Mismatch(to_sign));
    };
    mac.update(to_sign.as_bytes());
    let expected = hex(&mac.finalize().into_bytes());
    if !bool::from(
        expected
            .as_bytes()
            .ct_eq(signature.to_ascii_lowercase().as_bytes()),
    ) {
        return Err(SignatureError::Mismatch(canonical));
    }
    let at = parse_timestamp(date).ok_or(SignatureError::BadTimestamp)?;
    if at.abs_diff(now_ms) > TIMESTAMP_WINDOW.as_millis() as u64 {
        return Err(SignatureError::Expired);
    }
    if !nonces.remember(nonce, at, now_ms) {
        return Err(SignatureError::NonceUsed);
    }
    Ok(key)
}

/// Request parameters from pairs (tests).
#[cfg(test)]
pub(super) fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of the platform's signature documentation: DescribeRegions with
    /// AccessKey `testid` / `testsecret` (its parameter is spelt `TimeStamp` there), signed
    /// `CT9X0VtwR86fNWSnsc6v8YGOjuE=`.
    #[test]
    fn the_documented_example_signs_as_documented() {
        let request = params(&[
            ("AccessKeyId", "testid"),
            ("Action", "DescribeRegions"),
            ("Format", "XML"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf"),
            ("SignatureVersion", "1.0"),
            ("TimeStamp", "2016-02-23T12:46:24Z"),
            ("Version", "2014-05-26"),
        ]);
        let to_sign = string_to_sign("GET", &request);
        assert_eq!(
            to_sign,
            "GET&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeRegions%26Format%3DXML%26\
             SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf%26\
             SignatureVersion%3D1.0%26TimeStamp%3D2016-02-23T12%253A46%253A24Z%26Version%3D2014-05-26"
        );
        assert_eq!(sign("testsecret", &to_sign), "CT9X0VtwR86fNWSnsc6v8YGOjuE=");
    }

    /// A request signed the way `alibabacloud_openapi_util.get_authorization` (0.2.4) signs
    /// one; the SDK itself is driven by the interop run (`openapi_tea.py`).
    #[test]
    fn an_acs3_request_is_checked_and_not_replayed() {
        let keys = [AccessKey {
            id: "LTAIaliot".into(),
            secret: "right".into(),
        }];
        let query = params(&[("ProductKey", "a1Prod"), ("DeviceName", "dev 1")]);
        let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, value) in [
            ("host", "127.0.0.1:8080"),
            ("x-acs-action", "QueryDeviceDetail"),
            ("x-acs-date", "2026-12-05T10:00:00Z"),
            ("x-acs-signature-nonce", "n-1"),
            ("x-acs-version", "2018-01-20"),
        ] {
            headers.insert(name.into(), vec![value.into()]);
        }
        let canonical_query = "DeviceName=dev%201&ProductKey=a1Prod";
        let names = "host;x-acs-action;x-acs-date;x-acs-signature-nonce;x-acs-version";
        let lines: String = headers
            .iter()
            .map(|(name, values)| format!("{name}:{}\n", values[0]))
            .collect();
        let canonical = format!(
            "GET\n/\n{canonical_query}\n{lines}\n{names}\n{}",
            hex(&Sha256::digest(b""))
        );
        let to_sign = format!(
            "ACS3-HMAC-SHA256\n{}",
            hex(&Sha256::digest(canonical.as_bytes()))
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(b"right").unwrap();
        mac.update(to_sign.as_bytes());
        let authorization = format!(
            "ACS3-HMAC-SHA256 Credential=LTAIaliot,SignedHeaders={names},Signature={}",
            hex(&mac.finalize().into_bytes())
        );
        let request = SignedV3 {
            method: "GET",
            path: "/",
            query: &query,
            headers: &headers,
            body: b"",
            authorization: &authorization,
        };
        let now = parse_timestamp("2026-12-05T10:01:00Z").unwrap();
        let mut nonces = NonceCache::default();
        assert!(verify_v3(&request, &keys, now, &mut nonces).is_ok());
        assert_eq!(
            verify_v3(&request, &keys, now, &mut nonces),
            Err(SignatureError::NonceUsed)
        );
        let tampered = SignedV3 {
            body: b"x",
            ..request
        };
        assert!(matches!(
            verify_v3(&tampered, &keys, now, &mut NonceCache::default()),
            Err(SignatureError::Mismatch(_))
        ));
    }

    #[test]
    fn percent_encoding_keeps_only_the_unreserved() {
        assert_eq!(percent_encode("a b*c~d+e/é"), "a%20b%2Ac~d%2Be%2F%C3%A9");
    }

    #[test]
    fn timestamps_are_iso_8601_utc() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_timestamp("2016-02-23T12:46:24Z"),
            Some(1_456_231_584_000)
        );
        assert_eq!(
            parse_timestamp("2024-02-29T23:59:59Z"),
            Some(1_709_251_199_000)
        );
        for bad in [
            "2016-02-23 12:46:24Z",
            "2016-13-01T00:00:00Z",
            "x",
            "2016-02-23T12:46:24",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_signed_request_passes_once_and_a_replay_or_a_wrong_secret_does_not() {
        let keys = [AccessKey {
            id: "LTAIaliot".into(),
            secret: "right".into(),
        }];
        let now = parse_timestamp("2026-12-05T10:00:00Z").unwrap();
        let mut request = params(&[
            ("AccessKeyId", "LTAIaliot"),
            ("Action", "QueryProductList"),
            ("Format", "JSON"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureNonce", "n-1"),
            ("SignatureVersion", "1.0"),
            ("Timestamp", "2026-12-05T10:01:00Z"),
            ("Version", "2018-01-20"),
        ]);
        let signature = sign("right", &string_to_sign("POST", &request));
        request.insert("Signature".into(), signature);
        let mut nonces = NonceCache::default();
        assert!(verify("POST", &request, &keys, now, &mut nonces).is_ok());
        assert_eq!(
            verify("POST", &request, &keys, now, &mut nonces),
            Err(SignatureError::NonceUsed)
        );
        // Another method signs another string.
        assert!(matches!(
            verify("GET", &request, &keys, now, &mut NonceCache::default()),
            Err(SignatureError::Mismatch(_))
        ));
        let wrong = [AccessKey {
            id: "LTAIaliot".into(),
            secret: "wrong".into(),
        }];
        assert!(matches!(
            verify("POST", &request, &wrong, now, &mut NonceCache::default()),
            Err(SignatureError::Mismatch(_))
        ));
        let later = now + 20 * 60 * 1000;
        assert_eq!(
            verify("POST", &request, &keys, later, &mut NonceCache::default()),
            Err(SignatureError::Expired)
        );
        request.remove("SignatureNonce");
        assert_eq!(
            verify("POST", &request, &keys, now, &mut nonces),
            Err(SignatureError::Missing("SignatureNonce"))
        );
    }
}
