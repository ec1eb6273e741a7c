//! What the platform keeps of one device, and how a request changes it.

use alloc::borrow::ToOwned;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::alink::{AlinkCode, AlinkMethod, AlinkRequest, DeviceReply, empty_object};
use crate::forward::Report;
use crate::ota::{self, OtaJob, OtaModule, OtaModules};
use crate::request::DeviceMessage;
use crate::shadow::{ShadowCode, ShadowDocument, ShadowRequest, shadow_get_topic};
use crate::{Downlink, UnixMillis, json_size, truncate_to};

/// Distinct properties the platform keeps of one device (ours). A post that would add one
/// more is answered with 429 and changes nothing.
pub const MAX_PROPERTIES: usize = 1024;
/// Tags one device has at most (ours, as the platform's documented 100).
pub const MAX_TAGS: usize = 100;
/// The largest property value kept, in bytes of its JSON (about; ours). A larger one is
/// answered 460.
pub const MAX_VALUE_BYTES: usize = 8 * 1024;
/// What one device's latest property values may take in all, in bytes of their names and
/// JSON (about; ours). A post that would take the device past it is answered 429.
pub const MAX_PROPERTY_BYTES: usize = 256 * 1024;
/// The longest tag value, in bytes (ours; the platform's tags are short). Longer: 460.
pub const MAX_TAG_VALUE_LEN: usize = 1024;
/// The largest `data` of a downlink result kept, in bytes of its JSON (about; ours); a larger
/// one is kept as `{}`.
pub const MAX_RESULT_DATA_BYTES: usize = 8 * 1024;
/// The longest `message` of a downlink result kept, in bytes (ours); a longer one is cut.
const MAX_RESULT_MESSAGE_LEN: usize = 256;
/// OTA modules a device may report on (ours): a report or progress for one more is dropped.
/// The platform's products have a handful (`default`, `MCU`, …).
pub const MAX_OTA_MODULES: usize = 32;
/// The longest property or tag name, in bytes (ours).
const MAX_NAME_LEN: usize = 128;

/// A property's latest value and when the device says it was measured.
///
/// Stored (serde) as `{"v":…,"t":…}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PropertyValue {
    /// The value, as the device posted it.
    #[serde(rename = "v")]
    pub value: Value,
    /// The `time` the device gave with it, or when the platform received it.
    #[serde(rename = "t")]
    pub time: UnixMillis,
}

/// A desired property value (set by the server, got and deleted by the device) with its
/// version, which goes up by one with each set.
///
/// Stored (serde) as `{"v":…,"ver":…}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DesiredValue {
    /// The value.
    #[serde(rename = "v")]
    pub value: Value,
    /// Its version.
    #[serde(rename = "ver")]
    pub version: u64,
}

/// A device's answer to a downlink of the server (§9.3): what the server-side subscription
/// forwards on `/${pk}/${dn}/thing/downlink/reply/message`.
#[derive(Clone, Debug, PartialEq)]
pub struct DownlinkResult {
    /// The downlink's id, when the device echoed a decimal one.
    pub request_id: Option<u64>,
    /// The device's code.
    pub code: i64,
    /// The device's message (`success` for 200 when it sent none).
    pub message: String,
    /// The downlink's topic.
    pub topic: String,
    /// The device's `data`.
    pub data: Value,
    /// When the answer came.
    pub time: UnixMillis,
}

/// What handling one request gave.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Handled {
    /// The reply to send the device, if one goes (`sys.ack` 0 wants none; reports get none).
    pub reply: Option<Downlink>,
    /// The result of a downlink the device answered.
    pub result: Option<DownlinkResult>,
    /// Whether the request was malformed (answered with an error code, or dropped when no
    /// answer can be made).
    pub malformed: bool,
    /// What the device reported that the server-side subscription forwards (thing-model data,
    /// OTA), when asked for with [`DeviceState::handle_reported`].
    pub report: Option<Report>,
}

