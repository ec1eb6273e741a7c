//! The body parsers, built on nom over complete `&[u8]` input.
//!
//! Each parser reads the fields of one packet body and hands back sub-slices of it; the decoder
//! turns those back into [`Bytes`](bytes::Bytes) of the frozen packet (by offset or
//! `Bytes::slice_ref`), so nothing is copied. nom's "the input ended" becomes
//! [`DecodeError::Truncated`]; every other rule comes out as its own [`DecodeError`] variant, in
//! the order the fields are read: inside the parsers (`map_res`, carried by [`FieldError`]), or,
//! on the PUBLISH hot path, between fields read with nom's zero-sized error `()`.

use nom::error::{ErrorKind, FromExternalError, ParseError};
use nom::multi::length_data;
use nom::number::{be_u8, be_u16};
use nom::{IResult, Parser};

use super::error::{DecodeError, StringField};
use super::packet::{ConnectReturnCode, PacketType, PublishQos, SubAckReturnCode};
use super::types::{PacketId, QoS, StringFault, check_string_content};

/// The error of the field parsers: the body ended before a field did, or a rule is broken.
#[derive(Debug)]
pub(super) enum FieldError {
    /// nom ran out of input (complete input: the body is shorter than its fields).
    Truncated,
    /// A field is there but breaks a rule.
    Broken(DecodeError),
}

impl ParseError<&[u8]> for FieldError {
    fn from_error_kind(_input: &[u8], _kind: ErrorKind) -> Self {
        // The only parsers that fail on their own are `be_u8`, `be_u16` and `take`, at the end
        // of the input.
        Self::Truncated
    }

    fn append(_input: &[u8], _kind: ErrorKind, other: Self) -> Self {
        other
    }
}

impl FromExternalError<&[u8], DecodeError> for FieldError {
    fn from_external_error(_input: &[u8], _kind: ErrorKind, error: DecodeError) -> Self {
        Self::Broken(error)
    }
}

/// What the field parsers return.
pub(super) type FieldResult<'a, T> = IResult<&'a [u8], T, FieldError>;

/// What is left of the input after a value, and the value; or why there is no value.
pub(super) type Parsed<'a, T> = Result<(&'a [u8], T), DecodeError>;

/// The [`DecodeError`] a failed parse of a `packet_type` body stands for.
fn into_decode_error(packet_type: PacketType) -> impl Fn(nom::Err<FieldError>) -> DecodeError {
    move |error| match error {
        nom::Err::Error(FieldError::Broken(error))
        | nom::Err::Failure(FieldError::Broken(error)) => error,
        // `Incomplete` cannot come out of `parse_complete`; it means the same anyway.
        nom::Err::Error(FieldError::Truncated)
        | nom::Err::Failure(FieldError::Truncated)
        | nom::Err::Incomplete(_) => DecodeError::Truncated { packet_type },
    }
}

/// Refuses what is left of a body after its last field.
fn end_of_body(packet_type: PacketType, rest: &[u8]) -> Result<(), DecodeError> {
    if rest.is_empty() {
        Ok(())
    } else {
        Err(DecodeError::TrailingBytes {
            packet_type,
            count: rest.len(),
        })
    }
}

/// An MQTT binary field: a big-endian `u16` length, then that many bytes.
#[inline]
fn binary(input: &[u8]) -> FieldResult<'_, &[u8]> {
    length_data(be_u16()).parse_complete(input)
}

/// Checks the content of a string `field`: valid UTF-8 without U+0000.
#[inline]
fn check_string(field: StringField, text: &[u8]) -> Result<&[u8], DecodeError> {
    match check_string_content(text) {
        Ok(()) => Ok(text),
        Err(StringFault::InvalidUtf8 { valid_up_to }) => {
            Err(DecodeError::InvalidUtf8 { field, valid_up_to })
        }
        Err(StringFault::NullCharacter { at }) => Err(DecodeError::NullCharacter { field, at }),
    }
}

/// An MQTT UTF-8 string field: a binary field that is valid UTF-8 without U+0000.
fn string(field: StringField, input: &[u8]) -> FieldResult<'_, &[u8]> {
    length_data(be_u16())
        .map_res(|text| check_string(field, text))
        .parse_complete(input)
}

/// A non-zero packet identifier.
#[inline]
fn packet_id(packet_type: PacketType, input: &[u8]) -> FieldResult<'_, PacketId> {
    be_u16()
        .map_res(|id| PacketId::new(id).ok_or(DecodeError::ZeroPacketId { packet_type }))
        .parse_complete(input)
}

/// The fields of a PUBLISH body, borrowed from it.
pub(super) struct PublishFields<'a> {
    /// The topic name, without its length prefix.
    pub(super) topic: &'a [u8],
    /// QoS and packet identifier.
    pub(super) qos: PublishQos,
    /// Everything after the variable header.
    pub(super) payload: &'a [u8],
}

/// Where a PUBLISH topic starts in the body: after its 2-byte length.
pub(super) const TOPIC_START: usize = 2;

