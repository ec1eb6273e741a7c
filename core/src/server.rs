//! The platform side of one device connection: `server::Connection`.
//!
//! A [`Connection`] speaks the protocol with one device and applies every rule that needs only
//! that device (SPEC §1, §2): CONNECT first and within a deadline, protocol name and level, no
//! will, no retain, no QoS 2, keepalive in 30–1200 s, authentication through an
//! [`Authenticator`], the ACL on every PUBLISH and SUBSCRIBE filter, and keepalive at 1.5×.
//!
//! It is sans-IO: the caller feeds it bytes ([`Connection::handle_input`]) and time
//! ([`Connection::handle_timeout`]), writes out what [`Connection::poll_transmit`] gives, and
//! passes each [`Event`] to the [`Hub`](crate::hub::Hub), whose [`Command`]s come back through
//! [`Connection::handle_command`].
//!
//! # The contract
//!
//! The caller drives one connection in a loop. `now` never goes backwards between calls.
//!
//! 1. **Inputs.** Bytes read from the device go to [`handle_input`](Connection::handle_input),
//!    and are read only while [`wants_input`](Connection::wants_input) says so. The hub's
//!    commands go to [`handle_command`](Connection::handle_command), in the order the hub gave
//!    them. When [`poll_timeout`](Connection::poll_timeout) passes, call
//!    [`handle_timeout`](Connection::handle_timeout). The end of the transport goes to
//!    [`handle_transport_closed`](Connection::handle_transport_closed).
//! 2. **Outputs, after each input.** Drain [`poll_event`](Connection::poll_event) and hand
//!    every event to the hub in order. Then take the bytes of
//!    [`poll_transmit`](Connection::poll_transmit) to write.
//! 3. **Writes.** Report what reached the transport with
//!    [`handle_written`](Connection::handle_written). Until then, handed-out bytes count as
//!    [`pending_output`](Connection::pending_output). Past
//!    [`ServerConfig::max_pending_output`] the connection drops QoS 0 deliveries and stops
//!    asking for input. The limit is the connection's, however eagerly the caller drains.
//! 4. **Before waiting.** Read [`poll_timeout`](Connection::poll_timeout) and
//!    [`wants_input`](Connection::wants_input) again: any call may change them.
//! 5. **Closing.** Once [`is_closed`](Connection::is_closed), write what is pending (a
//!    refusing CONNACK), then close the transport. The last event is [`Event::Closed`];
//!    nothing follows it.
//!
//! ```
//! use aliot_auth::MemoryRegistry;
//! use aliot_core::server::{Connection, ServerConfig};
//! use aliot_core::{Instant, PlatformAuthenticator};
//! use alloc::sync::Arc;
//! # extern crate alloc;
//!
//! let auth = Arc::new(PlatformAuthenticator::new(MemoryRegistry::new()));
//! let mut conn = Connection::new(ServerConfig::default(), auth, Default::default(), Instant::ZERO);
//! // A device that says nothing is closed when the CONNECT deadline passes.
//! let deadline = conn.poll_timeout().unwrap();
//! conn.handle_timeout(deadline);
//! assert!(conn.is_closed());
//! ```

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

use aliot_topic::{
    Acl, MessageId, RrpcTopic, TopicError, TopicFilter, TopicLimits, TopicName, is_device_topic,
};
use bytes::{Bytes, BytesMut};

use aliot_services::DeviceMessage;
use aliot_services::gateway::GatewayRequest;

use aliot_auth::{
    AuthError, ConnectFields, DeviceIdentity, RegistrationRefused, RegistrationRequest,
};

use crate::authenticator::{
    AuthContext, Authenticator, ClientFeatures, ClientKey, Refusal, RefusalReason, auth_refusal,
    profile_refusal,
};
use crate::codec::{
    ConnAck, Connect, ConnectReturnCode, DEFAULT_MAX_PACKET_SIZE, DecodeError, Decoder, Packet,
    PacketId, PubAck, Publish, PublishQos, QoS, SubAck, SubAckReturnCode, UnsubAck, Utf8Bytes,
};
use crate::message::Message;
use crate::registration::{REGISTRATION_GRACE, RegistrationGrant};
use crate::time::Instant;

mod carried;

use carried::CarriedDevices;

/// The profile's lowest accepted keepalive (SPEC §1).
pub const MIN_KEEP_ALIVE_SECS: u16 = 30;
/// The profile's highest keepalive: a higher one is accepted and enforced as this (SPEC §1).
pub const MAX_KEEP_ALIVE_SECS: u16 = 1200;

/// Limits of one platform-side connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// The largest packet accepted from the device, fixed header included (default 256 KiB).
    pub max_packet_size: usize,
    /// Topic rules for PUBLISH topics and SUBSCRIBE filters (default: at most 128 bytes).
    pub topic_limits: TopicLimits,
    /// How long a new connection has to send its CONNECT (default 10 s).
    pub connect_timeout: Duration,
    /// Bytes of output waiting for the device beyond which the connection stops asking for
    /// input and drops QoS 0 deliveries (default 1 MiB).
    pub max_pending_output: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            topic_limits: TopicLimits::default(),
            connect_timeout: Duration::from_secs(10),
            max_pending_output: 1024 * 1024,
        }
    }
}

/// QoS 1 PUBLISHes of one device waiting for their PUBACK at which its connection stops reading
/// until some are acknowledged (the packets of the read in hand are still taken, so it may go a
/// little beyond). MQTT 3.1.1 sets no such limit; clients keep far fewer in flight (tens), so
/// only a device that ignores its PUBACKs meets it. While it is not read, its keepalive does
/// not run out.
pub const MAX_UNACKED_PUBLISHES: usize = 1024;

