//! What the platform forwards to business servers (PLATFORM-PROTOCOLS §9): the formats of the
//! server-side subscription's messages that the platform makes itself, rather than passing on a
//! device's payload.
//!
//! Each is a [`Forwarded`]: the topic a consumer sees in the AMQP message's `topic` property, and
//! the JSON body.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use aliot_auth::DeviceIdentity;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::UnixMillis;
use crate::device::{DownlinkResult, PropertyValue};
use crate::gateway::TopologyChange;

/// A message the platform makes for its server-side subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forwarded {
    /// Its topic (`/as/mqtt/status/{pk}/{dn}`, …).
    pub topic: String,
    /// Its JSON.
    pub payload: Vec<u8>,
}

/// A device's change of status (§9.1): `/as/mqtt/status/{pk}/{dn}` with
/// `{"status","iotId","productKey","deviceName","time","utcTime","lastTime","utcLastTime","clientIp"}`,
/// every value a string, `time` and `lastTime` in China Standard Time (UTC+8), as the platform
/// writes them.
///
/// ```
/// use aliot_auth::DeviceIdentity;
/// use aliot_services::UnixMillis;
/// use aliot_services::forward::device_status;
///
/// let device = DeviceIdentity::new("a1PK", "dev-1");
/// let at = UnixMillis(1_535_700_748_205); // 2018-08-31T07:32:28.205Z
/// let status = device_status(&device, "IoTiD01", true, at, UnixMillis(at.0 - 10), "10.0.0.7");
/// assert_eq!(status.topic, "/as/mqtt/status/a1PK/dev-1");
/// assert_eq!(
///     status.payload,
///     br#"{"status":"online","iotId":"IoTiD01","productKey":"a1PK","deviceName":"dev-1","time":"2018-08-31 15:32:28.205","utcTime":"2018-08-31T07:32:28.205Z","lastTime":"2018-08-31 15:32:28.195","utcLastTime":"2018-08-31T07:32:28.195Z","clientIp":"10.0.0.7"}"#
/// );
/// ```
pub fn device_status(
    device: &DeviceIdentity,
    iot_id: &str,
    online: bool,
    at: UnixMillis,
    last: UnixMillis,
    client_ip: &str,
) -> Forwarded {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Status<'a> {
        status: &'a str,
        iot_id: &'a str,
        product_key: &'a str,
        device_name: &'a str,
        time: String,
        utc_time: String,
        last_time: String,
        utc_last_time: String,
        client_ip: &'a str,
    }
    let payload = serde_json::to_vec(&Status {
        status: if online { "online" } else { "offline" },
        iot_id,
        product_key: &device.product_key,
        device_name: &device.device_name,
        time: at.china_text(),
        utc_time: at.utc_text(),
        last_time: last.china_text(),
        utc_last_time: last.utc_text(),
        client_ip,
    })
    .unwrap_or_default();
    Forwarded {
        topic: format!(
            "/as/mqtt/status/{}/{}",
            device.product_key, device.device_name
        ),
        payload,
    }
}

/// What a device reported that the platform forwards in a form of its own (§9.2), from
/// [`Handled::report`](crate::device::Handled::report).
#[derive(Clone, Debug, PartialEq)]
pub enum Report {
    /// Properties the device posted (`thing/event/property/post`), or posted late
    /// (`thing/event/property/history/post`): each with its value and time.
    Properties {
        /// The request's `id`, as text.
        request_id: String,
        /// What was posted, in the order posted.
        items: Vec<(String, PropertyValue)>,
        /// Whether it came as history.
        history: bool,
    },
    /// An event the device posted (`thing/event/{identifier}/post`).
    Event {
        /// The request's `id`, as text.
        request_id: String,
        /// The event's identifier.
        identifier: String,
        /// Its `params.value` (its output parameters).
        value: Value,
        /// Its `params.time`, or when it came.
        time: UnixMillis,
    },
    /// A module's version, reported by the device.
    OtaVersion {
        /// The module (`default` when none is named).
        module: String,
        /// Its version now.
        version: String,
    },
    /// An upgrade ended: the device reported the job's version, or a failed step.
    OtaOutcome {
        /// The module.
        module: String,
        /// Whether it succeeded.
        succeeded: bool,
        /// The version before the upgrade, if the device had reported one.
        src_version: Option<String>,
        /// The job's version.
        dest_version: String,
        /// The failed step's description, or `""`.
        desc: String,
        /// The job's id.
        job_id: u64,
    },
}