/// What the platform keeps of one device: its latest properties, tags, desired values, shadow
/// and OTA modules.
///
/// It goes through serde to be kept in a store, as
/// `{"pk":…,"dn":…,"props":{…},"tags":{…},"des":{…},"shadow":{…},"ota":{…}}`: the identity is
/// required, every other field is empty when missing, and unknown fields are ignored, so that
/// a later version may add some. What is derived from the rest (the bytes the properties take)
/// is not stored but computed again when read. The format must describe itself (JSON, CBOR,
/// MessagePack …): values are [`serde_json::Value`]s.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "StoredDevice")]
pub struct DeviceState {
    #[serde(rename = "pk")]
    product_key: String,
    #[serde(rename = "dn")]
    device_name: String,
    #[serde(rename = "props")]
    properties: BTreeMap<String, PropertyValue>,
    /// What `properties` takes, by [`property_size`] of each; not stored, computed again when
    /// read ([`StoredDevice`]).
    #[serde(skip)]
    property_bytes: usize,
    tags: BTreeMap<String, String>,
    #[serde(rename = "des")]
    desired: BTreeMap<String, DesiredValue>,
    shadow: ShadowDocument,
    ota: OtaModules,
}

/// A [`DeviceState`] as read from a store: its fields as [`DeviceState`]'s `Serialize` writes
/// them (same names), without those derived from the rest.
#[derive(Deserialize)]
struct StoredDevice {
    #[serde(rename = "pk")]
    product_key: String,
    #[serde(rename = "dn")]
    device_name: String,
    #[serde(rename = "props", default)]
    properties: BTreeMap<String, PropertyValue>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(rename = "des", default)]
    desired: BTreeMap<String, DesiredValue>,
    #[serde(default)]
    shadow: ShadowDocument,
    #[serde(default)]
    ota: OtaModules,
}

impl From<StoredDevice> for DeviceState {
    fn from(stored: StoredDevice) -> Self {
        let property_bytes = stored
            .properties
            .iter()
            .map(|(name, value)| property_size(name, &value.value))
            .sum();
        DeviceState {
            product_key: stored.product_key,
            device_name: stored.device_name,
            properties: stored.properties,
            property_bytes,
            tags: stored.tags,
            desired: stored.desired,
            shadow: stored.shadow,
            ota: stored.ota,
        }
    }
}

/// What one kept property takes of [`MAX_PROPERTY_BYTES`]: its name and its value's
/// [`json_size`].
fn property_size(name: &str, value: &Value) -> usize {
    name.len() + json_size(value)
}

impl DeviceState {
    /// A device the platform knows nothing of yet.
    pub fn new(product_key: &str, device_name: &str) -> Self {
        DeviceState {
            product_key: product_key.to_owned(),
            device_name: device_name.to_owned(),
            properties: BTreeMap::new(),
            property_bytes: 0,
            tags: BTreeMap::new(),
            desired: BTreeMap::new(),
            shadow: ShadowDocument::default(),
            ota: OtaModules::new(),
        }
    }

    /// The device's product key, as given to [`new`](DeviceState::new).
    pub fn product_key(&self) -> &str {
        &self.product_key
    }

    /// The device's name within its product, as given to [`new`](DeviceState::new).
    pub fn device_name(&self) -> &str {
        &self.device_name
    }

    /// Answers one request of the device at `now`.
    pub fn handle(&mut self, message: DeviceMessage, now: UnixMillis) -> Handled {
        self.handle_with(message, now, false)
    }

    /// Answers one request of the device at `now`, as [`handle`](Self::handle) does, and says
    /// in [`Handled::report`] what it reported that the platform forwards (properties and
    /// events posted, OTA versions and outcomes). Costs a copy of what was posted: call it
    /// only when someone takes the reports.
    pub fn handle_reported(&mut self, message: DeviceMessage, now: UnixMillis) -> Handled {
        self.handle_with(message, now, true)
    }

