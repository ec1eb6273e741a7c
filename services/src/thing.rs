//! The device's side of the services (PLATFORM-PROTOCOLS §1, §3, §5, §6): the requests a
//! device sends ([`ThingRequests`]), what it receives ([`DeviceDownlink::parse`]) and its
//! answers to the platform's calls ([`property_set_reply`], [`service_reply`]).
//!
//! Sans-IO like the rest of the crate: a client publishes the [`ThingRequest`]s it builds,
//! hands every message it receives to [`DeviceDownlink::parse`], and matches a reply to its
//! request with [`ThingRequest::expects`] and [`DeviceDownlink::answers`].
//!
//! ```
//! use aliot_services::{DeviceDownlink, ReplyKind, ThingRequests};
//!
//! let mut requests = ThingRequests::new("a1PK", "dev-1");
//! let post = requests.property_post(&serde_json::json!({"Power":1}), true);
//! assert_eq!(post.topic, "/sys/a1PK/dev-1/thing/event/property/post");
//! assert_eq!(
//!     post.payload,
//!     br#"{"id":"1","version":"1.0","params":{"Power":1},"sys":{"ack":1},"method":"thing.event.property.post"}"#
//! );
//! let reply = DeviceDownlink::parse(
//!     "/sys/a1PK/dev-1/thing/event/property/post_reply",
//!     br#"{"id":"1","code":200,"message":"success","data":{}}"#,
//!     "a1PK",
//!     "dev-1",
//! )
//! .unwrap();
//! assert_eq!(reply.answers(), post.expects.as_ref().map(|(kind, id)| (*kind, id.as_str())));
//! ```

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::alink::{AlinkMethod, code_of, empty_object, to_bytes};
use crate::ota::{DEFAULT_MODULE, OtaSignMethod};
use crate::request::{own_exactly, own_rest};
use crate::{UnixMillis, is_identifier};

/// Which kind of reply answers a request: the key space its id lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReplyKind {
    /// An Alink reply (`…_reply`), matched by the request's `id`.
    Alink,
    /// A shadow `reply` on `/shadow/get/…`, matched by `clientToken`.
    Shadow,
    /// An NTP response, matched by the echoed `deviceSendTime`.
    Ntp,
}

/// A request a device publishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThingRequest {
    /// Its topic.
    pub topic: String,
    /// Its payload (compact JSON).
    pub payload: Vec<u8>,
    /// Its id: the Alink `id`, the shadow's `clientToken`, the NTP `deviceSendTime`.
    pub id: String,
    /// The reply that answers it, if one is expected: its kind and the id it carries.
    pub expects: Option<(ReplyKind, String)>,
}

/// A message a device publishes that answers the platform (no reply expected).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uplink {
    /// Its topic.
    pub topic: String,
    /// Its payload (compact JSON).
    pub payload: Vec<u8>,
}

/// Builds one device's requests, allocating their ids (decimal strings from 1, as the SDKs
/// send them: the C SDK 4.x parses ids as numbers).
#[derive(Clone, Debug)]
pub struct ThingRequests {
    product_key: String,
    device_name: String,
    next_id: u32,
}

impl ThingRequests {
    /// The requests of device `product_key`/`device_name`.
    pub fn new(product_key: &str, device_name: &str) -> Self {
        ThingRequests {
            product_key: product_key.to_owned(),
            device_name: device_name.to_owned(),
            next_id: 1,
        }
    }

    /// The device's product key.
    pub fn product_key(&self) -> &str {
        &self.product_key
    }

    /// The device's name.
    pub fn device_name(&self) -> &str {
        &self.device_name
    }

    /// The next id: 1, 2, …, wrapping to 1 after `u32::MAX`.
    fn next_id(&mut self) -> String {
        let id = self.next_id;
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        format!("{id}")
    }

    fn sys_topic(&self, rest: &str) -> String {
        format!("/sys/{}/{}/{rest}", self.product_key, self.device_name)
    }

