//! The tokio device client end to end: `aliot_tokio::Client` publishing through this crate's
//! broker over loopback TCP, beside rumqttc 0.25's `AsyncClient` + `EventLoop` against the same
//! broker in the same run. Plus the cost of one `Backoff::delay`.
//!
//! - `publish_qos1_roundtrip`: one QoS 1 PUBLISH and its PUBACK, awaited before the next
//!   (aliot: `publish(..).await` resolves on the PUBACK; rumqttc: `publish(..).await` queues it,
//!   the PUBACK is seen by the task polling the event loop and handed back on a channel).
//! - `publish_qos1_window_64`: 64 QoS 1 PUBLISHes in flight at once, until all 64 PUBACKs.
//! - `publish_qos0`: one QoS 0 PUBLISH, awaited until written (aliot) or queued (rumqttc;
//!   it gives no other signal).
//!
//! The broker runs in open mode (anonymous clients, any topic) on a 2-worker tokio runtime
//! that both clients share; nobody subscribes, so each message ends at the broker. 64-byte
//! payloads.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aliot_auth::MemoryRegistry;
use aliot_core::PlatformAuthenticator;
use aliot_core::client::{Backoff, Credentials};
use aliot_core::codec::QoS;
use aliot_tokio::broker::{Broker, BrokerConfig, ListenerConfig};
use aliot_tokio::client::{Client, ClientOptions, Login};
use aliot_topic::TopicName;
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

const TOPIC: &str = "bench/tokio_client";
const WINDOW: usize = 64;

fn payload() -> Bytes {
    Bytes::from_static(b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

async fn start_broker() -> (Broker, u16) {
    let authenticator = PlatformAuthenticator::new(MemoryRegistry::new()).with_open_mode(true);
    let broker = Broker::start(BrokerConfig {
        listeners: vec![ListenerConfig::tcp(
            "127.0.0.1:0".parse().expect("an address"),
        )],
        server: Default::default(),
        hub: Default::default(),
        authenticator: Arc::new(authenticator),
        max_connections: BrokerConfig::DEFAULT_MAX_CONNECTIONS,
        store: None,
        registry: None,
        cluster: None,
    })
    .await
    .expect("the broker starts");
    let port = broker.listener_addrs()[0].0.port();
    (broker, port)
}

async fn aliot_client(port: u16) -> Client {
    let login = Login::credentials(Credentials::anonymous("aliot-bench").expect("a client id"));
    let mut options = ClientOptions::new("127.0.0.1", port, login);
    options.max_in_flight = WINDOW;
    Client::connect(options).await.expect("aliot connects")
}

/// A rumqttc client whose event loop runs in its own task and reports each PUBACK.
async fn rumqttc_client(port: u16) -> (rumqttc::AsyncClient, mpsc::UnboundedReceiver<()>) {
    let mut options = rumqttc::MqttOptions::new("rumqttc-bench", "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(60));
    options.set_inflight(WINDOW as u16);
    let (client, mut event_loop) = rumqttc::AsyncClient::new(options, WINDOW * 2);
    let (acks, acked) = mpsc::unbounded_channel();
    let (connected, is_connected) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut connected = Some(connected);
        loop {
            match event_loop.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                    if let Some(connected) = connected.take() {
                        let _ = connected.send(());
                    }
                }
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => {
                    if acks.send(()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                // The broker shut down at the end of the bench.
                Err(_) => return,
            }
        }
    });
    is_connected.await.expect("rumqttc connects");
    (client, acked)
}

fn bench_publish(c: &mut Criterion) {
    let runtime = runtime();
    let (broker, port) = runtime.block_on(start_broker());
    let aliot = runtime.block_on(aliot_client(port));
    let (rumqttc, mut rumqttc_acks) = runtime.block_on(rumqttc_client(port));
    let topic = TopicName::from_static(TOPIC);

    let mut group = c.benchmark_group("tokio_client");
    group.throughput(Throughput::Elements(1));
    group.bench_function("publish_qos1_roundtrip/aliot", |b| {
        b.iter_custom(|iterations| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iterations {
                    let id = aliot
                        .publish(topic.clone(), payload(), QoS::AtLeastOnce)
                        .await
                        .expect("PUBACK");
                    black_box(id);
                }
                start.elapsed()
            })
        });
    });
    group.bench_function("publish_qos1_roundtrip/rumqttc", |b| {
        b.iter_custom(|iterations| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iterations {
                    rumqttc
                        .publish(TOPIC, rumqttc::QoS::AtLeastOnce, false, payload())
                        .await
                        .expect("queued");
                    rumqttc_acks.recv().await.expect("PUBACK");
                }
                start.elapsed()
            })
        });
    });
    group.bench_function("publish_qos0/aliot", |b| {
        b.iter_custom(|iterations| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iterations {
                    let written = aliot
                        .publish(topic.clone(), payload(), QoS::AtMostOnce)
                        .await
                        .expect("written");
                    black_box(written);
                }
                start.elapsed()
            })
        });
    });
    group.bench_function("publish_qos0/rumqttc", |b| {
        b.iter_custom(|iterations| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iterations {
                    rumqttc
                        .publish(TOPIC, rumqttc::QoS::AtMostOnce, false, payload())
                        .await
                        .expect("queued");
                }
                start.elapsed()
            })
        });
    });

    group.throughput(Throughput::Elements(WINDOW as u64));
    group.bench_function("publish_qos1_window_64/aliot", |b| {
        b.iter_custom(|iterations| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iterations {
                    let mut in_flight = tokio::task::JoinSet::new();
                    for _ in 0..WINDOW {
                        let client = aliot.clone();
                        let topic = topic.clone();
                        in_flight.spawn(async move {
                            client.publish(topic, payload(), QoS::AtLeastOnce).await
                        });
                    }
                    while let Some(done) = in_flight.join_next().await {
                        black_box(done.expect("the task").expect("PUBACK"));
                    }
                }
                start.elapsed()
            })
        });
    });
    group.bench_function("publish_qos1_window_64/rumqttc", |b| {
        b.iter_custom(|iterations| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iterations {
                    for _ in 0..WINDOW {
                        rumqttc
                            .publish(TOPIC, rumqttc::QoS::AtLeastOnce, false, payload())
                            .await
                            .expect("queued");
                    }
                    for _ in 0..WINDOW {
                        rumqttc_acks.recv().await.expect("PUBACK");
                    }
                }
                start.elapsed()
            })
        });
    });
    group.finish();

    drop(aliot);
    drop(rumqttc);
    runtime.block_on(broker.shutdown());
}

fn bench_backoff(c: &mut Criterion) {
    let backoff = Backoff::default();
    let mut attempt = 0_u32;
    c.bench_function("tokio_client/backoff_delay", |b| {
        b.iter(|| {
            attempt = attempt.wrapping_add(1) % 16;
            black_box(backoff.delay(black_box(attempt), black_box(0x9e37_79b9)))
        });
    });
}

criterion_group!(benches, bench_publish, bench_backoff);
criterion_main!(benches);