    fn handle_with(&mut self, message: DeviceMessage, now: UnixMillis, reported: bool) -> Handled {
        match message {
            DeviceMessage::Alink(request) => self.handle_alink(request, now, reported),
            DeviceMessage::Reply(reply) => Handled {
                result: Some(downlink_result(reply, now)),
                ..Handled::default()
            },
            DeviceMessage::Ntp(request) => {
                let reply = request.response(&self.product_key, &self.device_name, now);
                Handled {
                    malformed: reply.is_none(),
                    reply,
                    ..Handled::default()
                }
            }
            DeviceMessage::Shadow(request) => {
                let topic = shadow_get_topic(&self.product_key, &self.device_name);
                let (reply, refused) = self.shadow.handle_device(&request, topic, now);
                Handled {
                    reply: Some(reply),
                    malformed: refused,
                    ..Handled::default()
                }
            }
            DeviceMessage::OtaReport(report) => match report.module_version {
                Some((name, version)) => match self.ota_module(name.clone()) {
                    // Nobody takes the reports: nothing to copy.
                    Some(module) if !reported => {
                        module.reported(version);
                        Handled::default()
                    }
                    Some(module) => {
                        let before = module.version.clone();
                        let job = module.job.clone();
                        module.reported(version.clone());
                        let report = match job {
                            // The job's version reported: the upgrade succeeded.
                            Some(job) if job.version == version => Some(Report::OtaOutcome {
                                module: name,
                                succeeded: true,
                                src_version: before,
                                dest_version: job.version,
                                desc: String::from("success"),
                                job_id: job.id,
                            }),
                            // Forwarded only when the version changes, as on the platform.
                            _ if before.as_deref() != Some(version.as_str()) => {
                                Some(Report::OtaVersion {
                                    module: name,
                                    version,
                                })
                            }
                            _ => None,
                        };
                        Handled {
                            report,
                            ..Handled::default()
                        }
                    }
                    None => malformed(),
                },
                None => malformed(),
            },
            DeviceMessage::OtaProgress(progress) => match progress.step {
                Some((name, step, desc)) => match self.ota_module(name.clone()) {
                    Some(module) if !reported => {
                        module.progressed(step, desc);
                        Handled::default()
                    }
                    Some(module) => {
                        let job = module.job.clone();
                        let version = module.version.clone();
                        module.progressed(step, desc.clone());
                        let report = match job {
                            Some(job) if step < 0 => Some(Report::OtaOutcome {
                                module: name,
                                succeeded: false,
                                src_version: version,
                                dest_version: job.version,
                                desc,
                                job_id: job.id,
                            }),
                            _ => None,
                        };
                        Handled {
                            report,
                            ..Handled::default()
                        }
                    }
                    None => malformed(),
                },
                None => malformed(),
            },
        }
    }

    /// A module a device reports on, made the first time; `None` for a new one past
    /// [`MAX_OTA_MODULES`] (the report is dropped and counted as malformed).
    fn ota_module(&mut self, module: String) -> Option<&mut OtaModule> {
        if !self.ota.contains_key(&module) && self.ota.len() >= MAX_OTA_MODULES {
            return None;
        }
        Some(self.ota.entry(module).or_default())
    }

    fn handle_alink(&mut self, request: AlinkRequest, now: UnixMillis, reported: bool) -> Handled {
        let method = request.method.name();
        let answer = match &request.params {
            Ok(params) => self.apply(&request.method, params, now),
            Err(code) => Err(*code),
        };
        let (code, data) = match answer {
            Ok(data) => (AlinkCode::SUCCESS, data),
            Err(code) => (code, empty_object()),
        };
        let report = match (&request.params, code == AlinkCode::SUCCESS && reported) {
            (Ok(params), true) => alink_report(&request, params, now),
            _ => None,
        };
        Handled {
            reply: request.reply_to.reply(code, &data, &method),
            result: None,
            malformed: code != AlinkCode::SUCCESS,
            report,
        }
    }

