//! What the decoder does with the caller's read buffer: decoded topics and payloads point into
//! the buffer's own memory (no copy), room left in the buffer stays there for the next read,
//! and a buffer that holds exactly one PUBLISH with no room left is handed over whole.

use aliot_core::codec::{Decoder, Packet, PacketId, Publish, PublishQos, Utf8Bytes};
use bytes::{Bytes, BytesMut};

const TOPIC: &str = "/a1TestPK001/dev-001/user/update";

fn publish(payload: &'static [u8], packet_id: Option<u16>) -> Publish {
    Publish {
        dup: false,
        qos: packet_id
            .and_then(PacketId::new)
            .map_or(PublishQos::AtMostOnce, PublishQos::AtLeastOnce),
        retain: false,
        topic: Utf8Bytes::from_static(TOPIC),
        payload: Bytes::from_static(payload),
    }
}

fn wire(publish: &Publish) -> Vec<u8> {
    let mut buf = BytesMut::new();
    publish.encode(&mut buf).expect("valid PUBLISH");
    buf.to_vec()
}

fn decode_publish(buf: &mut BytesMut) -> Publish {
    match Decoder::default().decode(buf) {
        Ok(Some(Packet::Publish(publish))) => publish,
        other => panic!("expected a PUBLISH, got {other:?}"),
    }
}

/// Where `part` starts within the memory that starts at `base`, if it is inside `len` bytes.
fn offset_in(base: *const u8, len: usize, part: &[u8]) -> Option<usize> {
    let offset = (part.as_ptr() as usize).checked_sub(base as usize)?;
    (offset + part.len() <= len).then_some(offset)
}

#[test]
fn topic_and_payload_point_into_a_buffer_taken_whole() {
    let sent = publish(b"{\"temperature\":21.5}", Some(7));
    let bytes = wire(&sent);
    // Exactly one packet and no room left, as after a read into a fresh buffer.
    let mut buf = BytesMut::from(&bytes[..]);
    assert_eq!(buf.capacity(), bytes.len());
    let (base, len) = (buf.as_ptr(), buf.len());

    let received = decode_publish(&mut buf);
    assert_eq!(received, sent);
    assert!(buf.is_empty());
    assert_eq!(buf.capacity(), 0, "no room was left to keep");
    // Fixed header (2), topic length (2), topic, packet id (2), payload.
    assert_eq!(offset_in(base, len, received.topic.as_bytes()), Some(4));
    assert_eq!(
        offset_in(base, len, &received.payload),
        Some(4 + TOPIC.len() + 2)
    );
}

#[test]
fn room_left_in_the_buffer_stays_for_the_next_read() {
    let sent = publish(b"on", None);
    let bytes = wire(&sent);
    let mut buf = BytesMut::with_capacity(4096);
    buf.extend_from_slice(&bytes);
    let (base, room) = (buf.as_ptr(), buf.capacity());

    let received = decode_publish(&mut buf);
    assert_eq!(received, sent);
    assert!(buf.is_empty());
    assert_eq!(buf.capacity(), room - bytes.len());
    assert_eq!(offset_in(base, room, received.topic.as_bytes()), Some(4));
    assert_eq!(
        offset_in(base, room, &received.payload),
        Some(4 + TOPIC.len())
    );

    // The next read lands right after the packet, in the same memory, while the packet lives.
    buf.extend_from_slice(&bytes);
    assert_eq!(offset_in(base, room, &buf), Some(bytes.len()));
    assert_eq!(decode_publish(&mut buf), sent);
    drop(received);
}

#[test]
fn a_packet_followed_by_part_of_the_next_leaves_that_part() {
    let first = publish(b"first", Some(1));
    let second = publish(b"second", None);
    let second_bytes = wire(&second);
    let mut stream = wire(&first);
    stream.extend_from_slice(&second_bytes[..5]);
    let mut buf = BytesMut::from(&stream[..]);
    let base = buf.as_ptr();

    let received = decode_publish(&mut buf);
    assert_eq!(received, first);
    assert_eq!(&buf[..], &second_bytes[..5]);
    assert_eq!(
        offset_in(base, stream.len(), &received.payload),
        Some(4 + TOPIC.len() + 2)
    );
    assert_eq!(Decoder::default().decode(&mut buf), Ok(None));

    buf.extend_from_slice(&second_bytes[5..]);
    assert_eq!(decode_publish(&mut buf), second);
    assert!(buf.is_empty());
}

#[test]
fn back_to_back_packets_share_the_buffer() {
    let packets = [
        publish(b"a", None),
        publish(b"bb", Some(2)),
        publish(b"", None),
    ];
    let stream: Vec<u8> = packets.iter().flat_map(wire).collect();
    let mut buf = BytesMut::from(&stream[..]);
    let base = buf.as_ptr();

    let mut start = 0;
    for sent in &packets {
        let received = decode_publish(&mut buf);
        assert_eq!(&received, sent);
        assert_eq!(
            offset_in(base, stream.len(), received.topic.as_bytes()),
            Some(start + 4)
        );
        start += wire(sent).len();
    }
    assert!(buf.is_empty());
}
