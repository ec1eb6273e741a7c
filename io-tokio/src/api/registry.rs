//! The registry's operations: products and devices made, read, disabled, enabled, reset and
//! deleted, under the platform's action names and field names. Each change runs on the hub task
//! (its effect on a device's connection and session happens there) and is answered once the
//! store has committed it.

use aliot_auth::DeviceIdentity;
use aliot_core::hub::durable::{ProductRecord, RegisteredDevice};
use aliot_io::registry::{Registry, RegistryError};
use aliot_services::UnixMillis;
use aliot_services::forward::LifecycleAction;
use aliot_services::gateway::{ProofSpelling, TopologyChange, read_proof};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};

use super::{ApiErrorCode, ApiState, Failure, parse_body};
use crate::broker::BrokerStopped;

/// The body of `CreateProduct`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateProductRequest {
    /// The product's name (1–40 characters).
    pub product_name: String,
    /// Its description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The platform's node type (0: device, 1: gateway); kept as given, 0 by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_type: Option<i64>,
}

/// The body of the actions that name a product.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProductRequest {
    /// The product.
    pub product_key: String,
}

/// The body of the paged lists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PageRequest {
    /// The product, for a list of its devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_key: Option<String>,
    /// The page, from 1 (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_page: Option<u64>,
    /// Items per page, 1–200 (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_size: Option<u64>,
}

/// The body of `RegisterDevice`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RegisterDeviceRequest {
    /// The product.
    pub product_key: String,
    /// The name (4–32 characters); generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
    /// A nickname.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nickname: Option<String>,
}

/// The body of the actions on one device: `ProductKey` and `DeviceName`, or `IotId`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeviceRef {
    /// The product.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_key: Option<String>,
    /// The device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
    /// The device's `IotId`, instead of the two.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iot_id: Option<String>,
}

/// The body of `BatchGetDeviceState` (the OpenAPI's `DeviceName.N`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BatchDevicesRequest {
    /// The product.
    pub product_key: String,
    /// The devices.
    #[serde(default)]
    pub device_name: Vec<String>,
}

fn registry_failure(error: RegistryError) -> Failure {
    let code = match &error {
        RegistryError::NoProduct(_) => ApiErrorCode::ProductNotFound,
        RegistryError::NoDevice(_) => ApiErrorCode::DeviceNotFound,
        RegistryError::DeviceExists(_) => ApiErrorCode::DeviceExists,
        RegistryError::ProductHasDevices(_) => ApiErrorCode::ProductHasDevices,
        RegistryError::InvalidName(_) => ApiErrorCode::InvalidName,
    };
    Failure::new(code, error.to_string())
}

impl ApiState {
    /// The broker's registry, when it has one the API may change.
    pub(super) fn registry(&self) -> Result<Registry, Failure> {
        self.handle.registry().cloned().ok_or_else(|| {
            Failure::new(
                ApiErrorCode::NoRegistry,
                "this broker's authenticator is not a registry the API may change",
            )
        })
    }

    /// The device a request names, registered.
    fn named_device(
        &self,
        registry: &Registry,
        named: &DeviceRef,
    ) -> Result<RegisteredDevice, Failure> {
        let found = match (&named.iot_id, &named.product_key, &named.device_name) {
            (Some(iot_id), _, _) => registry.device_by_iot_id(iot_id),
            (None, Some(product_key), Some(device_name)) => {
                registry.device(&DeviceIdentity::new(product_key, device_name))
            }
            _ => {
                return Err(Failure::new(
                    ApiErrorCode::InvalidName,
                    "give ProductKey and DeviceName, or IotId",
                ));
            }
        };
        found.ok_or_else(|| {
            Failure::new(
                ApiErrorCode::DeviceNotFound,
                "iot.device.NotExistedDevice: no such device",
            )
        })
    }
}

/// The wall clock now.
fn now() -> UnixMillis {
    UnixMillis(aliot_io::broker::wall_clock_ms().unwrap_or(0))
}

/// A device's status in the platform's words.
pub(super) fn status(device: &RegisteredDevice, online: bool) -> &'static str {
    if device.disabled {
        "DISABLE"
    } else if device.activated.is_none() {
        "UNACTIVE"
    } else if online {
        "ONLINE"
    } else {
        "OFFLINE"
    }
}

