//! The device shadow (PLATFORM-PROTOCOLS §5): one JSON document per device with the state it
//! reported, the state an application desires, when each attribute last changed, and a
//! version. Devices and applications update it; the platform answers on
//! `/shadow/get/{pk}/{dn}` and pushes `control` when an application changes it.

use alloc::borrow::ToOwned;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::alink::to_bytes;
use crate::{Downlink, UnixMillis};

/// The most a shadow's state (reported and desired) takes, in bytes of its JSON (about; ours,
/// after the platform's documented 16 KB). An update past it is refused with 408.
pub const MAX_SHADOW_BYTES: usize = 16 * 1024;

/// Attributes one section (reported or desired) holds at most (ours; the platform documents
/// 128). One more is refused with 408.
pub const MAX_SHADOW_ATTRIBUTES: usize = 128;

/// A shadow error code (C SDK 3.x `iotx_shadow_ack_code_t`), sent as a string in
/// `payload.content.errorcode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShadowCode {
    /// The code.
    pub code: u16,
    /// What it means.
    pub message: &'static str,
}

impl ShadowCode {
    /// 400: the request is not JSON.
    pub const BAD_JSON: ShadowCode = ShadowCode {
        code: 400,
        message: "bad request: not json",
    };
    /// 401: no `method`.
    pub const METHOD_MISSING: ShadowCode = ShadowCode {
        code: 401,
        message: "method missing",
    };
    /// 402: no `state`.
    pub const STATE_MISSING: ShadowCode = ShadowCode {
        code: 402,
        message: "state missing",
    };
    /// 403: `version` not above the shadow's.
    pub const VERSION_INVALID: ShadowCode = ShadowCode {
        code: 403,
        message: "version invalid",
    };
    /// 404: `state` has neither `reported` nor `desired`.
    pub const REPORTED_MISSING: ShadowCode = ShadowCode {
        code: 404,
        message: "reported missing",
    };
    /// 405: a section is neither an object nor `"null"`.
    pub const ATTRIBUTE_INVALID: ShadowCode = ShadowCode {
        code: 405,
        message: "reported attribute invalid",
    };
    /// 406: a `method` other than `update`, `get`, `delete`.
    pub const METHOD_INVALID: ShadowCode = ShadowCode {
        code: 406,
        message: "method invalid",
    };
    /// 408: more attributes than [`MAX_SHADOW_ATTRIBUTES`].
    pub const TOO_MANY_ATTRIBUTES: ShadowCode = ShadowCode {
        code: 408,
        message: "attributes exceed limit",
    };
}

/// What a shadow request asks.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Command {
    Get,
    Update { state: Value, version: Option<i64> },
    Delete { state: Value, version: Option<i64> },
}

/// A request on `/shadow/update/{pk}/{dn}`, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShadowRequest {
    /// `clientToken`, echoed in the reply (the C SDK 3.x matches replies by it).
    pub client_token: Option<String>,
    command: Result<Command, ShadowCode>,
}

impl ShadowRequest {
    /// Parses a device's (or an application's) shadow request.
    pub fn parse(payload: &[u8]) -> Self {
        let Ok(Value::Object(mut body)) = serde_json::from_slice::<Value>(payload) else {
            return ShadowRequest {
                client_token: None,
                command: Err(ShadowCode::BAD_JSON),
            };
        };
        let client_token = match body.get("clientToken") {
            Some(Value::String(token)) => Some(token.clone()),
            Some(Value::Number(number)) => Some(format!("{number}")),
            _ => None,
        };
        let version = body.get("version").and_then(|version| match version {
            Value::String(text) => text.parse().ok(),
            other => other.as_i64(),
        });
        let method = body
            .get("method")
            .and_then(Value::as_str)
            .map(ToOwned::to_owned);
        let command = match method.as_deref() {
            None => Err(ShadowCode::METHOD_MISSING),
            Some("get") => Ok(Command::Get),
            Some(method @ ("update" | "delete")) => match body.remove("state") {
                None | Some(Value::Null) => Err(ShadowCode::STATE_MISSING),
                Some(state) if method == "update" => Ok(Command::Update { state, version }),
                Some(state) => Ok(Command::Delete { state, version }),
            },
            Some(_) => Err(ShadowCode::METHOD_INVALID),
        };
        ShadowRequest {
            client_token,
            command,
        }
    }
}

