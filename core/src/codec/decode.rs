//! The streaming decoder: complete packets off the front of a growing read buffer.

use alloc::vec::Vec;

use bytes::{Buf, Bytes, BytesMut};

use super::error::{DecodeError, StringField};
use super::packet::{
    ConnAck, Connect, ConnectReturnCode, Packet, PacketType, PubAck, Publish, PublishQos, SubAck,
    SubAckReturnCode, Subscribe, UnsubAck, Unsubscribe, Will,
};
use super::types::{PacketId, ProtocolVersion, QoS, StringFault, Utf8Bytes, check_string_content};

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
    ///   are slices of them ([`BytesMut::split_to`] then `freeze`), not copies.
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
        buf.advance(header.header_len);
        decode_body(header, buf).map(Some)
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

/// Decodes the body at the front of `buf` (which holds all of it) and removes it from `buf`.
fn decode_body(header: FixedHeader, buf: &mut BytesMut) -> Result<Packet, DecodeError> {
    let packet_type = header.packet_type;
    let len = header.remaining_length;
    match packet_type {
        // Packets with strings keep slices of the buffer.
        PacketType::Publish => {
            decode_publish(header.flags, buf.split_to(len).freeze()).map(Packet::Publish)
        }
        PacketType::Connect => decode_connect(buf.split_to(len).freeze()).map(Packet::Connect),
        PacketType::Subscribe => {
            decode_subscribe(buf.split_to(len).freeze()).map(Packet::Subscribe)
        }
        PacketType::Unsubscribe => {
            decode_unsubscribe(buf.split_to(len).freeze()).map(Packet::Unsubscribe)
        }
        // The others are read in place: no reference count, no promotion of the buffer.
        PacketType::PingReq => Ok(Packet::PingReq),
        PacketType::PingResp => Ok(Packet::PingResp),
        PacketType::Disconnect => Ok(Packet::Disconnect),
        _ => {
            let body = buf
                .get(..len)
                .ok_or(DecodeError::Truncated { packet_type })?;
            let packet = match packet_type {
                PacketType::ConnAck => Packet::ConnAck(decode_connack(body)?),
                PacketType::PubAck => Packet::PubAck(PubAck {
                    packet_id: decode_packet_id_body(packet_type, body)?,
                }),
                PacketType::UnsubAck => Packet::UnsubAck(UnsubAck {
                    packet_id: decode_packet_id_body(packet_type, body)?,
                }),
                PacketType::SubAck => Packet::SubAck(decode_suback(body)?),
                // PUBREC, PUBREL and PUBCOMP never pass `check_type_and_flags`.
                _ => return Err(DecodeError::Qos2Flow(packet_type)),
            };
            buf.advance(len);
            Ok(packet)
        }
    }
}

/// Reads the fields of a body held as [`Bytes`], so strings and payloads stay slices of it.
struct BodyReader {
    packet_type: PacketType,
    rest: Bytes,
}

impl BodyReader {
    fn new(packet_type: PacketType, body: Bytes) -> Self {
        Self {
            packet_type,
            rest: body,
        }
    }

    fn truncated(&self) -> DecodeError {
        DecodeError::Truncated {
            packet_type: self.packet_type,
        }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        let Some(&byte) = self.rest.first() else {
            return Err(self.truncated());
        };
        self.rest.advance(1);
        Ok(byte)
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        let &[high, low, ..] = self.rest.as_ref() else {
            return Err(self.truncated());
        };
        self.rest.advance(2);
        Ok(u16::from_be_bytes([high, low]))
    }

    fn packet_id(&mut self) -> Result<PacketId, DecodeError> {
        PacketId::new(self.u16()?).ok_or(DecodeError::ZeroPacketId {
            packet_type: self.packet_type,
        })
    }