    /// Applies a well-formed request: the reply's `data`, or the code it fails with.
    fn apply(
        &mut self,
        method: &AlinkMethod,
        params: &Value,
        now: UnixMillis,
    ) -> Result<Value, AlinkCode> {
        match method {
            AlinkMethod::PropertyPost => {
                let posted = params.as_object().ok_or(AlinkCode::BAD_PARAMS)?;
                let mut values = Vec::with_capacity(posted.len());
                for (name, value) in posted {
                    if !valid_name(name) {
                        return Err(AlinkCode::BAD_PARAMS);
                    }
                    values.push((name, timed_value(value, now)?));
                }
                self.store_properties(values)?;
            }
            AlinkMethod::BatchPost => {
                // {"properties":{"Power":[{"value":…,"time":…}, …]},"events":{…}}
                let batch = params.as_object().ok_or(AlinkCode::BAD_PARAMS)?;
                let mut values = Vec::new();
                if let Some(properties) = batch.get("properties") {
                    for (name, samples) in properties.as_object().ok_or(AlinkCode::BAD_PARAMS)? {
                        values.extend(latest_sample(name, samples, now)?);
                    }
                }
                self.store_properties(values)?;
            }
            AlinkMethod::HistoryPost => {
                // [{"identity":{…},"properties":{"Power":{"value":…,"time":…}},"events":{…}}, …];
                // the platform's sample sends "properties" as an array of such objects, its
                // parameter table as one object: both are taken.
                let entries = params.as_array().ok_or(AlinkCode::BAD_PARAMS)?;
                let mut values = Vec::new();
                for entry in entries {
                    let groups: &[Value] = match entry.get("properties") {
                        None => &[],
                        Some(Value::Array(groups)) => groups,
                        Some(group) => core::slice::from_ref(group),
                    };
                    for group in groups {
                        for (name, value) in group.as_object().ok_or(AlinkCode::BAD_PARAMS)? {
                            if !valid_name(name) {
                                return Err(AlinkCode::BAD_PARAMS);
                            }
                            values.push((name, timed_value(value, now)?));
                        }
                    }
                }
                self.store_properties(values)?;
            }
            AlinkMethod::EventPost(_) => {
                // Taken as posted: the server-side subscription forwards events; nothing is kept.
                params.as_object().ok_or(AlinkCode::BAD_PARAMS)?;
            }
            AlinkMethod::TagsUpdate => {
                let mut tags = self.tags.clone();
                for tag in params.as_array().ok_or(AlinkCode::BAD_PARAMS)? {
                    let key = tag
                        .get("attrKey")
                        .and_then(Value::as_str)
                        .filter(|key| valid_name(key));
                    let value = tag
                        .get("attrValue")
                        .filter(|value| json_size(value) <= MAX_TAG_VALUE_LEN + 2)
                        .and_then(|value| match value {
                            Value::String(text) => Some(text.clone()),
                            Value::Number(number) => Some(alloc::format!("{number}")),
                            _ => None,
                        });
                    let (Some(key), Some(value)) = (key, value) else {
                        return Err(AlinkCode::BAD_PARAMS);
                    };
                    tags.insert(key.to_owned(), value);
                }
                if tags.len() > MAX_TAGS {
                    return Err(AlinkCode::TOO_MANY);
                }
                self.tags = tags;
            }
            AlinkMethod::TagsDelete => {
                let keys = params.as_array().ok_or(AlinkCode::BAD_PARAMS)?;
                let keys: Option<Vec<&str>> = keys
                    .iter()
                    .map(|tag| tag.get("attrKey").and_then(Value::as_str))
                    .collect();
                for key in keys.ok_or(AlinkCode::BAD_PARAMS)? {
                    self.tags.remove(key);
                }
            }
            AlinkMethod::DesiredGet => {
                let mut data = Map::new();
                for name in params.as_array().ok_or(AlinkCode::BAD_PARAMS)? {
                    let name = name.as_str().ok_or(AlinkCode::BAD_PARAMS)?;
                    if let Some(desired) = self.desired.get(name) {
                        data.insert(
                            name.to_owned(),
                            serde_json::json!({"value": desired.value, "version": desired.version}),
                        );
                    }
                }
                return Ok(Value::Object(data));
            }
            AlinkMethod::DesiredDelete => {
                // {"Power":{"version":3}} or {"Power":{}}: a stale version deletes nothing.
                for (name, which) in params.as_object().ok_or(AlinkCode::BAD_PARAMS)? {
                    let version = which.get("version").and_then(Value::as_u64);
                    let current = self.desired.get(name).map(|desired| desired.version);
                    if current.is_some() && (version.is_none() || version == current) {
                        self.desired.remove(name);
                    }
                }
            }
            AlinkMethod::FirmwareGet => {
                return Ok(ota::pull_data(&self.ota, params));
            }
        }
        Ok(empty_object())
    }

