//! Encoding: each packet appends its bytes to a caller's buffer, reserving once.

use bytes::{BufMut, BytesMut};

use super::error::{BinaryField, EncodeError};
use super::packet::{
    ConnAck, Connect, ConnectReturnCode, Packet, PacketType, PubAck, Publish, PublishQos, SubAck,
    Subscribe, UnsubAck, Unsubscribe,
};
use super::types::{MAX_STRING_LEN, Utf8Bytes};

/// The largest remaining length MQTT can express (four 7-bit groups).
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// How many bytes the remaining length `len` takes on the wire (`len` at most
/// [`MAX_REMAINING_LENGTH`]).
const fn remaining_length_len(len: usize) -> usize {
    if len < 0x80 {
        1
    } else if len < 0x4000 {
        2
    } else if len < 0x20_0000 {
        3
    } else {
        4
    }
}

/// Refuses a body longer than a remaining length can say.
fn check_remaining_length(remaining_length: usize) -> Result<usize, EncodeError> {
    if remaining_length > MAX_REMAINING_LENGTH {
        Err(EncodeError::RemainingLengthTooLarge { remaining_length })
    } else {
        Ok(remaining_length)
    }
}

/// The size of a whole packet whose body is `remaining_length` bytes.
const fn packet_len(remaining_length: usize) -> usize {
    1 + remaining_length_len(remaining_length) + remaining_length
}

/// The low 7 bits of `value`, the payload of one remaining-length byte.
const fn low_bits(value: usize) -> u8 {
    (value & 0x7F) as u8
}

/// Writes the type-and-flags byte and the remaining length (at most [`MAX_REMAINING_LENGTH`])
/// in one write of a fixed size.
#[inline]
fn put_fixed_header(buf: &mut BytesMut, first: u8, remaining_length: usize) {
    let len = remaining_length;
    match remaining_length_len(len) {
        1 => buf.put_slice(&[first, low_bits(len)]),
        2 => buf.put_slice(&[first, low_bits(len) | 0x80, low_bits(len >> 7)]),
        3 => buf.put_slice(&[
            first,
            low_bits(len) | 0x80,
            low_bits(len >> 7) | 0x80,
            low_bits(len >> 14),
        ]),
        _ => buf.put_slice(&[
            first,
            low_bits(len) | 0x80,
            low_bits(len >> 7) | 0x80,
            low_bits(len >> 14) | 0x80,
            low_bits(len >> 21),
        ]),
    }
}

/// Writes a field with a 2-byte length prefix; the caller checked it is at most 65,535 bytes.
#[inline]
fn put_prefixed(buf: &mut BytesMut, field: &[u8]) {
    buf.put_u16(u16::try_from(field.len()).unwrap_or(u16::MAX));
    buf.put_slice(field);
}

fn put_string(buf: &mut BytesMut, text: &Utf8Bytes) {
    put_prefixed(buf, text.as_bytes());
}

/// The length of a binary field with its prefix, refusing one over 65,535 bytes.
fn prefixed_binary_len(field: BinaryField, len: usize) -> Result<usize, EncodeError> {
    if len > MAX_STRING_LEN {
        Err(EncodeError::FieldTooLong { field, len })
    } else {
        Ok(2 + len)
    }
}

fn first_byte(packet_type: PacketType, flags: u8) -> u8 {
    ((packet_type as u8) << 4) | flags
}

impl Connect {
    fn remaining_length(&self) -> Result<usize, EncodeError> {
        if self.password.is_some() && self.username.is_none() {
            return Err(EncodeError::PasswordWithoutUsername);
        }
        // Protocol name, level, flags, keepalive, client id.
        let mut len =
            2 + self.protocol.protocol_name().len() + 1 + 1 + 2 + 2 + self.client_id.len();
        if let Some(will) = &self.will {
            len += 2 + will.topic.len();
            len += prefixed_binary_len(BinaryField::WillPayload, will.payload.len())?;
        }
        if let Some(username) = &self.username {
            len += 2 + username.len();
        }
        if let Some(password) = &self.password {
            len += prefixed_binary_len(BinaryField::Password, password.len())?;
        }
        check_remaining_length(len)
    }

