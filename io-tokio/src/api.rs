//! The broker's HTTP API: RRPC calls, server-side publishes and metrics, with the platform's
//! names for fields and outcomes.
//!
//! It is tokio's extension of the broker: [`ServeHttpApi::serve_http_api`] serves it beside a
//! running [`Broker`], on the address of its [`ApiConfig`], until the broker shuts down (the
//! broker's loops are runtime-independent and know nothing of HTTP; a smol broker has no such
//! method). With a token configured, every request must carry `Authorization: Bearer <token>`
//! (compared in constant time), else `401`.
//!
//! | request | body | answer |
//! |---|---|---|
//! | `POST /rrpc` | [`RrpcRequest`]: `{"ProductKey","DeviceName","RequestBase64Byte","Timeout"` (ms, 1000–8000)`,"Topic"?}` | `200` [`RrpcResponse`]: `{"Success":true,"RrpcCode":"SUCCESS"\|"TIMEOUT"\|"OFFLINE"\|"HALFCONN"\|"UNKNOWN","MessageId":"…","PayloadBase64Byte"?}` |
//! | `POST /pub` | [`PubRequest`]: `{"ProductKey","TopicFullName","MessageContent"` (base64)`,"Qos"?` (0 or 1, default 0)`}` | `200` [`PubResponse`]: `{"Success":true,"MessageId":"…","Subscribers":n}` |
//! | `GET /metrics` | | `200` every counter of the hub and the gauges, Prometheus text format |
//! | `POST /SetDeviceProperty` | [`SetPropertiesRequest`]: `{"ProductKey","DeviceName","Items"` (a JSON object as a string)`}` | `200` `{"Success":true,"Data":{"MessageId":"…"}}` |
//! | `POST /InvokeThingService` | [`InvokeThingServiceRequest`]: `{"ProductKey","DeviceName","Identifier","Args"?,"Sync"?,"Timeout"?}` | `200` `{"Success":true,"Data":{"MessageId":"…"}}`; synchronous: `"Data":{"MessageId","Result"` (the device's `data` as a JSON string)`,"Code"}` |
//! | `POST /QueryDevicePropertyStatus` | [`DeviceRequest`]: `{"ProductKey","DeviceName"}` | `200` `{"Success":true,"Data":{"List":{"PropertyStatusInfo":[{"Identifier","Value","Time"}]}}}` |
//! | `POST /SetDeviceDesiredProperty` | [`SetPropertiesRequest`] | `200` `{"Success":true,"Data":{}}` |
//! | `POST /GetDeviceShadow` | [`DeviceRequest`] | `200` `{"Success":true,"ShadowMessage":"…"}` |
//! | `POST /UpdateDeviceShadow` | [`UpdateDeviceShadowRequest`]: `{"ProductKey","DeviceName","ShadowMessage"}` | `200` `{"Success":true,"Data":{"Version","Pushed"}}` |
//! | `POST /PushOtaUpgrade` (ours) | [`PushOtaUpgradeRequest`]: `{"ProductKey","DeviceName","Module"?,"Version","Url","Size","SignMethod","Sign"}` | `200` `{"Success":true,"Data":{"JobId","Pushed"}}` |
//! | `GET /ListDownlinkResults` (ours) | | `200` `{"Success":true,"Data":{"List":[…]}}`: the devices' latest answers to property sets and service calls, in the form of PLATFORM-PROTOCOLS §9.3 |
//!
//! `POST /RRpc` and `POST /Pub` are the same as `/rrpc` and `/pub`: every operation is
//! served under the platform's action name. With AccessKeys ([`ApiConfig::access_keys`]),
//! `GET /` and `POST /` are the platform's OpenAPI: signed RPC-style calls of the same
//! operations by `Action`, as the platform's server SDKs make them (see [`signature`]).
//! The bearer token does not apply there: the signature is the caller's authorization.
//!
//! Property set and service calls go to online devices only (`409 DeviceOffline`), on topics
//! the device subscribed to or gets by the automatic subscription (`409 DeviceNotListening`);
//! the device's answer to either becomes a downlink result. A synchronous service call goes
//! in the device's wire form (`/ext/rrpc/…` for a client id with `ext=1`, else
//! `/sys/…/rrpc/request/…`) and answers `504 DeviceTimeout` when the device does not.
//!
//! `Topic` of an RRPC call is one of the device's own topics (`/{ProductKey}/{DeviceName}/…`);
//! the call then goes over `/ext/rrpc/{MessageId}{Topic}`. `MessageId` is the decimal u64 the
//! request was published with, as a string.
//!
//! A `/pub` topic must belong to the product: `/{ProductKey}/…` (its devices' custom topics),
//! `/sys/{ProductKey}/…` or `/broadcast/{ProductKey}/…`. The platform's service namespaces
//! (`/ext/…` for RRPC, sessions and NTP, `/shadow/…`) are refused: they have their own
//! protocols, and `/ext/rrpc/…` goes through `/rrpc`. `Subscribers` is how many sessions the
//! message reached (the broker gives server-side publishes no message id of their own).
//!
//! Every failure is a `4xx` (or `503` once the broker has stopped) with an [`ApiError`] body
//! `{"Code":"…","Message":"…"}`, never a `500`: the codes are those of [`ApiErrorCode`].
//!
//! # The web console
//!
//! With [`ApiConfig::console`], the API also serves a web console under `/console`: products,
//! devices with their live status, a device's topics, properties, shadow, OTA, topology and
//! recent messages, a live message view and a debugging page (see the `console` module's
//! source, `io-tokio/src/api/console.rs`). Each of its actions calls the handler of the API
//! operation it is (`/Pub`, `/RegisterDevice`, ...). It is open without a token; with one, a
//! browser logs in at `/console/login` with the token or an AccessKey.
//!
//! A device that is not registered gets `404 DeviceNotFound` from `/rrpc` when the broker's
//! authenticator can tell ([`Authenticator::knows_device`]; the platform's authenticator can);
//! with any other authenticator the call goes ahead and such a device is `OFFLINE`.

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aliot_auth::DeviceIdentity;
use aliot_core::Authenticator;
use aliot_core::codec::QoS;
use aliot_core::hub::{self, Counters, RRPC_TIMEOUT_RANGE_MS, RrpcOutcome};
use aliot_io::Runtime as _;
use aliot_topic::{TopicLimits, TopicName, check_identity, is_product_topic};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tracing::{error, info};

use crate::Tokio;
use crate::broker::{Broker, BrokerHandle, BrokerStopped, RrpcError, Stats, TransportStats};

mod console;
mod openapi;
mod registry;
pub mod signature;
mod things;

pub use signature::{AccessKey, AccessKeys};