    /// A field with a 2-byte length prefix.
    fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = usize::from(self.u16()?);
        if len > self.rest.len() {
            return Err(self.truncated());
        }
        Ok(self.rest.split_to(len))
    }

    /// An MQTT UTF-8 string field.
    fn string(&mut self, field: StringField) -> Result<Utf8Bytes, DecodeError> {
        let bytes = self.binary()?;
        check_string_content(&bytes).map_err(|fault| match fault {
            StringFault::InvalidUtf8 { valid_up_to } => {
                DecodeError::InvalidUtf8 { field, valid_up_to }
            }
            StringFault::NullCharacter { at } => DecodeError::NullCharacter { field, at },
        })?;
        Ok(Utf8Bytes::from_checked(bytes))
    }

    /// Everything left: the PUBLISH payload.
    fn into_rest(self) -> Bytes {
        self.rest
    }

    /// Ends the body: nothing may be left.
    fn finish(self) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                packet_type: self.packet_type,
                count: self.rest.len(),
            })
        }
    }
}

fn decode_publish(flags: u8, body: Bytes) -> Result<Publish, DecodeError> {
    let mut reader = BodyReader::new(PacketType::Publish, body);
    let topic = reader.string(StringField::TopicName)?;
    // QoS 2 and 3 were refused with the fixed header.
    let qos = if flags & 0b0110 == 0b0010 {
        PublishQos::AtLeastOnce(reader.packet_id()?)
    } else {
        PublishQos::AtMostOnce
    };
    Ok(Publish {
        dup: flags & 0b1000 != 0,
        qos,
        retain: flags & 0b0001 != 0,
        topic,
        payload: reader.into_rest(),
    })
}

const USERNAME_FLAG: u8 = 0b1000_0000;
const PASSWORD_FLAG: u8 = 0b0100_0000;
const WILL_RETAIN_FLAG: u8 = 0b0010_0000;
const WILL_QOS_MASK: u8 = 0b0001_1000;
const WILL_FLAG: u8 = 0b0000_0100;
const CLEAN_SESSION_FLAG: u8 = 0b0000_0010;
const CONNECT_RESERVED_FLAG: u8 = 0b0000_0001;

fn decode_connect(body: Bytes) -> Result<Connect, DecodeError> {
    let mut reader = BodyReader::new(PacketType::Connect, body);
    // Checked first: a later protocol (MQTT 5) lays out the rest differently, and the server
    // must be able to answer CONNACK 1 whatever follows.
    let name = reader.binary()?;
    let level = reader.u8()?;
    let Some(protocol) = ProtocolVersion::from_name_and_level(&name, level) else {
        return Err(DecodeError::UnsupportedProtocol { name, level });
    };

    let flags = reader.u8()?;
    if flags & CONNECT_RESERVED_FLAG != 0 {
        return Err(DecodeError::ConnectReservedFlag);
    }
    let has_will = flags & WILL_FLAG != 0;
    if !has_will && flags & (WILL_QOS_MASK | WILL_RETAIN_FLAG) != 0 {
        return Err(DecodeError::WillFlagsWithoutWill { flags });
    }
    let will_qos =
        QoS::try_from((flags & WILL_QOS_MASK) >> 3).map_err(|_| DecodeError::InvalidWillQos)?;
    let has_username = flags & USERNAME_FLAG != 0;
    let has_password = flags & PASSWORD_FLAG != 0;
    if has_password && !has_username {
        return Err(DecodeError::PasswordWithoutUsername);
    }
    let keep_alive = reader.u16()?;

    let client_id = reader.string(StringField::ClientId)?;
    let will = if has_will {
        let topic = reader.string(StringField::WillTopic)?;
        let payload = reader.binary()?;
        Some(Will {
            topic,
            payload,
            qos: will_qos,
            retain: flags & WILL_RETAIN_FLAG != 0,
        })
    } else {
        None
    };
    let username = if has_username {
        Some(reader.string(StringField::Username)?)
    } else {
        None
    };
    let password = if has_password {
        Some(reader.binary()?)
    } else {
        None
    };
    reader.finish()?;
    Ok(Connect {
        protocol,
        client_id,
        clean_session: flags & CLEAN_SESSION_FLAG != 0,
        keep_alive,
        username,
        password,
        will,
    })
}