    fn connect_flags(&self) -> u8 {
        let mut flags = 0;
        if self.username.is_some() {
            flags |= 0b1000_0000;
        }
        if self.password.is_some() {
            flags |= 0b0100_0000;
        }
        if let Some(will) = &self.will {
            if will.retain {
                flags |= 0b0010_0000;
            }
            flags |= u8::from(will.qos) << 3;
            flags |= 0b0000_0100;
        }
        if self.clean_session {
            flags |= 0b0000_0010;
        }
        flags
    }

    /// The size of the encoded packet in bytes.
    ///
    /// # Errors
    ///
    /// As [`encode`](Self::encode).
    pub fn encoded_len(&self) -> Result<usize, EncodeError> {
        self.remaining_length().map(packet_len)
    }

    /// Appends the packet to `buf`.
    ///
    /// # Errors
    ///
    /// [`EncodeError::PasswordWithoutUsername`], or [`EncodeError::FieldTooLong`] for a password
    /// or will payload over 65,535 bytes. Nothing is written on error.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let remaining_length = self.remaining_length()?;
        buf.reserve(packet_len(remaining_length));
        put_fixed_header(buf, first_byte(PacketType::Connect, 0), remaining_length);
        put_prefixed(buf, self.protocol.protocol_name().as_bytes());
        buf.put_u8(self.protocol.level());
        buf.put_u8(self.connect_flags());
        buf.put_u16(self.keep_alive);
        put_string(buf, &self.client_id);
        if let Some(will) = &self.will {
            put_string(buf, &will.topic);
            put_prefixed(buf, &will.payload);
        }
        if let Some(username) = &self.username {
            put_string(buf, username);
        }
        if let Some(password) = &self.password {
            put_prefixed(buf, password);
        }
        Ok(())
    }
}

impl ConnAck {
    /// The size of the encoded packet: 4 bytes.
    ///
    /// # Errors
    ///
    /// As [`encode`](Self::encode).
    pub fn encoded_len(&self) -> Result<usize, EncodeError> {
        if self.session_present && self.code != ConnectReturnCode::Accepted {
            return Err(EncodeError::SessionPresentWithRefusal { code: self.code });
        }
        Ok(4)
    }

    /// Appends the packet to `buf`.
    ///
    /// # Errors
    ///
    /// [`EncodeError::SessionPresentWithRefusal`]: MQTT requires session present to be clear
    /// when the code refuses the connection. Nothing is written on error.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        buf.reserve(self.encoded_len()?);
        put_fixed_header(buf, first_byte(PacketType::ConnAck, 0), 2);
        buf.put_u8(u8::from(self.session_present));
        buf.put_u8(self.code.to_u8());
        Ok(())
    }
}

/// The lengths of a PUBLISH, worked out once for both the reservation and the writes.
#[derive(Clone, Copy)]
struct PublishLayout {
    /// Topic length and packet identifier: the body without the payload.
    variable_header_len: usize,
    /// The body with the payload.
    remaining_length: usize,
}

impl PublishLayout {
    /// Fixed header and variable header: everything but the payload.
    const fn header_len(self) -> usize {
        1 + remaining_length_len(self.remaining_length) + self.variable_header_len
    }
}

impl Publish {
    fn layout(&self) -> Result<PublishLayout, EncodeError> {
        if self.dup && self.qos == PublishQos::AtMostOnce {
            return Err(EncodeError::DupOnQos0);
        }
        let packet_id_len = match self.qos {
            PublishQos::AtMostOnce => 0,
            PublishQos::AtLeastOnce(_) => 2,
        };
        // A topic is at most 65,535 bytes (`Utf8Bytes`), so this cannot overflow.
        let variable_header_len = 2 + self.topic.len() + packet_id_len;
        let remaining_length =
            check_remaining_length(variable_header_len.saturating_add(self.payload.len()))?;
        Ok(PublishLayout {
            variable_header_len,
            remaining_length,
        })
    }

