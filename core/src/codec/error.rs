//! What can be wrong with bytes to decode or packets to encode: one variant per rule.
//!
//! The errors of the value types alone ([`QosOutOfRange`](super::QosOutOfRange),
//! [`Utf8BytesError`](super::Utf8BytesError)) live with those types, in `types`: the modules
//! depend one way, `types` <- `packet` <- `error`.

use core::fmt;

use bytes::Bytes;

use super::packet::{ConnectReturnCode, PacketType};

/// Which string field of a packet a string error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StringField {
    /// The client identifier of CONNECT.
    ClientId,
    /// The will topic of CONNECT.
    WillTopic,
    /// The user name of CONNECT.
    Username,
    /// The topic name of PUBLISH.
    TopicName,
    /// A topic filter of SUBSCRIBE or UNSUBSCRIBE.
    TopicFilter,
}

impl fmt::Display for StringField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ClientId => "the CONNECT client identifier",
            Self::WillTopic => "the CONNECT will topic",
            Self::Username => "the CONNECT user name",
            Self::TopicName => "the PUBLISH topic name",
            Self::TopicFilter => "a topic filter",
        })
    }
}

/// Which binary field of a packet an encoding error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryField {
    /// The password of CONNECT.
    Password,
    /// The will payload of CONNECT.
    WillPayload,
}

impl fmt::Display for BinaryField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Password => "the CONNECT password",
            Self::WillPayload => "the CONNECT will payload",
        })
    }
}

/// Why the bytes read from a peer are not a packet of the subset. Every error means the stream
/// is broken: the caller closes the connection (after CONNACK 1 for
/// [`UnsupportedProtocol`](Self::UnsupportedProtocol), if it is the server).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The fixed header's packet type is 0 or 15, both reserved in MQTT 3.1.1.
    #[error("packet type {packet_type} is reserved in MQTT 3.1.1")]
    ReservedPacketType {
        /// The upper four bits of the first byte.
        packet_type: u8,
    },
    /// The fixed header's flags are not the ones MQTT 3.1.1 fixes for the packet type.
    #[error(
        "{packet_type} has fixed header flags {flags:#06b}, MQTT 3.1.1 requires {required:#06b}"
    )]
    ReservedFlags {
        /// The packet type.
        packet_type: PacketType,
        /// The lower four bits of the first byte.
        flags: u8,
        /// The flags MQTT 3.1.1 requires for this type.
        required: u8,
    },
    /// The remaining length has a continuation bit on its fourth byte (it is at most 4 bytes).
    #[error("the remaining length goes on past its 4th byte")]
    MalformedRemainingLength,
    /// The whole packet (fixed header and remaining length) is larger than the decoder allows.
    #[error("the packet is {size} bytes, over the maximum of {max}")]
    PacketTooLarge {
        /// The packet's size in bytes as its fixed header claims it.
        size: usize,
        /// The decoder's maximum packet size.
        max: usize,
    },
    /// PUBREC, PUBREL or PUBCOMP: the QoS 2 flow, which the profile does not support.
    #[error("{0} belongs to the QoS 2 flow, which this profile does not support")]
    Qos2Flow(PacketType),
    /// A PUBLISH with QoS 2, which the profile does not support.
    #[error("PUBLISH with QoS 2, which this profile does not support")]
    Qos2Publish,
    /// A PUBLISH with both QoS bits set: QoS 3 does not exist.
    #[error("PUBLISH with QoS 3, which does not exist")]
    InvalidQos,
    /// A QoS 0 PUBLISH with the DUP flag set ([MQTT-3.3.1-2]).
    #[error("PUBLISH with QoS 0 has the DUP flag set, MQTT requires it clear [MQTT-3.3.1-2]")]
    DupOnQos0,
    /// PINGREQ, PINGRESP or DISCONNECT with a body: their remaining length must be 0.
    #[error("{packet_type} has remaining length {remaining_length}, it must be 0")]
    UnexpectedBody {
        /// The packet type.
        packet_type: PacketType,
        /// The remaining length it announced.
        remaining_length: usize,
    },
    /// CONNECT with a protocol name and level that are neither `MQIsdp`/3 nor `MQTT`/4.
    /// The server answers CONNACK 1 (unacceptable protocol version) before closing.
    #[error(
        "CONNECT asks for protocol {name:?} level {level}, only \"MQIsdp\" 3 and \"MQTT\" 4 are supported"
    )]
    UnsupportedProtocol {
        /// The protocol name bytes as sent.
        name: Bytes,
        /// The protocol level byte as sent.
        level: u8,
    },
    /// CONNECT with the reserved bit 0 of its connect flags set ([MQTT-3.1.2-3]).
    #[error("CONNECT has the reserved bit 0 of its connect flags set [MQTT-3.1.2-3]")]
    ConnectReservedFlag,
    /// CONNECT with will QoS or will retain bits but no will flag ([MQTT-3.1.2-13], [MQTT-3.1.2-15]).
    #[error(
        "CONNECT sets will QoS or will retain (connect flags {flags:#010b}) without the will flag"
    )]
    WillFlagsWithoutWill {
        /// The connect flags byte.
        flags: u8,
    },
    /// CONNECT with a will QoS of 3 ([MQTT-3.1.2-14]).
    #[error("CONNECT has will QoS 3, which does not exist [MQTT-3.1.2-14]")]
    InvalidWillQos,
    /// CONNECT with the password flag but not the user name flag ([MQTT-3.1.2-22]).
    #[error("CONNECT has a password but no user name [MQTT-3.1.2-22]")]
    PasswordWithoutUsername,
    /// A string field that is not valid UTF-8.
    #[error("{field} is not valid UTF-8 (valid up to byte {valid_up_to})")]
    InvalidUtf8 {
        /// Which field.
        field: StringField,
        /// How many leading bytes of the field are valid UTF-8.
        valid_up_to: usize,
    },
    /// A string field that contains U+0000 ([MQTT-1.5.3-2]).
    #[error("{field} contains U+0000 at byte {at} [MQTT-1.5.3-2]")]
    NullCharacter {
        /// Which field.
        field: StringField,
        /// Byte offset of the first U+0000 in the field.
        at: usize,
    },
    /// A packet identifier of 0 where one is required ([MQTT-2.3.1-1]).
    #[error("{packet_type} has packet identifier 0, it must be non-zero [MQTT-2.3.1-1]")]
    ZeroPacketId {
        /// The packet type.
        packet_type: PacketType,
    },
    /// SUBSCRIBE with no topic filter ([MQTT-3.8.3-3]).
    #[error("SUBSCRIBE has no topic filter [MQTT-3.8.3-3]")]
    SubscribeWithoutFilters,
    /// UNSUBSCRIBE with no topic filter ([MQTT-3.10.3-2]).
    #[error("UNSUBSCRIBE has no topic filter [MQTT-3.10.3-2]")]
    UnsubscribeWithoutFilters,
    /// SUBSCRIBE requested-QoS byte with any of its upper 6 reserved bits set ([MQTT-3.8.3-4]).
    #[error("SUBSCRIBE requested-QoS byte {options:#04x} has reserved bits set [MQTT-3.8.3-4]")]
    SubscribeOptionsReserved {
        /// The requested-QoS byte.
        options: u8,
    },
    /// SUBSCRIBE requesting QoS 3 ([MQTT-3.8.3-4]).
    #[error("SUBSCRIBE requests QoS 3, which does not exist [MQTT-3.8.3-4]")]
    InvalidRequestedQos,
    /// CONNACK acknowledge flags with any of bits 7-1 set.
    #[error("CONNACK acknowledge flags {flags:#04x} have reserved bits 7-1 set")]
    ConnAckReservedFlags {
        /// The acknowledge flags byte.
        flags: u8,
    },
    /// CONNACK return code above 5.
    #[error("CONNACK return code {code} is reserved (0 to 5 are defined)")]
    InvalidConnectReturnCode {
        /// The return code byte.
        code: u8,
    },
    /// CONNACK refusing the connection with session present set ([MQTT-3.2.2-4]).
    #[error("CONNACK refuses the connection (code {code}) with session present set [MQTT-3.2.2-4]")]
    SessionPresentWithRefusal {
        /// The refusing return code.
        code: ConnectReturnCode,
    },
    /// SUBACK return code other than 0x00, 0x01, 0x02 and 0x80 ([MQTT-3.9.3-2]).
    #[error(
        "SUBACK return code {code:#04x} is reserved (0x00, 0x01, 0x02 and 0x80 are defined) [MQTT-3.9.3-2]"
    )]
    InvalidSubAckReturnCode {
        /// The return code byte.
        code: u8,
    },
    /// SUBACK without return codes (it has one per filter, and SUBSCRIBE has at least one).
    #[error("SUBACK has no return code, it needs one per filter of its SUBSCRIBE")]
    SubAckWithoutReturnCodes,
    /// The body ends before the fields it announces do.
    #[error("{packet_type} ends before its fields do")]
    Truncated {
        /// The packet type.
        packet_type: PacketType,
    },
    /// Bytes are left in the body after the packet's last field.
    #[error("{packet_type} has {count} byte(s) after its last field")]
    TrailingBytes {
        /// The packet type.
        packet_type: PacketType,
        /// How many bytes are left over.
        count: usize,
    },
}