/// Capacity up to which a connection keeps its PUBACK queue's allocation when the queue
/// empties (above it, after a burst, the queue is freed): enough for a device with a few
/// PUBLISHes in flight, so that it does not allocate per PUBLISH.
const SMALL_UNACKED_QUEUE: usize = 8;

/// What the hub should know about, in the order it happened.
#[derive(Debug)]
pub enum Event {
    /// An authenticated CONNECT: the hub opens (or resumes) the session and answers with
    /// [`Command::SessionOpened`]. Until then the connection reads nothing more.
    SessionRequested(SessionRequest),
    /// A PUBLISH the ACL allows, to be routed.
    Publish {
        /// The message.
        message: Message,
        /// A QoS 1 PUBLISH's packet id: the device gets its PUBACK when the hub answers with
        /// [`Command::AckPublish`], once it has taken the message. That can be later than at once:
        /// while a subscriber falls behind, the hub holds the PUBACKs of the messages queued for
        /// it, which slows their publishers down instead of dropping messages.
        packet_id: Option<PacketId>,
    },
    /// A PUBLISH the ACL refused: dropped (and PUBACKed if QoS 1, so the device does not resend).
    PublishDenied(TopicName),
    /// Filters granted by a SUBSCRIBE, with the granted QoS (already answered with SUBACK).
    Subscribe(Vec<(TopicFilter, QoS)>),
    /// A SUBSCRIBE filter the ACL refused (answered with 0x80).
    SubscribeDenied(TopicFilter),
    /// Filters of an UNSUBSCRIBE (already answered with UNSUBACK).
    Unsubscribe(Vec<TopicFilter>),
    /// A PUBLISH the ACL allows that answers an RRPC call of the platform: the device's
    /// response on `/sys/{productKey}/{deviceName}/rrpc/response/{messageId}`, or a PUBLISH on
    /// the custom form `/ext/rrpc/{messageId}{topic}` around one of its own topics. It is for
    /// the caller, never routed.
    RrpcResponse {
        /// The topic it came on (what the hub shows watchers; the call is `message_id`).
        topic: TopicName,
        /// The call it answers.
        message_id: MessageId,
        /// Whether it came in the custom-topic form.
        custom: bool,
        /// The answer.
        payload: Bytes,
        /// A QoS 1 PUBLISH's packet id, acknowledged like [`Event::Publish`]'s.
        packet_id: Option<PacketId>,
        /// The sub-device that answered, through its gateway's connection; `None`: the
        /// connection's own device.
        sub_device: Option<Arc<ClientKey>>,
    },
    /// A PUBLISH the ACL allows on one of the device's service topics (thing model, NTP,
    /// shadow, OTA), its JSON parsed here, in the connection's task. The hub answers it on the
    /// matching reply topic, and routes the message as any other to whoever subscribed to it
    /// (a tool in open mode watching `/sys/#`).
    ServiceRequest {
        /// The request.
        request: Box<DeviceMessage>,
        /// The PUBLISH: the reply goes with its QoS (or the subscription's, if lower).
        message: Message,
        /// A QoS 1 PUBLISH's packet id, acknowledged like [`Event::Publish`]'s.
        packet_id: Option<PacketId>,
        /// The sub-device that asked, through its gateway's connection; `None`: the
        /// connection's own device.
        sub_device: Option<Arc<ClientKey>>,
    },
    /// A gateway's request for its sub-devices (topology, registration, login and logout,
    /// PLATFORM-PROTOCOLS §4), its JSON parsed here. Whoever keeps the registry decides and
    /// answers on the reply topic; the message is routed as any other too.
    GatewayRequest {
        /// The request.
        request: Box<GatewayRequest>,
        /// The PUBLISH: the reply goes with its QoS (or the subscription's, if lower).
        message: Message,
        /// A QoS 1 PUBLISH's packet id, acknowledged like [`Event::Publish`]'s.
        packet_id: Option<PacketId>,
    },
    /// Filters a gateway subscribed to for one of its logged-in sub-devices, which that
    /// sub-device's ACL allows (already answered with SUBACK).
    SubDeviceSubscribe {
        /// The sub-device.
        sub_device: Arc<ClientKey>,
        /// The filters, with the granted QoS.
        filters: Vec<(TopicFilter, QoS)>,
    },
    /// Filters a gateway unsubscribed from that name one of its logged-in sub-devices (already
    /// answered with UNSUBACK).
    SubDeviceUnsubscribe {
        /// The sub-device.
        sub_device: Arc<ClientKey>,
        /// The filters.
        filters: Vec<TopicFilter>,
    },
    /// The device acknowledged a QoS 1 delivery (its PUBACK).
    DeliveryAcked(PacketId),
    /// QoS 0 deliveries dropped because the device was not reading fast enough.
    DeliveriesDropped(u64),
    /// A CONNECT asking for dynamic registration (`authType=register` or `regnwl`, over TLS):
    /// whoever keeps the registry answers with [`Command::Registered`] once the device's new
    /// credentials are durable, or [`Command::Refuse`]. Until then the connection reads
    /// nothing more; no session is asked for (see [`crate::registration`]).
    RegistrationRequested(Box<RegistrationRequest>),
    /// The connection is closed; the reason is final. Nothing follows.
    Closed(CloseReason),
}