    /// An Alink request; a reply is expected unless `ack` is false.
    fn alink(&mut self, topic: String, params: &Value, ack: bool, method: &str) -> ThingRequest {
        #[derive(Serialize)]
        struct Sys {
            ack: u8,
        }
        #[derive(Serialize)]
        struct Request<'a> {
            id: &'a str,
            version: &'a str,
            params: &'a Value,
            sys: Sys,
            method: &'a str,
        }
        let id = self.next_id();
        let payload = to_bytes(&Request {
            id: &id,
            version: "1.0",
            params,
            sys: Sys { ack: u8::from(ack) },
            method,
        });
        ThingRequest {
            topic,
            payload,
            expects: ack.then(|| (ReplyKind::Alink, id.clone())),
            id,
        }
    }

    /// A property post (§1.2) on `/sys/{pk}/{dn}/thing/event/property/post`:
    /// `{"id":…,"version":"1.0","params":…,"sys":{"ack":1},"method":"thing.event.property.post"}`;
    /// `ack` false asks for no reply (`"ack":0`).
    pub fn property_post(&mut self, params: &Value, ack: bool) -> ThingRequest {
        let topic = self.sys_topic("thing/event/property/post");
        self.alink(topic, params, ack, "thing.event.property.post")
    }

    /// An event post on `/sys/{pk}/{dn}/thing/event/{identifier}/post`, its output `value`
    /// sent as `"params":{"value":…}` (the Alink document's and the Python SDK's form).
    /// `None` when `identifier` is not a thing-model identifier.
    pub fn event_post(
        &mut self,
        identifier: &str,
        value: &Value,
        ack: bool,
    ) -> Option<ThingRequest> {
        if !is_identifier(identifier) {
            return None;
        }
        let mut params = Map::new();
        params.insert("value".to_owned(), value.clone());
        let topic = self.sys_topic(&format!("thing/event/{identifier}/post"));
        let method = format!("thing.event.{identifier}.post");
        Some(self.alink(topic, &Value::Object(params), ack, &method))
    }

    /// An NTP request (§3) on `/ext/ntp/{pk}/{dn}/request`:
    /// `{"deviceSendTime":"<now>"}`, `now` on the clock the device will read its receive time
    /// from ([`NtpResponse::synced_time`]).
    pub fn ntp_request(&mut self, now: UnixMillis) -> ThingRequest {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Request<'a> {
            device_send_time: &'a str,
        }
        let id = format!("{}", now.0);
        ThingRequest {
            topic: format!("/ext/ntp/{}/{}/request", self.product_key, self.device_name),
            payload: to_bytes(&Request {
                device_send_time: &id,
            }),
            expects: Some((ReplyKind::Ntp, id.clone())),
            id,
        }
    }

    fn shadow(&mut self, method: &str, state: Option<Value>, version: Option<u64>) -> ThingRequest {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Request<'a> {
            method: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            state: Option<Value>,
            #[serde(skip_serializing_if = "Option::is_none")]
            version: Option<u64>,
            client_token: &'a str,
        }
        let n = self.next_id();
        let token = format!("{}.{}-{n}", self.product_key, self.device_name);
        ThingRequest {
            topic: format!("/shadow/update/{}/{}", self.product_key, self.device_name),
            payload: to_bytes(&Request {
                method,
                state,
                version,
                client_token: &token,
            }),
            expects: Some((ReplyKind::Shadow, token.clone())),
            id: token,
        }
    }

    /// The shadow's document (§5): `{"method":"get","clientToken":"<pk>.<dn>-<n>"}` on
    /// `/shadow/update/{pk}/{dn}`.
    pub fn shadow_get(&mut self) -> ThingRequest {
        self.shadow("get", None, None)
    }

    /// A shadow update of the reported state:
    /// `{"method":"update","state":{"reported":…},"version":N,"clientToken":…}`. The shadow
    /// takes it only when `version` is above its own.
    pub fn shadow_update(&mut self, reported: &Value, version: u64) -> ThingRequest {
        let mut state = Map::new();
        state.insert("reported".to_owned(), reported.clone());
        self.shadow("update", Some(Value::Object(state)), Some(version))
    }

    /// A shadow update that clears the desired state (what a device does once it applied a
    /// `control`): `"state":{"desired":"null"}`.
    pub fn shadow_clear_desired(&mut self, version: u64) -> ThingRequest {
        let mut state = Map::new();
        state.insert("desired".to_owned(), Value::String("null".to_owned()));
        self.shadow("update", Some(Value::Object(state)), Some(version))
    }

    fn ota(&mut self, what: &str, params: Value) -> ThingRequest {
        #[derive(Serialize)]
        struct Request<'a> {
            id: &'a str,
            params: Value,
        }
        let id = self.next_id();
        ThingRequest {
            topic: format!(
                "/ota/device/{what}/{}/{}",
                self.product_key, self.device_name
            ),
            payload: to_bytes(&Request { id: &id, params }),
            id,
            expects: None,
        }
    }

    /// An OTA version report (§6) on `/ota/device/inform/{pk}/{dn}`:
    /// `{"id":…,"params":{"version":…,"module":…}}` (no reply comes).
    pub fn ota_version(&mut self, module: &str, version: &str) -> ThingRequest {
        let mut params = Map::new();
        params.insert("version".to_owned(), Value::String(version.to_owned()));
        params.insert(
            "module".to_owned(),
            Value::String(module_or_default(module)),
        );
        self.ota("inform", Value::Object(params))
    }

    /// An OTA progress report on `/ota/device/progress/{pk}/{dn}`:
    /// `{"id":…,"params":{"step":"45","desc":…,"module":…}}`; `step` 1–100 is a percentage,
    /// -1 to -4 a failure (upgrade, download, verify, flash).
    pub fn ota_progress(&mut self, module: &str, step: i32, desc: &str) -> ThingRequest {
        let mut params = Map::new();
        params.insert("step".to_owned(), Value::String(format!("{step}")));
        params.insert("desc".to_owned(), Value::String(desc.to_owned()));
        params.insert(
            "module".to_owned(),
            Value::String(module_or_default(module)),
        );
        self.ota("progress", Value::Object(params))
    }
}

