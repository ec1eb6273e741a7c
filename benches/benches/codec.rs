//! Codec: decode and encode of the broker's hot packets, aliot beside `mqttbytes` (its MQTT
//! 3.1.1 module `v4`) in the same criterion group. Both sides work on the same wire bytes
//! (checked at start-up) and go through the same procedure; only the call differs.
//!
//! Decoding, three shapes of read buffer:
//! - `decode/<case>`: one packet in a fresh `BytesMut` copy of its bytes, made in the untimed
//!   setup of `iter_batched_ref` (a read of one packet into a new buffer). Decoded packets are
//!   dropped outside the timing.
//! - `decode/stream_100x_<case>`: 100 packets back to back in one fresh buffer, drained the way
//!   a connection's read buffer is; after the first packet the buffer is shared.
//! - `decode/reused_buffer_100x_<case>`: one 256 KiB buffer kept across iterations, as the
//!   broker keeps a connection's read buffer: 100 packets are copied in (untimed), decoded
//!   (timed), and dropped (untimed), so the next copy lands in the same memory.
//!
//! `floor/*` is what `bytes` alone costs for the same shapes with no parsing at all: the floor
//! under any decoder that returns the topic and payload as slices of the read buffer.
//!
//! Encoding appends to a buffer cleared each iteration, whose capacity is already there:
//! `aliot` copies the whole packet as mqttbytes does; `aliot_header_only` is
//! `Publish::encode_header`, everything but the payload; `aliot_header_and_payload_chunk` adds
//! what handing the payload over as its own chunk of a vectored write costs (a `Bytes` clone
//! pushed on a chunk list, dropped when the list is cleared the next iteration).

use std::hint::black_box;
use std::time::{Duration, Instant};

use aliot_core::codec::{
    Connect, Decoder, Packet, PacketId, ProtocolVersion, Publish, PublishQos, QoS, Subscribe,
    Utf8Bytes,
};
use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use mqttbytes::v4 as mb;

const TOPIC: &str = "/a1TestPK001/dev-001/user/update";
const CLIENT_ID: &str =
    "a1TestPK001.dev-001|securemode=3,signmethod=hmacsha256,timestamp=2524608000000|";
const USERNAME: &str = "dev-001&a1TestPK001";
const PASSWORD: &str = "cc10d0112dbafa9a6fc0d8fc3e5b6ba3ff9cb258d2f77c0e9153a83e4bcae470";
const FILTERS: [&str; 3] = [
    "/sys/a1TestPK001/dev-001/thing/#",
    "/sys/a1TestPK001/dev-001/rrpc/request/+",
    "/a1TestPK001/dev-001/user/get",
];

/// One packet as each crate holds it.
struct Case {
    name: &'static str,
    aliot: Packet,
    mqttbytes: mb::Packet,
}

fn text(value: &str) -> Utf8Bytes {
    Utf8Bytes::try_from(value).expect("bench strings are valid MQTT strings")
}

fn payload(len: usize) -> Bytes {
    (0..len)
        .map(|index| b"0123456789abcdef"[index % 16])
        .collect::<Vec<u8>>()
        .into()
}