/// An authenticated device asking for its session.
#[derive(Clone, Debug)]
pub struct SessionRequest {
    /// The key the session is kept under; shared (the hub's session keeps this one, and the
    /// adapter may keep it for its log lines).
    pub key: Arc<ClientKey>,
    /// What the device may publish and subscribe to.
    pub acl: Acl,
    /// cleanSession from the CONNECT.
    pub clean_session: bool,
    /// The keepalive in force (the CONNECT's, capped at 1200 s).
    pub keep_alive: Duration,
    /// What the client id asks of the platform (automatic subscription, the RRPC form).
    pub features: ClientFeatures,
    /// The client's address (for a sub-device, its gateway's), if known.
    pub client_ip: Option<core::net::IpAddr>,
    /// The platform's id of the device (`iotId`), if the registry gives one.
    pub iot_id: Option<alloc::string::String>,
}

/// What the hub tells a connection.
#[derive(Debug)]
pub enum Command {
    /// The session is open: send CONNACK 0 with this session-present flag.
    SessionOpened {
        /// Whether a kept session was resumed.
        session_present: bool,
    },
    /// Send this message to the device.
    Deliver(Delivery),
    /// The hub has taken the device's QoS 1 PUBLISH with this packet id: acknowledge it. PUBACKs
    /// go out in the order the PUBLISHes came in (MQTT-4.6.0-2), so one released before an
    /// earlier one waits for it.
    AckPublish(PacketId),
    /// Close the connection (for instance [`CloseReason::TakenOver`]).
    Close(CloseReason),
    /// The registration asked for is done: send CONNACK 0 and the grant, then close after
    /// [`REGISTRATION_GRACE`] unless the device disconnects first.
    Registered(RegistrationGrant),
    /// Refuse the CONNECT waiting for an answer (a registration) with this CONNACK code, and
    /// close.
    Refuse(Refusal),
    /// A sub-device logged in through this (gateway's) connection: from now on the gateway may
    /// publish and subscribe for it, as its ACL allows.
    SubDeviceOnline {
        /// The sub-device's key (its identity).
        key: Arc<ClientKey>,
        /// What it may publish and subscribe to.
        acl: Acl,
    },
    /// A sub-device carried by this connection logged out, or was taken elsewhere: the
    /// gateway may no longer act for it.
    SubDeviceOffline(Arc<ClientKey>),
}

/// A message on its way to one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The message, at the QoS it is delivered with.
    pub message: Message,
    /// The session's packet id for a QoS 1 delivery.
    pub packet_id: Option<PacketId>,
    /// Set when this is a re-send of a delivery the device may have seen.
    pub dup: bool,
}

/// Why a connection closed. Every close has one, for the adapter's log.
#[derive(Debug, thiserror::Error)]
pub enum CloseReason {
    /// The device sent DISCONNECT.
    #[error("client disconnected")]
    ClientDisconnected,
    /// The CONNECT was refused with this CONNACK code.
    #[error("connect refused ({}): {}", .0.code as u8, .0.reason)]
    Refused(Refusal),
    /// No CONNECT within the connect timeout.
    #[error("no CONNECT within the connect timeout")]
    ConnectTimeout,
    /// Nothing received for 1.5 × keepalive.
    #[error("keepalive timeout: nothing received for 1.5 x keepalive")]
    KeepAliveTimeout,
    /// The device broke a rule of the protocol or the profile.
    #[error("protocol violation: {0}")]
    ProtocolViolation(Violation),
    /// The device sent bytes that are not a valid packet.
    #[error("malformed packet: {0}")]
    Decode(DecodeError),
    /// Another connection of the same device took over.
    #[error("taken over by a new connection of the same client")]
    TakenOver,
    /// The broker is shutting down.
    #[error("server shutting down")]
    ServerShutdown,
    /// The transport ended without DISCONNECT (socket closed or failed).
    #[error("connection lost")]
    TransportClosed,
    /// The server side disabled or deleted the device.
    #[error("the device was disabled or deleted")]
    DeviceDisabled,
    /// A registration connection's grace time after its grant ran out.
    #[error("registered: the device was given its credentials")]
    Registered,
}

