//! The packets of the MQTT 3.1/3.1.1 subset, as plain data.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;

use bytes::Bytes;

use super::types::{PacketId, ProtocolVersion, QoS, Utf8Bytes};

/// The packet type of an MQTT fixed header (its upper four bits), for every packet of MQTT 3.1.1
/// including the QoS 2 flow this profile refuses. Values 0 and 15 are reserved and have no variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    /// CONNECT (1): a client asks to connect.
    Connect = 1,
    /// CONNACK (2): the server's answer to CONNECT.
    ConnAck = 2,
    /// PUBLISH (3): an application message.
    Publish = 3,
    /// PUBACK (4): acknowledges a QoS 1 PUBLISH.
    PubAck = 4,
    /// PUBREC (5): QoS 2 flow, refused by the profile.
    PubRec = 5,
    /// PUBREL (6): QoS 2 flow, refused by the profile.
    PubRel = 6,
    /// PUBCOMP (7): QoS 2 flow, refused by the profile.
    PubComp = 7,
    /// SUBSCRIBE (8): a client subscribes to topic filters.
    Subscribe = 8,
    /// SUBACK (9): the server's answer to SUBSCRIBE.
    SubAck = 9,
    /// UNSUBSCRIBE (10): a client drops topic filters.
    Unsubscribe = 10,
    /// UNSUBACK (11): the server's answer to UNSUBSCRIBE.
    UnsubAck = 11,
    /// PINGREQ (12): keepalive probe from the client.
    PingReq = 12,
    /// PINGRESP (13): the server's answer to PINGREQ.
    PingResp = 13,
    /// DISCONNECT (14): the client closes cleanly.
    Disconnect = 14,
}

impl PacketType {
    /// The packet type of a fixed header's upper four bits, or `None` for the reserved 0 and 15.
    #[must_use]
    pub const fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            1 => Self::Connect,
            2 => Self::ConnAck,
            3 => Self::Publish,
            4 => Self::PubAck,
            5 => Self::PubRec,
            6 => Self::PubRel,
            7 => Self::PubComp,
            8 => Self::Subscribe,
            9 => Self::SubAck,
            10 => Self::Unsubscribe,
            11 => Self::UnsubAck,
            12 => Self::PingReq,
            13 => Self::PingResp,
            14 => Self::Disconnect,
            _ => return None,
        })
    }

    /// The packet's name as the MQTT specification writes it, e.g. `"SUBACK"`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Connect => "CONNECT",
            Self::ConnAck => "CONNACK",
            Self::Publish => "PUBLISH",
            Self::PubAck => "PUBACK",
            Self::PubRec => "PUBREC",
            Self::PubRel => "PUBREL",
            Self::PubComp => "PUBCOMP",
            Self::Subscribe => "SUBSCRIBE",
            Self::SubAck => "SUBACK",
            Self::Unsubscribe => "UNSUBSCRIBE",
            Self::UnsubAck => "UNSUBACK",
            Self::PingReq => "PINGREQ",
            Self::PingResp => "PINGRESP",
            Self::Disconnect => "DISCONNECT",
        }
    }

    /// The fixed header flags (lower four bits) MQTT 3.1.1 requires for this type; `None` for
    /// PUBLISH, whose flags are DUP, QoS and RETAIN.
    #[must_use]
    pub const fn required_flags(self) -> Option<u8> {
        match self {
            Self::Publish => None,
            Self::PubRel | Self::Subscribe | Self::Unsubscribe => Some(0b0010),
            _ => Some(0b0000),
        }
    }
}

impl fmt::Display for PacketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// CONNECT: the first packet a client sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connect {
    /// The protocol version the client speaks (`MQIsdp`/3 or `MQTT`/4).
    pub protocol: ProtocolVersion,
    /// The client identifier (for the platform: `${clientId}|securemode=..,signmethod=..|`).
    pub client_id: Utf8Bytes,
    /// Clean session flag: start a fresh session that ends with the connection.
    pub clean_session: bool,
    /// Keepalive in seconds (0: none).
    pub keep_alive: u16,
    /// User name (for the platform: `${deviceName}&${productKey}`).
    pub username: Option<Utf8Bytes>,
    /// Password, binary data of at most 65,535 bytes; MQTT allows it only with a user name.
    pub password: Option<Bytes>,
    /// The will message, if the client set one (the profile refuses wills, the server decides).
    pub will: Option<Will>,
}