fn cases() -> Vec<Case> {
    let small = payload(64);
    let large = payload(1024);
    let packet_id = PacketId::new(4242).expect("non-zero");

    let mut mb_publish_qos1 =
        mb::Publish::from_bytes(TOPIC, mqttbytes::QoS::AtLeastOnce, large.clone());
    mb_publish_qos1.pkid = packet_id.get();

    let mut mb_connect = mb::Connect::new(CLIENT_ID);
    mb_connect.keep_alive = 120;
    mb_connect.clean_session = false;
    mb_connect.set_login(USERNAME, PASSWORD);

    let mut mb_subscribe =
        mb::Subscribe::new_many(FILTERS.map(|filter| {
            mb::SubscribeFilter::new(filter.to_owned(), mqttbytes::QoS::AtLeastOnce)
        }));
    mb_subscribe.pkid = packet_id.get();

    vec![
        Case {
            name: "publish_64B_qos0",
            aliot: Packet::Publish(Publish {
                dup: false,
                qos: PublishQos::AtMostOnce,
                retain: false,
                topic: text(TOPIC),
                payload: small.clone(),
            }),
            mqttbytes: mb::Packet::Publish(mb::Publish::from_bytes(
                TOPIC,
                mqttbytes::QoS::AtMostOnce,
                small,
            )),
        },
        Case {
            name: "publish_1KiB_qos1",
            aliot: Packet::Publish(Publish {
                dup: false,
                qos: PublishQos::AtLeastOnce(packet_id),
                retain: false,
                topic: text(TOPIC),
                payload: large,
            }),
            mqttbytes: mb::Packet::Publish(mb_publish_qos1),
        },
        Case {
            name: "connect_platform",
            aliot: Packet::from(Connect {
                protocol: ProtocolVersion::V3_1_1,
                client_id: text(CLIENT_ID),
                clean_session: false,
                keep_alive: 120,
                username: Some(text(USERNAME)),
                password: Some(Bytes::from_static(PASSWORD.as_bytes())),
                will: None,
            }),
            mqttbytes: mb::Packet::Connect(mb_connect),
        },
        Case {
            name: "subscribe_3_filters",
            aliot: Packet::Subscribe(Subscribe {
                packet_id,
                filters: FILTERS
                    .map(|filter| (text(filter), QoS::AtLeastOnce))
                    .to_vec(),
            }),
            mqttbytes: mb::Packet::Subscribe(mb_subscribe),
        },
    ]
}

fn aliot_encode(packet: &Packet, buf: &mut BytesMut) {
    match packet {
        Packet::Publish(publish) => publish.encode(buf),
        Packet::Connect(connect) => connect.encode(buf),
        Packet::Subscribe(subscribe) => subscribe.encode(buf),
        other => other.encode(buf),
    }
    .expect("bench packets are valid");
}

fn mqttbytes_encode(packet: &mb::Packet, buf: &mut BytesMut) {
    match packet {
        mb::Packet::Publish(publish) => publish.write(buf),
        mb::Packet::Connect(connect) => connect.write(buf),
        mb::Packet::Subscribe(subscribe) => subscribe.write(buf),
        other => panic!("no bench case encodes {other:?}"),
    }
    .expect("bench packets are valid");
}

/// The wire bytes of a case, the same from both crates.
fn wire(case: &Case) -> Vec<u8> {
    let mut ours = BytesMut::new();
    aliot_encode(&case.aliot, &mut ours);
    let mut theirs = BytesMut::new();
    mqttbytes_encode(&case.mqttbytes, &mut theirs);
    assert_eq!(
        ours, theirs,
        "{}: both crates encode the same bytes",
        case.name
    );

    let mut buf = BytesMut::from(&ours[..]);
    assert_eq!(
        Decoder::default().decode(&mut buf).expect("valid"),
        Some(case.aliot.clone())
    );
    let mut buf = BytesMut::from(&ours[..]);
    assert_eq!(
        mb::read(&mut buf, 1 << 20).expect("valid"),
        case.mqttbytes,
        "{}: mqttbytes reads it back",
        case.name
    );
    ours.to_vec()
}

fn decode(c: &mut Criterion) {
    let decoder = Decoder::default();
    for case in cases() {
        let wire = wire(&case);
        let mut group = c.benchmark_group(format!("codec/decode/{}", case.name));
        group.throughput(Throughput::Elements(1));
        group.bench_function("aliot", |b| {
            b.iter_batched_ref(
                || BytesMut::from(&wire[..]),
                |buf| decoder.decode(buf),
                BatchSize::SmallInput,
            );
        });
        group.bench_function("mqttbytes", |b| {
            b.iter_batched_ref(
                || BytesMut::from(&wire[..]),
                |buf| mb::read(buf, 256 * 1024),
                BatchSize::SmallInput,
            );
        });
        group.finish();
    }
}