fn product_json(product: &ProductRecord, device_count: usize) -> serde_json::Value {
    serde_json::json!({
        "ProductKey": product.key,
        "ProductName": product.name,
        "ProductSecret": product.secret,
        "DeviceCount": device_count,
        "GmtCreate": product.created.0,
        "Description": product.description,
        "NodeType": 0,
        "DataFormat": 1,
        "DynamicRegistration": product.dynamic_registration,
    })
}

fn page_of<T: Clone>(all: &[T], request: &PageRequest) -> (Vec<T>, u64, u64, u64) {
    let size = request.page_size.unwrap_or(10).clamp(1, 200);
    let page = request.current_page.unwrap_or(1).max(1);
    let total = all.len() as u64;
    let start = usize::try_from((page - 1).saturating_mul(size)).unwrap_or(usize::MAX);
    let items = all
        .iter()
        .skip(start)
        .take(usize::try_from(size).unwrap_or(usize::MAX))
        .cloned()
        .collect();
    (items, page, size, total.div_ceil(size))
}

type Answer = Result<Json<serde_json::Value>, Failure>;

fn success(mut fields: serde_json::Value) -> Answer {
    if let Some(object) = fields.as_object_mut() {
        object.insert("Success".into(), true.into());
    }
    Ok(Json(fields))
}

pub(super) async fn create_product(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    state.authorize(&headers)?;
    let request: CreateProductRequest = parse_body(body)?;
    let registry = state.registry()?;
    let made = state
        .handle
        .call_hub(move |hub, _| {
            let (product, change) =
                registry.create_product(&request.product_name, request.description, now())?;
            hub.record_store_change(change);
            Ok::<_, RegistryError>(product)
        })
        .await?
        .map_err(registry_failure)?;
    success(serde_json::json!({
        "ProductKey": made.key,
        "Data": product_json(&made, 0),
    }))
}

pub(super) async fn query_product(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    state.authorize(&headers)?;
    let request: ProductRequest = parse_body(body)?;
    let registry = state.registry()?;
    let product = registry
        .product(&request.product_key)
        .ok_or_else(|| registry_failure(RegistryError::NoProduct(request.product_key.clone())))?;
    let devices = registry.product_devices(&product.key);
    success(serde_json::json!({ "Data": product_json(&product, devices) }))
}

pub(super) async fn query_product_list(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    state.authorize(&headers)?;
    let request: PageRequest = parse_body(body)?;
    let registry = state.registry()?;
    let all = registry.products();
    let (items, page, size, pages) = page_of(&all, &request);
    let list: Vec<serde_json::Value> = items
        .iter()
        .map(|product| product_json(product, registry.product_devices(&product.key)))
        .collect();
    success(serde_json::json!({
        "Data": {
            "CurrentPage": page,
            "PageSize": size,
            "PageCount": pages,
            "Total": all.len(),
            "List": { "ProductInfo": list },
        }
    }))
}

pub(super) async fn delete_product(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    state.authorize(&headers)?;
    let request: ProductRequest = parse_body(body)?;
    let registry = state.registry()?;
    state
        .handle
        .call_hub(move |hub, _| {
            hub.record_store_change(registry.delete_product(&request.product_key)?);
            Ok::<_, RegistryError>(())
        })
        .await?
        .map_err(registry_failure)?;
    success(serde_json::json!({}))
}

pub(super) async fn register_device(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    state.authorize(&headers)?;
    let request: RegisterDeviceRequest = parse_body(body)?;
    let registry = state.registry()?;
    let device = state
        .handle
        .call_hub(move |hub, now_instant| {
            let (device, change) = registry.register_device(
                &request.product_key,
                request.device_name.as_deref(),
                request.nickname,
                now(),
            )?;
            hub.record_store_change(change);
            hub.forward_lifecycle(&device, LifecycleAction::Create, now_instant);
            Ok::<_, RegistryError>(device)
        })
        .await?
        .map_err(registry_failure)?;
    success(serde_json::json!({
        "Data": {
            "IotId": device.iot_id,
            "ProductKey": device.identity.product_key,
            "DeviceName": device.identity.device_name,
            "DeviceSecret": device.secret,
            "Nickname": device.nickname,
        }
    }))
}