impl Report {
    /// The message kind a consumer group subscribes to for it: thing-model data or OTA.
    pub fn is_ota(&self) -> bool {
        matches!(self, Report::OtaVersion { .. } | Report::OtaOutcome { .. })
    }
}

/// The `deviceType` of forwarded thing-model data (ours: aliot's products have no category, and
/// the platform names a product without one so).
pub const DEVICE_TYPE: &str = "CustomCategory";

/// A report in the form the platform forwards it (§9.2), naming the device by `iot_id`:
///
/// - properties: `/{pk}/{dn}/thing/event/property/post` (or `…/property/history/post`) with
///   `{"iotId","requestId","checkFailedData","productKey","gmtCreate","deviceType","deviceName",
///   "items":{name:{"value","time"}}}`;
/// - an event: `/{pk}/{dn}/thing/event/{identifier}/post` with `{"identifier","name","type",
///   "iotId","requestId","checkFailedData","productKey","deviceName","deviceType","gmtCreate",
///   "value","time"}`
///   (ours: without a thing model the `name` is the identifier and the `type` is `info`);
/// - a module's version: `/{pk}/{dn}/ota/version/post` with `{"iotId","productKey",
///   "deviceName","moduleName","moduleVersion","messageCreateTime"}`;
/// - an upgrade's end: `/{pk}/{dn}/ota/upgrade` with `{"iotId","productKey","deviceName",
///   "moduleName","status":"SUCCEEDED"|"FAILED","messageCreateTime","srcVersion","destVersion",
///   "desc","jobId","taskId"}`.
///
/// ```
/// use aliot_auth::DeviceIdentity;
/// use aliot_services::UnixMillis;
/// use aliot_services::PropertyValue;
/// use aliot_services::forward::{Report, report};
/// use serde_json::json;
///
/// let device = DeviceIdentity::new("a1PK", "dev-1");
/// let posted = Report::Properties {
///     request_id: "7".into(),
///     items: vec![("Power".into(), PropertyValue { value: json!("on"), time: UnixMillis(1_510_799_670_074) })],
///     history: false,
/// };
/// let forwarded = report(&device, "IoTiD01", &posted, UnixMillis(1_510_799_670_100));
/// assert_eq!(forwarded.topic, "/a1PK/dev-1/thing/event/property/post");
/// assert_eq!(
///     forwarded.payload,
///     br#"{"iotId":"IoTiD01","requestId":"7","checkFailedData":{},"productKey":"a1PK","gmtCreate":1510799670100,"deviceType":"CustomCategory","deviceName":"dev-1","items":{"Power":{"value":"on","time":1510799670074}}}"#
/// );
/// ```
pub fn report(
    device: &DeviceIdentity,
    iot_id: &str,
    report: &Report,
    now: UnixMillis,
) -> Forwarded {
    let (pk, dn) = (device.product_key.as_str(), device.device_name.as_str());
    let empty = Map::new();
    let (suffix, payload) = match report {
        Report::Properties {
            request_id,
            items,
            history,
        } => {
            #[derive(Serialize)]
            struct Item<'a> {
                value: &'a Value,
                time: u64,
            }
            #[derive(Serialize)]
            #[serde(rename_all = "camelCase")]
            struct Posted<'a> {
                iot_id: &'a str,
                request_id: &'a str,
                check_failed_data: &'a Map<String, Value>,
                product_key: &'a str,
                gmt_create: u64,
                device_type: &'a str,
                device_name: &'a str,
                items: BTreeMap<&'a str, Item<'a>>,
            }
            let items = items
                .iter()
                .map(|(name, posted)| {
                    let item = Item {
                        value: &posted.value,
                        time: posted.time.0,
                    };
                    (name.as_str(), item)
                })
                .collect();
            let suffix = match history {
                true => String::from("thing/event/property/history/post"),
                false => String::from("thing/event/property/post"),
            };
            let posted = Posted {
                iot_id,
                request_id,
                check_failed_data: &empty,
                product_key: pk,
                gmt_create: now.0,
                device_type: DEVICE_TYPE,
                device_name: dn,
                items,
            };
            (suffix, serde_json::to_vec(&posted))
        }
        Report::Event {
            request_id,
            identifier,
            value,
            time,
        } => {
            #[derive(Serialize)]
            #[serde(rename_all = "camelCase")]
            struct Posted<'a> {
                identifier: &'a str,
                name: &'a str,
                #[serde(rename = "type")]
                kind: &'a str,
                iot_id: &'a str,
                request_id: &'a str,
                check_failed_data: &'a Map<String, Value>,
                product_key: &'a str,
                device_name: &'a str,
                device_type: &'a str,
                gmt_create: u64,
                value: &'a Value,
                time: u64,
            }
            let posted = Posted {
                identifier,
                name: identifier,
                kind: "info",
                iot_id,
                request_id,
                check_failed_data: &empty,
                product_key: pk,
                device_name: dn,
                device_type: DEVICE_TYPE,
                gmt_create: now.0,
                value,
                time: time.0,
            };
            (
                format!("thing/event/{identifier}/post"),
                serde_json::to_vec(&posted),
            )
        }
        Report::OtaVersion { module, version } => {
            #[derive(Serialize)]
            #[serde(rename_all = "camelCase")]
            struct Version<'a> {
                iot_id: &'a str,
                product_key: &'a str,
                device_name: &'a str,
                module_name: &'a str,
                module_version: &'a str,
                message_create_time: u64,
            }
            let version = Version {
                iot_id,
                product_key: pk,
                device_name: dn,
                module_name: module,
                module_version: version,
                message_create_time: now.0,
            };
            (
                String::from("ota/version/post"),
                serde_json::to_vec(&version),
            )
        }
        Report::OtaOutcome {
            module,
            succeeded,
            src_version,
            dest_version,
            desc,
            job_id,
        } => {
            #[derive(Serialize)]
            #[serde(rename_all = "camelCase")]
            struct Upgrade<'a> {
                iot_id: &'a str,
                product_key: &'a str,
                device_name: &'a str,
                module_name: &'a str,
                status: &'a str,
                message_create_time: u64,
                src_version: &'a str,
                dest_version: &'a str,
                desc: &'a str,
                job_id: String,
                task_id: String,
            }
            let upgrade = Upgrade {
                iot_id,
                product_key: pk,
                device_name: dn,
                module_name: module,
                status: if *succeeded { "SUCCEEDED" } else { "FAILED" },
                message_create_time: now.0,
                src_version: src_version.as_deref().unwrap_or(""),
                dest_version,
                desc,
                // Ours: one job is one device's task, so both carry the job's id.
                job_id: format!("{job_id}"),
                task_id: format!("{job_id}"),
            };
            (String::from("ota/upgrade"), serde_json::to_vec(&upgrade))
        }
    };
    Forwarded {
        topic: format!("/{pk}/{dn}/{suffix}"),
        payload: payload.unwrap_or_default(),
    }
}