/// A rule of the protocol or the profile that the device broke.
#[derive(Debug, thiserror::Error)]
pub enum Violation {
    /// The first packet was not CONNECT.
    #[error("first packet was {0}, not CONNECT")]
    FirstPacketNotConnect(&'static str),
    /// A second CONNECT on the same connection.
    #[error("second CONNECT on one connection")]
    SecondConnect,
    /// A packet only a server sends.
    #[error("unexpected {0} from a client")]
    UnexpectedPacket(&'static str),
    /// PUBLISH with RETAIN=1: the profile stores nothing as retained.
    #[error("retained messages are not supported")]
    RetainNotSupported,
    /// A PUBLISH topic that is not a valid topic name.
    #[error("invalid PUBLISH topic: {0}")]
    InvalidTopic(TopicError),
    /// A SUBSCRIBE or UNSUBSCRIBE filter that is not a valid topic filter.
    #[error("invalid topic filter: {0}")]
    InvalidFilter(TopicError),
    /// A PUBLISH on a registration connection, which has no session to publish from.
    #[error("PUBLISH on a dynamic registration connection")]
    PublishWhileRegistering,
}

enum State {
    /// Waiting for CONNECT until the deadline.
    AwaitingConnect { deadline: Instant },
    /// Authenticated, waiting for the hub to open the session.
    AwaitingSession { deadline: Instant },
    /// A registration, waiting for its answer.
    AwaitingRegistration { deadline: Instant },
    /// Registered, CONNACK and the grant sent: closed at `close_at` unless the device
    /// disconnects first.
    Registered { close_at: Instant },
    /// Session open, CONNACK sent.
    Connected,
    /// Closed; the reason went out as an event.
    Closed,
}

/// The platform side of one device connection. See the [module docs](self).
pub struct Connection {
    config: ServerConfig,
    authenticator: Arc<dyn Authenticator + Send + Sync>,
    context: AuthContext,
    decoder: Decoder,
    state: State,
    read_buf: BytesMut,
    out: BytesMut,
    /// Bytes handed out by [`poll_transmit`](Connection::poll_transmit) that the caller has not
    /// yet reported written ([`handle_written`](Connection::handle_written)): they count
    /// against [`ServerConfig::max_pending_output`] as much as those still here.
    unwritten: usize,
    events: VecDeque<Event>,
    acl: Acl,
    /// The authenticated client, once its CONNECT is accepted: a device's RRPC answers are
    /// told from its other PUBLISHes by it.
    key: Option<Arc<ClientKey>>,
    keep_alive: Duration,
    last_input: Instant,
    dropped_deliveries: u64,
    /// QoS 1 PUBLISHes received and not yet acknowledged, in the order they came, each with
    /// whether its PUBACK may go (the hub said so, or the ACL refused it).
    unacked: VecDeque<(PacketId, bool)>,
    /// The sub-devices logged in through this connection, when it is a gateway's.
    carried: CarriedDevices,
    /// Whether the device has acted as a gateway (sent a gateway request): its refused
    /// thing-model requests for other devices are answered 520.
    is_gateway: bool,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("closed", &self.is_closed())
            .field("pending_output", &self.out.len())
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// A connection just accepted at `now`; the CONNECT deadline starts.
    pub fn new(
        config: ServerConfig,
        authenticator: Arc<dyn Authenticator + Send + Sync>,
        context: AuthContext,
        now: Instant,
    ) -> Self {
        let deadline = now + config.connect_timeout;
        Connection {
            decoder: Decoder::new(config.max_packet_size),
            config,
            authenticator,
            context,
            state: State::AwaitingConnect { deadline },
            read_buf: BytesMut::new(),
            out: BytesMut::new(),
            unwritten: 0,
            events: VecDeque::new(),
            acl: Acl::open(),
            key: None,
            keep_alive: Duration::ZERO,
            last_input: now,
            dropped_deliveries: 0,
            unacked: VecDeque::new(),
            carried: CarriedDevices::default(),
            is_gateway: false,
        }
    }

    /// Bytes read from the device.
    pub fn handle_input(&mut self, now: Instant, data: &[u8]) {
        if self.is_closed() || data.is_empty() {
            return;
        }
        self.last_input = now;
        self.read_buf.extend_from_slice(data);
        self.process_input(now);
    }

    /// The transport ended (EOF or error) without DISCONNECT.
    pub fn handle_transport_closed(&mut self) {
        self.close(CloseReason::TransportClosed);
    }

    /// Applies a command from the hub.
    pub fn handle_command(&mut self, now: Instant, command: Command) {
        match command {
            Command::SessionOpened { session_present } => {
                if let State::AwaitingSession { .. } = self.state {
                    self.state = State::Connected;
                    self.last_input = now;
                    let connack = ConnAck {
                        session_present,
                        code: ConnectReturnCode::Accepted,
                    };
                    self.send(&Packet::ConnAck(connack));
                    self.process_input(now);
                }
            }
            Command::Registered(grant) => {
                if let State::AwaitingRegistration { .. } = self.state {
                    self.state = State::Registered {
                        close_at: now + REGISTRATION_GRACE,
                    };
                    let connack = ConnAck {
                        session_present: false,
                        code: ConnectReturnCode::Accepted,
                    };
                    self.send(&Packet::ConnAck(connack));
                    let push = Publish {
                        // One of the registration module's constants.
                        topic: Utf8Bytes::from_static(grant.topic()),
                        qos: PublishQos::AtMostOnce,
                        dup: false,
                        retain: false,
                        payload: grant.payload().clone(),
                    };
                    self.send(&Packet::Publish(push));
                    self.process_input(now);
                }
            }
            Command::Refuse(refusal) => {
                if let State::AwaitingRegistration { .. } = self.state {
                    self.refuse(refusal);
                }
            }
            Command::Deliver(delivery) => self.deliver(&delivery),
            Command::AckPublish(packet_id) => self.release_puback(now, packet_id),
            Command::Close(reason) => self.close(reason),
            Command::SubDeviceOnline { key, acl } => {
                if !self.is_closed() {
                    self.carried.insert(key, acl);
                }
            }
            Command::SubDeviceOffline(key) => self.carried.remove(&key),
        }
    }

    /// Checks the deadlines (CONNECT timeout, keepalive) against `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::AwaitingConnect { deadline }
            | State::AwaitingSession { deadline }
            | State::AwaitingRegistration { deadline } => {
                if now >= deadline {
                    self.close(CloseReason::ConnectTimeout);
                }
            }
            State::Registered { close_at } => {
                if now >= close_at {
                    self.close(CloseReason::Registered);
                }
            }
            State::Connected => {
                if self
                    .keep_alive_deadline()
                    .is_some_and(|deadline| now >= deadline)
                {
                    self.close(CloseReason::KeepAliveTimeout);
                }
            }
            State::Closed => {}
        }
    }