    fn first_byte(&self) -> u8 {
        let mut flags = u8::from(self.qos.qos()) << 1;
        if self.dup {
            flags |= 0b1000;
        }
        if self.retain {
            flags |= 0b0001;
        }
        first_byte(PacketType::Publish, flags)
    }

    /// Writes the fixed header, topic and packet identifier; `buf` has room for them.
    #[inline(always)]
    fn put_header(&self, buf: &mut BytesMut, layout: PublishLayout) {
        let first = self.first_byte();
        let len = layout.remaining_length;
        let topic = self.topic.as_bytes();
        // At most 65,535 bytes, as `Utf8Bytes` guarantees.
        let [topic_high, topic_low] = u16::try_from(topic.len()).unwrap_or(u16::MAX).to_be_bytes();
        // The fixed header and the topic length in one write of a fixed size.
        match remaining_length_len(len) {
            1 => buf.put_slice(&[first, low_bits(len), topic_high, topic_low]),
            2 => buf.put_slice(&[
                first,
                low_bits(len) | 0x80,
                low_bits(len >> 7),
                topic_high,
                topic_low,
            ]),
            3 => buf.put_slice(&[
                first,
                low_bits(len) | 0x80,
                low_bits(len >> 7) | 0x80,
                low_bits(len >> 14),
                topic_high,
                topic_low,
            ]),
            _ => buf.put_slice(&[
                first,
                low_bits(len) | 0x80,
                low_bits(len >> 7) | 0x80,
                low_bits(len >> 14) | 0x80,
                low_bits(len >> 21),
                topic_high,
                topic_low,
            ]),
        }
        buf.put_slice(topic);
        if let PublishQos::AtLeastOnce(packet_id) = self.qos {
            buf.put_slice(&packet_id.get().to_be_bytes());
        }
    }

    /// The size of the encoded packet in bytes, payload included.
    ///
    /// # Errors
    ///
    /// As [`encode`](Self::encode).
    pub fn encoded_len(&self) -> Result<usize, EncodeError> {
        self.layout()
            .map(|layout| packet_len(layout.remaining_length))
    }

    /// The size of what [`encode_header`](Self::encode_header) writes: everything but the payload.
    ///
    /// # Errors
    ///
    /// As [`encode`](Self::encode).
    pub fn encoded_header_len(&self) -> Result<usize, EncodeError> {
        self.layout().map(PublishLayout::header_len)
    }

    /// Appends the whole packet, payload copied in, to `buf`.
    ///
    /// # Errors
    ///
    /// [`EncodeError::DupOnQos0`], or [`EncodeError::RemainingLengthTooLarge`] for a payload too
    /// large for MQTT. Nothing is written on error.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let layout = self.layout()?;
        buf.reserve(packet_len(layout.remaining_length));
        self.put_header(buf, layout);
        buf.put_slice(&self.payload);
        Ok(())
    }

    /// Writes the fixed header, topic and packet id, not the payload: the caller sends
    /// `self.payload` as its own chunk (vectored write, no copy).
    ///
    /// ```
    /// use aliot_core::codec::{Packet, PacketId, Publish, PublishQos, Utf8Bytes};
    /// use bytes::{Bytes, BytesMut};
    ///
    /// let publish = Publish {
    ///     dup: false,
    ///     qos: PublishQos::AtLeastOnce(PacketId::new(1).unwrap()),
    ///     retain: false,
    ///     topic: Utf8Bytes::from_static("/a1TestPK001/dev-001/user/update"),
    ///     payload: Bytes::from_static(b"{\"temperature\":21.5}"),
    /// };
    /// let mut header = BytesMut::new();
    /// publish.encode_header(&mut header)?;
    /// // header, then the payload: the same bytes as the whole packet.
    /// let mut whole = BytesMut::new();
    /// Packet::from(publish.clone()).encode(&mut whole)?;
    /// assert_eq!([&header[..], &publish.payload[..]].concat(), whole);
    /// # Ok::<(), aliot_core::codec::EncodeError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`encode`](Self::encode). Nothing is written on error.
    pub fn encode_header(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let layout = self.layout()?;
        buf.reserve(layout.header_len());
        self.put_header(buf, layout);
        Ok(())
    }
}