/// What the platform says of one device.
fn device_json(
    device: &RegisteredDevice,
    product_name: Option<String>,
    online: bool,
) -> serde_json::Value {
    serde_json::json!({
        "IotId": device.iot_id,
        "ProductKey": device.identity.product_key,
        "ProductName": product_name,
        "DeviceName": device.identity.device_name,
        "DeviceSecret": device.secret,
        "Nickname": device.nickname,
        "Status": status(device, online),
        "DeviceStatus": status(device, online),
        "GmtCreate": device.created.utc_text(),
        "UtcCreate": device.created.utc_text(),
        "GmtActive": device.activated.map(UnixMillis::utc_text),
        "UtcActive": device.activated.map(UnixMillis::utc_text),
        "NodeType": 0,
    })
}

pub(super) async fn query_device_detail(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    state.authorize(&headers)?;
    let request: DeviceRef = parse_body(body)?;
    let registry = state.registry()?;
    let device = state.named_device(&registry, &request)?;
    let identity = device.identity.clone();
    let online = state
        .handle
        .call_hub(move |hub, _| hub.is_online(&identity))
        .await?;
    let product_name = registry
        .product(&device.identity.product_key)
        .map(|product| product.name);
    success(serde_json::json!({ "Data": device_json(&device, product_name, online) }))
}

pub(super) async fn query_device(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    state.authorize(&headers)?;
    let request: PageRequest = parse_body(body)?;
    let registry = state.registry()?;
    let product_key = request.product_key.clone().unwrap_or_default();
    let product = registry
        .product(&product_key)
        .ok_or_else(|| registry_failure(RegistryError::NoProduct(product_key.clone())))?;
    let all = registry.devices_of(&product_key);
    let (items, page, size, pages) = page_of(&all, &request);
    let identities: Vec<DeviceIdentity> = items.iter().map(|d| d.identity.clone()).collect();
    let online = state
        .handle
        .call_hub(move |hub, _| {
            identities
                .iter()
                .map(|identity| hub.is_online(identity))
                .collect::<Vec<bool>>()
        })
        .await?;
    let list: Vec<serde_json::Value> = items
        .iter()
        .zip(online)
        .map(|(device, online)| device_json(device, Some(product.name.clone()), online))
        .collect();
    success(serde_json::json!({
        "Data": { "DeviceInfo": list },
        "Total": all.len(),
        "PageSize": size,
        "PageCount": pages,
        "Page": page,
    }))
}

/// The body of `GetThingTopo`: the gateway (`ProductKey` and `DeviceName`, or `IotId`) and
/// the page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TopologyPageRequest {
    /// The gateway's product.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_key: Option<String>,
    /// The gateway's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
    /// The gateway's `IotId`, instead of the two. (Not a flattened [`DeviceRef`]: the
    /// OpenAPI's parameters are text, which a flattened struct's numbers cannot be read from.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iot_id: Option<String>,
    /// The page, from 1 (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_no: Option<u64>,
    /// Items per page, 1–50 (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_size: Option<u64>,
}

/// The body of `AddThingTopo`: the gateway and, as a JSON array in a string, each sub-device's
/// proof `{"ProductKey","DeviceName","ClientId","Timestamp","SignMethod","Sign"}` (the same
/// proof as the gateway's `thing/topo/add`, made with the sub-device's secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AddTopologyRequest {
    /// The gateway's product.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw_product_key: Option<String>,
    /// The gateway's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw_device_name: Option<String>,
    /// The gateway's `IotId`, instead of the two.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw_iot_id: Option<String>,
    /// The sub-devices' proofs, a JSON array as a string.
    pub topo_info: String,
}

impl TopologyPageRequest {
    /// The gateway it names.
    fn gateway(&self) -> DeviceRef {
        DeviceRef {
            product_key: self.product_key.clone(),
            device_name: self.device_name.clone(),
            iot_id: self.iot_id.clone(),
        }
    }
}