pub use registry::{
    ApplyRequest, BatchDevicesRequest, BatchRegisterRequest, CreateProductRequest,
    CreateProductTopicRequest, DeviceRef, PageRequest, ProductRequest, PubBroadcastRequest,
    RegisterDeviceRequest,
};
pub use things::{
    DataResponse, DeviceRequest, DownlinkResultMessage, GetDeviceShadowResponse,
    InvokeThingServiceRequest, ListData, MessageIdData, OtaJobData, PropertyStatusInfo,
    PropertyStatusList, PushOtaUpgradeRequest, ServiceResultData, SetPropertiesRequest,
    ShadowVersionData, UpdateDeviceShadowRequest,
};

/// Where the HTTP API listens and who may call it.
#[derive(Clone)]
pub struct ApiConfig {
    /// Where to listen. The `aliot` command defaults it to loopback: the API can call every
    /// device, so expose it only behind a token.
    pub bind: SocketAddr,
    /// When set, every request must carry `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// The AccessKeys of the platform's OpenAPI at `/` (signed requests; see
    /// [`signature`]); without any, the OpenAPI is off. Each can log in to the console too.
    /// Shared: in a cluster, the other nodes' keys join them as they are learnt.
    pub access_keys: AccessKeys,
    /// Whether the web console is served at `/console` (see [the module docs](self#the-web-console)).
    /// Its live views need the hub's trace
    /// ([`HubConfig::trace_capacity`](aliot_core::hub::HubConfig::trace_capacity)).
    pub console: bool,
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("bind", &self.bind)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("access_keys", &self.access_keys)
            .field("console", &self.console)
            .finish()
    }
}

/// The HTTP API's address could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for the HTTP API on {addr}: {source}")]
pub struct BindApiError {
    /// The address asked for.
    pub addr: SocketAddr,
    /// What the operating system said.
    pub source: io::Error,
}

/// The HTTP API as a method of the tokio [`Broker`].
///
/// ```
/// use std::sync::Arc;
/// use aliot_auth::MemoryRegistry;
/// use aliot_core::PlatformAuthenticator;
/// use aliot_tokio::{ApiConfig, Broker, BrokerConfig, ListenerConfig, ServeHttpApi as _};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let authenticator = PlatformAuthenticator::new(MemoryRegistry::new());
/// let mut broker = Broker::start(BrokerConfig {
///     listeners: vec![ListenerConfig::tcp("127.0.0.1:0".parse()?)],
///     server: Default::default(),
///     hub: Default::default(),
///     authenticator: Arc::new(authenticator),
///     max_connections: BrokerConfig::DEFAULT_MAX_CONNECTIONS,
///     store: None,
///     registry: None,
///     cluster: None,
/// })
/// .await?;
/// let api = ApiConfig {
///     bind: "127.0.0.1:0".parse()?,
///     token: Some("change-me".into()),
///     access_keys: Vec::new().into(),
///     console: true,
/// };
/// let api_addr = broker.serve_http_api(api).await?;
/// assert_ne!(api_addr.port(), 0);
/// // Stops the API too, after the requests under way.
/// broker.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub trait ServeHttpApi {
    /// Binds `config.bind` and serves the API there, in a task beside the broker's, until the
    /// broker stops accepting; [`shutdown`](aliot_io::broker::Broker::shutdown) then waits
    /// for the requests under way, within its deadline. Returns the address bound (port 0
    /// resolved). It may be called more than once, for more than one address.
    fn serve_http_api(
        &mut self,
        config: ApiConfig,
    ) -> impl Future<Output = Result<SocketAddr, BindApiError>> + Send;
}

impl ServeHttpApi for Broker {
    async fn serve_http_api(&mut self, config: ApiConfig) -> Result<SocketAddr, BindApiError> {
        let ApiConfig {
            bind,
            token,
            access_keys,
            console,
        } = config;
        let bind_error = |source| BindApiError { addr: bind, source };
        let listener = Tokio.bind(bind).await.map_err(bind_error)?;
        let local = listener.local_addr().map_err(bind_error)?;
        info!(
            addr = %local,
            token = token.is_some(),
            openapi = !access_keys.current().is_empty(),
            console,
            "listening for the HTTP API"
        );
        let mut state = ApiState::new(
            self.handle(),
            token,
            self.server_config().topic_limits,
            Arc::clone(self.authenticator()),
        );
        state.access_keys = access_keys;
        self.spawn_service("the HTTP API", move |stop| {
            state.stop = Some(stop.clone());
            serve_api(listener, router(state, console), stop)
        });
        Ok(local)
    }
}

/// Serves the API until `stop` is raised, then waits for the requests under way.
async fn serve_api(
    listener: tokio::net::TcpListener,
    router: Router,
    stop: aliot_io::broker::StopSignal,
) {
    let served = axum::serve(listener, router).with_graceful_shutdown(stop.raised());
    if let Err(error) = served.await {
        error!(%error, "the HTTP API stopped");
    }
}

/// The body of `POST /rrpc`: the platform's `RRpc` parameters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RrpcRequest {
    /// The device's product.
    pub product_key: String,
    /// The device.
    pub device_name: String,
    /// The request payload, base64.
    pub request_base64_byte: String,
    /// How long to wait for the device, in milliseconds (1,000–8,000).
    pub timeout: u64,
    /// A topic of the device's own for custom-topic RRPC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
}

/// The answer to `POST /rrpc`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RrpcResponse {
    /// The call was made (whatever its outcome).
    pub success: bool,
    /// `SUCCESS`, `TIMEOUT`, `OFFLINE`, `HALFCONN` or `UNKNOWN`.
    pub rrpc_code: String,
    /// The messageId of the request, a decimal u64.
    pub message_id: String,
    /// The device's answer, base64 (with `SUCCESS` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_base64_byte: Option<String>,
}

/// The body of `POST /pub`: the platform's `Pub` parameters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PubRequest {
    /// The product the topic belongs to.
    pub product_key: String,
    /// The topic to publish on.
    pub topic_full_name: String,
    /// The payload, base64.
    pub message_content: String,
    /// 0 or 1 (default 0).
    #[serde(default)]
    pub qos: u8,
}

/// The answer to `POST /pub`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PubResponse {
    /// The message was routed.
    pub success: bool,
    /// The message's id, a decimal u64 as the platform gives it: unique among the ids the broker
    /// hands out (RRPC calls, downlinks, publishes).
    pub message_id: String,
    /// How many sessions it reached (ours: the platform does not say).
    pub subscribers: usize,
}

/// The body of every failed request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ApiError {
    /// What kind of failure, one of [`ApiErrorCode`]'s names.
    pub code: String,
    /// What was wrong, for a person.
    pub message: String,
}

