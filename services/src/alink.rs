//! The Alink thing model (PLATFORM-PROTOCOLS §1): requests a device sends, the platform's
//! replies, and the downlinks the server starts (property set, service calls).

use alloc::borrow::{Cow, ToOwned};
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::{Downlink, MAX_ID_LEN};

/// A code of the platform's Alink replies (§1.6), with the message that goes with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlinkCode {
    /// The number sent as `code`.
    pub code: u32,
    /// The text sent as `message`.
    pub message: &'static str,
}

impl AlinkCode {
    /// 200: done.
    pub const SUCCESS: AlinkCode = AlinkCode {
        code: 200,
        message: "success",
    };
    /// 460: a parameter is missing or of the wrong kind.
    pub const BAD_PARAMS: AlinkCode = AlinkCode {
        code: 460,
        message: "request parameter error",
    };
    /// 6207: the payload is not JSON (or not a JSON object).
    pub const NOT_JSON: AlinkCode = AlinkCode {
        code: 6207,
        message: "request payload is not json",
    };
    /// 429: the device holds as many properties or tags as the platform keeps (ours: see
    /// [`MAX_PROPERTIES`](crate::MAX_PROPERTIES), [`MAX_TAGS`](crate::MAX_TAGS)).
    pub const TOO_MANY: AlinkCode = AlinkCode {
        code: 429,
        message: "too many properties or tags",
    };
}

/// What a device asks of the thing model; the reply goes to the request topic + `_reply`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AlinkMethod {
    /// `thing/event/property/post`
    PropertyPost,
    /// `thing/event/property/batch/post`
    BatchPost,
    /// `thing/event/property/history/post`
    HistoryPost,
    /// `thing/event/{identifier}/post`
    EventPost(String),
    /// `thing/deviceinfo/update`: tags added or changed.
    TagsUpdate,
    /// `thing/deviceinfo/delete`: tags removed.
    TagsDelete,
    /// `thing/property/desired/get`
    DesiredGet,
    /// `thing/property/desired/delete`
    DesiredDelete,
    /// `thing/ota/firmware/get`: the pending upgrade, pulled.
    FirmwareGet,
}

impl AlinkMethod {
    /// The method of a request on `/sys/{pk}/{dn}/{rest}`, if it is one (`rest` starts with
    /// `thing/`).
    pub(crate) fn from_topic_rest(rest: &str) -> Option<Self> {
        let thing = rest.strip_prefix("thing/")?;
        Some(match thing {
            "event/property/post" => AlinkMethod::PropertyPost,
            "event/property/batch/post" => AlinkMethod::BatchPost,
            "event/property/history/post" => AlinkMethod::HistoryPost,
            "deviceinfo/update" => AlinkMethod::TagsUpdate,
            "deviceinfo/delete" => AlinkMethod::TagsDelete,
            "property/desired/get" => AlinkMethod::DesiredGet,
            "property/desired/delete" => AlinkMethod::DesiredDelete,
            "ota/firmware/get" => AlinkMethod::FirmwareGet,
            other => {
                let identifier = other.strip_prefix("event/")?.strip_suffix("/post")?;
                if identifier.is_empty() || identifier.contains('/') {
                    return None;
                }
                AlinkMethod::EventPost(identifier.to_owned())
            }
        })
    }

    /// The method name the reply carries (`thing.event.property.post`, …).
    /// Borrowed but for an event's, which names its identifier.
    pub fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            AlinkMethod::PropertyPost => "thing.event.property.post",
            AlinkMethod::BatchPost => "thing.event.property.batch.post",
            AlinkMethod::HistoryPost => "thing.event.property.history.post",
            AlinkMethod::EventPost(identifier) => {
                return Cow::Owned(format!("thing.event.{identifier}.post"));
            }
            AlinkMethod::TagsUpdate => "thing.deviceinfo.update",
            AlinkMethod::TagsDelete => "thing.deviceinfo.delete",
            AlinkMethod::DesiredGet => "thing.property.desired.get",
            AlinkMethod::DesiredDelete => "thing.property.desired.delete",
            AlinkMethod::FirmwareGet => "thing.ota.firmware.get",
        })
    }
}

/// A thing-model request of a device, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlinkRequest {
    /// What it asks.
    pub method: AlinkMethod,
    /// Where and how the reply goes.
    pub reply_to: ReplyTo,
    /// Its `params`, or the code the reply carries when the request is malformed.
    pub params: Result<Value, AlinkCode>,
}

