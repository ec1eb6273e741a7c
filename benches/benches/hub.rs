//! Hub routing: what the broker's one shared state machine costs per message.
//!
//! - `fanout/N`: one server-side publish to N devices subscribed to the product's broadcast
//!   topic, QoS 0 and QoS 1 (acknowledged at once, so the window never fills).
//! - `own_topics/N`: N devices, each holding 16 subscriptions of its own (an index of 16 N
//!   filters), each publishing in turn on its own topic that it also subscribes to.
//!
//! Every delivery is taken off the hub (`poll_output`) inside the measured loop.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use aliot_auth::DeviceIdentity;
use aliot_core::codec::QoS;
use aliot_core::hub::{ConnId, Hub, HubConfig, HubOutput};
use aliot_core::server::{Command, Event, SessionRequest};
use aliot_core::{ClientKey, Instant, Message};
use aliot_topic::{Acl, TopicFilter, TopicName};
use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const PK: &str = "a1TestPK001";

/// A hub with `n` online devices; `subscriptions(i)` gives device i's filters.
fn hub_with(n: usize, subscriptions: impl Fn(usize) -> Vec<String>) -> Hub {
    hub_configured(HubConfig::default(), n, subscriptions)
}

/// As [`hub_with`], with this configuration.
fn hub_configured(
    config: HubConfig,
    n: usize,
    subscriptions: impl Fn(usize) -> Vec<String>,
) -> Hub {
    let mut hub = Hub::new(config);
    for i in 0..n {
        let conn = ConnId(i as u64);
        let request = SessionRequest {
            key: Arc::new(ClientKey::Device(DeviceIdentity::new(
                PK,
                format!("dev-{i}"),
            ))),
            acl: Acl::open(),
            clean_session: true,
            keep_alive: Duration::from_secs(60),
            features: Default::default(),
            client_ip: None,
            iot_id: None,
        };
        hub.handle_event(conn, Event::SessionRequested(request), Instant::ZERO);
        let filters = subscriptions(i)
            .iter()
            .map(|f| {
                (
                    TopicFilter::new(f, &Default::default()).unwrap(),
                    QoS::AtLeastOnce,
                )
            })
            .collect();
        hub.handle_event(conn, Event::Subscribe(filters), Instant::ZERO);
    }
    while hub.poll_output().is_some() {}
    hub
}

/// Takes every output off the hub, acknowledging QoS 1 deliveries as a device would.
fn drain(hub: &mut Hub, acks: &mut Vec<(ConnId, aliot_core::codec::PacketId)>) -> usize {
    let mut deliveries = 0;
    while let Some(output) = hub.poll_output() {
        if let HubOutput::Connection {
            conn,
            command: Command::Deliver(delivery),
        } = output
        {
            deliveries += 1;
            if let Some(id) = delivery.packet_id {
                acks.push((conn, id));
            }
            black_box(delivery);
        }
    }
    for (conn, id) in acks.drain(..) {
        hub.handle_event(conn, Event::DeliveryAcked(id), Instant::ZERO);
    }
    deliveries
}

/// Each of `n` devices' own `user/get` topic.
fn user_get_topics(n: usize) -> Vec<TopicName> {
    (0..n)
        .map(|i| TopicName::new(&format!("/{PK}/dev-{i}/user/get"), &Default::default()).unwrap())
        .collect()
}

/// The next device (a stride of 7919 through them) publishes on its own topic, which only it
/// subscribes to, and gets the message back.
fn publish_on_own_topic(
    hub: &mut Hub,
    acks: &mut Vec<(ConnId, aliot_core::codec::PacketId)>,
    topics: &[TopicName],
    next: &mut usize,
    payload: &Bytes,
    qos: QoS,
) {
    let i = *next % topics.len();
    *next = next.wrapping_add(7919);
    let message = Message::new(topics[i].clone(), payload.clone(), qos);
    let publish = Event::Publish {
        message,
        packet_id: None,
    };
    hub.handle_event(ConnId(i as u64), publish, Instant::ZERO);
    assert_eq!(drain(hub, acks), 1);
}

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("hub/fanout");
    let topic = TopicName::new(&format!("/broadcast/{PK}/firmware"), &Default::default()).unwrap();
    let payload = Bytes::from(vec![0x42; 64]);
    for n in [1usize, 100, 1_000] {
        let mut hub = hub_with(n, |_| vec![format!("/broadcast/{PK}/#")]);
        let mut acks = Vec::new();
        group.throughput(Throughput::Elements(n as u64));
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
            let id = BenchmarkId::new(format!("qos{}", qos as u8), n);
            group.bench_function(id, |b| {
                b.iter(|| {
                    let message = Message::new(topic.clone(), payload.clone(), qos);
                    hub.publish(message, Instant::ZERO);
                    assert_eq!(drain(&mut hub, &mut acks), n);
                })
            });
        }
    }
    group.finish();
}

fn own_topics(c: &mut Criterion) {
    let mut group = c.benchmark_group("hub/own_topics");
    group.throughput(Throughput::Elements(1));
    let payload = Bytes::from(vec![0x42; 64]);
    for n in [1_000usize, 100_000] {
        let mut hub = hub_with(n, |i| {
            let dn = format!("dev-{i}");
            let mut filters: Vec<String> = (0..12)
                .map(|k| format!("/sys/{PK}/{dn}/thing/event/property{k}/post_reply"))
                .collect();
            filters.push(format!("/sys/{PK}/{dn}/rrpc/request/+"));
            filters.push(format!("/{PK}/{dn}/user/get"));
            filters.push(format!("/shadow/get/{PK}/{dn}"));
            filters.push(format!("/broadcast/{PK}/#"));
            filters
        });
        let topics = user_get_topics(n);
        let mut acks = Vec::new();
        let mut next = 0usize;
        group.bench_function(BenchmarkId::new("qos0", n), |b| {
            b.iter(|| {
                publish_on_own_topic(
                    &mut hub,
                    &mut acks,
                    &topics,
                    &mut next,
                    &payload,
                    QoS::AtMostOnce,
                )
            })
        });
    }
    group.finish();
}

/// What the web console's trace adds to a message: 1,000 devices each subscribed to its own
/// `user/get`, publishing on it at QoS 1 (one entry in, one out), with the trace off and
/// with the console's 4,096 entries.
fn trace(c: &mut Criterion) {
    let mut group = c.benchmark_group("hub/trace");
    group.throughput(Throughput::Elements(1));
    let payload = Bytes::from(vec![0x42; 64]);
    let n = 1_000usize;
    let topics = user_get_topics(n);
    for capacity in [0usize, 4_096] {
        let config = HubConfig {
            trace_capacity: capacity,
            ..HubConfig::default()
        };
        let mut hub = hub_configured(config, n, |i| vec![format!("/{PK}/dev-{i}/user/get")]);
        let mut acks = Vec::new();
        let mut next = 0usize;
        group.bench_function(BenchmarkId::new("qos1", capacity), |b| {
            b.iter(|| {
                publish_on_own_topic(
                    &mut hub,
                    &mut acks,
                    &topics,
                    &mut next,
                    &payload,
                    QoS::AtLeastOnce,
                )
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = fanout, own_topics, trace
}
criterion_main!(benches);
