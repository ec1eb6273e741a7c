//! Why a command of the device client is refused.

use aliot_topic::MessageId;

use crate::codec::EncodeError;

/// Why [`Connection`](super::Connection) refused a command. Nothing was queued or sent.
///
/// Being disconnected is not an error: commands wait for the connection, that is what a
/// session is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The queue of commands waiting to be sent is full.
    #[error("{capacity} commands already wait to be sent, the queue is full")]
    QueueFull {
        /// The configured queue size ([`max_queued`](super::ClientConfig::max_queued)).
        capacity: usize,
    },
    /// Every packet identifier (1 to 65,535) belongs to a packet in flight or queued.
    #[error("all 65,535 packet identifiers are held by packets in flight or queued")]
    PacketIdsExhausted,
    /// PUBLISH at QoS 2, which the profile does not support.
    #[error("QoS 2 PUBLISH is not supported by the profile, use QoS 0 or 1")]
    Qos2NotSupported,
    /// SUBSCRIBE with no topic filter, which MQTT forbids.
    #[error("a SUBSCRIBE needs at least one topic filter")]
    EmptySubscribe,
    /// UNSUBSCRIBE with no topic filter, which MQTT forbids.
    #[error("an UNSUBSCRIBE needs at least one topic filter")]
    EmptyUnsubscribe,
    /// A topic name or filter longer than the 65,535 bytes an MQTT string can hold.
    #[error("a topic of {len} bytes is over the 65,535 an MQTT string can hold")]
    TopicTooLong {
        /// The topic's length in bytes.
        len: usize,
    },
    /// The packet the command builds is larger than the configured maximum.
    #[error("the packet would be {size} bytes, over the maximum of {max}")]
    PacketTooLarge {
        /// The encoded packet's size in bytes.
        size: usize,
        /// The configured maximum ([`max_packet_size`](super::ClientConfig::max_packet_size)).
        max: usize,
    },
    /// The packet cannot be encoded at all (larger than MQTT's remaining length can say).
    #[error("the packet cannot be encoded: {0}")]
    Encode(EncodeError),
    /// RRPC needs the device's identity, and the configuration has none.
    #[error("no device identity is configured, so there is no RRPC to answer")]
    NoIdentity,
    /// No RRPC request with this message id awaits a response (never received, already
    /// answered, or forgotten as the oldest of too many).
    #[error("no RRPC request with message id {0} awaits a response")]
    UnknownRrpcMessageId(MessageId),
}
