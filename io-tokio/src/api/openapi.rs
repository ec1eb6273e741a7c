//! The platform's OpenAPI at `/`: RPC style, as the official server SDKs call it (`Action` and
//! the common parameters in the query string or a form body, signed with an AccessKey: see
//! [`signature`](super::signature)), answered in JSON with `RequestId` and the platform's field
//! names.
//!
//! Each action runs the same code as the JSON endpoint of the same name: its parameters are
//! read into that endpoint's request type (numbers and booleans from their text), and its
//! answer is that endpoint's, with `RequestId` added. Failures the platform answers with HTTP
//! 200 (a device that does not exist, one that is offline, ...) come as
//! `{"RequestId","Success":false,"Code","ErrorMessage"}`; a request that is not signed right
//! or lacks a parameter as HTTP 400 (403 for a signature) `{"RequestId","Code","Message"}`,
//! which the SDKs raise as an exception.

use std::collections::BTreeMap;
use std::future::Future;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde_json::{Map, Value};
use tracing::debug;

use super::signature::{SignatureError, SignedV3, verify, verify_v3};
use super::{ApiErrorCode, ApiState, Failure, PubRequest, RrpcRequest, registry, things};

/// The actions served, in the order the not-found message lists them.
const ACTIONS: [&str; 30] = [
    "RRpc",
    "Pub",
    "SetDeviceProperty",
    "SetDeviceDesiredProperty",
    "InvokeThingService",
    "QueryDevicePropertyStatus",
    "GetDeviceShadow",
    "UpdateDeviceShadow",
    "PushOtaUpgrade",
    "CreateProduct",
    "QueryProduct",
    "QueryProductList",
    "DeleteProduct",
    "RegisterDevice",
    "QueryDeviceDetail",
    "QueryDevice",
    "DeleteDevice",
    "DisableThing",
    "EnableThing",
    "ResetThing",
    "GetDeviceStatus",
    "BatchGetDeviceState",
    "CreateProductTopic",
    "BatchRegisterDevice",
    "QueryBatchRegisterDeviceStatus",
    "QueryPageByApplyId",
    "PubBroadcast",
    "GetThingTopo",
    "AddThingTopo",
    "RemoveThingTopo",
];

/// A request id in the platform's form (a UUID, upper case).
fn request_id() -> String {
    let hex = format!("{:016X}{:016X}", fastrand::u64(..), fastrand::u64(..));
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The platform's code for one of ours (ours where it names none).
fn platform_code(code: ApiErrorCode) -> &'static str {
    match code {
        ApiErrorCode::DeviceNotFound => "iot.device.NotExistedDevice",
        ApiErrorCode::DeviceOffline => "iot.device.DeviceIsOffline",
        ApiErrorCode::DeviceTimeout => "iot.device.InvokeThingServiceTimeout",
        ApiErrorCode::InvalidDevice => "iot.device.InvalidFormattedDeviceName",
        ApiErrorCode::InvalidTopic => "iot.messagebroker.InvalidFormattedTopicName",
        ApiErrorCode::InvalidTimeout => "iot.messagebroker.InvalidTimeoutValue",
        ApiErrorCode::InvalidBase64 => "iot.messagebroker.InvalidMessageContent",
        ApiErrorCode::InvalidQos => "iot.messagebroker.InvalidQos",
        ApiErrorCode::InvalidIdentifier => "iot.thing.InvalidIdentifier",
        ApiErrorCode::InvalidItems => "iot.thing.InvalidFormattedItems",
        ApiErrorCode::BrokerStopped | ApiErrorCode::ClusterUnreachable => "ServiceUnavailable",
        ApiErrorCode::ProductNotFound => "iot.prod.NotExistedProduct",
        ApiErrorCode::DeviceExists => "iot.device.AlreadyExistedDeviceName",
        ApiErrorCode::ProductHasDevices => "iot.prod.ProductHasDevices",
        ApiErrorCode::InvalidName => "iot.common.InvalidFormattedParameter",
        // Ours: the platform's codes for these are not documented.
        ApiErrorCode::InvalidSign => "iot.device.InvalidSign",
        ApiErrorCode::NotInTopology => "iot.device.TopoRelationNotExist",
        other => other.name(),
    }
}

/// A business failure, answered with HTTP 200 as the platform does.
fn business_failure(request_id: &str, failure: Failure) -> Response {
    let body = serde_json::json!({
        "RequestId": request_id,
        "Success": false,
        "Code": platform_code(failure.code),
        "ErrorMessage": failure.message,
    });
    (StatusCode::OK, Json(body)).into_response()
}

/// A request refused before its action ran.
fn refused(request_id: &str, status: StatusCode, code: &str, message: String) -> Response {
    let body = serde_json::json!({
        "RequestId": request_id,
        "Code": code,
        "Message": message,
    });
    (status, Json(body)).into_response()
}