impl AddTopologyRequest {
    /// The gateway it names.
    fn gateway(&self) -> DeviceRef {
        DeviceRef {
            product_key: self.gw_product_key.clone(),
            device_name: self.gw_device_name.clone(),
            iot_id: self.gw_iot_id.clone(),
        }
    }
}

pub(super) async fn get_thing_topo(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    state.authorize(&headers)?;
    let request: TopologyPageRequest = parse_body(body)?;
    let registry = state.registry()?;
    let gateway = state.named_device(&registry, &request.gateway())?;
    let subs: Vec<RegisteredDevice> = registry
        .topology(&gateway.identity)
        .iter()
        .filter_map(|sub| registry.device(sub))
        .collect();
    let paging = PageRequest {
        product_key: None,
        current_page: request.page_no,
        page_size: Some(request.page_size.unwrap_or(10).clamp(1, 50)),
    };
    let (items, page, size, pages) = page_of(&subs, &paging);
    let list: Vec<serde_json::Value> = items
        .iter()
        .map(|sub| {
            serde_json::json!({
                "ProductKey": sub.identity.product_key,
                "DeviceName": sub.identity.device_name,
                "IotId": sub.iot_id,
            })
        })
        .collect();
    success(serde_json::json!({
        "Data": {
            "CurrentPage": page,
            "PageSize": size,
            "PageCount": pages,
            "Total": subs.len(),
            "List": { "deviceInfo": list },
        },
    }))
}

pub(super) async fn add_thing_topo(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    state.authorize(&headers)?;
    let request: AddTopologyRequest = parse_body(body)?;
    let registry = state.registry()?;
    let gateway_device = state.named_device(&registry, &request.gateway())?;
    let gateway = gateway_device.identity;
    let invalid = |message: String| Failure::new(ApiErrorCode::InvalidName, message);
    let entries: Vec<serde_json::Value> = serde_json::from_str(&request.topo_info)
        .map_err(|error| invalid(format!("TopoInfo is not a JSON array: {error}")))?;
    if entries.is_empty() || entries.len() > aliot_services::gateway::MAX_TOPO_ADD {
        return Err(invalid(format!(
            "TopoInfo must list 1 to {} sub-devices",
            aliot_services::gateway::MAX_TOPO_ADD
        )));
    }
    let mut subs = Vec::with_capacity(entries.len());
    for entry in &entries {
        let proof = read_proof(entry, ProofSpelling::OpenApi).map_err(|_| {
            invalid(format!(
                "TopoInfo entry is not a sub-device's proof (ProductKey, DeviceName, ClientId, \
                 Timestamp, SignMethod hmacSha1|hmacSha256|hmacMd5, Sign in hex): {entry}"
            ))
        })?;
        let sub = proof.identity().clone();
        let device = registry
            .device(&sub)
            .ok_or_else(|| registry_failure(RegistryError::NoDevice(sub.clone())))?;
        if !proof.matches(device.secret.as_bytes()) {
            return Err(Failure::new(
                ApiErrorCode::InvalidSign,
                format!("the sign for {sub} is not its secret's"),
            ));
        }
        subs.push((sub, device.iot_id));
    }
    state
        .handle
        .call_hub(move |hub, now| {
            for (sub, _) in &subs {
                if let Some(change) = registry.add_to_topology(&gateway, sub)? {
                    hub.record_store_change(change);
                }
            }
            let gateway_iot_id = gateway_device.iot_id.as_str();
            hub.forward_topology(
                (&gateway, gateway_iot_id),
                TopologyChange::Added,
                &subs,
                now,
            );
            let subs: Vec<DeviceIdentity> = subs.into_iter().map(|(sub, _)| sub).collect();
            hub.topology_changed(&gateway, TopologyChange::Added, &subs, now);
            Ok::<_, RegistryError>(())
        })
        .await?
        .map_err(registry_failure)?;
    success(serde_json::json!({}))
}