/// The failures of the API, each with its HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiErrorCode {
    /// 401: no `Authorization: Bearer` header, or the wrong token.
    Unauthorized,
    /// 400: the body is not the JSON the endpoint takes.
    InvalidJson,
    /// 413: the body is larger than the API reads.
    BodyTooLarge,
    /// 400: the body could not be read.
    InvalidBody,
    /// 400: a base64 field does not decode.
    InvalidBase64,
    /// 400: an RRPC timeout outside 1,000–8,000 ms.
    InvalidTimeout,
    /// 400: a product key or device name that no device can have.
    InvalidDevice,
    /// 404: no such device is registered.
    DeviceNotFound,
    /// 400: a topic that is not a valid topic name, or not one the call may use.
    InvalidTopic,
    /// 400: a QoS other than 0 or 1.
    InvalidQos,
    /// 503: the broker has stopped.
    BrokerStopped,
    /// 503: this node of a cluster cannot reach the others; a QoS 1 publish was made nowhere.
    ClusterUnreachable,
    /// 404: no such endpoint.
    NotFound,
    /// 405: the endpoint does not take this method.
    MethodNotAllowed,
    /// 409: the device is not online (property set, service calls).
    DeviceOffline,
    /// 409: the device neither subscribed to the downlink's topic nor asked for the
    /// automatic subscription.
    DeviceNotListening,
    /// 504: the device did not answer a synchronous service call in time.
    DeviceTimeout,
    /// 400: a service identifier that is not 1–50 letters, digits or `_`.
    InvalidIdentifier,
    /// 400: `Items` or `Args` is not a JSON object (or names too many properties).
    InvalidItems,
    /// 502: the device answered a synchronous call with something that is not JSON.
    InvalidDeviceReply,
    /// 400: the shadow refused the `ShadowMessage` (the message says its code: 403 version).
    ShadowRefused,
    /// 400: an OTA job without a URL or version, or a digest of the wrong length.
    InvalidOtaJob,
    /// 404: no such product.
    ProductNotFound,
    /// 409: the device exists already.
    DeviceExists,
    /// 409: the product still has devices.
    ProductHasDevices,
    /// 400: a name a product or device cannot have, or a device not named.
    InvalidName,
    /// 404: the broker has no registry the API may change.
    NoRegistry,
    /// 400: a sub-device's proof is not its secret's (`AddThingTopo`).
    InvalidSign,
    /// 404: the sub-device is in no gateway's topology (`RemoveThingTopo`).
    NotInTopology,
}

impl ApiErrorCode {
    /// The code's name in the error body.
    pub fn name(self) -> &'static str {
        match self {
            ApiErrorCode::Unauthorized => "Unauthorized",
            ApiErrorCode::InvalidJson => "InvalidJson",
            ApiErrorCode::BodyTooLarge => "BodyTooLarge",
            ApiErrorCode::InvalidBody => "InvalidBody",
            ApiErrorCode::InvalidBase64 => "InvalidBase64",
            ApiErrorCode::InvalidTimeout => "InvalidTimeout",
            ApiErrorCode::InvalidDevice => "InvalidDevice",
            ApiErrorCode::DeviceNotFound => "DeviceNotFound",
            ApiErrorCode::InvalidTopic => "InvalidTopic",
            ApiErrorCode::InvalidQos => "InvalidQos",
            ApiErrorCode::BrokerStopped => "BrokerStopped",
            ApiErrorCode::ClusterUnreachable => "ClusterUnreachable",
            ApiErrorCode::NotFound => "NotFound",
            ApiErrorCode::MethodNotAllowed => "MethodNotAllowed",
            ApiErrorCode::DeviceOffline => "DeviceOffline",
            ApiErrorCode::DeviceNotListening => "DeviceNotListening",
            ApiErrorCode::DeviceTimeout => "DeviceTimeout",
            ApiErrorCode::InvalidIdentifier => "InvalidIdentifier",
            ApiErrorCode::InvalidItems => "InvalidItems",
            ApiErrorCode::InvalidDeviceReply => "InvalidDeviceReply",
            ApiErrorCode::ShadowRefused => "ShadowRefused",
            ApiErrorCode::InvalidOtaJob => "InvalidOtaJob",
            ApiErrorCode::ProductNotFound => "ProductNotFound",
            ApiErrorCode::DeviceExists => "DeviceExists",
            ApiErrorCode::ProductHasDevices => "ProductHasDevices",
            ApiErrorCode::InvalidName => "InvalidName",
            ApiErrorCode::NoRegistry => "NoRegistry",
            ApiErrorCode::InvalidSign => "InvalidSign",
            ApiErrorCode::NotInTopology => "NotInTopology",
        }
    }

    /// The HTTP status it is answered with.
    pub fn status(self) -> StatusCode {
        match self {
            ApiErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiErrorCode::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiErrorCode::DeviceNotFound
            | ApiErrorCode::NotFound
            | ApiErrorCode::ProductNotFound
            | ApiErrorCode::NoRegistry
            | ApiErrorCode::NotInTopology => StatusCode::NOT_FOUND,
            ApiErrorCode::DeviceExists | ApiErrorCode::ProductHasDevices => StatusCode::CONFLICT,
            ApiErrorCode::InvalidName | ApiErrorCode::InvalidSign => StatusCode::BAD_REQUEST,
            ApiErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiErrorCode::BrokerStopped | ApiErrorCode::ClusterUnreachable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiErrorCode::DeviceOffline | ApiErrorCode::DeviceNotListening => StatusCode::CONFLICT,
            ApiErrorCode::DeviceTimeout => StatusCode::GATEWAY_TIMEOUT,
            ApiErrorCode::InvalidDeviceReply => StatusCode::BAD_GATEWAY,
            ApiErrorCode::InvalidIdentifier
            | ApiErrorCode::InvalidItems
            | ApiErrorCode::ShadowRefused
            | ApiErrorCode::InvalidOtaJob => StatusCode::BAD_REQUEST,
            ApiErrorCode::InvalidJson
            | ApiErrorCode::InvalidBody
            | ApiErrorCode::InvalidBase64
            | ApiErrorCode::InvalidTimeout
            | ApiErrorCode::InvalidDevice
            | ApiErrorCode::InvalidTopic
            | ApiErrorCode::InvalidQos => StatusCode::BAD_REQUEST,
        }
    }
}

/// A failed request: its code and what was wrong.
#[derive(Debug)]
struct Failure {
    code: ApiErrorCode,
    message: String,
}

impl From<aliot_io::broker::PublishError> for Failure {
    fn from(error: aliot_io::broker::PublishError) -> Self {
        match error {
            aliot_io::broker::PublishError::BrokerStopped => BrokerStopped.into(),
            unreachable @ aliot_io::broker::PublishError::ClusterUnreachable(_) => {
                Failure::new(ApiErrorCode::ClusterUnreachable, unreachable.to_string())
            }
        }
    }
}