/// Writes a packet whose body is exactly a packet identifier.
fn put_packet_id_packet(buf: &mut BytesMut, packet_type: PacketType, packet_id: u16) {
    buf.reserve(4);
    put_fixed_header(buf, first_byte(packet_type, 0), 2);
    buf.put_u16(packet_id);
}

impl PubAck {
    /// The size of the encoded packet: 4 bytes.
    pub const ENCODED_LEN: usize = 4;

    /// Appends the packet to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) {
        put_packet_id_packet(buf, PacketType::PubAck, self.packet_id.get());
    }
}

impl UnsubAck {
    /// The size of the encoded packet: 4 bytes.
    pub const ENCODED_LEN: usize = 4;

    /// Appends the packet to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) {
        put_packet_id_packet(buf, PacketType::UnsubAck, self.packet_id.get());
    }
}

impl Subscribe {
    fn remaining_length(&self) -> Result<usize, EncodeError> {
        if self.filters.is_empty() {
            return Err(EncodeError::SubscribeWithoutFilters);
        }
        let filters_len = self.filters.iter().fold(0usize, |len, (filter, _)| {
            len.saturating_add(3 + filter.len())
        });
        check_remaining_length(filters_len.saturating_add(2))
    }

    /// The size of the encoded packet in bytes.
    ///
    /// # Errors
    ///
    /// As [`encode`](Self::encode).
    pub fn encoded_len(&self) -> Result<usize, EncodeError> {
        self.remaining_length().map(packet_len)
    }

    /// Appends the packet to `buf`.
    ///
    /// # Errors
    ///
    /// [`EncodeError::SubscribeWithoutFilters`], or [`EncodeError::RemainingLengthTooLarge`].
    /// Nothing is written on error.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let remaining_length = self.remaining_length()?;
        buf.reserve(packet_len(remaining_length));
        put_fixed_header(
            buf,
            first_byte(PacketType::Subscribe, 0b0010),
            remaining_length,
        );
        buf.put_u16(self.packet_id.get());
        for (filter, qos) in &self.filters {
            put_string(buf, filter);
            buf.put_u8(u8::from(*qos));
        }
        Ok(())
    }
}

impl SubAck {
    fn remaining_length(&self) -> Result<usize, EncodeError> {
        if self.return_codes.is_empty() {
            return Err(EncodeError::SubAckWithoutReturnCodes);
        }
        check_remaining_length(self.return_codes.len().saturating_add(2))
    }

    /// The size of the encoded packet in bytes.
    ///
    /// # Errors
    ///
    /// As [`encode`](Self::encode).
    pub fn encoded_len(&self) -> Result<usize, EncodeError> {
        self.remaining_length().map(packet_len)
    }

    /// Appends the packet to `buf`.
    ///
    /// # Errors
    ///
    /// [`EncodeError::SubAckWithoutReturnCodes`], or [`EncodeError::RemainingLengthTooLarge`].
    /// Nothing is written on error.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let remaining_length = self.remaining_length()?;
        buf.reserve(packet_len(remaining_length));
        put_fixed_header(buf, first_byte(PacketType::SubAck, 0), remaining_length);
        buf.put_u16(self.packet_id.get());
        for code in &self.return_codes {
            buf.put_u8(code.to_u8());
        }
        Ok(())
    }
}