/// The will message of a CONNECT: published by the server if the client goes away uncleanly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Will {
    /// Topic the will is published to.
    pub topic: Utf8Bytes,
    /// The will payload, binary data of at most 65,535 bytes.
    pub payload: Bytes,
    /// QoS the will is published with.
    pub qos: QoS,
    /// Whether the will is retained.
    pub retain: bool,
}

/// The return code of a CONNACK.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ConnectReturnCode {
    /// 0: connection accepted.
    Accepted = 0,
    /// 1: the server does not support the protocol level the client asked for.
    UnacceptableProtocolVersion = 1,
    /// 2: the client identifier is not allowed (the profile also uses it for bad keepalive).
    IdentifierRejected = 2,
    /// 3: the MQTT service is unavailable.
    ServerUnavailable = 3,
    /// 4: the user name or password is malformed.
    BadUserNameOrPassword = 4,
    /// 5: the client is not authorized to connect.
    NotAuthorized = 5,
}

impl ConnectReturnCode {
    /// The return code a CONNACK byte stands for, or `None` above 5.
    #[must_use]
    pub const fn from_u8(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::Accepted,
            1 => Self::UnacceptableProtocolVersion,
            2 => Self::IdentifierRejected,
            3 => Self::ServerUnavailable,
            4 => Self::BadUserNameOrPassword,
            5 => Self::NotAuthorized,
            _ => return None,
        })
    }

    /// The byte this return code is sent as.
    #[must_use]
    pub const fn to_u8(self) -> u8 {
        self as u8
    }
}

impl From<ConnectReturnCode> for u8 {
    fn from(code: ConnectReturnCode) -> Self {
        code.to_u8()
    }
}

impl fmt::Display for ConnectReturnCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let meaning = match self {
            Self::Accepted => "connection accepted",
            Self::UnacceptableProtocolVersion => "unacceptable protocol version",
            Self::IdentifierRejected => "identifier rejected",
            Self::ServerUnavailable => "server unavailable",
            Self::BadUserNameOrPassword => "bad user name or password",
            Self::NotAuthorized => "not authorized",
        };
        write!(f, "{} ({meaning})", self.to_u8())
    }
}

/// CONNACK: the server's answer to CONNECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnAck {
    /// Whether the server resumed a stored session; MQTT requires `false` unless accepted.
    pub session_present: bool,
    /// Whether the connection is accepted, and why not.
    pub code: ConnectReturnCode,
}

/// QoS of a PUBLISH in the subset: the packet id exists exactly when QoS is 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PublishQos {
    /// QoS 0, no packet identifier.
    AtMostOnce,
    /// QoS 1, with the packet identifier the PUBACK will carry.
    AtLeastOnce(PacketId),
}

impl PublishQos {
    /// The QoS level.
    #[must_use]
    pub const fn qos(&self) -> QoS {
        match self {
            Self::AtMostOnce => QoS::AtMostOnce,
            Self::AtLeastOnce(_) => QoS::AtLeastOnce,
        }
    }

    /// The packet identifier, present for QoS 1.
    #[must_use]
    pub const fn packet_id(&self) -> Option<PacketId> {
        match self {
            Self::AtMostOnce => None,
            Self::AtLeastOnce(id) => Some(*id),
        }
    }
}

/// PUBLISH: an application message, in either direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    /// DUP flag: this may be a re-delivery of an earlier attempt (QoS 1 only; MQTT forbids it on QoS 0).
    pub dup: bool,
    /// QoS and, for QoS 1, the packet identifier.
    pub qos: PublishQos,
    /// RETAIN flag (the profile refuses it from devices; the server decides).
    pub retain: bool,
    /// Topic name (checked as an MQTT string here; topic rules are `aliot-topic`'s).
    pub topic: Utf8Bytes,
    /// The application payload; when decoded, a slice of the read buffer.
    pub payload: Bytes,
}

/// PUBACK: acknowledges a QoS 1 PUBLISH.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PubAck {
    /// The identifier of the PUBLISH acknowledged.
    pub packet_id: PacketId,
}

