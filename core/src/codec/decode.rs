//! The streaming decoder: complete packets off the front of a growing read buffer.
//!
//! The fixed header is read here, by hand: it decides between "wait for more bytes" and "refuse
//! now" on a partial buffer. A complete packet is then split off the buffer and frozen, its body
//! parsed by the nom parsers of [`parse`](super::parse) over `&[u8]`, and the sub-slices they
//! return become [`Bytes`] of the frozen packet again (by offset, or [`Bytes::slice_ref`]).

use alloc::vec::Vec;

use bytes::{Buf, Bytes, BytesMut};

use super::error::DecodeError;
use super::packet::{
    ConnAck, Connect, Packet, PacketType, PubAck, Publish, SubAck, Subscribe, UnsubAck,
    Unsubscribe, Will,
};
use super::parse;
use super::types::{ProtocolVersion, Utf8Bytes};

/// The maximum packet size a [`Decoder::default`] accepts: 256 KiB for the whole packet
/// (fixed header and remaining length), the platform's limit.
pub const DEFAULT_MAX_PACKET_SIZE: usize = 256 * 1024;

/// The longest fixed header: the type-and-flags byte and a 4-byte remaining length.
pub const MAX_FIXED_HEADER_LEN: usize = 5;

/// Streaming decoder over a growing read buffer.
///
/// The caller appends what it reads to a [`BytesMut`] and calls [`decode`](Self::decode) until it
/// returns `Ok(None)`. The decoder keeps no state between calls besides its limit, so one
/// decoder can serve any number of connections.
///
/// ```
/// use aliot_core::codec::{Decoder, Packet};
/// use bytes::BytesMut;
///
/// let decoder = Decoder::default();
/// let mut read = BytesMut::new();
/// read.extend_from_slice(&[0xC0]); // half a PINGREQ
/// assert_eq!(decoder.decode(&mut read)?, None);
/// read.extend_from_slice(&[0x00, 0xE0, 0x00]); // its end, then a DISCONNECT
/// assert_eq!(decoder.decode(&mut read)?, Some(Packet::PingReq));
/// assert_eq!(decoder.decode(&mut read)?, Some(Packet::Disconnect));
/// assert_eq!(decoder.decode(&mut read)?, None);
/// # Ok::<(), aliot_core::codec::DecodeError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Decoder {
    max_packet_size: usize,
}

impl Default for Decoder {
    /// A decoder accepting packets up to [`DEFAULT_MAX_PACKET_SIZE`].
    fn default() -> Self {
        Self::new(DEFAULT_MAX_PACKET_SIZE)
    }
}

impl Decoder {
    /// A decoder refusing packets (fixed header included) larger than `max_packet_size` bytes.
    #[must_use]
    pub const fn new(max_packet_size: usize) -> Self {
        Self { max_packet_size }
    }

    /// The largest packet, fixed header included, this decoder accepts.
    #[must_use]
    pub const fn max_packet_size(&self) -> usize {
        self.max_packet_size
    }

    /// Takes one complete packet off the front of `buf`.
    ///
    /// - `Ok(None)`: `buf` holds less than a packet; it is left untouched, read more into it.
    ///   Once the fixed header is in, a packet over the maximum size is refused at once, so an
    ///   `Ok(None)` buffer is always shorter than `max(max_packet_size, 5)` bytes. The decoder
    ///   never reserves memory on the strength of a claimed length.
    /// - `Ok(Some(packet))`: the packet's bytes are gone from `buf`. Its strings and payloads
    ///   are slices of them ([`BytesMut::split_to`] then `freeze`), not copies. Room left in
    ///   `buf` stays there for the next read; a `buf` that held exactly one PUBLISH and had no
    ///   room left is handed over whole and left empty, with no capacity.
    /// - `Err(_)`: the stream is broken and the caller closes the connection. What is left in
    ///   `buf` is unspecified. Errors about the fixed header come as soon as its bytes are in,
    ///   before the body arrives.
    ///
    /// # Errors
    ///
    /// One [`DecodeError`] variant per rule of the subset; see each variant.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Packet>, DecodeError> {
        let Some(header) = FixedHeader::parse(buf)? else {
            return Ok(None);
        };
        let size = header.packet_len();
        if size > self.max_packet_size {
            return Err(DecodeError::PacketTooLarge {
                size,
                max: self.max_packet_size,
            });
        }
        if buf.len() < size {
            return Ok(None);
        }
        // PUBLISH is nearly all of the traffic: its path is kept apart and inlined.
        let packet = if header.packet_type == PacketType::Publish {
            Packet::Publish(decode_publish(header, buf)?)
        } else {
            decode_other(header, buf)?
        };
        Ok(Some(packet))
    }
}

/// A parsed fixed header whose type and flags are known to be acceptable.
#[derive(Clone, Copy, Debug)]
struct FixedHeader {
    packet_type: PacketType,
    flags: u8,
    header_len: usize,
    remaining_length: usize,
}