/// Where a reply goes and what it echoes.
#[derive(Clone, Debug)]
pub struct ReplyTo {
    /// The reply topic: the request topic + `_reply`.
    pub topic: String,
    /// The request's `id`, as its JSON text (`"7"` with the quotes, or `7`); `"0"` when the
    /// request had none that can be echoed.
    pub id: Box<RawValue>,
    /// `sys.ack`: whether a reply is wanted (absent means yes).
    pub ack: bool,
}

impl PartialEq for ReplyTo {
    fn eq(&self, other: &Self) -> bool {
        self.topic == other.topic && self.id.get() == other.id.get() && self.ack == other.ack
    }
}

impl Eq for ReplyTo {}

impl ReplyTo {
    /// The reply to send: `{"id":…,"code":…,"message":…,"method":…,"version":"1.0","data":…}`,
    /// or nothing when the request said `"sys":{"ack":0}`.
    pub(crate) fn reply(&self, code: AlinkCode, data: &Value, method: &str) -> Option<Downlink> {
        #[derive(Serialize)]
        // `data` last: the C SDK 4.x takes a key's first occurrence anywhere in the text, and
        // `data` may hold `version` or `method` (a desired value's, a firmware's).
        struct Reply<'a> {
            id: &'a RawValue,
            code: u32,
            message: &'a str,
            method: &'a str,
            version: &'a str,
            data: &'a Value,
        }
        if !self.ack {
            return None;
        }
        let payload = serde_json::to_vec(&Reply {
            id: &self.id,
            code: code.code,
            message: code.message,
            data,
            method,
            version: "1.0",
        })
        .ok()?;
        Some(Downlink {
            topic: self.topic.clone(),
            payload,
        })
    }
}

/// The body of a request, as far as the platform reads it. `method` is not read: the C SDK
/// 4.x sends none, so the method comes from the topic.
#[derive(serde::Deserialize)]
struct RequestBody<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(default)]
    params: Option<Value>,
    #[serde(default)]
    sys: Option<Value>,
}

/// The `id` to echo: a JSON string or number of at most [`MAX_ID_LEN`] bytes, verbatim.
pub(crate) fn echoable_id(id: Option<&RawValue>) -> Option<Box<RawValue>> {
    let id = id?;
    let text = id.get();
    let first = text.as_bytes().first()?;
    let is_string_or_number = *first == b'"' || *first == b'-' || first.is_ascii_digit();
    (is_string_or_number && text.len() <= MAX_ID_LEN).then(|| id.to_owned())
}

/// The id of a reply to a request that had none to echo.
pub(crate) fn zero_id() -> Box<RawValue> {
    RawValue::from_string(String::from("\"0\"")).unwrap_or_else(|_| unreachable_raw())
}

/// `RawValue::from_string` of a literal that is valid JSON cannot fail; this keeps the crate
/// free of `unwrap` all the same.
fn unreachable_raw() -> Box<RawValue> {
    serde_json::value::to_raw_value(&0u8).unwrap_or_default()
}

impl AlinkRequest {
    /// Parses the request `payload` of a device on `topic` (known to be one of its thing-model
    /// request topics, for `method`).
    pub(crate) fn parse(method: AlinkMethod, topic: &str, payload: &[u8]) -> Self {
        let reply_topic = format!("{topic}_reply");
        // An object, not any JSON a struct could be read from (serde takes `[id, params]` too).
        let is_object = payload.trim_ascii_start().first() == Some(&b'{');
        let body: Result<RequestBody<'_>, _> = serde_json::from_slice(payload);
        let Some(body) = body.ok().filter(|_| is_object) else {
            return AlinkRequest {
                method,
                reply_to: ReplyTo {
                    topic: reply_topic,
                    id: zero_id(),
                    ack: true,
                },
                params: Err(AlinkCode::NOT_JSON),
            };
        };
        // `"sys":{"ack":0}` turns the reply off; anything else (or nothing) leaves it on.
        let ack = body
            .sys
            .as_ref()
            .and_then(|sys| sys.get("ack"))
            .and_then(Value::as_u64)
            != Some(0);
        let echoed = echoable_id(body.id);
        let params = match (&echoed, body.params) {
            (None, _) if body.id.is_some() => Err(AlinkCode::BAD_PARAMS),
            (_, Some(params)) => Ok(params),
            (_, None) => Err(AlinkCode::BAD_PARAMS),
        };
        AlinkRequest {
            method,
            reply_to: ReplyTo {
                topic: reply_topic,
                id: echoed.unwrap_or_else(zero_id),
                ack,
            },
            params,
        }
    }
}