/// SUBSCRIBE: a client asks for messages on topic filters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscribe {
    /// Identifier the SUBACK will carry.
    pub packet_id: PacketId,
    /// The topic filters with the QoS requested for each (0, 1 or 2); never empty on the wire.
    pub filters: Vec<(Utf8Bytes, QoS)>,
}

/// One return code of a SUBACK.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SubAckReturnCode {
    /// The subscription is accepted with this maximum QoS (0x00, 0x01, 0x02).
    Success(QoS),
    /// The subscription is refused (0x80).
    Failure,
}

impl SubAckReturnCode {
    /// The return code a SUBACK byte stands for, or `None` for anything but 0, 1, 2 and 0x80.
    #[must_use]
    pub const fn from_u8(code: u8) -> Option<Self> {
        Some(match code {
            0x00 => Self::Success(QoS::AtMostOnce),
            0x01 => Self::Success(QoS::AtLeastOnce),
            0x02 => Self::Success(QoS::ExactlyOnce),
            0x80 => Self::Failure,
            _ => return None,
        })
    }

    /// The byte this return code is sent as.
    #[must_use]
    pub const fn to_u8(self) -> u8 {
        match self {
            Self::Success(qos) => qos as u8,
            Self::Failure => 0x80,
        }
    }
}

impl From<SubAckReturnCode> for u8 {
    fn from(code: SubAckReturnCode) -> Self {
        code.to_u8()
    }
}

/// SUBACK: the server's answer to SUBSCRIBE, one return code per filter, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubAck {
    /// The identifier of the SUBSCRIBE answered.
    pub packet_id: PacketId,
    /// One return code per filter of the SUBSCRIBE; never empty on the wire.
    pub return_codes: Vec<SubAckReturnCode>,
}

/// UNSUBSCRIBE: a client drops topic filters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Identifier the UNSUBACK will carry.
    pub packet_id: PacketId,
    /// The topic filters to drop; never empty on the wire.
    pub filters: Vec<Utf8Bytes>,
}

/// UNSUBACK: the server's answer to UNSUBSCRIBE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnsubAck {
    /// The identifier of the UNSUBSCRIBE answered.
    pub packet_id: PacketId,
}

/// Any packet of the subset.
///
/// CONNECT, once per connection and the largest packet by far, is boxed so that a `Packet` is
/// no bigger than a PUBLISH (72 bytes on 64-bit targets rather than 176): every decoded packet
/// moves through results, queues and events at that size. Build one with `Packet::from(connect)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT.
    Connect(Box<Connect>),
    /// CONNACK.
    ConnAck(ConnAck),
    /// PUBLISH.
    Publish(Publish),
    /// PUBACK.
    PubAck(PubAck),
    /// SUBSCRIBE.
    Subscribe(Subscribe),
    /// SUBACK.
    SubAck(SubAck),
    /// UNSUBSCRIBE.
    Unsubscribe(Unsubscribe),
    /// UNSUBACK.
    UnsubAck(UnsubAck),
    /// PINGREQ.
    PingReq,
    /// PINGRESP.
    PingResp,
    /// DISCONNECT.
    Disconnect,
}

impl Packet {
    /// The packet's type.
    #[must_use]
    pub const fn packet_type(&self) -> PacketType {
        match self {
            Self::Connect(_) => PacketType::Connect,
            Self::ConnAck(_) => PacketType::ConnAck,
            Self::Publish(_) => PacketType::Publish,
            Self::PubAck(_) => PacketType::PubAck,
            Self::Subscribe(_) => PacketType::Subscribe,
            Self::SubAck(_) => PacketType::SubAck,
            Self::Unsubscribe(_) => PacketType::Unsubscribe,
            Self::UnsubAck(_) => PacketType::UnsubAck,
            Self::PingReq => PacketType::PingReq,
            Self::PingResp => PacketType::PingResp,
            Self::Disconnect => PacketType::Disconnect,
        }
    }
}

macro_rules! packet_from {
    ($($variant:ident),* $(,)?) => {
        $(
            impl From<$variant> for Packet {
                fn from(packet: $variant) -> Self {
                    Self::$variant(packet)
                }
            }
        )*
    };
}

impl From<Connect> for Packet {
    fn from(packet: Connect) -> Self {
        Self::Connect(Box::new(packet))
    }
}

packet_from!(
    ConnAck,
    Publish,
    PubAck,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck
);
