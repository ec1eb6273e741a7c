//! The platform's thing-model, shadow and OTA operations on the HTTP API, each under its
//! action name (`POST /SetDeviceProperty`, …) with the platform's parameter names. The device
//! side of each is `aliot-services`; these handlers only check the request, call the hub
//! through [`BrokerHandle`](crate::BrokerHandle) and shape the answer.

use aliot_auth::DeviceIdentity;
use aliot_core::hub::{DeviceDelivery, RRPC_TIMEOUT_RANGE_MS, RrpcOutcome};
use aliot_services::{DeviceReply, OtaJob, OtaSignMethod, ShadowDocument, ShadowRequest};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::time::Duration;

use super::{ApiErrorCode, ApiState, Failure, parse_body};
use crate::broker::ServiceError;

/// The timeout of a synchronous service call when the request names none: the platform's
/// 8 s (PLATFORM-PROTOCOLS §1.5).
const DEFAULT_SYNC_TIMEOUT_MS: u64 = 8_000;

/// `{"ProductKey","DeviceName"}`: the device an operation is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeviceRequest {
    /// The device's product.
    pub product_key: String,
    /// The device.
    pub device_name: String,
}

/// The body of `POST /SetDeviceProperty` and `POST /SetDeviceDesiredProperty`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SetPropertiesRequest {
    /// The device's product.
    pub product_key: String,
    /// The device.
    pub device_name: String,
    /// The properties and their values: a JSON object, as a string (`"{\"Switch\":1}"`).
    pub items: String,
}

/// The body of `POST /InvokeThingService`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InvokeThingServiceRequest {
    /// The device's product.
    pub product_key: String,
    /// The device.
    pub device_name: String,
    /// The service's identifier.
    pub identifier: String,
    /// The arguments: a JSON object, as a string (default `{}`).
    #[serde(default)]
    pub args: Option<String>,
    /// Ours: call synchronously (RRPC, waiting for the device's answer). The platform takes
    /// this from the product's thing model, which aliot does not keep.
    #[serde(default)]
    pub sync: bool,
    /// Ours: how long a synchronous call waits, in ms (1,000–8,000, default 8,000).
    #[serde(default)]
    pub timeout: Option<u64>,
}

/// The body of `POST /UpdateDeviceShadow`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateDeviceShadowRequest {
    /// The device's product.
    pub product_key: String,
    /// The device.
    pub device_name: String,
    /// `{"method":"update","state":{"desired":{…}},"version":N}`, as a string.
    pub shadow_message: String,
}

/// The body of `POST /PushOtaUpgrade` (ours: the platform's OTA jobs start from firmware it
/// stores; aliot pushes a firmware the caller serves).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PushOtaUpgradeRequest {
    /// The device's product.
    pub product_key: String,
    /// The device.
    pub device_name: String,
    /// The module to upgrade (default `default`).
    #[serde(default)]
    pub module: Option<String>,
    /// The version it upgrades to.
    pub version: String,
    /// Where the device downloads the firmware.
    pub url: String,
    /// The firmware's size in bytes.
    pub size: u64,
    /// `Md5` or `SHA256` (any case).
    pub sign_method: String,
    /// The firmware's digest in hex.
    pub sign: String,
}

/// `{"Success":true,"Data":{…}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DataResponse<T> {
    /// The operation was done.
    pub success: bool,
    /// What it gave.
    pub data: T,
}

/// The `Data` of an operation that sent the device a downlink.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MessageIdData {
    /// The downlink's id, a decimal u64.
    pub message_id: String,
}

/// The `Data` of a synchronous service call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceResultData {
    /// The RRPC message id the call went with.
    pub message_id: String,
    /// The device's `data`, as a JSON string.
    pub result: String,
    /// The device's `code` (200 success).
    pub code: i64,
}

/// One property of `POST /QueryDevicePropertyStatus`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PropertyStatusInfo {
    /// The property's identifier.
    pub identifier: String,
    /// Its latest value: a string as it is, anything else as JSON text.
    pub value: String,
    /// When it was measured, ms since the Unix epoch, as a string.
    pub time: String,
}