/// A PUBLISH body: topic name, the packet identifier when `at_least_once`, then the payload.
///
/// The hot path of the decoder: nom reads the layout with the zero-sized error `()` (any failure
/// of `be_u16` or `take` on complete input is the body ending early), and the rules are checked
/// between the fields, in the order they are read, so the result stays small.
#[inline]
pub(super) fn publish(at_least_once: bool, body: &[u8]) -> Result<PublishFields<'_>, DecodeError> {
    let packet_type = PacketType::Publish;
    let truncated = |_: nom::Err<()>| DecodeError::Truncated { packet_type };
    let (rest, topic) = length_data(be_u16::<_, ()>())
        .parse_complete(body)
        .map_err(truncated)?;
    check_string(StringField::TopicName, topic)?;
    let (payload, qos) = if at_least_once {
        let (payload, id) = be_u16::<_, ()>().parse_complete(rest).map_err(truncated)?;
        let id = PacketId::new(id).ok_or(DecodeError::ZeroPacketId { packet_type })?;
        (payload, PublishQos::AtLeastOnce(id))
    } else {
        (rest, PublishQos::AtMostOnce)
    };
    Ok(PublishFields {
        topic,
        qos,
        payload,
    })
}

/// The protocol name and level at the front of a CONNECT body, and what follows them.
///
/// Read on their own because a later protocol (MQTT 5) lays out the rest differently: the server
/// must be able to answer CONNACK 1 whatever follows.
pub(super) fn connect_protocol(body: &[u8]) -> Result<(&[u8], &[u8], u8), DecodeError> {
    let (rest, (name, level)) = (binary, be_u8())
        .parse_complete(body)
        .map_err(into_decode_error(PacketType::Connect))?;
    Ok((rest, name, level))
}

const USERNAME_FLAG: u8 = 0b1000_0000;
const PASSWORD_FLAG: u8 = 0b0100_0000;
const WILL_RETAIN_FLAG: u8 = 0b0010_0000;
const WILL_QOS_MASK: u8 = 0b0001_1000;
const WILL_FLAG: u8 = 0b0000_0100;
const CLEAN_SESSION_FLAG: u8 = 0b0000_0010;
const CONNECT_RESERVED_FLAG: u8 = 0b0000_0001;

/// The connect flags byte, checked.
#[derive(Clone, Copy)]
pub(super) struct ConnectFlags {
    /// The will flag.
    pub(super) will: bool,
    /// The will QoS (0 without a will).
    pub(super) will_qos: QoS,
    /// The will retain flag.
    pub(super) will_retain: bool,
    /// The user name flag.
    pub(super) username: bool,
    /// The password flag (only with the user name flag).
    pub(super) password: bool,
    /// The clean session flag.
    pub(super) clean_session: bool,
}

/// Checks the connect flags byte against MQTT 3.1.1 §3.1.2.3.
fn connect_flags(flags: u8) -> Result<ConnectFlags, DecodeError> {
    if flags & CONNECT_RESERVED_FLAG != 0 {
        return Err(DecodeError::ConnectReservedFlag);
    }
    let will = flags & WILL_FLAG != 0;
    if !will && flags & (WILL_QOS_MASK | WILL_RETAIN_FLAG) != 0 {
        return Err(DecodeError::WillFlagsWithoutWill { flags });
    }
    let will_qos =
        QoS::try_from((flags & WILL_QOS_MASK) >> 3).map_err(|_| DecodeError::InvalidWillQos)?;
    let username = flags & USERNAME_FLAG != 0;
    let password = flags & PASSWORD_FLAG != 0;
    if password && !username {
        return Err(DecodeError::PasswordWithoutUsername);
    }
    Ok(ConnectFlags {
        will,
        will_qos,
        will_retain: flags & WILL_RETAIN_FLAG != 0,
        username,
        password,
        clean_session: flags & CLEAN_SESSION_FLAG != 0,
    })
}

/// The fields of a CONNECT body after the protocol name and level, borrowed from it.
pub(super) struct ConnectFields<'a> {
    /// The connect flags.
    pub(super) flags: ConnectFlags,
    /// Keepalive in seconds.
    pub(super) keep_alive: u16,
    /// The client identifier.
    pub(super) client_id: &'a [u8],
    /// The will topic and payload.
    pub(super) will: Option<(&'a [u8], &'a [u8])>,
    /// The user name.
    pub(super) username: Option<&'a [u8]>,
    /// The password.
    pub(super) password: Option<&'a [u8]>,
}

fn connect_fields_inner(input: &[u8]) -> FieldResult<'_, ConnectFields<'_>> {
    let (input, flags) = be_u8().map_res(connect_flags).parse_complete(input)?;
    let (input, keep_alive) = be_u16().parse_complete(input)?;
    let (input, client_id) = string(StringField::ClientId, input)?;
    let (input, will) = if flags.will {
        let (input, topic) = string(StringField::WillTopic, input)?;
        let (input, payload) = binary(input)?;
        (input, Some((topic, payload)))
    } else {
        (input, None)
    };
    let (input, username) = if flags.username {
        let (input, username) = string(StringField::Username, input)?;
        (input, Some(username))
    } else {
        (input, None)
    };
    let (input, password) = if flags.password {
        let (input, password) = binary(input)?;
        (input, Some(password))
    } else {
        (input, None)
    };
    Ok((
        input,
        ConnectFields {
            flags,
            keep_alive,
            client_id,
            will,
            username,
            password,
        },
    ))
}