fn decode_subscribe(body: Bytes) -> Result<Subscribe, DecodeError> {
    let mut reader = BodyReader::new(PacketType::Subscribe, body);
    let packet_id = reader.packet_id()?;
    if reader.is_empty() {
        return Err(DecodeError::SubscribeWithoutFilters);
    }
    let mut filters = Vec::new();
    while !reader.is_empty() {
        let filter = reader.string(StringField::TopicFilter)?;
        let options = reader.u8()?;
        if options & 0b1111_1100 != 0 {
            return Err(DecodeError::SubscribeOptionsReserved { options });
        }
        let qos = QoS::try_from(options).map_err(|_| DecodeError::InvalidRequestedQos)?;
        filters.push((filter, qos));
    }
    Ok(Subscribe { packet_id, filters })
}

fn decode_unsubscribe(body: Bytes) -> Result<Unsubscribe, DecodeError> {
    let mut reader = BodyReader::new(PacketType::Unsubscribe, body);
    let packet_id = reader.packet_id()?;
    if reader.is_empty() {
        return Err(DecodeError::UnsubscribeWithoutFilters);
    }
    let mut filters = Vec::new();
    while !reader.is_empty() {
        filters.push(reader.string(StringField::TopicFilter)?);
    }
    Ok(Unsubscribe { packet_id, filters })
}

/// The body of PUBACK or UNSUBACK: exactly a non-zero packet identifier.
fn decode_packet_id_body(packet_type: PacketType, body: &[u8]) -> Result<PacketId, DecodeError> {
    match *body {
        [high, low] => PacketId::new(u16::from_be_bytes([high, low]))
            .ok_or(DecodeError::ZeroPacketId { packet_type }),
        [] | [_] => Err(DecodeError::Truncated { packet_type }),
        _ => Err(DecodeError::TrailingBytes {
            packet_type,
            count: body.len().saturating_sub(2),
        }),
    }
}

fn decode_connack(body: &[u8]) -> Result<ConnAck, DecodeError> {
    let packet_type = PacketType::ConnAck;
    let (flags, code) = match *body {
        [flags, code] => (flags, code),
        [] | [_] => return Err(DecodeError::Truncated { packet_type }),
        _ => {
            return Err(DecodeError::TrailingBytes {
                packet_type,
                count: body.len().saturating_sub(2),
            });
        }
    };
    if flags & 0b1111_1110 != 0 {
        return Err(DecodeError::ConnAckReservedFlags { flags });
    }
    let code =
        ConnectReturnCode::from_u8(code).ok_or(DecodeError::InvalidConnectReturnCode { code })?;
    let session_present = flags & 1 != 0;
    if session_present && code != ConnectReturnCode::Accepted {
        return Err(DecodeError::SessionPresentWithRefusal { code });
    }
    Ok(ConnAck {
        session_present,
        code,
    })
}

fn decode_suback(body: &[u8]) -> Result<SubAck, DecodeError> {
    let packet_type = PacketType::SubAck;
    let &[high, low, ref codes @ ..] = body else {
        return Err(DecodeError::Truncated { packet_type });
    };
    let packet_id = PacketId::new(u16::from_be_bytes([high, low]))
        .ok_or(DecodeError::ZeroPacketId { packet_type })?;
    if codes.is_empty() {
        return Err(DecodeError::SubAckWithoutReturnCodes);
    }
    let return_codes = codes
        .iter()
        .map(|&code| {
            SubAckReturnCode::from_u8(code).ok_or(DecodeError::InvalidSubAckReturnCode { code })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SubAck {
        packet_id,
        return_codes,
    })
}
