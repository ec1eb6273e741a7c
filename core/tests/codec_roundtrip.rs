//! Property tests: any valid packet survives encode → decode unchanged, and a stream of encoded
//! packets cut into arbitrary reads decodes to the same packets in order.

use aliot_core::codec::{
    ConnAck, Connect, ConnectReturnCode, DecodeError, Decoder, MAX_FIXED_HEADER_LEN, Packet,
    PacketId, ProtocolVersion, PubAck, Publish, PublishQos, QoS, SubAck, SubAckReturnCode,
    Subscribe, UnsubAck, Unsubscribe, Utf8Bytes, Will,
};
use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

fn mqtt_string() -> impl Strategy<Value = Utf8Bytes> {
    "[^\\x00]{0,24}".prop_map(|text| Utf8Bytes::try_from(text).expect("no U+0000, short"))
}

fn binary(max_len: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..max_len).prop_map(Bytes::from)
}

fn packet_id() -> impl Strategy<Value = PacketId> {
    (1..=u16::MAX).prop_map(|id| PacketId::new(id).expect("non-zero"))
}

fn qos() -> impl Strategy<Value = QoS> {
    prop_oneof![
        Just(QoS::AtMostOnce),
        Just(QoS::AtLeastOnce),
        Just(QoS::ExactlyOnce)
    ]
}

fn will() -> impl Strategy<Value = Will> {
    (mqtt_string(), binary(32), qos(), any::<bool>()).prop_map(|(topic, payload, qos, retain)| {
        Will {
            topic,
            payload,
            qos,
            retain,
        }
    })
}

fn connect() -> impl Strategy<Value = Connect> {
    (
        prop_oneof![Just(ProtocolVersion::V3_1), Just(ProtocolVersion::V3_1_1)],
        mqtt_string(),
        any::<bool>(),
        any::<u16>(),
        // A password only ever comes with a user name.
        option::of((mqtt_string(), option::of(binary(80)))),
        option::of(will()),
    )
        .prop_map(
            |(protocol, client_id, clean_session, keep_alive, credentials, will)| {
                let (username, password) = match credentials {
                    Some((username, password)) => (Some(username), password),
                    None => (None, None),
                };
                Connect {
                    protocol,
                    client_id,
                    clean_session,
                    keep_alive,
                    username,
                    password,
                    will,
                }
            },
        )
}

fn connack() -> impl Strategy<Value = ConnAck> {
    (0u8..=5, any::<bool>()).prop_map(|(code, session_present)| {
        let code = ConnectReturnCode::from_u8(code).expect("0 to 5");
        ConnAck {
            // Session present only with an accepted connection.
            session_present: session_present && code == ConnectReturnCode::Accepted,
            code,
        }
    })
}

fn publish() -> impl Strategy<Value = Publish> {
    (
        option::of(packet_id()),
        any::<bool>(),
        any::<bool>(),
        mqtt_string(),
        // Up to 300 bytes, so remaining lengths of one and two bytes both occur.
        binary(300),
    )
        .prop_map(|(packet_id, dup, retain, topic, payload)| {
            let qos = packet_id.map_or(PublishQos::AtMostOnce, PublishQos::AtLeastOnce);
            Publish {
                // DUP only with QoS 1.
                dup: dup && packet_id.is_some(),
                qos,
                retain,
                topic,
                payload,
            }
        })
}

fn suback_return_code() -> impl Strategy<Value = SubAckReturnCode> {
    prop_oneof![
        qos().prop_map(SubAckReturnCode::Success),
        Just(SubAckReturnCode::Failure)
    ]
}

fn packet() -> impl Strategy<Value = Packet> {
    prop_oneof![
        connect().prop_map(Packet::from),
        connack().prop_map(Packet::ConnAck),
        publish().prop_map(Packet::Publish),
        packet_id().prop_map(|packet_id| Packet::PubAck(PubAck { packet_id })),
        (packet_id(), vec((mqtt_string(), qos()), 1..6))
            .prop_map(|(packet_id, filters)| Packet::Subscribe(Subscribe { packet_id, filters })),
        (packet_id(), vec(suback_return_code(), 1..6)).prop_map(|(packet_id, return_codes)| {
            Packet::SubAck(SubAck {
                packet_id,
                return_codes,
            })
        }),
        (packet_id(), vec(mqtt_string(), 1..6)).prop_map(|(packet_id, filters)| {
            Packet::Unsubscribe(Unsubscribe { packet_id, filters })
        }),
        packet_id().prop_map(|packet_id| Packet::UnsubAck(UnsubAck { packet_id })),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        Just(Packet::Disconnect),
    ]
}

fn encode(packet: &Packet) -> BytesMut {
    let mut buf = BytesMut::new();
    packet.encode(&mut buf).expect("a valid packet encodes");
    buf
}

proptest! {
    #[test]
    fn encode_then_decode_gives_the_same_packet(packet in packet()) {
        let mut buf = encode(&packet);
        prop_assert_eq!(packet.encoded_len(), Ok(buf.len()));
        let decoded = Decoder::new(usize::MAX).decode(&mut buf);
        prop_assert_eq!(decoded, Ok(Some(packet)));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn publish_header_then_payload_is_the_whole_packet(publish in publish()) {
        let whole = encode(&Packet::Publish(publish.clone()));
        let mut header = BytesMut::new();
        publish.encode_header(&mut header).expect("a valid PUBLISH encodes");
        prop_assert_eq!(publish.encoded_header_len(), Ok(header.len()));
        header.extend_from_slice(&publish.payload);
        prop_assert_eq!(header, whole);
    }

    #[test]
    fn stream_in_arbitrary_reads_decodes_in_order(
        packets in vec(packet(), 1..8),
        read_sizes in vec(1usize..64, 1..32),
    ) {
        let mut stream = BytesMut::new();
        for packet in &packets {
            packet.encode(&mut stream).expect("a valid packet encodes");
        }
        let decoder = Decoder::default();
        let mut read_buffer = BytesMut::new();
        let mut decoded = Vec::new();
        let mut sizes = read_sizes.iter().cycle();
        while !stream.is_empty() {
            let size = (*sizes.next().expect("cycle never ends")).min(stream.len());
            read_buffer.extend_from_slice(&stream.split_to(size));
            while let Some(packet) = decoder.decode(&mut read_buffer).expect("valid stream") {
                decoded.push(packet);
            }
        }
        prop_assert!(read_buffer.is_empty());
        prop_assert_eq!(decoded, packets);
    }

    #[test]
    fn every_strict_prefix_waits_untouched(packet in packet()) {
        let wire = encode(&packet);
        for end in 0..wire.len() {
            let mut buf = BytesMut::from(&wire[..end]);
            prop_assert_eq!(Decoder::new(usize::MAX).decode(&mut buf), Ok(None));
            prop_assert_eq!(&buf[..], &wire[..end]);
        }
    }

    /// Arbitrary bytes never panic the decoder, and a buffer waiting for more stays under the
    /// size limit (the fuzz target `decode` pushes this much further).
    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..512), max in 0usize..600) {
        let decoder = Decoder::new(max);
        let mut buf = BytesMut::from(&bytes[..]);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(packet)) => {
                    let size = packet.encoded_len().expect("decoded packets encode");
                    prop_assert!(size <= max);
                }
                Ok(None) => {
                    prop_assert!(buf.len() < max.max(MAX_FIXED_HEADER_LEN));
                    break;
                }
                Err(DecodeError::PacketTooLarge { size, max: limit }) => {
                    prop_assert_eq!(limit, max);
                    prop_assert!(size > max);
                    break;
                }
                Err(_) => break,
            }
        }
    }
}
