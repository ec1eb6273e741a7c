//! The in-memory registry.

use std::sync::Arc;

use aliot_auth::{DeviceIdentity, DeviceRegistry, DeviceSecret, MemoryRegistry, RegistryError};
use aliot_topic::{Permission, ProductCategories};

#[test]
fn devices_need_their_product_and_sound_names() {
    let mut registry = MemoryRegistry::new();
    assert_eq!(
        registry.add_device("pk", "dn", DeviceSecret::new("s")),
        Err(RegistryError::UnknownProduct("pk".into()))
    );
    registry.add_product("pk", ProductCategories::defaults());
    assert_eq!(
        registry.add_device("pk", "dn", DeviceSecret::new("s")),
        Ok(())
    );
    assert_eq!(
        registry.add_device("pk", "dn", DeviceSecret::new("t")),
        Err(RegistryError::DeviceExists(DeviceIdentity::new("pk", "dn")))
    );
    assert_eq!(
        registry.add_device("pk", "", DeviceSecret::new("s")),
        Err(RegistryError::EmptyDeviceName)
    );
    assert_eq!(
        registry.add_device("", "dn", DeviceSecret::new("s")),
        Err(RegistryError::EmptyProductKey)
    );
    assert_eq!(
        registry.add_device("pk", "d&n", DeviceSecret::new("s")),
        Err(RegistryError::AmpersandInName("d&n".into()))
    );
    registry.add_product("p&k", ProductCategories::defaults());
    assert_eq!(
        registry.add_device("p&k", "dn", DeviceSecret::new("s")),
        Err(RegistryError::AmpersandInName("p&k".into()))
    );
    assert_eq!(registry.device_count(), 1);
}

#[test]
fn lookup_gives_the_secret_and_the_shared_categories() {
    let mut registry = MemoryRegistry::new();
    registry.add_product("pk", ProductCategories::defaults());
    registry
        .add_device("pk", "a", DeviceSecret::new("sa"))
        .unwrap();
    registry
        .add_device("pk", "b", DeviceSecret::new("sb"))
        .unwrap();
    let a = registry.lookup("pk", "a").unwrap();
    let b = registry.lookup("pk", "b").unwrap();
    assert_eq!(a.secret, DeviceSecret::new("sa"));
    assert_eq!(b.secret, DeviceSecret::new("sb"));
    assert_ne!(a.secret, b.secret);
    assert!(Arc::ptr_eq(&a.categories, &b.categories));
    assert!(registry.lookup("pk", "c").is_none());
    assert!(registry.lookup("other", "a").is_none());
}

#[test]
fn adding_a_product_again_replaces_its_categories_and_keeps_its_devices() {
    let mut registry = MemoryRegistry::new();
    registry.add_product("pk", ProductCategories::defaults());
    registry
        .add_device("pk", "dn", DeviceSecret::new("s"))
        .unwrap();
    let mut custom = ProductCategories::defaults();
    custom
        .add_custom("/${productKey}/${deviceName}/user/get", Permission::Sub)
        .unwrap();
    registry.add_product("pk", custom.clone());
    let record = registry.lookup("pk", "dn").unwrap();
    assert_eq!(*record.categories, custom);
    assert_ne!(*record.categories, ProductCategories::defaults());
}

#[test]
fn devices_are_listed_in_order_and_can_be_removed() {
    let mut registry = MemoryRegistry::new();
    registry.add_product("pk2", ProductCategories::defaults());
    registry.add_product("pk1", ProductCategories::defaults());
    registry
        .add_device("pk2", "a", DeviceSecret::new("2a"))
        .unwrap();
    registry
        .add_device("pk1", "b", DeviceSecret::new("1b"))
        .unwrap();
    registry
        .add_device("pk1", "a", DeviceSecret::new("1a"))
        .unwrap();
    let listed: Vec<(DeviceIdentity, String)> = registry
        .devices()
        .map(|(identity, secret)| (identity, secret.expose().to_string()))
        .collect();
    assert_eq!(
        listed,
        vec![
            (DeviceIdentity::new("pk1", "a"), "1a".to_string()),
            (DeviceIdentity::new("pk1", "b"), "1b".to_string()),
            (DeviceIdentity::new("pk2", "a"), "2a".to_string()),
        ]
    );
    assert_eq!(
        registry.remove_device("pk1", "a"),
        Some(DeviceSecret::new("1a"))
    );
    assert_eq!(registry.remove_device("pk1", "a"), None);
    assert_eq!(registry.remove_device("nope", "a"), None);
    assert_eq!(registry.device_count(), 2);
    assert!(registry.lookup("pk1", "a").is_none());
}

#[test]
fn secrets_never_show_in_debug_output() {
    let mut registry = MemoryRegistry::new();
    registry.add_product("pk", ProductCategories::defaults());
    registry
        .add_device("pk", "dn", DeviceSecret::new("hunter2-very-secret"))
        .unwrap();
    let debug = format!("{registry:?} {:?}", registry.lookup("pk", "dn"));
    assert!(!debug.contains("hunter2"));
    assert!(debug.contains("DeviceSecret(..)"));
}