pub(super) async fn remove_thing_topo(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    state.authorize(&headers)?;
    let request: DeviceRef = parse_body(body)?;
    let registry = state.registry()?;
    let sub = state.named_device(&registry, &request)?;
    let Some(gateway) = sub.gateway else {
        return Err(Failure::new(
            ApiErrorCode::NotInTopology,
            format!("{} is in no gateway's topology", sub.identity),
        ));
    };
    state
        .handle
        .call_hub(move |hub, now| {
            let change = registry.remove_from_topology(&gateway, &sub.identity)?;
            if let Some(change) = change {
                hub.record_store_change(change);
            }
            // The gateway is told, and no longer carries it.
            let gateway_iot_id = registry
                .device(&gateway)
                .map(|g| g.iot_id)
                .unwrap_or_default();
            let removed = [(sub.identity.clone(), sub.iot_id.clone())];
            hub.forward_topology(
                (&gateway, &gateway_iot_id),
                TopologyChange::Removed,
                &removed,
                now,
            );
            let removed = [sub.identity.clone()];
            hub.topology_changed(&gateway, TopologyChange::Removed, &removed, now);
            Ok::<_, RegistryError>(())
        })
        .await?
        .map_err(registry_failure)?;
    success(serde_json::json!({ "Data": true }))
}

/// What an action on one device does to the registry, and to the device's connection.
#[derive(Clone, Copy)]
enum DeviceAction {
    Delete,
    Disable,
    Enable,
    Reset,
}

async fn act_on_device(state: ApiState, request: DeviceRef, action: DeviceAction) -> Answer {
    let registry = state.registry()?;
    let device = state.named_device(&registry, &request)?;
    let identity = device.identity.clone();
    // A sub-device's gateway hears of it (ours: deleted counts as removed).
    let gateway = device.gateway.clone();
    state
        .handle
        .call_hub(move |hub, now_instant| {
            let changes = match action {
                DeviceAction::Delete => registry.delete_device(&identity)?,
                DeviceAction::Disable => vec![registry.set_disabled(&identity, true)?],
                DeviceAction::Enable => vec![registry.set_disabled(&identity, false)?],
                DeviceAction::Reset => vec![registry.reset(&identity)?],
            };
            for change in changes {
                hub.record_store_change(change);
            }
            match action {
                // A deleted device loses its session; a disabled one keeps it for when it is
                // enabled again.
                DeviceAction::Delete => {
                    hub.disconnect_device(&identity, true, now_instant);
                    hub.forget_device_presence(&identity);
                }
                DeviceAction::Disable => {
                    hub.disconnect_device(&identity, false, now_instant);
                }
                DeviceAction::Enable | DeviceAction::Reset => {}
            }
            let change = match action {
                DeviceAction::Delete => Some(TopologyChange::Removed),
                DeviceAction::Disable => Some(TopologyChange::Disabled),
                DeviceAction::Enable => Some(TopologyChange::Enabled),
                DeviceAction::Reset => None,
            };
            let lifecycle = match action {
                DeviceAction::Delete => Some(LifecycleAction::Delete),
                DeviceAction::Disable => Some(LifecycleAction::Disable),
                DeviceAction::Enable => Some(LifecycleAction::Enable),
                DeviceAction::Reset => None,
            };
            if let Some(lifecycle) = lifecycle {
                hub.forward_lifecycle(&device, lifecycle, now_instant);
            }
            if let (Some(gateway), Some(change)) = (&gateway, change) {
                let gateway_iot_id = registry
                    .device(gateway)
                    .map(|g| g.iot_id)
                    .unwrap_or_default();
                let sub = [(identity.clone(), device.iot_id.clone())];
                hub.forward_topology((gateway, &gateway_iot_id), change, &sub, now_instant);
                let subs = [identity.clone()];
                hub.topology_changed(gateway, change, &subs, now_instant);
            }
            Ok::<_, RegistryError>(())
        })
        .await?
        .map_err(registry_failure)?;
    success(serde_json::json!({}))
}

macro_rules! device_action {
    ($($name:ident => $action:expr),* $(,)?) => {$(
        pub(super) async fn $name(
            State(state): State<ApiState>,
            headers: HeaderMap,
            body: Result<Bytes, BytesRejection>,
        ) -> Answer {
            state.authorize(&headers)?;
            let request: DeviceRef = parse_body(body)?;
            act_on_device(state, request, $action).await
        }
    )*};
}