impl Unsubscribe {
    fn remaining_length(&self) -> Result<usize, EncodeError> {
        if self.filters.is_empty() {
            return Err(EncodeError::UnsubscribeWithoutFilters);
        }
        let filters_len = self
            .filters
            .iter()
            .fold(0usize, |len, filter| len.saturating_add(2 + filter.len()));
        check_remaining_length(filters_len.saturating_add(2))
    }

    /// The size of the encoded packet in bytes.
    ///
    /// # Errors
    ///
    /// As [`encode`](Self::encode).
    pub fn encoded_len(&self) -> Result<usize, EncodeError> {
        self.remaining_length().map(packet_len)
    }

    /// Appends the packet to `buf`.
    ///
    /// # Errors
    ///
    /// [`EncodeError::UnsubscribeWithoutFilters`], or [`EncodeError::RemainingLengthTooLarge`].
    /// Nothing is written on error.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let remaining_length = self.remaining_length()?;
        buf.reserve(packet_len(remaining_length));
        put_fixed_header(
            buf,
            first_byte(PacketType::Unsubscribe, 0b0010),
            remaining_length,
        );
        buf.put_u16(self.packet_id.get());
        for filter in &self.filters {
            put_string(buf, filter);
        }
        Ok(())
    }
}

/// Writes a packet with no body (PINGREQ, PINGRESP, DISCONNECT).
fn put_empty_packet(buf: &mut BytesMut, packet_type: PacketType) {
    buf.reserve(2);
    put_fixed_header(buf, first_byte(packet_type, 0), 0);
}

impl Packet {
    /// Appends the packet to `buf`.
    ///
    /// ```
    /// use aliot_core::codec::Packet;
    /// use bytes::BytesMut;
    ///
    /// let mut buf = BytesMut::new();
    /// Packet::PingReq.encode(&mut buf)?;
    /// assert_eq!(&buf[..], &[0xC0, 0x00]);
    /// # Ok::<(), aliot_core::codec::EncodeError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// The packet's own `encode` error: encoding never produces a packet MQTT forbids.
    /// Nothing is written on error.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        match self {
            Self::Connect(connect) => connect.encode(buf),
            Self::ConnAck(connack) => connack.encode(buf),
            Self::Publish(publish) => publish.encode(buf),
            Self::PubAck(puback) => {
                puback.encode(buf);
                Ok(())
            }
            Self::Subscribe(subscribe) => subscribe.encode(buf),
            Self::SubAck(suback) => suback.encode(buf),
            Self::Unsubscribe(unsubscribe) => unsubscribe.encode(buf),
            Self::UnsubAck(unsuback) => {
                unsuback.encode(buf);
                Ok(())
            }
            Self::PingReq => {
                put_empty_packet(buf, PacketType::PingReq);
                Ok(())
            }
            Self::PingResp => {
                put_empty_packet(buf, PacketType::PingResp);
                Ok(())
            }
            Self::Disconnect => {
                put_empty_packet(buf, PacketType::Disconnect);
                Ok(())
            }
        }
    }

    /// The size of the encoded packet in bytes.
    ///
    /// # Errors
    ///
    /// The same as [`encode`](Self::encode) would return.
    pub fn encoded_len(&self) -> Result<usize, EncodeError> {
        match self {
            Self::Connect(connect) => connect.encoded_len(),
            Self::ConnAck(connack) => connack.encoded_len(),
            Self::Publish(publish) => publish.encoded_len(),
            Self::PubAck(_) => Ok(PubAck::ENCODED_LEN),
            Self::Subscribe(subscribe) => subscribe.encoded_len(),
            Self::SubAck(suback) => suback.encoded_len(),
            Self::Unsubscribe(unsubscribe) => unsubscribe.encoded_len(),
            Self::UnsubAck(_) => Ok(UnsubAck::ENCODED_LEN),
            Self::PingReq | Self::PingResp | Self::Disconnect => Ok(2),
        }
    }
}