    /// Keeps each value that is not older than the one kept; refuses the whole post when it
    /// would take the device past [`MAX_PROPERTIES`].
    fn store_properties(&mut self, values: Vec<(&String, PropertyValue)>) -> Result<(), AlinkCode> {
        let new = values
            .iter()
            .filter(|(name, _)| !self.properties.contains_key(name.as_str()))
            .map(|(name, _)| name.as_str())
            .collect::<alloc::collections::BTreeSet<_>>()
            .len();
        if self.properties.len() + new > MAX_PROPERTIES {
            return Err(AlinkCode::TOO_MANY);
        }
        // The bytes kept after the post, each value that replaces another counted in its place
        // (a post naming one property twice counts both: an overestimate, never an under).
        let mut bytes = self.property_bytes;
        for (name, value) in &values {
            let size = property_size(name, &value.value);
            match self.properties.get(name.as_str()) {
                Some(kept) if kept.time > value.time => {}
                Some(kept) => {
                    bytes = bytes.saturating_sub(property_size(name, &kept.value)) + size;
                }
                None => bytes += size,
            }
        }
        if bytes > MAX_PROPERTY_BYTES {
            return Err(AlinkCode::TOO_MANY);
        }
        for (name, value) in values {
            let size = property_size(name, &value.value);
            match self.properties.get_mut(name.as_str()) {
                Some(kept) if kept.time > value.time => {}
                Some(kept) => {
                    self.property_bytes = self
                        .property_bytes
                        .saturating_sub(property_size(name, &kept.value))
                        + size;
                    *kept = value;
                }
                None => {
                    self.property_bytes += size;
                    self.properties.insert(name.clone(), value);
                }
            }
        }
        Ok(())
    }

    /// A property's latest value.
    pub fn property(&self, name: &str) -> Option<&PropertyValue> {
        self.properties.get(name)
    }

    /// Every property's latest value, by name.
    pub fn properties(&self) -> impl Iterator<Item = (&str, &PropertyValue)> {
        self.properties
            .iter()
            .map(|(name, value)| (name.as_str(), value))
    }

    /// The device's tags (`deviceinfo`), by key.
    pub fn tags(&self) -> impl Iterator<Item = (&str, &str)> {
        self.tags
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
    }

    /// The desired values, by property name.
    pub fn desired(&self) -> impl Iterator<Item = (&str, &DesiredValue)> {
        self.desired
            .iter()
            .map(|(name, value)| (name.as_str(), value))
    }

    /// Sets desired values (the server's side); each one's version goes up by one. Refused
    /// whole (429) when it would take the device past [`MAX_PROPERTIES`] desired values, or
    /// (460) for an empty name.
    pub fn set_desired(&mut self, items: &Map<String, Value>) -> Result<(), AlinkCode> {
        if items.keys().any(|name| !valid_name(name)) {
            return Err(AlinkCode::BAD_PARAMS);
        }
        let new = items
            .keys()
            .filter(|name| !self.desired.contains_key(*name))
            .count();
        if self.desired.len() + new > MAX_PROPERTIES {
            return Err(AlinkCode::TOO_MANY);
        }
        for (name, value) in items {
            let version = self.desired.get(name).map_or(1, |kept| kept.version + 1);
            self.desired.insert(
                name.clone(),
                DesiredValue {
                    value: value.clone(),
                    version,
                },
            );
        }
        Ok(())
    }

    /// The shadow.
    pub fn shadow(&self) -> &ShadowDocument {
        &self.shadow
    }

    /// An application's shadow update (`{"method":"update","state":{"desired":…},"version":…}`):
    /// the `control` push for the device on success.
    pub fn update_shadow(
        &mut self,
        request: &ShadowRequest,
        now: UnixMillis,
    ) -> Result<Downlink, ShadowCode> {
        let payload = self.shadow.update_from_app(request, now)?;
        Ok(Downlink {
            topic: shadow_get_topic(&self.product_key, &self.device_name),
            payload,
        })
    }

    /// Starts an upgrade of one module (replacing a job not yet done for it): the push to send
    /// now if the device is online. It is pushed again each time the device comes online until
    /// the device reports the new version or a failed step.
    pub fn start_ota(&mut self, job: OtaJob) -> Downlink {
        let push = job.push(&self.product_key, &self.device_name);
        let module = self.ota.entry(job.module.clone()).or_default();
        module.job = Some(job);
        module.last_outcome = None;
        push
    }

    /// Whether an upgrade is not yet done.
    pub fn has_pending_ota(&self) -> bool {
        self.ota.values().any(|module| module.job.is_some())
    }

    /// The pushes of every upgrade not yet done, for a device that has just come online.
    pub fn pending_ota_pushes(&self) -> Vec<Downlink> {
        ota::pending_pushes(&self.ota, &self.product_key, &self.device_name)
    }

    /// The OTA modules, by name.
    pub fn ota_modules(&self) -> impl Iterator<Item = (&str, &OtaModule)> {
        self.ota
            .iter()
            .map(|(name, module)| (name.as_str(), module))
    }
}