/// Why a packet cannot be encoded: encoding never produces a packet MQTT forbids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The body does not fit the 268,435,455 bytes a remaining length can express.
    #[error("the packet body is {remaining_length} bytes, over the 268,435,455 MQTT can carry")]
    RemainingLengthTooLarge {
        /// The body length the packet would need.
        remaining_length: usize,
    },
    /// A binary field longer than its 16-bit length prefix can say.
    #[error("{field} is {len} bytes, over the 65,535 its length prefix can hold")]
    FieldTooLong {
        /// Which field.
        field: BinaryField,
        /// Its length in bytes.
        len: usize,
    },
    /// CONNECT with a password but no user name ([MQTT-3.1.2-22]).
    #[error("CONNECT has a password but no user name [MQTT-3.1.2-22]")]
    PasswordWithoutUsername,
    /// A QoS 0 PUBLISH with the DUP flag set ([MQTT-3.3.1-2]).
    #[error("PUBLISH with QoS 0 has the DUP flag set, MQTT requires it clear [MQTT-3.3.1-2]")]
    DupOnQos0,
    /// CONNACK refusing the connection with session present set ([MQTT-3.2.2-4]).
    #[error("CONNACK refuses the connection (code {code}) with session present set [MQTT-3.2.2-4]")]
    SessionPresentWithRefusal {
        /// The refusing return code.
        code: ConnectReturnCode,
    },
    /// SUBSCRIBE with no topic filter ([MQTT-3.8.3-3]).
    #[error("SUBSCRIBE has no topic filter [MQTT-3.8.3-3]")]
    SubscribeWithoutFilters,
    /// SUBACK without return codes.
    #[error("SUBACK has no return code, it needs one per filter of its SUBSCRIBE")]
    SubAckWithoutReturnCodes,
    /// UNSUBSCRIBE with no topic filter ([MQTT-3.10.3-2]).
    #[error("UNSUBSCRIBE has no topic filter [MQTT-3.10.3-2]")]
    UnsubscribeWithoutFilters,
}
