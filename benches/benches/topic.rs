//! Topics: the ACL checks a connection makes per PUBLISH and SUBSCRIBE, filter matching (aliot
//! beside `mqttbytes::matches` in the same group), and the broker's subscription index with
//! 100,000 devices of 16 subscriptions each plus their product's broadcast filter.

use std::hint::black_box;
use std::time::Instant;

use aliot_topic::{
    Acl, Permission, ProductCategories, SubscriptionIndex, TopicFilter, TopicLimits, TopicName,
};
use criterion::{Criterion, criterion_group, criterion_main};

const PRODUCTS: usize = 100;
const DEVICES_PER_PRODUCT: usize = 1_000;

fn product_key(product: usize) -> String {
    format!("a1BenchPK{product:02}")
}

fn device_name(device: usize) -> String {
    format!("device-{device:05}")
}

fn name(s: &str) -> TopicName {
    TopicName::new(s, &TopicLimits::default()).expect("bench topics are valid names")
}

fn filter(s: &str) -> TopicFilter {
    TopicFilter::new(s, &TopicLimits::default()).expect("bench filters are valid filters")
}

/// The defaults and two custom categories, as a product of the platform's current docs has.
fn product_categories() -> ProductCategories {
    let mut categories = ProductCategories::defaults();
    categories
        .add_custom("/${productKey}/${deviceName}/user/get", Permission::Sub)
        .expect("valid custom category");
    categories
        .add_custom("/${productKey}/${deviceName}/user/update", Permission::Pub)
        .expect("valid custom category");
    categories
}

/// What one device of the bench subscribes to: the Node SDK's connect-time subscriptions
/// (SPEC §3) trimmed to 16, and its custom topic.
fn device_filters(pk: &str, dn: &str) -> Vec<String> {
    let thing = [
        "event/property/post_reply",
        "event/+/post_reply",
        "deviceinfo/update_reply",
        "deviceinfo/delete_reply",
        "config/get_reply",
        "config/push",
        "topo/add_reply",
        "topo/get_reply",
        "sub/register_reply",
        "service/property/set",
        "service/+",
    ];
    let mut filters: Vec<String> = thing
        .iter()
        .map(|suffix| format!("/sys/{pk}/{dn}/thing/{suffix}"))
        .collect();
    filters.push(format!("/sys/{pk}/{dn}/rrpc/request/+"));
    filters.push(format!("/shadow/get/{pk}/{dn}"));
    filters.push(format!("/ext/session/{pk}/{dn}/combine/login_reply"));
    filters.push(format!("/ext/session/{pk}/{dn}/combine/logout_reply"));
    filters.push(format!("/{pk}/{dn}/user/get"));
    filters
}

fn acl_checks(c: &mut Criterion) {
    let acl = Acl::for_device("a1BenchPK00", "device-00001", &product_categories());
    let mut group = c.benchmark_group("topic/acl");
    let publishes = [
        (
            "thing_post",
            "/sys/a1BenchPK00/device-00001/thing/event/property/post",
        ),
        ("custom_update", "/a1BenchPK00/device-00001/user/update"),
        (
            "rrpc_response",
            "/sys/a1BenchPK00/device-00001/rrpc/response/1539421321846",
        ),
        (
            "denied_other_device",
            "/sys/a1BenchPK00/device-00002/thing/event/property/post",
        ),
    ];
    for (label, topic) in publishes {
        let topic = name(topic);
        group.bench_function(format!("may_publish/{label}"), |b| {
            b.iter(|| acl.may_publish(black_box(&topic)))
        });
    }
    let subscribes = [
        (
            "thing_reply",
            "/sys/a1BenchPK00/device-00001/thing/event/property/post_reply",
        ),
        (
            "rrpc_request",
            "/sys/a1BenchPK00/device-00001/rrpc/request/+",
        ),
        ("custom_get", "/a1BenchPK00/device-00001/user/get"),
        (
            "custom_rrpc",
            "/ext/rrpc/+/a1BenchPK00/device-00001/user/get",
        ),
        ("denied_wildcard", "/sys/a1BenchPK00/+/thing/#"),
    ];
    for (label, topic) in subscribes {
        let topic = filter(topic);
        group.bench_function(format!("may_subscribe/{label}"), |b| {
            b.iter(|| acl.may_subscribe(black_box(&topic)))
        });
    }
    group.bench_function("for_device", |b| {
        let categories = product_categories();
        b.iter(|| {
            Acl::for_device(
                black_box("a1BenchPK00"),
                black_box("device-00001"),
                &categories,
            )
        })
    });
    group.finish();
}