/// How many packets the stream and reused-buffer shapes decode per iteration.
const BATCH: usize = 100;

/// The two PUBLISH cases: 64 B at QoS 0 and 1 KiB at QoS 1.
fn publish_cases() -> Vec<Case> {
    cases()
        .into_iter()
        .filter(|case| matches!(case.aliot, Packet::Publish(_)))
        .collect()
}

/// `BATCH` packets read from one fresh buffer, the way a connection's read buffer is drained:
/// after the first packet the buffer is shared and each split costs a reference count. The
/// buffer copy and the output vector are made in the setup of each iteration (so the bytes are
/// warm in cache, as they are right after a socket read), and the packets are dropped after it.
fn decode_stream(c: &mut Criterion) {
    let decoder = Decoder::default();
    for case in publish_cases() {
        let stream = wire(&case).repeat(BATCH);
        let mut group = c.benchmark_group(format!("codec/decode/stream_100x_{}", case.name));
        group.throughput(Throughput::Elements(BATCH as u64));
        group.bench_function("aliot", |b| {
            b.iter_batched_ref(
                || (BytesMut::from(&stream[..]), Vec::with_capacity(BATCH)),
                |(buf, packets)| {
                    while let Some(packet) = decoder.decode(buf).expect("valid") {
                        packets.push(packet);
                    }
                },
                BatchSize::PerIteration,
            );
        });
        group.bench_function("mqttbytes", |b| {
            b.iter_batched_ref(
                || (BytesMut::from(&stream[..]), Vec::with_capacity(BATCH)),
                |(buf, packets)| {
                    while !buf.is_empty() {
                        packets.push(mb::read(buf, 256 * 1024).expect("valid"));
                    }
                },
                BatchSize::PerIteration,
            );
        });
        group.finish();
    }
}

/// Times `decode_batch` over `iters` batches of `BATCH` packets copied into one long-lived
/// 256 KiB buffer, the broker's read buffer. The copy in and the drop of the decoded packets
/// (after which the buffer is no longer shared and its memory is reused) are not timed.
fn reused_buffer_time<P>(
    iters: u64,
    stream: &[u8],
    mut decode_batch: impl FnMut(&mut BytesMut, &mut Vec<P>),
) -> Duration {
    let mut buf = BytesMut::with_capacity(256 * 1024);
    let mut packets = Vec::with_capacity(BATCH);
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        buf.extend_from_slice(stream);
        let start = Instant::now();
        decode_batch(&mut buf, &mut packets);
        total += start.elapsed();
        assert_eq!(packets.len(), BATCH);
        packets.clear();
    }
    total
}

fn decode_reused_buffer(c: &mut Criterion) {
    let decoder = Decoder::default();
    for case in publish_cases() {
        let stream = wire(&case).repeat(BATCH);
        let mut group = c.benchmark_group(format!("codec/decode/reused_buffer_100x_{}", case.name));
        group.throughput(Throughput::Elements(BATCH as u64));
        group.bench_function("aliot", |b| {
            b.iter_custom(|iters| {
                reused_buffer_time(iters, &stream, |buf, packets| {
                    while let Some(packet) = decoder.decode(buf).expect("valid") {
                        packets.push(packet);
                    }
                })
            });
        });
        group.bench_function("mqttbytes", |b| {
            b.iter_custom(|iters| {
                reused_buffer_time(iters, &stream, |buf, packets| {
                    while !buf.is_empty() {
                        packets.push(mb::read(buf, 256 * 1024).expect("valid"));
                    }
                })
            });
        });
        group.finish();
    }
}

