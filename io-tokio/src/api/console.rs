//! The web console: the broker's products, devices, messages and debugging in a browser,
//! served by the HTTP API under `/console`.
//!
//! Pages are rendered on the server from askama templates compiled into the binary
//! (`io-tokio/templates/console/`); one small hand-written script (`console.js`) follows the
//! live parts through Server-Sent Events from `/console/events`. Nothing is fetched from
//! elsewhere.
//!
//! | page | what it shows or does |
//! |---|---|
//! | `GET /console` | the products: key, name, categories, devices; the broker's counters |
//! | `GET /console/devices?product=&q=&page=` | one page of devices with their live status, last seen and address; register a device |
//! | `GET /console/devices/{pk}/{dn}` | a device: topics and permissions, properties, shadow, OTA, topology, recent messages; disable, enable, reset, delete |
//! | `GET /console/live?product=&device=` | the messages as they flow, pausable |
//! | `GET`/`POST /console/debug` | publish to a device topic, set a property, call a service or RRPC, and the outcome |
//! | `GET /console/events?product=&device=&statuses=1` | the stream the live parts follow (`text/event-stream`) |
//!
//! **Who may look.** The console is protected like the API: without a token it is open (as
//! the API is); with one, a request carries the bearer token, or the cookie of a login with
//! the token or with an AccessKey's id and secret (`/console/login`). A login lasts
//! [`SESSION_LIFETIME`]; its id is 128 random bits.
//!
//! **Nothing bypasses the API.** Every action calls the API's own handler for it (the same
//! parsing and checks as `POST /Pub`, `/RegisterDevice`, ...), with the console's login standing
//! for the API's token; pages that only read go to the registry and the hub directly.
//! A form that changes something must come from the console's own origin (its `Origin`
//! header, when the browser sends one, names the host the request was sent to), so that
//! another site cannot make a logged-in browser act.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aliot_auth::DeviceIdentity;
use aliot_core::hub::{DevicePresence, TraceDirection, TraceFilter, TracedMessage};
use aliot_io::broker::StopSignal;
use askama::Template;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use futures_util::stream::{self, Stream, StreamExt as _};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use subtle::ConstantTimeEq;

use super::registry::{DeviceRef, RegisterDeviceRequest, status};
use super::things::{DeviceRequest, InvokeThingServiceRequest, SetPropertiesRequest};
use super::{ApiErrorCode, ApiState, Failure, PubRequest, RrpcRequest};
use crate::broker::BrokerStopped;

/// How long a console login lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// Logins kept at once, at most; the one closest to its end goes first.
const MAX_SESSIONS: usize = 1024;

/// The cookie that carries a login.
const COOKIE: &str = "aliot_console";

/// Devices on one page of the devices list.
const DEVICES_PER_PAGE: usize = 50;

/// Messages a device page shows.
const RECENT_MESSAGES: usize = 50;

/// How often a live stream looks for new entries, and how many it sends at most each time
/// (the rest is counted as missed: a busy broker never floods a page).
const EVENTS_EVERY: Duration = Duration::from_millis(250);
const EVENTS_PER_LOOK: usize = 100;

/// The console's logins: session id → when it ends.
#[derive(Default)]
pub(super) struct ConsoleSessions {
    ends: std::sync::Mutex<HashMap<String, Instant>>,
}

impl ConsoleSessions {
    fn open(&self) -> Option<String> {
        let mut id = [0u8; 16];
        getrandom::getrandom(&mut id).ok()?;
        let id = super::signature::hex(&id);
        let now = Instant::now();
        let mut ends = self.ends.lock().unwrap_or_else(|e| e.into_inner());
        ends.retain(|_, end| *end > now);
        if ends.len() >= MAX_SESSIONS
            && let Some(first) = ends
                .iter()
                .min_by_key(|(_, end)| **end)
                .map(|(id, _)| id.clone())
        {
            ends.remove(&first);
        }
        ends.insert(id.clone(), now + SESSION_LIFETIME);
        Some(id)
    }

    fn is_open(&self, id: &str) -> bool {
        let ends = self.ends.lock().unwrap_or_else(|e| e.into_inner());
        ends.get(id).is_some_and(|end| *end > Instant::now())
    }