fn module_or_default(module: &str) -> String {
    if module.is_empty() {
        DEFAULT_MODULE.to_owned()
    } else {
        module.to_owned()
    }
}

/// The platform's Alink reply to one of the device's requests (§1.3).
#[derive(Clone, Debug, PartialEq)]
pub struct AlinkReply {
    /// The request's id as text (a JSON number in decimal), if the reply has one.
    pub id: Option<String>,
    /// The code: 200 success, else the platform's error (§1.6).
    pub code: i64,
    /// The message (`""` if none).
    pub message: String,
    /// `data` (`{}` if none).
    pub data: Value,
    /// What the request was, from the reply topic.
    pub method: AlinkMethod,
}

impl AlinkReply {
    /// Whether the code is 200.
    pub fn is_success(&self) -> bool {
        self.code == 200
    }
}

/// A property set from the platform (§1.4).
#[derive(Clone, Debug, PartialEq)]
pub struct PropertySet {
    /// The request's id, as text.
    pub id: String,
    /// The properties to set.
    pub params: Value,
    /// The topic the reply goes on (`…/property/set_reply`).
    pub reply_topic: String,
}

/// How a synchronous service call came (§1.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RrpcForm {
    /// `/ext/rrpc/{id}/sys/{pk}/{dn}/thing/service/{identifier}` (client id with `ext` bit 0);
    /// the answer goes on the same topic.
    Ext,
    /// `/sys/{pk}/{dn}/rrpc/request/{id}`, the service named by the body's `method`; the answer
    /// goes on `/sys/{pk}/{dn}/rrpc/response/{id}`.
    Sys,
}