/// `{"PropertyStatusInfo":[…]}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PropertyStatusList {
    /// Every property kept, by identifier.
    pub property_status_info: Vec<PropertyStatusInfo>,
}

/// `{"List":…}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListData<T> {
    /// The list.
    pub list: T,
}

/// The answer to `POST /GetDeviceShadow`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetDeviceShadowResponse {
    /// Always true.
    pub success: bool,
    /// The shadow document as a JSON string:
    /// `{"state":{"reported":…,"desired":…},"metadata":…,"timestamp":…,"version":…}`.
    pub shadow_message: String,
}

/// The `Data` of `POST /UpdateDeviceShadow`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ShadowVersionData {
    /// The shadow's version now.
    pub version: u64,
    /// Whether the device was sent the `control` message (it was online).
    pub pushed: bool,
}

/// The `Data` of `POST /PushOtaUpgrade`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OtaJobData {
    /// The job's id (the push's `id`).
    pub job_id: String,
    /// Whether it was pushed now; if not, it is when the device next comes online.
    pub pushed: bool,
}

/// One downlink result (PLATFORM-PROTOCOLS §9.3), as the server-side subscription forwards
/// it on `/${pk}/${dn}/thing/downlink/reply/message`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DownlinkResultMessage {
    /// When the device answered, ms since the Unix epoch.
    pub gmt_create: u64,
    /// The device's product.
    pub product_key: String,
    /// The device.
    pub device_name: String,
    /// The downlink's id, when the device echoed a decimal one.
    pub request_id: Option<u64>,
    /// The device's code.
    pub code: i64,
    /// The device's message.
    pub message: String,
    /// The downlink's topic.
    pub topic: String,
    /// The device's `data`.
    pub data: Value,
}

/// A JSON object given as a string parameter (`Items`, `Args`).
fn json_object(field: &str, text: &str) -> Result<Map<String, Value>, Failure> {
    match serde_json::from_str(text) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(Failure::new(
            ApiErrorCode::InvalidItems,
            format!("{field} must be a JSON object"),
        )),
        Err(error) => Err(Failure::new(
            ApiErrorCode::InvalidItems,
            format!("{field} is not JSON: {error}"),
        )),
    }
}

/// The answer to a downlink's delivery: its message id when the device was sent it.
fn sent(
    device: &DeviceIdentity,
    id: aliot_topic::MessageId,
    delivery: DeviceDelivery,
) -> Result<Json<DataResponse<MessageIdData>>, Failure> {
    match delivery {
        DeviceDelivery::Sent | DeviceDelivery::Queued => Ok(Json(DataResponse {
            success: true,
            data: MessageIdData {
                message_id: id.0.to_string(),
            },
        })),
        DeviceDelivery::Offline => Err(Failure::new(
            ApiErrorCode::DeviceOffline,
            format!("device {device} is not online"),
        )),
        DeviceDelivery::NotSubscribed | DeviceDelivery::Denied => Err(Failure::new(
            ApiErrorCode::DeviceNotListening,
            format!(
                "device {device} neither subscribed to the topic nor asked for the automatic subscription (_ss=1)"
            ),
        )),
    }
}

