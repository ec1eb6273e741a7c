//! The device side of the protocol: a sans-IO MQTT client connection.
//!
//! [`Connection`] takes bytes from the broker, commands from the application and the current
//! time; it gives back bytes to write, [`Event`]s and its next deadline. It owns no socket and
//! reads no clock, so the same code runs under tokio, smol or a bare-metal loop:
//!
//! ```text
//! transport up      → conn.connect(now)
//! bytes read        → conn.handle_input(now, &bytes)
//! transport down    → conn.handle_transport_closed(now)
//! deadline passed   → conn.handle_timeout(now)
//! then, every time  → while conn.poll_transmit(&mut out) { write out }
//!                     while let Some(event) = conn.poll_event() { ... }
//!                     sleep until conn.poll_timeout()
//! ```
//!
//! What it keeps across transports is the session: QoS 1 PUBLISHes, SUBSCRIBEs and
//! UNSUBSCRIBEs awaiting their acknowledgement, and commands not yet sent. Commands given while
//! disconnected wait for the next CONNACK; after it, unacknowledged packets go out again
//! (PUBLISH with DUP=1 when the broker resumed the session) before anything newer.

mod backoff;
mod config;
mod error;
mod event;
mod subscriptions;

pub use backoff::{Backoff, DEFAULT_INITIAL_DELAY, DEFAULT_MAX_DELAY, DEFAULT_MULTIPLIER, Jitter};
pub use config::{
    ClientConfig, Credentials, CredentialsError, DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEEP_ALIVE_SECS,
    DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_PENDING_RRPC, DEFAULT_MAX_QUEUED, DEFAULT_PING_TIMEOUT,
    RESUBSCRIBE_CHUNK, SessionLostPolicy,
};
pub use error::ClientError;
pub use event::{DisconnectReason, Event, ProtocolViolation, PublishToken, Qos0Token};

use alloc::collections::VecDeque;
use alloc::string::ToString;
use alloc::vec::Vec;
use core::time::Duration;

use aliot_topic::{MessageId, RrpcTopic, TopicFilter, TopicLimits, TopicName, is_device_topic};
use bytes::{Bytes, BytesMut};

use crate::codec::{
    ConnAck, Connect, ConnectReturnCode, Decoder, EncodeError, MAX_STRING_LEN, Packet, PacketId,
    PubAck, Publish, PublishQos, QoS, SubAck, Subscribe, UnsubAck, Unsubscribe, Utf8Bytes,
};
use crate::message::Message;
use crate::time::Instant;

use self::subscriptions::{Answered, SubscribeOrigin, Subscriptions};

/// Limits for topics the broker sends: any length an MQTT string can have. The broker decides
/// how long a topic may be; the client only refuses what is not a topic name at all.
const BROKER_TOPIC_LIMITS: TopicLimits = TopicLimits::with_max_len(MAX_STRING_LEN);

/// The largest window: there are 65,535 packet identifiers.
const MAX_WINDOW: usize = u16::MAX as usize;

/// The first packet id handed out.
const FIRST_PACKET_ID: PacketId = match PacketId::new(1) {
    Some(id) => id,
    None => panic!("1 is a packet id"),
};

/// Where the connection is in its life on the current transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// No transport, or one the connection is done with.
    Disconnected,
    /// CONNECT written, waiting for CONNACK until `deadline`.
    Connecting {
        /// When the connect timeout fires.
        deadline: Instant,
    },
    /// CONNACK accepted.
    Connected,
}

/// A packet the application asked for, queued or in flight.
#[derive(Clone, Debug)]
enum Outgoing {
    /// PUBLISH at QoS 1.
    Publish(Publish),
    /// PUBLISH at QoS 0: queued only, never in flight.
    Qos0Publish { publish: Publish, token: Qos0Token },
    /// SUBSCRIBE.
    Subscribe(Subscribe),
    /// UNSUBSCRIBE.
    Unsubscribe(Unsubscribe),
}

impl Outgoing {
    /// The identifier its acknowledgement will carry; `None` for a QoS 0 PUBLISH.
    fn packet_id(&self) -> Option<PacketId> {
        match self {
            Self::Publish(publish) => publish.qos.packet_id(),
            Self::Qos0Publish { .. } => None,
            Self::Subscribe(subscribe) => Some(subscribe.packet_id),
            Self::Unsubscribe(unsubscribe) => Some(unsubscribe.packet_id),
        }
    }

    /// Appends the packet to `buf`.
    fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        match self {
            Self::Publish(publish) | Self::Qos0Publish { publish, .. } => publish.encode(buf),
            Self::Subscribe(subscribe) => subscribe.encode(buf),
            Self::Unsubscribe(unsubscribe) => unsubscribe.encode(buf),
        }
    }
}

/// A packet sent and awaiting its acknowledgement.
#[derive(Clone, Debug)]
struct InFlight {
    /// The identifier its acknowledgement will carry.
    packet_id: PacketId,
    /// The packet, to send again after a reconnect.
    packet: Outgoing,
}

/// An event waiting for the application, with the PUBACK its taking releases.
#[derive(Clone, Debug)]
struct QueuedEvent {
    event: Event,
    /// For a QoS 1 message: its packet id and the transport it came on.
    puback: Option<(PacketId, u64)>,
}

