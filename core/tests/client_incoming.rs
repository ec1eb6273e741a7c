//! Messages from the broker: delivery, PUBACK only once the application took the message, and
//! what the client does with bytes that break the protocol.

mod client_broker;

use aliot_core::Message;
use aliot_core::client::{DisconnectReason, Event, ProtocolViolation};
use aliot_core::codec::{DecodeError, Packet, PubAck, QoS, Subscribe};
use aliot_topic::TopicError;
use bytes::Bytes;
use client_broker::{Harness, config, id, topic};

fn message(topic_suffix: &str, payload: &'static [u8], qos: QoS) -> Message {
    Message {
        topic: topic(topic_suffix),
        payload: Bytes::from_static(payload),
        qos,
    }
}

#[test]
fn a_qos0_message_is_delivered_and_never_acknowledged() {
    let mut harness = Harness::connected(config());
    harness.incoming("/a1TestPK001/dev-001/user/get", b"hello", None);
    assert_eq!(
        harness.events(),
        [Event::Message {
            message: message("get", b"hello", QoS::AtMostOnce),
            dup: false
        }]
    );
    assert!(harness.sent().is_empty());
}

#[test]
fn a_qos1_message_is_acknowledged_only_once_the_application_took_it() {
    let mut harness = Harness::connected(config());
    harness.incoming("/a1TestPK001/dev-001/user/get", b"one", Some(7));
    harness.incoming("/a1TestPK001/dev-001/user/get", b"two", Some(8));
    assert!(
        harness.sent().is_empty(),
        "no PUBACK before the application took the message"
    );

    assert_eq!(
        harness.conn.poll_event(),
        Some(Event::Message {
            message: message("get", b"one", QoS::AtLeastOnce),
            dup: false
        })
    );
    assert_eq!(
        harness.sent(),
        [Packet::PubAck(PubAck { packet_id: id(7) })]
    );

    assert!(harness.conn.poll_event().is_some());
    assert_eq!(
        harness.sent(),
        [Packet::PubAck(PubAck { packet_id: id(8) })]
    );
}

#[test]
fn a_message_taken_after_the_transport_closed_is_not_acknowledged() {
    let mut harness = Harness::connected(config());
    harness.incoming("/a1TestPK001/dev-001/user/get", b"one", Some(7));
    harness.conn.handle_transport_closed(harness.now);
    harness.conn.connect(harness.now);
    harness.sent();
    // The broker redelivers it on the resumed session; the old copy is still handed over,
    // but its PUBACK would be for another transport.
    assert!(matches!(
        harness.conn.poll_event(),
        Some(Event::Message { .. })
    ));
    assert!(harness.sent().is_empty());
}

#[test]
fn duplicates_are_delivered_with_their_dup_flag() {
    let mut harness = Harness::connected(config());
    harness.deliver(aliot_core::codec::Publish {
        dup: true,
        qos: aliot_core::codec::PublishQos::AtLeastOnce(id(3)),
        retain: false,
        topic: "/a1TestPK001/dev-001/user/get".try_into().expect("valid"),
        payload: Bytes::from_static(b"again"),
    });
    assert_eq!(
        harness.events(),
        [Event::Message {
            message: message("get", b"again", QoS::AtLeastOnce),
            dup: true
        }]
    );
    assert_eq!(
        harness.sent(),
        [Packet::PubAck(PubAck { packet_id: id(3) })]
    );
}

#[test]
fn a_message_split_across_reads_is_delivered_once_whole() {
    let mut harness = Harness::connected(config());
    let mut bytes = bytes::BytesMut::new();
    Packet::from(aliot_core::codec::Publish {
        dup: false,
        qos: aliot_core::codec::PublishQos::AtMostOnce,
        retain: false,
        topic: "/a1TestPK001/dev-001/user/get".try_into().expect("valid"),
        payload: Bytes::from_static(b"split"),
    })
    .encode(&mut bytes)
    .expect("encodes");
    for byte in bytes.iter() {
        assert!(harness.events().is_empty());
        harness.deliver_bytes(&[*byte]);
    }
    assert_eq!(
        harness.events(),
        [Event::Message {
            message: message("get", b"split", QoS::AtMostOnce),
            dup: false
        }]
    );
}

#[test]
fn malformed_bytes_end_the_connection_as_a_protocol_violation() {
    let mut harness = Harness::connected(config());
    // Packet type 0 is reserved.
    harness.deliver_bytes(&[0x00, 0x00]);
    assert_eq!(
        harness.events(),
        [Event::Disconnected(DisconnectReason::ProtocolViolation(
            ProtocolViolation::Malformed(DecodeError::ReservedPacketType { packet_type: 0 })
        ))]
    );
    assert!(!harness.conn.is_connected());
    // What follows on that transport is ignored.
    harness.incoming("/a1TestPK001/dev-001/user/get", b"late", None);
    assert!(harness.events().is_empty());
}

#[test]
fn a_qos2_publish_is_a_protocol_violation() {
    let mut harness = Harness::connected(config());
    // PUBLISH, QoS 2, topic "a", packet id 1, no payload.
    harness.deliver_bytes(&[0x34, 0x05, 0x00, 0x01, b'a', 0x00, 0x01]);
    assert_eq!(
        harness.events(),
        [Event::Disconnected(DisconnectReason::ProtocolViolation(
            ProtocolViolation::Malformed(DecodeError::Qos2Publish)
        ))]
    );
}

#[test]
fn a_publish_to_a_wildcard_topic_is_a_protocol_violation() {
    let mut harness = Harness::connected(config());
    harness.incoming("/a1TestPK001/+/user/get", b"x", None);
    assert_eq!(
        harness.events(),
        [Event::Disconnected(DisconnectReason::ProtocolViolation(
            ProtocolViolation::InvalidTopic(TopicError::WildcardInName)
        ))]
    );
}

#[test]
fn a_subscribe_from_the_broker_is_a_protocol_violation() {
    let mut harness = Harness::connected(config());
    harness.deliver(Subscribe {
        packet_id: id(1),
        filters: vec![("a".try_into().expect("valid"), QoS::AtMostOnce)],
    });
    assert_eq!(
        harness.events(),
        [Event::Disconnected(DisconnectReason::ProtocolViolation(
            ProtocolViolation::UnexpectedPacket(aliot_core::codec::PacketType::Subscribe)
        ))]
    );
}

#[test]
fn a_packet_over_the_configured_size_is_a_protocol_violation() {
    let mut config = config();
    config.max_packet_size = 32;
    let mut harness = Harness::connected(config);
    harness.incoming("/a1TestPK001/dev-001/user/get", &[b'x'; 64], None);
    assert!(matches!(
        harness.events().as_slice(),
        [Event::Disconnected(DisconnectReason::ProtocolViolation(
            ProtocolViolation::Malformed(DecodeError::PacketTooLarge { max: 32, .. })
        ))]
    ));
}