/// The query string's parameters.
fn query_parameters(uri: &Uri) -> BTreeMap<String, String> {
    uri.query()
        .map(|query| {
            form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

/// The parameters of a request: the query string's, then a form body's.
fn parameters(uri: &Uri, headers: &HeaderMap, body: &[u8]) -> BTreeMap<String, String> {
    let mut params = query_parameters(uri);
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/x-www-form-urlencoded"));
    if form {
        params.extend(form_urlencoded::parse(body).into_owned());
    }
    params
}

/// `GET /` and `POST /`: one OpenAPI call.
pub(super) async fn openapi(
    State(state): State<ApiState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let id = request_id();
    let body = body.unwrap_or_default();
    let params = parameters(&uri, &headers, &body);
    let access_keys = state.access_keys.current();
    if access_keys.is_empty() {
        return refused(
            &id,
            StatusCode::FORBIDDEN,
            "Forbidden.AccessKeyDisabled",
            "the OpenAPI is off: the configuration has no [[access_key]]".into(),
        );
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        });
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .filter(|value| value.starts_with("ACS3-"));
    let mut params = params;
    let verified = {
        let mut nonces = state
            .nonces
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match authorization {
            // The newer SDKs: the signature in a header, the action too.
            Some(authorization) => {
                let query = query_parameters(&uri);
                let mut lowered: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for (name, value) in &headers {
                    if let Ok(value) = value.to_str() {
                        lowered
                            .entry(name.as_str().to_ascii_lowercase())
                            .or_default()
                            .push(value.to_owned());
                    }
                }
                if let Some(action) = lowered.get("x-acs-action").and_then(|v| v.first()) {
                    params.insert("Action".into(), action.clone());
                }
                let request = SignedV3 {
                    method: method.as_str(),
                    path: uri.path(),
                    query: &query,
                    headers: &lowered,
                    body: &body,
                    authorization,
                };
                verify_v3(&request, &access_keys, now_ms, &mut nonces).map(|_| ())
            }
            None => verify(method.as_str(), &params, &access_keys, now_ms, &mut nonces).map(|_| ()),
        }
    };
    if let Err(error) = verified {
        debug!(%error, "OpenAPI request refused");
        let status = match &error {
            SignatureError::Mismatch(_) | SignatureError::UnknownAccessKey => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_REQUEST,
        };
        return refused(&id, status, error.code(), error.to_string());
    }
    let Some(action) = params.get("Action").cloned() else {
        return refused(
            &id,
            StatusCode::BAD_REQUEST,
            "MissingParameter",
            "Action is mandatory".into(),
        );
    };
    // The signature is the caller's authorization: the actions run without the bearer token.
    let state = ApiState {
        token: None,
        ..state
    };
    let answer = match action.as_str() {
        "RRpc" => run::<RrpcRequest, _, _, _>(&state, &params, super::rrpc).await,
        "Pub" => run::<PubRequest, _, _, _>(&state, &params, super::publish).await,
        "SetDeviceProperty" => {
            run::<things::SetPropertiesRequest, _, _, _>(
                &state,
                &params,
                things::set_device_property,
            )
            .await
        }
        "SetDeviceDesiredProperty" => {
            run::<things::SetPropertiesRequest, _, _, _>(
                &state,
                &params,
                things::set_device_desired_property,
            )
            .await
        }
        "InvokeThingService" => {
            run::<things::InvokeThingServiceRequest, _, _, _>(
                &state,
                &params,
                things::invoke_thing_service,
            )
            .await
        }
        "QueryDevicePropertyStatus" => {
            run::<things::DeviceRequest, _, _, _>(
                &state,
                &params,
                things::query_device_property_status,
            )
            .await
        }
        "GetDeviceShadow" => {
            run::<things::DeviceRequest, _, _, _>(&state, &params, things::get_device_shadow).await
        }
        "UpdateDeviceShadow" => {
            run::<things::UpdateDeviceShadowRequest, _, _, _>(
                &state,
                &params,
                things::update_device_shadow,
            )
            .await
        }
        "PushOtaUpgrade" => {
            run::<things::PushOtaUpgradeRequest, _, _, _>(&state, &params, things::push_ota_upgrade)
                .await
        }
        "CreateProduct" => {
            run::<registry::CreateProductRequest, _, _, _>(
                &state,
                &params,
                registry::create_product,
            )
            .await
        }
        "QueryProduct" => {
            run::<registry::ProductRequest, _, _, _>(&state, &params, registry::query_product).await
        }
        "QueryProductList" => {
            run::<registry::PageRequest, _, _, _>(&state, &params, registry::query_product_list)
                .await
        }
        "DeleteProduct" => {
            run::<registry::ProductRequest, _, _, _>(&state, &params, registry::delete_product)
                .await
        }
        "RegisterDevice" => {
            run::<registry::RegisterDeviceRequest, _, _, _>(
                &state,
                &params,
                registry::register_device,
            )
            .await
        }
        "QueryDeviceDetail" => {
            run::<registry::DeviceRef, _, _, _>(&state, &params, registry::query_device_detail)
                .await
        }
        "GetThingTopo" => {
            run::<registry::TopologyPageRequest, _, _, _>(&state, &params, registry::get_thing_topo)
                .await
        }
        "AddThingTopo" => {
            run::<registry::AddTopologyRequest, _, _, _>(&state, &params, registry::add_thing_topo)
                .await
        }
        "RemoveThingTopo" => {
            run::<registry::DeviceRef, _, _, _>(&state, &params, registry::remove_thing_topo).await
        }
        "QueryDevice" => {
            run::<registry::PageRequest, _, _, _>(&state, &params, registry::query_device).await
        }
        "DeleteDevice" => {
            run::<registry::DeviceRef, _, _, _>(&state, &params, registry::delete_device).await
        }
        "DisableThing" => {
            run::<registry::DeviceRef, _, _, _>(&state, &params, registry::disable_thing).await
        }
        "EnableThing" => {
            run::<registry::DeviceRef, _, _, _>(&state, &params, registry::enable_thing).await
        }
        "ResetThing" => {
            run::<registry::DeviceRef, _, _, _>(&state, &params, registry::reset_thing).await
        }
        "GetDeviceStatus" => {
            run::<registry::DeviceRef, _, _, _>(&state, &params, registry::get_device_status).await
        }
        "CreateProductTopic" => {
            run::<registry::CreateProductTopicRequest, _, _, _>(
                &state,
                &params,
                registry::create_product_topic,
            )
            .await
        }
        "BatchRegisterDevice" => {
            run::<registry::BatchRegisterRequest, _, _, _>(
                &state,
                &params,
                registry::batch_register_device,
            )
            .await
        }
        "QueryBatchRegisterDeviceStatus" => {
            run::<registry::ApplyRequest, _, _, _>(
                &state,
                &params,
                registry::query_batch_register_device_status,
            )
            .await
        }
        "QueryPageByApplyId" => {
            run::<registry::ApplyRequest, _, _, _>(
                &state,
                &params,
                registry::query_page_by_apply_id,
            )
            .await
        }
        "PubBroadcast" => {
            run::<registry::PubBroadcastRequest, _, _, _>(&state, &params, registry::pub_broadcast)
                .await
        }
        "BatchGetDeviceState" => {
            // `DeviceName.1`, `DeviceName.2`, ...: the list, in order.
            let mut names: Vec<(u32, String)> = params
                .iter()
                .filter_map(|(name, value)| {
                    let index = name.strip_prefix("DeviceName.")?.parse().ok()?;
                    Some((index, value.clone()))
                })
                .collect();
            names.sort();
            let request = registry::BatchDevicesRequest {
                product_key: params.get("ProductKey").cloned().unwrap_or_default(),
                device_name: names.into_iter().map(|(_, name)| name).collect(),
            };
            let body = serde_json::to_vec(&request).unwrap_or_default();
            registry::batch_get_device_state(
                State(state.clone()),
                HeaderMap::new(),
                Ok(Bytes::from(body)),
            )
            .await
            .map(|Json(answer)| answer)
            .map_err(Action)
        }
        other => {
            return refused(
                &id,
                StatusCode::NOT_FOUND,
                "InvalidAction.NotFound",
                format!(
                    "the action {other:?} is not served; there are {}",
                    ACTIONS.join(", ")
                ),
            );
        }
    };
    match answer {
        Ok(Value::Object(mut fields)) => {
            let mut body = Map::new();
            body.insert("RequestId".into(), Value::String(id));
            body.append(&mut fields);
            (StatusCode::OK, Json(Value::Object(body))).into_response()
        }
        Ok(other) => (StatusCode::OK, Json(other)).into_response(),
        Err(Parameters(message)) => {
            refused(&id, StatusCode::BAD_REQUEST, "InvalidParameter", message)
        }
        Err(Action(failure)) => business_failure(&id, failure),
    }
}

/// Why an action gave no answer.
enum CallError {
    /// Its parameters do not make its request.
    Parameters(String),
    /// It failed.
    Action(Failure),
}
use CallError::{Action, Parameters};

/// Reads the parameters into the request type `T` of the JSON endpoint `handler` and runs it.
async fn run<T, R, H, F>(
    state: &ApiState,
    params: &BTreeMap<String, String>,
    handler: H,
) -> Result<Value, CallError>
where
    T: DeserializeOwned + Serialize,
    R: Serialize,
    H: FnOnce(State<ApiState>, HeaderMap, Result<Bytes, BytesRejection>) -> F,
    F: Future<Output = Result<Json<R>, Failure>>,
{
    let request = T::deserialize(ParamsDeserializer(params)).map_err(|error: ParamError| {
        Parameters(error.0.replace("missing field", "missing parameter"))
    })?;
    let body = serde_json::to_vec(&request).map_err(|error| Parameters(error.to_string()))?;
    let Json(answer) = handler(
        State(state.clone()),
        HeaderMap::new(),
        Ok(Bytes::from(body)),
    )
    .await
    .map_err(Action)?;
    serde_json::to_value(answer).map_err(|error| Parameters(error.to_string()))
}

/// A parameter that does not fit its field.
#[derive(Debug)]
struct ParamError(String);

impl std::fmt::Display for ParamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParamError {}

impl de::Error for ParamError {
    fn custom<T: std::fmt::Display>(message: T) -> Self {
        ParamError(message.to_string())
    }
}

/// The parameters as a map whose values are text, read as the field wants them.
struct ParamsDeserializer<'a>(&'a BTreeMap<String, String>);

impl<'de> de::Deserializer<'de> for ParamsDeserializer<'_> {
    type Error = ParamError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        let entries = self
            .0
            .iter()
            .map(|(name, value)| (name.as_str(), ParamValue(value)));
        visitor.visit_map(de::value::MapDeserializer::new(entries))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

/// One parameter's text.
struct ParamValue<'a>(&'a str);