/// A device's answer to a property set or a service call (§9.3):
/// `/{pk}/{dn}/thing/downlink/reply/message` with `{"gmtCreate","iotId","productKey",
/// "deviceName","requestId","code","message","topic","data"}`.
pub fn downlink_result(
    device: &DeviceIdentity,
    iot_id: &str,
    result: &DownlinkResult,
) -> Forwarded {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Reply<'a> {
        gmt_create: u64,
        iot_id: &'a str,
        product_key: &'a str,
        device_name: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        request_id: Option<u64>,
        code: i64,
        message: &'a str,
        topic: &'a str,
        data: &'a Value,
    }
    let reply = Reply {
        gmt_create: result.time.0,
        iot_id,
        product_key: &device.product_key,
        device_name: &device.device_name,
        request_id: result.request_id,
        code: result.code,
        message: &result.message,
        topic: &result.topic,
        data: &result.data,
    };
    Forwarded {
        topic: format!(
            "/{}/{}/thing/downlink/reply/message",
            device.product_key, device.device_name
        ),
        payload: serde_json::to_vec(&reply).unwrap_or_default(),
    }
}

/// What happened to a device in the registry, for [`lifecycle`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LifecycleAction {
    /// Registered.
    Create,
    /// Deleted.
    Delete,
    /// Enabled again.
    Enable,
    /// Disabled.
    Disable,
}