/// What `bytes` alone costs for a zero-copy PUBLISH, no parsing: the floor under any decoder
/// that hands out the topic and the payload as `Bytes` of the read buffer. Same shapes and
/// setup as the decode benches above; `topic_end` is where the topic of the 64 B case ends.
fn floor(c: &mut Criterion) {
    let case = publish_cases().swap_remove(0);
    let wire = wire(&case);
    let Packet::Publish(publish) = &case.aliot else {
        unreachable!("publish_cases holds PUBLISH packets")
    };
    let topic_end = 4 + publish.topic.len();
    let mut group = c.benchmark_group("codec/floor/publish_64B_qos0");
    group.throughput(Throughput::Elements(1));
    // Split the packet off a fresh buffer (promotes it to shared storage), split the topic off
    // the packet (one reference count): the buffer keeps its view.
    group.bench_function("fresh_split_then_topic", |b| {
        b.iter_batched_ref(
            || BytesMut::from(&wire[..]),
            |buf| {
                let mut payload = buf.split_to(buf.len()).freeze();
                let topic = payload.split_to(topic_end);
                (topic, payload)
            },
            BatchSize::SmallInput,
        );
    });
    // Take the whole fresh buffer and split the topic off it (the promotion, no count).
    group.bench_function("fresh_taken_whole_then_topic", |b| {
        b.iter_batched_ref(
            || BytesMut::from(&wire[..]),
            |buf| {
                let mut payload = std::mem::take(buf);
                let topic = payload.split_to(topic_end).freeze();
                (topic, payload.freeze())
            },
            BatchSize::SmallInput,
        );
    });
    // One clone and one drop of a shared `Bytes`: two atomic reference count operations.
    let shared = Bytes::from(wire.clone());
    drop(shared.clone());
    group.bench_function("bytes_clone_and_drop", |b| {
        b.iter(|| black_box(black_box(&shared).clone()));
    });
    group.finish();

    let stream = wire.repeat(BATCH);
    let mut group = c.benchmark_group("codec/floor/stream_100x_publish_64B_qos0");
    group.throughput(Throughput::Elements(BATCH as u64));
    // Per packet: split it off the shared buffer (one count), split the topic (one more).
    group.bench_function("split_then_topic", |b| {
        b.iter_batched_ref(
            || (BytesMut::from(&stream[..]), Vec::with_capacity(BATCH)),
            |(buf, parts)| {
                while !buf.is_empty() {
                    let mut payload = buf.split_to(wire.len()).freeze();
                    let topic = payload.split_to(topic_end);
                    parts.push((topic, payload));
                }
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

fn encode(c: &mut Criterion) {
    for case in cases() {
        let mut group = c.benchmark_group(format!("codec/encode/{}", case.name));
        group.throughput(Throughput::Elements(1));
        let mut buf = BytesMut::with_capacity(4096);
        group.bench_function("aliot", |b| {
            b.iter(|| {
                buf.clear();
                aliot_encode(black_box(&case.aliot), &mut buf);
                black_box(buf.len())
            });
        });
        if let Packet::Publish(publish) = &case.aliot {
            // The zero-copy way out: the header here, the payload as its own chunk.
            group.bench_function("aliot_header_only", |b| {
                b.iter(|| {
                    buf.clear();
                    black_box(publish)
                        .encode_header(&mut buf)
                        .expect("bench packets are valid");
                    black_box(buf.len())
                });
            });
            let mut chunks: Vec<Bytes> = Vec::with_capacity(1);
            group.bench_function("aliot_header_and_payload_chunk", |b| {
                b.iter(|| {
                    buf.clear();
                    chunks.clear();
                    let publish = black_box(publish);
                    publish
                        .encode_header(&mut buf)
                        .expect("bench packets are valid");
                    chunks.push(publish.payload.clone());
                    black_box((buf.len(), chunks.len()))
                });
            });
        }
        group.bench_function("mqttbytes", |b| {
            b.iter(|| {
                buf.clear();
                mqttbytes_encode(black_box(&case.mqttbytes), &mut buf);
                black_box(buf.len())
            });
        });
        group.finish();
    }
}

criterion_group!(
    benches,
    decode,
    decode_stream,
    decode_reused_buffer,
    floor,
    encode
);
criterion_main!(benches);
