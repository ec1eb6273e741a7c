//! What the device client reports to the application.

use alloc::vec::Vec;
use core::fmt;

use aliot_topic::{MessageId, TopicError, TopicFilter, TopicName};
use bytes::Bytes;

use super::ClientError;

use crate::codec::{
    ConnectReturnCode, DecodeError, EncodeError, PacketId, PacketType, SubAckReturnCode,
};
use crate::message::Message;

/// Something that happened on a [`Connection`](super::Connection), taken with
/// [`poll_event`](super::Connection::poll_event).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The broker accepted the CONNECT.
    Connected {
        /// Whether the broker resumed the session it kept (only with cleanSession=0).
        session_present: bool,
    },
    /// The broker refused the CONNECT with this code; [`Event::Disconnected`] follows.
    ConnectRefused(ConnectReturnCode),
    /// A message from the broker. A QoS 1 message is acknowledged when this event is taken.
    Message {
        /// Topic, payload and QoS.
        message: Message,
        /// DUP flag: the broker may have delivered it before (QoS 1 is at-least-once).
        dup: bool,
    },
    /// The broker acknowledged our QoS 1 PUBLISH with this id (its PUBACK arrived).
    PublishAcked(PacketId),
    /// Our QoS 0 PUBLISH left the connection: [`poll_transmit`](super::Connection::poll_transmit)
    /// handed its bytes out. Whether they reach the wire is the transport's affair.
    PublishSent(Qos0Token),
    /// Our QoS 0 PUBLISH was dropped unsent: the transport ended while its bytes waited to be
    /// handed out. (A QoS 0 PUBLISH still queued is not dropped; it waits for the next
    /// connection.)
    PublishDropped(Qos0Token),
    /// The QoS 1 PUBLISH with this id will not be delivered: it was unacknowledged when the
    /// session was lost and the configuration says to report rather than re-send it.
    PublishFailed(PacketId),
    /// The broker answered the SUBSCRIBE with this id.
    SubAck {
        /// The SUBSCRIBE's id.
        packet_id: PacketId,
        /// One code per filter, in the order of the SUBSCRIBE.
        return_codes: Vec<SubAckReturnCode>,
    },
    /// The broker answered the UNSUBSCRIBE with this id.
    UnsubAck(PacketId),
    /// The broker answered a SUBSCRIBE the connection sent by itself after a CONNACK without
    /// the session ([`resubscribe_on_session_loss`](super::ClientConfig::resubscribe_on_session_loss)).
    /// A refused filter (`Failure`) is forgotten.
    Resubscribed {
        /// The SUBSCRIBE's id.
        packet_id: PacketId,
        /// Each filter with its return code, in the order of the SUBSCRIBE.
        results: Vec<(TopicFilter, SubAckReturnCode)>,
    },
    /// The connection could not subscribe again to these filters after a CONNACK without the
    /// session (the packet would be too large, or every packet id is held); they are
    /// forgotten. Subscribe again to keep them.
    ResubscribeFailed {
        /// The filters.
        filters: Vec<TopicFilter>,
        /// Why.
        error: ClientError,
    },
    /// The platform calls this device (RRPC); answer with
    /// [`respond_rrpc`](super::Connection::respond_rrpc). A QoS 1 request is acknowledged when
    /// this event is taken.
    RrpcRequest {
        /// The call's id, to answer with.
        message_id: MessageId,
        /// The request payload.
        payload: Bytes,
        /// The topic the request came on: `/sys/{pk}/{dn}/rrpc/request/{id}`, or
        /// `/ext/rrpc/{id}{topic}` for a call on one of the device's own topics.
        topic: TopicName,
    },
    /// The connection is over; reconnect with [`connect`](super::Connection::connect) on a
    /// new transport. Always the last event of a transport.
    Disconnected(DisconnectReason),
}

/// Names one QoS 0 PUBLISH of a [`Connection`](super::Connection), for the
/// [`Event::PublishSent`] or [`Event::PublishDropped`] that reports what became of it.
///
/// Tokens increase in the order the PUBLISHes were given; they are not packet ids and never
/// go on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Qos0Token(pub(super) u64);

/// What [`publish`](super::Connection::publish) gives back, to match with the event that
/// reports the PUBLISH's fate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PublishToken {
    /// A QoS 0 PUBLISH: [`Event::PublishSent`] or [`Event::PublishDropped`] follows.
    AtMostOnce(Qos0Token),
    /// A QoS 1 PUBLISH with this packet id: [`Event::PublishAcked`] (or
    /// [`Event::PublishFailed`]) follows.
    AtLeastOnce(PacketId),
}

impl PublishToken {
    /// The packet id of a QoS 1 PUBLISH; `None` for QoS 0.
    #[must_use]
    pub fn packet_id(self) -> Option<PacketId> {
        match self {
            Self::AtMostOnce(_) => None,
            Self::AtLeastOnce(packet_id) => Some(packet_id),
        }
    }
}

/// Why a connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The transport closed (read end, write error, or a new [`connect`](super::Connection::connect)
    /// while the old transport was still up).
    TransportClosed,
    /// No packet arrived within the ping timeout after a PINGREQ.
    KeepaliveTimeout,
    /// No CONNACK arrived within the connect timeout.
    ConnectTimeout,
    /// The broker refused the CONNECT with this code.
    Refused(ConnectReturnCode),
    /// The broker broke the protocol; the transport must be closed.
    ProtocolViolation(ProtocolViolation),
    /// The application called [`disconnect`](super::Connection::disconnect).
    ClientRequested,
    /// The CONNECT could not be encoded. [`Credentials`](super::Credentials) only holds fields
    /// that encode, so this does not happen; it exists so that no path has to assume it.
    ConnectEncoding(EncodeError),
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TransportClosed => f.write_str("the transport closed"),
            Self::KeepaliveTimeout => f.write_str("no answer to PINGREQ within the ping timeout"),
            Self::ConnectTimeout => f.write_str("no CONNACK within the connect timeout"),
            Self::Refused(code) => write!(f, "the broker refused the connection: {code}"),
            Self::ProtocolViolation(violation) => {
                write!(f, "the broker broke the protocol: {violation}")
            }
            Self::ClientRequested => f.write_str("the application disconnected"),
            Self::ConnectEncoding(error) => write!(f, "the CONNECT cannot be encoded: {error}"),
        }
    }
}

/// How the broker broke the protocol.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolViolation {
    /// Bytes that are not a packet of the subset (a QoS 2 PUBLISH included).
    #[error("malformed packet: {0}")]
    Malformed(DecodeError),
    /// A packet a broker never sends, or not at this point (anything before CONNACK, a second
    /// CONNACK, CONNECT, SUBSCRIBE, PINGREQ, DISCONNECT...).
    #[error("unexpected {0} from the broker")]
    UnexpectedPacket(PacketType),
    /// A PUBLISH whose topic is not a valid topic name (empty, or with a wildcard).
    #[error("PUBLISH topic is not a topic name: {0}")]
    InvalidTopic(TopicError),
    /// CONNACK with session present although the client asked for a clean session
    /// ([MQTT-3.2.2-1]).
    #[error("CONNACK has session present set on a clean session [MQTT-3.2.2-1]")]
    SessionPresentOnCleanSession,
    /// SUBACK whose number of return codes is not the number of filters subscribed.
    #[error("SUBACK has {received} return code(s) for a SUBSCRIBE of {expected} filter(s)")]
    SubAckCountMismatch {
        /// Filters in the SUBSCRIBE.
        expected: usize,
        /// Return codes in the SUBACK.
        received: usize,
    },
}