impl<'de> IntoDeserializer<'de, ParamError> for ParamValue<'_> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

macro_rules! parse_number {
    ($($method:ident $visit:ident $ty:ty),*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
            let value: $ty = self.0.trim().parse().map_err(|_| {
                ParamError(format!("{:?} is not a number", self.0))
            })?;
            visitor.$visit(value)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for ParamValue<'_> {
    type Error = ParamError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        visitor.visit_string(self.0.to_owned())
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        match self.0 {
            "true" | "True" | "TRUE" => visitor.visit_bool(true),
            "false" | "False" | "FALSE" => visitor.visit_bool(false),
            other => Err(ParamError(format!("{other:?} is not true or false"))),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ParamError> {
        visitor.visit_some(self)
    }

    parse_number! {
        deserialize_u8 visit_u8 u8, deserialize_u16 visit_u16 u16, deserialize_u32 visit_u32 u32,
        deserialize_u64 visit_u64 u64, deserialize_i8 visit_i8 i8, deserialize_i16 visit_i16 i16,
        deserialize_i32 visit_i32 i32, deserialize_i64 visit_i64 i64, deserialize_f64 visit_f64 f64
    }

    serde::forward_to_deserialize_any! {
        i128 u128 f32 char str string bytes byte_buf unit unit_struct newtype_struct seq
        tuple tuple_struct map struct enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::signature::params;
    use serde::Deserialize as _;

    #[test]
    fn parameters_fill_the_endpoints_request_from_text() {
        let request = RrpcRequest::deserialize(ParamsDeserializer(&params(&[
            ("Action", "RRpc"),
            ("ProductKey", "pk"),
            ("DeviceName", "123"),
            ("RequestBase64Byte", "aGk="),
            ("Timeout", "5000"),
        ])))
        .unwrap();
        assert_eq!(request.device_name, "123", "a name of digits stays text");
        assert_eq!(request.timeout, 5000);
        assert_eq!(request.topic, None);

        let missing =
            RrpcRequest::deserialize(ParamsDeserializer(&params(&[("ProductKey", "pk")])));
        assert!(missing.unwrap_err().0.contains("DeviceName"));
        let bad = RrpcRequest::deserialize(ParamsDeserializer(&params(&[
            ("ProductKey", "pk"),
            ("DeviceName", "d"),
            ("RequestBase64Byte", "aGk="),
            ("Timeout", "soon"),
        ])));
        assert!(bad.unwrap_err().0.contains("not a number"));
    }

    #[test]
    fn the_topology_actions_read_their_parameters_from_text() {
        let page = registry::TopologyPageRequest::deserialize(ParamsDeserializer(&params(&[
            ("IotId", "gw"),
            ("PageNo", "2"),
            ("PageSize", "50"),
        ])))
        .unwrap();
        assert_eq!(
            (page.iot_id.as_deref(), page.page_no, page.page_size),
            (Some("gw"), Some(2), Some(50))
        );
        let add = registry::AddTopologyRequest::deserialize(ParamsDeserializer(&params(&[
            ("GwProductKey", "pk"),
            ("GwDeviceName", "gw"),
            ("TopoInfo", "[]"),
        ])))
        .unwrap();
        assert_eq!(add.topo_info, "[]");
    }

    #[test]
    fn request_ids_look_like_the_platforms() {
        let id = request_id();
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
    }
}