    /// The next deadline, if any: call [`handle_timeout`](Self::handle_timeout) when it passes.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::AwaitingConnect { deadline }
            | State::AwaitingSession { deadline }
            | State::AwaitingRegistration { deadline } => Some(deadline),
            State::Registered { close_at } => Some(close_at),
            State::Connected => self.keep_alive_deadline(),
            State::Closed => None,
        }
    }

    /// Moves the bytes to write to the device into `buf` (appended). Returns whether any were.
    ///
    /// They still count as pending output (see [`pending_output`](Self::pending_output)) until
    /// the caller reports them written with [`handle_written`](Self::handle_written).
    pub fn poll_transmit(&mut self, buf: &mut BytesMut) -> bool {
        if self.out.is_empty() {
            return false;
        }
        self.unwritten = self.unwritten.saturating_add(self.out.len());
        // The whole buffer changes hands (an empty `buf` takes it as it is): the connection
        // keeps no allocation of its own while it has nothing to send.
        buf.unsplit(core::mem::take(&mut self.out));
        true
    }

    /// `written` bytes of those handed out by [`poll_transmit`](Self::poll_transmit) have
    /// been written to the transport: they no longer count as pending output.
    pub fn handle_written(&mut self, written: usize) {
        self.unwritten = self.unwritten.saturating_sub(written);
    }

    /// The next event for the hub, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        if self.dropped_deliveries > 0 {
            let dropped = core::mem::take(&mut self.dropped_deliveries);
            // Before the close, if there is one, so that the count is not lost.
            let before_close = matches!(self.events.back(), Some(Event::Closed(_)));
            let event = Event::DeliveriesDropped(dropped);
            if before_close {
                let at = self.events.len() - 1;
                self.events.insert(at, event);
            } else {
                self.events.push_back(event);
            }
        }
        let event = self.events.pop_front();
        if self.events.is_empty() && self.events.capacity() > 0 {
            // Drained after each read (one allocation per read that brings packets at most): an
            // idle connection keeps no queue.
            self.events = VecDeque::new();
        }
        event
    }

    /// Whether [`poll_event`](Self::poll_event) has an event to return.
    pub fn has_event(&self) -> bool {
        self.dropped_deliveries > 0 || !self.events.is_empty()
    }

    /// How many events [`poll_event`](Self::poll_event) will return before it returns `None`
    /// (unless something is done to the connection meanwhile).
    pub fn event_count(&self) -> usize {
        self.events.len() + usize::from(self.dropped_deliveries > 0)
    }

    /// Whether the connection wants more input now. It does not while the hub has yet to open
    /// the session, while too much output is waiting for the device (backpressure: a device
    /// that does not read its acknowledgements is slowed down by TCP), or while
    /// [`MAX_UNACKED_PUBLISHES`] of its QoS 1 PUBLISHes wait for their PUBACK (a device that
    /// does not wait for its PUBACKs is slowed down the same way).
    pub fn wants_input(&self) -> bool {
        match self.state {
            State::AwaitingConnect { .. } | State::Connected | State::Registered { .. } => {
                self.pending_output() < self.config.max_pending_output && !self.too_many_unacked()
            }
            State::AwaitingSession { .. } | State::AwaitingRegistration { .. } | State::Closed => {
                false
            }
        }
    }

    /// Whether the connection is closed. Output still pending (a refusing CONNACK) should be
    /// written before the transport is closed.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Bytes of output not yet written: waiting for [`poll_transmit`](Self::poll_transmit), or
    /// handed out and not yet reported by [`handle_written`](Self::handle_written). Past
    /// [`ServerConfig::max_pending_output`], the connection stops asking for input and drops
    /// QoS 0 deliveries.
    pub fn pending_output(&self) -> usize {
        self.out.len().saturating_add(self.unwritten)
    }

    fn keep_alive_deadline(&self) -> Option<Instant> {
        // 1.5 × keepalive (SPEC §1); the keepalive is at least 30 s once connected. None while
        // the device is not read for its unacknowledged PUBLISHes: its PINGREQs wait unread.
        (self.keep_alive > Duration::ZERO && !self.too_many_unacked())
            .then(|| self.last_input + self.keep_alive * 3 / 2)
    }

    fn process_input(&mut self, now: Instant) {
        loop {
            if matches!(
                self.state,
                State::AwaitingSession { .. } | State::AwaitingRegistration { .. } | State::Closed
            ) {
                return;
            }
            match self.decoder.decode(&mut self.read_buf) {
                Ok(Some(packet)) => self.handle_packet(now, packet),
                Ok(None) => break,
                Err(error) => {
                    self.handle_decode_error(error);
                    return;
                }
            }
        }
        if self.read_buf.is_empty() {
            // An idle connection keeps no read buffer. Whatever its capacity: once a packet has
            // been split off, even an empty buffer with no capacity left holds the allocation
            // the packet came from.
            self.read_buf = BytesMut::new();
        }
    }

    fn handle_decode_error(&mut self, error: DecodeError) {
        if matches!(self.state, State::AwaitingConnect { .. })
            && matches!(error, DecodeError::UnsupportedProtocol { .. })
        {
            self.refuse(profile_refusal(
                ConnectReturnCode::UnacceptableProtocolVersion,
                RefusalReason::UnsupportedProtocol,
            ));
        } else {
            self.close(CloseReason::Decode(error));
        }
    }

    fn handle_packet(&mut self, now: Instant, packet: Packet) {
        if let State::AwaitingConnect { .. } = self.state {
            match packet {
                Packet::Connect(connect) => self.handle_connect(now, *connect),
                other => {
                    let name = packet_name(&other);
                    self.close(CloseReason::ProtocolViolation(
                        Violation::FirstPacketNotConnect(name),
                    ))
                }
            }
            return;
        }
        let packet = match self.state {
            State::Registered { .. } => match self.handle_packet_registered(packet) {
                Some(packet) => packet,
                None => return,
            },
            _ => packet,
        };
        match packet {
            Packet::Publish(publish) => self.handle_publish(publish),
            Packet::PubAck(PubAck { packet_id }) => {
                self.events.push_back(Event::DeliveryAcked(packet_id))
            }
            Packet::Subscribe(subscribe) => {
                let mut granted = Vec::with_capacity(subscribe.filters.len());
                let mut codes = Vec::with_capacity(subscribe.filters.len());
                for (filter, qos) in subscribe.filters {
                    let filter = match TopicFilter::from_bytes(
                        filter.into_bytes(),
                        &self.config.topic_limits,
                    ) {
                        Ok(filter) => filter,
                        Err(TopicError::TooLong { .. }) => {
                            // Valid MQTT, beyond the profile's limit: refused, not a violation.
                            codes.push(SubAckReturnCode::Failure);
                            continue;
                        }
                        Err(error) => {
                            self.close(CloseReason::ProtocolViolation(Violation::InvalidFilter(
                                error,
                            )));
                            return;
                        }
                    };
                    let qos = qos.min(QoS::AtLeastOnce);
                    if self.acl.may_subscribe(&filter) {
                        codes.push(SubAckReturnCode::Success(qos));
                        granted.push((filter, qos));
                    } else if let Some(sub) = self.carried.subscriber(&filter) {
                        codes.push(SubAckReturnCode::Success(qos));
                        self.events.push_back(Event::SubDeviceSubscribe {
                            sub_device: Arc::clone(&sub.key),
                            filters: vec![(filter, qos)],
                        });
                    } else {
                        codes.push(SubAckReturnCode::Failure);
                        self.events.push_back(Event::SubscribeDenied(filter));
                    }
                }
                if !granted.is_empty() {
                    self.events.push_back(Event::Subscribe(granted));
                }
                let suback = SubAck {
                    packet_id: subscribe.packet_id,
                    return_codes: codes,
                };
                self.send(&Packet::SubAck(suback));
            }
            Packet::Unsubscribe(unsubscribe) => {
                let mut filters = Vec::with_capacity(unsubscribe.filters.len());
                for filter in unsubscribe.filters {
                    match TopicFilter::from_bytes(filter.into_bytes(), &self.config.topic_limits) {
                        Ok(filter) => match self.carried.named(&filter) {
                            Some(sub) => self.events.push_back(Event::SubDeviceUnsubscribe {
                                sub_device: Arc::clone(&sub.key),
                                filters: vec![filter],
                            }),
                            None => filters.push(filter),
                        },
                        // Too long to have been subscribed: nothing to remove.
                        Err(TopicError::TooLong { .. }) => {}
                        Err(error) => {
                            self.close(CloseReason::ProtocolViolation(Violation::InvalidFilter(
                                error,
                            )));
                            return;
                        }
                    }
                }
                if !filters.is_empty() {
                    self.events.push_back(Event::Unsubscribe(filters));
                }
                self.send(&Packet::UnsubAck(UnsubAck {
                    packet_id: unsubscribe.packet_id,
                }));
            }
            Packet::PingReq => self.send(&Packet::PingResp),
            Packet::Disconnect => self.close(CloseReason::ClientDisconnected),
            Packet::Connect(_) => {
                self.close(CloseReason::ProtocolViolation(Violation::SecondConnect))
            }
            other @ (Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp) => {
                let name = packet_name(&other);
                self.close(CloseReason::ProtocolViolation(Violation::UnexpectedPacket(
                    name,
                )))
            }
        }
    }

    /// A packet after a registration's grant: the device has no session, so what would need
    /// one is answered here and `None` returned; the rest (PINGREQ, DISCONNECT, a packet no
    /// client sends) is returned, for the rules of any connection. A SUBSCRIBE is refused
    /// (0x80 for every filter), not closed on: an SDK may subscribe as it connects, before it
    /// has read its grant.
    fn handle_packet_registered(&mut self, packet: Packet) -> Option<Packet> {
        match packet {
            Packet::Subscribe(subscribe) => {
                let suback = SubAck {
                    packet_id: subscribe.packet_id,
                    return_codes: vec![SubAckReturnCode::Failure; subscribe.filters.len()],
                };
                self.send(&Packet::SubAck(suback));
            }
            Packet::Unsubscribe(unsubscribe) => self.send(&Packet::UnsubAck(UnsubAck {
                packet_id: unsubscribe.packet_id,
            })),
            // Nothing was delivered with QoS 1: a PUBACK acknowledges nothing.
            Packet::PubAck(_) => {}
            Packet::Publish(_) => self.close(CloseReason::ProtocolViolation(
                Violation::PublishWhileRegistering,
            )),
            other => return Some(other),
        }
        None
    }

    /// A CONNECT asking for dynamic registration: its request for the registry's keeper, or
    /// its refusal. `None`: the CONNECT is a login.
    fn registration(&self, connect: &Connect) -> Option<Result<RegistrationRequest, Refusal>> {
        let fields = ConnectFields {
            client_id: connect.client_id.as_str(),
            username: connect.username.as_ref().map(|u| u.as_str()),
            password: connect.password.as_deref(),
        };
        let request = match RegistrationRequest::from_connect(&fields) {
            Ok(request) => request?,
            // Not a platform client id at all: the authenticator decides (open mode).
            Err(AuthError::ClientId(_)) if !connect.client_id.as_str().contains('|') => {
                return None;
            }
            Err(error) => return Some(Err(auth_refusal(error))),
        };
        if !self.context.tls {
            return Some(Err(Refusal::registration(RegistrationRefused::NeedsTls)));
        }
        // A TLS-PSK handshake proved a registered device: it signs its CONNECT with its
        // secret, and registers nobody.
        if let Some(psk_device) = &self.context.psk_device {
            return Some(Err(profile_refusal(
                ConnectReturnCode::NotAuthorized,
                RefusalReason::NotThePskDevice(Arc::clone(psk_device)),
            )));
        }
        Some(Ok(request))
    }

    fn handle_connect(&mut self, now: Instant, connect: Connect) {
        if connect.will.is_some() {
            return self.refuse(profile_refusal(
                ConnectReturnCode::NotAuthorized,
                RefusalReason::WillNotSupported,
            ));
        }
        if connect.keep_alive < MIN_KEEP_ALIVE_SECS {
            return self.refuse(profile_refusal(
                ConnectReturnCode::IdentifierRejected,
                RefusalReason::KeepAliveOutOfRange(connect.keep_alive),
            ));
        }
        match self.registration(&connect) {
            None => {}
            Some(Err(refusal)) => return self.refuse(refusal),
            Some(Ok(request)) => {
                self.state = State::AwaitingRegistration {
                    deadline: now + self.config.connect_timeout,
                };
                self.events
                    .push_back(Event::RegistrationRequested(Box::new(request)));
                return;
            }
        }
        let authenticated = match self.authenticator.authenticate(&connect, &self.context) {
            Ok(authenticated) => authenticated,
            Err(refusal) => return self.refuse(refusal),
        };
        // TLS-PSK proved a device in the handshake: the CONNECT must be that device's.
        if let Some(psk_device) = &self.context.psk_device {
            let same =
                matches!(&authenticated.key, ClientKey::Device(device) if device == &**psk_device);
            if !same {
                return self.refuse(profile_refusal(
                    ConnectReturnCode::NotAuthorized,
                    RefusalReason::NotThePskDevice(Arc::clone(psk_device)),
                ));
            }
        }
        if authenticated.key == ClientKey::Anonymous && !connect.clean_session {
            return self.refuse(profile_refusal(
                ConnectReturnCode::IdentifierRejected,
                RefusalReason::EmptyClientIdWithSession,
            ));
        }
        let keep_alive = connect.keep_alive.min(MAX_KEEP_ALIVE_SECS);
        self.keep_alive = Duration::from_secs(u64::from(keep_alive));
        self.acl = authenticated.acl.clone();
        self.state = State::AwaitingSession {
            deadline: now + self.config.connect_timeout,
        };
        let key = Arc::new(authenticated.key);
        self.key = Some(Arc::clone(&key));
        self.events
            .push_back(Event::SessionRequested(SessionRequest {
                key,
                acl: authenticated.acl,
                clean_session: connect.clean_session,
                keep_alive: self.keep_alive,
                features: authenticated.features,
                client_ip: self.context.client_ip,
                iot_id: authenticated.iot_id,
            }));
    }

    fn handle_publish(&mut self, publish: Publish) {
        if publish.retain {
            return self.close(CloseReason::ProtocolViolation(
                Violation::RetainNotSupported,
            ));
        }
        let topic =
            match TopicName::from_bytes(publish.topic.into_bytes(), &self.config.topic_limits) {
                Ok(topic) => topic,
                Err(error) => {
                    return self.close(CloseReason::ProtocolViolation(Violation::InvalidTopic(
                        error,
                    )));
                }
            };
        let qos = publish.qos.qos();
        let packet_id = publish.qos.packet_id();
        // The connection's own device, or a sub-device its gateway publishes for.
        let sub_device = match self.acl.may_publish(&topic) {
            true => None,
            false => match self.carried.publisher(&topic) {
                Some(sub) => Some(Arc::clone(&sub.key)),
                None => {
                    self.answer_not_logged_in(&topic, &publish.payload);
                    self.events.push_back(Event::PublishDenied(topic));
                    // Refused, yet acknowledged (in turn) so that the device does not resend
                    // it forever.
                    if let Some(packet_id) = packet_id {
                        self.unacked.push_back((packet_id, true));
                        self.send_released_pubacks();
                    }
                    return;
                }
            },
        };
        if let Some(packet_id) = packet_id {
            // Acknowledged when the hub has the message (Command::AckPublish).
            self.unacked.push_back((packet_id, false));
        }
        let Some(device) = self.publisher(sub_device.as_deref()) else {
            let message = Message {
                topic,
                payload: publish.payload,
                qos,
            };
            self.events.push_back(Event::Publish { message, packet_id });
            return;
        };
        let event = if let Some((message_id, custom)) = rrpc_response(&topic, device) {
            Event::RrpcResponse {
                topic: topic.clone(),
                message_id,
                custom,
                payload: publish.payload,
                packet_id,
                sub_device,
            }
        } else {
            let service = DeviceMessage::parse(
                topic.as_str(),
                &publish.payload,
                &device.product_key,
                &device.device_name,
            );
            // A gateway's requests are its own: a sub-device it carries makes none.
            let gateway = match (&service, &sub_device) {
                (None, None) => GatewayRequest::parse(
                    topic.as_str(),
                    &publish.payload,
                    &device.product_key,
                    &device.device_name,
                ),
                _ => None,
            };
            let message = Message {
                topic,
                payload: publish.payload,
                qos,
            };
            match (service, gateway) {
                (Some(request), _) => Event::ServiceRequest {
                    request: Box::new(request),
                    message,
                    packet_id,
                    sub_device,
                },
                (None, Some(request)) => {
                    self.is_gateway = true;
                    Event::GatewayRequest {
                        request: Box::new(request),
                        message,
                        packet_id,
                    }
                }
                (None, None) => Event::Publish { message, packet_id },
            }
        };
        self.events.push_back(event);
    }

    /// A gateway's thing-model request on another device's topic, refused: a gateway acting
    /// for a sub-device it has not logged in (or no longer carries) gets the platform's 520 on
    /// the reply topic (ours, PLATFORM-PROTOCOLS §4.6), so that an SDK waiting for the reply
    /// learns why. Sent straight from here: no session of the sub-device is involved. A device
    /// that never acted as a gateway gets no answer, as before.
    fn answer_not_logged_in(&mut self, topic: &TopicName, payload: &[u8]) {
        if !self.is_gateway {
            return;
        }
        let Some(own) = self.key.as_deref().and_then(ClientKey::device) else {
            return;
        };
        if is_device_topic(topic.as_str(), &own.product_key, &own.device_name) {
            return;
        }
        let reply = aliot_services::gateway::not_logged_in_reply(topic.as_str(), payload);
        if let Some(reply) = reply
            && let Ok(reply_topic) = Utf8Bytes::try_from(reply.topic)
        {
            let publish = Publish {
                topic: reply_topic,
                qos: PublishQos::AtMostOnce,
                dup: false,
                retain: false,
                payload: Bytes::from(reply.payload),
            };
            self.send(&Packet::Publish(publish));
        }
    }

    /// The device a PUBLISH is from: the sub-device it is for, or the connection's own device
    /// (`None` for a client that is not a device).
    fn publisher<'a>(&'a self, sub_device: Option<&'a ClientKey>) -> Option<&'a DeviceIdentity> {
        match sub_device {
            Some(sub) => sub.device(),
            None => self.key.as_deref()?.device(),
        }
    }

    /// The hub has taken the PUBLISH with this packet id: its PUBACK may go, after those of
    /// the PUBLISHes before it.
    fn release_puback(&mut self, now: Instant, packet_id: PacketId) {
        if !matches!(self.state, State::Connected) {
            return;
        }
        let was_blocked = self.too_many_unacked();
        // Packet ids are unique among unacknowledged PUBLISHes of a well-behaved device; one
        // that reuses an id gets its PUBACKs in turn all the same.
        if let Some(entry) = self
            .unacked
            .iter_mut()
            .find(|(id, released)| *id == packet_id && !released)
        {
            entry.1 = true;
            self.send_released_pubacks();
        }
        if was_blocked && !self.too_many_unacked() {
            // Reading again: the device's silence while we did not read is not its own.
            self.last_input = now;
        }
    }

    /// Whether so many PUBLISHes wait for their PUBACK that the device is not read.
    fn too_many_unacked(&self) -> bool {
        self.unacked.len() >= MAX_UNACKED_PUBLISHES
    }

    fn send_released_pubacks(&mut self) {
        while let Some(&(packet_id, true)) = self.unacked.front() {
            self.unacked.pop_front();
            self.send(&Packet::PubAck(PubAck { packet_id }));
        }
        if self.unacked.is_empty() && self.unacked.capacity() > SMALL_UNACKED_QUEUE {
            // After a burst: an idle connection keeps no more than a device publishing one
            // message at a time needs (no allocation per PUBLISH for it).
            self.unacked = VecDeque::new();
        }
    }

    fn deliver(&mut self, delivery: &Delivery) {
        if !matches!(self.state, State::Connected) {
            // Not connected (closing): a QoS 1 delivery stays in the hub's session.
            return;
        }
        let qos0 = delivery.packet_id.is_none() || delivery.message.qos == QoS::AtMostOnce;
        if qos0 && self.pending_output() >= self.config.max_pending_output {
            self.dropped_deliveries += 1;
            return;
        }
        if let Some(publish) = delivery
            .message
            .to_publish(delivery.packet_id, delivery.dup)
        {
            self.send(&Packet::Publish(publish));
        }
    }

    fn refuse(&mut self, refusal: Refusal) {
        let connack = ConnAck {
            session_present: false,
            code: refusal.code,
        };
        self.send(&Packet::ConnAck(connack));
        self.close(CloseReason::Refused(refusal));
    }

    fn send(&mut self, packet: &Packet) {
        // Only packets we built go out; the one failure encoding can have (a packet beyond
        // MQTT's 256 MB) cannot come from input bounded by the max packet size.
        if packet.encode(&mut self.out).is_err() {
            self.dropped_deliveries += 1;
        }
    }

    fn close(&mut self, reason: CloseReason) {
        if self.is_closed() {
            return;
        }
        self.state = State::Closed;
        self.read_buf = BytesMut::new();
        self.unacked = VecDeque::new();
        self.key = None;
        self.carried = CarriedDevices::default();
        self.events.push_back(Event::Closed(reason));
    }
}

/// The RRPC call a PUBLISH on `topic` answers, if it is one of `device`'s answers (and
/// whether in the custom form). Only a device answers calls; the ACL has let it publish there
/// already.
fn rrpc_response(topic: &TopicName, device: &DeviceIdentity) -> Option<(MessageId, bool)> {
    match RrpcTopic::parse(topic.as_str())? {
        RrpcTopic::Response {
            product_key,
            device_name,
            message_id,
        } if product_key == device.product_key && device_name == device.device_name => {
            Some((message_id, false))
        }
        RrpcTopic::Custom { message_id, topic }
            if is_device_topic(topic, &device.product_key, &device.device_name) =>
        {
            Some((message_id, true))
        }
        _ => None,
    }
}

/// The name of a packet, for close reasons.
pub(crate) fn packet_name(packet: &Packet) -> &'static str {
    match packet {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect => "DISCONNECT",
    }
}