device_action! {
    delete_device => DeviceAction::Delete,
    disable_thing => DeviceAction::Disable,
    enable_thing => DeviceAction::Enable,
    reset_thing => DeviceAction::Reset,
}

pub(super) async fn get_device_status(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    state.authorize(&headers)?;
    let request: DeviceRef = parse_body(body)?;
    let registry = state.registry()?;
    let device = state.named_device(&registry, &request)?;
    let identity = device.identity.clone();
    let online = state
        .handle
        .call_hub(move |hub, _| hub.is_online(&identity))
        .await?;
    success(serde_json::json!({ "Data": { "Status": status(&device, online) } }))
}

pub(super) async fn batch_get_device_state(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    state.authorize(&headers)?;
    let request: BatchDevicesRequest = parse_body(body)?;
    let registry = state.registry()?;
    let devices: Vec<RegisteredDevice> = request
        .device_name
        .iter()
        .filter_map(|name| registry.device(&DeviceIdentity::new(&request.product_key, name)))
        .collect();
    let identities: Vec<DeviceIdentity> = devices.iter().map(|d| d.identity.clone()).collect();
    let online = state
        .handle
        .call_hub(move |hub, _| {
            identities
                .iter()
                .map(|identity| hub.is_online(identity))
                .collect::<Vec<bool>>()
        })
        .await?;
    let list: Vec<serde_json::Value> = devices
        .iter()
        .zip(online)
        .map(|(device, online)| {
            serde_json::json!({
                "IotId": device.iot_id,
                "DeviceName": device.identity.device_name,
                "Status": status(device, online),
            })
        })
        .collect();
    success(serde_json::json!({ "DeviceStatusList": { "DeviceStatus": list } }))
}

/// The body of `CreateProductTopic`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateProductTopicRequest {
    /// The product.
    pub product_key: String,
    /// The topic's last level: the category is `/${productKey}/${deviceName}/user/{TopicShortName}`.
    pub topic_short_name: String,
    /// `PUB`, `SUB` or `ALL`.
    pub operation: String,
    /// A description (kept nowhere yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desc: Option<String>,
}

/// The body of `BatchRegisterDevice`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BatchRegisterRequest {
    /// The product.
    pub product_key: String,
    /// How many devices (1–10,000).
    pub count: u64,
}

/// The body of `QueryPageByApplyId` and `QueryBatchRegisterDeviceStatus`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ApplyRequest {
    /// The batch's id, from `BatchRegisterDevice`.
    pub apply_id: u64,
    /// The product (`QueryBatchRegisterDeviceStatus`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_key: Option<String>,
    /// The page, from 1 (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_page: Option<u64>,
    /// Items per page, 1–200 (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_size: Option<u64>,
}

pub(super) async fn create_product_topic(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    state.authorize(&headers)?;
    let request: CreateProductTopicRequest = parse_body(body)?;
    let permission = match request.operation.as_str() {
        "PUB" => aliot_topic::Permission::Pub,
        "SUB" => aliot_topic::Permission::Sub,
        "ALL" => aliot_topic::Permission::PubSub,
        other => {
            return Err(Failure::new(
                ApiErrorCode::InvalidName,
                format!("Operation {other:?} is not PUB, SUB or ALL"),
            ));
        }
    };
    let registry = state.registry()?;
    let added = state
        .handle
        .call_hub(move |hub, _| {
            let (added, change) = registry.add_category(
                &request.product_key,
                &request.topic_short_name,
                permission,
            )?;
            hub.record_store_change(change);
            Ok::<_, RegistryError>(added)
        })
        .await?
        .map_err(registry_failure)?;
    // The platform's topic ids are numbers; ours is the template's place among the product's.
    success(serde_json::json!({ "TopicId": added.place, "Topic": added.template }))
}

