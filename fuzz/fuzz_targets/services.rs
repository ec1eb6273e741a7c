//! One device's service state (`aliot-services`, product `pk`, device `dn`) driven by an
//! `arbitrary` script: device PUBLISHes on every service topic of `DeviceMessage::parse`, on
//! topics that are not service topics and on another device's, with raw or JSON-ish payloads
//! (ids of every JSON type and size, `sys.ack`, properties, tags, desired values, shadow
//! states and versions, OTA reports); an application's shadow updates; `set_desired`;
//! `start_ota` with validated jobs; the wall clock moving forward. Checked after every step
//! against a model of the device written from PLATFORM-PROTOCOLS §0.3, §1, §3, §5, §6:
//!
//! - `parse` never panics, gives `None` exactly for topics that are not the device's service
//!   topics, and the kind of request its topic says;
//! - every payload sent is compact JSON (UTF-8, no whitespace outside strings);
//! - an Alink reply goes to the request topic + `_reply` and is an object with the keys `id`,
//!   `code`, `message`, `data`, `method`, `version` in that order, `code` a number, `message`
//!   a string, `data` an object, the method the topic's; its `id` is the request's id text
//!   (trimmed) when that was a string or number of at most 256 bytes, else `"0"`; a reply
//!   comes unless the request's `sys.ack` was the number 0; a request that is not a JSON
//!   object gets 6207; when the request is strict JSON, its code, `data` and the state it
//!   leaves (properties, tags, desired values) are the model's, and a refused request
//!   changes nothing;
//! - NTP: a reply exactly when `deviceSendTime` is a string (≤ 32 bytes) or number, its three
//!   fields strings, the device's time echoed, the server's both `now`;
//! - the shadow (reported, desired, version) is the model's after every device or
//!   application request, the reply's error code or version too, `clientToken` echoed,
//!   `payload` the last top-level key; the version never decreases except to 0 after a
//!   version -1 request; no section holds more than 128 attributes;
//! - OTA: the jobs not yet done are the model's (cleared by a report of their version or a
//!   failed step), every push carries its job (`id` a number, `signMethod` `Md5`/`SHA256`,
//!   `md5` only for Md5), and a firmware pull answers with the job of the module asked for;
//! - a device's answer to a downlink (`…_reply`) is a result with its code and id, no reply;
//! - `Handled::malformed` exactly when the reply carries an error code (Alink, shadow) or no
//!   answer can be made (NTP without its time, an OTA report without a version, progress
//!   without a step);
//! - at most `MAX_PROPERTIES` properties and `MAX_TAGS` tags, ever.
#![no_main]

use std::collections::BTreeMap;
use std::fmt::Write as _;

use aliot_services::{
    AlinkMethod, DeviceMessage, DeviceState, Downlink, Handled, MAX_PROPERTIES, MAX_TAGS, OtaJob,
    OtaSignMethod, PropertyValue, ShadowRequest, UnixMillis,
};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

const PK: &str = "pk";
const DN: &str = "dn";
/// The longest request id echoed (`aliot_services::MAX_ID_LEN`).
const MAX_ID_LEN: usize = 256;
/// Attributes a shadow section holds at most (the crate's `MAX_SHADOW_ATTRIBUTES`, not
/// exported).
const MAX_SHADOW_ATTRIBUTES: usize = 128;
const MAX_NAME_LEN: usize = 128;
const MAX_OPS: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Method {
    PropertyPost,
    BatchPost,
    HistoryPost,
    EventPost,
    TagsUpdate,
    TagsDelete,
    DesiredGet,
    DesiredDelete,
    FirmwareGet,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Alink(Method),
    Reply,
    Ntp,
    Shadow,
    OtaReport,
    OtaProgress,
    NotService,
}

/// Every service topic of the device, then topics that are not (its own and another
/// device's).
const TOPICS: [(&str, Kind); 32] = [
    (
        "/sys/pk/dn/thing/event/property/post",
        Kind::Alink(Method::PropertyPost),
    ),
    (
        "/sys/pk/dn/thing/event/property/batch/post",
        Kind::Alink(Method::BatchPost),
    ),
    (
        "/sys/pk/dn/thing/event/property/history/post",
        Kind::Alink(Method::HistoryPost),
    ),
    (
        "/sys/pk/dn/thing/event/alarm/post",
        Kind::Alink(Method::EventPost),
    ),
    (
        "/sys/pk/dn/thing/event/x\"y\\z/post",
        Kind::Alink(Method::EventPost),
    ),
    (
        "/sys/pk/dn/thing/deviceinfo/update",
        Kind::Alink(Method::TagsUpdate),
    ),
    (
        "/sys/pk/dn/thing/deviceinfo/delete",
        Kind::Alink(Method::TagsDelete),
    ),
    (
        "/sys/pk/dn/thing/property/desired/get",
        Kind::Alink(Method::DesiredGet),
    ),
    (
        "/sys/pk/dn/thing/property/desired/delete",
        Kind::Alink(Method::DesiredDelete),
    ),
    (
        "/sys/pk/dn/thing/ota/firmware/get",
        Kind::Alink(Method::FirmwareGet),
    ),
    ("/sys/pk/dn/thing/service/property/set_reply", Kind::Reply),
    ("/sys/pk/dn/thing/service/reboot_reply", Kind::Reply),
    ("/ext/ntp/pk/dn/request", Kind::Ntp),
    ("/shadow/update/pk/dn", Kind::Shadow),
    ("/ota/device/inform/pk/dn", Kind::OtaReport),
    ("/ota/device/progress/pk/dn", Kind::OtaProgress),
    ("/pk/dn/user/update", Kind::NotService),
    (
        "/sys/pk/dn/thing/event/property/post_reply",
        Kind::NotService,
    ),
    ("/sys/pk/dn/thing/topo/add", Kind::NotService),
    ("/sys/pk/dn/rrpc/response/1", Kind::NotService),
    ("/sys/pk/dn/thing/service/a/b_reply", Kind::NotService),
    ("/sys/pk/dn/thing/service/property/set", Kind::NotService),
    ("/ext/ntp/pk/dn/response", Kind::NotService),
    ("/shadow/get/pk/dn", Kind::NotService),
    ("/ota/device/upgrade/pk/dn", Kind::NotService),
    ("sys/pk/dn/thing/event/property/post", Kind::NotService),
    ("/sys/pk/dn2/thing/event/property/post", Kind::NotService),
    ("/sys/pk/d/thing/deviceinfo/update", Kind::NotService),
    (
        "/sys/pk2/dn/thing/service/property/set_reply",
        Kind::NotService,
    ),
    ("/ext/ntp/pk/dnx/request", Kind::NotService),
    ("/shadow/update/pk/dn/x", Kind::NotService),
    ("/ota/device/progress/px/dn", Kind::NotService),
];

// ---------------------------------------------------------------------------------------------
// Reading what the crate sends.

/// A JSON object's members in their order, each value's text as written.
struct Members(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    members.push((key, map.next_value::<Box<RawValue>>()?));
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(MembersVisitor)
    }
}

impl Members {
    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(key, _)| key.as_str()).collect()
    }

    /// The value's text, without the whitespace around it.
    fn raw(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, value)| value.get().trim_matches([' ', '\t', '\n', '\r']))
    }

    fn count(&self, key: &str) -> usize {
        self.0.iter().filter(|(k, _)| k == key).count()
    }
}

/// Checks a payload the crate sends: UTF-8, JSON (by the grammar: an echoed id may be a
/// number `serde_json` will not hold), compact; its top-level members.
fn sent(payload: &[u8], what: &str) -> Members {
    let text = std::str::from_utf8(payload)
        .unwrap_or_else(|_| panic!("{what}: not UTF-8: {:?}", String::from_utf8_lossy(payload)));
    assert!(
        serde_json::from_slice::<IgnoredAny>(payload).is_ok(),
        "{what}: not JSON: {text}"
    );
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else {
            assert!(
                !matches!(c, ' ' | '\t' | '\n' | '\r'),
                "{what}: not compact: {text}"
            );
            in_string = c == '"';
        }
    }
    serde_json::from_slice(payload).unwrap_or_else(|_| panic!("{what}: not an object: {text}"))
}

