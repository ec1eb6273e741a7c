//! Where a broker looks devices up: the [`DeviceRegistry`] trait and an in-memory registry.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::sync::Arc;

use aliot_topic::ProductCategories;
use thiserror::Error;

use crate::identity::{DeviceIdentity, DeviceSecret};

/// What the broker needs to know of a registered device.
#[derive(Clone, Debug)]
pub struct DeviceRecord {
    /// The device's secret, the HMAC key of its CONNECT.
    pub secret: DeviceSecret,
    /// The topic categories of the device's product.
    pub categories: Arc<ProductCategories>,
    /// The token of a device created by dynamic registration without pre-registration: its
    /// password for the token login (`authType=connwl`). `None`: it has none.
    pub token: Option<DeviceSecret>,
    /// The platform's id of the device (`iotId`), if the registry gives devices one: it names
    /// the device in what the server-side subscription forwards.
    pub iot_id: Option<String>,
}

/// A source of registered devices, asked once per CONNECT.
pub trait DeviceRegistry {
    /// The device's secret and its product's categories, or `None` when unknown.
    fn lookup(&self, product_key: &str, device_name: &str) -> Option<DeviceRecord>;
}

impl<R: DeviceRegistry + ?Sized> DeviceRegistry for &R {
    fn lookup(&self, product_key: &str, device_name: &str) -> Option<DeviceRecord> {
        (**self).lookup(product_key, device_name)
    }
}

impl<R: DeviceRegistry + ?Sized> DeviceRegistry for Box<R> {
    fn lookup(&self, product_key: &str, device_name: &str) -> Option<DeviceRecord> {
        (**self).lookup(product_key, device_name)
    }
}

impl<R: DeviceRegistry + ?Sized> DeviceRegistry for Arc<R> {
    fn lookup(&self, product_key: &str, device_name: &str) -> Option<DeviceRecord> {
        (**self).lookup(product_key, device_name)
    }
}

/// A device that cannot be added to a [`MemoryRegistry`].
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum RegistryError {
    /// The product was never added with [`MemoryRegistry::add_product`].
    #[error("product `{0}` is not registered; add the product before its devices")]
    UnknownProduct(String),
    /// The device is registered already.
    #[error("device {0} is registered already")]
    DeviceExists(DeviceIdentity),
    /// An empty product key.
    #[error("the product key is empty")]
    EmptyProductKey,
    /// An empty device name.
    #[error("the device name is empty")]
    EmptyDeviceName,
    /// A product key or device name with `&`, which the username `deviceName&productKey` cannot
    /// carry unambiguously, so the device could never connect.
    #[error("`{0}` contains `&`, which cannot appear in the username `deviceName&productKey`")]
    AmpersandInName(String),
}

/// A registered product: its categories and its devices by name.
#[derive(Clone, Debug)]
struct Product {
    categories: Arc<ProductCategories>,
    devices: BTreeMap<String, DeviceSecret>,
}

/// An in-memory registry of products and their devices, ordered by key (`no_std`).
///
/// ```
/// use aliot_auth::{DeviceRegistry, DeviceSecret, MemoryRegistry, RegistryError};
/// use aliot_topic::ProductCategories;
///
/// let mut registry = MemoryRegistry::new();
/// registry.add_product("pk", ProductCategories::defaults());
/// registry.add_device("pk", "dn", DeviceSecret::new("secret"))?;
/// assert_eq!(
///     registry.add_device("other", "dn", DeviceSecret::new("secret")),
///     Err(RegistryError::UnknownProduct("other".into()))
/// );
/// let record = registry.lookup("pk", "dn").expect("registered above");
/// assert_eq!(record.secret, DeviceSecret::new("secret"));
/// assert!(registry.lookup("pk", "nobody").is_none());
/// # Ok::<(), RegistryError>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct MemoryRegistry {
    products: BTreeMap<String, Product>,
}

impl MemoryRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a product with its topic categories. Adding a product again replaces its
    /// categories and keeps its devices.
    pub fn add_product(&mut self, product_key: &str, categories: ProductCategories) {
        let categories = Arc::new(categories);
        match self.products.get_mut(product_key) {
            Some(product) => product.categories = categories,
            None => {
                self.products.insert(
                    product_key.into(),
                    Product {
                        categories,
                        devices: BTreeMap::new(),
                    },
                );
            }
        }
    }

    /// Registers a device of a registered product.
    ///
    /// Both names must be non-empty and free of `&`; the device must not be registered yet
    /// (remove it first to change its secret).
    pub fn add_device(
        &mut self,
        product_key: &str,
        device_name: &str,
        secret: DeviceSecret,
    ) -> Result<(), RegistryError> {
        if product_key.is_empty() {
            return Err(RegistryError::EmptyProductKey);
        }
        if device_name.is_empty() {
            return Err(RegistryError::EmptyDeviceName);
        }
        for name in [product_key, device_name] {
            if name.contains('&') {
                return Err(RegistryError::AmpersandInName(name.into()));
            }
        }
        let product = self
            .products
            .get_mut(product_key)
            .ok_or_else(|| RegistryError::UnknownProduct(product_key.into()))?;
        if product.devices.contains_key(device_name) {
            return Err(RegistryError::DeviceExists(DeviceIdentity::new(
                product_key,
                device_name,
            )));
        }
        product.devices.insert(device_name.into(), secret);
        Ok(())
    }

    /// Unregisters a device, giving back its secret, or `None` if it was not registered.
    pub fn remove_device(&mut self, product_key: &str, device_name: &str) -> Option<DeviceSecret> {
        self.products
            .get_mut(product_key)?
            .devices
            .remove(device_name)
    }

    /// The categories of a registered product.
    pub fn product_categories(&self, product_key: &str) -> Option<&Arc<ProductCategories>> {
        self.products
            .get(product_key)
            .map(|product| &product.categories)
    }

    /// Every registered device with its secret, ordered by product key then device name.
    pub fn devices(&self) -> impl Iterator<Item = (DeviceIdentity, &DeviceSecret)> + '_ {
        self.products.iter().flat_map(|(product_key, product)| {
            product.devices.iter().map(move |(device_name, secret)| {
                (
                    DeviceIdentity::new(product_key.as_str(), device_name.as_str()),
                    secret,
                )
            })
        })
    }

    /// How many devices are registered, over all products.
    pub fn device_count(&self) -> usize {
        self.products
            .values()
            .map(|product| product.devices.len())
            .sum()
    }
}

impl DeviceRegistry for MemoryRegistry {
    fn lookup(&self, product_key: &str, device_name: &str) -> Option<DeviceRecord> {
        let product = self.products.get(product_key)?;
        let secret = product.devices.get(device_name)?;
        Some(DeviceRecord {
            secret: secret.clone(),
            categories: Arc::clone(&product.categories),
            token: None,
            iot_id: None,
        })
    }
}