/// A synchronous call's RRPC part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RrpcCall {
    /// The RRPC message id of the topic (decimal).
    pub message_id: String,
    /// The wire form.
    pub form: RrpcForm,
}

/// A service call from the platform (§1.5).
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceCall {
    /// The service's identifier.
    pub identifier: String,
    /// The request's id, as text.
    pub id: String,
    /// Its input parameters.
    pub params: Value,
    /// `Some` for a synchronous call (RRPC), `None` for an asynchronous one.
    pub rrpc: Option<RrpcCall>,
    /// The topic the answer goes on: `…/service/{identifier}_reply` for an asynchronous call,
    /// the RRPC response topic of its form for a synchronous one.
    pub reply_topic: String,
}

/// A message on `/shadow/get/{pk}/{dn}` (§5): a `reply` to the device's request, or a
/// `control` push after an application changed the shadow.
#[derive(Clone, Debug, PartialEq)]
pub struct ShadowMessage {
    /// `reply` or `control`.
    pub method: String,
    /// The echoed `clientToken` of the request answered.
    pub client_token: Option<String>,
    /// `payload.status`: `success` or `error`.
    pub status: String,
    /// The shadow's version (top-level, or the update reply's `payload.version`).
    pub version: Option<u64>,
    /// `payload.state` (`reported`, `desired`) of a get reply or a control.
    pub state: Option<Value>,
    /// `payload.metadata`.
    pub metadata: Option<Value>,
    /// `timestamp` (seconds).
    pub timestamp: Option<u64>,
    /// `payload.content.errorcode` of an error (400–408, 500).
    pub error_code: Option<u16>,
    /// `payload.content.errormessage` of an error.
    pub error_message: Option<String>,
}

impl ShadowMessage {
    /// Whether the status is `success`.
    pub fn is_success(&self) -> bool {
        self.status == "success"
    }

    /// Whether this is a `control` push.
    pub fn is_control(&self) -> bool {
        self.method == "control"
    }

    /// The desired state, if it holds one that is an object.
    pub fn desired(&self) -> Option<&Map<String, Value>> {
        self.state.as_ref()?.get("desired")?.as_object()
    }

    /// The reported state, if it holds one that is an object.
    pub fn reported(&self) -> Option<&Map<String, Value>> {
        self.state.as_ref()?.get("reported")?.as_object()
    }
}

/// An OTA upgrade push on `/ota/device/upgrade/{pk}/{dn}` (§6).
#[derive(Clone, Debug, PartialEq)]
pub struct OtaUpgrade {
    /// The job's id, as text.
    pub id: Option<String>,
    /// The module (`default` if none is named).
    pub module: String,
    /// The version to upgrade to.
    pub version: String,
    /// Where to download the firmware.
    pub url: String,
    /// Its size in bytes.
    pub size: u64,
    /// How its digest was computed, if the push names a method this crate knows.
    pub sign_method: Option<OtaSignMethod>,
    /// The digest (`sign`, or `md5` without it).
    pub sign: String,
    /// The whole `data` object (`isDiff`, `extData`, …).
    pub data: Value,
}

/// The platform's NTP response (§3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NtpResponse {
    /// `deviceSendTime`, echoed, as text.
    pub device_send_time: String,
    /// `serverRecvTime`, milliseconds since the Unix epoch.
    pub server_recv_time: u64,
    /// `serverSendTime`, milliseconds since the Unix epoch.
    pub server_send_time: u64,
}

impl NtpResponse {
    /// The time now, by the formula of §3:
    /// `(serverRecvTime + serverSendTime + deviceRecvTime - deviceSendTime) / 2`, where
    /// `device_recv_time` is read from the clock `deviceSendTime` was. `None` when
    /// `deviceSendTime` is not a number.
    pub fn synced_time(&self, device_recv_time: UnixMillis) -> Option<UnixMillis> {
        let sent = i128::from(self.device_send_time.parse::<u64>().ok()?);
        let sum = i128::from(self.server_recv_time)
            + i128::from(self.server_send_time)
            + i128::from(device_recv_time.0)
            - sent;
        u64::try_from(sum / 2).ok().map(UnixMillis)
    }
}