fn malformed() -> Handled {
    Handled {
        malformed: true,
        ..Handled::default()
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_LEN
}

/// What an accepted thing-model post reports for forwarding: its properties or its event.
fn alink_report(request: &AlinkRequest, params: &Value, now: UnixMillis) -> Option<Report> {
    let id = request.reply_to.id.get();
    let request_id = String::from(id.trim_matches('"'));
    let properties = |object: &Map<String, Value>| {
        object
            .iter()
            .filter_map(|(name, value)| Some((name.clone(), timed_value(value, now).ok()?)))
            .collect::<Vec<_>>()
    };
    match &request.method {
        AlinkMethod::PropertyPost => Some(Report::Properties {
            request_id,
            items: properties(params.as_object()?),
            history: false,
        }),
        AlinkMethod::HistoryPost => {
            let mut items = Vec::new();
            for entry in params.as_array()? {
                match entry.get("properties") {
                    Some(Value::Array(groups)) => {
                        for group in groups {
                            items.extend(properties(group.as_object()?));
                        }
                    }
                    Some(group) => items.extend(properties(group.as_object()?)),
                    None => {}
                }
            }
            Some(Report::Properties {
                request_id,
                items,
                history: true,
            })
        }
        AlinkMethod::EventPost(identifier) => Some(Report::Event {
            request_id,
            identifier: identifier.clone(),
            value: params.get("value").cloned().unwrap_or_else(empty_object),
            time: params
                .get("time")
                .and_then(Value::as_u64)
                .map_or(now, UnixMillis),
        }),
        _ => None,
    }
}

/// A posted property value: `{"value":…,"time":…}` or the bare value (both are accepted by
/// the platform), its time the device's or `now`.
fn timed_value(value: &Value, now: UnixMillis) -> Result<PropertyValue, AlinkCode> {
    if json_size(value) > MAX_VALUE_BYTES + 64 {
        return Err(AlinkCode::BAD_PARAMS);
    }
    match value {
        Value::Object(fields) if fields.contains_key("value") => {
            let time = match fields.get("time") {
                None => now,
                Some(time) => UnixMillis(time.as_u64().ok_or(AlinkCode::BAD_PARAMS)?),
            };
            Ok(PropertyValue {
                value: fields.get("value").cloned().unwrap_or(Value::Null),
                time,
            })
        }
        other => Ok(PropertyValue {
            value: other.clone(),
            time: now,
        }),
    }
}

/// The latest of a batch's samples of one property (`[{"value":…,"time":…}, …]`).
fn latest_sample<'a>(
    name: &'a String,
    samples: &Value,
    now: UnixMillis,
) -> Result<Option<(&'a String, PropertyValue)>, AlinkCode> {
    if !valid_name(name) {
        return Err(AlinkCode::BAD_PARAMS);
    }
    let mut latest: Option<PropertyValue> = None;
    for sample in samples.as_array().ok_or(AlinkCode::BAD_PARAMS)? {
        let sample = timed_value(sample, now)?;
        if latest.as_ref().is_none_or(|kept| sample.time >= kept.time) {
            latest = Some(sample);
        }
    }
    Ok(latest.map(|value| (name, value)))
}