fn filter_matching(c: &mut Criterion) {
    let topic_text = "/sys/a1BenchPK00/device-00001/thing/event/property/post_reply";
    let topic = name(topic_text);
    let cases = [
        (
            "literal",
            "/sys/a1BenchPK00/device-00001/thing/event/property/post_reply",
        ),
        (
            "plus",
            "/sys/a1BenchPK00/device-00001/thing/event/+/post_reply",
        ),
        ("hash", "/sys/a1BenchPK00/device-00001/thing/#"),
        (
            "miss_last_level",
            "/sys/a1BenchPK00/device-00001/thing/event/property/post",
        ),
    ];
    let mut group = c.benchmark_group("topic/filter_match");
    for (label, filter_text) in cases {
        let parsed = filter(filter_text);
        assert_eq!(
            parsed.matches(&topic),
            mqttbytes::matches(topic_text, filter_text),
            "both crates agree on {filter_text}"
        );
        group.bench_function(format!("aliot/{label}"), |b| {
            b.iter(|| black_box(&parsed).matches(black_box(&topic)))
        });
        group.bench_function(format!("mqttbytes/{label}"), |b| {
            b.iter(|| mqttbytes::matches(black_box(topic_text), black_box(filter_text)))
        });
    }
    group.finish();
}

/// The process's resident memory in bytes, from `/proc/self/status` (Linux), if available.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// 100 products × 1,000 devices, each with its 16 filters and its product's broadcast filter.
fn big_index() -> SubscriptionIndex<u32, u8> {
    let resident_before = resident_bytes();
    let mut index = SubscriptionIndex::new();
    let mut session = 0u32;
    let started = Instant::now();
    for product in 0..PRODUCTS {
        let pk = product_key(product);
        let broadcast = filter(&format!("/broadcast/{pk}/#"));
        for device in 0..DEVICES_PER_PRODUCT {
            let dn = device_name(device);
            for text in device_filters(&pk, &dn) {
                index.insert(&filter(&text), session, 1);
            }
            index.insert(&broadcast, session, 0);
            session += 1;
        }
    }
    let elapsed = started.elapsed();
    eprintln!(
        "topic/index: built {} subscriptions of {} devices in {:.2?} ({:.0} ns per insert, \
         filter parsing and formatting included); {} nodes; heap estimate {:.1} MiB \
         ({:.0} bytes per subscription)",
        index.len(),
        session,
        elapsed,
        elapsed.as_nanos() as f64 / index.len() as f64,
        index.node_count(),
        index.heap_bytes_estimate() as f64 / (1024.0 * 1024.0),
        index.heap_bytes_estimate() as f64 / index.len() as f64,
    );
    if let (Some(before), Some(after)) = (resident_before, resident_bytes()) {
        eprintln!(
            "topic/index: resident memory grew by {:.1} MiB while building",
            after.saturating_sub(before) as f64 / (1024.0 * 1024.0)
        );
    }
    index
}

fn index_lookup(c: &mut Criterion) {
    let mut index = big_index();
    let mut group = c.benchmark_group("topic/index");
    let lookups = [
        (
            "property_post_reply",
            "/sys/a1BenchPK42/device-00777/thing/event/property/post_reply",
            2,
        ),
        (
            "rrpc_request",
            "/sys/a1BenchPK42/device-00777/rrpc/request/1539421321846",
            1,
        ),
        ("custom_get", "/a1BenchPK42/device-00777/user/get", 1),
        (
            "no_subscriber",
            "/sys/a1BenchPK42/device-00777/thing/event/property/post",
            0,
        ),
        (
            "unknown_device",
            "/sys/a1BenchPK42/nobody/thing/config/push",
            0,
        ),
        ("broadcast_1000", "/broadcast/a1BenchPK42/firmware", 1_000),
    ];
    for (label, topic, expected) in lookups {
        let topic = name(topic);
        let mut reached = 0usize;
        index.for_each_match(&topic, |_, _| reached += 1);
        assert_eq!(reached, expected, "{topic}");
        group.bench_function(format!("lookup/{label}"), |b| {
            b.iter(|| {
                let mut count = 0usize;
                index.for_each_match(black_box(&topic), |&session, &qos| {
                    count += black_box(session) as usize + usize::from(qos);
                });
                count
            })
        });
    }
    // A new device's 16 subscriptions in and out again: new branches under existing products.
    let newcomer = device_filters("a1BenchPK42", "device-99999")
        .iter()
        .map(|text| filter(text))
        .collect::<Vec<_>>();
    group.bench_function("insert_remove/new_device_16", |b| {
        b.iter(|| {
            for f in &newcomer {
                index.insert(f, u32::MAX, 1);
            }
            for f in &newcomer {
                black_box(index.remove(f, &u32::MAX));
            }
        })
    });
    // One more subscriber on a filter that already has 1,000.
    let broadcast = filter("/broadcast/a1BenchPK42/#");
    group.bench_function("insert_remove/broadcast_subscriber", |b| {
        b.iter(|| {
            index.insert(&broadcast, u32::MAX, 0);
            black_box(index.remove(&broadcast, &u32::MAX))
        })
    });
    group.finish();
}

criterion_group!(benches, acl_checks, filter_matching, index_lookup);
criterion_main!(benches);