/// A sans-IO MQTT 3.1/3.1.1 client connection of a platform device (or of any MQTT client of
/// a generic broker).
///
/// See the [module documentation](self) for the loop that drives it. Every method is cheap and
/// never blocks; none panics, whatever the broker sends.
///
/// - **Packet ids**: one allocator for PUBLISH, SUBSCRIBE and UNSUBSCRIBE, never handing out an
///   id still queued or in flight. [`publish`](Self::publish) returns a [`PublishToken`] at
///   once: the packet id of a QoS 1 PUBLISH, which [`Event::PublishAcked`] reports
///   acknowledged, or a [`Qos0Token`], which [`Event::PublishSent`] reports handed out.
/// - **Window**: at most [`max_in_flight`](ClientConfig::max_in_flight) packets await an
///   acknowledgement; further commands wait, in order (a QoS 0 PUBLISH behind a waiting QoS 1
///   one waits too, so messages keep their order). They also wait until CONNACK.
/// - **Reconnect**: call [`connect`](Self::connect) again on a new transport. With
///   cleanSession=0 and a resumed session, unacknowledged PUBLISHes go out again with DUP=1 and
///   the same ids before anything newer; otherwise [`SessionLostPolicy`] decides (re-send as
///   new by default, or [`Event::PublishFailed`]). Unanswered SUBSCRIBE and UNSUBSCRIBE go out
///   again either way.
/// - **Subscriptions**: the broker keeps them in its session. After
///   `Connected { session_present: false }` the connection subscribes again to every filter
///   the broker accepted and the application did not drop, and reports the answers with
///   [`Event::Resubscribed`] ([`resubscribe_on_session_loss`](ClientConfig::resubscribe_on_session_loss),
///   on by default).
/// - **Incoming QoS 1**: the PUBACK is written when [`poll_event`](Self::poll_event) hands the
///   message over, so a message the application never took is redelivered.
/// - **Keepalive**: a PINGREQ when nothing was sent for the keepalive period; no packet within
///   [`ping_timeout`](ClientConfig::ping_timeout) after it ends the connection with
///   [`DisconnectReason::KeepaliveTimeout`].
/// - **RRPC**: with an [`identity`](ClientConfig::identity), calls for this device arrive as
///   [`Event::RrpcRequest`] and are answered with [`respond_rrpc`](Self::respond_rrpc).
///
/// ```
/// use aliot_core::Instant;
/// use aliot_core::client::{ClientConfig, Connection, Credentials, Event};
/// use aliot_core::codec::{ConnAck, ConnectReturnCode, Decoder, Packet, PubAck, PublishQos, QoS};
/// use aliot_topic::TopicName;
/// use bytes::BytesMut;
///
/// let credentials = Credentials::with_password("dev-001", "alice", "s3cret")?;
/// let mut conn = Connection::new(ClientConfig::new(credentials));
/// let broker = Decoder::default();
/// let mut wire = BytesMut::new();
/// let now = Instant::ZERO;
///
/// // A transport is up: the client writes CONNECT.
/// conn.connect(now);
/// assert!(conn.poll_transmit(&mut wire));
/// let Some(Packet::Connect(connect)) = broker.decode(&mut wire)? else { panic!("no CONNECT") };
/// assert_eq!(connect.client_id, "dev-001");
///
/// // The broker accepts.
/// let mut reply = BytesMut::new();
/// Packet::from(ConnAck { session_present: false, code: ConnectReturnCode::Accepted })
///     .encode(&mut reply)?;
/// conn.handle_input(now, &reply);
/// assert_eq!(conn.poll_event(), Some(Event::Connected { session_present: false }));
///
/// // Publish at QoS 1: the id comes back at once, the PUBACK later as an event.
/// let topic = TopicName::from_static("/a1TestPK001/dev-001/user/update");
/// let token = conn.publish(topic, "{\"on\":1}", QoS::AtLeastOnce, now)?;
/// let id = token.packet_id().ok_or("no packet id")?;
/// assert!(conn.poll_transmit(&mut wire));
/// let Some(Packet::Publish(publish)) = broker.decode(&mut wire)? else { panic!("no PUBLISH") };
/// assert_eq!(publish.qos, PublishQos::AtLeastOnce(id));
/// assert_eq!(&publish.payload[..], b"{\"on\":1}");
///
/// reply.clear();
/// Packet::from(PubAck { packet_id: id }).encode(&mut reply)?;
/// conn.handle_input(now, &reply);
/// assert_eq!(conn.poll_event(), Some(Event::PublishAcked(id)));
/// # Ok::<(), Box<dyn core::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Connection {
    config: ClientConfig,
    decoder: Decoder,
    state: State,
    /// Counts transports, so a PUBACK is never written on a transport other than the one its
    /// PUBLISH came on.
    transport: u64,
    /// Bytes read and not yet a whole packet.
    read_buf: BytesMut,
    /// Bytes to write, taken by `poll_transmit`.
    transmit: BytesMut,
    events: VecDeque<QueuedEvent>,
    /// Sent and awaiting an acknowledgement, in the order they were sent.
    /// In the order sent: PUBACKs mostly come for the oldest, which leaves from the front
    /// without moving the rest.
    in_flight: VecDeque<InFlight>,
    /// Not yet sent, in the order they were given.
    queued: VecDeque<Outgoing>,
    /// The packet ids of `queued`, in the same order.
    queued_ids: VecDeque<PacketId>,
    /// The next packet id to try.
    next_packet_id: PacketId,
    /// When bytes were last written to `transmit`.
    last_sent: Instant,
    /// When the outstanding PINGREQ went out.
    ping_sent_at: Option<Instant>,
    /// RRPC requests awaiting a response: the message id and the topic to answer on, oldest
    /// first.
    pending_rrpc: VecDeque<(MessageId, TopicName)>,
    /// The latest `now` given, for work done in calls that take none.
    now: Instant,
    /// What the application subscribed to, to subscribe again after a session loss.
    subscriptions: Subscriptions,
    /// The token of the next QoS 0 PUBLISH.
    next_qos0_token: u64,
    /// QoS 0 PUBLISHes encoded into `transmit` and not yet handed out, oldest first.
    qos0_in_transmit: VecDeque<Qos0Token>,
}

