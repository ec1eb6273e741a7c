//! A scripted broker for the device client's tests: it decodes what the client writes with the
//! codec, encodes what the broker answers, and moves a manual clock.

#![allow(dead_code)] // Each test file uses its own part of this module.

use core::time::Duration;

use aliot_auth::DeviceIdentity;
use aliot_core::Instant;
use aliot_core::client::{ClientConfig, Connection, Credentials, Event};
use aliot_core::codec::{
    ConnAck, ConnectReturnCode, Decoder, Packet, PacketId, PubAck, Publish, PublishQos, QoS,
    SubAck, SubAckReturnCode, UnsubAck, Utf8Bytes,
};
use aliot_topic::TopicName;
use bytes::{Bytes, BytesMut};

/// The device of the tests.
pub const PRODUCT_KEY: &str = "a1TestPK001";
/// The device of the tests.
pub const DEVICE_NAME: &str = "dev-001";

/// A configuration with a plain login and the test device's identity.
pub fn config() -> ClientConfig {
    let credentials = Credentials::with_password("dev-001", "alice", "s3cret").expect("valid");
    ClientConfig::new(credentials).with_identity(DeviceIdentity::new(PRODUCT_KEY, DEVICE_NAME))
}

/// A topic of the test device.
pub fn topic(suffix: &str) -> TopicName {
    TopicName::new(
        &format!("/{PRODUCT_KEY}/{DEVICE_NAME}/user/{suffix}"),
        &Default::default(),
    )
    .expect("valid topic")
}

/// A packet id from a number.
pub fn id(value: u16) -> PacketId {
    PacketId::new(value).expect("non-zero")
}

/// The client, the broker's view of the wire, and the clock.
pub struct Harness {
    pub conn: Connection,
    pub now: Instant,
    decoder: Decoder,
    wire: BytesMut,
}

impl Harness {
    /// A client with this configuration, not connected, at time zero.
    pub fn new(config: ClientConfig) -> Self {
        Self {
            conn: Connection::new(config),
            now: Instant::ZERO,
            decoder: Decoder::default(),
            wire: BytesMut::new(),
        }
    }

    /// A client with this configuration, connected with a fresh session (nothing queued).
    pub fn connected(config: ClientConfig) -> Self {
        let mut harness = Self::new(config);
        harness.connect(false);
        harness
    }

    /// Moves the clock.
    pub fn advance(&mut self, by: Duration) {
        self.now = self.now + by;
    }

    /// Every packet the client has written since the last call, decoded as the broker reads it.
    pub fn sent(&mut self) -> Vec<Packet> {
        while self.conn.poll_transmit(&mut self.wire) {}
        let mut packets = Vec::new();
        while let Some(packet) = self
            .decoder
            .decode(&mut self.wire)
            .expect("client bytes decode")
        {
            packets.push(packet);
        }
        assert!(self.wire.is_empty(), "the client wrote a partial packet");
        packets
    }

    /// Every event since the last call (taking them writes PUBACKs of QoS 1 messages).
    pub fn events(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        while let Some(event) = self.conn.poll_event() {
            events.push(event);
        }
        events
    }

    /// The broker sends a packet.
    pub fn deliver(&mut self, packet: impl Into<Packet>) {
        let mut bytes = BytesMut::new();
        packet
            .into()
            .encode(&mut bytes)
            .expect("broker packet encodes");
        self.conn.handle_input(self.now, &bytes);
    }

    /// The broker sends raw bytes.
    pub fn deliver_bytes(&mut self, bytes: &[u8]) {
        self.conn.handle_input(self.now, bytes);
    }

    /// `connect` on a new transport, checks the CONNECT, answers CONNACK accepted with
    /// `session_present`, and checks the `Connected` event. Returns the packets written after
    /// the CONNECT and the events after `Connected`.
    pub fn connect(&mut self, session_present: bool) -> (Vec<Packet>, Vec<Event>) {
        self.conn.connect(self.now);
        let sent = self.sent();
        assert!(
            matches!(sent.as_slice(), [Packet::Connect(_)]),
            "expected one CONNECT, got {sent:?}"
        );
        self.deliver(ConnAck {
            session_present,
            code: ConnectReturnCode::Accepted,
        });
        let mut events = self.events();
        assert_eq!(
            events.first(),
            Some(&Event::Connected { session_present }),
            "events: {events:?}"
        );
        events.remove(0);
        (self.sent(), events)
    }

    /// The broker acknowledges a QoS 1 PUBLISH.
    pub fn puback(&mut self, packet_id: PacketId) {
        self.deliver(PubAck { packet_id });
    }

    /// The broker answers a SUBSCRIBE.
    pub fn suback(&mut self, packet_id: PacketId, return_codes: Vec<SubAckReturnCode>) {
        self.deliver(SubAck {
            packet_id,
            return_codes,
        });
    }

    /// The broker answers an UNSUBSCRIBE.
    pub fn unsuback(&mut self, packet_id: PacketId) {
        self.deliver(UnsubAck { packet_id });
    }

    /// The broker delivers a message.
    pub fn incoming(&mut self, topic: &str, payload: &'static [u8], packet_id: Option<u16>) {
        self.deliver(Publish {
            dup: false,
            qos: match packet_id {
                Some(value) => PublishQos::AtLeastOnce(id(value)),
                None => PublishQos::AtMostOnce,
            },
            retain: false,
            topic: Utf8Bytes::try_from(topic).expect("valid string"),
            payload: Bytes::from_static(payload),
        });
    }

    /// The client publishes at QoS 1 on a test topic and returns the id.
    pub fn publish_qos1(&mut self, payload: &'static [u8]) -> PacketId {
        self.conn
            .publish(topic("update"), payload, QoS::AtLeastOnce, self.now)
            .expect("publish accepted")
            .packet_id()
            .expect("QoS 1 has an id")
    }
}

/// The PUBLISH packets among `packets`, as (packet id, dup, payload).
pub fn publishes(packets: &[Packet]) -> Vec<(Option<u16>, bool, Bytes)> {
    packets
        .iter()
        .filter_map(|packet| match packet {
            Packet::Publish(publish) => Some((
                publish.qos.packet_id().map(PacketId::get),
                publish.dup,
                publish.payload.clone(),
            )),
            _ => None,
        })
        .collect()
}