impl FixedHeader {
    /// Parses the fixed header at the front of `buf`: `Ok(None)` while it is incomplete.
    fn parse(buf: &[u8]) -> Result<Option<Self>, DecodeError> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        let (packet_type, flags) = check_type_and_flags(first)?;

        let mut remaining_length: u32 = 0;
        let mut header_len = 1;
        loop {
            let Some(&byte) = buf.get(header_len) else {
                return Ok(None);
            };
            remaining_length |= u32::from(byte & 0x7F) << (7 * (header_len - 1));
            header_len += 1;
            if byte & 0x80 == 0 {
                break;
            }
            if header_len == MAX_FIXED_HEADER_LEN {
                return Err(DecodeError::MalformedRemainingLength);
            }
        }
        // At most 268,435,455: it fits a `usize` on every target with 32-bit or wider pointers;
        // elsewhere it is too large to hold anyway.
        let remaining_length = usize::try_from(remaining_length).unwrap_or(usize::MAX);

        if matches!(
            packet_type,
            PacketType::PingReq | PacketType::PingResp | PacketType::Disconnect
        ) && remaining_length != 0
        {
            return Err(DecodeError::UnexpectedBody {
                packet_type,
                remaining_length,
            });
        }
        Ok(Some(Self {
            packet_type,
            flags,
            header_len,
            remaining_length,
        }))
    }

    /// The whole packet's size in bytes.
    fn packet_len(&self) -> usize {
        self.header_len.saturating_add(self.remaining_length)
    }
}

/// Checks the first byte of a fixed header: a packet type of the subset with the flags MQTT
/// 3.1.1 fixes for it (for PUBLISH: QoS 0 or 1, DUP only with QoS 1).
fn check_type_and_flags(first: u8) -> Result<(PacketType, u8), DecodeError> {
    let flags = first & 0x0F;
    let Some(packet_type) = PacketType::from_u8(first >> 4) else {
        return Err(DecodeError::ReservedPacketType {
            packet_type: first >> 4,
        });
    };
    match packet_type.required_flags() {
        Some(required) if flags != required => {
            return Err(DecodeError::ReservedFlags {
                packet_type,
                flags,
                required,
            });
        }
        Some(_) => {}
        None => match (flags >> 1) & 0b11 {
            3 => return Err(DecodeError::InvalidQos),
            2 => return Err(DecodeError::Qos2Publish),
            0 if flags & 0b1000 != 0 => return Err(DecodeError::DupOnQos0),
            _ => {}
        },
    }
    if matches!(
        packet_type,
        PacketType::PubRec | PacketType::PubRel | PacketType::PubComp
    ) {
        return Err(DecodeError::Qos2Flow(packet_type));
    }
    Ok((packet_type, flags))
}

/// Takes a whole PUBLISH off the front of `buf`, as two slices of it: the topic and the payload.
///
/// The body is parsed in place first (nom over `&[u8]`), so the splits know every offset and
/// nothing is split off a packet that turns out to be malformed. Splitting the packet off the
/// buffer takes one reference count (or promotes the buffer to shared storage if it was still a
/// plain vector); splitting the topic off the packet takes one more. A buffer that holds exactly
/// the packet and has no room left is taken whole, which saves the first.
#[inline]
fn decode_publish(header: FixedHeader, buf: &mut BytesMut) -> Result<Publish, DecodeError> {
    let size = header.packet_len();
    let body = buf
        .get(header.header_len..size)
        .ok_or(DecodeError::Truncated {
            packet_type: PacketType::Publish,
        })?;
    // QoS 2 and 3 were refused with the fixed header.
    let flags = header.flags;
    let fields = parse::publish(flags & 0b0110 == 0b0010, body)?;
    let qos = fields.qos;
    let topic_len = fields.topic.len();
    let payload_len = fields.payload.len();
    // What lies between the topic and the payload: the packet identifier, if any.
    let topic_end = header.header_len + parse::TOPIC_START + topic_len;
    let payload_start = size - payload_len;

    let (topic, payload) = if buf.len() == size && buf.capacity() == size {
        // The packet is all the buffer holds and the buffer has no room left: hand the buffer
        // itself over rather than split it and keep an empty view of it. The topic split is
        // then the only reference count taken, and none at all while the buffer is still a
        // plain vector (a fresh read): its promotion to shared storage starts at two owners.
        let mut packet = core::mem::take(buf);
        packet.advance(header.header_len + parse::TOPIC_START);
        let topic = packet.split_to(topic_len).freeze();
        packet.advance(payload_start - topic_end);
        (topic, packet.freeze())
    } else {
        // One split off the buffer, then the pointer moves of `Bytes`: the topic is split off
        // the front, the payload is what remains of the packet, moved rather than cloned.
        let mut payload = buf.split_to(size).freeze();
        payload.advance(header.header_len + parse::TOPIC_START);
        let topic = payload.split_to(topic_len);
        payload.advance(payload_start - topic_end);
        (topic, payload)
    };
    Ok(Publish {
        dup: flags & 0b1000 != 0,
        qos,
        retain: flags & 0b0001 != 0,
        topic: Utf8Bytes::from_checked(topic),
        payload,
    })
}

