//! The RRPC topic forms (SPEC §4).

use alloc::string::{String, ToString};
use core::fmt;
use core::str::FromStr;

/// The identifier of one RRPC call, written in topics as a decimal `u64`.
///
/// Only the canonical decimal form is accepted: ASCII digits, no sign, no leading zero (except
/// `0` itself), so a message id and its topic level are one-to-one.
///
/// ```
/// use aliot_topic::{MessageId, ParseMessageIdError};
/// assert_eq!("1539421321846".parse(), Ok(MessageId(1539421321846)));
/// assert_eq!(MessageId(42).to_string(), "42");
/// assert_eq!("042".parse::<MessageId>(), Err(ParseMessageIdError::LeadingZero));
/// assert_eq!("+1".parse::<MessageId>(), Err(ParseMessageIdError::NotADigit));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub u64);

/// Why a topic level is not an RRPC message id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseMessageIdError {
    /// The text is empty.
    #[error("the message id is empty")]
    Empty,
    /// The text has a character other than an ASCII digit.
    #[error("the message id may only have the ASCII digits 0-9")]
    NotADigit,
    /// The text has a leading zero, which the canonical decimal form does not.
    #[error("the message id has a leading zero")]
    LeadingZero,
    /// The number does not fit in 64 bits.
    #[error("the message id is larger than 18446744073709551615")]
    TooLarge,
}

impl FromStr for MessageId {
    type Err = ParseMessageIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(ParseMessageIdError::Empty);
        }
        let mut value: u64 = 0;
        for digit in s.bytes() {
            if !digit.is_ascii_digit() {
                return Err(ParseMessageIdError::NotADigit);
            }
            value = value
                .checked_mul(10)
                .and_then(|value| value.checked_add(u64::from(digit - b'0')))
                .ok_or(ParseMessageIdError::TooLarge)?;
        }
        if s.len() > 1 && s.starts_with('0') {
            return Err(ParseMessageIdError::LeadingZero);
        }
        Ok(Self(value))
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// One of the RRPC topic forms of SPEC §4, parsed, borrowing the topic string.
///
/// ```
/// use aliot_topic::{MessageId, RrpcTopic};
/// let topic = RrpcTopic::parse("/sys/pk/dn/rrpc/request/7");
/// assert_eq!(
///     topic,
///     Some(RrpcTopic::Request { product_key: "pk", device_name: "dn", message_id: MessageId(7) })
/// );
/// let custom = RrpcTopic::parse("/ext/rrpc/7/pk/dn/user/get").unwrap();
/// assert_eq!(custom, RrpcTopic::Custom { message_id: MessageId(7), topic: "/pk/dn/user/get" });
/// assert_eq!(custom.to_string(), "/ext/rrpc/7/pk/dn/user/get");
/// assert_eq!(RrpcTopic::parse("/sys/pk/dn/rrpc/request/+"), None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RrpcTopic<'a> {
    /// `/sys/{productKey}/{deviceName}/rrpc/request/{messageId}`: the server's call.
    Request {
        /// The called device's product key.
        product_key: &'a str,
        /// The called device's name.
        device_name: &'a str,
        /// The call's id.
        message_id: MessageId,
    },
    /// `/sys/{productKey}/{deviceName}/rrpc/response/{messageId}`: the device's answer.
    Response {
        /// The answering device's product key.
        product_key: &'a str,
        /// The answering device's name.
        device_name: &'a str,
        /// The id of the call answered.
        message_id: MessageId,
    },
    /// `/ext/rrpc/{messageId}{topic}`: a call or its answer on one of the device's own topics.
    Custom {
        /// The call's id.
        message_id: MessageId,
        /// The device's own topic, starting with `/`.
        topic: &'a str,
    },
}

/// Whether `level` can be a product key or device name level in a parsed topic.
fn is_identity_level(level: &str) -> bool {
    !level.is_empty() && !level.contains(['+', '#'])
}

impl<'a> RrpcTopic<'a> {
    /// Parses one of the three forms; `None` for any other topic.
    ///
    /// The product key and device name must be non-empty and free of wildcards, the message
    /// id in canonical decimal, and the inner topic of the custom form must start with `/`.
    pub fn parse(topic: &'a str) -> Option<Self> {
        if let Some(rest) = topic.strip_prefix("/sys/") {
            let mut levels = rest.split('/');
            let product_key = levels.next()?;
            let device_name = levels.next()?;
            let rrpc = levels.next()?;
            let direction = levels.next()?;
            let message_id = levels.next()?.parse().ok()?;
            let valid_identity = is_identity_level(product_key) && is_identity_level(device_name);
            if levels.next().is_some() || rrpc != "rrpc" || !valid_identity {
                return None;
            }
            return match direction {
                "request" => Some(Self::Request {
                    product_key,
                    device_name,
                    message_id,
                }),
                "response" => Some(Self::Response {
                    product_key,
                    device_name,
                    message_id,
                }),
                _ => None,
            };
        }
        let rest = topic.strip_prefix("/ext/rrpc/")?;
        let id_end = rest.find('/')?;
        let (id, inner) = rest.split_at(id_end);
        Some(Self::Custom {
            message_id: id.parse().ok()?,
            topic: inner,
        })
    }

