//! One test per rule the codec enforces, each asserting the exact error variant, for decoding
//! and for encoding.

use aliot_core::codec::{
    BinaryField, ConnAck, Connect, ConnectReturnCode, DEFAULT_MAX_PACKET_SIZE, DecodeError,
    Decoder, EncodeError, MAX_REMAINING_LENGTH, Packet, PacketId, PacketType, ProtocolVersion,
    Publish, PublishQos, QoS, StringField, SubAck, Subscribe, Unsubscribe, Utf8Bytes,
    Utf8BytesError, Will,
};
use bytes::{Bytes, BytesMut};

/// A packet with `first` as its first byte and `body` after a minimal remaining length.
fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut wire = vec![first];
    let mut rest = body.len();
    loop {
        let low_bits = u8::try_from(rest % 128).unwrap();
        rest /= 128;
        if rest == 0 {
            wire.push(low_bits);
            break;
        }
        wire.push(low_bits | 0x80);
    }
    wire.extend_from_slice(body);
    wire
}

/// Prefixes `field` with its 2-byte length.
fn prefixed(field: &[u8]) -> Vec<u8> {
    let mut out = u16::try_from(field.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(field);
    out
}

/// A CONNECT body: MQTT 4, `flags`, keepalive 60, then `payload`.
fn connect_body(flags: u8, payload: &[&[u8]]) -> Vec<u8> {
    let mut body = prefixed(b"MQTT");
    body.extend_from_slice(&[0x04, flags, 0x00, 0x3C]);
    for field in payload {
        body.extend_from_slice(&prefixed(field));
    }
    body
}

/// The error decoding `wire` gives with the default decoder.
fn decode_error(wire: &[u8]) -> DecodeError {
    let mut buf = BytesMut::from(wire);
    Decoder::default()
        .decode(&mut buf)
        .expect_err("the bytes are malformed")
}

fn id(value: u16) -> PacketId {
    PacketId::new(value).unwrap()
}

fn text(value: &'static str) -> Utf8Bytes {
    Utf8Bytes::from_static(value)
}

// ---- fixed header -------------------------------------------------------------------------

#[test]
fn packet_types_0_and_15_are_reserved() {
    assert_eq!(
        decode_error(&[0x00]),
        DecodeError::ReservedPacketType { packet_type: 0 }
    );
    assert_eq!(
        decode_error(&[0xF0, 0x00]),
        DecodeError::ReservedPacketType { packet_type: 15 }
    );
}

#[test]
fn reserved_flag_bits_must_be_as_mqtt_fixes_them() {
    let cases = [
        (0x11, PacketType::Connect, 0b0001, 0b0000),
        (0x28, PacketType::ConnAck, 0b1000, 0b0000),
        (0x42, PacketType::PubAck, 0b0010, 0b0000),
        (0x80, PacketType::Subscribe, 0b0000, 0b0010),
        (0x83, PacketType::Subscribe, 0b0011, 0b0010),
        (0x92, PacketType::SubAck, 0b0010, 0b0000),
        (0xA0, PacketType::Unsubscribe, 0b0000, 0b0010),
        (0xB1, PacketType::UnsubAck, 0b0001, 0b0000),
        (0xC4, PacketType::PingReq, 0b0100, 0b0000),
        (0xDF, PacketType::PingResp, 0b1111, 0b0000),
        (0xE2, PacketType::Disconnect, 0b0010, 0b0000),
        (0x60, PacketType::PubRel, 0b0000, 0b0010),
        (0x52, PacketType::PubRec, 0b0010, 0b0000),
    ];
    for (first, packet_type, flags, required) in cases {
        assert_eq!(
            decode_error(&[first]),
            DecodeError::ReservedFlags {
                packet_type,
                flags,
                required
            },
            "first byte {first:#04X}"
        );
    }
}

#[test]
fn remaining_length_longer_than_4_bytes() {
    assert_eq!(
        decode_error(&[0x30, 0x80, 0x80, 0x80, 0x80]),
        DecodeError::MalformedRemainingLength
    );
    assert_eq!(
        decode_error(&[0xC0, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
        DecodeError::MalformedRemainingLength
    );
    // Four bytes with a continuation on the third only: still waiting.
    let mut buf = BytesMut::from(&[0x30, 0x80, 0x80, 0x80][..]);
    assert_eq!(Decoder::new(usize::MAX).decode(&mut buf), Ok(None));
}

#[test]
fn packet_too_large_is_refused_from_the_header_alone() {
    // A PUBLISH claiming 200 MiB: refused with only its 5 header bytes in, nothing reserved.
    let claimed = 200 * 1024 * 1024;
    let mut buf = BytesMut::with_capacity(16);
    buf.extend_from_slice(&packet(0x30, &[])[..1]);
    let mut rest = claimed;
    while rest >= 128 {
        buf.extend_from_slice(&[u8::try_from(rest % 128).unwrap() | 0x80]);
        rest /= 128;
    }
    buf.extend_from_slice(&[u8::try_from(rest).unwrap()]);
    assert_eq!(buf.len(), 5);
    let capacity = buf.capacity();
    assert_eq!(
        Decoder::default().decode(&mut buf),
        Err(DecodeError::PacketTooLarge {
            size: 5 + claimed,
            max: DEFAULT_MAX_PACKET_SIZE
        })
    );
    assert_eq!(buf.capacity(), capacity, "nothing was reserved");
    assert_eq!(buf.len(), 5);
}

#[test]
fn packet_size_limit_counts_the_whole_packet() {
    // PUBLISH of 20 bytes in all: 2 header bytes, 18 of body.
    let wire = packet(0x30, &[&prefixed(b"t")[..], &[0; 15]].concat());
    assert_eq!(wire.len(), 20);
    let mut buf = BytesMut::from(&wire[..]);
    assert!(matches!(
        Decoder::new(20).decode(&mut buf),
        Ok(Some(Packet::Publish(_)))
    ));
    let mut buf = BytesMut::from(&wire[..2]);
    assert_eq!(
        Decoder::new(19).decode(&mut buf),
        Err(DecodeError::PacketTooLarge { size: 20, max: 19 })
    );
    let mut buf = BytesMut::from(&[0xC0, 0x00][..]);
    assert_eq!(
        Decoder::new(1).decode(&mut buf),
        Err(DecodeError::PacketTooLarge { size: 2, max: 1 })
    );
}

#[test]
fn qos_2_flow_packets_are_refused_by_name() {
    assert_eq!(
        decode_error(&[0x50]),
        DecodeError::Qos2Flow(PacketType::PubRec)
    );
    assert_eq!(
        decode_error(&[0x62, 0x02, 0x00, 0x01]),
        DecodeError::Qos2Flow(PacketType::PubRel)
    );
    assert_eq!(
        decode_error(&[0x70, 0x02]),
        DecodeError::Qos2Flow(PacketType::PubComp)
    );
}

#[test]
fn publish_qos_2_is_refused() {
    let wire = packet(0x34, &[&prefixed(b"t")[..], &[0x00, 0x01]].concat());
    assert_eq!(decode_error(&wire), DecodeError::Qos2Publish);
    assert_eq!(decode_error(&[0x3C]), DecodeError::Qos2Publish, "DUP too");
}

#[test]
fn publish_qos_3_is_invalid() {
    assert_eq!(decode_error(&[0x36]), DecodeError::InvalidQos);
    assert_eq!(decode_error(&[0x3F, 0x00]), DecodeError::InvalidQos);
}

#[test]
fn publish_qos_0_with_dup_is_refused() {
    let wire = packet(0x38, &prefixed(b"t"));
    assert_eq!(decode_error(&wire), DecodeError::DupOnQos0);
}

#[test]
fn ping_and_disconnect_must_have_no_body() {
    for (first, packet_type) in [
        (0xC0, PacketType::PingReq),
        (0xD0, PacketType::PingResp),
        (0xE0, PacketType::Disconnect),
    ] {
        assert_eq!(
            decode_error(&[first, 0x01]),
            DecodeError::UnexpectedBody {
                packet_type,
                remaining_length: 1
            }
        );
    }
}

// ---- CONNECT ------------------------------------------------------------------------------

#[test]
fn connect_with_unsupported_protocol_names_and_levels() {
    let cases: [(&[u8], u8); 5] = [
        (b"MQTT", 5),
        (b"MQTT", 3),
        (b"MQIsdp", 4),
        (b"mqtt", 4),
        (b"\xFF\xFE", 4),
    ];
    for (name, level) in cases {
        let mut body = prefixed(name);
        body.extend_from_slice(&[level, 0x02, 0x00, 0x3C]);
        body.extend_from_slice(&prefixed(b"c"));
        assert_eq!(
            decode_error(&packet(0x10, &body)),
            DecodeError::UnsupportedProtocol {
                name: Bytes::copy_from_slice(name),
                level
            }
        );
    }
}

/// An MQTT 5 CONNECT has properties where 3.1.1 has the client id: refused by its protocol
/// level before that layout matters, so the server can answer CONNACK 1.
#[test]
fn connect_of_mqtt_5_is_refused_as_unsupported_protocol() {
    let mut body = prefixed(b"MQTT");
    body.extend_from_slice(&[0x05, 0x02, 0x00, 0x3C, 0x05, 0x11, 0x00, 0x00, 0x00, 0x0A]);
    body.extend_from_slice(&prefixed(b"c"));
    let error = decode_error(&packet(0x10, &body));
    assert_eq!(
        error,
        DecodeError::UnsupportedProtocol {
            name: Bytes::from_static(b"MQTT"),
            level: 5
        }
    );
    assert_eq!(
        error.to_string(),
        "CONNECT asks for protocol b\"MQTT\" level 5, only \"MQIsdp\" 3 and \"MQTT\" 4 are supported"
    );
}

#[test]
fn connect_reserved_flag_set() {
    let wire = packet(0x10, &connect_body(0x03, &[b"c"]));
    assert_eq!(decode_error(&wire), DecodeError::ConnectReservedFlag);
}

#[test]
fn connect_will_qos_or_retain_without_will_flag() {
    for flags in [0x08, 0x10, 0x20, 0x3A] {
        let wire = packet(0x10, &connect_body(flags, &[b"c"]));
        assert_eq!(
            decode_error(&wire),
            DecodeError::WillFlagsWithoutWill { flags },
            "flags {flags:#04X}"
        );
    }
}

#[test]
fn connect_will_qos_3() {
    let wire = packet(0x10, &connect_body(0x1C, &[b"c", b"t", b"p"]));
    assert_eq!(decode_error(&wire), DecodeError::InvalidWillQos);
}

#[test]
fn connect_password_without_username() {
    let wire = packet(0x10, &connect_body(0x42, &[b"c", b"p"]));
    assert_eq!(decode_error(&wire), DecodeError::PasswordWithoutUsername);
}

#[test]
fn connect_strings_invalid_utf8() {
    let cases: [(u8, &[&[u8]], StringField, usize); 3] = [
        (0x02, &[b"c\xC3"], StringField::ClientId, 1),
        (0x06, &[b"c", b"\xFFt", b"p"], StringField::WillTopic, 0),
        (0x82, &[b"c", b"u\xE2\x82"], StringField::Username, 1),
    ];
    for (flags, fields, field, valid_up_to) in cases {
        let wire = packet(0x10, &connect_body(flags, fields));
        assert_eq!(
            decode_error(&wire),
            DecodeError::InvalidUtf8 { field, valid_up_to },
            "{field}"
        );
    }
}

#[test]
fn connect_strings_with_null_character() {
    let wire = packet(0x10, &connect_body(0x02, &[b"dev\0"]));
    assert_eq!(
        decode_error(&wire),
        DecodeError::NullCharacter {
            field: StringField::ClientId,
            at: 3
        }
    );
    let wire = packet(0x10, &connect_body(0x80, &[b"c", b"\0u"]));
    assert_eq!(
        decode_error(&wire),
        DecodeError::NullCharacter {
            field: StringField::Username,
            at: 0
        }
    );
}

#[test]
fn connect_truncated_at_every_field() {
    let full = connect_body(0xC6, &[b"c", b"t", b"p", b"u", b"pw"]);
    assert!(matches!(
        Decoder::default().decode(&mut BytesMut::from(&packet(0x10, &full)[..])),
        Ok(Some(Packet::Connect(_)))
    ));
    // Every shorter body (a correct remaining length for it) lacks a field or part of one.
    for end in 0..full.len() {
        let wire = packet(0x10, &full[..end]);
        assert_eq!(
            decode_error(&wire),
            DecodeError::Truncated {
                packet_type: PacketType::Connect
            },
            "body cut at {end}"
        );
    }
}

#[test]
fn connect_trailing_bytes() {
    let mut body = connect_body(0x02, &[b"c"]);
    body.extend_from_slice(&[0xAA, 0xBB]);
    assert_eq!(
        decode_error(&packet(0x10, &body)),
        DecodeError::TrailingBytes {
            packet_type: PacketType::Connect,
            count: 2
        }
    );
}

// ---- CONNACK ------------------------------------------------------------------------------

#[test]
fn connack_reserved_flags() {
    assert_eq!(
        decode_error(&[0x20, 0x02, 0x02, 0x00]),
        DecodeError::ConnAckReservedFlags { flags: 0x02 }
    );
    assert_eq!(
        decode_error(&[0x20, 0x02, 0x81, 0x00]),
        DecodeError::ConnAckReservedFlags { flags: 0x81 }
    );
}

#[test]
fn connack_return_code_above_5() {
    assert_eq!(
        decode_error(&[0x20, 0x02, 0x00, 0x06]),
        DecodeError::InvalidConnectReturnCode { code: 6 }
    );
}

#[test]
fn connack_session_present_with_refusal() {
    assert_eq!(
        decode_error(&[0x20, 0x02, 0x01, 0x05]),
        DecodeError::SessionPresentWithRefusal {
            code: ConnectReturnCode::NotAuthorized
        }
    );
}

#[test]
fn connack_wrong_length() {
    let packet_type = PacketType::ConnAck;
    assert_eq!(
        decode_error(&[0x20, 0x01, 0x00]),
        DecodeError::Truncated { packet_type }
    );
    assert_eq!(
        decode_error(&[0x20, 0x03, 0x00, 0x00, 0x00]),
        DecodeError::TrailingBytes {
            packet_type,
            count: 1
        }
    );
}

// ---- PUBLISH ------------------------------------------------------------------------------

#[test]
fn publish_topic_invalid_utf8() {
    let wire = packet(0x30, &prefixed(b"/a/\xC0\xAF"));
    assert_eq!(
        decode_error(&wire),
        DecodeError::InvalidUtf8 {
            field: StringField::TopicName,
            valid_up_to: 3
        }
    );
}

#[test]
fn publish_topic_with_null_character() {
    let wire = packet(0x30, &[&prefixed(b"/a\0")[..], b"payload"].concat());
    assert_eq!(
        decode_error(&wire),
        DecodeError::NullCharacter {
            field: StringField::TopicName,
            at: 2
        }
    );
}

#[test]
fn publish_packet_id_0() {
    let wire = packet(0x32, &[&prefixed(b"t")[..], &[0x00, 0x00]].concat());
    assert_eq!(
        decode_error(&wire),
        DecodeError::ZeroPacketId {
            packet_type: PacketType::Publish
        }
    );
}

#[test]
fn publish_truncated() {
    let packet_type = PacketType::Publish;
    // Topic length says 5, 2 bytes follow.
    assert_eq!(
        decode_error(&[0x30, 0x04, 0x00, 0x05, b'a', b'b']),
        DecodeError::Truncated { packet_type }
    );
    // No room for the length prefix.
    assert_eq!(
        decode_error(&[0x30, 0x01, 0x00]),
        DecodeError::Truncated { packet_type }
    );
    // QoS 1 with half a packet id.
    assert_eq!(
        decode_error(&[0x32, 0x04, 0x00, 0x01, b't', 0x00]),
        DecodeError::Truncated { packet_type }
    );
}

// ---- PUBACK, UNSUBACK ---------------------------------------------------------------------

#[test]
fn puback_and_unsuback_packet_id_0() {
    for (first, packet_type) in [(0x40, PacketType::PubAck), (0xB0, PacketType::UnsubAck)] {
        assert_eq!(
            decode_error(&[first, 0x02, 0x00, 0x00]),
            DecodeError::ZeroPacketId { packet_type }
        );
    }
}

#[test]
fn puback_and_unsuback_wrong_length() {
    for (first, packet_type) in [(0x40, PacketType::PubAck), (0xB0, PacketType::UnsubAck)] {
        assert_eq!(
            decode_error(&[first, 0x00]),
            DecodeError::Truncated { packet_type }
        );
        assert_eq!(
            decode_error(&[first, 0x01, 0x01]),
            DecodeError::Truncated { packet_type }
        );
        assert_eq!(
            decode_error(&[first, 0x04, 0x00, 0x01, 0x00, 0x00]),
            DecodeError::TrailingBytes {
                packet_type,
                count: 2
            }
        );
    }
}

// ---- SUBSCRIBE, SUBACK --------------------------------------------------------------------

#[test]
fn subscribe_packet_id_0() {
    let wire = packet(
        0x82,
        &[&[0x00, 0x00][..], &prefixed(b"a"), &[0x01]].concat(),
    );
    assert_eq!(
        decode_error(&wire),
        DecodeError::ZeroPacketId {
            packet_type: PacketType::Subscribe
        }
    );
}

#[test]
fn subscribe_without_filters() {
    assert_eq!(
        decode_error(&[0x82, 0x02, 0x00, 0x01]),
        DecodeError::SubscribeWithoutFilters
    );
}

#[test]
fn subscribe_options_reserved_bits() {
    for options in [0x04, 0x80, 0xFD] {
        let wire = packet(
            0x82,
            &[&[0x00, 0x01][..], &prefixed(b"a"), &[options]].concat(),
        );
        assert_eq!(
            decode_error(&wire),
            DecodeError::SubscribeOptionsReserved { options }
        );
    }
}

#[test]
fn subscribe_requested_qos_3() {
    let wire = packet(
        0x82,
        &[&[0x00, 0x01][..], &prefixed(b"a"), &[0x03]].concat(),
    );
    assert_eq!(decode_error(&wire), DecodeError::InvalidRequestedQos);
}

#[test]
fn subscribe_filter_invalid_utf8_and_null() {
    let wire = packet(
        0x82,
        &[&[0x00, 0x01][..], &prefixed(b"\xED\xA0\x80"), &[0x00]].concat(),
    );
    assert_eq!(
        decode_error(&wire),
        DecodeError::InvalidUtf8 {
            field: StringField::TopicFilter,
            valid_up_to: 0
        },
        "an encoded surrogate is not UTF-8"
    );
    let wire = packet(
        0x82,
        &[&[0x00, 0x01][..], &prefixed(b"a/\0"), &[0x00]].concat(),
    );
    assert_eq!(
        decode_error(&wire),
        DecodeError::NullCharacter {
            field: StringField::TopicFilter,
            at: 2
        }
    );
}

#[test]
fn subscribe_truncated_options_byte() {
    let wire = packet(0x82, &[&[0x00, 0x01][..], &prefixed(b"a/b")].concat());
    assert_eq!(
        decode_error(&wire),
        DecodeError::Truncated {
            packet_type: PacketType::Subscribe
        }
    );
}

#[test]
fn suback_packet_id_0() {
    assert_eq!(
        decode_error(&[0x90, 0x03, 0x00, 0x00, 0x00]),
        DecodeError::ZeroPacketId {
            packet_type: PacketType::SubAck
        }
    );
}

#[test]
fn suback_invalid_return_codes() {
    for code in [0x03, 0x7F, 0x81, 0xFF] {
        assert_eq!(
            decode_error(&[0x90, 0x04, 0x00, 0x01, 0x00, code]),
            DecodeError::InvalidSubAckReturnCode { code }
        );
    }
}

#[test]
fn suback_without_return_codes() {
    assert_eq!(
        decode_error(&[0x90, 0x02, 0x00, 0x01]),
        DecodeError::SubAckWithoutReturnCodes
    );
    assert_eq!(
        decode_error(&[0x90, 0x01, 0x00]),
        DecodeError::Truncated {
            packet_type: PacketType::SubAck
        }
    );
}

// ---- UNSUBSCRIBE --------------------------------------------------------------------------

#[test]
fn unsubscribe_packet_id_0() {
    let wire = packet(0xA2, &[&[0x00, 0x00][..], &prefixed(b"a")].concat());
    assert_eq!(
        decode_error(&wire),
        DecodeError::ZeroPacketId {
            packet_type: PacketType::Unsubscribe
        }
    );
}

#[test]
fn unsubscribe_without_filters() {
    assert_eq!(
        decode_error(&[0xA2, 0x02, 0x00, 0x01]),
        DecodeError::UnsubscribeWithoutFilters
    );
}

#[test]
fn unsubscribe_truncated_filter() {
    assert_eq!(
        decode_error(&[0xA2, 0x05, 0x00, 0x01, 0x00, 0x03, b'a']),
        DecodeError::Truncated {
            packet_type: PacketType::Unsubscribe
        }
    );
}

// ---- encoding refuses what MQTT forbids ---------------------------------------------------

/// Asserts `packet` is refused with `error` and nothing is written.
fn assert_encode_refused(packet: Packet, error: EncodeError) {
    let mut buf = BytesMut::from(&b"kept"[..]);
    assert_eq!(packet.encode(&mut buf), Err(error));
    assert_eq!(packet.encoded_len(), Err(error));
    assert_eq!(&buf[..], b"kept", "nothing written on error");
}

fn connect() -> Connect {
    Connect {
        protocol: ProtocolVersion::V3_1_1,
        client_id: text("c"),
        clean_session: true,
        keep_alive: 60,
        username: None,
        password: None,
        will: None,
    }
}

#[test]
fn encode_subscribe_without_filters() {
    assert_encode_refused(
        Packet::Subscribe(Subscribe {
            packet_id: id(1),
            filters: Vec::new(),
        }),
        EncodeError::SubscribeWithoutFilters,
    );
}

#[test]
fn encode_unsubscribe_without_filters() {
    assert_encode_refused(
        Packet::Unsubscribe(Unsubscribe {
            packet_id: id(1),
            filters: Vec::new(),
        }),
        EncodeError::UnsubscribeWithoutFilters,
    );
}

#[test]
fn encode_suback_without_return_codes() {
    assert_encode_refused(
        Packet::SubAck(SubAck {
            packet_id: id(1),
            return_codes: Vec::new(),
        }),
        EncodeError::SubAckWithoutReturnCodes,
    );
}

/// One byte over the largest remaining length. The payload is a zeroed allocation that is
/// never touched, so the test does not write 256 MiB.
#[test]
fn encode_remaining_length_too_large() {
    let publish = Publish {
        dup: false,
        qos: PublishQos::AtLeastOnce(id(1)),
        retain: false,
        topic: text("t"),
        payload: Bytes::from(vec![0; MAX_REMAINING_LENGTH - 4]),
    };
    let error = EncodeError::RemainingLengthTooLarge {
        remaining_length: MAX_REMAINING_LENGTH + 1,
    };
    let mut header = BytesMut::new();
    assert_eq!(publish.encode_header(&mut header), Err(error));
    assert_eq!(publish.encoded_header_len(), Err(error));
    assert!(header.is_empty());
    assert_encode_refused(Packet::Publish(publish), error);
}

#[test]
fn encode_password_or_will_payload_over_65535_bytes() {
    let long = Bytes::from(vec![b'x'; 65_536]);
    assert_encode_refused(
        Packet::from(Connect {
            username: Some(text("u")),
            password: Some(long.clone()),
            ..connect()
        }),
        EncodeError::FieldTooLong {
            field: BinaryField::Password,
            len: 65_536,
        },
    );
    assert_encode_refused(
        Packet::from(Connect {
            will: Some(Will {
                topic: text("w"),
                payload: long,
                qos: QoS::AtMostOnce,
                retain: false,
            }),
            ..connect()
        }),
        EncodeError::FieldTooLong {
            field: BinaryField::WillPayload,
            len: 65_536,
        },
    );
}

#[test]
fn encode_password_without_username() {
    assert_encode_refused(
        Packet::from(Connect {
            password: Some(Bytes::from_static(b"p")),
            ..connect()
        }),
        EncodeError::PasswordWithoutUsername,
    );
}

#[test]
fn encode_publish_qos_0_with_dup() {
    assert_encode_refused(
        Packet::Publish(Publish {
            dup: true,
            qos: PublishQos::AtMostOnce,
            retain: false,
            topic: text("t"),
            payload: Bytes::new(),
        }),
        EncodeError::DupOnQos0,
    );
}

#[test]
fn encode_connack_session_present_with_refusal() {
    assert_encode_refused(
        Packet::ConnAck(ConnAck {
            session_present: true,
            code: ConnectReturnCode::BadUserNameOrPassword,
        }),
        EncodeError::SessionPresentWithRefusal {
            code: ConnectReturnCode::BadUserNameOrPassword,
        },
    );
}

// ---- MQTT strings -------------------------------------------------------------------------

#[test]
fn utf8_bytes_refuses_invalid_utf8() {
    assert_eq!(
        Utf8Bytes::try_from(Bytes::from_static(b"ab\xFF")),
        Err(Utf8BytesError::InvalidUtf8 { valid_up_to: 2 })
    );
}

#[test]
fn utf8_bytes_refuses_null_character() {
    assert_eq!(
        Utf8Bytes::try_from("a\0b"),
        Err(Utf8BytesError::NullCharacter { at: 1 })
    );
    assert_eq!(
        Utf8Bytes::try_from(String::from("\0")),
        Err(Utf8BytesError::NullCharacter { at: 0 })
    );
}

#[test]
fn utf8_bytes_refuses_more_than_65535_bytes() {
    assert_eq!(
        Utf8Bytes::try_from("x".repeat(65_536)),
        Err(Utf8BytesError::TooLong { len: 65_536 })
    );
}

#[test]
#[should_panic(expected = "U+0000")]
fn utf8_bytes_from_static_panics_on_a_null_literal() {
    let _ = Utf8Bytes::from_static("bad\0literal");
}

#[test]
fn error_messages_say_what_was_wrong() {
    assert_eq!(
        DecodeError::Qos2Flow(PacketType::PubRel).to_string(),
        "PUBREL belongs to the QoS 2 flow, which this profile does not support"
    );
    assert_eq!(
        DecodeError::ReservedFlags {
            packet_type: PacketType::Subscribe,
            flags: 0,
            required: 2
        }
        .to_string(),
        "SUBSCRIBE has fixed header flags 0b0000, MQTT 3.1.1 requires 0b0010"
    );
    assert_eq!(
        DecodeError::NullCharacter {
            field: StringField::TopicName,
            at: 4
        }
        .to_string(),
        "the PUBLISH topic name contains U+0000 at byte 4 [MQTT-1.5.3-2]"
    );
    assert_eq!(
        DecodeError::PacketTooLarge {
            size: 300_000,
            max: 262_144
        }
        .to_string(),
        "the packet is 300000 bytes, over the maximum of 262144"
    );
}