/// The rest of a CONNECT body, after [`connect_protocol`]: connect flags, keepalive, client
/// identifier, will, user name, password, and nothing after them.
pub(super) fn connect_fields(input: &[u8]) -> Result<ConnectFields<'_>, DecodeError> {
    let packet_type = PacketType::Connect;
    let (rest, fields) = connect_fields_inner(input).map_err(into_decode_error(packet_type))?;
    end_of_body(packet_type, rest)?;
    Ok(fields)
}

/// The packet identifier at the front of a SUBSCRIBE or UNSUBSCRIBE body and the filters after
/// it, refusing a body without filters.
pub(super) fn filters_packet_id(packet_type: PacketType, body: &[u8]) -> Parsed<'_, PacketId> {
    let (rest, id) = packet_id(packet_type, body).map_err(into_decode_error(packet_type))?;
    if rest.is_empty() {
        return Err(if packet_type == PacketType::Subscribe {
            DecodeError::SubscribeWithoutFilters
        } else {
            DecodeError::UnsubscribeWithoutFilters
        });
    }
    Ok((rest, id))
}

/// The requested-QoS byte of a SUBSCRIBE filter ([MQTT-3.8.3-4]).
fn requested_qos(options: u8) -> Result<QoS, DecodeError> {
    if options & 0b1111_1100 != 0 {
        return Err(DecodeError::SubscribeOptionsReserved { options });
    }
    QoS::try_from(options).map_err(|_| DecodeError::InvalidRequestedQos)
}

/// One topic filter of a SUBSCRIBE and its requested QoS.
pub(super) fn subscribe_filter(input: &[u8]) -> Parsed<'_, (&[u8], QoS)> {
    (
        |input| string(StringField::TopicFilter, input),
        be_u8().map_res(requested_qos),
    )
        .parse_complete(input)
        .map_err(into_decode_error(PacketType::Subscribe))
}

/// One topic filter of an UNSUBSCRIBE.
pub(super) fn unsubscribe_filter(input: &[u8]) -> Parsed<'_, &[u8]> {
    string(StringField::TopicFilter, input).map_err(into_decode_error(PacketType::Unsubscribe))
}

/// A body of exactly two bytes (CONNACK, PUBACK, UNSUBACK): too short is truncated, longer has
/// trailing bytes, both before what the bytes mean is looked at.
fn two_bytes(packet_type: PacketType, body: &[u8]) -> Result<(u8, u8), DecodeError> {
    let (rest, pair) = (be_u8(), be_u8())
        .parse_complete(body)
        .map_err(into_decode_error(packet_type))?;
    end_of_body(packet_type, rest)?;
    Ok(pair)
}

/// The body of PUBACK or UNSUBACK: exactly a non-zero packet identifier.
pub(super) fn packet_id_body(
    packet_type: PacketType,
    body: &[u8],
) -> Result<PacketId, DecodeError> {
    let (high, low) = two_bytes(packet_type, body)?;
    PacketId::new(u16::from_be_bytes([high, low])).ok_or(DecodeError::ZeroPacketId { packet_type })
}

/// The body of CONNACK: acknowledge flags and return code.
pub(super) fn connack(body: &[u8]) -> Result<(bool, ConnectReturnCode), DecodeError> {
    let (flags, code) = two_bytes(PacketType::ConnAck, body)?;
    if flags & 0b1111_1110 != 0 {
        return Err(DecodeError::ConnAckReservedFlags { flags });
    }
    let code =
        ConnectReturnCode::from_u8(code).ok_or(DecodeError::InvalidConnectReturnCode { code })?;
    let session_present = flags & 1 != 0;
    if session_present && code != ConnectReturnCode::Accepted {
        return Err(DecodeError::SessionPresentWithRefusal { code });
    }
    Ok((session_present, code))
}

/// The packet identifier at the front of a SUBACK body and its return codes, refusing a body
/// without return codes.
pub(super) fn suback_packet_id(body: &[u8]) -> Parsed<'_, PacketId> {
    let packet_type = PacketType::SubAck;
    let (codes, id) = packet_id(packet_type, body).map_err(into_decode_error(packet_type))?;
    if codes.is_empty() {
        return Err(DecodeError::SubAckWithoutReturnCodes);
    }
    Ok((codes, id))
}

/// One SUBACK return code byte.
pub(super) fn suback_return_code(code: u8) -> Result<SubAckReturnCode, DecodeError> {
    SubAckReturnCode::from_u8(code).ok_or(DecodeError::InvalidSubAckReturnCode { code })
}