pub(super) async fn batch_register_device(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    state.authorize(&headers)?;
    let request: BatchRegisterRequest = parse_body(body)?;
    let registry = state.registry()?;
    let count = usize::try_from(request.count).unwrap_or(usize::MAX);
    let product_key = request.product_key.clone();
    let devices = state
        .handle
        .call_hub(move |hub, now_instant| {
            let made = registry.register_devices(&product_key, count, now())?;
            let mut devices = Vec::with_capacity(made.len());
            for (device, change) in made {
                hub.record_store_change(change);
                hub.forward_lifecycle(&device, LifecycleAction::Create, now_instant);
                devices.push(device);
            }
            Ok::<_, RegistryError>(devices)
        })
        .await?
        .map_err(registry_failure)?;
    let listed: BatchDevices = devices
        .into_iter()
        .map(|device| (device.identity.device_name, device.secret, device.iot_id))
        .collect();
    let mut applies = state
        .applies
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // Batches are numbered from 1 in the order they were made (ours: the platform's are
    // numbers too); the numbers start again when the broker does, as the batches are in memory.
    let apply_id = applies.back().map_or(1, |(last, _, _)| last + 1);
    applies.push_back((apply_id, request.product_key, listed));
    if applies.len() > KEPT_BATCHES {
        applies.pop_front();
    }
    drop(applies);
    success(serde_json::json!({ "Data": { "ApplyId": apply_id } }))
}

/// The batches of `BatchRegisterDevice` the API remembers for `QueryPageByApplyId` (ours; in
/// memory: the devices themselves are in the registry).
const KEPT_BATCHES: usize = 100;

/// The devices of a batch: name, secret, id.
type BatchDevices = Vec<(String, String, String)>;

/// A batch of `BatchRegisterDevice`: its id, product and devices.
pub(super) type Applied = (u64, String, BatchDevices);

/// The devices a batch made, if the API still has it.
fn applied(state: &ApiState, apply_id: u64) -> Result<(String, BatchDevices), Failure> {
    state
        .applies
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .find(|(id, _, _)| *id == apply_id)
        .map(|(_, product_key, devices)| (product_key.clone(), devices.clone()))
        .ok_or_else(|| {
            Failure::new(
                ApiErrorCode::InvalidName,
                format!("iot.device.InvalidApplyId: no batch {apply_id}"),
            )
        })
}

pub(super) async fn query_batch_register_device_status(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    state.authorize(&headers)?;
    let request: ApplyRequest = parse_body(body)?;
    let (_, devices) = applied(&state, request.apply_id)?;
    let names: Vec<&str> = devices.iter().map(|(name, _, _)| name.as_str()).collect();
    success(serde_json::json!({
        "Data": { "Status": "CREATE_SUCCESS", "ValidList": { "Name": names }, "InvalidList": { "Name": [] } }
    }))
}

pub(super) async fn query_page_by_apply_id(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    state.authorize(&headers)?;
    let request: ApplyRequest = parse_body(body)?;
    let (product_key, devices) = applied(&state, request.apply_id)?;
    let page = PageRequest {
        product_key: None,
        current_page: request.current_page,
        page_size: request.page_size,
    };
    let (items, page, size, pages) = page_of(&devices, &page);
    let list: Vec<serde_json::Value> = items
        .iter()
        .map(|(name, secret, iot_id)| {
            serde_json::json!({
                "DeviceName": name, "DeviceSecret": secret, "IotId": iot_id, "ProductKey": product_key,
            })
        })
        .collect();
    success(serde_json::json!({
        "ApplyDeviceList": { "ApplyDeviceInfo": list },
        "Total": devices.len(),
        "PageSize": size,
        "PageCount": pages,
        "Page": page,
    }))
}

/// The body of `PubBroadcast`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PubBroadcastRequest {
    /// The product.
    pub product_key: String,
    /// The payload, base64.
    pub message_content: String,
    /// The broadcast topic, `/broadcast/{ProductKey}/...`.
    pub topic_full_name: String,
}