impl Connection {
    /// A connection with this configuration, not connected yet: call
    /// [`connect`](Self::connect) once a transport is up.
    #[must_use]
    pub fn new(config: ClientConfig) -> Self {
        let decoder = Decoder::new(config.max_packet_size);
        let in_flight =
            VecDeque::with_capacity(config.max_in_flight.clamp(1, DEFAULT_MAX_IN_FLIGHT));
        Self {
            config,
            decoder,
            state: State::Disconnected,
            transport: 0,
            read_buf: BytesMut::new(),
            transmit: BytesMut::new(),
            events: VecDeque::new(),
            in_flight,
            queued: VecDeque::new(),
            queued_ids: VecDeque::new(),
            next_packet_id: FIRST_PACKET_ID,
            last_sent: Instant::ZERO,
            ping_sent_at: None,
            pending_rrpc: VecDeque::new(),
            now: Instant::ZERO,
            subscriptions: Subscriptions::default(),
            next_qos0_token: 0,
            qos0_in_transmit: VecDeque::new(),
        }
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Replaces the credentials the next [`connect`](Self::connect) sends (for instance
    /// signed again with a fresh timestamp before a reconnect); the session is kept.
    pub fn set_credentials(&mut self, credentials: Credentials) {
        self.config.credentials = credentials;
    }

    /// Whether the broker has accepted the CONNECT on the current transport.
    #[must_use]
    pub fn is_connected(&self) -> bool {
        self.state == State::Connected
    }

    /// How many packets await an acknowledgement.
    #[must_use]
    pub fn in_flight_len(&self) -> usize {
        self.in_flight.len()
    }

    /// How many commands wait to be sent.
    #[must_use]
    pub fn queued_len(&self) -> usize {
        self.queued.len()
    }

    /// How many topic filters the connection keeps to subscribe again after a session loss:
    /// those subscribed or being subscribed, not unsubscribed or refused.
    #[must_use]
    pub fn subscriptions_len(&self) -> usize {
        self.subscriptions.len()
    }

    /// Starts a connection on a fresh transport: writes CONNECT and waits for CONNACK until the
    /// connect timeout.
    ///
    /// Call it again after a reconnect. Bytes not yet taken for the old transport are dropped;
    /// if the old transport was still up as far as this connection knows, it ends first with
    /// [`DisconnectReason::TransportClosed`].
    pub fn connect(&mut self, now: Instant) {
        self.now = now;
        if self.state != State::Disconnected {
            self.end_transport(DisconnectReason::TransportClosed);
        }
        self.transport = self.transport.wrapping_add(1);
        self.read_buf.clear();
        self.drop_transmit();
        self.ping_sent_at = None;
        let (client_id, username, password) = self.config.credentials.connect_fields();
        let connect = Connect {
            protocol: self.config.protocol,
            client_id,
            clean_session: self.config.clean_session,
            keep_alive: self.config.keep_alive_secs,
            username,
            password,
            will: None,
        };
        match connect.encode(&mut self.transmit) {
            Ok(()) => {
                self.last_sent = now;
                self.state = State::Connecting {
                    deadline: now + self.config.connect_timeout,
                };
            }
            // `Credentials` only holds fields that encode, so this is not reached; it is still
            // reported rather than assumed away.
            Err(error) => self.push_event(Event::Disconnected(DisconnectReason::ConnectEncoding(
                error,
            ))),
        }
    }

    /// Takes bytes read from the broker.
    ///
    /// Bytes arriving while disconnected (after a protocol violation, a refusal or
    /// [`disconnect`](Self::disconnect)) are ignored: the transport is to be closed.
    pub fn handle_input(&mut self, now: Instant, bytes: &[u8]) {
        self.now = now;
        if self.state == State::Disconnected {
            return;
        }
        self.read_buf.extend_from_slice(bytes);
        while self.state != State::Disconnected {
            match self.decoder.decode(&mut self.read_buf) {
                Ok(Some(packet)) => self.handle_packet(packet),
                Ok(None) => break,
                Err(error) => self.end_transport(DisconnectReason::ProtocolViolation(
                    ProtocolViolation::Malformed(error),
                )),
            }
        }
    }

    /// The transport ended (read end of stream or an I/O error). Ends the connection with
    /// [`DisconnectReason::TransportClosed`], unless it already ended.
    pub fn handle_transport_closed(&mut self, now: Instant) {
        self.now = now;
        if self.state != State::Disconnected {
            self.end_transport(DisconnectReason::TransportClosed);
        }
    }

    /// Publishes `payload` on `topic` at QoS 0 or 1.
    ///
    /// Returns at once the token that the PUBLISH's event will carry: its packet id at QoS 1
    /// ([`Event::PublishAcked`]), a [`Qos0Token`] at QoS 0 ([`Event::PublishSent`]). The
    /// PUBLISH goes out now, or when the connection and the window allow, after everything
    /// given before it.
    ///
    /// # Errors
    ///
    /// [`ClientError::Qos2NotSupported`], [`ClientError::TopicTooLong`],
    /// [`ClientError::QueueFull`], [`ClientError::PacketIdsExhausted`],
    /// [`ClientError::PacketTooLarge`] or [`ClientError::Encode`]; nothing is sent then.
    pub fn publish(
        &mut self,
        topic: TopicName,
        payload: impl Into<Bytes>,
        qos: QoS,
        now: Instant,
    ) -> Result<PublishToken, ClientError> {
        self.now = now;
        match qos {
            QoS::AtMostOnce => self
                .publish_qos0(topic, payload.into())
                .map(PublishToken::AtMostOnce),
            QoS::AtLeastOnce => self
                .publish_qos1(topic, payload.into())
                .map(PublishToken::AtLeastOnce),
            QoS::ExactlyOnce => Err(ClientError::Qos2NotSupported),
        }
    }

    /// Takes a QoS 0 PUBLISH: [`publish`](Self::publish) after its QoS is known.
    fn publish_qos0(&mut self, topic: TopicName, payload: Bytes) -> Result<Qos0Token, ClientError> {
        let topic = topic_string(topic)?;
        let send_now = self.admit(false)?;
        let publish = Publish {
            dup: false,
            qos: PublishQos::AtMostOnce,
            retain: false,
            topic,
            payload,
        };
        self.check_size(publish.encoded_len())?;
        let token = Qos0Token(self.next_qos0_token);
        self.next_qos0_token = self.next_qos0_token.wrapping_add(1);
        self.dispatch(Outgoing::Qos0Publish { publish, token }, send_now);
        Ok(token)
    }

    /// Takes a QoS 1 PUBLISH: [`publish`](Self::publish) after its QoS is known.
    fn publish_qos1(&mut self, topic: TopicName, payload: Bytes) -> Result<PacketId, ClientError> {
        let topic = topic_string(topic)?;
        let send_now = self.admit(true)?;
        let packet_id = self.allocate_packet_id()?;
        let publish = Publish {
            dup: false,
            qos: PublishQos::AtLeastOnce(packet_id),
            retain: false,
            topic,
            payload,
        };
        self.check_size(publish.encoded_len())?;
        self.dispatch(Outgoing::Publish(publish), send_now);
        Ok(packet_id)
    }

    /// Subscribes to topic filters, each with the QoS requested for it.
    ///
    /// Returns the SUBSCRIBE's packet id; [`Event::SubAck`] carries the broker's answer. The
    /// filters the broker accepts are subscribed again after a session loss (see
    /// [`resubscribe_on_session_loss`](ClientConfig::resubscribe_on_session_loss)).
    ///
    /// # Errors
    ///
    /// [`ClientError::EmptySubscribe`], [`ClientError::TopicTooLong`],
    /// [`ClientError::QueueFull`], [`ClientError::PacketIdsExhausted`],
    /// [`ClientError::PacketTooLarge`] or [`ClientError::Encode`]; nothing is sent then.
    pub fn subscribe(
        &mut self,
        filters: &[(TopicFilter, QoS)],
        now: Instant,
    ) -> Result<PacketId, ClientError> {
        self.now = now;
        if filters.is_empty() {
            return Err(ClientError::EmptySubscribe);
        }
        let wire_filters = subscribe_filters(filters)?;
        let send_now = self.admit(true)?;
        self.take_subscribe(
            filters,
            wire_filters,
            send_now,
            SubscribeOrigin::Application,
        )
    }

    /// Builds a SUBSCRIBE for `filters` (`wire_filters` the same as MQTT strings), remembers
    /// them and sends it now or queues it.
    fn take_subscribe(
        &mut self,
        filters: &[(TopicFilter, QoS)],
        wire_filters: Vec<(Utf8Bytes, QoS)>,
        send_now: bool,
        origin: SubscribeOrigin,
    ) -> Result<PacketId, ClientError> {
        let packet_id = self.allocate_packet_id()?;
        let subscribe = Subscribe {
            packet_id,
            filters: wire_filters,
        };
        self.check_size(subscribe.encoded_len())?;
        self.subscriptions.subscribing(packet_id, filters, origin);
        self.dispatch(Outgoing::Subscribe(subscribe), send_now);
        Ok(packet_id)
    }

    /// Drops subscriptions to topic filters.
    ///
    /// Returns the UNSUBSCRIBE's packet id; [`Event::UnsubAck`] reports the broker's answer.
    /// The filters are no longer subscribed again after a session loss.
    ///
    /// # Errors
    ///
    /// [`ClientError::EmptyUnsubscribe`], [`ClientError::TopicTooLong`],
    /// [`ClientError::QueueFull`], [`ClientError::PacketIdsExhausted`],
    /// [`ClientError::PacketTooLarge`] or [`ClientError::Encode`]; nothing is sent then.
    pub fn unsubscribe(
        &mut self,
        filters: &[TopicFilter],
        now: Instant,
    ) -> Result<PacketId, ClientError> {
        self.now = now;
        if filters.is_empty() {
            return Err(ClientError::EmptyUnsubscribe);
        }
        let mut wire_filters = Vec::with_capacity(filters.len());
        for filter in filters {
            wire_filters.push(filter_string(filter)?);
        }
        let send_now = self.admit(true)?;
        let packet_id = self.allocate_packet_id()?;
        let unsubscribe = Unsubscribe {
            packet_id,
            filters: wire_filters,
        };
        self.check_size(unsubscribe.encoded_len())?;
        self.subscriptions.forget(filters);
        self.dispatch(Outgoing::Unsubscribe(unsubscribe), send_now);
        Ok(packet_id)
    }

    /// Answers the RRPC request `message_id` with `payload`, at QoS 0 on the topic of the form
    /// the request came in: `/sys/{pk}/{dn}/rrpc/response/{id}` for a
    /// `/sys/{pk}/{dn}/rrpc/request/{id}` request, the request's own `/ext/rrpc/{id}{topic}`
    /// for a custom-topic one. Returns the answer's token ([`Event::PublishSent`]).
    ///
    /// # Errors
    ///
    /// [`ClientError::NoIdentity`] without a configured identity,
    /// [`ClientError::UnknownRrpcMessageId`] when no such request awaits a response, or an
    /// error of [`publish`](Self::publish) (the request then still awaits its response).
    pub fn respond_rrpc(
        &mut self,
        message_id: MessageId,
        payload: impl Into<Bytes>,
        now: Instant,
    ) -> Result<Qos0Token, ClientError> {
        self.now = now;
        if self.config.identity.is_none() {
            return Err(ClientError::NoIdentity);
        }
        let position = self
            .pending_rrpc
            .iter()
            .position(|(id, _)| *id == message_id)
            .ok_or(ClientError::UnknownRrpcMessageId(message_id))?;
        let topic = self
            .pending_rrpc
            .get(position)
            .map(|(_, topic)| topic.clone())
            .ok_or(ClientError::UnknownRrpcMessageId(message_id))?;
        let token = self.publish_qos0(topic, payload.into())?;
        self.pending_rrpc.remove(position);
        Ok(token)
    }

    /// Closes the connection cleanly: writes DISCONNECT (after any bytes not yet taken) and
    /// ends the connection with [`DisconnectReason::ClientRequested`]. Write what
    /// [`poll_transmit`](Self::poll_transmit) gives, then close the transport.
    ///
    /// Queued commands and unacknowledged packets are kept for a later
    /// [`connect`](Self::connect). Does nothing when already disconnected.
    pub fn disconnect(&mut self, now: Instant) {
        self.now = now;
        if self.state == State::Disconnected {
            return;
        }
        if Packet::Disconnect.encode(&mut self.transmit).is_ok() {
            self.last_sent = now;
        }
        self.state = State::Disconnected;
        self.ping_sent_at = None;
        self.read_buf.clear();
        self.push_event(Event::Disconnected(DisconnectReason::ClientRequested));
    }

    /// Does what is due at `now`: ends the connection when CONNACK or the answer to a PINGREQ
    /// is late, writes a PINGREQ when nothing was sent for the keepalive period.
    ///
    /// Calling it early, or more than once, is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        match self.state {
            State::Disconnected => {}
            State::Connecting { deadline } => {
                if now >= deadline {
                    self.end_transport(DisconnectReason::ConnectTimeout);
                }
            }
            State::Connected => {
                if let Some(ping_sent_at) = self.ping_sent_at {
                    if now >= ping_sent_at + self.config.ping_timeout {
                        self.end_transport(DisconnectReason::KeepaliveTimeout);
                    }
                } else if let Some(keep_alive) = self.keep_alive()
                    && now >= self.last_sent + keep_alive
                    && Packet::PingReq.encode(&mut self.transmit).is_ok()
                {
                    self.last_sent = now;
                    self.ping_sent_at = Some(now);
                }
            }
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) has something to do next, if ever.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Disconnected => None,
            State::Connecting { deadline } => Some(deadline),
            State::Connected => match self.ping_sent_at {
                Some(ping_sent_at) => Some(ping_sent_at + self.config.ping_timeout),
                None => self
                    .keep_alive()
                    .map(|keep_alive| self.last_sent + keep_alive),
            },
        }
    }

    /// Appends the bytes to write to the transport to `buf`; `false` when there are none.
    ///
    /// All pending bytes are handed over at once. When `buf` is empty, the connection's own
    /// buffer is swapped in rather than copied. Each QoS 0 PUBLISH among them is reported
    /// with [`Event::PublishSent`].
    pub fn poll_transmit(&mut self, buf: &mut BytesMut) -> bool {
        if self.transmit.is_empty() {
            return false;
        }
        if buf.is_empty() {
            core::mem::swap(buf, &mut self.transmit);
        } else {
            buf.extend_from_slice(&self.transmit);
            self.transmit.clear();
        }
        while let Some(token) = self.qos0_in_transmit.pop_front() {
            self.push_event(Event::PublishSent(token));
        }
        true
    }

    /// Drops the bytes not yet handed out: each QoS 0 PUBLISH among them is reported with
    /// [`Event::PublishDropped`].
    fn drop_transmit(&mut self) {
        self.transmit.clear();
        while let Some(token) = self.qos0_in_transmit.pop_front() {
            self.push_event(Event::PublishDropped(token));
        }
    }

    /// The next event, oldest first.
    ///
    /// Taking an incoming QoS 1 message ([`Event::Message`] or [`Event::RrpcRequest`]) writes
    /// its PUBACK, if the transport it came on is still connected.
    pub fn poll_event(&mut self) -> Option<Event> {
        let QueuedEvent { event, puback } = self.events.pop_front()?;
        if let Some((packet_id, transport)) = puback
            && transport == self.transport
            && self.state == State::Connected
        {
            PubAck { packet_id }.encode(&mut self.transmit);
            self.last_sent = self.now;
        }
        Some(event)
    }

    /// The keepalive period, if there is one.
    fn keep_alive(&self) -> Option<Duration> {
        match self.config.keep_alive_secs {
            0 => None,
            secs => Some(Duration::from_secs(u64::from(secs))),
        }
    }

    /// How many packets may await an acknowledgement.
    fn window(&self) -> usize {
        self.config.max_in_flight.clamp(1, MAX_WINDOW)
    }

    fn push_event(&mut self, event: Event) {
        self.events.push_back(QueuedEvent {
            event,
            puback: None,
        });
    }

    /// Ends the current transport for `reason`: what was read or not yet taken for it is
    /// dropped; the session (queued and unacknowledged packets) stays.
    fn end_transport(&mut self, reason: DisconnectReason) {
        self.state = State::Disconnected;
        self.ping_sent_at = None;
        self.read_buf.clear();
        self.drop_transmit();
        self.push_event(Event::Disconnected(reason));
    }

    fn handle_packet(&mut self, packet: Packet) {
        // Any packet shows the broker is alive: the PINGREQ has its answer.
        self.ping_sent_at = None;
        match (self.state, packet) {
            (State::Connecting { .. }, Packet::ConnAck(connack)) => self.handle_connack(connack),
            (State::Connected, Packet::Publish(publish)) => self.handle_publish(publish),
            (State::Connected, Packet::PubAck(PubAck { packet_id })) => {
                let position = self.in_flight.iter().position(|sent| {
                    sent.packet_id == packet_id && matches!(sent.packet, Outgoing::Publish(_))
                });
                if let Some(position) = position {
                    self.in_flight.remove(position);
                    self.push_event(Event::PublishAcked(packet_id));
                    self.flush_queue();
                }
            }
            (State::Connected, Packet::SubAck(suback)) => self.handle_suback(suback),
            (State::Connected, Packet::UnsubAck(UnsubAck { packet_id })) => {
                let position = self.in_flight.iter().position(|sent| {
                    sent.packet_id == packet_id && matches!(sent.packet, Outgoing::Unsubscribe(_))
                });
                if let Some(position) = position {
                    self.in_flight.remove(position);
                    self.push_event(Event::UnsubAck(packet_id));
                    self.flush_queue();
                }
            }
            (State::Connected, Packet::PingResp) => {}
            (_, packet) => self.end_transport(DisconnectReason::ProtocolViolation(
                ProtocolViolation::UnexpectedPacket(packet.packet_type()),
            )),
        }
    }

    fn handle_connack(&mut self, connack: ConnAck) {
        if connack.code != ConnectReturnCode::Accepted {
            self.push_event(Event::ConnectRefused(connack.code));
            self.end_transport(DisconnectReason::Refused(connack.code));
            return;
        }
        if connack.session_present && self.config.clean_session {
            self.end_transport(DisconnectReason::ProtocolViolation(
                ProtocolViolation::SessionPresentOnCleanSession,
            ));
            return;
        }
        self.state = State::Connected;
        self.push_event(Event::Connected {
            session_present: connack.session_present,
        });
        self.resend_in_flight(connack.session_present);
        if !connack.session_present && self.config.resubscribe_on_session_loss {
            self.resubscribe();
        }
        self.flush_queue();
    }

    /// After a CONNACK without the session: subscribes again, [`RESUBSCRIBE_CHUNK`] filters a
    /// SUBSCRIBE, to what the lost session had. These SUBSCRIBEs go behind the commands
    /// already queued; the queue's limit does not refuse them, since it is the application's
    /// bound on its own commands and these restore what it was already promised.
    fn resubscribe(&mut self) {
        let to_restore = self.subscriptions.to_restore();
        for chunk in to_restore.chunks(RESUBSCRIBE_CHUNK) {
            let send_now = self.admit(true).unwrap_or(false);
            let taken = subscribe_filters(chunk).and_then(|wire_filters| {
                self.take_subscribe(chunk, wire_filters, send_now, SubscribeOrigin::SessionLoss)
            });
            if let Err(error) = taken {
                let filters: Vec<TopicFilter> =
                    chunk.iter().map(|(filter, _)| filter.clone()).collect();
                self.subscriptions.forget(&filters);
                self.push_event(Event::ResubscribeFailed { filters, error });
            }
        }
    }

    /// Sends again, in their order, the packets the previous transports left unacknowledged.
    fn resend_in_flight(&mut self, session_resumed: bool) {
        let report_failed = self.config.session_lost == SessionLostPolicy::ReportFailed;
        let transmit = &mut self.transmit;
        let events = &mut self.events;
        let subscriptions = &mut self.subscriptions;
        let mut sent = false;
        self.in_flight.retain_mut(|InFlight { packet_id, packet }| {
            if let Outgoing::Publish(publish) = packet {
                if session_resumed {
                    publish.dup = true;
                } else if report_failed {
                    events.push_back(QueuedEvent {
                        event: Event::PublishFailed(*packet_id),
                        puback: None,
                    });
                    return false;
                } else {
                    publish.dup = false;
                }
            }
            match packet.encode(transmit) {
                Ok(()) => {
                    sent = true;
                    true
                }
                Err(_) => {
                    report_unencodable(events, subscriptions, packet);
                    false
                }
            }
        });
        if sent {
            self.last_sent = self.now;
        }
    }

    fn handle_suback(&mut self, suback: SubAck) {
        let SubAck {
            packet_id,
            return_codes,
        } = suback;
        let expected = self
            .in_flight
            .iter()
            .enumerate()
            .find_map(|(position, sent)| match &sent.packet {
                Outgoing::Subscribe(subscribe) if sent.packet_id == packet_id => {
                    Some((position, subscribe.filters.len()))
                }
                _ => None,
            });
        let Some((position, expected)) = expected else {
            return;
        };
        if expected != return_codes.len() {
            self.end_transport(DisconnectReason::ProtocolViolation(
                ProtocolViolation::SubAckCountMismatch {
                    expected,
                    received: return_codes.len(),
                },
            ));
            return;
        }
        self.in_flight.remove(position);
        let event = match self.subscriptions.answered(packet_id, &return_codes) {
            Some(Answered {
                origin: SubscribeOrigin::SessionLoss,
                filters,
            }) => Event::Resubscribed {
                packet_id,
                results: filters.into_iter().zip(return_codes).collect(),
            },
            Some(Answered {
                origin: SubscribeOrigin::Application,
                ..
            })
            | None => Event::SubAck {
                packet_id,
                return_codes,
            },
        };
        self.push_event(event);
        self.flush_queue();
    }

    fn handle_publish(&mut self, publish: Publish) {
        let Publish {
            dup,
            qos,
            topic,
            payload,
            ..
        } = publish;
        let topic = match TopicName::from_bytes(topic.into_bytes(), &BROKER_TOPIC_LIMITS) {
            Ok(topic) => topic,
            Err(error) => {
                self.end_transport(DisconnectReason::ProtocolViolation(
                    ProtocolViolation::InvalidTopic(error),
                ));
                return;
            }
        };
        let puback = qos.packet_id().map(|id| (id, self.transport));
        let event = match self.rrpc_reply_topic(&topic) {
            Some((message_id, reply_topic)) => {
                self.remember_rrpc(message_id, reply_topic);
                Event::RrpcRequest {
                    message_id,
                    payload,
                    topic,
                }
            }
            None => Event::Message {
                message: Message {
                    topic,
                    payload,
                    qos: qos.qos(),
                },
                dup,
            },
        };
        self.events.push_back(QueuedEvent { event, puback });
    }

    /// For an RRPC request to this device: its message id and the topic to answer on.
    fn rrpc_reply_topic(&self, topic: &TopicName) -> Option<(MessageId, TopicName)> {
        let identity = self.config.identity.as_ref()?;
        let rrpc = RrpcTopic::parse(topic.as_str())?;
        match rrpc {
            RrpcTopic::Request {
                product_key,
                device_name,
                message_id,
            } if product_key == identity.product_key && device_name == identity.device_name => {
                let reply = rrpc.reply()?.to_string();
                let reply = TopicName::from_bytes(Bytes::from(reply), &BROKER_TOPIC_LIMITS).ok()?;
                Some((message_id, reply))
            }
            RrpcTopic::Custom {
                message_id,
                topic: inner,
            } if is_device_topic(inner, &identity.product_key, &identity.device_name) => {
                Some((message_id, topic.clone()))
            }
            _ => None,
        }
    }

    /// Keeps where to answer an RRPC request, forgetting the oldest past the limit.
    fn remember_rrpc(&mut self, message_id: MessageId, reply_topic: TopicName) {
        if let Some(position) = self
            .pending_rrpc
            .iter()
            .position(|(id, _)| *id == message_id)
        {
            self.pending_rrpc.remove(position);
        }
        let capacity = self.config.max_pending_rrpc.max(1);
        while self.pending_rrpc.len() >= capacity {
            self.pending_rrpc.pop_front();
        }
        self.pending_rrpc.push_back((message_id, reply_topic));
    }

    /// Checks a command may be taken: `Ok(true)` when it goes out at once, `Ok(false)` when it
    /// waits in the queue.
    fn admit(&self, acknowledged: bool) -> Result<bool, ClientError> {
        let send_now = self.state == State::Connected
            && self.queued.is_empty()
            && (!acknowledged || self.in_flight.len() < self.window());
        if !send_now && self.queued.len() >= self.config.max_queued {
            return Err(ClientError::QueueFull {
                capacity: self.config.max_queued,
            });
        }
        Ok(send_now)
    }

    fn check_size(&self, encoded_len: Result<usize, EncodeError>) -> Result<(), ClientError> {
        let size = encoded_len.map_err(ClientError::Encode)?;
        if size > self.config.max_packet_size {
            return Err(ClientError::PacketTooLarge {
                size,
                max: self.config.max_packet_size,
            });
        }
        Ok(())
    }

    /// Sends `packet` now or queues it, as [`admit`](Self::admit) decided.
    fn dispatch(&mut self, packet: Outgoing, send_now: bool) {
        if send_now {
            self.send(packet);
        } else {
            if let Some(packet_id) = packet.packet_id() {
                self.queued_ids.push_back(packet_id);
            }
            self.queued.push_back(packet);
        }
    }

    /// Writes `packet`; one that awaits an acknowledgement goes in flight.
    fn send(&mut self, packet: Outgoing) {
        match packet.encode(&mut self.transmit) {
            Ok(()) => {
                self.last_sent = self.now;
                if let Outgoing::Qos0Publish { token, .. } = packet {
                    self.qos0_in_transmit.push_back(token);
                } else if let Some(packet_id) = packet.packet_id() {
                    self.in_flight.push_back(InFlight { packet_id, packet });
                }
            }
            Err(_) => report_unencodable(&mut self.events, &mut self.subscriptions, &packet),
        }
    }

    /// Sends queued commands, in order, while connected and the window allows.
    fn flush_queue(&mut self) {
        while self.state == State::Connected {
            let window_full = self.in_flight.len() >= self.window();
            let blocked = match self.queued.front() {
                None => true,
                Some(packet) => window_full && packet.packet_id().is_some(),
            };
            if blocked {
                break;
            }
            let Some(packet) = self.queued.pop_front() else {
                break;
            };
            if packet.packet_id().is_some() {
                self.queued_ids.pop_front();
            }
            self.send(packet);
        }
    }

    /// The next packet id that no queued or in-flight packet holds.
    ///
    /// Ids are handed out in increasing order, wrapping from 65,535 to 1, and packets are sent
    /// in the order they were given; so the held ids, in-flight ones then queued ones, are in
    /// the order they were handed out, each further round the ring from the oldest. A
    /// candidate past the newest held id is free: that is every candidate until the ids wrap
    /// round to the oldest still held, and then a binary search decides.
    fn allocate_packet_id(&mut self) -> Result<PacketId, ClientError> {
        let held = self.in_flight.len() + self.queued_ids.len();
        let oldest = self.in_flight.front().map(|sent| sent.packet_id);
        let Some(oldest) = oldest.or_else(|| self.queued_ids.front().copied()) else {
            return Ok(self.take_next_packet_id());
        };
        if held >= MAX_WINDOW {
            return Err(ClientError::PacketIdsExhausted);
        }
        let newest = self.queued_ids.back().copied();
        let newest = newest.or_else(|| self.in_flight.back().map(|sent| sent.packet_id));
        let newest_offset = ring_offset(oldest, newest.unwrap_or(oldest));
        for _ in 0..MAX_WINDOW {
            let candidate = self.take_next_packet_id();
            let offset = ring_offset(oldest, candidate);
            let in_flight = self
                .in_flight
                .binary_search_by_key(&offset, |sent| ring_offset(oldest, sent.packet_id));
            let queued = self
                .queued_ids
                .binary_search_by_key(&offset, |&id| ring_offset(oldest, id));
            if offset > newest_offset || (in_flight.is_err() && queued.is_err()) {
                return Ok(candidate);
            }
        }
        Err(ClientError::PacketIdsExhausted)
    }

    /// Hands out `next_packet_id` and moves it on, from 65,535 back to 1.
    fn take_next_packet_id(&mut self) -> PacketId {
        let id = self.next_packet_id;
        self.next_packet_id = PacketId::new(id.get().wrapping_add(1)).unwrap_or(FIRST_PACKET_ID);
        id
    }
}