impl From<BrokerStopped> for Failure {
    fn from(BrokerStopped: BrokerStopped) -> Self {
        Failure::new(ApiErrorCode::BrokerStopped, "the broker has stopped")
    }
}

impl Failure {
    fn new(code: ApiErrorCode, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = ApiError {
            code: self.code.name().to_owned(),
            message: self.message,
        };
        let mut response = (self.code.status(), axum::Json(body)).into_response();
        if self.code == ApiErrorCode::Unauthorized {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// What the handlers share.
#[derive(Clone)]
struct ApiState {
    handle: BrokerHandle,
    token: Option<Arc<str>>,
    topic_limits: TopicLimits,
    authenticator: Arc<dyn Authenticator + Send + Sync>,
    /// The OpenAPI's AccessKeys (none: the OpenAPI is off).
    access_keys: AccessKeys,
    /// The OpenAPI's nonces seen within the timestamp window.
    nonces: Arc<std::sync::Mutex<signature::NonceCache>>,
    /// The latest batches of `BatchRegisterDevice`.
    applies: Arc<std::sync::Mutex<std::collections::VecDeque<registry::Applied>>>,
    /// The web console's logins.
    console_sessions: Arc<console::ConsoleSessions>,
    /// Raised when the broker stops: the console's event streams end on it.
    stop: Option<aliot_io::broker::StopSignal>,
}

impl ApiState {
    fn new(
        handle: BrokerHandle,
        token: Option<String>,
        topic_limits: TopicLimits,
        authenticator: Arc<dyn Authenticator + Send + Sync>,
    ) -> Self {
        ApiState {
            handle,
            token: token.map(Arc::from),
            topic_limits,
            authenticator,
            access_keys: AccessKeys::default(),
            nonces: Arc::default(),
            applies: Arc::default(),
            console_sessions: Arc::default(),
            stop: None,
        }
    }

    fn authorize(&self, headers: &HeaderMap) -> Result<(), Failure> {
        let Some(expected) = &self.token else {
            return Ok(());
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| bearer_token(value.as_bytes()))
            .ok_or_else(|| {
                Failure::new(
                    ApiErrorCode::Unauthorized,
                    "this API needs an `Authorization: Bearer <token>` header",
                )
            })?;
        // Constant time in the token's content (its length is not a secret worth the cost).
        if bool::from(given.ct_eq(expected.as_bytes())) {
            Ok(())
        } else {
            Err(Failure::new(
                ApiErrorCode::Unauthorized,
                "the bearer token is not this API's",
            ))
        }
    }
}

impl ApiState {
    /// The device a request names, checked: an identity a device can have, registered when
    /// the authenticator can tell.
    fn registered_device(
        &self,
        product_key: &str,
        device_name: &str,
    ) -> Result<DeviceIdentity, Failure> {
        check_identity(product_key, device_name)
            .map_err(|error| Failure::new(ApiErrorCode::InvalidDevice, error.to_string()))?;
        let device = DeviceIdentity::new(product_key, device_name);
        // The registry knows its disabled devices too, which the authenticator does not
        // admit; without one, the authenticator tells what it can.
        let known = match self.handle.registry() {
            Some(registry) => Some(registry.device(&device).is_some()),
            None => self.authenticator.knows_device(&device),
        };
        if known == Some(false) {
            return Err(Failure::new(
                ApiErrorCode::DeviceNotFound,
                format!("device {device} is not registered"),
            ));
        }
        Ok(device)
    }
}

/// The credentials of an `Authorization: Bearer <token>` header (the scheme's name is
/// case-insensitive, RFC 9110 §11.1).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = value.split_at_checked(b"Bearer ".len())?;
    scheme.eq_ignore_ascii_case(b"Bearer ").then_some(token)
}

/// The API's routes over a running broker, with the console's under `/console` if it is on.
fn router(state: ApiState, console: bool) -> Router {
    let api = Router::new()
        .route(
            "/",
            get(openapi::openapi)
                .post(openapi::openapi)
                .fallback(method_not_allowed),
        )
        .route("/rrpc", post(rrpc).fallback(method_not_allowed))
        .route("/RRpc", post(rrpc).fallback(method_not_allowed))
        .route("/pub", post(publish).fallback(method_not_allowed))
        .route("/Pub", post(publish).fallback(method_not_allowed))
        .route("/metrics", get(metrics).fallback(method_not_allowed))
        .route(
            "/SetDeviceProperty",
            post(things::set_device_property).fallback(method_not_allowed),
        )
        .route(
            "/SetDeviceDesiredProperty",
            post(things::set_device_desired_property).fallback(method_not_allowed),
        )
        .route(
            "/InvokeThingService",
            post(things::invoke_thing_service).fallback(method_not_allowed),
        )
        .route(
            "/QueryDevicePropertyStatus",
            post(things::query_device_property_status).fallback(method_not_allowed),
        )
        .route(
            "/GetDeviceShadow",
            post(things::get_device_shadow).fallback(method_not_allowed),
        )
        .route(
            "/UpdateDeviceShadow",
            post(things::update_device_shadow).fallback(method_not_allowed),
        )
        .route(
            "/PushOtaUpgrade",
            post(things::push_ota_upgrade).fallback(method_not_allowed),
        )
        .route(
            "/ListDownlinkResults",
            get(things::list_downlink_results).fallback(method_not_allowed),
        )
        .route(
            "/CreateProduct",
            post(registry::create_product).fallback(method_not_allowed),
        )
        .route(
            "/auth/register/device",
            post(registry::dynamic_register).fallback(method_not_allowed),
        )
        .route(
            "/CreateProductTopic",
            post(registry::create_product_topic).fallback(method_not_allowed),
        )
        .route(
            "/BatchRegisterDevice",
            post(registry::batch_register_device).fallback(method_not_allowed),
        )
        .route(
            "/QueryBatchRegisterDeviceStatus",
            post(registry::query_batch_register_device_status).fallback(method_not_allowed),
        )
        .route(
            "/QueryPageByApplyId",
            post(registry::query_page_by_apply_id).fallback(method_not_allowed),
        )
        .route(
            "/PubBroadcast",
            post(registry::pub_broadcast).fallback(method_not_allowed),
        )
        .route(
            "/QueryProduct",
            post(registry::query_product).fallback(method_not_allowed),
        )
        .route(
            "/QueryProductList",
            post(registry::query_product_list).fallback(method_not_allowed),
        )
        .route(
            "/DeleteProduct",
            post(registry::delete_product).fallback(method_not_allowed),
        )
        .route(
            "/RegisterDevice",
            post(registry::register_device).fallback(method_not_allowed),
        )
        .route(
            "/QueryDeviceDetail",
            post(registry::query_device_detail).fallback(method_not_allowed),
        )
        .route(
            "/QueryDevice",
            post(registry::query_device).fallback(method_not_allowed),
        )
        .route(
            "/GetThingTopo",
            post(registry::get_thing_topo).fallback(method_not_allowed),
        )
        .route(
            "/AddThingTopo",
            post(registry::add_thing_topo).fallback(method_not_allowed),
        )
        .route(
            "/RemoveThingTopo",
            post(registry::remove_thing_topo).fallback(method_not_allowed),
        )
        .route(
            "/DeleteDevice",
            post(registry::delete_device).fallback(method_not_allowed),
        )
        .route(
            "/DisableThing",
            post(registry::disable_thing).fallback(method_not_allowed),
        )
        .route(
            "/EnableThing",
            post(registry::enable_thing).fallback(method_not_allowed),
        )
        .route(
            "/ResetThing",
            post(registry::reset_thing).fallback(method_not_allowed),
        )
        .route(
            "/GetDeviceStatus",
            post(registry::get_device_status).fallback(method_not_allowed),
        )
        .route(
            "/BatchGetDeviceState",
            post(registry::batch_get_device_state).fallback(method_not_allowed),
        );
    let api = if console {
        api.nest("/console", console::router()).route(
            "/console/",
            get(|| async { axum::response::Redirect::to("/console") }),
        )
    } else {
        api
    };
    api.fallback(not_found).with_state(state)
}

async fn not_found() -> Failure {
    Failure::new(
        ApiErrorCode::NotFound,
        "no such endpoint; there are POST /rrpc (/RRpc), POST /pub (/Pub), GET /metrics, \
         POST /SetDeviceProperty, /SetDeviceDesiredProperty, /InvokeThingService, \
         /QueryDevicePropertyStatus, /GetDeviceShadow, /UpdateDeviceShadow, /PushOtaUpgrade \
         and GET /ListDownlinkResults",
    )
}

async fn method_not_allowed() -> Failure {
    Failure::new(
        ApiErrorCode::MethodNotAllowed,
        "this endpoint does not take this method",
    )
}

/// Reads the JSON body of a request.
fn parse_body<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, Failure> {
    let body = body.map_err(|rejection| {
        let code = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiErrorCode::BodyTooLarge
        } else {
            ApiErrorCode::InvalidBody
        };
        Failure::new(code, rejection.body_text())
    })?;
    serde_json::from_slice(&body)
        .map_err(|error| Failure::new(ApiErrorCode::InvalidJson, format!("invalid body: {error}")))
}

fn decode_base64(field: &str, text: &str) -> Result<Bytes, Failure> {
    BASE64.decode(text).map(Bytes::from).map_err(|error| {
        Failure::new(
            ApiErrorCode::InvalidBase64,
            format!("{field} is not base64: {error}"),
        )
    })
}

async fn rrpc(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<RrpcResponse>, Failure> {
    state.authorize(&headers)?;
    let request: RrpcRequest = parse_body(body)?;
    let payload = decode_base64("RequestBase64Byte", &request.request_base64_byte)?;
    if !RRPC_TIMEOUT_RANGE_MS.contains(&request.timeout) {
        return Err(Failure::new(
            ApiErrorCode::InvalidTimeout,
            format!(
                "Timeout {} ms is outside {}..={} ms",
                request.timeout,
                RRPC_TIMEOUT_RANGE_MS.start(),
                RRPC_TIMEOUT_RANGE_MS.end()
            ),
        ));
    }
    let device = state.registered_device(&request.product_key, &request.device_name)?;
    let topic = match &request.topic {
        Some(topic) => Some(TopicName::new(topic, &state.topic_limits).map_err(|error| {
            Failure::new(
                ApiErrorCode::InvalidTopic,
                format!("Topic {topic:?}: {error}"),
            )
        })?),
        None => None,
    };
    let timeout = Duration::from_millis(request.timeout);
    let reply = match &topic {
        Some(topic) => {
            state
                .handle
                .rrpc_on_topic(&device, topic, payload, timeout)
                .await
        }
        None => state.handle.rrpc(&device, payload, timeout).await,
    };
    let reply = reply.map_err(|error| {
        let code = match &error {
            RrpcError::BrokerStopped => ApiErrorCode::BrokerStopped,
            RrpcError::Rejected(hub::InvalidRrpcCall::InvalidTimeout(_)) => {
                ApiErrorCode::InvalidTimeout
            }
            RrpcError::Rejected(
                hub::InvalidRrpcCall::NotDeviceTopic(_) | hub::InvalidRrpcCall::InvalidTopic,
            ) => ApiErrorCode::InvalidTopic,
        };
        Failure::new(code, error.to_string())
    })?;
    let payload_base64_byte = match &reply.outcome {
        RrpcOutcome::Success(payload) => Some(BASE64.encode(payload)),
        _ => None,
    };
    Ok(axum::Json(RrpcResponse {
        success: true,
        rrpc_code: reply.outcome.code().to_owned(),
        message_id: reply.message_id.0.to_string(),
        payload_base64_byte,
    }))
}

async fn publish(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<PubResponse>, Failure> {
    state.authorize(&headers)?;
    let request: PubRequest = parse_body(body)?;
    let payload = decode_base64("MessageContent", &request.message_content)?;
    let qos = match request.qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        other => {
            return Err(Failure::new(
                ApiErrorCode::InvalidQos,
                format!("Qos {other} is not 0 or 1"),
            ));
        }
    };
    let topic = TopicName::new(&request.topic_full_name, &state.topic_limits).map_err(|error| {
        Failure::new(
            ApiErrorCode::InvalidTopic,
            format!("TopicFullName {:?}: {error}", request.topic_full_name),
        )
    })?;
    if !belongs_to_product(topic.as_str(), &request.product_key) {
        return Err(Failure::new(
            ApiErrorCode::InvalidTopic,
            format!(
                "TopicFullName {:?} is not a topic of product {:?}: expected /{pk}/..., /sys/{pk}/... or /broadcast/{pk}/...",
                request.topic_full_name,
                request.product_key,
                pk = request.product_key
            ),
        ));
    }
    let published = state.handle.publish(topic, payload, qos).await?;
    Ok(axum::Json(PubResponse {
        success: true,
        message_id: published.message_id.0.to_string(),
        subscribers: published.reached,
    }))
}

/// Whether a `/pub` topic is one of the product's: `/{pk}/…`, `/sys/{pk}/…`, `/broadcast/{pk}/…`
/// ([`is_product_topic`]), for a product key that can be one.
fn belongs_to_product(topic: &str, product_key: &str) -> bool {
    check_identity(product_key, "device").is_ok() && is_product_topic(topic, product_key)
}

async fn metrics(State(state): State<ApiState>, headers: HeaderMap) -> Result<Response, Failure> {
    state.authorize(&headers)?;
    let stats = state.handle.stats().await;
    let transport = state.handle.transport_stats();
    let registry = state.handle.registry().map(RegistryStats::of);
    let content_type = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
    Ok((
        [(header::CONTENT_TYPE, content_type)],
        prometheus_text(
            &stats,
            &transport,
            registry.as_ref(),
            state.handle.cluster_stats().as_ref(),
        ),
    )
        .into_response())
}

/// What `/metrics` tells of the registry.
struct RegistryStats {
    products: usize,
    devices: usize,
    registration: aliot_io::registry::RegistrationCounters,
}

impl RegistryStats {
    fn of(registry: &aliot_io::registry::Registry) -> Self {
        RegistryStats {
            products: registry.product_count(),
            devices: registry.device_count(),
            registration: registry.registration_counters(),
        }
    }
}

/// Samples with labels made for them, as `family` takes them.
fn label_refs(samples: &[(String, u64)]) -> Vec<(&str, u64)> {
    samples
        .iter()
        .map(|(labels, count)| (labels.as_str(), *count))
        .collect()
}

/// Every counter of the hub and the gauges, what the listeners counted before MQTT (refusals at
/// the cap, TLS-PSK identities refused, legacy TLS handshakes), and the registry's counts, in
/// Prometheus text format.
fn prometheus_text(
    stats: &Stats,
    transport: &TransportStats,
    registry: Option<&RegistryStats>,
    cluster: Option<&aliot_io::broker::cluster::ClusterStats>,
) -> String {
    // Destructured in full: a counter added to the hub does not compile until it is exported.
    let Counters {
        connections_accepted,
        connections_refused,
        closed,
        takeovers,
        // The cluster's link counts these, by cause (aliot_cluster_sessions_total).
        sessions_handed_over: _,
        sessions_taken_over: _,
        messages_handed_again,
        messages_in,
        messages_out,
        publish_denied,
        acks_held,
        acks_held_to_limit,
        subscribe_denied,
        dropped,
        rrpc,
        services,
        gateway,
    } = &stats.counters;
    let aliot_core::hub::CloseCounters {
        client_disconnected,
        refused,
        connect_timeout,
        keep_alive_timeout,
        protocol_violation,
        taken_over,
        server_shutdown,
        transport_closed,
        device_disabled,
        registered,
    } = closed;
    let aliot_core::hub::DropCounters {
        queue_full,
        expired,
        slow_consumer,
        offline_qos0,
        session_discarded,
    } = dropped;
    let aliot_core::hub::RrpcCounters {
        success,
        timeout,
        offline,
        halfconn,
        unknown,
        late_responses,
        unknown_responses,
    } = rrpc;
    let aliot_core::hub::ServiceCounters {
        requests: service_requests,
        malformed: service_malformed,
        not_subscribed: service_not_subscribed,
        downlink_results,
        downlink_results_dropped,
    } = services;
    let aliot_core::hub::GatewayCounters {
        requests: gateway_requests,
        refused: gateway_refused,
        logins: sub_device_logins,
        logouts: sub_device_logouts,
        dropped_with_gateway,
    } = gateway;
    let refused_by_code: Vec<(String, u64)> = connections_refused
        .iter()
        .enumerate()
        .skip(1)
        .map(|(code, count)| (format!("code=\"{code}\""), *count))
        .collect();

    let mut out = String::with_capacity(4096);
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {value}");
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        }
    };
    family(
        "aliot_connections_accepted_total",
        "counter",
        "Sessions opened (CONNACK 0 sent).",
        &[("", *connections_accepted)],
    );
    let refused_samples = label_refs(&refused_by_code);
    family(
        "aliot_connections_refused_total",
        "counter",
        "CONNECTs refused, by CONNACK return code.",
        &refused_samples,
    );
    family(
        "aliot_connections_refused_at_cap_total",
        "counter",
        "Connections closed as soon as accepted, before their CONNECT, because the broker held limits.max_connections already.",
        &[("", transport.refused_at_cap)],
    );
    family(
        "aliot_psk_identities_refused_total",
        "counter",
        "TLS-PSK handshakes refused for their identity: not the platform's form, or no such device.",
        &[("", transport.psk_identities_refused)],
    );
    family(
        "aliot_legacy_tls_handshakes_total",
        "counter",
        "TLS handshakes below 1.2 accepted on listeners that allow them, by version.",
        &[
            ("version=\"1.0\"", transport.tls_1_0_handshakes),
            ("version=\"1.1\"", transport.tls_1_1_handshakes),
        ],
    );
    family(
        "aliot_connections_closed_total",
        "counter",
        "Connections closed, by reason.",
        &[
            ("reason=\"client_disconnected\"", *client_disconnected),
            ("reason=\"refused\"", *refused),
            ("reason=\"connect_timeout\"", *connect_timeout),
            ("reason=\"keep_alive_timeout\"", *keep_alive_timeout),
            ("reason=\"protocol_violation\"", *protocol_violation),
            ("reason=\"taken_over\"", *taken_over),
            ("reason=\"server_shutdown\"", *server_shutdown),
            ("reason=\"transport_closed\"", *transport_closed),
            ("reason=\"device_disabled\"", *device_disabled),
            ("reason=\"registered\"", *registered),
        ],
    );
    family(
        "aliot_takeovers_total",
        "counter",
        "Connections taken over by a new connection of the same client.",
        &[("", *takeovers)],
    );
    family(
        "aliot_messages_in_total",
        "counter",
        "PUBLISHes accepted from clients, plus messages published by the server.",
        &[("", *messages_in)],
    );
    family(
        "aliot_messages_out_total",
        "counter",
        "Deliveries handed to connections.",
        &[("", *messages_out)],
    );
    family(
        "aliot_publish_denied_total",
        "counter",
        "PUBLISHes refused by the ACL (dropped; QoS 1 still acknowledged).",
        &[("", *publish_denied)],
    );
    family(
        "aliot_acks_held_total",
        "counter",
        "QoS 1 PUBLISHes whose PUBACK was held because a subscriber had fallen behind.",
        &[("", *acks_held)],
    );
    family(
        "aliot_acks_held_to_limit_total",
        "counter",
        "Held PUBACKs sent when the hold reached limits.max_ack_hold_ms.",
        &[("", *acks_held_to_limit)],
    );
    family(
        "aliot_subscribe_denied_total",
        "counter",
        "SUBSCRIBE filters refused by the ACL.",
        &[("", *subscribe_denied)],
    );
    family(
        "aliot_messages_dropped_total",
        "counter",
        "Messages dropped, by reason.",
        &[
            ("reason=\"queue_full\"", *queue_full),
            ("reason=\"expired\"", *expired),
            ("reason=\"slow_consumer\"", *slow_consumer),
            ("reason=\"offline_qos0\"", *offline_qos0),
            ("reason=\"session_discarded\"", *session_discarded),
        ],
    );
    family(
        "aliot_rrpc_calls_total",
        "counter",
        "RRPC calls ended, by outcome.",
        &[
            ("outcome=\"SUCCESS\"", *success),
            ("outcome=\"TIMEOUT\"", *timeout),
            ("outcome=\"OFFLINE\"", *offline),
            ("outcome=\"HALFCONN\"", *halfconn),
            ("outcome=\"UNKNOWN\"", *unknown),
        ],
    );
    family(
        "aliot_rrpc_late_responses_total",
        "counter",
        "RRPC responses that came after their call timed out (dropped).",
        &[("", *late_responses)],
    );
    family(
        "aliot_rrpc_unknown_responses_total",
        "counter",
        "RRPC responses to no known call (dropped).",
        &[("", *unknown_responses)],
    );
    family(
        "aliot_service_requests_total",
        "counter",
        "Requests of devices to the platform's services (thing model, NTP, shadow, OTA), answers to downlinks included.",
        &[("", *service_requests)],
    );
    family(
        "aliot_service_requests_malformed_total",
        "counter",
        "Service requests that were malformed: answered with an error code, or dropped when no answer could be made.",
        &[("", *service_malformed)],
    );
    family(
        "aliot_service_messages_not_subscribed_total",
        "counter",
        "Service replies and downlinks not sent: the device neither subscribed to their topic nor asked for the automatic subscription.",
        &[("", *service_not_subscribed)],
    );
    family(
        "aliot_downlink_results_total",
        "counter",
        "Devices' answers to property set and service calls, kept as downlink results.",
        &[("", *downlink_results)],
    );
    family(
        "aliot_downlink_results_dropped_total",
        "counter",
        "Downlink results dropped, the oldest first, to keep the latest 1,024.",
        &[("", *downlink_results_dropped)],
    );
    family(
        "aliot_gateway_requests_total",
        "counter",
        "Gateway requests (topology, sub-device registration, login, logout), and of them those answered with a code other than 200.",
        &[
            ("outcome=\"all\"", *gateway_requests),
            ("outcome=\"refused\"", *gateway_refused),
        ],
    );
    family(
        "aliot_sub_device_logins_total",
        "counter",
        "Sub-devices logged in through a gateway.",
        &[("", *sub_device_logins)],
    );
    family(
        "aliot_sub_device_logouts_total",
        "counter",
        "Sub-devices logged out: by their gateway or a topology change, or with their gateway's connection.",
        &[
            ("reason=\"logout\"", *sub_device_logouts),
            ("reason=\"gateway_gone\"", *dropped_with_gateway),
        ],
    );
    let groups = &stats.consumer_groups;
    let labelled = |value: &dyn Fn(&aliot_core::hub::GroupStats) -> u64| -> Vec<(String, u64)> {
        groups
            .iter()
            .map(|group| (format!("group=\"{}\"", group.id), value(group)))
            .collect()
    };
    let backlog = labelled(&|group| group.backlog as u64);
    let in_flight = labelled(&|group| group.in_flight as u64);
    let consumers = labelled(&|group| group.consumers as u64);
    let mut handled: Vec<(String, u64)> = Vec::new();
    for group in groups {
        for (outcome, count) in [
            ("delivered", group.delivered),
            ("redelivered", group.redelivered),
            ("settled", group.settled),
            ("dropped", group.dropped),
            ("relayed_in", group.relayed_in),
        ] {
            handled.push((
                format!("group=\"{}\",outcome=\"{outcome}\"", group.id),
                count,
            ));
        }
    }
    family(
        "aliot_consumer_group_backlog",
        "gauge",
        "Messages in a consumer group's backlog (waiting, or handed to a consumer and not settled).",
        &label_refs(&backlog),
    );
    family(
        "aliot_consumer_group_in_flight",
        "gauge",
        "Of those, handed to a consumer and not yet settled.",
        &label_refs(&in_flight),
    );
    family(
        "aliot_consumer_group_consumers",
        "gauge",
        "Consumers attached to a consumer group on this node (a cluster's relays not counted).",
        &label_refs(&consumers),
    );
    family(
        "aliot_consumer_group_messages_total",
        "counter",
        "A consumer group's messages: handed to consumers (redeliveries and a cluster's relays included), handed again after a release or a consumer gone, settled, dropped (backlog full or too old), relayed here by other nodes of a cluster.",
        &label_refs(&handled),
    );
    let gauge = |value: usize| u64::try_from(value).unwrap_or(u64::MAX);
    family(
        "aliot_connections",
        "gauge",
        "Connections with an open session.",
        &[("", gauge(stats.connections))],
    );
    family(
        "aliot_sessions",
        "gauge",
        "Sessions kept, online and offline.",
        &[("", gauge(stats.sessions))],
    );
    family(
        "aliot_acks_held",
        "gauge",
        "PUBACKs held now because a subscriber has fallen behind.",
        &[("", gauge(stats.held_acks))],
    );
    family(
        "aliot_rrpc_pending",
        "gauge",
        "RRPC calls waiting for their device.",
        &[("", gauge(stats.pending_rrpc))],
    );
    if let Some(store) = &stats.store {
        family(
            "aliot_store_commits_total",
            "counter",
            "Transactions the durable store committed (each covers every batch of changes that waited).",
            &[("", store.commits)],
        );
        family(
            "aliot_store_changes_total",
            "counter",
            "Changes the durable store committed.",
            &[("", store.changes)],
        );
        family(
            "aliot_store_commit_failures_total",
            "counter",
            "Commits of the durable store that failed (each try counts); while failing, QoS 1 PUBACKs wait.",
            &[("", store.failures)],
        );
        family(
            "aliot_store_failing",
            "gauge",
            "1 while the durable store's last commit failed.",
            &[("", u64::from(store.failing))],
        );
        family(
            "aliot_store_waiting",
            "gauge",
            "PUBACKs and answers waiting for the durable store's commit.",
            &[("", gauge(store.waiting))],
        );
    }
    if let Some(registry) = registry {
        family(
            "aliot_registry_products",
            "gauge",
            "Products in the registry.",
            &[("", gauge(registry.products))],
        );
        family(
            "aliot_registry_devices",
            "gauge",
            "Devices in the registry.",
            &[("", gauge(registry.devices))],
        );
        let counted = registry.registration;
        family(
            "aliot_dynamic_registrations_total",
            "counter",
            "Dynamic registration attempts (MQTT and HTTP), by outcome.",
            &[
                ("outcome=\"registered\"", counted.registered),
                ("outcome=\"refused\"", counted.refused),
                ("outcome=\"throttled\"", counted.throttled),
            ],
        );
    }
    if let Some(cluster) = cluster {
        family(
            "aliot_cluster_connected",
            "gauge",
            "Whether this node reaches its cluster (NATS) now.",
            &[("", u64::from(cluster.connected))],
        );
        family(
            "aliot_cluster_owned_devices",
            "gauge",
            "Devices whose session this node holds and answers for.",
            &[("", cluster.owned)],
        );
        family(
            "aliot_cluster_claims_total",
            "counter",
            "Ownership claims written (devices that connected here).",
            &[("", cluster.claims)],
        );
        family(
            "aliot_cluster_claims_pending",
            "gauge",
            "Claims the cluster could not take yet (retried).",
            &[("", cluster.claims_pending)],
        );
        family(
            "aliot_cluster_messages_handed_again_total",
            "counter",
            "Messages a session handed to another node carried that had been sent to the device here, unacknowledged: it may get them twice.",
            &[("", *messages_handed_again)],
        );
        family(
            "aliot_cluster_sessions_total",
            "counter",
            "Sessions moved between nodes, by how.",
            &[
                ("how=\"taken\"", cluster.sessions_taken),
                ("how=\"handed\"", cluster.sessions_handed),
                ("how=\"adopted\"", cluster.sessions_adopted),
                ("how=\"returned\"", cluster.sessions_returned),
            ],
        );
        family(
            "aliot_cluster_calls_total",
            "counter",
            "Calls to devices carried between nodes, by direction.",
            &[
                ("direction=\"sent\"", cluster.calls_sent),
                ("direction=\"served\"", cluster.calls_served),
            ],
        );
        family(
            "aliot_cluster_following_publishes",
            "gauge",
            "Whether this node follows the stream of the other nodes' QoS 1 publishes.",
            &[("", u64::from(cluster.following_publishes))],
        );
        family(
            "aliot_cluster_publishes_received_total",
            "counter",
            "Server-side publishes received from other nodes.",
            &[("", cluster.publishes_received)],
        );
        family(
            "aliot_cluster_registry_changes_total",
            "counter",
            "The shared registry: records this node wrote, and changes of other nodes it took.",
            &[
                ("direction=\"shared\"", cluster.registry_changes_shared),
                ("direction=\"taken\"", cluster.registry_changes_taken),
            ],
        );
        family(
            "aliot_cluster_relayed_messages_total",
            "counter",
            "Consumer groups' messages relayed between nodes, by direction.",
            &[
                ("direction=\"out\"", cluster.relayed_out),
                ("direction=\"in\"", cluster.relayed_in),
            ],
        );
        family(
            "aliot_cluster_relay_dropped_total",
            "counter",
            "Consumer groups' messages too large for a NATS message, which no relay can carry: dropped.",
            &[("", cluster.relay_dropped)],
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"Bearer"), None);
        assert_eq!(bearer_token(b""), None);
    }

    #[test]
    fn pub_topics_belong_to_their_product_only() {
        assert!(belongs_to_product("/a1PK/dev-1/user/get", "a1PK"));
        assert!(belongs_to_product("/sys/a1PK/dev-1/thing/x", "a1PK"));
        assert!(belongs_to_product("/broadcast/a1PK/news", "a1PK"));
        assert!(!belongs_to_product("/a1PK", "a1PK"));
        assert!(!belongs_to_product("/a1PK/", "a1PK"));
        assert!(!belongs_to_product("/a1PKX/dev/get", "a1PK"));
        assert!(!belongs_to_product("/other/dev/get", "a1PK"));
        assert!(!belongs_to_product("/ext/rrpc/1/a1PK/dev/get", "a1PK"));
        assert!(!belongs_to_product("/shadow/get/a1PK/dev", "a1PK"));
        assert!(!belongs_to_product("a1PK/dev/get", "a1PK"));
        assert!(!belongs_to_product("/sys/a1PK/dev", ""));
        // A product key that is a platform namespace is nobody's.
        assert!(!belongs_to_product("/sys/x", "sys"));
    }

    #[test]
    fn metrics_export_every_counter_with_help_and_type() {
        let mut stats = Stats::default();
        stats.counters.connections_refused[5] = 3;
        stats.counters.rrpc.halfconn = 2;
        stats.counters.dropped.slow_consumer = 7;
        stats.connections = 4;
        let registry = RegistryStats {
            products: 2,
            devices: 5,
            registration: aliot_io::registry::RegistrationCounters {
                registered: 1,
                refused: 2,
                throttled: 0,
            },
        };
        let transport = TransportStats {
            refused_at_cap: 9,
            psk_identities_refused: 2,
            tls_1_0_handshakes: 1,
            tls_1_1_handshakes: 0,
        };
        let text = prometheus_text(&stats, &transport, Some(&registry), None);
        assert!(text.contains("aliot_psk_identities_refused_total 2\n"));
        assert!(text.contains("aliot_legacy_tls_handshakes_total{version=\"1.0\"} 1\n"));
        assert!(text.contains("aliot_registry_devices 5\n"));
        assert!(text.contains("aliot_dynamic_registrations_total{outcome=\"refused\"} 2\n"));
        assert!(text.contains("aliot_connections_refused_total{code=\"5\"} 3\n"));
        assert!(text.contains("aliot_connections_refused_total{code=\"1\"} 0\n"));
        assert!(!text.contains("code=\"0\""));
        assert!(text.contains("aliot_rrpc_calls_total{outcome=\"HALFCONN\"} 2\n"));
        assert!(text.contains("aliot_messages_dropped_total{reason=\"slow_consumer\"} 7\n"));
        assert!(text.contains("# TYPE aliot_connections gauge\naliot_connections 4\n"));
        assert!(text.contains(
            "# TYPE aliot_connections_refused_at_cap_total counter\naliot_connections_refused_at_cap_total 9\n"
        ));
        // Every family has its HELP and TYPE lines, each sample a family declared before it.
        let mut declared = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.push(rest.split(' ').next().unwrap_or_default().to_owned());
            } else if !line.starts_with("# HELP ") {
                let name = line.split(['{', ' ']).next().unwrap_or_default();
                assert_eq!(declared.last().map(String::as_str), Some(name), "{line}");
            }
        }
        // 31 of the hub and the listeners, 3 of the listeners' TLS, 3 of the registry.
        assert_eq!(declared.len(), 36);
        stats.counters.gateway.dropped_with_gateway = 4;
        let text = prometheus_text(&stats, &TransportStats::default(), None, None);
        assert!(text.contains("aliot_sub_device_logouts_total{reason=\"gateway_gone\"} 4\n"));
        // With a store, its families too.
        stats.store = Some(aliot_io::broker::StoreStats {
            failures: 2,
            failing: true,
            ..Default::default()
        });
        let text = prometheus_text(&stats, &TransportStats::default(), None, None);
        assert!(text.contains("aliot_store_commit_failures_total 2\n"));
        assert!(text.contains("# TYPE aliot_store_failing gauge\naliot_store_failing 1\n"));
    }
}