/// Takes any packet but PUBLISH (all of it is in `buf`) off the front of `buf`.
#[inline(never)]
fn decode_other(header: FixedHeader, buf: &mut BytesMut) -> Result<Packet, DecodeError> {
    let packet_type = header.packet_type;
    let header_len = header.header_len;
    let size = header.packet_len();
    match packet_type {
        // Packets with strings keep slices of the buffer: split the packet off, freeze it, and
        // step over its fixed header (a pointer move on `Bytes`).
        PacketType::Connect | PacketType::Subscribe | PacketType::Unsubscribe => {
            let mut packet = buf.split_to(size).freeze();
            packet.advance(header_len);
            match packet_type {
                PacketType::Connect => decode_connect(&packet).map(Packet::from),
                PacketType::Subscribe => decode_subscribe(&packet).map(Packet::Subscribe),
                _ => decode_unsubscribe(&packet).map(Packet::Unsubscribe),
            }
        }
        // The others are read in place: no reference count, no promotion of the buffer.
        PacketType::PingReq => {
            buf.advance(size);
            Ok(Packet::PingReq)
        }
        PacketType::PingResp => {
            buf.advance(size);
            Ok(Packet::PingResp)
        }
        PacketType::Disconnect => {
            buf.advance(size);
            Ok(Packet::Disconnect)
        }
        _ => {
            let body = buf
                .get(header_len..size)
                .ok_or(DecodeError::Truncated { packet_type })?;
            let packet = match packet_type {
                PacketType::ConnAck => {
                    let (session_present, code) = parse::connack(body)?;
                    Packet::ConnAck(ConnAck {
                        session_present,
                        code,
                    })
                }
                PacketType::PubAck => Packet::PubAck(PubAck {
                    packet_id: parse::packet_id_body(packet_type, body)?,
                }),
                PacketType::UnsubAck => Packet::UnsubAck(UnsubAck {
                    packet_id: parse::packet_id_body(packet_type, body)?,
                }),
                PacketType::SubAck => Packet::SubAck(decode_suback(body)?),
                // PUBLISH has its own path; PUBREC, PUBREL and PUBCOMP never pass
                // `check_type_and_flags`.
                _ => return Err(DecodeError::Qos2Flow(packet_type)),
            };
            buf.advance(size);
            Ok(packet)
        }
    }
}

/// A string the parsers checked, as a slice of the frozen packet.
fn checked_string(packet: &Bytes, text: &[u8]) -> Utf8Bytes {
    Utf8Bytes::from_checked(packet.slice_ref(text))
}

fn decode_connect(packet: &Bytes) -> Result<Connect, DecodeError> {
    let (rest, name, level) = parse::connect_protocol(packet)?;
    let Some(protocol) = ProtocolVersion::from_name_and_level(name, level) else {
        return Err(DecodeError::UnsupportedProtocol {
            name: packet.slice_ref(name),
            level,
        });
    };
    let fields = parse::connect_fields(rest)?;
    Ok(Connect {
        protocol,
        client_id: checked_string(packet, fields.client_id),
        clean_session: fields.flags.clean_session,
        keep_alive: fields.keep_alive,
        username: fields
            .username
            .map(|username| checked_string(packet, username)),
        password: fields.password.map(|password| packet.slice_ref(password)),
        will: fields.will.map(|(topic, payload)| Will {
            topic: checked_string(packet, topic),
            payload: packet.slice_ref(payload),
            qos: fields.flags.will_qos,
            retain: fields.flags.will_retain,
        }),
    })
}

fn decode_subscribe(packet: &Bytes) -> Result<Subscribe, DecodeError> {
    let (mut rest, packet_id) = parse::filters_packet_id(PacketType::Subscribe, packet)?;
    let mut filters = Vec::new();
    while !rest.is_empty() {
        let (after, (filter, qos)) = parse::subscribe_filter(rest)?;
        filters.push((checked_string(packet, filter), qos));
        rest = after;
    }
    Ok(Subscribe { packet_id, filters })
}

fn decode_unsubscribe(packet: &Bytes) -> Result<Unsubscribe, DecodeError> {
    let (mut rest, packet_id) = parse::filters_packet_id(PacketType::Unsubscribe, packet)?;
    let mut filters = Vec::new();
    while !rest.is_empty() {
        let (after, filter) = parse::unsubscribe_filter(rest)?;
        filters.push(checked_string(packet, filter));
        rest = after;
    }
    Ok(Unsubscribe { packet_id, filters })
}

fn decode_suback(body: &[u8]) -> Result<SubAck, DecodeError> {
    let (codes, packet_id) = parse::suback_packet_id(body)?;
    let return_codes = codes
        .iter()
        .map(|&code| parse::suback_return_code(code))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SubAck {
        packet_id,
        return_codes,
    })
}