/// How far round the ring of packet ids (1 to 65,535) `id` is from `origin`: 0 to 65,534.
fn ring_offset(origin: PacketId, id: PacketId) -> u32 {
    let ring = u32::from(u16::MAX);
    (u32::from(id.get()) + ring - u32::from(origin.get())) % ring
}

/// A topic name as an MQTT string.
fn topic_string(topic: TopicName) -> Result<Utf8Bytes, ClientError> {
    let len = topic.len();
    Utf8Bytes::try_from(topic.into_bytes()).map_err(|_| ClientError::TopicTooLong { len })
}

/// The filters of a SUBSCRIBE as MQTT strings, each with its QoS.
fn subscribe_filters(filters: &[(TopicFilter, QoS)]) -> Result<Vec<(Utf8Bytes, QoS)>, ClientError> {
    filters
        .iter()
        .map(|(filter, qos)| Ok((filter_string(filter)?, *qos)))
        .collect()
}

/// A topic filter as an MQTT string.
fn filter_string(filter: &TopicFilter) -> Result<Utf8Bytes, ClientError> {
    Utf8Bytes::try_from(filter.clone().into_bytes())
        .map_err(|_| ClientError::TopicTooLong { len: filter.len() })
}

/// Reports a packet that could not be encoded and is dropped. Commands check the size of
/// what they build with the codec's own `encoded_len`, so this is not reached; a PUBLISH is
/// still reported failed or dropped, and a SUBSCRIBE's filters forgotten, rather than lost
/// silently.
fn report_unencodable(
    events: &mut VecDeque<QueuedEvent>,
    subscriptions: &mut Subscriptions,
    packet: &Outgoing,
) {
    let event = match packet {
        Outgoing::Publish(publish) => publish.qos.packet_id().map(Event::PublishFailed),
        Outgoing::Qos0Publish { token, .. } => Some(Event::PublishDropped(*token)),
        Outgoing::Subscribe(subscribe) => {
            subscriptions.abandoned(subscribe.packet_id);
            None
        }
        Outgoing::Unsubscribe(_) => None,
    };
    if let Some(event) = event {
        events.push_back(QueuedEvent {
            event,
            puback: None,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet_id(value: u16) -> PacketId {
        PacketId::new(value).unwrap_or(FIRST_PACKET_ID)
    }

    #[test]
    fn ring_offsets_go_round_from_65535_to_1() {
        assert_eq!(ring_offset(packet_id(1), packet_id(1)), 0);
        assert_eq!(ring_offset(packet_id(1), packet_id(65_535)), 65_534);
        assert_eq!(ring_offset(packet_id(65_535), packet_id(1)), 1);
        assert_eq!(ring_offset(packet_id(65_000), packet_id(64_999)), 65_534);
    }

    #[test]
    fn next_packet_id_wraps_to_1() {
        let mut conn = Connection::new(ClientConfig::new(
            Credentials::anonymous("id").expect("a valid client id"),
        ));
        conn.next_packet_id = packet_id(u16::MAX);
        assert_eq!(conn.take_next_packet_id(), packet_id(u16::MAX));
        assert_eq!(conn.take_next_packet_id(), packet_id(1));
    }
}