fn strict(payload: &[u8]) -> Option<Value> {
    serde_json::from_slice(payload).ok()
}

/// Whether a top-level object names `key` more than once (after unescaping: `"a"` and
/// `"\u0061"` are one name).
fn names_twice(payload: &[u8], key: &str) -> bool {
    struct Names(Vec<String>);
    impl<'de> Visitor<'de> for Names {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Vec<String>, A::Error> {
            while let Some(name) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                self.0.push(name);
            }
            Ok(self.0)
        }
    }
    let mut reader = serde_json::Deserializer::from_slice(payload);
    reader
        .deserialize_map(Names(Vec::new()))
        .is_ok_and(|names| names.iter().filter(|name| *name == key).count() > 1)
}

/// A top-level object's fields, their values as written (not decoded: a string value with a
/// lone surrogate escape is still a field).
fn fields(payload: &[u8]) -> Option<BTreeMap<String, Box<RawValue>>> {
    serde_json::from_slice(payload).ok()
}

fn text(payload: &[u8]) -> String {
    String::from_utf8_lossy(payload).into_owned()
}

// ---------------------------------------------------------------------------------------------
// The model.

/// What the thing model keeps, as read through the crate's accessors.
#[derive(Clone, Debug, PartialEq)]
struct Things {
    properties: BTreeMap<String, PropertyValue>,
    tags: BTreeMap<String, String>,
    desired: BTreeMap<String, (Value, u64)>,
}

