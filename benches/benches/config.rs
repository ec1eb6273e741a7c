//! The `aliot` command's start-up cost: parsing and checking a TOML configuration of a fleet
//! (10 products with two custom categories each, 100 to 10,000 devices in all), as
//! `aliot serve --config` and `aliot check-config` do once.

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;

use aliot_tokio::config::Config;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const PRODUCTS: usize = 10;

/// A configuration of `devices` devices spread over [`PRODUCTS`] products, 32-character secrets.
fn fleet_config(devices: usize) -> String {
    let mut text = String::from(
        "[[listener]]\nbind = \"0.0.0.0:1883\"\n\n[api]\nbind = \"127.0.0.1:8080\"\n\n[limits]\ninflight_window = 16\n\n",
    );
    for product in 0..PRODUCTS {
        let _ = write!(
            text,
            "[[product]]\nkey = \"a1BenchPK{product:02}\"\ncategories = [\n  {{ topic = \"/${{productKey}}/${{deviceName}}/user/get\", permission = \"sub\" }},\n  {{ topic = \"/${{productKey}}/${{deviceName}}/user/update\", permission = \"pub\" }},\n]\n\n"
        );
        for device in (product..devices).step_by(PRODUCTS) {
            let _ = write!(
                text,
                "[[product.device]]\nname = \"device-{device:05}\"\nsecret = \"{product:02}{device:05}secret0123456789abcdefghi\"\n\n"
            );
        }
    }
    text
}

fn bench_parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("config/parse");
    for devices in [100, 1_000, 10_000] {
        let text = fleet_config(devices);
        let parsed = Config::parse(&text, "fleet.toml", Path::new(".")).expect("a valid fleet");
        assert_eq!(parsed.registry.device_count(), devices);
        group.throughput(Throughput::Elements(devices as u64));
        group.bench_with_input(BenchmarkId::from_parameter(devices), &text, |b, text| {
            b.iter(|| Config::parse(black_box(text), "fleet.toml", Path::new(".")))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_parse);
criterion_main!(benches);