/// A device's answer to a downlink of the server: a property set (`…/property/set_reply`)
/// or an asynchronous service call (`…/service/{identifier}_reply`).
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceReply {
    /// The downlink's topic (the reply topic without `_reply`).
    pub request_topic: String,
    /// The request id it answers, when it is a decimal number (the server's ids are).
    pub request_id: Option<u64>,
    /// The device's code (`200` success; 400 when the reply has none or is not JSON).
    pub code: i64,
    /// The device's message, if it sent one.
    pub message: Option<String>,
    /// The device's `data` (`{}` when absent).
    pub data: Value,
}

impl DeviceReply {
    /// Reads a device's answer to the downlink on `request_topic` (also the payload of a
    /// synchronous call's RRPC answer).
    pub fn parse(request_topic: &str, payload: &[u8]) -> Self {
        Self::from_body(request_topic, serde_json::from_slice(payload).ok())
    }

    /// The same, from the answer's JSON already read (`None`: not JSON).
    pub fn from_body(request_topic: &str, body: Option<Value>) -> Self {
        let field = |key: &str| body.as_ref().and_then(|body| body.get(key));
        let request_id = field("id").and_then(|id| match id {
            Value::String(text) => text.parse().ok(),
            Value::Number(number) => number.as_u64(),
            _ => None,
        });
        DeviceReply {
            request_topic: request_topic.to_owned(),
            request_id,
            code: field("code").and_then(code_of).unwrap_or(400),
            message: field("message")
                .and_then(Value::as_str)
                .map(ToOwned::to_owned),
            data: field("data").cloned().unwrap_or_else(empty_object),
        }
    }
}

/// An Alink `code`: a number, or a string of one (the SDKs send both).
pub(crate) fn code_of(code: &Value) -> Option<i64> {
    match code {
        Value::String(text) => text.parse().ok(),
        other => other.as_i64(),
    }
}

/// `{}`.
pub(crate) fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

/// A server-to-device request: `{"id":"<id>","version":"1.0","params":…,"method":…}`, the id
/// decimal (the C SDK 4.x parses it as a number).
fn server_request(topic: String, id: u64, params: &Value, method: &str) -> Downlink {
    #[derive(Serialize)]
    struct Request<'a> {
        id: String,
        version: &'a str,
        params: &'a Value,
        method: &'a str,
    }
    let payload = serde_json::to_vec(&Request {
        id: format!("{id}"),
        version: "1.0",
        params,
        method,
    })
    .unwrap_or_default();
    Downlink { topic, payload }
}

/// The property set downlink (§1.4) on `/sys/{pk}/{dn}/thing/service/property/set`.
///
/// ```
/// let items = serde_json::json!({"LightSwitch": 1});
/// let set = aliot_services::property_set("pk", "dn", 42, &items);
/// assert_eq!(set.topic, "/sys/pk/dn/thing/service/property/set");
/// assert_eq!(
///     set.payload,
///     br#"{"id":"42","version":"1.0","params":{"LightSwitch":1},"method":"thing.service.property.set"}"#
/// );
/// ```
pub fn property_set(product_key: &str, device_name: &str, id: u64, items: &Value) -> Downlink {
    server_request(
        format!("/sys/{product_key}/{device_name}/thing/service/property/set"),
        id,
        items,
        "thing.service.property.set",
    )
}

/// A service call (§1.5) on `/sys/{pk}/{dn}/thing/service/{identifier}`. A synchronous call
/// sends the same payload through RRPC, in the device's wire form.
pub fn service_call(
    product_key: &str,
    device_name: &str,
    id: u64,
    identifier: &str,
    args: &Value,
) -> Downlink {
    server_request(
        format!("/sys/{product_key}/{device_name}/thing/service/{identifier}"),
        id,
        args,
        &format!("thing.service.{identifier}"),
    )
}

/// The bytes of a JSON value, compact.
pub(crate) fn to_bytes(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}
