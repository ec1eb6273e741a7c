//! Authentication: `verify` of one CONNECT per sign method against a registry of 10,000
//! devices, `sign` per method, and parsing the C SDK's client id.

use std::hint::black_box;

use aliot_auth::{
    ClientId, ConnectCredentials, ConnectFields, DeviceIdentity, DeviceSecret, MemoryRegistry,
    SecureMode, SignMethod, VerifyOptions, sign, verify,
};
use aliot_topic::ProductCategories;
use criterion::{Criterion, criterion_group, criterion_main};

const PRODUCTS: usize = 10;
const DEVICES_PER_PRODUCT: usize = 1_000;

fn product_key(product: usize) -> String {
    format!("a1BenchPK{product:02}")
}

fn device_name(device: usize) -> String {
    format!("device-{device:05}")
}

fn device_secret(product: usize, device: usize) -> DeviceSecret {
    DeviceSecret::new(format!("{product:02}{device:05}secret0123456789abcdefghi"))
}

/// 10 products of 1,000 devices each, 32-character secrets.
fn registry() -> MemoryRegistry {
    let mut registry = MemoryRegistry::new();
    for product in 0..PRODUCTS {
        registry.add_product(&product_key(product), ProductCategories::defaults());
        for device in 0..DEVICES_PER_PRODUCT {
            registry
                .add_device(
                    &product_key(product),
                    &device_name(device),
                    device_secret(product, device),
                )
                .expect("bench names are distinct and valid");
        }
    }
    registry
}

/// Credentials of a device in the middle of the registry, signed as the C SDK does.
fn credentials(method: SignMethod) -> ConnectCredentials {
    let (product, device) = (PRODUCTS / 2, DEVICES_PER_PRODUCT / 2);
    let identity = DeviceIdentity::new(product_key(product), device_name(device));
    sign(
        &identity,
        &device_secret(product, device),
        method,
        &format!("{}.{}", identity.product_key, identity.device_name),
        Some("2524608000000"),
        SecureMode::Tls,
    )
}

fn bench_verify(c: &mut Criterion) {
    let registry = registry();
    assert_eq!(registry.device_count(), PRODUCTS * DEVICES_PER_PRODUCT);
    let options = VerifyOptions::default();
    let mut group = c.benchmark_group("auth/verify");
    for method in SignMethod::ALL {
        let credentials = credentials(method);
        let fields = ConnectFields {
            client_id: &credentials.client_id,
            username: Some(&credentials.username),
            password: Some(credentials.password.as_bytes()),
        };
        verify(&fields, &registry, &options).expect("the bench credentials verify");
        group.bench_function(method.as_str(), |b| {
            b.iter(|| verify(black_box(&fields), &registry, &options))
        });
    }
    group.finish();
}

fn bench_sign(c: &mut Criterion) {
    let identity = DeviceIdentity::new(product_key(5), device_name(500));
    let secret = device_secret(5, 500);
    let client_id = format!("{}.{}", identity.product_key, identity.device_name);
    let mut group = c.benchmark_group("auth/sign");
    for method in SignMethod::ALL {
        group.bench_function(method.as_str(), |b| {
            b.iter(|| {
                sign(
                    black_box(&identity),
                    &secret,
                    method,
                    &client_id,
                    Some("2524608000000"),
                    SecureMode::Tls,
                )
            })
        });
    }
    group.finish();
}

fn bench_parse(c: &mut Criterion) {
    let text = "a1TestPK001.dev-001|timestamp=2524608000000,_ss=1,_v=sdk-c-4.1.0,securemode=2,signmethod=hmacsha256,ext=3,|";
    c.bench_function("auth/client_id_parse/c_sdk", |b| {
        b.iter(|| ClientId::parse(black_box(text)))
    });
}

criterion_group!(benches, bench_verify, bench_sign, bench_parse);
criterion_main!(benches);
