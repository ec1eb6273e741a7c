//! The device registry: the products and devices the broker knows, kept in the store and read
//! by authentication from memory.
//!
//! One [`Registry`] is shared by the authenticator (every CONNECT looks its device up, under
//! a read lock, never waiting on the disk) and the server side (the OpenAPI's product and
//! device actions, run on the hub task: each change to the registry is also recorded as a
//! [`StoreChange`] and committed with the hub's turn, and its answer waits for that commit).
//! At start it holds what the store kept, with the configuration's `[[product]]` tables
//! imported over it (added or updated, never removing what the API made).
//!
//! What it costs: per device its identity, secret, id and times, about 200 bytes with the
//! map's share; per product its categories, compiled once and shared by its devices.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::mem;
use std::sync::{Arc, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub use aliot_auth::RegistrationRefused;
use aliot_auth::{
    DeviceIdentity, DeviceRecord, DeviceRegistry, DeviceSecret, MemoryRegistry, RegistrationKind,
    RegistrationRequest,
};
use aliot_core::hub::durable::{ProductRecord, RegisteredDevice, StoreChange, StoreImage};
use aliot_core::hub::{SubDeviceDirectory, SubDeviceRecord};
use aliot_core::registration::{RegistrationGrant, token_client_id};
use aliot_services::AlinkCode;
use aliot_services::UnixMillis;
use aliot_services::gateway::ProxiedRegistration;
use aliot_topic::{Permission, ProductCategories, check_identity};

/// A custom topic category a product was given ([`Registry::add_category`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CategoryAdded {
    /// The template, `/${productKey}/${deviceName}/user/{short_name}`.
    pub template: String,
    /// Its place among the product's categories, from 1: what `CreateProductTopic` answers as
    /// the `TopicId` (ours; categories are never removed, so the place stays).
    pub place: usize,
}

/// Why a registry change was refused, with the platform's error code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// No such product.
    #[error("iot.prod.NotExistedProduct: product {0} does not exist")]
    NoProduct(String),
    /// No such device.
    #[error("iot.device.NotExistedDevice: device {0} does not exist")]
    NoDevice(DeviceIdentity),
    /// The device exists already.
    #[error("iot.device.AlreadyExistedDeviceName: device {0} exists already")]
    DeviceExists(DeviceIdentity),
    /// A product with devices cannot be deleted.
    #[error("iot.prod.ProductHasDevices: product {0} still has devices; delete them first")]
    ProductHasDevices(String),
    /// A name a device or product cannot have.
    #[error("iot.common.InvalidFormattedParameter: {0}")]
    InvalidName(String),
}

impl RegistryError {
    /// The platform's error code.
    pub fn code(&self) -> &'static str {
        match self {
            RegistryError::NoProduct(_) => "iot.prod.NotExistedProduct",
            RegistryError::NoDevice(_) => "iot.device.NotExistedDevice",
            RegistryError::DeviceExists(_) => "iot.device.AlreadyExistedDeviceName",
            RegistryError::ProductHasDevices(_) => "iot.prod.ProductHasDevices",
            RegistryError::InvalidName(_) => "iot.common.InvalidFormattedParameter",
        }
    }
}

/// A `[[product]]` of the configuration, as the registry takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfiguredProduct {
    /// Its key.
    pub key: String,
    /// Its custom categories: template and permission.
    pub categories: Vec<(String, String)>,
    /// Its product secret, if given.
    pub secret: Option<String>,
    /// Whether dynamic registration is on.
    pub dynamic_registration: bool,
}

/// The custom categories the platform gives every product it creates (its console lists them
/// as a new product's "default custom topics"): a product made by `CreateProduct` has them too.
const API_PRODUCT_CATEGORIES: [(&str, &str); 3] = [
    ("/${productKey}/${deviceName}/user/update", "pub"),
    ("/${productKey}/${deviceName}/user/update/error", "pub"),
    ("/${productKey}/${deviceName}/user/get", "sub"),
];

/// Registration attempts a product may make per second, and in a burst (ours).
const REGISTRATIONS_PER_SECOND: f64 = 10.0;
const REGISTRATION_BURST: f64 = 50.0;

/// What dynamic registration has counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegistrationCounters {
    /// Devices that registered.
    pub registered: u64,
    /// Attempts refused (a wrong sign, an activated device, ...).
    pub refused: u64,
    /// Attempts refused for coming too fast.
    pub throttled: u64,
}

/// A product and its categories, compiled.
struct Product {
    record: ProductRecord,
    categories: Arc<ProductCategories>,
    devices: usize,
}

#[derive(Default)]
struct RegistryState {
    products: HashMap<String, Product>,
    devices: HashMap<DeviceIdentity, RegisteredDevice>,
    /// The devices by `IotId` (the API may name a device by it).
    by_iot_id: HashMap<String, DeviceIdentity>,
    /// Each gateway's topology: the sub-devices whose record names it.
    by_gateway: HashMap<DeviceIdentity, BTreeSet<DeviceIdentity>>,
    /// Each product's registration allowance: tokens left, and when they were counted (ms).
    allowances: HashMap<String, (f64, u64)>,
    counters: RegistrationCounters,
    /// The products and devices the configuration declares: a cluster's shared copy does
    /// not remove them, and takes their secrets and categories at start.
    configured_products: HashSet<String>,
    configured_devices: HashSet<DeviceIdentity>,
}

impl RegistryState {
    fn register_dynamically(
        &mut self,
        request: &RegistrationRequest,
        now: UnixMillis,
    ) -> Result<DynamicRegistration, RegistrationRefused> {
        let identity = &request.identity;
        let pk = &identity.product_key;
        // The allowance first: a flood of bad signs is throttled too.
        let (tokens, at) = self
            .allowances
            .get(pk)
            .copied()
            .unwrap_or((REGISTRATION_BURST, now.0));
        let refilled = (tokens
            + now.0.saturating_sub(at) as f64 / 1000.0 * REGISTRATIONS_PER_SECOND)
            .min(REGISTRATION_BURST);
        if refilled < 1.0 {
            self.allowances.insert(pk.clone(), (refilled, now.0));
            return Err(RegistrationRefused::Throttled(pk.clone()));
        }
        self.allowances.insert(pk.clone(), (refilled - 1.0, now.0));
        let secret = self
            .products
            .get(pk)
            .filter(|product| product.record.dynamic_registration)
            .and_then(|product| product.record.secret.as_ref())
            .ok_or_else(|| RegistrationRefused::NotAllowed(pk.clone()))?;
        if !request.sign_matches(secret.as_bytes()) {
            return Err(RegistrationRefused::BadSign);
        }
        let created = request.kind == RegistrationKind::WithoutPreRegistration
            && !self.devices.contains_key(identity);
        if created {
            self.insert_device(identity, None, now)
                .map_err(|error| RegistrationRefused::InvalidDeviceName(error.to_string()))?;
        }
        let device = self
            .devices
            .get_mut(identity)
            .ok_or_else(|| RegistrationRefused::NoDevice(identity.clone()))?;
        if device.activated.is_some() || device.disabled {
            return Err(RegistrationRefused::Activated(identity.clone()));
        }
        let previous = (!created).then(|| device.clone());
        // Each attempt while inactive issues new credentials: the last one counts.
        let grant = match request.kind {
            RegistrationKind::PreRegistered => {
                device.secret = random_text(32);
                RegistrationGrant::secret(identity, &device.secret)
            }
            RegistrationKind::WithoutPreRegistration => {
                let token = random_text(32);
                let grant = RegistrationGrant::token(identity, &token_client_id(identity), &token);
                device.token = Some(token);
                grant
            }
        };
        Ok(DynamicRegistration {
            grant,
            device: device.clone(),
            created,
            previous,
        })
    }