pub(super) async fn pub_broadcast(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    state.authorize(&headers)?;
    let request: PubBroadcastRequest = parse_body(body)?;
    let prefix = format!("/broadcast/{}/", request.product_key);
    if !request.topic_full_name.starts_with(&prefix)
        || request.topic_full_name.len() == prefix.len()
    {
        return Err(Failure::new(
            ApiErrorCode::InvalidTopic,
            format!("TopicFullName must be {prefix}..."),
        ));
    }
    let payload = super::decode_base64("MessageContent", &request.message_content)?;
    let topic = aliot_topic::TopicName::new(&request.topic_full_name, &state.topic_limits)
        .map_err(|error| Failure::new(ApiErrorCode::InvalidTopic, error.to_string()))?;
    let published = state
        .handle
        .publish(topic, payload, aliot_core::codec::QoS::AtMostOnce)
        .await?;
    success(serde_json::json!({
        "MessageId": published.message_id.0.to_string(),
        "Subscribers": published.reached,
    }))
}

/// `POST /auth/register/device`: a device registers itself over HTTP(S) with its product's
/// secret (PLATFORM-PROTOCOLS §2.4), form-encoded `productKey`, `deviceName`, `random`, `sign`,
/// `signMethod`. Always HTTP 200 (the SDKs read the body's `code`): `{"code":200,"data":
/// {"productKey","deviceName","deviceSecret"},"message":"success"}`, or a refusal's code (ours:
/// 403 sign or product, 404 device, 409 activated, 429 throttled, 400 a parameter) and message.
/// No bearer token: devices call it, with the product secret as their credential.
pub(super) async fn dynamic_register(
    State(state): State<ApiState>,
    body: Result<Bytes, BytesRejection>,
) -> Json<serde_json::Value> {
    let refused =
        |code: u16, message: String| Json(serde_json::json!({"code": code, "message": message}));
    let body = body.unwrap_or_default();
    let params: std::collections::HashMap<String, String> =
        form_urlencoded::parse(&body).into_owned().collect();
    let param = |name: &str| params.get(name).cloned().unwrap_or_default();
    let (pk, dn, random, sign) = (
        param("productKey"),
        param("deviceName"),
        param("random"),
        param("sign"),
    );
    if pk.is_empty() || dn.is_empty() || random.is_empty() || sign.is_empty() {
        return refused(
            400,
            "productKey, deviceName, random and sign are required".into(),
        );
    }
    let method = params
        .get("signMethod")
        .map_or("hmacsha256", String::as_str)
        .to_ascii_lowercase();
    let Ok(method) = method.parse::<aliot_auth::SignMethod>() else {
        return refused(
            400,
            format!("signMethod {method:?} is not hmacsha256, hmacsha1 or hmacmd5"),
        );
    };
    let Ok(registry) = state.registry() else {
        return refused(403, "this broker has no registry to register in".into());
    };
    let identity = DeviceIdentity::new(&pk, &dn);
    let Ok(request) = aliot_auth::RegistrationRequest::new(
        identity,
        aliot_auth::RegistrationKind::PreRegistered,
        &random,
        method,
        &sign,
    ) else {
        return refused(
            403,
            aliot_io::registry::RegistrationRefused::BadSign.to_string(),
        );
    };
    let outcome = state
        .handle
        .call_hub(move |hub, now_instant| {
            let registered = registry.register_dynamically(&request, now())?;
            hub.record_store_change(registered.change());
            if registered.created {
                let created = LifecycleAction::Create;
                hub.forward_lifecycle(&registered.device, created, now_instant);
            }
            Ok::<_, aliot_io::registry::RegistrationRefused>(registered.grant)
        })
        .await;
    match outcome {
        // The same credentials as over MQTT: `{"productKey","deviceName","deviceSecret"}`.
        Ok(Ok(grant)) => Json(serde_json::json!({
            "code": 200,
            "data": serde_json::from_slice::<serde_json::Value>(grant.payload()).unwrap_or_default(),
            "message": "success",
        })),
        Ok(Err(refusal)) => {
            use aliot_io::registry::RegistrationRefused as R;
            let code = match refusal {
                R::NotAllowed(_) | R::BadSign | R::NeedsTls => 403,
                R::NoDevice(_) => 404,
                R::Activated(_) => 409,
                R::Throttled(_) => 429,
                R::InvalidDeviceName(_) => 400,
                R::Unavailable => 503,
            };
            refused(code, refusal.to_string())
        }
        Err(BrokerStopped) => refused(503, "the broker has stopped".into()),
    }
}