    /// The call's id.
    pub fn message_id(&self) -> MessageId {
        match *self {
            Self::Request { message_id, .. }
            | Self::Response { message_id, .. }
            | Self::Custom { message_id, .. } => message_id,
        }
    }

    /// Where the device answers this call: the response topic for a request, the same topic
    /// for the custom form, `None` for a response.
    pub fn reply(self) -> Option<Self> {
        match self {
            Self::Request {
                product_key,
                device_name,
                message_id,
            } => Some(Self::Response {
                product_key,
                device_name,
                message_id,
            }),
            Self::Custom { .. } => Some(self),
            Self::Response { .. } => None,
        }
    }
}

impl fmt::Display for RrpcTopic<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Request {
                product_key,
                device_name,
                message_id,
            } => write!(
                f,
                "/sys/{product_key}/{device_name}/rrpc/request/{message_id}"
            ),
            Self::Response {
                product_key,
                device_name,
                message_id,
            } => write!(
                f,
                "/sys/{product_key}/{device_name}/rrpc/response/{message_id}"
            ),
            Self::Custom { message_id, topic } => write!(f, "/ext/rrpc/{message_id}{topic}"),
        }
    }
}

/// `/sys/{product_key}/{device_name}/rrpc/request/{message_id}`, where the server calls.
///
/// ```
/// use aliot_topic::{rrpc_request_topic, MessageId};
/// assert_eq!(rrpc_request_topic("pk", "dn", MessageId(9)), "/sys/pk/dn/rrpc/request/9");
/// ```
pub fn rrpc_request_topic(product_key: &str, device_name: &str, message_id: MessageId) -> String {
    RrpcTopic::Request {
        product_key,
        device_name,
        message_id,
    }
    .to_string()
}

/// `/sys/{product_key}/{device_name}/rrpc/response/{message_id}`, where the device answers.
///
/// ```
/// use aliot_topic::{rrpc_response_topic, MessageId};
/// assert_eq!(rrpc_response_topic("pk", "dn", MessageId(9)), "/sys/pk/dn/rrpc/response/9");
/// ```
pub fn rrpc_response_topic(product_key: &str, device_name: &str, message_id: MessageId) -> String {
    RrpcTopic::Response {
        product_key,
        device_name,
        message_id,
    }
    .to_string()
}

/// `/ext/rrpc/{message_id}{topic}`: call and answer of custom-topic RRPC; `topic` is one of the
/// device's own topics and starts with `/`.
///
/// ```
/// use aliot_topic::{rrpc_custom_topic, MessageId};
/// assert_eq!(rrpc_custom_topic(MessageId(9), "/pk/dn/user/get"), "/ext/rrpc/9/pk/dn/user/get");
/// ```
pub fn rrpc_custom_topic(message_id: MessageId, topic: &str) -> String {
    RrpcTopic::Custom { message_id, topic }.to_string()
}

/// `/sys/{product_key}/{device_name}/rrpc/request/+`: what a device subscribes to for calls.
///
/// ```
/// use aliot_topic::rrpc_request_filter;
/// assert_eq!(rrpc_request_filter("pk", "dn"), "/sys/pk/dn/rrpc/request/+");
/// ```
pub fn rrpc_request_filter(product_key: &str, device_name: &str) -> String {
    let mut filter = String::with_capacity(product_key.len() + device_name.len() + 24);
    for part in ["/sys/", product_key, "/", device_name, "/rrpc/request/+"] {
        filter.push_str(part);
    }
    filter
}

/// `/ext/rrpc/+{topic}`: what a device subscribes to for calls on its own `topic`.
///
/// ```
/// use aliot_topic::rrpc_custom_filter;
/// assert_eq!(rrpc_custom_filter("/pk/dn/user/get"), "/ext/rrpc/+/pk/dn/user/get");
/// ```
pub fn rrpc_custom_filter(topic: &str) -> String {
    let mut filter = String::with_capacity(topic.len() + 11);
    filter.push_str("/ext/rrpc/+");
    filter.push_str(topic);
    filter
}