    /// Adds a new device, its secret and `IotId` generated.
    fn insert_device(
        &mut self,
        identity: &DeviceIdentity,
        nickname: Option<String>,
        now: UnixMillis,
    ) -> Result<RegisteredDevice, RegistryError> {
        let (product_key, device_name) = (&identity.product_key, &identity.device_name);
        check_identity(product_key, device_name)
            .map_err(|error| RegistryError::InvalidName(error.to_string()))?;
        if device_name.len() < 4 || device_name.len() > 32 {
            return Err(RegistryError::InvalidName(
                "DeviceName must be 4 to 32 characters".into(),
            ));
        }
        if let Some(character) = device_name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "-_@.:".contains(*c)))
        {
            return Err(RegistryError::InvalidName(format!(
                "DeviceName may hold letters, digits and - _ @ . : only, not {character:?}"
            )));
        }
        if self.devices.contains_key(identity) {
            return Err(RegistryError::DeviceExists(identity.clone()));
        }
        let device = RegisteredDevice {
            identity: identity.clone(),
            secret: random_text(32),
            iot_id: random_text(20),
            nickname,
            created: now,
            activated: None,
            disabled: false,
            token: None,
            gateway: None,
        };
        self.devices.insert(identity.clone(), device.clone());
        self.by_iot_id
            .insert(device.iot_id.clone(), identity.clone());
        if let Some(product) = self.products.get_mut(product_key) {
            product.devices += 1;
        }
        Ok(device)
    }

    /// Counts each product's devices and indexes the devices by `IotId`, anew.
    fn reindex(&mut self) {
        self.by_iot_id = self
            .devices
            .values()
            .map(|device| (device.iot_id.clone(), device.identity.clone()))
            .collect();
        for product in self.products.values_mut() {
            product.devices = 0;
        }
        for identity in self.devices.keys() {
            if let Some(product) = self.products.get_mut(&identity.product_key) {
                product.devices += 1;
            }
        }
        self.by_gateway.clear();
        for device in self.devices.values() {
            if let Some(gateway) = &device.gateway {
                self.by_gateway
                    .entry(gateway.clone())
                    .or_default()
                    .insert(device.identity.clone());
            }
        }
    }

    /// Sets the gateway of a sub-device (`None`: out of any topology), in its record and in
    /// the index; the record's change, or `None` when it was already so.
    fn set_gateway(
        &mut self,
        sub: &DeviceIdentity,
        gateway: Option<&DeviceIdentity>,
    ) -> Result<Option<(StoreChange, RegisteredDevice)>, RegistryError> {
        let device = self
            .devices
            .get_mut(sub)
            .ok_or_else(|| RegistryError::NoDevice(sub.clone()))?;
        if device.gateway.as_ref() == gateway {
            return Ok(None);
        }
        let before = device.clone();
        device.gateway = gateway.cloned();
        let change = StoreChange::RegisteredDeviceSaved(Box::new(device.clone()));
        self.index_gateway(sub, before.gateway.as_ref(), gateway);
        Ok(Some((change, before)))
    }

    /// Moves `sub` in the topologies' index from gateway `before` to gateway `after`.
    fn index_gateway(
        &mut self,
        sub: &DeviceIdentity,
        before: Option<&DeviceIdentity>,
        after: Option<&DeviceIdentity>,
    ) {
        if let Some(before) = before
            && let Some(subs) = self.by_gateway.get_mut(before)
        {
            subs.remove(sub);
            if subs.is_empty() {
                self.by_gateway.remove(before);
            }
        }
        if let Some(gateway) = after {
            self.by_gateway
                .entry(gateway.clone())
                .or_default()
                .insert(sub.clone());
        }
    }

    /// Takes a product as another node has it.
    fn apply_product(&mut self, record: ProductRecord) -> SharedApplied {
        if let Some(product) = self.products.get_mut(&record.key) {
            if product.record == record {
                return SharedApplied::Unchanged;
            }
            product.categories = compile(&record);
            product.record = record;
            return SharedApplied::Changed;
        }
        // A new product: devices that came before it are counted (rare: made once).
        let devices = self
            .devices
            .keys()
            .filter(|identity| identity.product_key == record.key)
            .count();
        let product = Product {
            categories: compile(&record),
            record,
            devices,
        };
        self.products.insert(product.record.key.clone(), product);
        SharedApplied::Changed
    }

    /// Takes a device as another node has it.
    fn apply_device(&mut self, device: RegisteredDevice) -> SharedApplied {
        let identity = device.identity.clone();
        let before = self.devices.get(&identity);
        if before == Some(&device) {
            return SharedApplied::Unchanged;
        }
        let was_disabled = before.is_some_and(|before| before.disabled);
        let (old_iot_id, old_gateway) = match before {
            Some(before) => (Some(before.iot_id.clone()), before.gateway.clone()),
            None => {
                if let Some(product) = self.products.get_mut(&identity.product_key) {
                    product.devices += 1;
                }
                (None, None)
            }
        };
        if let Some(old) = old_iot_id.filter(|old| *old != device.iot_id) {
            self.by_iot_id.remove(&old);
        }
        self.by_iot_id
            .insert(device.iot_id.clone(), identity.clone());
        if old_gateway != device.gateway {
            self.index_gateway(&identity, old_gateway.as_ref(), device.gateway.as_ref());
        }
        let disabled = device.disabled;
        self.devices.insert(identity.clone(), device);
        if disabled && !was_disabled {
            SharedApplied::DeviceDisabled(identity)
        } else {
            SharedApplied::Changed
        }
    }

    /// Forgets a device another node deleted.
    fn remove_device(&mut self, identity: &DeviceIdentity) -> SharedApplied {
        let Some(removed) = self.devices.remove(identity) else {
            return SharedApplied::Unchanged;
        };
        self.by_iot_id.remove(&removed.iot_id);
        self.index_gateway(identity, removed.gateway.as_ref(), None);
        if let Some(product) = self.products.get_mut(&identity.product_key) {
            product.devices = product.devices.saturating_sub(1);
        }
        SharedApplied::DeviceRemoved(identity.clone())
    }

    /// Takes one change another node made.
    fn apply_shared(&mut self, change: &StoreChange) -> SharedApplied {
        match change {
            StoreChange::ProductSaved(record) => self.apply_product(record.clone()),
            StoreChange::ProductRemoved(key) => {
                if self.configured_products.contains(key)
                    && let Some(product) = self.products.get(key)
                {
                    return SharedApplied::Declared(StoreChange::ProductSaved(
                        product.record.clone(),
                    ));
                }
                match self.products.remove(key) {
                    Some(_) => SharedApplied::Changed,
                    None => SharedApplied::Unchanged,
                }
            }
            StoreChange::RegisteredDeviceSaved(device) => self.apply_device((**device).clone()),
            StoreChange::RegisteredDeviceRemoved(identity) => {
                if self.configured_devices.contains(identity)
                    && let Some(device) = self.devices.get(identity)
                {
                    return SharedApplied::Declared(StoreChange::RegisteredDeviceSaved(Box::new(
                        device.clone(),
                    )));
                }
                self.remove_device(identity)
            }
            _ => SharedApplied::Unchanged,
        }
    }
}

/// A device's own registration, done ([`Registry::register_dynamically`]).
#[derive(Clone, Debug)]
pub struct DynamicRegistration {
    /// The credentials to push to the device.
    pub grant: RegistrationGrant,
    /// The device as registered now: the change to commit before the grant goes.
    pub device: RegisteredDevice,
    /// Whether the registration made the device (`regnwl` of a device not registered before).
    pub created: bool,
    /// The device as it was before, when it existed.
    previous: Option<RegisteredDevice>,
}

impl DynamicRegistration {
    /// The change to commit before the grant goes.
    pub fn change(&self) -> StoreChange {
        StoreChange::RegisteredDeviceSaved(Box::new(self.device.clone()))
    }
}

/// Told of each change this registry makes itself (not of those
/// [applied from elsewhere](Registry::apply_shared)), in order, while the change is being
/// made, with the device's record as it was before when the change edits a device that
/// existed (`None`: a device made, a removal, a product's change): it must not block, nor
/// read or change the registry.
pub type RegistryObserver = Arc<dyn Fn(&StoreChange, Option<&RegisteredDevice>) + Send + Sync>;

