//! decode → encode → decode on arbitrary bytes. Whatever the decoder accepts, the encoder gives
//! back byte for byte, except that the remaining length is rewritten in its shortest form
//! (MQTT 3.1.1 lets a sender pad it, e.g. `80 00` for 0): every other bit of a packet of the
//! subset is either checked or carried by the decoded value. Decoding the encoding gives the
//! same packet, and a PUBLISH's header and payload written apart make the same bytes.
#![no_main]

use aliot_core::codec::{Decoder, Packet};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

/// `len` as the shortest MQTT remaining length.
fn shortest_remaining_length(mut len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let low_bits = u8::try_from(len % 128).expect("below 128");
        len /= 128;
        if len == 0 {
            out.push(low_bits);
            return out;
        }
        out.push(low_bits | 0x80);
    }
}

fuzz_target!(|data: &[u8]| {
    let decoder = Decoder::new(usize::MAX);
    let mut buf = BytesMut::from(data);
    let Ok(Some(packet)) = decoder.decode(&mut buf) else {
        return;
    };
    let consumed = &data[..data.len() - buf.len()];

    // The decoded packet's bytes: first byte, remaining length (1 to 4 bytes), body.
    let length_bytes = consumed[1..]
        .iter()
        .position(|byte| byte & 0x80 == 0)
        .expect("a decoded packet has a complete remaining length")
        + 1;
    let body = &consumed[1 + length_bytes..];
    let mut canonical = vec![consumed[0]];
    canonical.extend_from_slice(&shortest_remaining_length(body.len()));
    canonical.extend_from_slice(body);

    let mut encoded = BytesMut::new();
    packet
        .encode(&mut encoded)
        .expect("a decoded packet encodes");
    assert_eq!(packet.encoded_len(), Ok(encoded.len()));
    assert_eq!(&encoded[..], &canonical[..], "{packet:?}");

    if let Packet::Publish(publish) = &packet {
        let mut header = BytesMut::new();
        publish
            .encode_header(&mut header)
            .expect("a decoded PUBLISH encodes");
        assert_eq!(publish.encoded_header_len(), Ok(header.len()));
        header.extend_from_slice(&publish.payload);
        assert_eq!(header, encoded);
    }

    let again = decoder.decode(&mut encoded);
    assert_eq!(again, Ok(Some(packet)));
    assert!(encoded.is_empty());
});