impl Things {
    fn of(device: &DeviceState) -> Self {
        Things {
            properties: device
                .properties()
                .map(|(name, value)| (name.to_owned(), value.clone()))
                .collect(),
            tags: device
                .tags()
                .map(|(key, value)| (key.to_owned(), value.to_owned()))
                .collect(),
            desired: device
                .desired()
                .map(|(name, d)| (name.to_owned(), (d.value.clone(), d.version)))
                .collect(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
struct ShadowModel {
    reported: Map<String, Value>,
    desired: Map<String, Value>,
    version: u64,
}

/// What a shadow request does to the model: the get it asks, the change it made (and
/// whether it was a reset to version 0), or the error code.
enum ShadowOutcome {
    Get,
    Changed { reset: bool },
    Refused(u16),
}

impl ShadowModel {
    /// §5 (and the crate's documented choices: no version, or an application's 0, adds one;
    /// 128 attributes a section; `null` or `"null"` clears).
    fn apply(&mut self, payload: &[u8], from_app: bool) -> (Option<String>, ShadowOutcome) {
        let Some(Value::Object(body)) = strict(payload) else {
            return (None, ShadowOutcome::Refused(400));
        };
        let token = match body.get("clientToken") {
            Some(Value::String(token)) => Some(token.clone()),
            Some(Value::Number(number)) => Some(number.to_string()),
            _ => None,
        };
        let version = match body.get("version") {
            Some(Value::String(text)) => text.parse::<i64>().ok(),
            Some(other) => other.as_i64(),
            None => None,
        };
        let outcome = match body.get("method").and_then(Value::as_str) {
            None => ShadowOutcome::Refused(401),
            Some("get") if from_app => ShadowOutcome::Refused(406),
            Some("get") => ShadowOutcome::Get,
            Some(method @ ("update" | "delete")) => match body.get("state") {
                None | Some(Value::Null) => ShadowOutcome::Refused(402),
                Some(state) => match self.change(state, version, method == "delete", from_app) {
                    Ok(reset) => ShadowOutcome::Changed { reset },
                    Err(code) => ShadowOutcome::Refused(code),
                },
            },
            Some(_) => ShadowOutcome::Refused(406),
        };
        (token, outcome)
    }

    fn change(
        &mut self,
        state: &Value,
        version: Option<i64>,
        delete: bool,
        from_app: bool,
    ) -> std::result::Result<bool, u16> {
        let next = match version {
            Some(-1) => {
                *self = ShadowModel::default();
                return Ok(true);
            }
            None => self.version + 1,
            Some(0) if from_app => self.version + 1,
            Some(v) if v > 0 && v as u64 > self.version => v as u64,
            Some(_) => return Err(403),
        };
        let Value::Object(state) = state else {
            return Err(402);
        };
        let (reported, desired) = (state.get("reported"), state.get("desired"));
        if reported.is_none() && desired.is_none() {
            return Err(404);
        }
        let mut changed = self.clone();
        for (section, value) in [
            (&mut changed.reported, reported),
            (&mut changed.desired, desired),
        ] {
            let Some(value) = value else { continue };
            match value {
                Value::Null => section.clear(),
                Value::String(text) if text == "null" => section.clear(),
                Value::Object(attributes) => {
                    for (key, value) in attributes {
                        if delete || value.is_null() || value.as_str() == Some("null") {
                            section.remove(key);
                        } else {
                            section.insert(key.clone(), value.clone());
                        }
                    }
                    if section.len() > MAX_SHADOW_ATTRIBUTES {
                        return Err(408);
                    }
                }
                _ => return Err(405),
            }
        }
        changed.version = next;
        *self = changed;
        Ok(false)
    }
}

struct World {
    device: DeviceState,
    now: UnixMillis,
    shadow: ShadowModel,
    /// The jobs not yet done, by module.
    jobs: BTreeMap<String, OtaJob>,
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_LEN
}

/// A posted property value: `{"value":…,"time":…}` (time in ms, optional) or the bare value.
fn timed(value: &Value, now: UnixMillis) -> Option<PropertyValue> {
    match value {
        Value::Object(fields) if fields.contains_key("value") => Some(PropertyValue {
            value: fields["value"].clone(),
            time: match fields.get("time") {
                None => now,
                Some(time) => UnixMillis(time.as_u64()?),
            },
        }),
        other => Some(PropertyValue {
            value: other.clone(),
            time: now,
        }),
    }
}

/// What a successful request's reply carries as `data`.
enum Data {
    Empty,
    Exactly(Value),
    Job(Option<OtaJob>),
}

const BAD_PARAMS: u32 = 460;
const TOO_MANY: u32 = 429;

/// The model of one well-formed thing-model request: the code, and on success the `data` and
/// what the device keeps after it.
fn alink_model(
    method: Method,
    params: &Value,
    things: &mut Things,
    jobs: &BTreeMap<String, OtaJob>,
    now: UnixMillis,
) -> std::result::Result<Data, u32> {
    let mut posted: Vec<(String, PropertyValue)> = Vec::new();
    match method {
        Method::PropertyPost => {
            for (name, value) in params.as_object().ok_or(BAD_PARAMS)? {
                if !valid_name(name) {
                    return Err(BAD_PARAMS);
                }
                posted.push((name.clone(), timed(value, now).ok_or(BAD_PARAMS)?));
            }
        }
        Method::BatchPost => {
            let batch = params.as_object().ok_or(BAD_PARAMS)?;
            if let Some(properties) = batch.get("properties") {
                for (name, samples) in properties.as_object().ok_or(BAD_PARAMS)? {
                    if !valid_name(name) {
                        return Err(BAD_PARAMS);
                    }
                    let mut latest: Option<PropertyValue> = None;
                    for sample in samples.as_array().ok_or(BAD_PARAMS)? {
                        let sample = timed(sample, now).ok_or(BAD_PARAMS)?;
                        if latest.as_ref().is_none_or(|kept| sample.time >= kept.time) {
                            latest = Some(sample);
                        }
                    }
                    posted.extend(latest.map(|value| (name.clone(), value)));
                }
            }
        }
        Method::HistoryPost => {
            for entry in params.as_array().ok_or(BAD_PARAMS)? {
                // One object of properties, or an array of them (the platform's sample).
                let groups = match entry.get("properties") {
                    None => continue,
                    Some(Value::Array(groups)) => groups.clone(),
                    Some(group) => vec![group.clone()],
                };
                for group in &groups {
                    for (name, value) in group.as_object().ok_or(BAD_PARAMS)? {
                        if !valid_name(name) {
                            return Err(BAD_PARAMS);
                        }
                        posted.push((name.clone(), timed(value, now).ok_or(BAD_PARAMS)?));
                    }
                }
            }
        }
        Method::EventPost => {
            params.as_object().ok_or(BAD_PARAMS)?;
            return Ok(Data::Empty);
        }
        Method::TagsUpdate => {
            let mut tags = things.tags.clone();
            for tag in params.as_array().ok_or(BAD_PARAMS)? {
                let key = tag
                    .get("attrKey")
                    .and_then(Value::as_str)
                    .filter(|key| valid_name(key))
                    .ok_or(BAD_PARAMS)?;
                let value = match tag.get("attrValue") {
                    Some(Value::String(text)) => text.clone(),
                    Some(Value::Number(number)) => number.to_string(),
                    _ => return Err(BAD_PARAMS),
                };
                tags.insert(key.to_owned(), value);
            }
            if tags.len() > MAX_TAGS {
                return Err(TOO_MANY);
            }
            things.tags = tags;
            return Ok(Data::Empty);
        }
        Method::TagsDelete => {
            let mut keys = Vec::new();
            for tag in params.as_array().ok_or(BAD_PARAMS)? {
                keys.push(
                    tag.get("attrKey")
                        .and_then(Value::as_str)
                        .ok_or(BAD_PARAMS)?,
                );
            }
            for key in keys {
                things.tags.remove(key);
            }
            return Ok(Data::Empty);
        }
        Method::DesiredGet => {
            let mut data = Map::new();
            for name in params.as_array().ok_or(BAD_PARAMS)? {
                let name = name.as_str().ok_or(BAD_PARAMS)?;
                if let Some((value, version)) = things.desired.get(name) {
                    data.insert(
                        name.to_owned(),
                        serde_json::json!({"value": value, "version": version}),
                    );
                }
            }
            return Ok(Data::Exactly(Value::Object(data)));
        }
        Method::DesiredDelete => {
            for (name, which) in params.as_object().ok_or(BAD_PARAMS)? {
                let version = which.get("version").and_then(Value::as_u64);
                if let Some((_, current)) = things.desired.get(name) {
                    if version.is_none_or(|version| version == *current) {
                        things.desired.remove(name);
                    }
                }
            }
            return Ok(Data::Empty);
        }
        Method::FirmwareGet => {
            let job = match params.get("module").and_then(Value::as_str) {
                Some(module) => jobs.get(module),
                None => jobs.values().next(),
            };
            return Ok(Data::Job(job.cloned()));
        }
    }
    let new = posted
        .iter()
        .filter(|(name, _)| !things.properties.contains_key(name))
        .map(|(name, _)| name)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    if things.properties.len() + new > MAX_PROPERTIES {
        return Err(TOO_MANY);
    }
    for (name, value) in posted {
        match things.properties.get(&name) {
            Some(kept) if kept.time > value.time => {}
            _ => {
                things.properties.insert(name, value);
            }
        }
    }
    Ok(Data::Empty)
}

/// Whether an id's text is echoed: a JSON string or number of at most 256 bytes.
fn echoable(id: &str) -> bool {
    let first = id.as_bytes().first().copied().unwrap_or(b' ');
    (first == b'"' || first == b'-' || first.is_ascii_digit()) && id.len() <= MAX_ID_LEN
}

/// Checks an OTA job's `data` object.
fn check_job_data(data: &Value, job: &OtaJob, what: &str) {
    let field = |key: &str| {
        data.get(key)
            .unwrap_or_else(|| panic!("{what}: no {key}: {data}"))
    };
    assert_eq!(field("size").as_u64(), Some(job.size), "{what}");
    assert_eq!(
        field("version").as_str(),
        Some(job.version.as_str()),
        "{what}"
    );
    assert_eq!(field("url").as_str(), Some(job.url.as_str()), "{what}");
    assert_eq!(
        field("module").as_str(),
        Some(job.module.as_str()),
        "{what}"
    );
    assert_eq!(field("sign").as_str(), Some(job.sign.as_str()), "{what}");
    let (sign_method, md5) = match job.sign_method {
        OtaSignMethod::Md5 => ("Md5", Some(job.sign.as_str())),
        OtaSignMethod::Sha256 => ("SHA256", None),
    };
    assert_eq!(field("signMethod").as_str(), Some(sign_method), "{what}");
    assert_eq!(
        data.get("md5").and_then(Value::as_str),
        md5,
        "{what}: {data}"
    );
}

/// Checks an OTA push (`/ota/device/upgrade/pk/dn`).
fn check_push(push: &Downlink, job: &OtaJob) {
    assert_eq!(push.topic, "/ota/device/upgrade/pk/dn");
    sent(&push.payload, "OTA push");
    let push = strict(&push.payload).expect("an OTA push is strict JSON");
    assert_eq!(push["code"], "1000", "{push}");
    assert_eq!(push["message"], "success", "{push}");
    assert_eq!(
        push["id"].as_u64(),
        Some(job.id),
        "the push's id is the job's, a number"
    );
    check_job_data(&push["data"], job, "OTA push");
}

impl World {
    fn publish(&mut self, topic: &str, kind: Kind, payload: &[u8]) {
        let message = DeviceMessage::parse(topic, payload, PK, DN);
        let Some(message) = message else {
            assert_eq!(kind, Kind::NotService, "{topic} is a service topic");
            return;
        };
        let parsed = match &message {
            DeviceMessage::Alink(request) => {
                assert_eq!(request.reply_to.topic, format!("{topic}_reply"));
                Kind::Alink(match &request.method {
                    AlinkMethod::PropertyPost => Method::PropertyPost,
                    AlinkMethod::BatchPost => Method::BatchPost,
                    AlinkMethod::HistoryPost => Method::HistoryPost,
                    AlinkMethod::EventPost(identifier) => {
                        assert_eq!(
                            Some(identifier.as_str()),
                            topic
                                .strip_prefix("/sys/pk/dn/thing/event/")
                                .and_then(|rest| rest.strip_suffix("/post"))
                        );
                        Method::EventPost
                    }
                    AlinkMethod::TagsUpdate => Method::TagsUpdate,
                    AlinkMethod::TagsDelete => Method::TagsDelete,
                    AlinkMethod::DesiredGet => Method::DesiredGet,
                    AlinkMethod::DesiredDelete => Method::DesiredDelete,
                    AlinkMethod::FirmwareGet => Method::FirmwareGet,
                })
            }
            DeviceMessage::Reply(_) => Kind::Reply,
            DeviceMessage::Ntp(_) => Kind::Ntp,
            DeviceMessage::Shadow(_) => Kind::Shadow,
            DeviceMessage::OtaReport(_) => Kind::OtaReport,
            DeviceMessage::OtaProgress(_) => Kind::OtaProgress,
        };
        assert_eq!(parsed, kind, "{topic} parsed as {message:?}");
        let before = Things::of(&self.device);
        match kind {
            Kind::Alink(method) => {
                let handled = self.device.handle(message, self.now);
                self.check_alink(topic, method, payload, before, handled);
            }
            Kind::Reply => {
                let handled = self.device.handle(message, self.now);
                assert_eq!(handled.reply, None, "a device's reply is not answered");
                let result = handled.result.expect("a device's reply is a result");
                assert_eq!(Some(result.topic.as_str()), topic.strip_suffix("_reply"));
                assert_eq!(result.time, self.now);
                if let Some(body) = strict(payload) {
                    let code = match body.get("code") {
                        Some(Value::String(text)) => text.parse().ok(),
                        Some(other) => other.as_i64(),
                        None => None,
                    };
                    assert_eq!(result.code, code.unwrap_or(400), "{}", text(payload));
                    let id = match body.get("id") {
                        Some(Value::String(text)) => text.parse().ok(),
                        Some(other) => other.as_u64(),
                        None => None,
                    };
                    assert_eq!(result.request_id, id, "{}", text(payload));
                }
                assert_eq!(Things::of(&self.device), before);
            }
            Kind::Ntp => {
                let handled = self.device.handle(message, self.now);
                // The field's text as sent: a number is echoed as written, and a request that
                // names the field twice is not one the crate reads.
                let device_time = fields(payload)
                    .filter(|_| !names_twice(payload, "deviceSendTime"))
                    .and_then(|fields| {
                        let raw = fields.get("deviceSendTime")?.get().to_owned();
                        match serde_json::from_str::<Value>(&raw).ok()? {
                            Value::String(time) if time.len() <= 32 => Some(Value::String(time)),
                            Value::Number(_) if raw.len() <= 32 => Some(Value::String(raw)),
                            _ => None,
                        }
                    });
                assert_eq!(
                    handled.malformed,
                    device_time.is_none(),
                    "NTP {}",
                    text(payload)
                );
                match (device_time, &handled.reply) {
                    (None, None) => {}
                    (Some(asked), Some(reply)) => self.check_ntp(reply, &asked),
                    (asked, reply) => panic!(
                        "NTP {}: deviceSendTime {asked:?}, reply {reply:?}",
                        text(payload)
                    ),
                }
                assert_eq!(Things::of(&self.device), before);
            }
            Kind::Shadow => {
                let old_version = self.shadow.version;
                let (token, outcome) = self.shadow.apply(payload, false);
                let handled = self.device.handle(message, self.now);
                assert_eq!(
                    handled.malformed,
                    matches!(outcome, ShadowOutcome::Refused(_)),
                    "a shadow request is malformed when refused with a code: {}",
                    text(payload)
                );
                let reply = handled.reply.expect("a shadow request is answered");
                assert_eq!(reply.topic, "/shadow/get/pk/dn");
                let members = sent(&reply.payload, "shadow reply");
                assert_eq!(
                    members.keys().last(),
                    Some(&"payload"),
                    "{}",
                    text(&reply.payload)
                );
                let body = strict(&reply.payload).expect("a shadow reply is strict JSON");
                assert_eq!(body["method"], "reply");
                assert_eq!(body["timestamp"].as_u64(), Some(self.now.secs()));
                assert_eq!(
                    body.get("clientToken")
                        .map(|t| t.as_str().expect("a string token")),
                    token.as_deref(),
                    "clientToken of {}",
                    text(payload)
                );
                let status = &body["payload"]["status"];
                match outcome {
                    ShadowOutcome::Get => {
                        assert_eq!(status, "success");
                        self.check_full(&body);
                    }
                    ShadowOutcome::Changed { reset } => {
                        assert_eq!(status, "success", "{} → {body}", text(payload));
                        assert_eq!(
                            body["payload"]["version"].as_u64(),
                            Some(self.shadow.version)
                        );
                        assert!(
                            self.shadow.version > old_version || reset && self.shadow.version == 0
                        );
                    }
                    ShadowOutcome::Refused(code) => {
                        assert_eq!(status, "error", "{} → {body}", text(payload));
                        let content = &body["payload"]["content"];
                        assert_eq!(content["errorcode"], code.to_string(), "{}", text(payload));
                        assert!(content["errormessage"].is_string());
                    }
                }
                assert_eq!(Things::of(&self.device), before);
            }
            Kind::OtaReport => {
                let params = strict(payload).and_then(|body| body.get("params").cloned());
                let version = params
                    .as_ref()
                    .and_then(|p| p.get("version"))
                    .and_then(Value::as_str)
                    .filter(|v| !v.is_empty() && v.len() <= 64)
                    .map(str::to_owned);
                let module = module_of(params.as_ref());
                let refused = version.is_some() && self.refuses_module(&module);
                let handled = self.device.handle(message, self.now);
                assert_eq!(handled.reply, None);
                assert_eq!(
                    handled.malformed,
                    version.is_none() || refused,
                    "{}",
                    text(payload)
                );
                if let Some(version) = version.filter(|_| !refused) {
                    let done = self
                        .jobs
                        .get(&module)
                        .is_some_and(|job| job.version == version);
                    if done {
                        self.jobs.remove(&module);
                    }
                    let kept = self.module(&module).expect("a reported module is kept");
                    assert_eq!(kept.version.as_deref(), Some(version.as_str()));
                    if done {
                        assert_eq!(kept.last_outcome, Some(true));
                    }
                }
                assert_eq!(Things::of(&self.device), before);
            }
            Kind::OtaProgress => {
                let params = strict(payload).and_then(|body| body.get("params").cloned());
                let step =
                    params
                        .as_ref()
                        .and_then(|p| p.get("step"))
                        .and_then(|step| match step {
                            Value::String(text) => text.trim().parse::<i32>().ok(),
                            other => other.as_i64().and_then(|step| i32::try_from(step).ok()),
                        });
                let module = module_of(params.as_ref());
                let refused = step.is_some() && self.refuses_module(&module);
                let handled = self.device.handle(message, self.now);
                assert_eq!(handled.reply, None);
                assert_eq!(
                    handled.malformed,
                    step.is_none() || refused,
                    "{}",
                    text(payload)
                );
                if let Some(step) = step.filter(|_| !refused) {
                    let failed = step < 0 && self.jobs.remove(&module).is_some();
                    let kept = self
                        .module(&module)
                        .expect("a module with progress is kept");
                    assert_eq!(kept.progress.as_ref().map(|p| p.0), Some(step));
                    if failed {
                        assert_eq!(kept.last_outcome, Some(false));
                    }
                }
                assert_eq!(Things::of(&self.device), before);
            }
            Kind::NotService => unreachable!("parsed, so a service topic"),
        }
    }

    /// Whether a report on `name` is dropped: a name over 64 bytes, or a new module past
    /// `MAX_OTA_MODULES`.
    fn refuses_module(&self, name: &str) -> bool {
        name.len() > 64
            || self.module(name).is_none()
                && self.device.ota_modules().count() >= aliot_services::MAX_OTA_MODULES
    }

    fn module(&self, name: &str) -> Option<aliot_services::OtaModule> {
        self.device
            .ota_modules()
            .find(|(module, _)| *module == name)
            .map(|(_, module)| module.clone())
    }

    fn check_alink(
        &mut self,
        topic: &str,
        method: Method,
        payload: &[u8],
        before: Things,
        handled: Handled,
    ) {
        let request = text(payload);
        let expected_method = topic
            .strip_prefix("/sys/pk/dn/")
            .expect("an Alink topic")
            .replace('/', ".");
        assert_eq!(handled.result, None);
        // The reply's id, code and data, checked for shape.
        let reply = handled.reply.as_ref().map(|reply| {
            assert_eq!(reply.topic, format!("{topic}_reply"));
            assert!(reply.topic.starts_with("/sys/") && reply.topic.ends_with("_reply"));
            let members = sent(&reply.payload, "Alink reply");
            let reply_text = text(&reply.payload);
            assert_eq!(
                members.keys(),
                ["id", "code", "message", "method", "version", "data"],
                "{reply_text}"
            );
            let id = members.raw("id").expect("an id").to_owned();
            assert!(echoable(&id), "id {id} of {reply_text}");
            let code = members.raw("code").expect("a code");
            assert!(code.bytes().all(|b| b.is_ascii_digit()), "{reply_text}");
            let code: u32 = code.parse().expect("a code");
            assert!(
                matches!(code, 200 | 429 | 460 | 6207),
                "code {code} for {request}"
            );
            let message: String =
                serde_json::from_str(members.raw("message").unwrap()).expect("a string message");
            assert!(!message.is_empty());
            let data = members.raw("data").unwrap();
            assert!(data.starts_with('{'), "{reply_text}");
            let method: String =
                serde_json::from_str(members.raw("method").unwrap()).expect("a string method");
            assert_eq!(method, expected_method);
            assert_eq!(members.raw("version"), Some("\"1.0\""));
            (id, code, strict(data.as_bytes()))
        });
        let after = Things::of(&self.device);
        if let Some((_, code, _)) = &reply {
            assert_eq!(handled.malformed, *code != 200);
            if *code != 200 {
                assert_eq!(
                    after, before,
                    "a refused request changed the device: {request}"
                );
            }
        }
        assert!(after.properties.len() <= MAX_PROPERTIES && after.tags.len() <= MAX_TAGS);

        let is_object = payload.trim_ascii_start().first() == Some(&b'{');
        if !is_object || serde_json::from_slice::<IgnoredAny>(payload).is_err() {
            // Not a JSON object: 6207, always answered.
            let (id, code, _) = reply.expect("a request that is not JSON is answered");
            assert_eq!((id.as_str(), code), ("\"0\"", 6207), "{request}");
            assert_eq!(after, before);
            return;
        }
        let strict_body = strict(payload).and_then(|body| match body {
            Value::Object(body) => Some(body),
            _ => None,
        });
        let members: Option<Members> = serde_json::from_slice(payload).ok();
        let (Some(body), Some(members)) = (strict_body, members) else {
            // Not strict JSON (a lone surrogate, a number out of range, invalid UTF-8, too
            // deep): the crate may take it or not; the id is some text of the request.
            if let Some((id, _, _)) = &reply {
                assert!(
                    id == "\"0\"" || request.contains(id.as_str()),
                    "id {id} not in {request}"
                );
            } else {
                assert!(request.contains("ack"), "no reply to {request}");
            }
            return;
        };
        if ["id", "params", "sys"]
            .iter()
            .any(|key| members.count(key) > 1)
        {
            // A field twice: taken as not JSON or as one of its values.
            if let Some((id, _, _)) = &reply {
                assert!(id == "\"0\"" || request.contains(id.as_str()), "{request}");
            }
            return;
        }
        // Strict JSON: the model decides.
        let ack = !matches!(
            body.get("sys").and_then(|sys| sys.get("ack")),
            Some(Value::Number(ack)) if ack.as_u64() == Some(0)
        );
        let id = members.raw("id").filter(|id| *id != "null");
        let echoed = id.filter(|id| echoable(id));
        let mut things = before.clone();
        let outcome = match (id, echoed, body.get("params")) {
            (Some(_), None, _) | (_, _, None | Some(Value::Null)) => Err(BAD_PARAMS),
            (_, _, Some(params)) => alink_model(method, params, &mut things, &self.jobs, self.now),
        };
        let expected_id = echoed.unwrap_or("\"0\"");
        let expected_code = outcome.as_ref().map_or_else(|code| *code, |_| 200);
        assert_eq!(handled.malformed, expected_code != 200, "{request}");
        match (ack, &reply) {
            (false, None) => {}
            (true, Some((id, code, data))) => {
                assert_eq!(id, expected_id, "{request}");
                assert_eq!(*code, expected_code, "{request}");
                let data = data
                    .as_ref()
                    .expect("the data of a strict request is strict");
                match &outcome {
                    Err(_) | Ok(Data::Empty) => assert_eq!(data, &serde_json::json!({})),
                    Ok(Data::Exactly(expected)) => assert_eq!(data, expected, "{request}"),
                    Ok(Data::Job(None)) => assert_eq!(data, &serde_json::json!({})),
                    Ok(Data::Job(Some(job))) => check_job_data(data, job, "firmware pull"),
                }
            }
            (ack, reply) => panic!("ack {ack}, reply {reply:?}: {request}"),
        }
        assert_eq!(after, things, "{request}");
    }

    fn check_ntp(&self, reply: &Downlink, asked: &Value) {
        assert_eq!(reply.topic, "/ext/ntp/pk/dn/response");
        let members = sent(&reply.payload, "NTP reply");
        assert_eq!(
            members.keys(),
            ["deviceSendTime", "serverRecvTime", "serverSendTime"]
        );
        let body = strict(&reply.payload).expect("an NTP reply is strict JSON");
        let field = |key: &str| {
            body[key]
                .as_str()
                .unwrap_or_else(|| panic!("{key} not a string: {body}"))
                .to_owned()
        };
        let now = self.now.0.to_string();
        assert_eq!(field("serverRecvTime"), now);
        assert_eq!(field("serverSendTime"), now);
        let echoed = field("deviceSendTime");
        match asked {
            Value::String(asked) => assert_eq!(&echoed, asked),
            _ => unreachable!(),
        }
    }

    /// A get reply or a control push: the whole shadow, as the model has it.
    fn check_full(&self, body: &Value) {
        assert_eq!(
            body["version"].as_u64(),
            Some(self.shadow.version),
            "{body}"
        );
        let state = &body["payload"]["state"];
        let metadata = &body["payload"]["metadata"];
        for (section, model) in [
            ("reported", &self.shadow.reported),
            ("desired", &self.shadow.desired),
        ] {
            assert_eq!(state[section].as_object(), Some(model), "{body}");
            let times = metadata[section].as_object().expect("metadata");
            assert!(times.keys().eq(model.keys()), "{body}");
            assert!(times.values().all(|t| t["timestamp"].is_u64()), "{body}");
        }
    }

    fn update_shadow(&mut self, payload: &[u8]) {
        let before = Things::of(&self.device);
        let (_, outcome) = self.shadow.apply(payload, true);
        let pushed = self
            .device
            .update_shadow(&ShadowRequest::parse(payload), self.now);
        match (outcome, pushed) {
            (ShadowOutcome::Changed { .. }, Ok(push)) => {
                assert_eq!(push.topic, "/shadow/get/pk/dn");
                let members = sent(&push.payload, "shadow control");
                assert_eq!(members.keys().last(), Some(&"payload"));
                let body = strict(&push.payload).expect("a control push is strict JSON");
                assert_eq!(body["method"], "control");
                assert_eq!(body["payload"]["status"], "success");
                assert_eq!(body["timestamp"].as_u64(), Some(self.now.secs()));
                assert!(body.get("clientToken").is_none());
                self.check_full(&body);
            }
            (ShadowOutcome::Refused(code), Err(refused)) => {
                assert_eq!(refused.code, code, "{}", text(payload));
            }
            (ShadowOutcome::Get, _) => unreachable!("an application's get is refused"),
            (_, pushed) => panic!("app update {} gave {pushed:?}", text(payload)),
        }
        assert_eq!(Things::of(&self.device), before);
    }

    fn set_desired(&mut self, items: &Map<String, Value>) {
        let before = Things::of(&self.device);
        let result = self.device.set_desired(items);
        let mut expected = before.clone();
        let new = items
            .keys()
            .filter(|name| !before.desired.contains_key(*name))
            .count();
        let code = if !items.keys().all(|name| valid_name(name)) {
            Some(BAD_PARAMS)
        } else if before.desired.len() + new > MAX_PROPERTIES {
            Some(TOO_MANY)
        } else {
            for (name, value) in items {
                let version = before.desired.get(name).map_or(1, |(_, v)| v + 1);
                expected
                    .desired
                    .insert(name.clone(), (value.clone(), version));
            }
            None
        };
        assert_eq!(result.err().map(|code| code.code), code);
        assert_eq!(Things::of(&self.device), expected);
    }

    fn start_ota(&mut self, job: OtaJob) {
        let expected_len = match job.sign_method {
            OtaSignMethod::Md5 => 32,
            OtaSignMethod::Sha256 => 64,
        };
        let valid = job.sign.len() == expected_len
            && job.sign.bytes().all(|b| b.is_ascii_hexdigit())
            && !job.url.is_empty()
            && !job.version.is_empty();
        let Ok(validated) = job.clone().validated() else {
            assert!(!valid, "{job:?} refused");
            return;
        };
        assert!(valid, "{job:?} accepted");
        assert_eq!(validated.sign, job.sign.to_ascii_lowercase());
        let module = if job.module.is_empty() {
            "default"
        } else {
            job.module.as_str()
        };
        assert_eq!(validated.module, module);
        let before = Things::of(&self.device);
        let push = self.device.start_ota(validated.clone());
        check_push(&push, &validated);
        self.jobs.insert(validated.module.clone(), validated);
        assert_eq!(Things::of(&self.device), before);
    }

    /// What holds after every step.
    fn check(&self, last_version: u64, reset_seen: bool) {
        let things = Things::of(&self.device);
        assert!(things.properties.len() <= MAX_PROPERTIES);
        assert!(things.tags.len() <= MAX_TAGS);
        let shadow = self.device.shadow();
        assert_eq!(shadow.version(), self.shadow.version);
        assert_eq!(shadow.reported(), &self.shadow.reported);
        assert_eq!(shadow.desired(), &self.shadow.desired);
        assert!(shadow.reported().len() <= MAX_SHADOW_ATTRIBUTES);
        assert!(shadow.desired().len() <= MAX_SHADOW_ATTRIBUTES);
        assert!(
            shadow.version() >= last_version || shadow.version() == 0 && reset_seen,
            "the shadow's version went from {last_version} to {}",
            shadow.version()
        );
        let document = shadow.to_json();
        sent(&document, "shadow document");
        let document = strict(&document).expect("the document is strict JSON");
        assert_eq!(document["version"].as_u64(), Some(shadow.version()));
        assert_eq!(
            document["state"]["reported"].as_object(),
            Some(shadow.reported())
        );
        assert_eq!(
            document["state"]["desired"].as_object(),
            Some(shadow.desired())
        );

        let jobs: Vec<(&str, &OtaJob)> = self
            .device
            .ota_modules()
            .filter_map(|(name, module)| module.job.as_ref().map(|job| (name, job)))
            .collect();
        let model: Vec<(&str, &OtaJob)> = self
            .jobs
            .iter()
            .map(|(name, job)| (name.as_str(), job))
            .collect();
        assert_eq!(jobs, model);
        let pushes = self.device.pending_ota_pushes();
        assert_eq!(pushes.len(), self.jobs.len());
        for (push, job) in pushes.iter().zip(self.jobs.values()) {
            check_push(push, job);
        }
    }
}

fn module_of(params: Option<&Value>) -> String {
    params
        .and_then(|params| params.get("module"))
        .and_then(Value::as_str)
        .filter(|module| !module.is_empty())
        .unwrap_or("default")
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// Inputs.
//
// A choice the input runs out in is its first one (`Unstructured` gives the lower bound), so
// the first choices are the productive ones: a JSON request, a valid job.

/// True one time in `n` (false once the input is used up).
fn one_in(u: &mut Unstructured, n: u32) -> Result<bool> {
    Ok(u.int_in_range(1..=n)? == n)
}

/// True `k` times in `n` (true once the input is used up).
fn likely(u: &mut Unstructured, k: u32, n: u32) -> Result<bool> {
    Ok(u.int_in_range(1..=n)? <= k)
}

/// Words strings and keys are drawn from.
const WORDS: [&str; 34] = [
    "Power",
    "Temp",
    "value",
    "time",
    "attrKey",
    "attrValue",
    "version",
    "module",
    "step",
    "desc",
    "reported",
    "desired",
    "null",
    "properties",
    "events",
    "identity",
    "ack",
    "default",
    "MCU",
    "1.0.0",
    "2.0.0",
    "",
    "-1",
    "45",
    " 7 ",
    "get",
    "update",
    "delete",
    "id",
    "code",
    "data",
    "method",
    "color",
    "ünï\u{1F600}",
];

/// Number texts, some out of `serde_json`'s range or odd in form.
const NUMBERS: [&str; 20] = [
    "0",
    "1",
    "-1",
    "2",
    "3",
    "45",
    "100",
    "-4",
    "1700000000000",
    "1800000000000",
    "1.5",
    "-0",
    "1e3",
    "2E-2",
    "9223372036854775807",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775809",
    "1e999",
    "0.0",
];

/// Request ids: strings, numbers, other types, long ones around the 256-byte limit.
fn id(u: &mut Unstructured) -> Result<String> {
    Ok(match u.int_in_range(0..=17)? {
        0..=2 => format!("\"{}\"", u.arbitrary::<u32>()?),
        3 => u.arbitrary::<u32>()?.to_string(),
        4 => "\"3|exp-topic|/sys/pk/dn/thing/event/property/post_reply\"".into(),
        5 => "\"a\\u0041\\n\\\"\"".into(),
        6 => "\"\\ud800\"".into(),
        7 => "null".into(),
        8 => "true".into(),
        9 => "{\"a\":1}".into(),
        10 => "[1]".into(),
        11 => {
            // A string of 254..=258 bytes of text, quotes included.
            let len = u.int_in_range(252..=256)?;
            format!("\"{}\"", "9".repeat(len))
        }
        12 => {
            let len = u.int_in_range(255..=257)?;
            "1".repeat(len)
        }
        13 => format!(
            "\"{}\"",
            "x".repeat(usize::from(u.int_in_range(0..=4u8)?) * 100)
        ),
        14 => serde_json::to_string(u.arbitrary::<&str>()?).unwrap(),
        _ => NUMBERS[u.choose_index(NUMBERS.len())?].into(),
    })
}

fn word(u: &mut Unstructured) -> Result<String> {
    Ok(if one_in(u, 8)? {
        u.arbitrary::<&str>()?.chars().take(40).collect()
    } else {
        WORDS[u.choose_index(WORDS.len())?].into()
    })
}

fn string(u: &mut Unstructured) -> Result<String> {
    Ok(serde_json::to_string(&word(u)?).unwrap())
}

fn number(u: &mut Unstructured) -> Result<String> {
    Ok(NUMBERS[u.choose_index(NUMBERS.len())?].into())
}

/// A property, tag or attribute name: plain, empty, at and past the 128-byte limit, numbered.
fn name(u: &mut Unstructured) -> Result<String> {
    Ok(match u.int_in_range(0..=11)? {
        0..=3 => format!("p{}", u.int_in_range(0..=20u8)?),
        4 => String::new(),
        5 => "n".repeat(128),
        6 => "n".repeat(129),
        _ => word(u)?,
    })
}

fn ws(u: &mut Unstructured) -> Result<&'static str> {
    Ok(match u.int_in_range(0..=15)? {
        14 => " ",
        15 => "\n\t ",
        _ => "",
    })
}

/// An object's text from its members (keys unquoted, values as text).
fn object(u: &mut Unstructured, members: &[(String, String)]) -> Result<String> {
    let mut out = String::from("{");
    out.push_str(ws(u)?);
    for (i, (key, value)) in members.iter().enumerate() {
        if i > 0 {
            out.push(',');
            out.push_str(ws(u)?);
        }
        let key = if key == "id" && one_in(u, 16)? {
            "\"\\u0069d\"".to_owned()
        } else {
            serde_json::to_string(key).unwrap()
        };
        write!(out, "{key}{}:{}{value}{}", ws(u)?, ws(u)?, ws(u)?).unwrap();
    }
    out.push('}');
    Ok(out)
}

fn array(items: &[String]) -> String {
    format!("[{}]", items.join(","))
}

fn value(u: &mut Unstructured, depth: u8) -> Result<String> {
    let choice = if depth == 0 {
        u.int_in_range(0..=5)?
    } else {
        u.int_in_range(0..=7)?
    };
    Ok(match choice {
        0 | 1 => string(u)?,
        2 | 3 => number(u)?,
        4 => "null".into(),
        5 => "true".into(),
        6 => {
            let n = u.int_in_range(0..=3)?;
            let items = (0..n)
                .map(|_| value(u, depth - 1))
                .collect::<Result<Vec<_>>>()?;
            array(&items)
        }
        _ => {
            let n = u.int_in_range(0..=3)?;
            let mut members = Vec::new();
            for _ in 0..n {
                members.push((word(u)?, value(u, depth - 1)?));
            }
            object(u, &members)?
        }
    })
}

/// A property value as posted: bare, or `{"value":…,"time":…}`.
fn property_value(u: &mut Unstructured) -> Result<String> {
    if likely(u, 1, 2)? {
        return value(u, 1);
    }
    let mut members = vec![("value".to_owned(), value(u, 1)?)];
    if likely(u, 2, 3)? {
        let time = if likely(u, 3, 4)? {
            (1_700_000_000_000u64 + u64::from(u.arbitrary::<u32>()?)).to_string()
        } else {
            number(u)?
        };
        members.push(("time".to_owned(), time));
    }
    object(u, &members)
}

/// `params` of the shape a method takes (`None`: any JSON).
fn params(u: &mut Unstructured, kind: Kind) -> Result<String> {
    let shape = if one_in(u, 6)? {
        u.int_in_range(0..=10)?
    } else {
        match kind {
            Kind::Alink(Method::PropertyPost | Method::EventPost) => {
                if one_in(u, 8)? {
                    2
                } else {
                    0
                }
            }
            Kind::Alink(Method::BatchPost) => 3,
            Kind::Alink(Method::HistoryPost) => 4,
            Kind::Alink(Method::TagsUpdate) => {
                if one_in(u, 8)? {
                    6
                } else {
                    5
                }
            }
            Kind::Alink(Method::TagsDelete) => 5,
            Kind::Alink(Method::DesiredGet) => 7,
            Kind::Alink(Method::DesiredDelete) => 8,
            Kind::Alink(Method::FirmwareGet) | Kind::OtaReport | Kind::OtaProgress => 9,
            _ => 10,
        }
    };
    Ok(match shape {
        0 | 1 => {
            let mut members = Vec::new();
            for _ in 0..u.int_in_range(1..=4)? {
                members.push((name(u)?, property_value(u)?));
            }
            object(u, &members)?
        }
        2 => {
            // Many properties at once, towards MAX_PROPERTIES.
            let base = u32::from(u.arbitrary::<u8>()?) * 20;
            let count = u32::from(u.arbitrary::<u8>()?) * 5;
            let members: Vec<String> = (base..base + count)
                .map(|i| format!("\"q{i}\":1"))
                .collect();
            format!("{{{}}}", members.join(","))
        }
        3 => {
            let mut properties = Vec::new();
            for _ in 0..u.int_in_range(1..=3)? {
                let n = u.int_in_range(0..=3)?;
                let samples = (0..n)
                    .map(|_| property_value(u))
                    .collect::<Result<Vec<_>>>()?;
                properties.push((name(u)?, array(&samples)));
            }
            let properties = object(u, &properties)?;
            object(
                u,
                &[
                    ("properties".into(), properties),
                    ("events".into(), "{}".into()),
                ],
            )?
        }
        4 => {
            let mut entries = Vec::new();
            for _ in 0..u.int_in_range(1..=3)? {
                let mut properties = Vec::new();
                for _ in 0..u.int_in_range(0..=3)? {
                    properties.push((name(u)?, property_value(u)?));
                }
                let properties = object(u, &properties)?;
                entries.push(object(
                    u,
                    &[
                        ("identity".into(), "{}".into()),
                        ("properties".into(), properties),
                    ],
                )?);
            }
            array(&entries)
        }
        5 => {
            let mut tags = Vec::new();
            for _ in 0..u.int_in_range(1..=4)? {
                let key = serde_json::to_string(&name(u)?).unwrap();
                let value = match u.int_in_range(0..=5)? {
                    0..=2 => string(u)?,
                    3 | 4 => number(u)?,
                    _ => value(u, 1)?,
                };
                tags.push(object(
                    u,
                    &[("attrKey".into(), key), ("attrValue".into(), value)],
                )?);
            }
            array(&tags)
        }
        6 => {
            // Many tags at once, towards MAX_TAGS.
            let base = u32::from(u.arbitrary::<u8>()?);
            let count = u32::from(u.int_in_range(0..=110u8)?);
            let tags: Vec<String> = (base..base + count)
                .map(|i| format!("{{\"attrKey\":\"t{i}\",\"attrValue\":\"v\"}}"))
                .collect();
            array(&tags)
        }
        7 => {
            let n = u.int_in_range(1..=4)?;
            let names = (0..n)
                .map(|_| Ok(serde_json::to_string(&name(u)?).unwrap()))
                .collect::<Result<Vec<_>>>()?;
            array(&names)
        }
        8 => {
            let mut members = Vec::new();
            for _ in 0..u.int_in_range(1..=3)? {
                let which = match u.int_in_range(0..=3)? {
                    0 => "{}".to_owned(),
                    1 => format!("{{\"version\":{}}}", number(u)?),
                    _ => format!("{{\"version\":{}}}", u.int_in_range(1..=4u8)?),
                };
                members.push((name(u)?, which));
            }
            object(u, &members)?
        }
        9 => {
            let mut members = Vec::new();
            if likely(u, 3, 4)? {
                members.push(("module".into(), module(u)?));
            }
            if likely(u, 3, 4)? {
                members.push(("version".into(), firmware_version(u)?));
            }
            if likely(u, 3, 4)? {
                let step = if likely(u, 1, 2)? {
                    let steps = ["-1", "45", " -2 ", "100", "x", "-4"];
                    format!("\"{}\"", steps[u.choose_index(steps.len())?])
                } else {
                    number(u)?
                };
                members.push(("step".into(), step));
            }
            if one_in(u, 3)? {
                members.push(("desc".into(), string(u)?));
            }
            object(u, &members)?
        }
        _ => value(u, 3)?,
    })
}

fn module(u: &mut Unstructured) -> Result<String> {
    Ok(match u.int_in_range(0..=7)? {
        0 | 1 => "\"MCU\"".into(),
        2 => "\"\"".into(),
        3 => "\"default\"".into(),
        4 => "\"wifi\"".into(),
        5 => "1".into(),
        _ => string(u)?,
    })
}

const FIRMWARE_VERSIONS: [&str; 4] = ["1.0.0", "2.0.0", "1.0.1", ""];

fn firmware_version(u: &mut Unstructured) -> Result<String> {
    Ok(if one_in(u, 8)? {
        value(u, 0)?
    } else {
        format!(
            "\"{}\"",
            FIRMWARE_VERSIONS[u.choose_index(FIRMWARE_VERSIONS.len())?]
        )
    })
}

/// A shadow section: attributes (some removed), `"null"`, null, many attributes, other.
fn section(u: &mut Unstructured) -> Result<String> {
    Ok(match u.int_in_range(0..=9)? {
        6 => "\"null\"".into(),
        7 => "null".into(),
        8 => number(u)?,
        9 => {
            let base = u32::from(u.arbitrary::<u8>()?);
            let count = u32::from(u.int_in_range(100..=140u8)?);
            let members: Vec<String> = (base..base + count)
                .map(|i| format!("\"a{i}\":{i}"))
                .collect();
            format!("{{{}}}", members.join(","))
        }
        _ => {
            let mut members = Vec::new();
            for _ in 0..u.int_in_range(1..=4)? {
                let value = match u.int_in_range(0..=5)? {
                    4 => "null".into(),
                    5 => "\"null\"".into(),
                    _ => value(u, 1)?,
                };
                members.push((name(u)?, value));
            }
            object(u, &members)?
        }
    })
}

/// A shadow `version`: the next one, absent (in the caller), stale, -1, 0, as a string, odd.
fn shadow_version(u: &mut Unstructured, current: u64) -> Result<String> {
    Ok(match u.int_in_range(0..=9)? {
        0..=3 => (current + u64::from(u.int_in_range(1..=3u8)?)).to_string(),
        4 => current.to_string(),
        5 => "-1".into(),
        6 => "0".into(),
        7 => format!("\"{}\"", current + 1),
        8 => "\"1.0\"".into(),
        _ => number(u)?,
    })
}

/// A JSON-ish request: mostly the fields the topic's service reads, in any order and form,
/// now and then those of another service.
fn request(u: &mut Unstructured, kind: Kind, shadow_version_now: u64) -> Result<Vec<u8>> {
    let (alink, shadow, ntp) = match kind {
        Kind::Alink(_) | Kind::Reply | Kind::OtaReport | Kind::OtaProgress => (true, false, false),
        Kind::Shadow => (false, true, false),
        Kind::Ntp => (false, false, true),
        Kind::NotService => (true, true, true),
    };
    let often = |u: &mut Unstructured, focus: bool| {
        if focus { likely(u, 7, 8) } else { one_in(u, 8) }
    };
    let mut members: Vec<(String, String)> = Vec::new();
    if often(u, alink)? {
        members.push(("id".into(), id(u)?));
    }
    if often(u, true)? {
        let version = if shadow {
            shadow_version(u, shadow_version_now)?
        } else if one_in(u, 8)? {
            value(u, 0)?
        } else {
            "\"1.0\"".into()
        };
        members.push(("version".into(), version));
    }
    if often(u, alink)? {
        members.push(("params".into(), params(u, kind)?));
    }
    if alink && one_in(u, 3)? {
        let sys = match u.int_in_range(0..=7)? {
            0 | 1 => "{\"ack\":0}".into(),
            2 => "{\"ack\":1}".into(),
            3 => "{\"ack\":\"0\"}".into(),
            4 => format!("{{\"ack\":{}}}", number(u)?),
            5 => "{}".into(),
            _ => value(u, 1)?,
        };
        members.push(("sys".into(), sys));
    }
    if often(u, shadow)? || alink && one_in(u, 4)? {
        let method = match u.int_in_range(0..=7)? {
            0..=2 => "\"update\"".into(),
            3 => "\"get\"".into(),
            4 => "\"delete\"".into(),
            5 => "\"thing.event.property.post\"".into(),
            _ => value(u, 0)?,
        };
        members.push(("method".into(), method));
    }
    if often(u, shadow)? {
        let state = match u.int_in_range(0..=7)? {
            6 => "null".into(),
            7 => value(u, 1)?,
            _ => {
                let mut state = Vec::new();
                if likely(u, 3, 4)? {
                    state.push(("reported".into(), section(u)?));
                }
                if likely(u, 1, 2)? {
                    state.push(("desired".into(), section(u)?));
                }
                object(u, &state)?
            }
        };
        members.push(("state".into(), state));
    }
    if shadow && likely(u, 1, 2)? || one_in(u, 16)? {
        let token = if likely(u, 1, 2)? {
            "\"pk.dn-1\"".into()
        } else {
            value(u, 0)?
        };
        members.push(("clientToken".into(), token));
    }
    if often(u, ntp)? {
        let time = match u.int_in_range(0..=5)? {
            0 | 1 => format!("\"{}\"", u.arbitrary::<u64>()?),
            2 => format!("\"{}\"", "1".repeat(u.int_in_range(30..=34)?)),
            _ => value(u, 0)?,
        };
        members.push(("deviceSendTime".into(), time));
    }
    if one_in(u, 4)? {
        members.push((word(u)?, value(u, 1)?));
    }
    // Any order; now and then a member twice.
    for i in (1..members.len()).rev() {
        let j = u.int_in_range(0..=i)?;
        members.swap(i, j);
    }
    if !members.is_empty() && one_in(u, 32)? {
        let twice = members[u.choose_index(members.len())?].clone();
        members.push(twice);
    }
    let mut text = object(u, &members)?.into_bytes();
    match u.int_in_range(0..=31)? {
        26 => text.truncate(u.choose_index(text.len())?),
        27 => text.insert(0, b' '),
        28 => text.extend_from_slice(b"\n"),
        29 => text.extend_from_slice(b"}"),
        30 => text = [b"[".as_slice(), &text, b"]"].concat(),
        31 => {
            let at = u.choose_index(text.len())?;
            text[at] = u.arbitrary()?;
        }
        _ => {}
    }
    Ok(text)
}

fn payload(u: &mut Unstructured, kind: Kind, shadow_version_now: u64) -> Result<Vec<u8>> {
    Ok(match u.int_in_range(0..=9)? {
        8 => u.arbitrary::<&[u8]>()?.iter().copied().take(512).collect(),
        9 => value(u, 3)?.into_bytes(),
        _ => request(u, kind, shadow_version_now)?,
    })
}

fn job(u: &mut Unstructured) -> Result<OtaJob> {
    let sign_method = if u.arbitrary()? {
        OtaSignMethod::Md5
    } else {
        OtaSignMethod::Sha256
    };
    let len = match sign_method {
        OtaSignMethod::Md5 => 32,
        OtaSignMethod::Sha256 => 64,
    };
    // Hex of the right length in mixed case, now and then too short, too long or not hex.
    let mut sign =
        "0123456789abcdefABCDEF0123456789abcdef0123456789ABCDEF0123456789"[..len].to_owned();
    if one_in(u, 8)? {
        match u.int_in_range(0..=2)? {
            0 => sign.truncate(u.choose_index(len)?),
            1 => sign.push('a'),
            _ => {
                let at = u.choose_index(len)?;
                sign.replace_range(at..=at, "g");
            }
        }
    }
    let pick = |u: &mut Unstructured, list: &[&str]| -> Result<String> {
        Ok(if one_in(u, 8)? {
            u.arbitrary::<&str>()?.chars().take(20).collect()
        } else {
            list[u.choose_index(list.len())?].to_owned()
        })
    };
    Ok(OtaJob {
        id: if one_in(u, 8)? {
            u.arbitrary()?
        } else {
            u64::from(u.arbitrary::<u16>()?)
        },
        module: pick(u, &["MCU", "MCU", "", "default", "wifi"])?,
        version: pick(u, &["2.0.0", "1.0.0", "1.0.1", "2.0.0", ""])?,
        url: pick(u, &["https://fw.example/x.bin", "u\"rl\\", "https://x", ""])?,
        size: u64::from(u.arbitrary::<u32>()?),
        sign_method,
        sign,
    })
}

fn run(u: &mut Unstructured, world: &mut World) -> Result<()> {
    // The service topics come first in TOPICS.
    let services = TOPICS
        .iter()
        .take_while(|(_, kind)| *kind != Kind::NotService)
        .count();
    for _ in 0..MAX_OPS {
        if u.is_empty() {
            break;
        }
        let last_version = world.device.shadow().version();
        let mut reset_seen = false;
        match u.int_in_range(0..=13)? {
            0..=8 => {
                let at = if one_in(u, 8)? {
                    services + u.choose_index(TOPICS.len() - services)?
                } else {
                    u.choose_index(services)?
                };
                let (topic, kind) = TOPICS[at];
                let payload = payload(u, kind, world.shadow.version)?;
                let (_, outcome) = world.shadow.clone().apply(&payload, false);
                reset_seen = kind == Kind::Shadow
                    && matches!(outcome, ShadowOutcome::Changed { reset: true });
                world.publish(topic, kind, &payload);
            }
            9 => {
                let payload = payload(u, Kind::Shadow, world.shadow.version)?;
                let (_, outcome) = world.shadow.clone().apply(&payload, true);
                reset_seen = matches!(outcome, ShadowOutcome::Changed { reset: true });
                world.update_shadow(&payload);
            }
            10 => {
                let mut items = Map::new();
                for _ in 0..u.int_in_range(1..=3)? {
                    let value: Value = serde_json::from_str(&value(u, 1)?).unwrap_or(Value::Null);
                    items.insert(name(u)?, value);
                }
                world.set_desired(&items);
            }
            11 => {
                let job = job(u)?;
                world.start_ota(job);
            }
            _ => {
                let step = u64::from(u.arbitrary::<u32>()?);
                world.now = UnixMillis(world.now.0 + step);
            }
        }
        world.check(last_version, reset_seen);
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let mut world = World {
        device: DeviceState::new(PK, DN),
        now: UnixMillis(1_700_000_000_000),
        shadow: ShadowModel::default(),
        jobs: BTreeMap::new(),
    };
    let _ = run(&mut u, &mut world);
});