/// The shared registry. Cheap to clone: clones share it.
#[derive(Clone, Default)]
pub struct Registry {
    state: Arc<RwLock<RegistryState>>,
    observer: Arc<OnceLock<RegistryObserver>>,
}

/// What a change made elsewhere (another node of a cluster) did to this registry
/// ([`Registry::apply_shared`]).
#[derive(Clone, Debug, PartialEq)]
pub enum SharedApplied {
    /// It had that already.
    Unchanged,
    /// It changed; nothing more to do than keep the change.
    Changed,
    /// This device is gone: its connection and session go too.
    DeviceRemoved(DeviceIdentity),
    /// This device is disabled now: its connection goes, its session stays.
    DeviceDisabled(DeviceIdentity),
    /// Removed elsewhere, but this node's configuration declares it: kept here, and this
    /// change (its record) is to be shared again.
    Declared(StoreChange),
}

/// What a cluster's shared copy of the registry holds for one record: its value, or that it
/// was removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SharedRecord<T> {
    /// The record.
    Kept(T),
    /// Removed (by any node).
    Removed,
}

/// The outcome of [`Registry::merge_shared`].
#[derive(Clone, Debug, Default)]
pub struct SharedMerge {
    /// What the shared copy lacks or has wrong: to write there.
    pub to_share: Vec<StoreChange>,
    /// What changed here, each with what it did: to keep in the store, and act on.
    pub applied: Vec<(StoreChange, SharedApplied)>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.read();
        f.debug_struct("Registry")
            .field("products", &state.products.len())
            .field("devices", &state.devices.len())
            .finish()
    }
}

/// `len` random characters of `[A-Za-z0-9]`, from the operating system's random source: they
/// are device secrets, tokens and product secrets, which must not be guessable from others
/// (a fast, seeded generator's next output is computable from a few of its outputs).
///
/// # Panics
///
/// If the operating system gives no random bytes (Linux's `getrandom` does not fail once the
/// system has booted): no secret is better than a guessable one.
fn random_text(len: usize) -> String {
    const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut text = String::with_capacity(len);
    let mut bytes = [0u8; 64];
    while text.len() < len {
        getrandom::getrandom(&mut bytes).expect("the operating system's random source");
        // 248 = 4 × 62: the bytes above it would favour the alphabet's first characters.
        for byte in bytes.iter().filter(|byte| **byte < 248) {
            if text.len() == len {
                break;
            }
            text.push(char::from(ALPHABET[usize::from(*byte % 62)]));
        }
    }
    text
}