impl LifecycleAction {
    /// Its name in the message's `action`.
    pub fn name(self) -> &'static str {
        match self {
            LifecycleAction::Create => "create",
            LifecycleAction::Delete => "delete",
            LifecycleAction::Enable => "enable",
            LifecycleAction::Disable => "disable",
        }
    }
}

/// A device's lifecycle change (§9.2): `/{pk}/{dn}/thing/lifecycle` with `{"action","iotId",
/// "productKey","deviceName","deviceSecret","messageCreateTime"}`; the secret only with
/// `create` (`""` otherwise).
///
/// ```
/// use aliot_auth::DeviceIdentity;
/// use aliot_services::UnixMillis;
/// use aliot_services::forward::{LifecycleAction, lifecycle};
///
/// let device = DeviceIdentity::new("a1PK", "dev-1");
/// let made = lifecycle(&device, "IoTiD01", LifecycleAction::Disable, None, UnixMillis(1_510_292_739_881));
/// assert_eq!(made.topic, "/a1PK/dev-1/thing/lifecycle");
/// assert_eq!(
///     made.payload,
///     br#"{"action":"disable","iotId":"IoTiD01","productKey":"a1PK","deviceName":"dev-1","deviceSecret":"","messageCreateTime":1510292739881}"#
/// );
/// ```
pub fn lifecycle(
    device: &DeviceIdentity,
    iot_id: &str,
    action: LifecycleAction,
    secret: Option<&str>,
    now: UnixMillis,
) -> Forwarded {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Lifecycle<'a> {
        action: &'a str,
        iot_id: &'a str,
        product_key: &'a str,
        device_name: &'a str,
        device_secret: &'a str,
        message_create_time: u64,
    }
    let secret = match action {
        LifecycleAction::Create => secret.unwrap_or(""),
        _ => "",
    };
    let body = Lifecycle {
        action: action.name(),
        iot_id,
        product_key: &device.product_key,
        device_name: &device.device_name,
        device_secret: secret,
        message_create_time: now.0,
    };
    Forwarded {
        topic: format!(
            "/{}/{}/thing/lifecycle",
            device.product_key, device.device_name
        ),
        payload: serde_json::to_vec(&body).unwrap_or_default(),
    }
}