/// One device's shadow.
///
/// Stored (serde) as `{"rep":{…},"des":{…},"rep_at":{…},"des_at":{…},"ver":…,"ts":…}`, each
/// field empty or 0 when missing. This is the form kept in a store, not the platform's
/// document ([`to_json`](ShadowDocument::to_json) writes that).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ShadowDocument {
    #[serde(rename = "rep")]
    reported: Map<String, Value>,
    #[serde(rename = "des")]
    desired: Map<String, Value>,
    /// When each attribute last changed, in seconds.
    #[serde(rename = "rep_at")]
    reported_at: BTreeMap<String, u64>,
    #[serde(rename = "des_at")]
    desired_at: BTreeMap<String, u64>,
    #[serde(rename = "ver")]
    version: u64,
    /// When the document last changed, in seconds.
    #[serde(rename = "ts")]
    timestamp: u64,
}

/// Which section of the state.
#[derive(Clone, Copy)]
enum Section {
    Reported,
    Desired,
}

impl ShadowDocument {
    /// The version (0 for a shadow never written, or cleared with version -1).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The desired state.
    pub fn desired(&self) -> &Map<String, Value> {
        &self.desired
    }

    /// The reported state.
    pub fn reported(&self) -> &Map<String, Value> {
        &self.reported
    }

    /// The whole document, as the platform's `GetDeviceShadow` gives it:
    /// `{"state":{…},"metadata":{…},"timestamp":…,"version":…}`.
    pub fn to_json(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Document<'a> {
            state: StateView<'a>,
            metadata: MetadataView<'a>,
            timestamp: u64,
            version: u64,
        }
        to_bytes(&Document {
            state: self.state_view(),
            metadata: self.metadata_view(),
            timestamp: self.timestamp,
            version: self.version,
        })
    }

    /// Answers a device's request: the reply on `/shadow/get/{pk}/{dn}`, and whether it is an
    /// error (the request refused with a code).
    pub(crate) fn handle_device(
        &mut self,
        request: &ShadowRequest,
        topic: String,
        now: UnixMillis,
    ) -> (Downlink, bool) {
        let token = request.client_token.as_deref();
        let (payload, refused_with_code) = match &request.command {
            Ok(Command::Get) => (self.full(token, "reply", now), false),
            Ok(command) => match self.apply(command, false, now) {
                Ok(()) => (self.acknowledged(token, now), false),
                Err(code) => (refused(code, token, now), true),
            },
            Err(code) => (refused(*code, token, now), true),
        };
        (Downlink { topic, payload }, refused_with_code)
    }

    /// Applies an application's update (`UpdateDeviceShadow`): on success, the `control`
    /// message to push to the device.
    pub(crate) fn update_from_app(
        &mut self,
        request: &ShadowRequest,
        now: UnixMillis,
    ) -> Result<Vec<u8>, ShadowCode> {
        match &request.command {
            Ok(Command::Get) => Err(ShadowCode::METHOD_INVALID),
            Ok(command) => {
                self.apply(command, true, now)?;
                Ok(self.full(None, "control", now))
            }
            Err(code) => Err(*code),
        }
    }

    /// An update or delete, version checked: a version above the shadow's is taken as the new
    /// one; -1 clears the shadow to version 0. Without a version (ours), and for an
    /// application's version 0, the shadow's version goes up by one.
    fn apply(
        &mut self,
        command: &Command,
        from_app: bool,
        now: UnixMillis,
    ) -> Result<(), ShadowCode> {
        let (state, version, delete) = match command {
            Command::Get => return Ok(()),
            Command::Update { state, version } => (state, *version, false),
            Command::Delete { state, version } => (state, *version, true),
        };
        let next = match version {
            Some(-1) => {
                *self = ShadowDocument {
                    timestamp: now.secs(),
                    ..ShadowDocument::default()
                };
                return Ok(());
            }
            None => self.version + 1,
            Some(0) if from_app => self.version + 1,
            Some(version) => match u64::try_from(version) {
                Ok(version) if version > self.version => version,
                _ => return Err(ShadowCode::VERSION_INVALID),
            },
        };
        let Value::Object(state) = state else {
            return Err(ShadowCode::STATE_MISSING);
        };
        let reported = state.get("reported");
        let desired = state.get("desired");
        if reported.is_none() && desired.is_none() {
            return Err(ShadowCode::REPORTED_MISSING);
        }
        // Checked whole before anything changes: a refused request changes nothing.
        let mut changed = self.clone();
        for (section, value) in [(Section::Reported, reported), (Section::Desired, desired)] {
            if let Some(value) = value {
                changed.apply_section(section, value, delete, now)?;
            }
        }
        let size = crate::object_size(&changed.reported) + crate::object_size(&changed.desired);
        if size > MAX_SHADOW_BYTES {
            return Err(ShadowCode::TOO_MANY_ATTRIBUTES);
        }
        changed.version = next;
        changed.timestamp = now.secs();
        *self = changed;
        Ok(())
    }

    fn apply_section(
        &mut self,
        section: Section,
        value: &Value,
        delete: bool,
        now: UnixMillis,
    ) -> Result<(), ShadowCode> {
        let (values, times) = match section {
            Section::Reported => (&mut self.reported, &mut self.reported_at),
            Section::Desired => (&mut self.desired, &mut self.desired_at),
        };
        match value {
            Value::String(text) if text == "null" => {
                values.clear();
                times.clear();
            }
            Value::Null => {
                values.clear();
                times.clear();
            }
            Value::Object(attributes) => {
                for (key, value) in attributes {
                    let removes = delete || value.is_null() || value.as_str() == Some("null");
                    if removes {
                        values.remove(key);
                        times.remove(key);
                    } else {
                        values.insert(key.clone(), value.clone());
                        times.insert(key.clone(), now.secs());
                    }
                }
                if values.len() > MAX_SHADOW_ATTRIBUTES {
                    return Err(ShadowCode::TOO_MANY_ATTRIBUTES);
                }
            }
            _ => return Err(ShadowCode::ATTRIBUTE_INVALID),
        }
        Ok(())
    }

    fn state_view(&self) -> StateView<'_> {
        StateView {
            reported: &self.reported,
            desired: &self.desired,
        }
    }

    fn metadata_view(&self) -> MetadataView<'_> {
        MetadataView {
            reported: TimesView(&self.reported_at),
            desired: TimesView(&self.desired_at),
        }
    }

    /// A `reply` to `get`, or a `control` push: the whole state. Top-level `version` and
    /// `timestamp` come before `payload`, whose metadata holds `timestamp` keys too (the C SDK
    /// 4.x takes a key's first occurrence in the text).
    fn full(&self, token: Option<&str>, method: &str, now: UnixMillis) -> Vec<u8> {
        #[derive(Serialize)]
        struct Payload<'a> {
            status: &'a str,
            state: StateView<'a>,
            metadata: MetadataView<'a>,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Full<'a> {
            method: &'a str,
            version: u64,
            timestamp: u64,
            #[serde(skip_serializing_if = "Option::is_none")]
            client_token: Option<&'a str>,
            payload: Payload<'a>,
        }
        to_bytes(&Full {
            method,
            version: self.version,
            timestamp: now.secs(),
            client_token: token,
            payload: Payload {
                status: "success",
                state: self.state_view(),
                metadata: self.metadata_view(),
            },
        })
    }

    /// The reply to an accepted update or delete.
    fn acknowledged(&self, token: Option<&str>, now: UnixMillis) -> Vec<u8> {
        #[derive(Serialize)]
        struct Payload<'a> {
            status: &'a str,
            version: u64,
        }
        to_bytes(&Reply {
            method: "reply",
            timestamp: now.secs(),
            client_token: token,
            payload: Payload {
                status: "success",
                version: self.version,
            },
        })
    }
}

