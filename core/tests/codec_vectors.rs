//! Byte-exact vectors for every packet of the subset, derived by hand from the MQTT 3.1.1 text
//! (§2 fixed header, §3 packets), checked both ways: decode(bytes) == packet and
//! encode(packet) == bytes.

use aliot_core::codec::{
    ConnAck, Connect, ConnectReturnCode, DEFAULT_MAX_PACKET_SIZE, Decoder, MAX_REMAINING_LENGTH,
    Packet, PacketId, ProtocolVersion, PubAck, Publish, PublishQos, QoS, SubAck, SubAckReturnCode,
    Subscribe, UnsubAck, Unsubscribe, Utf8Bytes, Will,
};
use bytes::{Bytes, BytesMut};

fn id(value: u16) -> PacketId {
    PacketId::new(value).expect("test ids are non-zero")
}

fn text(value: &'static str) -> Utf8Bytes {
    Utf8Bytes::from_static(value)
}

/// Decodes `wire` as exactly one packet, with a decoder allowing any size.
fn decode_one(wire: &[u8]) -> Packet {
    let mut buf = BytesMut::from(wire);
    let packet = Decoder::new(usize::MAX)
        .decode(&mut buf)
        .expect("vector decodes")
        .expect("vector is complete");
    assert!(buf.is_empty(), "the decoder consumed exactly the packet");
    packet
}

fn encode(packet: &Packet) -> Vec<u8> {
    let mut buf = BytesMut::new();
    packet.encode(&mut buf).expect("vector encodes");
    assert_eq!(packet.encoded_len(), Ok(buf.len()));
    buf.to_vec()
}

/// Checks the vector both ways.
fn assert_vector(wire: &[u8], packet: Packet) {
    assert_eq!(decode_one(wire), packet, "decode {wire:02X?}");
    assert_eq!(encode(&packet), wire, "encode {packet:?}");
}

#[test]
fn connect_mqtt_3_1_1_minimal() {
    let wire = [
        0x10, 0x13, // CONNECT, remaining length 19
        0x00, 0x04, b'M', b'Q', b'T', b'T', // protocol name
        0x04, // level 4
        0x02, // clean session
        0x00, 0x3C, // keepalive 60
        0x00, 0x07, b'd', b'e', b'v', b'-', b'0', b'0', b'1', // client id
    ];
    assert_vector(
        &wire,
        Packet::from(Connect {
            protocol: ProtocolVersion::V3_1_1,
            client_id: text("dev-001"),
            clean_session: true,
            keep_alive: 60,
            username: None,
            password: None,
            will: None,
        }),
    );
}

#[test]
fn connect_mqtt_3_1_with_credentials() {
    let wire = [
        0x10, 0x16, // CONNECT, remaining length 22
        0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', // protocol name of 3.1
        0x03, // level 3
        0xC2, // user name, password, clean session
        0x00, 0x1E, // keepalive 30
        0x00, 0x02, b'c', b'1', // client id
        0x00, 0x01, b'u', // user name
        0x00, 0x01, b'p', // password
    ];
    assert_vector(
        &wire,
        Packet::from(Connect {
            protocol: ProtocolVersion::V3_1,
            client_id: text("c1"),
            clean_session: true,
            keep_alive: 30,
            username: Some(text("u")),
            password: Some(Bytes::from_static(b"p")),
            will: None,
        }),
    );
}

#[test]
fn connect_with_will_and_every_flag() {
    let wire = [
        0x10, 0x1A, // CONNECT, remaining length 26
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, // MQTT 4
        0xEE, // user name, password, will retain, will QoS 1, will, clean session
        0x00, 0x0A, // keepalive 10
        0x00, 0x00, // empty client id
        0x00, 0x01, b'w', // will topic
        0x00, 0x02, 0x01, 0x02, // will payload
        0x00, 0x01, b'u', // user name
        0x00, 0x02, b'p', b'w', // password
    ];
    assert_vector(
        &wire,
        Packet::from(Connect {
            protocol: ProtocolVersion::V3_1_1,
            client_id: text(""),
            clean_session: true,
            keep_alive: 10,
            username: Some(text("u")),
            password: Some(Bytes::from_static(b"pw")),
            will: Some(Will {
                topic: text("w"),
                payload: Bytes::from_static(&[1, 2]),
                qos: QoS::AtLeastOnce,
                retain: true,
            }),
        }),
    );
}

