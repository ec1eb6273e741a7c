//! Device client: the per-message work of `aliot_core::client::Connection`, beside rumqttc's
//! `MqttState` (the state machine under rumqttc's event loop) in the same criterion group.
//!
//! Each side does what a device's loop does per message, bytes included:
//! - `publish_qos0`: take the command, encode the PUBLISH into the write buffer.
//! - `publish_qos1_roundtrip`: the same at QoS 1, then read the broker's PUBACK bytes, release
//!   the packet id and take the events.
//! - `receive_qos1`: read a PUBLISH (64-byte payload) from bytes, hand the message over as an
//!   event, encode its PUBACK.
//!
//! rumqttc works on its own packet types: its side adds `Packet::read`/`write` around
//! `handle_outgoing_packet`/`handle_incoming_packet`, which is what its event loop does.
//! The write buffer is cleared after each iteration; its capacity stays.

use std::hint::black_box;

use aliot_core::Instant;
use aliot_core::client::{ClientConfig, Connection, Credentials, Event};
use aliot_core::codec::{
    ConnAck, ConnectReturnCode, Packet, PacketId, Publish, PublishQos, QoS, Utf8Bytes,
};
use aliot_topic::TopicName;
use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rumqttc::mqttbytes::v4 as rm;

const TOPIC: &str = "/a1TestPK001/dev-001/user/update";
const INCOMING_TOPIC: &str = "/a1TestPK001/dev-001/user/get";
const MAX_PACKET: usize = 256 * 1024;

fn payload(len: usize) -> Bytes {
    (0..len)
        .map(|index| b"0123456789abcdef"[index % 16])
        .collect::<Vec<u8>>()
        .into()
}

/// An aliot client past CONNACK, with a window large enough never to fill in a bench.
fn connected_client() -> Connection {
    let credentials =
        Credentials::with_password("dev-001", "dev-001&a1TestPK001", "secret").expect("valid");
    let mut config = ClientConfig::new(credentials);
    config.keep_alive_secs = 0;
    let mut conn = Connection::new(config);
    conn.connect(Instant::ZERO);
    let mut connack = BytesMut::new();
    Packet::from(ConnAck {
        session_present: false,
        code: ConnectReturnCode::Accepted,
    })
    .encode(&mut connack)
    .expect("encodes");
    conn.handle_input(Instant::ZERO, &connack);
    assert_eq!(
        conn.poll_event(),
        Some(Event::Connected {
            session_present: false
        })
    );
    let mut discard = BytesMut::new();
    conn.poll_transmit(&mut discard);
    conn
}

/// PUBACK bytes for `id`.
fn puback_bytes(id: u16) -> [u8; 4] {
    let [high, low] = id.to_be_bytes();
    [0x40, 0x02, high, low]
}

fn incoming_publish_bytes(payload: &Bytes) -> Vec<u8> {
    let mut bytes = BytesMut::new();
    Packet::from(Publish {
        dup: false,
        qos: PublishQos::AtLeastOnce(PacketId::new(1).expect("non-zero")),
        retain: false,
        topic: Utf8Bytes::try_from(INCOMING_TOPIC).expect("valid"),
        payload: payload.clone(),
    })
    .encode(&mut bytes)
    .expect("encodes");
    bytes.to_vec()
}