/// A reply without the state: top-level keys, then `payload`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Reply<'a, P> {
    method: &'a str,
    timestamp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_token: Option<&'a str>,
    payload: P,
}

/// The reply to a refused request.
fn refused(code: ShadowCode, token: Option<&str>, now: UnixMillis) -> Vec<u8> {
    #[derive(Serialize)]
    struct Content<'a> {
        errorcode: String,
        errormessage: &'a str,
    }
    #[derive(Serialize)]
    struct Payload<'a> {
        status: &'a str,
        content: Content<'a>,
    }
    to_bytes(&Reply {
        method: "reply",
        timestamp: now.secs(),
        client_token: token,
        payload: Payload {
            status: "error",
            content: Content {
                errorcode: format!("{}", code.code),
                errormessage: code.message,
            },
        },
    })
}

#[derive(Serialize)]
struct StateView<'a> {
    reported: &'a Map<String, Value>,
    desired: &'a Map<String, Value>,
}

#[derive(Serialize)]
struct MetadataView<'a> {
    reported: TimesView<'a>,
    desired: TimesView<'a>,
}

/// `{"key":{"timestamp":…},…}`.
struct TimesView<'a>(&'a BTreeMap<String, u64>);

impl Serialize for TimesView<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        #[derive(Serialize)]
        struct At {
            timestamp: u64,
        }
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, timestamp) in self.0 {
            map.serialize_entry(
                key,
                &At {
                    timestamp: *timestamp,
                },
            )?;
        }
        map.end()
    }
}

/// The device's shadow topic its replies and pushes go to.
pub(crate) fn shadow_get_topic(product_key: &str, device_name: &str) -> String {
    let mut topic = "/shadow/get/".to_owned();
    topic.push_str(product_key);
    topic.push('/');
    topic.push_str(device_name);
    topic
}