#[test]
fn connect_will_qos_2_without_clean_session() {
    let wire = [
        0x10, 0x12, // CONNECT, remaining length 18
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, // MQTT 4
        0x14, // will QoS 2, will
        0x00, 0x00, // keepalive 0
        0x00, 0x01, b'c', // client id
        0x00, 0x01, b't', // will topic
        0x00, 0x00, // empty will payload
    ];
    assert_vector(
        &wire,
        Packet::from(Connect {
            protocol: ProtocolVersion::V3_1_1,
            client_id: text("c"),
            clean_session: false,
            keep_alive: 0,
            username: None,
            password: None,
            will: Some(Will {
                topic: text("t"),
                payload: Bytes::new(),
                qos: QoS::ExactlyOnce,
                retain: false,
            }),
        }),
    );
}

#[test]
fn connect_of_the_platform() {
    let client_id =
        "a1TestPK001.dev-001|securemode=3,signmethod=hmacsha256,timestamp=2524608000000|";
    let username = "dev-001&a1TestPK001";
    let password = "CC10D0112DBAFA9A6FC0D8FC3E5B6BA3FF9CB258D2F77C0E9153A83E4BCAE470";
    let remaining = 10 + 2 + client_id.len() + 2 + username.len() + 2 + password.len();
    assert_eq!(remaining, 178);
    let mut wire = vec![0x10, 0xB2, 0x01]; // 178 = 0x32 + 1 * 128
    wire.extend_from_slice(&[0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0xC0, 0x00, 0x78]);
    for field in [client_id, username, password] {
        wire.extend_from_slice(&u16::try_from(field.len()).unwrap().to_be_bytes());
        wire.extend_from_slice(field.as_bytes());
    }
    assert_vector(
        &wire,
        Packet::from(Connect {
            protocol: ProtocolVersion::V3_1_1,
            client_id: Utf8Bytes::try_from(client_id).unwrap(),
            clean_session: false,
            keep_alive: 120,
            username: Some(Utf8Bytes::try_from(username).unwrap()),
            password: Some(Bytes::from_static(password.as_bytes())),
            will: None,
        }),
    );
}

#[test]
fn connack_every_return_code() {
    let codes = [
        ConnectReturnCode::Accepted,
        ConnectReturnCode::UnacceptableProtocolVersion,
        ConnectReturnCode::IdentifierRejected,
        ConnectReturnCode::ServerUnavailable,
        ConnectReturnCode::BadUserNameOrPassword,
        ConnectReturnCode::NotAuthorized,
    ];
    for (byte, code) in (0u8..).zip(codes) {
        assert_eq!(ConnectReturnCode::from_u8(byte), Some(code));
        assert_vector(
            &[0x20, 0x02, 0x00, byte],
            Packet::ConnAck(ConnAck {
                session_present: false,
                code,
            }),
        );
    }
    assert_eq!(ConnectReturnCode::from_u8(6), None);
}

#[test]
fn connack_session_present() {
    assert_vector(
        &[0x20, 0x02, 0x01, 0x00],
        Packet::ConnAck(ConnAck {
            session_present: true,
            code: ConnectReturnCode::Accepted,
        }),
    );
}