/// What a device receives on one of its system topics, classified.
#[derive(Clone, Debug, PartialEq)]
pub enum DeviceDownlink {
    /// The reply to an Alink request of the device.
    Reply(AlinkReply),
    /// A property set.
    PropertySet(PropertySet),
    /// A service call, asynchronous or synchronous.
    Service(ServiceCall),
    /// A shadow reply or control.
    Shadow(ShadowMessage),
    /// An OTA upgrade push.
    Upgrade(OtaUpgrade),
    /// An NTP response.
    Ntp(NtpResponse),
}

impl DeviceDownlink {
    /// Classifies a message device `product_key`/`device_name` received on `topic`; `None`
    /// for any other topic (its user topics, another device's) and for a payload that is not
    /// the JSON its topic carries (a service call without `id`, a shadow message without
    /// `method`, …), which the application then gets as it came.
    pub fn parse(
        topic: &str,
        payload: &[u8],
        product_key: &str,
        device_name: &str,
    ) -> Option<Self> {
        let rest = topic.strip_prefix('/')?;
        if let Some(sys) = rest.strip_prefix("sys/") {
            let own = own_rest(sys, product_key, device_name)?;
            return parse_sys(topic, own, payload);
        }
        if let Some(ext) = rest.strip_prefix("ext/rrpc/") {
            let (message_id, inner) = ext.split_once('/')?;
            if !is_message_id(message_id) {
                return None;
            }
            let own = own_rest(inner.strip_prefix("sys/")?, product_key, device_name)?;
            let identifier = own.strip_prefix("thing/service/")?;
            if !is_identifier(identifier) {
                return None;
            }
            let body = object(payload)?;
            return Some(DeviceDownlink::Service(ServiceCall {
                identifier: identifier.to_owned(),
                id: id_text(body.get("id")?)?,
                params: body.get("params").cloned().unwrap_or_else(empty_object),
                rrpc: Some(RrpcCall {
                    message_id: message_id.to_owned(),
                    form: RrpcForm::Ext,
                }),
                reply_topic: topic.to_owned(),
            }));
        }
        if let Some(ntp) = rest.strip_prefix("ext/ntp/") {
            if own_rest(ntp, product_key, device_name)? != "response" {
                return None;
            }
            let body = object(payload)?;
            return Some(DeviceDownlink::Ntp(NtpResponse {
                device_send_time: id_text(body.get("deviceSendTime")?)?,
                server_recv_time: number(body.get("serverRecvTime")?)?,
                server_send_time: number(body.get("serverSendTime")?)?,
            }));
        }
        if let Some(shadow) = rest.strip_prefix("shadow/get/") {
            if !own_exactly(shadow, product_key, device_name) {
                return None;
            }
            return parse_shadow(payload).map(DeviceDownlink::Shadow);
        }
        if let Some(upgrade) = rest.strip_prefix("ota/device/upgrade/") {
            if !own_exactly(upgrade, product_key, device_name) {
                return None;
            }
            return parse_upgrade(payload).map(DeviceDownlink::Upgrade);
        }
        None
    }

    /// The request this answers, as [`ThingRequest::expects`] names it: an Alink reply's id, a
    /// shadow reply's `clientToken`, an NTP response's `deviceSendTime`. `None` for the
    /// platform's own calls and pushes.
    pub fn answers(&self) -> Option<(ReplyKind, &str)> {
        match self {
            DeviceDownlink::Reply(reply) => Some((ReplyKind::Alink, reply.id.as_deref()?)),
            DeviceDownlink::Shadow(shadow) if !shadow.is_control() => {
                Some((ReplyKind::Shadow, shadow.client_token.as_deref()?))
            }
            DeviceDownlink::Ntp(ntp) => Some((ReplyKind::Ntp, &ntp.device_send_time)),
            _ => None,
        }
    }
}