pub(super) async fn set_device_property(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<DataResponse<MessageIdData>>, Failure> {
    state.authorize(&headers)?;
    let request: SetPropertiesRequest = parse_body(body)?;
    let device = state.registered_device(&request.product_key, &request.device_name)?;
    let items = json_object("Items", &request.items)?;
    let (id, delivery) = state
        .handle
        .set_device_property(&device, Value::Object(items))
        .await?;
    sent(&device, id, delivery)
}

pub(super) async fn set_device_desired_property(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<DataResponse<Map<String, Value>>>, Failure> {
    state.authorize(&headers)?;
    let request: SetPropertiesRequest = parse_body(body)?;
    let device = state.registered_device(&request.product_key, &request.device_name)?;
    let items = json_object("Items", &request.items)?;
    state
        .handle
        .set_desired_properties(&device, items)
        .await?
        .map_err(|code| Failure::new(ApiErrorCode::InvalidItems, code.message))?;
    Ok(Json(DataResponse {
        success: true,
        data: Map::new(),
    }))
}

pub(super) async fn invoke_thing_service(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<DataResponse<Value>>, Failure> {
    state.authorize(&headers)?;
    let request: InvokeThingServiceRequest = parse_body(body)?;
    let device = state.registered_device(&request.product_key, &request.device_name)?;
    let args = json_object("Args", request.args.as_deref().unwrap_or("{}"))?;
    let service_error = |error: ServiceError| {
        let code = match &error {
            ServiceError::InvalidIdentifier(_) => ApiErrorCode::InvalidIdentifier,
            ServiceError::Rejected(_) => ApiErrorCode::InvalidTimeout,
            ServiceError::BrokerStopped => ApiErrorCode::BrokerStopped,
        };
        Failure::new(code, error.to_string())
    };
    if !request.sync {
        let (id, delivery) = state
            .handle
            .invoke_service(&device, &request.identifier, Value::Object(args))
            .await
            .map_err(service_error)?;
        let Json(answer) = sent(&device, id, delivery)?;
        return Ok(Json(DataResponse {
            success: true,
            data: serde_json::to_value(answer.data).unwrap_or_default(),
        }));
    }
    let timeout = request.timeout.unwrap_or(DEFAULT_SYNC_TIMEOUT_MS);
    if !RRPC_TIMEOUT_RANGE_MS.contains(&timeout) {
        return Err(Failure::new(
            ApiErrorCode::InvalidTimeout,
            format!(
                "Timeout {timeout} ms is outside {}..={} ms",
                RRPC_TIMEOUT_RANGE_MS.start(),
                RRPC_TIMEOUT_RANGE_MS.end()
            ),
        ));
    }
    let reply = state
        .handle
        .invoke_service_sync(
            &device,
            &request.identifier,
            Value::Object(args),
            Duration::from_millis(timeout),
        )
        .await
        .map_err(service_error)?;
    let payload = match reply.outcome {
        RrpcOutcome::Success(payload) => payload,
        RrpcOutcome::Timeout => {
            return Err(Failure::new(
                ApiErrorCode::DeviceTimeout,
                format!("device {device} did not answer within {timeout} ms"),
            ));
        }
        RrpcOutcome::Offline => {
            return Err(Failure::new(
                ApiErrorCode::DeviceOffline,
                format!("device {device} is not online"),
            ));
        }
        // A call ends UNKNOWN only when the broker stops.
        RrpcOutcome::Unknown => {
            return Err(Failure::new(
                ApiErrorCode::BrokerStopped,
                format!("the broker stopped before device {device} answered"),
            ));
        }
        RrpcOutcome::HalfConn => {
            return Err(Failure::new(
                ApiErrorCode::DeviceNotListening,
                format!(
                    "device {device} is not listening for the call ({})",
                    reply.outcome.code()
                ),
            ));
        }
    };
    // The device's Alink reply: {"id":…,"code":…,"data":…}, read as an asynchronous call's
    // answer is (a code as a number or a string; none is 400).
    let body = serde_json::from_slice::<Value>(&payload).map_err(|error| {
        Failure::new(
            ApiErrorCode::InvalidDeviceReply,
            format!("device {device} answered with something that is not JSON: {error}"),
        )
    })?;
    let answer = DeviceReply::from_body("", Some(body));
    let (code, result) = (answer.code, answer.data);
    let data = ServiceResultData {
        message_id: reply.message_id.0.to_string(),
        result: result.to_string(),
        code,
    };
    Ok(Json(DataResponse {
        success: true,
        data: serde_json::to_value(data).unwrap_or_default(),
    }))
}

pub(super) async fn query_device_property_status(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<DataResponse<ListData<PropertyStatusList>>>, Failure> {
    state.authorize(&headers)?;
    let request: DeviceRequest = parse_body(body)?;
    let device = state.registered_device(&request.product_key, &request.device_name)?;
    let device_state = state.handle.device_state(&device).await?;
    let property_status_info = device_state
        .iter()
        .flat_map(|kept| kept.properties())
        .map(|(name, kept)| PropertyStatusInfo {
            identifier: name.to_owned(),
            value: match &kept.value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            },
            time: kept.time.0.to_string(),
        })
        .collect();
    Ok(Json(DataResponse {
        success: true,
        data: ListData {
            list: PropertyStatusList {
                property_status_info,
            },
        },
    }))
}

pub(super) async fn get_device_shadow(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<GetDeviceShadowResponse>, Failure> {
    state.authorize(&headers)?;
    let request: DeviceRequest = parse_body(body)?;
    let device = state.registered_device(&request.product_key, &request.device_name)?;
    let device_state = state.handle.device_state(&device).await?;
    let document = match &device_state {
        Some(kept) => kept.shadow().to_json(),
        None => ShadowDocument::default().to_json(),
    };
    Ok(Json(GetDeviceShadowResponse {
        success: true,
        shadow_message: String::from_utf8_lossy(&document).into_owned(),
    }))
}

pub(super) async fn update_device_shadow(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<DataResponse<ShadowVersionData>>, Failure> {
    state.authorize(&headers)?;
    let request: UpdateDeviceShadowRequest = parse_body(body)?;
    let device = state.registered_device(&request.product_key, &request.device_name)?;
    let shadow = ShadowRequest::parse(request.shadow_message.as_bytes());
    let (version, delivery) = state
        .handle
        .update_device_shadow(&device, shadow)
        .await?
        .map_err(|code| {
            Failure::new(
                ApiErrorCode::ShadowRefused,
                format!("ShadowMessage refused: {} {}", code.code, code.message),
            )
        })?;
    Ok(Json(DataResponse {
        success: true,
        data: ShadowVersionData {
            version,
            pushed: matches!(delivery, DeviceDelivery::Sent | DeviceDelivery::Queued),
        },
    }))
}

pub(super) async fn push_ota_upgrade(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<DataResponse<OtaJobData>>, Failure> {
    state.authorize(&headers)?;
    let request: PushOtaUpgradeRequest = parse_body(body)?;
    let device = state.registered_device(&request.product_key, &request.device_name)?;
    let sign_method = OtaSignMethod::parse(&request.sign_method).ok_or_else(|| {
        Failure::new(
            ApiErrorCode::InvalidOtaJob,
            format!("SignMethod {:?} is not Md5 or SHA256", request.sign_method),
        )
    })?;
    // The job's id: the wall clock in ms, as the platform's ids are.
    let id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        });
    let job = OtaJob {
        id,
        module: request.module.unwrap_or_default(),
        version: request.version,
        url: request.url,
        size: request.size,
        sign_method,
        sign: request.sign,
    }
    .validated()
    .map_err(|error| Failure::new(ApiErrorCode::InvalidOtaJob, error.to_string()))?;
    let delivery = state.handle.start_ota(&device, job).await?;
    Ok(Json(DataResponse {
        success: true,
        data: OtaJobData {
            job_id: id.to_string(),
            pushed: matches!(delivery, DeviceDelivery::Sent | DeviceDelivery::Queued),
        },
    }))
}

pub(super) async fn list_downlink_results(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<DataResponse<ListData<Vec<DownlinkResultMessage>>>>, Failure> {
    state.authorize(&headers)?;
    let results = state.handle.downlink_results().await?;
    let list = results
        .into_iter()
        .map(|(device, result)| DownlinkResultMessage {
            gmt_create: result.time.0,
            product_key: device.product_key,
            device_name: device.device_name,
            request_id: result.request_id,
            code: result.code,
            message: result.message,
            topic: result.topic,
            data: result.data,
        })
        .collect();
    Ok(Json(DataResponse {
        success: true,
        data: ListData { list },
    }))
}