/// A change of a gateway's topology (§9.2): `/{gwpk}/{gwdn}/thing/topo/lifecycle` with
/// `{"action":"create"|"delete"|"enable"|"disable","gwIotId","gwProductKey","gwDeviceName",
/// "devices":[{"iotId","productKey","deviceName"}],"messageCreateTime"}`. Each sub-device
/// comes with its iotId.
pub fn topology(
    gateway: &DeviceIdentity,
    gateway_iot_id: &str,
    change: TopologyChange,
    subs: &[(DeviceIdentity, String)],
    now: UnixMillis,
) -> Forwarded {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Sub<'a> {
        iot_id: &'a str,
        product_key: &'a str,
        device_name: &'a str,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Lifecycle<'a> {
        action: &'a str,
        gw_iot_id: &'a str,
        gw_product_key: &'a str,
        gw_device_name: &'a str,
        devices: Vec<Sub<'a>>,
        message_create_time: u64,
    }
    // The docs since 2020 name them as the lifecycle does (their 2018 version said add and
    // remove).
    let action = match change {
        TopologyChange::Added => "create",
        TopologyChange::Removed => "delete",
        TopologyChange::Enabled => "enable",
        TopologyChange::Disabled => "disable",
    };
    let devices = subs
        .iter()
        .map(|(sub, iot_id)| Sub {
            iot_id,
            product_key: &sub.product_key,
            device_name: &sub.device_name,
        })
        .collect();
    let body = Lifecycle {
        action,
        gw_iot_id: gateway_iot_id,
        gw_product_key: &gateway.product_key,
        gw_device_name: &gateway.device_name,
        devices,
        message_create_time: now.0,
    };
    Forwarded {
        topic: format!(
            "/{}/{}/thing/topo/lifecycle",
            gateway.product_key, gateway.device_name
        ),
        payload: serde_json::to_vec(&body).unwrap_or_default(),
    }
}

/// Sub-devices a gateway found (`thing/list/found`, §9.2): `/{gwpk}/{gwdn}/thing/list/found`
/// with `{"gwIotId","gwProductKey","gwDeviceName","devices":[{"iotId","productKey",
/// "deviceName"}]}`. A found device the registry does not know yet has no `iotId` (ours: the
/// docs show only known ones; finding unregistered ones is what the report is for).
///
/// ```
/// use aliot_auth::DeviceIdentity;
/// use aliot_services::forward::found;
///
/// let gateway = DeviceIdentity::new("a1Gw", "gw-1");
/// let subs = [
///     (DeviceIdentity::new("a1Sub", "known"), Some("IoTiD02".to_string())),
///     (DeviceIdentity::new("a1Sub", "new"), None),
/// ];
/// let forwarded = found(&gateway, "IoTiD01", &subs);
/// assert_eq!(forwarded.topic, "/a1Gw/gw-1/thing/list/found");
/// assert_eq!(
///     forwarded.payload,
///     br#"{"gwIotId":"IoTiD01","gwProductKey":"a1Gw","gwDeviceName":"gw-1","devices":[{"iotId":"IoTiD02","productKey":"a1Sub","deviceName":"known"},{"productKey":"a1Sub","deviceName":"new"}]}"#
/// );
/// ```
pub fn found(
    gateway: &DeviceIdentity,
    gateway_iot_id: &str,
    subs: &[(DeviceIdentity, Option<String>)],
) -> Forwarded {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Sub<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        iot_id: Option<&'a str>,
        product_key: &'a str,
        device_name: &'a str,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Found<'a> {
        gw_iot_id: &'a str,
        gw_product_key: &'a str,
        gw_device_name: &'a str,
        devices: Vec<Sub<'a>>,
    }
    let devices = subs
        .iter()
        .map(|(sub, iot_id)| Sub {
            iot_id: iot_id.as_deref(),
            product_key: &sub.product_key,
            device_name: &sub.device_name,
        })
        .collect();
    let body = Found {
        gw_iot_id: gateway_iot_id,
        gw_product_key: &gateway.product_key,
        gw_device_name: &gateway.device_name,
        devices,
    };
    Forwarded {
        topic: format!(
            "/{}/{}/thing/list/found",
            gateway.product_key, gateway.device_name
        ),
        payload: serde_json::to_vec(&body).unwrap_or_default(),
    }
}