/// A downlink on `/sys/{pk}/{dn}/{own}`.
fn parse_sys(topic: &str, own: &str, payload: &[u8]) -> Option<DeviceDownlink> {
    if let Some(message_id) = own.strip_prefix("rrpc/request/") {
        if !is_message_id(message_id) {
            return None;
        }
        // A plain RRPC call unless the body is a service request.
        let body = object(payload)?;
        let method = body.get("method")?.as_str()?;
        let identifier = method.strip_prefix("thing.service.")?;
        if !is_identifier(identifier) {
            return None;
        }
        let base = topic.strip_suffix(own)?;
        return Some(DeviceDownlink::Service(ServiceCall {
            identifier: identifier.to_owned(),
            id: id_text(body.get("id")?)?,
            params: body.get("params").cloned().unwrap_or_else(empty_object),
            rrpc: Some(RrpcCall {
                message_id: message_id.to_owned(),
                form: RrpcForm::Sys,
            }),
            reply_topic: format!("{base}rrpc/response/{message_id}"),
        }));
    }
    // A reply to one of the device's requests; a service may be named `…_reply` too, so a
    // topic that answers no request goes on to the calls below.
    if let Some(method) = own
        .strip_suffix("_reply")
        .and_then(AlinkMethod::from_topic_rest)
    {
        let body = object(payload)?;
        return Some(DeviceDownlink::Reply(AlinkReply {
            id: body.get("id").and_then(id_text),
            code: body.get("code").and_then(code_of).unwrap_or(0),
            message: body
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            data: body.get("data").cloned().unwrap_or_else(empty_object),
            method,
        }));
    }
    if own == "thing/service/property/set" {
        let body = object(payload)?;
        return Some(DeviceDownlink::PropertySet(PropertySet {
            id: id_text(body.get("id")?)?,
            params: body.get("params").cloned().unwrap_or_else(empty_object),
            reply_topic: format!("{topic}_reply"),
        }));
    }
    if let Some(identifier) = own.strip_prefix("thing/service/") {
        if !is_identifier(identifier) {
            return None;
        }
        let body = object(payload)?;
        return Some(DeviceDownlink::Service(ServiceCall {
            identifier: identifier.to_owned(),
            id: id_text(body.get("id")?)?,
            params: body.get("params").cloned().unwrap_or_else(empty_object),
            rrpc: None,
            reply_topic: format!("{topic}_reply"),
        }));
    }
    None
}

fn parse_shadow(payload: &[u8]) -> Option<ShadowMessage> {
    let body = object(payload)?;
    let method = body.get("method")?.as_str()?.to_owned();
    let inner = body.get("payload").and_then(Value::as_object);
    let field = |key: &str| inner.and_then(|inner| inner.get(key));
    let content = field("content");
    let version = body
        .get("version")
        .or_else(|| field("version"))
        .and_then(number);
    Some(ShadowMessage {
        method,
        client_token: body.get("clientToken").and_then(id_text),
        status: field("status")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        version,
        state: field("state").cloned(),
        metadata: field("metadata").cloned(),
        timestamp: body.get("timestamp").and_then(number),
        error_code: content
            .and_then(|content| content.get("errorcode"))
            .and_then(number)
            .and_then(|code| u16::try_from(code).ok()),
        error_message: content
            .and_then(|content| content.get("errormessage"))
            .and_then(Value::as_str)
            .map(ToOwned::to_owned),
    })
}