    fn close(&self, id: &str) {
        self.ends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

/// The console's routes (nested at `/console` by the API's router).
pub(super) fn router() -> Router<ApiState> {
    Router::new()
        .route("/", get(products))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/devices", get(devices).post(register))
        .route("/devices/{product_key}/{device_name}", get(device))
        .route("/devices/{product_key}/{device_name}/{action}", post(act))
        .route("/live", get(live))
        .route("/debug", get(debug_page).post(debug))
        .route("/events", get(events))
        .route("/console.css", get(stylesheet))
        .route("/console.js", get(script))
}

/// Why a console request is not answered with its page.
enum Refused {
    /// Not logged in: to the login page.
    Login,
    /// A failure, shown on a page.
    Failed(Failure),
}

impl From<Failure> for Refused {
    fn from(failure: Failure) -> Self {
        Refused::Failed(failure)
    }
}

impl From<BrokerStopped> for Refused {
    fn from(stopped: BrokerStopped) -> Self {
        Refused::Failed(stopped.into())
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::Login => Redirect::to("/console/login").into_response(),
            Refused::Failed(failure) => {
                let page = ErrorPage {
                    nav: Nav::default(),
                    code: failure.code.name(),
                    message: failure.message,
                };
                (failure.code.status(), render(&page)).into_response()
            }
        }
    }
}

fn render(page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(error) => {
            tracing::error!(%error, "a console page did not render");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page did not render").into_response()
        }
    }
}

impl ApiState {
    /// Whether the console asks for a login at all: as the API, only when it has a token.
    fn console_is_open(&self) -> bool {
        self.token.is_none()
    }

    /// Lets the request through if it may look: an open console, the bearer token, or a
    /// login's cookie.
    fn console_viewer(&self, headers: &HeaderMap) -> Result<(), Refused> {
        if self.console_is_open() {
            return Ok(());
        }
        if headers.contains_key(header::AUTHORIZATION) {
            return self.authorize(headers).map_err(Refused::Failed);
        }
        match session_cookie(headers) {
            Some(id) if self.console_sessions.is_open(id) => Ok(()),
            _ => Err(Refused::Login),
        }
    }

    /// As [`console_viewer`](Self::console_viewer), for a form that changes something: it must
    /// also come from the console's own origin ([`same_origin`]).
    fn console_actor(&self, headers: &HeaderMap) -> Result<(), Refused> {
        self.console_viewer(headers)?;
        same_origin(headers)
    }

    /// The headers an API handler takes from the console: its login stands for the token.
    fn console_api_headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(token) = &self.token
            && let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}"))
        {
            headers.insert(header::AUTHORIZATION, value);
        }
        headers
    }

    /// Calls the API's handler for an operation with `request` as its JSON body, as a caller
    /// of the API would, and gives its answer as JSON.
    async fn call_api<Request, Answer, Handler, Called>(
        &self,
        handler: Handler,
        request: &Request,
    ) -> Result<Value, Failure>
    where
        Request: Serialize,
        Answer: Serialize,
        Handler: FnOnce(State<ApiState>, HeaderMap, Result<Bytes, BytesRejection>) -> Called,
        Called: Future<Output = Result<axum::Json<Answer>, Failure>>,
    {
        let body = serde_json::to_vec(request).map_err(|error| {
            Failure::new(
                ApiErrorCode::InvalidJson,
                format!("invalid request: {error}"),
            )
        })?;
        let headers = self.console_api_headers();
        let axum::Json(answer) =
            handler(State(self.clone()), headers, Ok(Bytes::from(body))).await?;
        serde_json::to_value(answer).map_err(|error| {
            Failure::new(
                ApiErrorCode::InvalidJson,
                format!("invalid answer: {error}"),
            )
        })
    }
}

/// Refuses a form another site made a browser send: its `Origin` names another host than
/// the one the request went to, or, without an `Origin`, the browser's `Sec-Fetch-Site` says
/// `cross-site`. A request from a program (curl) has neither and passes.
fn same_origin(headers: &HeaderMap) -> Result<(), Refused> {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let host = text(header::HOST);
    let refused = |from: &str| {
        Err(Refused::Failed(Failure::new(
            ApiErrorCode::Unauthorized,
            format!("a console form sent from another site ({from}) is refused"),
        )))
    };
    match text(header::ORIGIN) {
        Some(origin) => {
            let ours = host.is_some_and(|host| {
                origin
                    .split_once("://")
                    .is_some_and(|(_, authority)| authority == host)
            });
            if ours { Ok(()) } else { refused(origin) }
        }
        None if text(header::HeaderName::from_static("sec-fetch-site")) == Some("cross-site") => {
            refused("Sec-Fetch-Site: cross-site")
        }
        None => Ok(()),
    }
}

/// The id of the console login in the request's cookies.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|cookies| cookies.split(';'))
        .find_map(|cookie| {
            let (name, value) = cookie.trim().split_once('=')?;
            (name == COOKIE).then_some(value)
        })
}