/// The categories of a product record, compiled; a template that no longer compiles is
/// skipped (it was checked when it was added).
fn compile(record: &ProductRecord) -> Arc<ProductCategories> {
    let mut categories = ProductCategories::defaults();
    for (template, permission) in &record.categories {
        if let Ok(permission) = permission.parse::<Permission>() {
            let _ = categories.add_custom(template, permission);
        }
    }
    Arc::new(categories)
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, RegistryState> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, RegistryState> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the observer told of each change this registry makes from now on (a cluster
    /// shares them). One observer: `false` if one was set already.
    pub fn observe(&self, observer: RegistryObserver) -> bool {
        self.observer.set(observer).is_ok()
    }

    /// `change`, after telling the observer of it. Called under the write lock, so that the
    /// observer hears of one record's changes in the order they were made.
    fn told(&self, change: StoreChange) -> StoreChange {
        self.told_edit(change, None)
    }

    /// `change`, an edit of the device that was `before`, after telling the observer of it.
    fn told_edit(&self, change: StoreChange, before: Option<&RegisteredDevice>) -> StoreChange {
        if let Some(observer) = self.observer.get() {
            observer(&change, before);
        }
        change
    }

    /// A registry of the configuration's products and devices (`configured`, with each
    /// product's custom categories), made now.
    pub fn configured(
        configured: &MemoryRegistry,
        products: &[ConfiguredProduct],
        now: UnixMillis,
    ) -> Self {
        let registry = Registry::new();
        {
            let mut state = registry.write();
            for product in products {
                let key = &product.key;
                let record = ProductRecord {
                    key: key.clone(),
                    name: key.clone(),
                    secret: product.secret.clone(),
                    dynamic_registration: product.dynamic_registration,
                    categories: product.categories.clone(),
                    created: now,
                    description: None,
                };
                let product = Product {
                    categories: compile(&record),
                    record,
                    devices: 0,
                };
                state.products.insert(key.clone(), product);
                state.configured_products.insert(key.clone());
            }
            for (identity, secret) in configured.devices() {
                state.configured_devices.insert(identity.clone());
                let device = RegisteredDevice {
                    identity: identity.clone(),
                    secret: secret.expose().to_owned(),
                    iot_id: random_text(20),
                    nickname: None,
                    created: now,
                    activated: None,
                    disabled: false,
                    token: None,
                    gateway: None,
                };
                state.devices.insert(identity, device);
            }
            state.reindex();
        }
        registry
    }

    /// Takes what a store kept, under the configuration's products and devices already
    /// here: what only the store has (the API made it) is added; what both have keeps the
    /// store's history (ids, times, disabled, names) with the configuration's secrets and
    /// categories (but the secrets of a product with dynamic registration, which its devices
    /// obtained). Returns the changes that bring the store up to date.
    ///
    /// The image's products and devices are moved out, not copied: with a million devices
    /// the copy would be most of the broker's memory at start.
    pub fn merge_kept(&self, image: &mut StoreImage) -> Vec<StoreChange> {
        let mut state = self.write();
        let mut changes = Vec::new();
        let mut configured = mem::take(&mut state.products);
        for (key, kept) in mem::take(&mut image.products) {
            let record = match configured.remove(&key) {
                Some(configured) => ProductRecord {
                    categories: configured.record.categories,
                    secret: configured.record.secret.or_else(|| kept.secret.clone()),
                    dynamic_registration: configured.record.dynamic_registration,
                    ..kept.clone()
                },
                None => kept.clone(),
            };
            if record != kept {
                changes.push(StoreChange::ProductSaved(record.clone()));
            }
            let product = Product {
                categories: compile(&record),
                record,
                devices: 0,
            };
            state.products.insert(key, product);
        }
        // The file's products the store did not have.
        for (key, product) in configured {
            changes.push(StoreChange::ProductSaved(product.record.clone()));
            state.products.insert(key, product);
        }
        let mut configured = mem::take(&mut state.devices);
        state.devices.reserve(image.registered.len());
        for (identity, kept) in mem::take(&mut image.registered) {
            // The file's secret, but for a product whose devices register themselves: their
            // secrets are the registration's.
            let registers = state
                .products
                .get(&identity.product_key)
                .is_some_and(|product| product.record.dynamic_registration);
            let device = match configured.remove(&identity) {
                Some(configured) if !registers && configured.secret != kept.secret => {
                    let device = RegisteredDevice {
                        secret: configured.secret,
                        ..kept
                    };
                    changes.push(StoreChange::RegisteredDeviceSaved(Box::new(device.clone())));
                    device
                }
                _ => kept,
            };
            state.devices.insert(identity, device);
        }
        // The file's devices the store did not have.
        for (identity, device) in configured {
            changes.push(StoreChange::RegisteredDeviceSaved(Box::new(device.clone())));
            state.devices.insert(identity, device);
        }
        state.reindex();
        changes
    }

    /// Products known.
    pub fn product_count(&self) -> usize {
        self.read().products.len()
    }

    /// Devices known.
    pub fn device_count(&self) -> usize {
        self.read().devices.len()
    }

    /// A product.
    pub fn product(&self, key: &str) -> Option<ProductRecord> {
        self.read()
            .products
            .get(key)
            .map(|product| product.record.clone())
    }

    /// A product's devices, how many.
    pub fn product_devices(&self, key: &str) -> usize {
        self.read()
            .products
            .get(key)
            .map_or(0, |product| product.devices)
    }

    /// Every product, by key.
    pub fn products(&self) -> Vec<ProductRecord> {
        let mut all: Vec<ProductRecord> = self
            .read()
            .products
            .values()
            .map(|product| product.record.clone())
            .collect();
        all.sort_by(|a, b| a.key.cmp(&b.key));
        all
    }

    /// A device.
    pub fn device(&self, identity: &DeviceIdentity) -> Option<RegisteredDevice> {
        self.read().devices.get(identity).cloned()
    }

    /// A device by its `IotId`.
    pub fn device_by_iot_id(&self, iot_id: &str) -> Option<RegisteredDevice> {
        let state = self.read();
        let identity = state.by_iot_id.get(iot_id)?;
        state.devices.get(identity).cloned()
    }

    /// A product's devices, by name.
    pub fn devices_of(&self, product_key: &str) -> Vec<RegisteredDevice> {
        let mut all: Vec<RegisteredDevice> = self
            .read()
            .devices
            .values()
            .filter(|device| device.identity.product_key == product_key)
            .cloned()
            .collect();
        all.sort_by(|a, b| a.identity.device_name.cmp(&b.identity.device_name));
        all
    }

    /// One page of a product's devices (every product's with `None`) whose name contains
    /// `name_contains`, by product and name, and how many devices match in all. Only the page
    /// is copied: a page of 100,000 devices costs a scan and a sort of references.
    pub fn device_page(
        &self,
        product_key: Option<&str>,
        name_contains: &str,
        offset: usize,
        limit: usize,
    ) -> (Vec<RegisteredDevice>, usize) {
        let state = self.read();
        let mut matching: Vec<&RegisteredDevice> = state
            .devices
            .values()
            .filter(|device| {
                product_key.is_none_or(|key| device.identity.product_key == key)
                    && device.identity.device_name.contains(name_contains)
            })
            .collect();
        let total = matching.len();
        let by_name = |a: &&RegisteredDevice, b: &&RegisteredDevice| {
            (&a.identity.product_key, &a.identity.device_name)
                .cmp(&(&b.identity.product_key, &b.identity.device_name))
        };
        // Only the page needs to be in order: the devices before it are moved to its left
        // and those after it to its right, each in linear time, and the page is sorted.
        if offset > 0 && offset < total {
            matching.select_nth_unstable_by(offset, by_name);
        }
        let window = matching.get_mut(offset..).unwrap_or_default();
        if window.len() > limit && limit > 0 {
            window.select_nth_unstable_by(limit, by_name);
        }
        let shown = limit.min(window.len());
        let window = &mut window[..shown];
        window.sort_unstable_by(by_name);
        let page = window.iter().map(|device| (*device).clone()).collect();
        (page, total)
    }

    /// A product's topic categories (the platform's system ones and its custom ones).
    pub fn product_categories(&self, key: &str) -> Option<Arc<ProductCategories>> {
        self.read()
            .products
            .get(key)
            .map(|product| Arc::clone(&product.categories))
    }

    /// Makes a product with a fresh key, a product secret and the platform's three default
    /// custom categories (`/user/update`, `/user/update/error`, `/user/get`).
    pub fn create_product(
        &self,
        name: &str,
        description: Option<String>,
        now: UnixMillis,
    ) -> Result<(ProductRecord, StoreChange), RegistryError> {
        if name.is_empty() || name.chars().count() > 40 {
            return Err(RegistryError::InvalidName(
                "ProductName must be 1 to 40 characters".into(),
            ));
        }
        let mut state = self.write();
        let key = loop {
            let key = format!("a1{}", random_text(9));
            if !state.products.contains_key(&key) {
                break key;
            }
        };
        let record = ProductRecord {
            key: key.clone(),
            name: name.to_owned(),
            secret: Some(random_text(16)),
            dynamic_registration: false,
            categories: API_PRODUCT_CATEGORIES
                .iter()
                .map(|(template, permission)| ((*template).to_owned(), (*permission).to_owned()))
                .collect(),
            created: now,
            description,
        };
        state.products.insert(
            key,
            Product {
                categories: compile(&record),
                record: record.clone(),
                devices: 0,
            },
        );
        Ok((record.clone(), self.told(StoreChange::ProductSaved(record))))
    }

    /// Deletes a product without devices.
    pub fn delete_product(&self, key: &str) -> Result<StoreChange, RegistryError> {
        let mut state = self.write();
        let product = state
            .products
            .get(key)
            .ok_or_else(|| RegistryError::NoProduct(key.to_owned()))?;
        if product.devices > 0 {
            return Err(RegistryError::ProductHasDevices(key.to_owned()));
        }
        state.products.remove(key);
        Ok(self.told(StoreChange::ProductRemoved(key.to_owned())))
    }

    /// Adds a custom topic category to a product (the platform's `CreateProductTopic`): the
    /// template `/${productKey}/${deviceName}/user/{short_name}` with `permission`. Devices
    /// that connect from now on get it; a connected device gets it at its next connect.
    pub fn add_category(
        &self,
        product_key: &str,
        short_name: &str,
        permission: Permission,
    ) -> Result<(CategoryAdded, StoreChange), RegistryError> {
        let mut state = self.write();
        let product = state
            .products
            .get_mut(product_key)
            .ok_or_else(|| RegistryError::NoProduct(product_key.to_owned()))?;
        let template = format!("/${{productKey}}/${{deviceName}}/user/{short_name}");
        let mut categories = (*product.categories).clone();
        categories
            .add_custom(&template, permission)
            .map_err(|error| RegistryError::InvalidName(format!("{template}: {error}")))?;
        product.categories = Arc::new(categories);
        product
            .record
            .categories
            .push((template.clone(), permission.to_string()));
        let added = CategoryAdded {
            template,
            place: product.record.categories.len(),
        };
        let change = StoreChange::ProductSaved(product.record.clone());
        Ok((added, self.told(change)))
    }

    /// Registers `count` devices of a product, their names and secrets generated (the
    /// platform's `BatchRegisterDevice`); at most 10,000 at once.
    pub fn register_devices(
        &self,
        product_key: &str,
        count: usize,
        now: UnixMillis,
    ) -> Result<Vec<(RegisteredDevice, StoreChange)>, RegistryError> {
        if !(1..=10_000).contains(&count) {
            return Err(RegistryError::InvalidName(
                "Count must be 1 to 10,000".into(),
            ));
        }
        if self.product(product_key).is_none() {
            return Err(RegistryError::NoProduct(product_key.to_owned()));
        }
        (0..count)
            .map(|_| self.register_device(product_key, None, None, now))
            .collect()
    }

    /// Registers a device of a product: its name generated when none is given, its secret
    /// generated.
    pub fn register_device(
        &self,
        product_key: &str,
        device_name: Option<&str>,
        nickname: Option<String>,
        now: UnixMillis,
    ) -> Result<(RegisteredDevice, StoreChange), RegistryError> {
        let mut state = self.write();
        if !state.products.contains_key(product_key) {
            return Err(RegistryError::NoProduct(product_key.to_owned()));
        }
        let device_name = match device_name {
            Some(name) => name.to_owned(),
            None => loop {
                let name = random_text(20);
                let identity = DeviceIdentity::new(product_key, &name);
                if !state.devices.contains_key(&identity) {
                    break name;
                }
            },
        };
        let identity = DeviceIdentity::new(product_key, &device_name);
        let device = state.insert_device(&identity, nickname, now)?;
        let change = self.told(StoreChange::RegisteredDeviceSaved(Box::new(device.clone())));
        Ok((device, change))
    }

    /// Changes one device with `change`; the change to commit.
    fn update(
        &self,
        identity: &DeviceIdentity,
        change: impl FnOnce(&mut RegisteredDevice),
    ) -> Result<StoreChange, RegistryError> {
        let mut state = self.write();
        let device = state
            .devices
            .get_mut(identity)
            .ok_or_else(|| RegistryError::NoDevice(identity.clone()))?;
        let before = device.clone();
        change(device);
        let change = StoreChange::RegisteredDeviceSaved(Box::new(device.clone()));
        Ok(self.told_edit(change, Some(&before)))
    }

    /// Disables (refused at CONNECT) or enables a device.
    pub fn set_disabled(
        &self,
        identity: &DeviceIdentity,
        disabled: bool,
    ) -> Result<StoreChange, RegistryError> {
        self.update(identity, |device| device.disabled = disabled)
    }

    /// Makes a device inactive again (it may register itself again).
    pub fn reset(&self, identity: &DeviceIdentity) -> Result<StoreChange, RegistryError> {
        self.update(identity, |device| device.activated = None)
    }

    /// A device connected: the first time, it is activated now; the change to commit then.
    pub fn activated(&self, identity: &DeviceIdentity, now: UnixMillis) -> Option<StoreChange> {
        let inactive = self
            .read()
            .devices
            .get(identity)
            .is_some_and(|device| device.activated.is_none());
        if !inactive {
            return None;
        }
        self.update(identity, |device| {
            device.activated.get_or_insert(now);
        })
        .ok()
    }

    /// What dynamic registration has counted.
    pub fn registration_counters(&self) -> RegistrationCounters {
        self.read().counters
    }

    /// A device registers itself with its product's secret (the platform's "one product, one
    /// secret", PLATFORM-PROTOCOLS §2): the product must allow it and the proof must be its
    /// secret's; a device registered beforehand (`register`, and HTTP) gets a new DeviceSecret,
    /// one not registered beforehand (`regnwl`) is created if need be and gets a new token for
    /// the token login. Until the device is activated by its first connect it may register
    /// again, the last credentials counting; then not until `ResetThing`. Attempts are limited
    /// per product and counted. The grant to push, and the device to commit before it is.
    pub fn register_dynamically(
        &self,
        request: &RegistrationRequest,
        now: UnixMillis,
    ) -> Result<DynamicRegistration, RegistrationRefused> {
        let mut state = self.write();
        let outcome = state.register_dynamically(request, now);
        match &outcome {
            Ok(_) => state.counters.registered += 1,
            Err(RegistrationRefused::Throttled(_)) => state.counters.throttled += 1,
            Err(_) => state.counters.refused += 1,
        }
        if let Ok(registration) = &outcome {
            self.told_edit(registration.change(), registration.previous.as_ref());
        }
        outcome
    }

    /// Deletes a device.
    ///
    /// A sub-device leaves its gateway's topology; a gateway's sub-devices leave its topology
    /// (their records change too).
    pub fn delete_device(
        &self,
        identity: &DeviceIdentity,
    ) -> Result<Vec<StoreChange>, RegistryError> {
        let mut state = self.write();
        let mut edits = Vec::new();
        if state.devices.contains_key(identity) {
            for sub in state.by_gateway.get(identity).cloned().unwrap_or_default() {
                edits.extend(state.set_gateway(&sub, None)?);
            }
            state.set_gateway(identity, None)?;
        }
        let Some(removed) = state.devices.remove(identity) else {
            return Err(RegistryError::NoDevice(identity.clone()));
        };
        state.by_iot_id.remove(&removed.iot_id);
        if let Some(product) = state.products.get_mut(&identity.product_key) {
            product.devices = product.devices.saturating_sub(1);
        }
        let mut changes: Vec<StoreChange> = edits
            .into_iter()
            .map(|(change, before)| self.told_edit(change, Some(&before)))
            .collect();
        changes.push(self.told(StoreChange::RegisteredDeviceRemoved(identity.clone())));
        Ok(changes)
    }

    /// Adds `sub` to `gateway`'s topology (PLATFORM-PROTOCOLS §4.1: `thing/topo/add`,
    /// `AddThingTopo`), moving it out of another gateway's; the record's change, or `None` when
    /// it was in this topology already.
    ///
    /// # Errors
    ///
    /// [`RegistryError::NoDevice`] for a gateway or sub-device that is not registered;
    /// [`RegistryError::InvalidName`] when a device would be its own sub-device.
    pub fn add_to_topology(
        &self,
        gateway: &DeviceIdentity,
        sub: &DeviceIdentity,
    ) -> Result<Option<StoreChange>, RegistryError> {
        let mut state = self.write();
        if !state.devices.contains_key(gateway) {
            return Err(RegistryError::NoDevice(gateway.clone()));
        }
        if gateway == sub {
            return Err(RegistryError::InvalidName(format!(
                "{sub} cannot be a sub-device of itself"
            )));
        }
        Ok(state
            .set_gateway(sub, Some(gateway))?
            .map(|(change, before)| self.told_edit(change, Some(&before))))
    }

    /// Removes `sub` from `gateway`'s topology (`thing/topo/delete`, `RemoveThingTopo`); the
    /// record's change, or `None` when it was not in it.
    ///
    /// # Errors
    ///
    /// [`RegistryError::NoDevice`] for a sub-device that is not registered.
    pub fn remove_from_topology(
        &self,
        gateway: &DeviceIdentity,
        sub: &DeviceIdentity,
    ) -> Result<Option<StoreChange>, RegistryError> {
        let mut state = self.write();
        let device = state
            .devices
            .get(sub)
            .ok_or_else(|| RegistryError::NoDevice(sub.clone()))?;
        if device.gateway.as_ref() != Some(gateway) {
            return Ok(None);
        }
        Ok(state
            .set_gateway(sub, None)?
            .map(|(change, before)| self.told_edit(change, Some(&before))))
    }

    /// A gateway's topology: its sub-devices, in order (`thing/topo/get`, `GetThingTopo`).
    pub fn topology(&self, gateway: &DeviceIdentity) -> Vec<DeviceIdentity> {
        self.read()
            .by_gateway
            .get(gateway)
            .map(|subs| subs.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// A cluster's registry: nodes share their changes ([`Registry::observe`]), take each other's
/// ([`Registry::apply_shared`]), and at start merge their copy with the shared one
/// ([`Registry::merge_shared`]).
impl Registry {
    /// Takes a change another node made (a product or device saved or removed; any other
    /// change is none of the registry's). Its observer is not told: the change is not this
    /// registry's own.
    pub fn apply_shared(&self, change: &StoreChange) -> SharedApplied {
        self.apply_shared_if(change, || true)
    }

    /// [`apply_shared`](Self::apply_shared), if `allowed` says so when asked under the
    /// registry's write lock: no change of this registry (told to its observer under the same
    /// lock) comes between the check and the change.
    pub fn apply_shared_if(
        &self,
        change: &StoreChange,
        allowed: impl FnOnce() -> bool,
    ) -> SharedApplied {
        let mut state = self.write();
        if !allowed() {
            return SharedApplied::Unchanged;
        }
        state.apply_shared(change)
    }

    /// Merges what a cluster shares (each product and device the shared copy has, or had
    /// and removed) into this registry, at a node's start:
    ///
    /// - what the shared copy has is taken, but for what this node's configuration declares,
    ///   which keeps the shared history (ids, times, disabled) with the configuration's
    ///   secrets and categories, as when a store is merged ([`Registry::merge_kept`]);
    /// - what the shared copy removed is removed here, but for what the configuration
    ///   declares, which is shared again (and so later, [`SharedApplied::Declared`]);
    /// - what only this node has (its store or configuration) is shared.
    pub fn merge_shared(
        &self,
        products: Vec<(String, SharedRecord<ProductRecord>)>,
        devices: Vec<(DeviceIdentity, SharedRecord<RegisteredDevice>)>,
    ) -> SharedMerge {
        let mut state = self.write();
        let mut merge = SharedMerge::default();
        let mut apply = |state: &mut RegistryState, change: StoreChange| {
            let applied = state.apply_shared(&change);
            if applied != SharedApplied::Unchanged {
                merge.applied.push((change, applied));
            }
        };
        let mut shared_products = HashSet::with_capacity(products.len());
        let mut to_share = Vec::new();
        for (key, shared) in products {
            let local = state
                .products
                .get(&key)
                .filter(|_| state.configured_products.contains(&key))
                .map(|product| product.record.clone());
            match (shared, local) {
                (SharedRecord::Kept(record), Some(configured)) => {
                    let merged = ProductRecord {
                        categories: configured.categories,
                        secret: configured.secret.or_else(|| record.secret.clone()),
                        dynamic_registration: configured.dynamic_registration,
                        ..record.clone()
                    };
                    if merged != record {
                        to_share.push(StoreChange::ProductSaved(merged.clone()));
                    }
                    apply(&mut state, StoreChange::ProductSaved(merged));
                }
                (SharedRecord::Kept(record), None) => {
                    apply(&mut state, StoreChange::ProductSaved(record));
                }
                (SharedRecord::Removed, Some(configured)) => {
                    to_share.push(StoreChange::ProductSaved(configured));
                }
                (SharedRecord::Removed, None) => {
                    apply(&mut state, StoreChange::ProductRemoved(key.clone()));
                }
            }
            shared_products.insert(key);
        }
        to_share.extend(
            state
                .products
                .iter()
                .filter(|(key, _)| !shared_products.contains(*key))
                .map(|(_, product)| StoreChange::ProductSaved(product.record.clone())),
        );
        let mut shared_devices = HashSet::with_capacity(devices.len());
        for (identity, shared) in devices {
            let local = state
                .devices
                .get(&identity)
                .filter(|_| state.configured_devices.contains(&identity))
                .cloned();
            match (shared, local) {
                (SharedRecord::Kept(device), Some(configured)) => {
                    // A product whose devices register themselves: their secrets are the
                    // registration's, wherever it was made.
                    let registers = state
                        .products
                        .get(&identity.product_key)
                        .is_some_and(|product| product.record.dynamic_registration);
                    let merged = if registers {
                        device
                    } else {
                        let merged = RegisteredDevice {
                            secret: configured.secret,
                            ..device.clone()
                        };
                        if merged != device {
                            to_share
                                .push(StoreChange::RegisteredDeviceSaved(Box::new(merged.clone())));
                        }
                        merged
                    };
                    apply(
                        &mut state,
                        StoreChange::RegisteredDeviceSaved(Box::new(merged)),
                    );
                }
                (SharedRecord::Kept(device), None) => {
                    apply(
                        &mut state,
                        StoreChange::RegisteredDeviceSaved(Box::new(device)),
                    );
                }
                (SharedRecord::Removed, Some(configured)) => {
                    to_share.push(StoreChange::RegisteredDeviceSaved(Box::new(configured)));
                }
                (SharedRecord::Removed, None) => {
                    apply(
                        &mut state,
                        StoreChange::RegisteredDeviceRemoved(identity.clone()),
                    );
                }
            }
            shared_devices.insert(identity);
        }
        to_share.extend(
            state
                .devices
                .iter()
                .filter(|(identity, _)| !shared_devices.contains(*identity))
                .map(|(_, device)| StoreChange::RegisteredDeviceSaved(Box::new(device.clone()))),
        );
        merge.to_share = to_share;
        merge
    }
}

impl DeviceRegistry for Registry {
    /// A device's secret and its product's categories; `None` for a device that is unknown,
    /// disabled, or of a product that is gone.
    fn lookup(&self, product_key: &str, device_name: &str) -> Option<DeviceRecord> {
        let state = self.read();
        let device = state
            .devices
            .get(&DeviceIdentity::new(product_key, device_name))
            .filter(|device| !device.disabled)?;
        let product = state.products.get(product_key)?;
        Some(DeviceRecord {
            secret: DeviceSecret::new(&device.secret),
            categories: Arc::clone(&product.categories),
            token: device.token.as_deref().map(DeviceSecret::new),
            iot_id: Some(device.iot_id.clone()),
        })
    }
}

/// What a gateway's requests read and change (PLATFORM-PROTOCOLS §4): decided by the hub
/// (`aliot_core::hub::Hub::handle_gateway_request`), kept here.
impl SubDeviceDirectory for Registry {
    fn sub_device(&self, identity: &DeviceIdentity) -> Option<SubDeviceRecord> {
        let state = self.read();
        let device = state.devices.get(identity)?;
        let product = state.products.get(&identity.product_key)?;
        Some(SubDeviceRecord {
            secret: DeviceSecret::new(&device.secret),
            categories: Arc::clone(&product.categories),
            disabled: device.disabled,
            gateway: device.gateway.clone(),
            iot_id: Some(device.iot_id.clone()),
        })
    }

    fn topology(&self, gateway: &DeviceIdentity) -> Vec<DeviceIdentity> {
        Registry::topology(self, gateway)
    }

    fn add_to_topology(
        &self,
        gateway: &DeviceIdentity,
        sub: &DeviceIdentity,
    ) -> Result<Option<StoreChange>, AlinkCode> {
        Registry::add_to_topology(self, gateway, sub).map_err(gateway_code)
    }

    fn remove_from_topology(
        &self,
        gateway: &DeviceIdentity,
        sub: &DeviceIdentity,
    ) -> Result<Option<StoreChange>, AlinkCode> {
        Registry::remove_from_topology(self, gateway, sub).map_err(gateway_code)
    }

    /// Ours (the platform documents the wire, not the rules): the sub-device's product must
    /// allow dynamic registration, and with `product_register` the proof must be its
    /// product secret's; a device not registered yet is registered, one registered and not yet
    /// activated keeps its secret (the gateway is given it), an activated one is refused.
    fn register(
        &self,
        sub: &DeviceIdentity,
        proof: Option<&ProxiedRegistration>,
        now: UnixMillis,
    ) -> Result<(String, Option<StoreChange>), AlinkCode> {
        let mut state = self.write();
        let product = state
            .products
            .get(&sub.product_key)
            .filter(|product| product.record.dynamic_registration)
            .ok_or(AlinkCode::REGISTRATION_REFUSED)?;
        if let Some(proof) = proof {
            let method = proof
                .sign_method
                .to_ascii_lowercase()
                .parse()
                .map_err(|_| AlinkCode::BAD_PARAMS)?;
            let request = RegistrationRequest::new(
                sub.clone(),
                RegistrationKind::PreRegistered,
                &proof.random,
                method,
                &proof.sign,
            )
            .map_err(|_| AlinkCode::BAD_PARAMS)?;
            let secret = product.record.secret.as_deref().unwrap_or_default();
            if secret.is_empty() || !request.sign_matches(secret.as_bytes()) {
                return Err(AlinkCode::BAD_SIGN);
            }
        }
        match state.devices.get(sub) {
            Some(device) if device.activated.is_some() => Err(AlinkCode::REGISTRATION_REFUSED),
            Some(device) => Ok((device.secret.clone(), None)),
            None => {
                let device = state
                    .insert_device(sub, None, now)
                    .map_err(|_| AlinkCode::BAD_PARAMS)?;
                let secret = device.secret.clone();
                let change = StoreChange::RegisteredDeviceSaved(Box::new(device));
                Ok((secret, Some(self.told(change))))
            }
        }
    }

    fn logged_in(&self, sub: &DeviceIdentity, now: UnixMillis) -> Option<StoreChange> {
        self.activated(sub, now)
    }
}

/// The gateway reply code of a registry's refusal.
fn gateway_code(error: RegistryError) -> AlinkCode {
    match error {
        RegistryError::NoDevice(_) | RegistryError::NoProduct(_) => AlinkCode::NO_DEVICE,
        _ => AlinkCode::BAD_PARAMS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A registry of the configuration's product a1Conf and device dev-1 (secret s1).
    fn configured_registry() -> Registry {
        let products = [ConfiguredProduct {
            key: "a1Conf".into(),
            categories: Vec::new(),
            secret: None,
            dynamic_registration: false,
        }];
        Registry::configured(&configured(), &products, UnixMillis(5))
    }

    #[test]
    fn a_merge_with_the_shared_copy_keeps_its_history_and_the_configurations_secrets() {
        let registry = configured_registry();
        let (own, _) = registry
            .register_device("a1Conf", Some("own-1"), None, UnixMillis(6))
            .unwrap();
        let conf = DeviceIdentity::new("a1Conf", "dev-1");
        let mut shared_conf = registry.device(&conf).unwrap();
        shared_conf.iot_id = "shared-id".into();
        shared_conf.secret = "old secret".into();
        shared_conf.disabled = true;
        let other = RegisteredDevice {
            identity: DeviceIdentity::new("a1Conf", "other-1"),
            iot_id: "other-id".into(),
            ..shared_conf.clone()
        };
        let mut product = registry.product("a1Conf").unwrap();
        product.name = "lamps".into();
        let merge = registry.merge_shared(
            vec![("a1Conf".into(), SharedRecord::Kept(product))],
            vec![
                (conf.clone(), SharedRecord::Kept(shared_conf.clone())),
                (other.identity.clone(), SharedRecord::Kept(other.clone())),
                (
                    DeviceIdentity::new("a1Conf", "gone-1"),
                    SharedRecord::Removed,
                ),
            ],
        );
        // The configured device: the cluster's id and state, the configuration's secret,
        // written back; the device only this node had, written.
        let merged = registry.device(&conf).unwrap();
        assert_eq!(merged.iot_id, "shared-id");
        assert!(merged.disabled);
        assert_eq!(merged.secret, "s1");
        assert_eq!(
            merge.to_share,
            vec![
                StoreChange::RegisteredDeviceSaved(Box::new(merged.clone())),
                StoreChange::RegisteredDeviceSaved(Box::new(own.clone())),
            ]
        );
        assert_eq!(registry.device(&other.identity), Some(other.clone()));
        assert_eq!(registry.product("a1Conf").unwrap().name, "lamps");
        assert_eq!(registry.product_devices("a1Conf"), 3);
        assert!(
            merge.applied.contains(&(
                StoreChange::RegisteredDeviceSaved(Box::new(merged)),
                SharedApplied::DeviceDisabled(conf.clone())
            )),
            "{:?}",
            merge.applied
        );
        assert!(registry.device_by_iot_id("other-id").is_some());
    }

    #[test]
    fn a_removal_elsewhere_removes_here_but_what_the_configuration_declares() {
        let registry = configured_registry();
        let (own, _) = registry
            .register_device("a1Conf", Some("own-1"), None, UnixMillis(6))
            .unwrap();
        let conf = DeviceIdentity::new("a1Conf", "dev-1");
        let merge = registry.merge_shared(
            Vec::new(),
            vec![
                (conf.clone(), SharedRecord::Removed),
                (own.identity.clone(), SharedRecord::Removed),
            ],
        );
        assert!(registry.device(&conf).is_some(), "declared: kept");
        assert!(registry.device(&own.identity).is_none());
        assert_eq!(
            merge.applied,
            vec![(
                StoreChange::RegisteredDeviceRemoved(own.identity.clone()),
                SharedApplied::DeviceRemoved(own.identity.clone())
            )]
        );
        assert!(
            merge
                .to_share
                .contains(&StoreChange::RegisteredDeviceSaved(Box::new(
                    registry.device(&conf).unwrap()
                )))
        );
        assert!(registry.device_by_iot_id(&own.iot_id).is_none());
        assert_eq!(registry.product_devices("a1Conf"), 1);
    }

    #[test]
    fn changes_made_here_are_told_and_changes_taken_from_elsewhere_are_not() {
        let registry = configured_registry();
        let told = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = Arc::clone(&told);
        assert!(registry.observe(Arc::new(
            move |change: &StoreChange, before: Option<&RegisteredDevice>| {
                sink.lock().unwrap().push((change.clone(), before.cloned()));
            }
        )));
        let (own, made) = registry
            .register_device("a1Conf", Some("own-1"), None, UnixMillis(6))
            .unwrap();
        let id = own.identity.clone();
        let disabled = registry.set_disabled(&id, true).unwrap();
        {
            let told = told.lock().unwrap();
            // Made: no record before; edited: the record before the edit.
            assert_eq!(told[0], (made, None));
            assert_eq!(told[1], (disabled.clone(), Some(own.clone())));
        }
        let removed = registry.delete_device(&id).unwrap();
        assert_eq!(told.lock().unwrap().len(), 2 + removed.len());
        // Taken from elsewhere: applied, not told; the same again changes nothing.
        let back = StoreChange::RegisteredDeviceSaved(Box::new(RegisteredDevice {
            gateway: Some(DeviceIdentity::new("a1Conf", "gw-1")),
            ..match &disabled {
                StoreChange::RegisteredDeviceSaved(device) => (**device).clone(),
                _ => unreachable!(),
            }
        }));
        assert_eq!(
            registry.apply_shared(&back),
            SharedApplied::DeviceDisabled(id.clone())
        );
        assert_eq!(registry.apply_shared(&back), SharedApplied::Unchanged);
        assert_eq!(
            registry.topology(&DeviceIdentity::new("a1Conf", "gw-1")),
            vec![id.clone()]
        );
        assert_eq!(
            registry.apply_shared(&StoreChange::RegisteredDeviceRemoved(id.clone())),
            SharedApplied::DeviceRemoved(id.clone())
        );
        assert!(
            registry
                .topology(&DeviceIdentity::new("a1Conf", "gw-1"))
                .is_empty()
        );
        // Refused: nothing changes.
        assert_eq!(
            registry.apply_shared_if(&back, || false),
            SharedApplied::Unchanged
        );
        assert!(registry.device(&id).is_none());
        assert_eq!(told.lock().unwrap().len(), 2 + removed.len());
    }

    #[test]
    fn what_the_configuration_declares_stays_when_removed_elsewhere() {
        let registry = configured_registry();
        let conf = DeviceIdentity::new("a1Conf", "dev-1");
        let kept = registry.device(&conf).unwrap();
        assert_eq!(
            registry.apply_shared(&StoreChange::RegisteredDeviceRemoved(conf.clone())),
            SharedApplied::Declared(StoreChange::RegisteredDeviceSaved(Box::new(kept.clone())))
        );
        assert_eq!(registry.device(&conf), Some(kept));
        let product = registry.product("a1Conf").unwrap();
        assert_eq!(
            registry.apply_shared(&StoreChange::ProductRemoved("a1Conf".into())),
            SharedApplied::Declared(StoreChange::ProductSaved(product))
        );
        assert!(registry.product("a1Conf").is_some());
    }

    #[test]
    fn a_sub_device_a_gateway_registers_is_told() {
        let products = [ConfiguredProduct {
            key: "a1Conf".into(),
            categories: Vec::new(),
            secret: Some("product-secret".into()),
            dynamic_registration: true,
        }];
        let registry = Registry::configured(&configured(), &products, UnixMillis(5));
        let told = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = Arc::clone(&told);
        registry.observe(Arc::new(
            move |change: &StoreChange, before: Option<&RegisteredDevice>| {
                sink.lock()
                    .unwrap()
                    .push((change.clone(), before.is_some()));
            },
        ));
        let sub = DeviceIdentity::new("a1Conf", "sub-1");
        let (_, change) =
            SubDeviceDirectory::register(&registry, &sub, None, UnixMillis(7)).expect("registered");
        let change = change.expect("a new device");
        assert_eq!(*told.lock().unwrap(), [(change, false)]);
    }

    fn configured() -> MemoryRegistry {
        let mut registry = MemoryRegistry::new();
        registry.add_product("a1Conf", ProductCategories::defaults());
        registry
            .add_device("a1Conf", "dev-1", DeviceSecret::new("s1"))
            .unwrap();
        registry
    }

    #[test]
    fn the_configuration_is_imported_over_what_the_store_kept() {
        let categories = [ConfiguredProduct {
            key: "a1Conf".into(),
            categories: Vec::new(),
            secret: None,
            dynamic_registration: false,
        }];
        let registry = Registry::configured(&configured(), &categories, UnixMillis(5));
        let changes = registry.merge_kept(&mut StoreImage::default());
        assert_eq!(
            changes.len(),
            2,
            "the product and its device are new to the store"
        );
        assert!(registry.lookup("a1Conf", "dev-1").is_some());

        let mut image = StoreImage::default();
        for change in changes {
            image.apply(change);
        }
        let (made, change) = registry
            .register_device("a1Conf", Some("made-by-api"), None, UnixMillis(6))
            .unwrap();
        image.apply(change);
        let first = registry
            .device(&DeviceIdentity::new("a1Conf", "dev-1"))
            .unwrap();
        // A restart: the API's device is kept, the file's keeps its id; nothing to commit.
        let again = Registry::configured(&configured(), &categories, UnixMillis(7));
        let changes = again.merge_kept(&mut image.clone());
        assert!(changes.is_empty(), "{changes:?}");
        assert_eq!(again.device(&made.identity), Some(made));
        assert_eq!(again.device(&first.identity), Some(first));
        assert_eq!(again.product_devices("a1Conf"), 2);
    }

    #[test]
    fn a_disabled_device_is_not_found_by_authentication_until_enabled() {
        let registry = Registry::new();
        let (product, _) = registry
            .create_product("lamp", None, UnixMillis(1))
            .unwrap();
        let (device, _) = registry
            .register_device(&product.key, None, None, UnixMillis(1))
            .unwrap();
        let (pk, dn) = (&device.identity.product_key, &device.identity.device_name);
        assert_eq!(dn.len(), 20);
        assert!(registry.lookup(pk, dn).is_some());
        registry.set_disabled(&device.identity, true).unwrap();
        assert!(registry.lookup(pk, dn).is_none());
        registry.set_disabled(&device.identity, false).unwrap();
        assert!(registry.lookup(pk, dn).is_some());
        assert_eq!(
            registry.delete_product(pk),
            Err(RegistryError::ProductHasDevices(pk.clone()))
        );
        assert_eq!(
            registry
                .device_by_iot_id(&device.iot_id)
                .map(|found| found.identity),
            Some(device.identity.clone())
        );
        registry.delete_device(&device.identity).unwrap();
        assert!(registry.lookup(pk, dn).is_none());
        assert!(registry.device_by_iot_id(&device.iot_id).is_none());
        assert!(registry.delete_product(pk).is_ok());
    }

    #[test]
    fn a_topology_is_kept_in_the_sub_devices_records_and_survives_a_restart() {
        let registry = Registry::new();
        let (product, _) = registry.create_product("p", None, UnixMillis(1)).unwrap();
        let device = |name: &str| {
            registry
                .register_device(&product.key, Some(name), None, UnixMillis(1))
                .unwrap()
                .0
                .identity
        };
        let (gw_a, gw_b, sub_1, sub_2) = (
            device("gw-a"),
            device("gw-b"),
            device("sub-1"),
            device("sub-2"),
        );
        let mut image = StoreImage::default();
        for change in registry
            .products()
            .into_iter()
            .map(StoreChange::ProductSaved)
        {
            image.apply(change);
        }
        for identity in [&gw_a, &gw_b, &sub_1, &sub_2] {
            let device = registry.device(identity).unwrap();
            image.apply(StoreChange::RegisteredDeviceSaved(Box::new(device)));
        }
        for sub in [&sub_1, &sub_2] {
            image.apply(registry.add_to_topology(&gw_a, sub).unwrap().unwrap());
        }
        assert_eq!(
            registry.add_to_topology(&gw_a, &sub_1).unwrap(),
            None,
            "already in"
        );
        assert!(registry.add_to_topology(&gw_a, &gw_a).is_err());
        assert_eq!(registry.topology(&gw_a), [sub_1.clone(), sub_2.clone()]);

        // Adding to another gateway moves it; removing from the wrong one does nothing.
        image.apply(registry.add_to_topology(&gw_b, &sub_2).unwrap().unwrap());
        assert_eq!(registry.topology(&gw_a), std::slice::from_ref(&sub_1));
        assert_eq!(registry.topology(&gw_b), std::slice::from_ref(&sub_2));
        assert_eq!(registry.remove_from_topology(&gw_a, &sub_2).unwrap(), None);

        // A restart reads the topology back from the records.
        let again = Registry::new();
        assert!(again.merge_kept(&mut image.clone()).is_empty());
        assert_eq!(again.topology(&gw_a), std::slice::from_ref(&sub_1));
        assert_eq!(again.topology(&gw_b), std::slice::from_ref(&sub_2));

        // A deleted gateway leaves its sub-devices out of any topology.
        let changes = again.delete_device(&gw_b).unwrap();
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert_eq!(again.device(&sub_2).unwrap().gateway, None);
        assert!(again.topology(&gw_b).is_empty());
        image.apply(again.remove_from_topology(&gw_a, &sub_1).unwrap().unwrap());
        assert!(
            image
                .registered
                .values()
                .all(|device| device.identity == sub_2 || device.gateway.is_none())
        );
    }

    #[test]
    fn a_device_is_activated_once() {
        let registry = Registry::new();
        let (product, _) = registry.create_product("p", None, UnixMillis(1)).unwrap();
        let (device, _) = registry
            .register_device(&product.key, Some("dev-a"), None, UnixMillis(1))
            .unwrap();
        assert!(
            registry
                .activated(&device.identity, UnixMillis(9))
                .is_some()
        );
        assert!(
            registry
                .activated(&device.identity, UnixMillis(10))
                .is_none()
        );
        assert_eq!(
            registry.device(&device.identity).unwrap().activated,
            Some(UnixMillis(9))
        );
        registry.reset(&device.identity).unwrap();
        assert!(
            registry
                .activated(&device.identity, UnixMillis(11))
                .is_some()
        );
    }

    #[test]
    fn a_device_page_is_in_name_order_whatever_the_page() {
        let registry = Registry::new();
        let (a, _) = registry.create_product("a", None, UnixMillis(1)).unwrap();
        let (b, _) = registry.create_product("b", None, UnixMillis(1)).unwrap();
        // Registered out of order, in two products.
        for n in [7, 3, 9, 0, 5, 1, 8, 2, 6, 4] {
            let name = format!("dev-{n}");
            registry
                .register_device(&a.key, Some(&name), None, UnixMillis(1))
                .unwrap();
        }
        registry
            .register_device(&b.key, Some("dev-x"), None, UnixMillis(1))
            .unwrap();
        let names = |(page, total): (Vec<RegisteredDevice>, usize)| {
            let names: Vec<String> = page
                .into_iter()
                .map(|d| d.identity.device_name.to_string())
                .collect();
            (names, total)
        };
        let of_a = Some(a.key.as_str());
        assert_eq!(
            names(registry.device_page(of_a, "", 0, 3)),
            (vec!["dev-0".into(), "dev-1".into(), "dev-2".into()], 10)
        );
        assert_eq!(
            names(registry.device_page(of_a, "", 4, 3)),
            (vec!["dev-4".into(), "dev-5".into(), "dev-6".into()], 10)
        );
        assert_eq!(
            names(registry.device_page(of_a, "", 9, 3)),
            (vec!["dev-9".into()], 10)
        );
        assert_eq!(names(registry.device_page(of_a, "", 10, 3)), (vec![], 10));
        assert_eq!(names(registry.device_page(of_a, "", 50, 3)), (vec![], 10));
        assert_eq!(
            names(registry.device_page(of_a, "-1", 0, 3)),
            (vec!["dev-1".into()], 1)
        );
        assert_eq!(names(registry.device_page(None, "dev-", 0, 0)).1, 11);
        let (every, total) = registry.device_page(None, "", 0, 20);
        assert_eq!(total, 11);
        let keys: Vec<(String, String)> = every
            .iter()
            .map(|d| {
                (
                    d.identity.product_key.to_string(),
                    d.identity.device_name.to_string(),
                )
            })
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "by product, then name");
    }

    #[test]
    fn random_text_is_alphanumeric_of_its_length_and_differs() {
        let a = random_text(32);
        let b = random_text(32);
        assert_eq!((a.len(), b.len()), (32, 32));
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
        assert_eq!(random_text(0), "");
        assert_eq!(random_text(200).len(), 200);
    }
}
