//! A script of broker bytes, broker packets, application commands, timeouts and reconnects
//! into one device-side connection: it must never panic, everything it writes must decode as
//! packets of the subset, and its window and queue bounds must hold.
#![no_main]

use std::time::Duration;

use aliot_auth::DeviceIdentity;
use aliot_core::Instant;
use aliot_core::client::{ClientConfig, Connection, Credentials};
use aliot_core::codec::{
    ConnAck, ConnectReturnCode, Decoder, Packet, PacketId, PubAck, Publish, PublishQos, QoS,
    SubAck, SubAckReturnCode, UnsubAck, Utf8Bytes,
};
use aliot_topic::{MessageId, TopicFilter, TopicName};
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;

const WINDOW: usize = 4;
const QUEUE: usize = 16;

/// Topics the scripted broker publishes on: plain, both RRPC forms for this device, RRPC for
/// another device, an RRPC response.
const INCOMING_TOPICS: [&str; 5] = [
    "/pk/dn/user/get",
    "/sys/pk/dn/rrpc/request/7",
    "/ext/rrpc/9/pk/dn/user/get",
    "/sys/pk/other/rrpc/request/7",
    "/sys/pk/dn/rrpc/response/7",
];

/// Reads the script one byte at a time; an exhausted script reads zeros.
struct Script<'a>(&'a [u8]);

impl Script<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&first, rest)) => {
                self.0 = rest;
                first
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    fn bytes(&mut self, len: usize) -> &[u8] {
        let (taken, rest) = self.0.split_at(len.min(self.0.len()));
        self.0 = rest;
        taken
    }
}

fn deliver(conn: &mut Connection, now: Instant, packet: Packet) {
    let mut bytes = BytesMut::new();
    if packet.encode(&mut bytes).is_ok() {
        conn.handle_input(now, &bytes);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut script = Script(data);
    let flags = script.byte();
    let mut config = ClientConfig::new(
        Credentials::with_password("dev", "dn&pk", "secret").expect("valid credentials"),
    )
    .with_identity(DeviceIdentity::new("pk", "dn"));
    config.clean_session = flags & 1 == 1;
    config.max_in_flight = WINDOW;
    config.max_queued = QUEUE;
    config.max_pending_rrpc = 4;
    config.max_packet_size = 1024;
    config.keep_alive_secs = u16::from(flags >> 4) * 10;
    let mut conn = Connection::new(config);
    let mut now = Instant::ZERO;
    let broker = Decoder::default();
    let mut wire = BytesMut::new();

    conn.connect(now);
    if flags & 2 == 2 {
        deliver(
            &mut conn,
            now,
            Packet::from(ConnAck {
                session_present: false,
                code: ConnectReturnCode::Accepted,
            }),
        );
    }

    while !script.0.is_empty() {
        match script.byte() % 14 {
            0 => {
                let len = usize::from(script.byte() % 32);
                let bytes = script.bytes(len).to_vec();
                conn.handle_input(now, &bytes);
            }
            1 => {
                let qos = match script.byte() % 3 {
                    0 => QoS::AtMostOnce,
                    1 => QoS::AtLeastOnce,
                    _ => QoS::ExactlyOnce,
                };
                let len = usize::from(script.byte()) * 8;
                let _ = conn.publish(
                    TopicName::from_static("/pk/dn/user/update"),
                    vec![0; len],
                    qos,
                    now,
                );
            }
            2 => {
                let _ = conn.subscribe(
                    &[(TopicFilter::from_static("/pk/dn/user/#"), QoS::AtLeastOnce)],
                    now,
                );
            }
            3 => {
                let _ = conn.unsubscribe(&[TopicFilter::from_static("/pk/dn/user/#")], now);
            }
            4 => {
                let id = MessageId(u64::from(script.byte() % 12));
                let _ = conn.respond_rrpc(id, Bytes::from_static(b"ok"), now);
            }
            5 => {
                now = now + Duration::from_millis(u64::from(script.u16()) * 10);
                conn.handle_timeout(now);
                // Whatever was due is done: the next deadline is later.
                assert!(conn.poll_timeout().is_none_or(|deadline| deadline > now));
            }
            6 => while conn.poll_event().is_some() {},
            7 => conn.handle_transport_closed(now),
            8 => {
                conn.connect(now);
                wire.clear();
                let code = ConnectReturnCode::from_u8(script.byte() % 8)
                    .unwrap_or(ConnectReturnCode::Accepted);
                let session_present = script.byte() & 1 == 1;
                deliver(
                    &mut conn,
                    now,
                    Packet::from(ConnAck {
                        session_present,
                        code,
                    }),
                );
            }
            9 => conn.disconnect(now),
            10 => {
                if let Some(packet_id) = PacketId::new(script.u16() % 24) {
                    deliver(&mut conn, now, Packet::from(PubAck { packet_id }));
                }
            }
            11 => {
                if let Some(packet_id) = PacketId::new(script.u16() % 24) {
                    let count = usize::from(script.byte() % 3);
                    let return_codes = vec![SubAckReturnCode::Success(QoS::AtLeastOnce); count];
                    deliver(
                        &mut conn,
                        now,
                        Packet::from(SubAck {
                            packet_id,
                            return_codes,
                        }),
                    );
                }
            }
            12 => {
                if let Some(packet_id) = PacketId::new(script.u16() % 24) {
                    deliver(&mut conn, now, Packet::from(UnsubAck { packet_id }));
                }
            }
            _ => {
                let topic = INCOMING_TOPICS[usize::from(script.byte()) % INCOMING_TOPICS.len()];
                let qos = match PacketId::new(script.u16()) {
                    Some(id) if script.byte() & 1 == 1 => PublishQos::AtLeastOnce(id),
                    _ => PublishQos::AtMostOnce,
                };
                let publish = Publish {
                    dup: false,
                    qos,
                    retain: false,
                    topic: Utf8Bytes::from_static(topic),
                    payload: Bytes::from_static(b"payload"),
                };
                deliver(&mut conn, now, Packet::from(publish));
            }
        }

        // What the client writes is always whole, valid packets.
        while conn.poll_transmit(&mut wire) {}
        while let Some(packet) = broker
            .decode(&mut wire)
            .expect("the client writes valid packets")
        {
            assert!(!matches!(
                packet,
                Packet::ConnAck(_) | Packet::SubAck(_) | Packet::PingResp
            ));
        }
        assert!(wire.is_empty(), "the client wrote a partial packet");
        assert!(conn.in_flight_len() <= WINDOW);
        // The SUBSCRIBE that restores a lost session is not refused by the queue's limit; with
        // one filter there is at most one of them queued at a time.
        assert!(conn.queued_len() <= QUEUE + 1);
        assert!(
            conn.subscriptions_len() <= 1,
            "one filter is ever subscribed"
        );
    }
});