/// What every page's header shows.
#[derive(Default)]
struct Nav {
    /// Whether there is a login to end.
    logout: bool,
}

impl Nav {
    fn of(state: &ApiState) -> Self {
        Nav {
            logout: !state.console_is_open(),
        }
    }
}

/// `dd hh:mm:ss` style time of a wall clock reading, UTC.
fn when(at: Option<aliot_services::UnixMillis>) -> String {
    match at {
        Some(at) if at.0 > 0 => at.utc_text(),
        _ => String::new(),
    }
}

// ---- Login ----

#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginPage {
    nav: Nav,
    error: Option<String>,
    access_keys: bool,
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    access_key_id: String,
    #[serde(default)]
    access_key_secret: String,
}

async fn login_page(State(state): State<ApiState>) -> Response {
    render(&LoginPage {
        nav: Nav::default(),
        error: None,
        access_keys: !state.access_keys.current().is_empty(),
    })
}

async fn login(State(state): State<ApiState>, Form(form): Form<LoginForm>) -> Response {
    let by_token = !form.token.is_empty()
        && state
            .token
            .as_ref()
            .is_some_and(|token| bool::from(form.token.as_bytes().ct_eq(token.as_bytes())));
    let by_access_key = !form.access_key_id.is_empty()
        && state.access_keys.current().iter().any(|key| {
            key.id == form.access_key_id
                && bool::from(
                    key.secret
                        .as_bytes()
                        .ct_eq(form.access_key_secret.as_bytes()),
                )
        });
    if state.console_is_open() || !(by_token || by_access_key) {
        let error = if state.console_is_open() {
            "this console needs no login".to_owned()
        } else {
            "neither the token nor an AccessKey of this broker".to_owned()
        };
        let page = LoginPage {
            nav: Nav::default(),
            error: Some(error),
            access_keys: !state.access_keys.current().is_empty(),
        };
        return (StatusCode::UNAUTHORIZED, render(&page)).into_response();
    }
    let Some(id) = state.console_sessions.open() else {
        return Refused::Failed(Failure::new(
            ApiErrorCode::Unauthorized,
            "the operating system gave no random bytes for a login",
        ))
        .into_response();
    };
    let cookie = format!(
        "{COOKIE}={id}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_LIFETIME.as_secs()
    );
    let mut response = Redirect::to("/console").into_response();
    if let Ok(cookie) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

async fn logout(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    if let Err(refused) = same_origin(&headers) {
        return refused.into_response();
    }
    if let Some(id) = session_cookie(&headers) {
        state.console_sessions.close(id);
    }
    let mut response = Redirect::to("/console/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("aliot_console=; Path=/console; HttpOnly; Max-Age=0"),
    );
    response
}

// ---- Products ----

struct ProductRow {
    key: String,
    name: String,
    description: String,
    categories: Vec<(String, String)>,
    devices: usize,
    dynamic_registration: bool,
}

#[derive(Template)]
#[template(path = "console/products.html")]
struct ProductsPage {
    nav: Nav,
    products: Vec<ProductRow>,
    connections: usize,
    sessions: usize,
    messages_in: u64,
    messages_out: u64,
    registry: bool,
}

async fn products(State(state): State<ApiState>, headers: HeaderMap) -> Result<Response, Refused> {
    state.console_viewer(&headers)?;
    let stats = state.handle.stats().await;
    let registry = state.handle.registry();
    let products = registry.map_or_else(Vec::new, |registry| {
        registry
            .products()
            .into_iter()
            .map(|product| ProductRow {
                devices: registry.product_devices(&product.key),
                key: product.key,
                name: product.name,
                description: product.description.unwrap_or_default(),
                categories: product.categories,
                dynamic_registration: product.dynamic_registration,
            })
            .collect()
    });
    Ok(render(&ProductsPage {
        nav: Nav::of(&state),
        products,
        connections: stats.connections,
        sessions: stats.sessions,
        messages_in: stats.counters.messages_in,
        messages_out: stats.counters.messages_out,
        registry: registry.is_some(),
    }))
}

// ---- Devices ----

#[derive(Deserialize, Default)]
struct DevicesQuery {
    #[serde(default)]
    product: String,
    #[serde(default)]
    q: String,
    #[serde(default)]
    page: Option<usize>,
}

struct DeviceRow {
    product_key: String,
    name: String,
    nickname: String,
    status: &'static str,
    last_seen: String,
    client_ip: String,
}

#[derive(Template)]
#[template(path = "console/devices.html")]
struct DevicesPage {
    nav: Nav,
    products: Vec<String>,
    product: String,
    q: String,
    page: usize,
    pages: usize,
    total: usize,
    rows: Vec<DeviceRow>,
    /// The trace's position when the page was made: its live part follows from there.
    after: u64,
}

fn last_seen(presence: Option<&DevicePresence>) -> String {
    match presence {
        Some(p) if p.online => when(p.online_since),
        Some(p) => when(p.offline_since.or(p.online_since)),
        None => String::new(),
    }
}

async fn devices(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(query): Query<DevicesQuery>,
) -> Result<Response, Refused> {
    state.console_viewer(&headers)?;
    let registry = state.registry()?;
    let page = query.page.unwrap_or(1).max(1);
    let product = (!query.product.is_empty()).then_some(query.product.as_str());
    let (found, total) = registry.device_page(
        product,
        query.q.trim(),
        (page - 1).saturating_mul(DEVICES_PER_PAGE),
        DEVICES_PER_PAGE,
    );
    let identities: Vec<DeviceIdentity> = found.iter().map(|d| d.identity.clone()).collect();
    let (seen, after) = state
        .handle
        .call_hub(move |hub, _| {
            let seen = identities
                .iter()
                .map(|identity| (hub.is_online(identity), hub.device_presence(identity)))
                .collect::<Vec<_>>();
            (seen, hub.trace_last_seq())
        })
        .await?;
    let rows = found
        .iter()
        .zip(seen)
        .map(|(device, (online, presence))| DeviceRow {
            product_key: device.identity.product_key.clone(),
            name: device.identity.device_name.clone(),
            nickname: device.nickname.clone().unwrap_or_default(),
            status: status(device, online),
            last_seen: last_seen(presence.as_ref()),
            client_ip: presence
                .and_then(|p| p.client_ip)
                .map(|ip| ip.to_string())
                .unwrap_or_default(),
        })
        .collect();
    Ok(render(&DevicesPage {
        nav: Nav::of(&state),
        products: registry.products().into_iter().map(|p| p.key).collect(),
        product: query.product,
        q: query.q,
        page,
        pages: total.div_ceil(DEVICES_PER_PAGE).max(1),
        total,
        rows,
        after,
    }))
}

#[derive(Deserialize)]
struct RegisterForm {
    product_key: String,
    #[serde(default)]
    device_name: String,
    #[serde(default)]
    nickname: String,
}

#[derive(Template)]
#[template(path = "console/registered.html")]
struct RegisteredPage {
    nav: Nav,
    product_key: String,
    device_name: String,
    device_secret: String,
    iot_id: String,
}

/// `POST /console/devices`: registers a device through the API's `RegisterDevice`, and shows
/// its secret this once.
async fn register(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Form(form): Form<RegisterForm>,
) -> Result<Response, Refused> {
    state.console_actor(&headers)?;
    let request = RegisterDeviceRequest {
        product_key: form.product_key,
        device_name: Some(form.device_name.trim().to_owned()).filter(|name| !name.is_empty()),
        nickname: Some(form.nickname.trim().to_owned()).filter(|name| !name.is_empty()),
    };
    let answer = state
        .call_api(super::registry::register_device, &request)
        .await?;
    let field = |name: &str| answer["Data"][name].as_str().unwrap_or_default().to_owned();
    let mut response = render(&RegisteredPage {
        nav: Nav::of(&state),
        product_key: field("ProductKey"),
        device_name: field("DeviceName"),
        device_secret: field("DeviceSecret"),
        iot_id: field("IotId"),
    });
    // The secret is on this page only: not kept by the browser either.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

// ---- A device ----

struct TopicRow {
    topic: String,
    permission: String,
}

struct PropertyRow {
    identifier: String,
    value: String,
    time: String,
}

struct OtaRow {
    module: String,
    version: String,
    job: String,
}

struct MessageRow {
    time: String,
    direction: &'static str,
    topic: String,
    payload: String,
}

#[derive(Template)]
#[template(path = "console/device.html")]
struct DevicePage {
    nav: Nav,
    product_key: String,
    name: String,
    nickname: String,
    iot_id: String,
    status: &'static str,
    disabled: bool,
    last_seen: String,
    client_ip: String,
    created: String,
    activated: String,
    topics: Vec<TopicRow>,
    properties: Vec<PropertyRow>,
    shadow: String,
    ota: Vec<OtaRow>,
    gateway: Option<String>,
    sub_devices: Vec<String>,
    messages: Vec<MessageRow>,
    done: String,
    /// The trace's position when the page was made.
    after: u64,
}

#[derive(Deserialize, Default)]
struct DoneQuery {
    #[serde(default)]
    done: String,
}

fn direction_text(direction: TraceDirection) -> &'static str {
    match direction {
        TraceDirection::FromClient => "in",
        TraceDirection::ToClient => "out",
        TraceDirection::Connected => "online",
        TraceDirection::Disconnected => "offline",
    }
}

/// A payload as text when it is UTF-8, else as base64; `…` when it was cut.
fn payload_text(entry: &TracedMessage) -> String {
    let mut text = match std::str::from_utf8(&entry.payload) {
        Ok(text) => text.to_owned(),
        // Text cut inside a character where the trace's copy ends: the text before it.
        Err(error) if error.error_len().is_none() => {
            String::from_utf8_lossy(&entry.payload[..error.valid_up_to()]).into_owned()
        }
        Err(_) => format!(
            "base64:{}",
            base64::engine::general_purpose::STANDARD.encode(&entry.payload)
        ),
    };
    if entry.payload_len > entry.payload.len() {
        let _ = write!(text, "… ({} bytes)", entry.payload_len);
    }
    text
}

/// The entry's topic, empty for a connect or a disconnect.
fn topic_text(entry: &TracedMessage) -> String {
    entry
        .topic
        .as_ref()
        .map(|t| t.as_str().to_owned())
        .unwrap_or_default()
}

fn client_text(entry: &TracedMessage) -> String {
    match &*entry.client {
        aliot_core::ClientKey::Device(device) => device.to_string(),
        aliot_core::ClientKey::Client(id) => id.clone(),
        aliot_core::ClientKey::Anonymous => "(anonymous)".to_owned(),
    }
}

fn message_row(entry: &TracedMessage) -> MessageRow {
    MessageRow {
        time: when(Some(entry.at)),
        direction: direction_text(entry.direction),
        topic: topic_text(entry),
        payload: payload_text(entry),
    }
}

async fn device(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path((product_key, device_name)): Path<(String, String)>,
    Query(done): Query<DoneQuery>,
) -> Result<Response, Refused> {
    state.console_viewer(&headers)?;
    let registry = state.registry()?;
    let identity = DeviceIdentity::new(&product_key, &device_name);
    let device = registry.device(&identity).ok_or_else(|| {
        Failure::new(
            ApiErrorCode::DeviceNotFound,
            format!("device {identity} is not registered"),
        )
    })?;
    let topics = registry
        .product_categories(&product_key)
        .map(|categories| {
            categories
                .iter()
                .map(|category| TopicRow {
                    topic: category.fill(&product_key, &device_name),
                    permission: category.permission().to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    let asked = DeviceRequest {
        product_key: product_key.clone(),
        device_name: device_name.clone(),
    };
    let properties = state
        .call_api(super::things::query_device_property_status, &asked)
        .await?;
    let properties = properties["Data"]["List"]["PropertyStatusInfo"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|item| PropertyRow {
                    identifier: item["Identifier"].as_str().unwrap_or_default().to_owned(),
                    value: item["Value"].as_str().unwrap_or_default().to_owned(),
                    time: item["Time"]
                        .as_str()
                        .and_then(|t| t.parse().ok())
                        .map(|t| when(Some(aliot_services::UnixMillis(t))))
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default();
    let shadow = state
        .call_api(super::things::get_device_shadow, &asked)
        .await?;
    let shadow = shadow["ShadowMessage"]
        .as_str()
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
        // Version 0: nothing was ever written to it.
        .filter(|doc| doc["version"].as_u64() != Some(0))
        .and_then(|doc| serde_json::to_string_pretty(&doc).ok())
        .unwrap_or_default();
    let filter = TraceFilter {
        product_key: Some(product_key.clone()),
        device_name: Some(device_name.clone()),
        statuses_only: false,
    };
    let of = identity.clone();
    let (online, presence, ota, messages, after) = state
        .handle
        .call_hub(move |hub, _| {
            let ota: Vec<OtaRow> = hub
                .device_state(&of)
                .map(|state| {
                    state
                        .ota_modules()
                        .map(|(module, ota)| OtaRow {
                            module: module.to_owned(),
                            version: ota.version.clone().unwrap_or_default(),
                            job: match (&ota.job, ota.last_outcome) {
                                (Some(job), _) => format!("upgrading to {}", job.version),
                                (None, Some(true)) => "last upgrade done".to_owned(),
                                (None, Some(false)) => "last upgrade failed".to_owned(),
                                (None, None) => String::new(),
                            },
                        })
                        .collect()
                })
                .unwrap_or_default();
            (
                hub.is_online(&of),
                hub.device_presence(&of),
                ota,
                hub.trace_latest(&filter, RECENT_MESSAGES),
                hub.trace_last_seq(),
            )
        })
        .await?;
    let page = DevicePage {
        nav: Nav::of(&state),
        nickname: device.nickname.clone().unwrap_or_default(),
        iot_id: device.iot_id.clone(),
        status: status(&device, online),
        disabled: device.disabled,
        last_seen: last_seen(presence.as_ref()),
        client_ip: presence
            .and_then(|p| p.client_ip)
            .map(|ip| ip.to_string())
            .unwrap_or_default(),
        created: when(Some(device.created)),
        activated: when(device.activated),
        topics,
        properties,
        shadow,
        ota,
        gateway: device.gateway.as_ref().map(|g| g.to_string()),
        sub_devices: registry
            .topology(&identity)
            .iter()
            .map(|d| d.to_string())
            .collect(),
        messages: messages.iter().rev().map(message_row).collect(),
        done: done.done,
        after,
        product_key,
        name: device_name,
    };
    Ok(render(&page))
}

/// `POST /console/devices/{pk}/{dn}/{action}`: `disable`, `enable`, `reset` or `delete`,
/// through the API's `DisableThing`, `EnableThing`, `ResetThing` and `DeleteDevice`.
async fn act(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path((product_key, device_name, action)): Path<(String, String, String)>,
) -> Result<Response, Refused> {
    state.console_actor(&headers)?;
    let request = DeviceRef {
        product_key: Some(product_key.clone()),
        device_name: Some(device_name.clone()),
        iot_id: None,
    };
    match action.as_str() {
        "disable" => {
            state
                .call_api(super::registry::disable_thing, &request)
                .await?
        }
        "enable" => {
            state
                .call_api(super::registry::enable_thing, &request)
                .await?
        }
        "reset" => {
            state
                .call_api(super::registry::reset_thing, &request)
                .await?
        }
        "delete" => {
            state
                .call_api(super::registry::delete_device, &request)
                .await?
        }
        other => {
            return Err(Failure::new(
                ApiErrorCode::NotFound,
                format!("no action {other:?}: there are disable, enable, reset and delete"),
            )
            .into());
        }
    };
    let back = if action == "delete" {
        format!("/console/devices?product={}", urlencode(&product_key))
    } else {
        format!(
            "/console/devices/{}/{}?done={action}",
            urlencode(&product_key),
            urlencode(&device_name)
        )
    };
    Ok(Redirect::to(&back).into_response())
}

/// `text` as one segment of a URL's path, or as a query value: everything but letters,
/// digits and `-._~` percent-encoded (a space is `%20`, never `+`, which a path keeps).
fn urlencode(text: &str) -> String {
    const RESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(text, RESERVED).to_string()
}

// ---- Live messages ----

#[derive(Deserialize, Default)]
struct LiveQuery {
    #[serde(default)]
    product: String,
    #[serde(default)]
    device: String,
}

#[derive(Template)]
#[template(path = "console/live.html")]
struct LivePage {
    nav: Nav,
    product: String,
    device: String,
    on: bool,
    /// The trace's position when the page was made.
    after: u64,
}

async fn live(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(query): Query<LiveQuery>,
) -> Result<Response, Refused> {
    state.console_viewer(&headers)?;
    let (on, after) = state
        .handle
        .call_hub(|hub, _| (hub.config().trace_capacity > 0, hub.trace_last_seq()))
        .await?;
    Ok(render(&LivePage {
        nav: Nav::of(&state),
        product: query.product,
        device: query.device,
        on,
        after,
    }))
}

#[derive(Deserialize, Default)]
struct EventsQuery {
    #[serde(default)]
    product: String,
    #[serde(default)]
    device: String,
    /// `1`: connects and disconnects only.
    #[serde(default)]
    statuses: String,
    /// The trace's position the page was rendered at: the stream starts after it.
    #[serde(default)]
    after: Option<u64>,
}

/// One entry as the page's script reads it.
#[derive(Serialize)]
struct EventEntry {
    seq: u64,
    time: String,
    direction: &'static str,
    product_key: String,
    device_name: String,
    client: String,
    topic: String,
    payload: String,
}

/// What one event of the stream carries (its SSE `id` is `last_seq`).
#[derive(Serialize)]
struct EventBatch {
    entries: Vec<EventEntry>,
    /// Entries that passed the filter and were not sent (more than a look sends).
    missed: u64,
    /// Entries of the whole broker that left the trace before the stream looked (any filter).
    lost: u64,
    #[serde(skip)]
    last_seq: u64,
}

/// `GET /console/events`: the trace as Server-Sent Events, from now on, each event a batch of
/// at most [`EVENTS_PER_LOOK`] entries and how many passed by unsent. The stream ends when
/// the broker stops.
async fn events(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(query): Query<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Refused> {
    state.console_viewer(&headers)?;
    let filter = TraceFilter {
        product_key: Some(query.product).filter(|p| !p.is_empty()),
        device_name: Some(query.device).filter(|d| !d.is_empty()),
        statuses_only: query.statuses == "1",
    };
    // From where the page left off: the last entry the stream sent before it reconnected
    // (`Last-Event-ID`), else the trace's position when the page was rendered (`after`), else
    // now. A position the trace has not reached (a broker restarted since) means now.
    let asked = headers
        .get("last-event-id")
        .and_then(|id| id.to_str().ok()?.parse::<u64>().ok())
        .or(query.after);
    let start = state.handle.call_hub(|hub, _| hub.trace_last_seq()).await?;
    let start = asked.filter(|asked| *asked <= start).unwrap_or(start);
    // A stream opened with a login's cookie ends when the login does.
    let login = (!state.console_is_open() && !headers.contains_key(header::AUTHORIZATION))
        .then(|| session_cookie(&headers).map(str::to_owned))
        .flatten();
    let sessions = Arc::clone(&state.console_sessions);
    let handle = state.handle.clone();
    let batches = stream::unfold((handle, start), move |(handle, after)| {
        let filter = filter.clone();
        let open = login.as_deref().is_none_or(|id| sessions.is_open(id));
        async move {
            if !open {
                return None;
            }
            tokio::time::sleep(EVENTS_EVERY).await;
            let page = handle
                .call_hub(move |hub, _| hub.trace_after(after, &filter, EVENTS_PER_LOOK))
                .await
                .ok()?;
            let batch = EventBatch {
                entries: page.entries.iter().map(EventEntry::of).collect(),
                missed: page.missed,
                lost: page.lost,
                last_seq: page.last_seq,
            };
            Some((batch, (handle, page.last_seq)))
        }
    })
    .filter(|batch| {
        std::future::ready(!batch.entries.is_empty() || batch.missed > 0 || batch.lost > 0)
    })
    .map(|batch| {
        let event = Event::default().id(batch.last_seq.to_string());
        Ok::<_, Infallible>(
            event
                .json_data(&batch)
                .unwrap_or_else(|_| Event::default().comment("unencodable")),
        )
    });
    let stop = state.stop.clone();
    let until_stopped = batches.take_until(async move {
        match stop {
            Some(stop) => StopSignal::raised(stop).await,
            None => std::future::pending().await,
        }
    });
    Ok(Sse::new(until_stopped).keep_alive(KeepAlive::default()))
}

impl EventEntry {
    fn of(entry: &TracedMessage) -> Self {
        let (product_key, device_name) = entry
            .device()
            .map(|d| (d.product_key.to_string(), d.device_name.to_string()))
            .unwrap_or_default();
        EventEntry {
            seq: entry.seq,
            time: when(Some(entry.at)),
            direction: direction_text(entry.direction),
            product_key,
            device_name,
            client: client_text(entry),
            topic: topic_text(entry),
            payload: payload_text(entry),
        }
    }
}

// ---- Debugging ----

#[derive(Deserialize, Default)]
struct DebugForm {
    #[serde(default)]
    product: String,
    #[serde(default)]
    device: String,
    /// `publish`, `property`, `service` or `rrpc`.
    #[serde(default)]
    action: String,
    #[serde(default)]
    topic: String,
    #[serde(default)]
    payload: String,
    #[serde(default)]
    qos: u8,
    #[serde(default)]
    identifier: String,
    /// Milliseconds, as typed (empty: 5,000).
    #[serde(default)]
    timeout_ms: String,
}

#[derive(Template)]
#[template(path = "console/debug.html")]
struct DebugPage {
    nav: Nav,
    form: DebugForm,
    /// The outcome's code (`SUCCESS`, `OFFLINE`, an error code, ...), and what came with it.
    outcome: Option<(String, String)>,
    failed: bool,
}

async fn debug_page(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(form): Query<DebugForm>,
) -> Result<Response, Refused> {
    state.console_viewer(&headers)?;
    let form = DebugForm {
        action: if form.action.is_empty() {
            "publish".to_owned()
        } else {
            form.action
        },
        ..form
    };
    Ok(render(&DebugPage {
        nav: Nav::of(&state),
        form,
        outcome: None,
        failed: false,
    }))
}

/// `POST /console/debug`: one call through the API (`Pub`, `SetDeviceProperty`,
/// `InvokeThingService` synchronously, or `RRpc`), shown with its outcome.
async fn debug(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Form(form): Form<DebugForm>,
) -> Result<Response, Refused> {
    state.console_actor(&headers)?;
    let base64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    let timeout = match form.timeout_ms.trim() {
        "" => 5_000,
        typed => typed.parse().map_err(|_| {
            Failure::new(
                ApiErrorCode::InvalidTimeout,
                format!("the timeout {typed:?} is not a number of milliseconds"),
            )
        })?,
    };
    let answer = match form.action.as_str() {
        "publish" => {
            state
                .call_api(
                    super::publish,
                    &PubRequest {
                        product_key: form.product.clone(),
                        topic_full_name: form.topic.clone(),
                        message_content: base64(&form.payload),
                        qos: form.qos,
                    },
                )
                .await
        }
        "property" => {
            state
                .call_api(
                    super::things::set_device_property,
                    &SetPropertiesRequest {
                        product_key: form.product.clone(),
                        device_name: form.device.clone(),
                        items: form.payload.clone(),
                    },
                )
                .await
        }
        "service" => {
            state
                .call_api(
                    super::things::invoke_thing_service,
                    &InvokeThingServiceRequest {
                        product_key: form.product.clone(),
                        device_name: form.device.clone(),
                        identifier: form.identifier.clone(),
                        args: Some(form.payload.clone()).filter(|args| !args.is_empty()),
                        sync: true,
                        timeout: Some(timeout),
                    },
                )
                .await
        }
        "rrpc" => {
            state
                .call_api(
                    super::rrpc,
                    &RrpcRequest {
                        product_key: form.product.clone(),
                        device_name: form.device.clone(),
                        request_base64_byte: base64(&form.payload),
                        timeout,
                        topic: Some(form.topic.clone()).filter(|topic| !topic.is_empty()),
                    },
                )
                .await
        }
        other => Err(Failure::new(
            ApiErrorCode::NotFound,
            format!("no debugging action {other:?}: there are publish, property, service and rrpc"),
        )),
    };
    let (outcome, failed, status) = match answer {
        Ok(answer) => (debug_outcome(&form.action, &answer), false, StatusCode::OK),
        Err(failure) => (
            (failure.code.name().to_owned(), failure.message),
            true,
            failure.code.status(),
        ),
    };
    let page = DebugPage {
        nav: Nav::of(&state),
        form,
        outcome: Some(outcome),
        failed,
    };
    Ok((status, render(&page)).into_response())
}

/// The code and details of a debugging call that went through.
fn debug_outcome(action: &str, answer: &Value) -> (String, String) {
    let pretty = serde_json::to_string_pretty(answer).unwrap_or_default();
    let code = match action {
        "rrpc" => answer["RrpcCode"].as_str().unwrap_or("UNKNOWN").to_owned(),
        "service" => answer["Data"]["Code"]
            .as_i64()
            .map_or_else(|| "SENT".to_owned(), |code| format!("code {code}")),
        "publish" => format!(
            "SENT to {} subscriber(s)",
            answer["Subscribers"].as_u64().unwrap_or(0)
        ),
        _ => "SENT".to_owned(),
    };
    let details = match action {
        "rrpc" => answer["PayloadBase64Byte"]
            .as_str()
            .and_then(|reply| base64::engine::general_purpose::STANDARD.decode(reply).ok())
            .map(|reply| String::from_utf8_lossy(&reply).into_owned())
            .map_or(pretty.clone(), |reply| {
                format!("reply: {reply}\n\n{pretty}")
            }),
        _ => pretty,
    };
    (code, details)
}

// ---- Assets ----

async fn stylesheet() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../../templates/console/console.css"),
    )
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../templates/console/console.js"),
    )
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage {
    nav: Nav,
    code: &'static str,
    message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; aliot_console=abc123; other=1"),
        );
        assert_eq!(session_cookie(&headers), Some("abc123"));
        headers.insert(header::COOKIE, HeaderValue::from_static("aliot_consolex=1"));
        assert_eq!(session_cookie(&headers), None);
    }

    #[test]
    fn sessions_open_with_random_ids_and_close() {
        let sessions = ConsoleSessions::default();
        let a = sessions.open().unwrap();
        let b = sessions.open().unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(sessions.is_open(&a));
        sessions.close(&a);
        assert!(!sessions.is_open(&a));
        assert!(sessions.is_open(&b));
        assert!(!sessions.is_open("not-an-id"));
    }
}