#[test]
fn publish_qos_0() {
    assert_vector(
        &[0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'],
        Packet::Publish(Publish {
            dup: false,
            qos: PublishQos::AtMostOnce,
            retain: false,
            topic: text("a/b"),
            payload: Bytes::from_static(b"hi"),
        }),
    );
}

#[test]
fn publish_qos_0_empty_payload_retained() {
    assert_vector(
        &[0x31, 0x05, 0x00, 0x03, b'a', b'/', b'b'],
        Packet::Publish(Publish {
            dup: false,
            qos: PublishQos::AtMostOnce,
            retain: true,
            topic: text("a/b"),
            payload: Bytes::new(),
        }),
    );
}

#[test]
fn publish_qos_1_dup_retain() {
    assert_vector(
        &[
            0x3B, 0x09, // PUBLISH, DUP, QoS 1, RETAIN, remaining length 9
            0x00, 0x03, b'a', b'/', b'b', // topic
            0x00, 0x0A, // packet id 10
            b'h', b'i', // payload
        ],
        Packet::Publish(Publish {
            dup: true,
            qos: PublishQos::AtLeastOnce(id(10)),
            retain: true,
            topic: text("a/b"),
            payload: Bytes::from_static(b"hi"),
        }),
    );
}

#[test]
fn publish_qos_1_with_utf8_topic() {
    // "温度" is 6 bytes of UTF-8.
    assert_vector(
        &[
            0x32, 0x0A, 0x00, 0x06, 0xE6, 0xB8, 0xA9, 0xE5, 0xBA, 0xA6, 0xFF, 0xFF,
        ],
        Packet::Publish(Publish {
            dup: false,
            qos: PublishQos::AtLeastOnce(id(u16::MAX)),
            retain: false,
            topic: text("温度"),
            payload: Bytes::new(),
        }),
    );
}

#[test]
fn puback() {
    assert_vector(
        &[0x40, 0x02, 0x00, 0x0A],
        Packet::PubAck(PubAck { packet_id: id(10) }),
    );
}

#[test]
fn subscribe_two_filters() {
    assert_vector(
        &[
            0x82, 0x0C, // SUBSCRIBE (flags 0010), remaining length 12
            0x00, 0x01, // packet id 1
            0x00, 0x03, b'a', b'/', b'#', 0x01, // "a/#" QoS 1
            0x00, 0x01, b'b', 0x02, // "b" QoS 2
        ],
        Packet::Subscribe(Subscribe {
            packet_id: id(1),
            filters: vec![
                (text("a/#"), QoS::AtLeastOnce),
                (text("b"), QoS::ExactlyOnce),
            ],
        }),
    );
}

#[test]
fn suback_every_return_code() {
    assert_vector(
        &[0x90, 0x06, 0x00, 0x01, 0x00, 0x01, 0x02, 0x80],
        Packet::SubAck(SubAck {
            packet_id: id(1),
            return_codes: vec![
                SubAckReturnCode::Success(QoS::AtMostOnce),
                SubAckReturnCode::Success(QoS::AtLeastOnce),
                SubAckReturnCode::Success(QoS::ExactlyOnce),
                SubAckReturnCode::Failure,
            ],
        }),
    );
}

#[test]
fn unsubscribe() {
    assert_vector(
        &[
            0xA2, 0x0A, // UNSUBSCRIBE (flags 0010), remaining length 10
            0x00, 0x02, // packet id 2
            0x00, 0x03, b'a', b'/', b'b', // "a/b"
            0x00, 0x01, b'+', // "+"
        ],
        Packet::Unsubscribe(Unsubscribe {
            packet_id: id(2),
            filters: vec![text("a/b"), text("+")],
        }),
    );
}

#[test]
fn unsuback() {
    assert_vector(
        &[0xB0, 0x02, 0x00, 0x02],
        Packet::UnsubAck(UnsubAck { packet_id: id(2) }),
    );
}

#[test]
fn pingreq_pingresp_disconnect() {
    assert_vector(&[0xC0, 0x00], Packet::PingReq);
    assert_vector(&[0xD0, 0x00], Packet::PingResp);
    assert_vector(&[0xE0, 0x00], Packet::Disconnect);
}

/// The remaining-length boundaries of MQTT 3.1.1 table 2.4, through PUBLISH with topic "t".
#[test]
fn remaining_length_boundaries() {
    let cases: [(usize, &[u8]); 6] = [
        (127, &[0x7F]),
        (128, &[0x80, 0x01]),
        (16_383, &[0xFF, 0x7F]),
        (16_384, &[0x80, 0x80, 0x01]),
        (2_097_151, &[0xFF, 0xFF, 0x7F]),
        (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
    ];
    for (remaining, length_bytes) in cases {
        let payload = Bytes::from(vec![0x5A; remaining - 3]);
        let publish = Publish {
            dup: false,
            qos: PublishQos::AtMostOnce,
            retain: false,
            topic: text("t"),
            payload,
        };
        let mut wire = vec![0x30];
        wire.extend_from_slice(length_bytes);
        wire.extend_from_slice(&[0x00, 0x01, b't']);
        wire.extend_from_slice(&publish.payload);
        assert_vector(&wire, Packet::Publish(publish));
    }
}

/// The largest remaining length, 268,435,455 = FF FF FF 7F. The payload is a zeroed allocation
/// the test never touches (`encode_header` does not copy it), so no 256 MiB is written.
#[test]
fn largest_remaining_length_header() {
    let publish = Publish {
        dup: false,
        qos: PublishQos::AtMostOnce,
        retain: false,
        topic: text("t"),
        payload: Bytes::from(vec![0; MAX_REMAINING_LENGTH - 3]),
    };
    let mut header = BytesMut::new();
    publish.encode_header(&mut header).unwrap();
    assert_eq!(
        &header[..],
        &[0x30, 0xFF, 0xFF, 0xFF, 0x7F, 0x00, 0x01, b't']
    );
    assert_eq!(publish.encoded_header_len(), Ok(8));
    assert_eq!(publish.encoded_len(), Ok(5 + MAX_REMAINING_LENGTH));
}

/// MQTT 3.1.1 does not require the shortest remaining-length encoding; a longer one is read.
#[test]
fn non_minimal_remaining_length_is_read() {
    assert_eq!(decode_one(&[0xC0, 0x80, 0x00]), Packet::PingReq);
    assert_eq!(
        decode_one(&[0x40, 0x82, 0x80, 0x00, 0x00, 0x07]),
        Packet::PubAck(PubAck { packet_id: id(7) })
    );
}

#[test]
fn publish_encode_header_leaves_the_payload_out() {
    let publish = Publish {
        dup: false,
        qos: PublishQos::AtLeastOnce(id(0x0102)),
        retain: false,
        topic: text("a/b"),
        payload: Bytes::from_static(b"payload"),
    };
    let mut header = BytesMut::new();
    publish.encode_header(&mut header).unwrap();
    assert_eq!(
        &header[..],
        &[0x32, 0x0E, 0x00, 0x03, b'a', b'/', b'b', 0x01, 0x02]
    );
    assert_eq!(publish.encoded_header_len(), Ok(header.len()));
}

#[test]
fn encode_appends_to_what_is_in_the_buffer() {
    let mut buf = BytesMut::from(&b"already here"[..]);
    Packet::PingResp.encode(&mut buf).unwrap();
    PubAck { packet_id: id(3) }.encode(&mut buf);
    assert_eq!(&buf[..], b"already here\xD0\x00\x40\x02\x00\x03");
}

/// Strings and payloads of a decoded packet point into the read buffer: nothing is copied.
#[test]
fn decoding_is_zero_copy() {
    let wire = [
        0x32, 0x0A, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x01, b'x', b'y', b'z',
    ];
    let mut buf = BytesMut::with_capacity(64);
    buf.extend_from_slice(&wire);
    let start = buf.as_ptr() as usize;
    let inside = |pointer: *const u8| (start..start + wire.len()).contains(&(pointer as usize));
    let Some(Packet::Publish(publish)) = Decoder::default().decode(&mut buf).unwrap() else {
        panic!("a PUBLISH")
    };
    assert!(inside(publish.topic.as_bytes().as_ptr()));
    assert!(inside(publish.payload.as_ptr()));
    assert_eq!(publish.topic.as_bytes().as_ptr() as usize, start + 4);
    assert_eq!(publish.payload.as_ptr() as usize, start + 9);
}

#[test]
fn packets_back_to_back_in_one_buffer() {
    let mut buf = BytesMut::from(
        &[
            0xC0, 0x00, 0x40, 0x02, 0x00, 0x05, 0x30, 0x04, 0x00, 0x01, b't', b'!', 0xE0, 0x00,
        ][..],
    );
    let decoder = Decoder::default();
    assert_eq!(decoder.max_packet_size(), DEFAULT_MAX_PACKET_SIZE);
    let mut packets = Vec::new();
    while let Some(packet) = decoder.decode(&mut buf).unwrap() {
        packets.push(packet);
    }
    assert_eq!(
        packets,
        vec![
            Packet::PingReq,
            Packet::PubAck(PubAck { packet_id: id(5) }),
            Packet::Publish(Publish {
                dup: false,
                qos: PublishQos::AtMostOnce,
                retain: false,
                topic: text("t"),
                payload: Bytes::from_static(b"!"),
            }),
            Packet::Disconnect,
        ]
    );
    assert!(buf.is_empty());
}

#[test]
fn every_strict_prefix_waits_and_leaves_the_buffer_untouched() {
    let wire = [
        0x10, 0x13, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x07, b'd',
        b'e', b'v', b'-', b'0', b'0', b'1',
    ];
    for end in 0..wire.len() {
        let mut buf = BytesMut::from(&wire[..end]);
        assert_eq!(
            Decoder::default().decode(&mut buf),
            Ok(None),
            "prefix {end}"
        );
        assert_eq!(&buf[..], &wire[..end]);
    }
}

#[test]
fn value_types() {
    assert_eq!(QoS::try_from(0), Ok(QoS::AtMostOnce));
    assert_eq!(QoS::try_from(2), Ok(QoS::ExactlyOnce));
    assert_eq!(QoS::try_from(3).map_err(|error| error.value), Err(3));
    assert_eq!(u8::from(QoS::AtLeastOnce), 1);
    assert!(QoS::AtMostOnce < QoS::ExactlyOnce);

    assert_eq!(id(513).to_string(), "513");
    assert_eq!(u16::from(id(513)), 513);
    assert_eq!(PacketId::new(0), None);

    assert_eq!(PublishQos::AtMostOnce.qos(), QoS::AtMostOnce);
    assert_eq!(PublishQos::AtMostOnce.packet_id(), None);
    assert_eq!(PublishQos::AtLeastOnce(id(4)).qos(), QoS::AtLeastOnce);
    assert_eq!(PublishQos::AtLeastOnce(id(4)).packet_id(), Some(id(4)));

    assert_eq!(ProtocolVersion::V3_1.protocol_name(), "MQIsdp");
    assert_eq!(ProtocolVersion::V3_1.level(), 3);
    assert_eq!(ProtocolVersion::V3_1_1.protocol_name(), "MQTT");
    assert_eq!(ProtocolVersion::V3_1_1.level(), 4);

    assert_eq!(
        SubAckReturnCode::from_u8(0x80),
        Some(SubAckReturnCode::Failure)
    );
    assert_eq!(SubAckReturnCode::from_u8(0x81), None);
    assert_eq!(u8::from(SubAckReturnCode::Success(QoS::ExactlyOnce)), 2);
    assert_eq!(
        ConnectReturnCode::NotAuthorized.to_string(),
        "5 (not authorized)"
    );
    assert_eq!(
        Packet::from(PubAck { packet_id: id(1) })
            .packet_type()
            .to_string(),
        "PUBACK"
    );
}

#[test]
fn utf8_bytes_conversions() {
    let from_str = Utf8Bytes::try_from("/a/b").unwrap();
    let from_string = Utf8Bytes::try_from(String::from("/a/b")).unwrap();
    let from_bytes = Utf8Bytes::try_from(Bytes::from_static(b"/a/b")).unwrap();
    assert_eq!(from_str, from_string);
    assert_eq!(from_str, from_bytes);
    assert_eq!(from_str, "/a/b");
    assert_eq!("/a/b", from_str);
    assert_eq!(*"/a/b", from_str);
    assert_eq!(from_str.as_str(), "/a/b");
    assert_eq!(from_str.as_bytes(), b"/a/b");
    assert_eq!(from_str.len(), 4);
    assert!(!from_str.is_empty());
    assert!(Utf8Bytes::default().is_empty());
    assert_eq!(format!("{from_str:?}"), "\"/a/b\"");
    assert_eq!(from_str.to_string(), "/a/b");
    assert_eq!(from_str.split('/').count(), 3);
    assert_eq!(from_str.clone().into_bytes(), Bytes::from_static(b"/a/b"));
    let longest = "x".repeat(65_535);
    assert_eq!(Utf8Bytes::try_from(longest.as_str()).unwrap().len(), 65_535);
}