fn parse_upgrade(payload: &[u8]) -> Option<OtaUpgrade> {
    let body = object(payload)?;
    let data = body.get("data")?;
    let text = |key: &str| data.get(key).and_then(Value::as_str);
    let sign = text("sign").or_else(|| text("md5")).unwrap_or_default();
    Some(OtaUpgrade {
        id: body.get("id").and_then(id_text),
        module: text("module")
            .filter(|module| !module.is_empty())
            .unwrap_or(DEFAULT_MODULE)
            .to_owned(),
        version: text("version")?.to_owned(),
        url: text("url")?.to_owned(),
        size: data.get("size").and_then(number).unwrap_or(0),
        sign_method: text("signMethod").and_then(OtaSignMethod::parse),
        sign: sign.to_owned(),
        data: data.clone(),
    })
}

/// A device's answer to a property set or a service call (§1.4, §1.5).
#[derive(Clone, Debug, PartialEq)]
pub struct ThingAnswer {
    /// 200 for success; 400, 460, 429 or a device-defined 100000–110000 else (§1.6).
    pub code: i64,
    /// The output (`{}` for none).
    pub data: Value,
}

impl ThingAnswer {
    /// Success (200) with this output.
    pub fn success(data: Value) -> Self {
        ThingAnswer { code: 200, data }
    }

    /// Success (200) with no output (`{}`).
    pub fn done() -> Self {
        Self::success(empty_object())
    }

    /// A failure with this code and data.
    pub fn error(code: i64, data: Value) -> Self {
        ThingAnswer { code, data }
    }
}

/// The payload of an answer: `{"id":"<id>","code":…,"data":…}` (the C SDK 4.x's form).
fn answer_payload(id: &str, answer: &ThingAnswer) -> Vec<u8> {
    #[derive(Serialize)]
    struct Answer<'a> {
        id: &'a str,
        code: i64,
        data: &'a Value,
    }
    to_bytes(&Answer {
        id,
        code: answer.code,
        data: &answer.data,
    })
}

/// The reply to a property set, on `…/thing/service/property/set_reply`.
///
/// ```
/// use aliot_services::{DeviceDownlink, ThingAnswer, property_set_reply};
///
/// let set = DeviceDownlink::parse(
///     "/sys/pk/dn/thing/service/property/set",
///     br#"{"id":"42","version":"1.0","params":{"Light":1},"method":"thing.service.property.set"}"#,
///     "pk",
///     "dn",
/// );
/// let Some(DeviceDownlink::PropertySet(set)) = set else { panic!() };
/// let reply = property_set_reply(&set, &ThingAnswer::done());
/// assert_eq!(reply.topic, "/sys/pk/dn/thing/service/property/set_reply");
/// assert_eq!(reply.payload, br#"{"id":"42","code":200,"data":{}}"#);
/// ```
pub fn property_set_reply(set: &PropertySet, answer: &ThingAnswer) -> Uplink {
    Uplink {
        topic: set.reply_topic.clone(),
        payload: answer_payload(&set.id, answer),
    }
}

/// The answer to a service call: on `…/{identifier}_reply` for an asynchronous call, on the
/// RRPC response topic of its form for a synchronous one (the same `/ext/rrpc/…` topic, or
/// `/sys/{pk}/{dn}/rrpc/response/{id}`).
pub fn service_reply(call: &ServiceCall, answer: &ThingAnswer) -> Uplink {
    Uplink {
        topic: call.reply_topic.clone(),
        payload: answer_payload(&call.id, answer),
    }
}

/// The JSON object of `payload`, if it is one.
fn object(payload: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice(payload).ok()? {
        Value::Object(object) => Some(object),
        _ => None,
    }
}

/// An id as text: a string as it is, a number in decimal.
fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(format!("{number}")),
        _ => None,
    }
}

/// A non-negative integer, sent as a number or a decimal string.
fn number(value: &Value) -> Option<u64> {
    match value {
        Value::String(text) => text.parse().ok(),
        other => other.as_u64(),
    }
}

/// Whether `text` is a decimal RRPC message id.
fn is_message_id(text: &str) -> bool {
    !text.is_empty() && text.len() <= 20 && text.bytes().all(|b| b.is_ascii_digit())
}
