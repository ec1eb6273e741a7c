//! The tokio broker end to end over loopback TCP: what a message costs through real sockets,
//! the connection tasks and the hub task.
//!
//! - `broker/qos1_latency`: device 1 publishes one QoS 1 message on the product's broadcast
//!   topic; the time until device 2 (subscribed) has read it. Device 2 acknowledges each one.
//! - `broker/qos0_burst/1000`: device 1 writes 1,000 QoS 0 messages of 64 bytes in one go; the
//!   time until device 2 has read them all (throughput in messages per second).
//! - `broker/rrpc`: one RRPC call through `BrokerHandle::rrpc` to a device that answers at once.
//!
//! The broker runs on a two-worker multi-thread runtime; the two test devices are small clients
//! over the `aliot-core` codec in the same runtime, so their decoding and encoding is in the
//! figures too.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aliot_auth::{DeviceIdentity, DeviceSecret, MemoryRegistry, SecureMode, SignRequest};
use aliot_core::PlatformAuthenticator;
use aliot_core::codec::{
    Connect, Decoder, Packet, PacketId, ProtocolVersion, PubAck, Publish, PublishQos, QoS,
    Subscribe, Utf8Bytes,
};
use aliot_tokio::broker::{Broker, BrokerConfig, ListenerConfig};
use aliot_topic::ProductCategories;
use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PK: &str = "a1TestPK001";
const NEWS: &str = "/broadcast/a1TestPK001/news";
const BURST: usize = 1000;

fn identity(n: u8) -> (DeviceIdentity, DeviceSecret) {
    (
        DeviceIdentity::new(PK, format!("dev-{n}")),
        DeviceSecret::new(format!("secret-{n}")),
    )
}

/// A device over the codec: enough to connect, subscribe, publish and read.
struct Device {
    stream: TcpStream,
    decoder: Decoder,
    read: BytesMut,
    write: BytesMut,
}

