//! The MQTT 3.1/3.1.1 subset codec of the platform profile: streaming, zero-copy decoding and
//! encoding of CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK,
//! PINGREQ, PINGRESP and DISCONNECT.
//!
//! - [`Decoder::decode`] takes complete packets off the front of a read buffer. Strings and
//!   payloads it returns are slices of that buffer ([`Bytes`](bytes::Bytes)), not copies.
//! - [`Packet::encode`] (and each packet's own `encode`) appends a packet to a write buffer,
//!   reserving once; [`Publish::encode_header`] leaves the payload out so it can be written as
//!   its own chunk.
//! - Every rule of MQTT 3.1.1 the packets of the subset carry is checked, each failure its own
//!   [`DecodeError`] variant; the QoS 2 flow (PUBREC, PUBREL, PUBCOMP, PUBLISH with QoS 2) is
//!   refused. Encoding refuses what MQTT forbids ([`EncodeError`]), so it never produces a
//!   packet this decoder would refuse.
//! - Profile rules that need the server's judgement (retain, will, keepalive range, topic
//!   rules of `aliot-topic`) are not the codec's: it decodes those packets faithfully.
//!
//! ```
//! use aliot_core::codec::{Decoder, Packet, PacketId, Publish, PublishQos, Utf8Bytes};
//! use bytes::{Bytes, BytesMut};
//!
//! let publish = Publish {
//!     dup: false,
//!     qos: PublishQos::AtLeastOnce(PacketId::new(7).unwrap()),
//!     retain: false,
//!     topic: Utf8Bytes::from_static("/a1TestPK001/dev-001/user/update"),
//!     payload: Bytes::from_static(b"{\"on\":1}"),
//! };
//! let mut wire = BytesMut::new();
//! Packet::from(publish.clone()).encode(&mut wire)?;
//!
//! // The bytes arrive in two reads.
//! let decoder = Decoder::default();
//! let mut read = BytesMut::new();
//! read.extend_from_slice(&wire[..10]);
//! assert_eq!(decoder.decode(&mut read)?, None);
//! read.extend_from_slice(&wire[10..]);
//! assert_eq!(decoder.decode(&mut read)?, Some(Packet::Publish(publish)));
//! assert!(read.is_empty());
//! # Ok::<(), Box<dyn core::error::Error>>(())
//! ```

mod decode;
mod encode;
mod error;
mod packet;
mod parse;
mod types;

pub use decode::{DEFAULT_MAX_PACKET_SIZE, Decoder, MAX_FIXED_HEADER_LEN};
pub use encode::MAX_REMAINING_LENGTH;
pub use error::{BinaryField, DecodeError, EncodeError, StringField};
pub use packet::{
    ConnAck, Connect, ConnectReturnCode, Packet, PacketType, PubAck, Publish, PublishQos, SubAck,
    SubAckReturnCode, Subscribe, UnsubAck, Unsubscribe, Will,
};
pub use types::{
    MAX_STRING_LEN, PacketId, ProtocolVersion, QoS, QosOutOfRange, Utf8Bytes, Utf8BytesError,
};