fn downlink_result(reply: DeviceReply, now: UnixMillis) -> DownlinkResult {
    let message = reply
        .message
        .unwrap_or_else(|| if reply.code == 200 { "success" } else { "" }.to_owned());
    let mut message = message;
    truncate_to(&mut message, MAX_RESULT_MESSAGE_LEN);
    let data = match json_size(&reply.data) <= MAX_RESULT_DATA_BYTES {
        true => reply.data,
        false => empty_object(),
    };
    DownlinkResult {
        request_id: reply.request_id,
        code: reply.code,
        message,
        topic: reply.request_topic,
        data,
        time: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ShadowRequest;

    #[test]
    fn history_takes_properties_as_an_object_or_an_array_of_them() {
        let mut device = DeviceState::new("pk", "dn");
        let post = br#"{"id":"1","params":[{"identity":{},"properties":[{"A":{"value":1,"time":5}},{"B":{"value":2,"time":6}}]},{"properties":{"C":{"value":3,"time":7}}}]}"#;
        let request = DeviceMessage::parse(
            "/sys/pk/dn/thing/event/property/history/post",
            post,
            "pk",
            "dn",
        );
        let handled = device.handle(request.unwrap(), UnixMillis(10));
        assert!(!handled.malformed);
        let kept: Vec<_> = device.properties().map(|(name, _)| name).collect();
        assert_eq!(kept, ["A", "B", "C"]);
    }

    #[test]
    fn a_device_reports_on_at_most_so_many_modules() {
        let mut device = DeviceState::new("pk", "dn");
        for n in 0..=MAX_OTA_MODULES {
            let inform = alloc::format!(r#"{{"id":1,"params":{{"version":"1","module":"m{n}"}}}}"#);
            let request =
                DeviceMessage::parse("/ota/device/inform/pk/dn", inform.as_bytes(), "pk", "dn");
            let handled = device.handle(request.unwrap(), UnixMillis(10));
            assert_eq!(handled.malformed, n == MAX_OTA_MODULES, "module {n}");
        }
        assert_eq!(device.ota_modules().count(), MAX_OTA_MODULES);
    }

    #[test]
    fn ntp_echoes_the_devices_time_as_written() {
        let mut device = DeviceState::new("pk", "dn");
        let request = DeviceMessage::parse(
            "/ext/ntp/pk/dn/request",
            br#"{"deviceSendTime":1e3}"#,
            "pk",
            "dn",
        );
        let reply = device
            .handle(request.unwrap(), UnixMillis(42))
            .reply
            .unwrap();
        assert_eq!(
            reply.payload,
            br#"{"deviceSendTime":"1e3","serverRecvTime":"42","serverSendTime":"42"}"#
        );
    }

    /// Sends the device's `payload` on `topic` at `now`: what was handled.
    fn send(device: &mut DeviceState, topic: &str, payload: &[u8], now: UnixMillis) -> Handled {
        let request = DeviceMessage::parse(topic, payload, "pk", "dn").unwrap();
        device.handle(request, now)
    }

    /// A device with something in every part of its state: properties, tags, desired values,
    /// a shadow at version 3 and an upgrade under way.
    fn busy_device() -> DeviceState {
        let now = UnixMillis(1_700_000_000_000);
        let mut device = DeviceState::new("pk", "dn");
        let posted = send(
            &mut device,
            "/sys/pk/dn/thing/event/property/post",
            br#"{"id":"1","params":{"Power":1,"Temp":{"value":21.5,"time":1699999999000},"Mode":"eco","Grid":[[1,2],{"a":null}]}}"#,
            now,
        );
        assert!(!posted.malformed);
        let tagged = send(
            &mut device,
            "/sys/pk/dn/thing/deviceinfo/update",
            br#"{"id":"2","params":[{"attrKey":"room","attrValue":"kitchen"},{"attrKey":"floor","attrValue":2}]}"#,
            now,
        );
        assert!(!tagged.malformed);
        let desired = serde_json::json!({"Power": 0, "Mode": "boost"});
        device.set_desired(desired.as_object().unwrap()).unwrap();
        device.set_desired(desired.as_object().unwrap()).unwrap();
        for version in 1..=2 {
            let update = alloc::format!(
                r#"{{"method":"update","state":{{"reported":{{"color":"red","n":{version}}}}},"version":{version}}}"#
            );
            let handled = send(&mut device, "/shadow/update/pk/dn", update.as_bytes(), now);
            assert!(!handled.malformed);
        }
        let app = ShadowRequest::parse(
            br#"{"method":"update","state":{"desired":{"color":"green"}},"version":0}"#,
        );
        device.update_shadow(&app, now).unwrap();
        assert_eq!(device.shadow().version(), 3);
        send(
            &mut device,
            "/ota/device/inform/pk/dn",
            br#"{"id":1,"params":{"version":"1.0.0","module":"MCU"}}"#,
            now,
        );
        let job = OtaJob {
            id: 77,
            module: "MCU".into(),
            version: "2.0.0".into(),
            url: "https://example.com/fw.bin".into(),
            size: 1024,
            sign_method: ota::OtaSignMethod::Sha256,
            sign: "ab".repeat(32),
        }
        .validated()
        .unwrap();
        device.start_ota(job);
        send(
            &mut device,
            "/ota/device/progress/pk/dn",
            br#"{"id":2,"params":{"step":"45","desc":"downloading","module":"MCU"}}"#,
            now,
        );
        // A module whose last upgrade failed.
        device.start_ota(OtaJob {
            id: 78,
            module: "default".into(),
            version: "9".into(),
            url: "https://example.com/fw9.bin".into(),
            size: 1,
            sign_method: ota::OtaSignMethod::Md5,
            sign: "0".repeat(32),
        });
        send(
            &mut device,
            "/ota/device/progress/pk/dn",
            br#"{"id":3,"params":{"step":"-2","desc":"no space"}}"#,
            now,
        );
        device
    }

    #[test]
    fn a_device_goes_through_serde_and_comes_back_the_same() {
        let mut kept = busy_device();
        assert!(kept.has_pending_ota());
        let stored = serde_json::to_vec(&kept).unwrap();
        let mut read: DeviceState = serde_json::from_slice(&stored).unwrap();
        assert_eq!(read, kept);
        assert_eq!((read.product_key(), read.device_name()), ("pk", "dn"));
        assert_ne!(read.property_bytes, 0);
        // What is written again is what was written.
        assert_eq!(serde_json::to_vec(&read).unwrap(), stored);

        // Both go on alike.
        let later = UnixMillis(1_700_000_001_000);
        assert_eq!(read.pending_ota_pushes(), kept.pending_ota_pushes());
        for (topic, payload) in [
            (
                "/sys/pk/dn/thing/event/property/post",
                &br#"{"id":"9","params":{"Power":2,"Extra":"x"}}"#[..],
            ),
            (
                "/sys/pk/dn/thing/property/desired/get",
                br#"{"id":"10","params":["Power","Mode"]}"#,
            ),
            (
                "/sys/pk/dn/thing/ota/firmware/get",
                br#"{"id":"11","params":{"module":"MCU"}}"#,
            ),
            (
                "/shadow/update/pk/dn",
                br#"{"method":"update","state":{"reported":{"n":4}}}"#,
            ),
            ("/shadow/update/pk/dn", br#"{"method":"get"}"#),
            (
                "/ota/device/inform/pk/dn",
                br#"{"id":4,"params":{"version":"2.0.0","module":"MCU"}}"#,
            ),
        ] {
            let ours = send(&mut read, topic, payload, later);
            let theirs = send(&mut kept, topic, payload, later);
            assert!(!ours.malformed, "{topic}");
            assert_eq!(ours, theirs, "{topic}");
            assert_eq!(read, kept, "{topic}");
        }
        assert_eq!(read.shadow().version(), 4);
        assert!(!read.has_pending_ota());
    }

    /// A stored device with only its identity (as a later version may drop, or an earlier one
    /// not have written, the rest) is a new device; fields not known are ignored.
    #[test]
    fn a_stored_device_needs_only_its_identity() {
        let read: DeviceState =
            serde_json::from_slice(br#"{"pk":"pk","dn":"dn","later":{"x":1}}"#).unwrap();
        assert_eq!(read, DeviceState::new("pk", "dn"));
        let module: OtaModule = serde_json::from_slice(b"{}").unwrap();
        assert_eq!(module, OtaModule::default());
        assert!(serde_json::from_slice::<DeviceState>(br#"{"pk":"pk"}"#).is_err());
    }

    /// A shadow request answered with an error code is malformed, as an Alink request
    /// answered with one is (`Handled::malformed`, the hub's `services.malformed`); an
    /// accepted one is not.
    #[test]
    fn refused_shadow_requests_are_malformed() {
        let mut device = DeviceState::new("pk", "dn");
        let mut shadow = |payload: &[u8]| {
            let request = DeviceMessage::parse("/shadow/update/pk/dn", payload, "pk", "dn");
            device.handle(request.unwrap(), UnixMillis(1_700_000_000_000))
        };
        let refused: [&[u8]; 3] = [
            b"not json",
            br#"{"state":{"reported":{"a":1}}}"#,
            br#"{"method":"update","state":{"reported":{"a":1}},"version":0}"#,
        ];
        for payload in refused {
            let handled = shadow(payload);
            let reply = String::from_utf8(handled.reply.unwrap().payload).unwrap();
            assert!(reply.contains(r#""status":"error""#), "{reply}");
            assert!(handled.malformed, "{reply}");
        }
        let accepted: [&[u8]; 2] = [
            br#"{"method":"update","state":{"reported":{"a":1}},"version":1}"#,
            br#"{"method":"get"}"#,
        ];
        for payload in accepted {
            let handled = shadow(payload);
            let reply = String::from_utf8(handled.reply.unwrap().payload).unwrap();
            assert!(reply.contains(r#""status":"success""#), "{reply}");
            assert!(!handled.malformed, "{reply}");
        }
    }
}