impl Device {
    async fn connect(addr: SocketAddr, n: u8) -> Device {
        let (identity, secret) = identity(n);
        let signed = SignRequest::new(&identity, &secret, SecureMode::Tcp)
            .sign()
            .unwrap();
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let mut device = Device {
            stream,
            decoder: Decoder::default(),
            read: BytesMut::with_capacity(64 * 1024),
            write: BytesMut::new(),
        };
        device.queue(Packet::from(Connect {
            protocol: ProtocolVersion::V3_1_1,
            client_id: Utf8Bytes::try_from(signed.client_id).unwrap(),
            clean_session: true,
            keep_alive: 600,
            username: Some(Utf8Bytes::try_from(signed.username).unwrap()),
            password: Some(Bytes::from(signed.password)),
            will: None,
        }));
        device.flush().await;
        match device.next().await {
            Packet::ConnAck(connack) => assert_eq!(connack.code as u8, 0),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        device
    }

    fn queue(&mut self, packet: Packet) {
        packet.encode(&mut self.write).unwrap();
    }

    async fn flush(&mut self) {
        self.stream.write_all(&self.write).await.unwrap();
        self.write.clear();
    }

    async fn next(&mut self) -> Packet {
        self.try_next()
            .await
            .expect("the broker closed the connection")
    }

    /// The next packet, or `None` once the broker has closed the connection.
    async fn try_next(&mut self) -> Option<Packet> {
        loop {
            if let Some(packet) = self.decoder.decode(&mut self.read).unwrap() {
                return Some(packet);
            }
            if self.stream.read_buf(&mut self.read).await.ok()? == 0 {
                return None;
            }
        }
    }

    async fn subscribe(&mut self, filter: &str) {
        self.queue(Packet::Subscribe(Subscribe {
            packet_id: PacketId::new(1).unwrap(),
            filters: vec![(Utf8Bytes::try_from(filter).unwrap(), QoS::AtLeastOnce)],
        }));
        self.flush().await;
        assert!(matches!(self.next().await, Packet::SubAck(_)));
    }

    /// Reads the next PUBLISH, acknowledging it if it is QoS 1.
    async fn receive(&mut self) -> Publish {
        loop {
            match self.next().await {
                Packet::Publish(publish) => {
                    if let PublishQos::AtLeastOnce(packet_id) = publish.qos {
                        self.queue(Packet::PubAck(PubAck { packet_id }));
                        self.flush().await;
                    }
                    return publish;
                }
                Packet::PubAck(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

fn publish(topic: &str, qos: PublishQos, payload: Bytes) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: Utf8Bytes::try_from(topic).unwrap(),
        payload,
    })
}

async fn start_broker() -> (Broker, SocketAddr) {
    let mut registry = MemoryRegistry::new();
    registry.add_product(PK, ProductCategories::defaults());
    for n in 1..=3 {
        let (identity, secret) = identity(n);
        registry
            .add_device(&identity.product_key, &identity.device_name, secret)
            .unwrap();
    }
    let broker = Broker::start(BrokerConfig {
        listeners: vec![ListenerConfig::tcp("127.0.0.1:0".parse().unwrap())],
        server: Default::default(),
        hub: Default::default(),
        authenticator: Arc::new(PlatformAuthenticator::new(registry)),
        max_connections: BrokerConfig::DEFAULT_MAX_CONNECTIONS,
        store: None,
        registry: None,
        cluster: None,
    })
    .await
    .unwrap();
    let (addr, _) = broker.listener_addrs()[0];
    (broker, addr)
}

/// Device 3 answers every RRPC request at once, until the broker closes the connection.
fn spawn_responder(mut device: Device) {
    tokio::spawn(async move {
        while let Some(packet) = device.try_next().await {
            let Packet::Publish(request) = packet else {
                continue;
            };
            let topic = request
                .topic
                .as_str()
                .replacen("/rrpc/request/", "/rrpc/response/", 1);
            device.queue(publish(&topic, PublishQos::AtMostOnce, request.payload));
            device.flush().await;
        }
    });
}

fn bench_broker(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (broker, mut publisher, mut subscriber, handle) = runtime.block_on(async {
        let (broker, addr) = start_broker().await;
        let publisher = Device::connect(addr, 1).await;
        let mut subscriber = Device::connect(addr, 2).await;
        subscriber.subscribe("/broadcast/a1TestPK001/#").await;
        let mut responder = Device::connect(addr, 3).await;
        responder
            .subscribe("/sys/a1TestPK001/dev-3/rrpc/request/+")
            .await;
        spawn_responder(responder);
        let handle = broker.handle();
        (broker, publisher, subscriber, handle)
    });

    let mut group = c.benchmark_group("broker");
    let payload = Bytes::from(vec![b'x'; 64]);
    let mut packet_id = 0u16;
    group.bench_function("qos1_latency", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    packet_id = packet_id.wrapping_add(1).max(1);
                    let qos = PublishQos::AtLeastOnce(PacketId::new(packet_id).unwrap());
                    publisher.queue(publish(NEWS, qos, payload.clone()));
                    publisher.flush().await;
                    subscriber.receive().await;
                    // And the publisher's PUBACK (measured too): nothing left unread.
                    assert!(matches!(publisher.next().await, Packet::PubAck(_)));
                }
                start.elapsed()
            })
        })
    });

    group.throughput(Throughput::Elements(BURST as u64));
    group.bench_function("qos0_burst/1000", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    for _ in 0..BURST {
                        publisher.queue(publish(NEWS, PublishQos::AtMostOnce, payload.clone()));
                    }
                    publisher.flush().await;
                    for _ in 0..BURST {
                        subscriber.receive().await;
                    }
                }
                start.elapsed()
            })
        })
    });

    group.throughput(Throughput::Elements(1));
    let (device, _) = identity(3);
    group.bench_function("rrpc", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let reply = handle
                        .rrpc(&device, payload.clone(), Duration::from_secs(5))
                        .await
                        .unwrap();
                    assert_eq!(reply.outcome.code(), "SUCCESS");
                }
                start.elapsed()
            })
        })
    });
    group.finish();

    let stats = runtime.block_on(handle.stats());
    assert_eq!(stats.counters.dropped.slow_consumer, 0, "{stats:?}");
    runtime.block_on(broker.shutdown());
}

criterion_group!(benches, bench_broker);
criterion_main!(benches);