fn publish_qos0(c: &mut Criterion) {
    let mut group = c.benchmark_group("client/publish_qos0");
    group.throughput(Throughput::Elements(1));
    let payload = payload(64);
    let topic = TopicName::from_static(TOPIC);

    let mut conn = connected_client();
    let mut out = BytesMut::with_capacity(4096);
    group.bench_function("aliot", |b| {
        b.iter(|| {
            let id = conn
                .publish(
                    topic.clone(),
                    payload.clone(),
                    QoS::AtMostOnce,
                    Instant::ZERO,
                )
                .expect("accepted");
            conn.poll_transmit(&mut out);
            // The `PublishSent` the hand-over reports, as a driver takes it.
            black_box(conn.poll_event());
            black_box(&out);
            out.clear();
            id
        })
    });

    let mut state = rumqttc::MqttState::new(100, false);
    group.bench_function("rumqttc", |b| {
        b.iter(|| {
            let publish = rm::Publish::from_bytes(TOPIC, rumqttc::QoS::AtMostOnce, payload.clone());
            let packet = state
                .handle_outgoing_packet(rumqttc::Request::Publish(publish))
                .expect("accepted");
            if let Some(packet) = packet {
                packet.write(&mut out, MAX_PACKET).expect("encodes");
            }
            state.events.clear();
            black_box(&out);
            out.clear();
        })
    });
    group.finish();
}

fn publish_qos1_roundtrip(c: &mut Criterion) {
    let mut group = c.benchmark_group("client/publish_qos1_roundtrip");
    group.throughput(Throughput::Elements(1));
    let payload = payload(64);
    let topic = TopicName::from_static(TOPIC);

    let mut conn = connected_client();
    let mut out = BytesMut::with_capacity(4096);
    group.bench_function("aliot", |b| {
        b.iter(|| {
            let id = conn
                .publish(
                    topic.clone(),
                    payload.clone(),
                    QoS::AtLeastOnce,
                    Instant::ZERO,
                )
                .expect("accepted")
                .packet_id()
                .expect("QoS 1 has an id");
            conn.poll_transmit(&mut out);
            black_box(&out);
            out.clear();
            conn.handle_input(Instant::ZERO, &puback_bytes(id.get()));
            black_box(conn.poll_event())
        })
    });

    let mut state = rumqttc::MqttState::new(100, false);
    let mut read = BytesMut::with_capacity(64);
    group.bench_function("rumqttc", |b| {
        b.iter(|| {
            let publish =
                rm::Publish::from_bytes(TOPIC, rumqttc::QoS::AtLeastOnce, payload.clone());
            let packet = state
                .handle_outgoing_packet(rumqttc::Request::Publish(publish))
                .expect("accepted");
            let Some(packet @ rm::Packet::Publish(rm::Publish { pkid, .. })) = packet else {
                panic!("rumqttc did not publish");
            };
            packet.write(&mut out, MAX_PACKET).expect("encodes");
            black_box(&out);
            out.clear();
            read.extend_from_slice(&puback_bytes(pkid));
            let puback = rm::Packet::read(&mut read, MAX_PACKET).expect("decodes");
            state.handle_incoming_packet(puback).expect("solicited");
            black_box(state.events.pop_front());
            state.events.clear();
        })
    });
    group.finish();
}

fn receive_qos1(c: &mut Criterion) {
    let mut group = c.benchmark_group("client/receive_qos1");
    group.throughput(Throughput::Elements(1));
    let wire = incoming_publish_bytes(&payload(64));

    let mut conn = connected_client();
    let mut out = BytesMut::with_capacity(4096);
    group.bench_function("aliot", |b| {
        b.iter(|| {
            conn.handle_input(Instant::ZERO, &wire);
            let event = conn.poll_event();
            conn.poll_transmit(&mut out);
            black_box(&out);
            out.clear();
            event
        })
    });

    let mut state = rumqttc::MqttState::new(100, false);
    let mut read = BytesMut::with_capacity(4096);
    group.bench_function("rumqttc", |b| {
        b.iter(|| {
            read.extend_from_slice(&wire);
            let publish = rm::Packet::read(&mut read, MAX_PACKET).expect("decodes");
            let reply = state.handle_incoming_packet(publish).expect("accepted");
            if let Some(puback) = reply {
                puback.write(&mut out, MAX_PACKET).expect("encodes");
            }
            let event = state.events.pop_front();
            state.events.clear();
            black_box(&out);
            out.clear();
            event
        })
    });
    group.finish();
}

criterion_group!(benches, publish_qos0, publish_qos1_roundtrip, receive_qos1);
criterion_main!(benches);
