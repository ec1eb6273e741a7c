//! The broker's shared state: sessions, routing, takeover, offline queues, RRPC correlation.
//!
//! The [`Hub`] is sans-IO like the connections. An adapter feeds it each connection's
//! [`server::Event`](crate::server::Event) with [`Hub::handle_event`], calls
//! [`Hub::handle_timeout`] when [`Hub::poll_timeout`] passes, and hands every [`HubOutput`] to
//! the connection it names (or to the RRPC caller).
//!
//! Sessions live here whether the device is online or not (see `docs/DESIGN-NOTES.md`): the
//! subscriptions, the QoS 1 in-flight window towards the device and the queue behind it. Limits
//! on that queue are [`HubConfig`]'s; what is dropped is counted in [`Counters`], never silent.
//! The hub also acknowledges devices' QoS 1 PUBLISHes ([`Command::PubAck`]), and holds those
//! PUBACKs back while a subscriber falls behind, so that publishers slow down to its pace
//! ([`HubConfig::ack_hold_threshold`]).
//!
//! ```
//! use aliot_core::hub::{Hub, HubConfig, HubOutput, RrpcOutcome};
//! use aliot_core::{Instant};
//! use aliot_auth::DeviceIdentity;
//! use core::time::Duration;
//!
//! let mut hub = Hub::new(HubConfig::default());
//! let device = DeviceIdentity { product_key: "a1Prod".into(), device_name: "dev-1".into() };
//! // Nobody is connected: the call ends at once, offline.
//! let id = hub.rrpc_call(&device, "ping".into(), Duration::from_secs(5), None, Instant::ZERO).unwrap();
//! match hub.poll_output() {
//!     Some(HubOutput::RrpcOutcome { id: done, outcome: RrpcOutcome::Offline }) => assert_eq!(done, id),
//!     other => panic!("unexpected {other:?}"),
//! }
//! ```

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::string::ToString;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::mem;
use core::time::Duration;

use aliot_auth::DeviceIdentity;
use aliot_topic::{
    Acl, MessageId, RrpcTopic, SubscriptionIndex, TopicFilter, TopicLimits, TopicName,
};
use bytes::Bytes;
use hashbrown::HashMap;

use crate::authenticator::ClientKey;
use crate::codec::{PacketId, QoS};
use crate::message::Message;
use crate::server::{CloseReason, Command, Delivery, Event, SessionRequest};
use crate::time::Instant;

mod held_acks;

use held_acks::{AckTicket, HeldAcks, HoldId};

/// How long the platform waits for an RRPC response at least and at most (SPEC §4).
pub const RRPC_TIMEOUT_RANGE_MS: core::ops::RangeInclusive<u64> = 1_000..=8_000;

/// How far past [`HubConfig::max_queued_messages`] and [`HubConfig::max_queued_bytes`] a queue
/// may grow with messages that hold their publishers' PUBACKs (flow control), as a factor of
/// those limits. Only such a message takes the queue past its limits; any other one brings it
/// back within them, the oldest dropped first.
pub const HELD_QUEUE_FACTOR: usize = 4;

/// How many timed-out RRPC message ids are remembered to tell a late response from an unknown one.
const REMEMBERED_TIMEOUTS: usize = 4096;

/// Limits of the hub. The defaults are the documented ones (SPEC §1: ours).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubConfig {
    /// QoS 1 deliveries sent to a device and not yet acknowledged, at most (default 32).
    pub inflight_window: usize,
    /// Messages a session keeps queued behind the window or while offline (default 1,000).
    /// QoS 1 messages that hold their publishers' PUBACKs may take an online session's queue up
    /// to [`HELD_QUEUE_FACTOR`] times this before the oldest are dropped.
    pub max_queued_messages: usize,
    /// Bytes (topic + payload) a session keeps queued (default 4 MiB); as far as
    /// [`HELD_QUEUE_FACTOR`] times this with messages that hold PUBACKs.
    pub max_queued_bytes: usize,
    /// Messages queued for an online session from which on a QoS 1 message queued behind them
    /// holds its publisher's PUBACK until it leaves the queue (default 100); the same share of
    /// `max_queued_bytes` (10 % by default) counts too. Publishers that wait for their PUBACKs
    /// then slow down to the pace of a subscriber that falls behind, rather than overflow its
    /// queue. Above `max_queued_messages`, nothing is held.
    pub ack_hold_threshold: usize,
    /// The longest a PUBACK is held for a subscriber that falls behind (default 1 s). A
    /// subscriber that has acknowledged nothing for this long holds no more PUBACKs: a stuck
    /// one does not slow its publishers down, its queue drops the oldest as an offline one
    /// does.
    pub max_ack_hold: Duration,
    /// A queued message older than this is dropped instead of delivered (default 7 days).
    pub max_message_age: Option<Duration>,
    /// An offline cleanSession=0 session is discarded after this long (default 7 days).
    pub session_expiry: Option<Duration>,
    /// The first RRPC messageId handed out. An adapter seeds it from the wall clock so ids stay
    /// fresh across restarts.
    pub first_rrpc_message_id: u64,
}

impl Default for HubConfig {
    fn default() -> Self {
        let week = Duration::from_secs(7 * 24 * 3600);
        HubConfig {
            inflight_window: 32,
            max_queued_messages: 1_000,
            max_queued_bytes: 4 * 1024 * 1024,
            ack_hold_threshold: 100,
            max_ack_hold: Duration::from_secs(1),
            max_message_age: Some(week),
            session_expiry: Some(week),
            first_rrpc_message_id: 1,
        }
    }
}

/// Identifies one transport connection; the adapter assigns them, never reusing one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// What the hub wants done.
#[derive(Debug)]
pub enum HubOutput {
    /// Hand this command to that connection.
    Connection {
        /// The connection.
        conn: ConnId,
        /// What it must do.
        command: Command,
    },
    /// An RRPC call ended (exactly one per call).
    RrpcOutcome {
        /// The call, as returned by [`Hub::rrpc_call`].
        id: MessageId,
        /// How it ended.
        outcome: RrpcOutcome,
    },
}

/// How an RRPC call ended (SPEC §4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RrpcOutcome {
    /// The device answered with this payload.
    Success(Bytes),
    /// No answer within the call's timeout.
    Timeout,
    /// The device is not connected.
    Offline,
    /// The device's connection went away less than one keepalive ago, or it is connected but
    /// not subscribed to the request topic.
    HalfConn,
    /// Anything else (the broker shut down with the call pending).
    Unknown,
}

impl RrpcOutcome {
    /// The platform's name for the outcome: `SUCCESS`, `TIMEOUT`, `OFFLINE`, `HALFCONN`, `UNKNOWN`.
    pub fn code(&self) -> &'static str {
        match self {
            RrpcOutcome::Success(_) => "SUCCESS",
            RrpcOutcome::Timeout => "TIMEOUT",
            RrpcOutcome::Offline => "OFFLINE",
            RrpcOutcome::HalfConn => "HALFCONN",
            RrpcOutcome::Unknown => "UNKNOWN",
        }
    }
}

/// Why an RRPC call could not be started.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RrpcError {
    /// The timeout is outside 1,000–8,000 ms.
    #[error("RRPC timeout {0} ms is outside 1000..=8000 ms")]
    InvalidTimeout(u64),
    /// The custom topic is not one of the device's own (`/{productKey}/{deviceName}/...`).
    #[error("custom RRPC topic {0:?} is not one of the device's own topics")]
    NotDeviceTopic(alloc::string::String),
    /// The request topic would not be a valid topic name.
    #[error("RRPC request topic is invalid")]
    InvalidTopic,
}

/// What became of a message the server sent to one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceDelivery {
    /// Handed to the device's connection.
    Sent,
    /// Kept in the device's session (offline, or behind the in-flight window).
    Queued,
    /// The device has no session (never connected, or its clean session ended).
    Offline,
    /// The device is not subscribed to the topic (or is offline with QoS 0).
    NotSubscribed,
    /// The device's ACL does not let it subscribe to the topic.
    Denied,
}

/// What one session holds, from [`Hub::session_stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Whether a connection is attached.
    pub online: bool,
    /// Whether it ends at disconnect (cleanSession=1).
    pub clean: bool,
    /// Subscriptions held.
    pub subscriptions: usize,
    /// QoS 1 deliveries sent and not yet acknowledged.
    pub inflight: usize,
    /// Messages waiting behind the window or while offline.
    pub queued: usize,
    /// Bytes (topic + payload) of the queued messages.
    pub queued_bytes: usize,
}

/// What the hub has counted since it started. Read with [`Hub::counters`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Sessions opened (CONNACK 0 sent).
    pub connections_accepted: u64,
    /// CONNECTs refused, by CONNACK code (index = code; 0 unused).
    pub connections_refused: [u64; 6],
    /// Connections closed, by reason.
    pub closed: CloseCounters,
    /// Connections taken over by a new connection of the same client.
    pub takeovers: u64,
    /// PUBLISHes accepted from clients (plus messages published by the server).
    pub messages_in: u64,
    /// Deliveries handed to connections.
    pub messages_out: u64,
    /// PUBLISHes refused by the ACL (dropped; QoS 1 still acknowledged).
    pub publish_denied: u64,
    /// QoS 1 PUBLISHes whose PUBACK was held because a subscriber had fallen behind.
    pub acks_held: u64,
    /// Of those, PUBACKs sent when the hold reached [`HubConfig::max_ack_hold`].
    pub acks_held_to_limit: u64,
    /// SUBSCRIBE filters refused by the ACL.
    pub subscribe_denied: u64,
    /// Drops, by reason.
    pub dropped: DropCounters,
    /// RRPC outcomes and strays.
    pub rrpc: RrpcCounters,
}

/// Connection closes by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CloseCounters {
    /// DISCONNECT from the client.
    pub client_disconnected: u64,
    /// CONNECT refused (see [`Counters::connections_refused`]).
    pub refused: u64,
    /// No CONNECT in time.
    pub connect_timeout: u64,
    /// Keepalive expired.
    pub keep_alive_timeout: u64,
    /// Protocol or profile rule broken, or malformed bytes.
    pub protocol_violation: u64,
    /// Taken over.
    pub taken_over: u64,
    /// Broker shutdown.
    pub server_shutdown: u64,
    /// Transport lost without DISCONNECT.
    pub transport_closed: u64,
}

/// Messages dropped, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DropCounters {
    /// QoS 1 messages dropped from a full session queue (the oldest go first).
    pub queue_full: u64,
    /// Queued messages older than the maximum age.
    pub expired: u64,
    /// QoS 0 deliveries to a device that was not reading.
    pub slow_consumer: u64,
    /// QoS 0 messages for an offline session (QoS 0 is not kept).
    pub offline_qos0: u64,
    /// Queued or in-flight messages of a session that ended (clean session closed, clean
    /// start over a kept session, session expired).
    pub session_discarded: u64,
}

/// RRPC outcomes and stray responses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RrpcCounters {
    /// Calls answered.
    pub success: u64,
    /// Calls timed out.
    pub timeout: u64,
    /// Calls to offline devices.
    pub offline: u64,
    /// Calls to half-connected devices.
    pub halfconn: u64,
    /// Calls ended otherwise.
    pub unknown: u64,
    /// Responses that came after their call timed out (dropped).
    pub late_responses: u64,
    /// Responses to no known call (dropped).
    pub unknown_responses: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct SessionId(u32);

struct Queued {
    message: Message,
    at: Instant,
    /// The publisher's PUBACK this message holds, if it does.
    hold: Option<HoldId>,
}

struct Session {
    /// Shared with [`Hub::by_key`]: one copy of the key per session, not two.
    key: Arc<ClientKey>,
    acl: Acl,
    clean: bool,
    conn: Option<ConnId>,
    keep_alive: Duration,
    subscriptions: BTreeMap<TopicFilter, QoS>,
    inflight: VecDeque<(PacketId, Message)>,
    queue: VecDeque<Queued>,
    queued_bytes: usize,
    next_packet_id: u16,
    expires_at: Option<Instant>,
    /// When the device last acknowledged a delivery, or attached: a queue whose device has not
    /// moved for `max_ack_hold` holds no more PUBACKs (it is stuck, not slow).
    last_progress: Instant,
}

impl Session {
    fn new(request: &SessionRequest, now: Instant) -> Self {
        Session {
            key: Arc::clone(&request.key),
            acl: request.acl.clone(),
            clean: request.clean_session,
            conn: None,
            keep_alive: request.keep_alive,
            subscriptions: BTreeMap::new(),
            inflight: VecDeque::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            next_packet_id: 0,
            expires_at: None,
            last_progress: now,
        }
    }

    /// A packet id not used by any delivery still in flight.
    fn allocate_packet_id(&mut self) -> PacketId {
        loop {
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            if let Some(id) = PacketId::new(self.next_packet_id)
                && !self.inflight.iter().any(|(used, _)| *used == id)
            {
                return id;
            }
        }
    }

    fn granted_qos(&self, topic: &TopicName) -> Option<QoS> {
        self.subscriptions
            .iter()
            .filter(|(filter, _)| filter.matches(topic))
            .map(|(_, qos)| *qos)
            .max()
    }
}

struct PendingCall {
    device: DeviceIdentity,
    deadline: Instant,
    custom: bool,
}

/// The broker's shared state. See the [module docs](self).
pub struct Hub {
    config: HubConfig,
    /// Topics the server builds itself (RRPC requests) may be longer than a device's limit.
    server_topic_limits: TopicLimits,
    sessions: Vec<Option<Session>>,
    free_sessions: Vec<u32>,
    by_key: BTreeMap<Arc<ClientKey>, SessionId>,
    by_conn: HashMap<ConnId, SessionId>,
    index: SubscriptionIndex<SessionId, QoS>,
    expiries: BTreeSet<(Instant, SessionId)>,
    recently_gone: BTreeMap<DeviceIdentity, Instant>,
    calls: BTreeMap<MessageId, PendingCall>,
    call_deadlines: BTreeSet<(Instant, MessageId)>,
    timed_out: VecDeque<MessageId>,
    next_message_id: u64,
    outputs: VecDeque<HubOutput>,
    counters: Counters,
    scratch: Vec<(SessionId, QoS)>,
    held_acks: HeldAcks,
    /// PUBACKs freed by one pump (sent after its deliveries) or by a session going offline
    /// (kept for its allocation).
    released_acks: Vec<(ConnId, PacketId)>,
}

impl core::fmt::Debug for Hub {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Hub")
            .field("sessions", &self.by_key.len())
            .field("connections", &self.by_conn.len())
            .field("pending_rrpc_calls", &self.calls.len())
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// An empty hub.
    pub fn new(config: HubConfig) -> Self {
        let next_message_id = config.first_rrpc_message_id;
        Hub {
            config,
            server_topic_limits: TopicLimits {
                max_len: usize::from(u16::MAX),
            },
            sessions: Vec::new(),
            free_sessions: Vec::new(),
            by_key: BTreeMap::new(),
            by_conn: HashMap::new(),
            index: SubscriptionIndex::new(),
            expiries: BTreeSet::new(),
            recently_gone: BTreeMap::new(),
            calls: BTreeMap::new(),
            call_deadlines: BTreeSet::new(),
            timed_out: VecDeque::new(),
            next_message_id,
            outputs: VecDeque::new(),
            counters: Counters::default(),
            scratch: Vec::new(),
            held_acks: HeldAcks::default(),
            released_acks: Vec::new(),
        }
    }

    /// The hub's limits.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// What has been counted so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Connections with an open session now.
    pub fn connection_count(&self) -> usize {
        self.by_conn.len()
    }

    /// Sessions kept now (online and offline).
    pub fn session_count(&self) -> usize {
        self.sessions.len() - self.free_sessions.len()
    }

    /// RRPC calls waiting for a response.
    pub fn pending_rrpc_calls(&self) -> usize {
        self.calls.len()
    }

    /// Whether the device has a connection with an open session now.
    pub fn is_online(&self, device: &DeviceIdentity) -> bool {
        self.session_of_device(device)
            .is_some_and(|sid| self.session(sid).conn.is_some())
    }

    /// Messages queued for a client's session (waiting behind the window or while offline).
    pub fn queued_messages(&self, key: &ClientKey) -> usize {
        self.session_stats(key).map_or(0, |stats| stats.queued)
    }

    /// What a client's session holds now, if it has one.
    pub fn session_stats(&self, key: &ClientKey) -> Option<SessionStats> {
        let session = self.session(*self.by_key.get(key)?);
        Some(SessionStats {
            online: session.conn.is_some(),
            clean: session.clean,
            subscriptions: session.subscriptions.len(),
            inflight: session.inflight.len(),
            queued: session.queue.len(),
            queued_bytes: session.queued_bytes,
        })
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<HubOutput> {
        self.outputs.pop_front()
    }

    /// PUBACKs held now for subscribers that fell behind.
    pub fn held_acks(&self) -> usize {
        self.held_acks.len()
    }

    /// The next deadline (an RRPC call's timeout, an offline session's expiry, the limit of a
    /// held PUBACK), if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let call = self.call_deadlines.first().map(|(at, _)| *at);
        let expiry = self.expiries.first().map(|(at, _)| *at);
        let ack = self.held_acks.next_deadline();
        [call, expiry, ack].into_iter().flatten().min()
    }

    /// Ends what is due at `now`: RRPC calls time out, expired offline sessions are discarded,
    /// PUBACKs held to their limit go out.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(ack) = self.held_acks.expire(now) {
            self.counters.acks_held_to_limit += 1;
            self.send_puback(ack);
        }
        while let Some(&(at, id)) = self.call_deadlines.first() {
            if at > now {
                break;
            }
            self.call_deadlines.pop_first();
            if self.calls.remove(&id).is_some() {
                self.remember_timeout(id);
                self.finish_call(id, RrpcOutcome::Timeout);
            }
        }
        while let Some(&(at, sid)) = self.expiries.first() {
            if at > now {
                break;
            }
            self.expiries.pop_first();
            self.remove_session(sid);
        }
        self.recently_gone.retain(|_, until| *until > now);
    }

    /// Takes one event of a connection.
    pub fn handle_event(&mut self, conn: ConnId, event: Event, now: Instant) {
        match event {
            Event::SessionRequested(request) => self.open_session(conn, request, now),
            Event::Publish { message, packet_id } => {
                self.counters.messages_in += 1;
                let from = self.by_conn.get(&conn).copied();
                let ticket = packet_id.map(|packet_id| self.held_acks.ticket(conn, packet_id));
                self.handle_publish(from, message, ticket, now);
                if let Some(ticket) = ticket
                    && let Some(ack) = self
                        .held_acks
                        .routed(ticket, now + self.config.max_ack_hold)
                {
                    self.send_puback(ack);
                }
            }
            Event::PublishDenied(_) => self.counters.publish_denied += 1,
            Event::Subscribe(filters) => {
                if let Some(&sid) = self.by_conn.get(&conn) {
                    for (filter, qos) in filters {
                        self.index.insert(&filter, sid, qos);
                        self.session_mut(sid).subscriptions.insert(filter, qos);
                    }
                }
            }
            Event::SubscribeDenied(_) => self.counters.subscribe_denied += 1,
            Event::Unsubscribe(filters) => {
                if let Some(&sid) = self.by_conn.get(&conn) {
                    for filter in filters {
                        if self
                            .session_mut(sid)
                            .subscriptions
                            .remove(&filter)
                            .is_some()
                        {
                            self.index.remove(&filter, &sid);
                        }
                    }
                }
            }
            Event::PubAck(packet_id) => {
                if let Some(&sid) = self.by_conn.get(&conn) {
                    let session = self.session_mut(sid);
                    if let Some(at) = session.inflight.iter().position(|(id, _)| *id == packet_id) {
                        session.inflight.remove(at);
                        session.last_progress = now;
                    }
                    self.pump(sid, now);
                }
            }
            Event::DeliveriesDropped(count) => self.counters.dropped.slow_consumer += count,
            Event::Closed(reason) => {
                self.count_close(&reason);
                self.detach(conn, now);
            }
        }
    }

    /// Publishes a message from the server side (the platform's `Pub` API) to every subscriber.
    /// Returns how many sessions it reached.
    pub fn publish(&mut self, message: Message, now: Instant) -> usize {
        self.counters.messages_in += 1;
        self.route(message, None, now)
    }

    /// Sends a message from the server to one device, if its ACL lets it subscribe to the topic
    /// and it is subscribed (QoS is the lower of `message.qos` and the subscription's).
    pub fn publish_to_device(
        &mut self,
        device: &DeviceIdentity,
        message: Message,
        now: Instant,
    ) -> DeviceDelivery {
        let Some(sid) = self.session_of_device(device) else {
            return DeviceDelivery::Offline;
        };
        let session = self.session(sid);
        let allowed = session
            .acl
            .may_subscribe(&TopicFilter::from(message.topic.clone()));
        if !allowed {
            return DeviceDelivery::Denied;
        }
        let Some(granted) = session.granted_qos(&message.topic) else {
            return DeviceDelivery::NotSubscribed;
        };
        if session.conn.is_none() && message.qos.min(granted) == QoS::AtMostOnce {
            self.counters.dropped.offline_qos0 += 1;
            return DeviceDelivery::NotSubscribed;
        }
        self.counters.messages_in += 1;
        self.deliver(sid, &message, granted, None, now)
    }

    /// Calls a device synchronously (RRPC, SPEC §4): publishes the request with a fresh
    /// messageId and later yields exactly one [`HubOutput::RrpcOutcome`] for it. With `topic`,
    /// the custom-topic form `/ext/rrpc/{messageId}{topic}` is used.
    pub fn rrpc_call(
        &mut self,
        device: &DeviceIdentity,
        payload: Bytes,
        timeout: Duration,
        topic: Option<&TopicName>,
        now: Instant,
    ) -> Result<MessageId, RrpcError> {
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        if !RRPC_TIMEOUT_RANGE_MS.contains(&timeout_ms) {
            return Err(RrpcError::InvalidTimeout(timeout_ms));
        }
        if let Some(topic) = topic
            && !is_device_topic(device, topic.as_str())
        {
            return Err(RrpcError::NotDeviceTopic(topic.as_str().to_string()));
        }
        let id = MessageId(self.next_message_id);
        self.next_message_id = self.next_message_id.wrapping_add(1);
        let request = match topic {
            Some(topic) => RrpcTopic::Custom {
                message_id: id,
                topic: topic.as_str(),
            },
            None => RrpcTopic::Request {
                product_key: &device.product_key,
                device_name: &device.device_name,
                message_id: id,
            },
        };
        let request = TopicName::new(&request.to_string(), &self.server_topic_limits)
            .map_err(|_| RrpcError::InvalidTopic)?;

        let online = self
            .session_of_device(device)
            .filter(|sid| self.session(*sid).conn.is_some());
        let Some(sid) = online else {
            let halfconn = self
                .recently_gone
                .get(device)
                .is_some_and(|until| *until > now);
            let outcome = if halfconn {
                RrpcOutcome::HalfConn
            } else {
                RrpcOutcome::Offline
            };
            self.finish_call(id, outcome);
            return Ok(id);
        };
        if self.session(sid).granted_qos(&request).is_none() {
            // Connected but not listening for requests: the platform's HALFCONN (ours).
            self.finish_call(id, RrpcOutcome::HalfConn);
            return Ok(id);
        }
        let deadline = now + timeout;
        self.calls.insert(
            id,
            PendingCall {
                device: device.clone(),
                deadline,
                custom: topic.is_some(),
            },
        );
        self.call_deadlines.insert((deadline, id));
        self.deliver(
            sid,
            &Message::new(request, payload, QoS::AtMostOnce),
            QoS::AtMostOnce,
            None,
            now,
        );
        Ok(id)
    }

    /// Closes every connection (reason: server shutdown) and ends pending RRPC calls as
    /// `UNKNOWN`. Kept sessions stay, to be resumed if the hub keeps running.
    pub fn shutdown(&mut self) {
        let conns: Vec<ConnId> = self.by_conn.keys().copied().collect();
        for conn in conns {
            self.command(conn, Command::Close(CloseReason::ServerShutdown));
        }
        let calls: Vec<MessageId> = self.calls.keys().copied().collect();
        self.calls.clear();
        self.call_deadlines.clear();
        self.held_acks.clear();
        for id in calls {
            self.finish_call(id, RrpcOutcome::Unknown);
        }
    }

    fn open_session(&mut self, conn: ConnId, request: SessionRequest, now: Instant) {
        let existing = match &*request.key {
            ClientKey::Anonymous => None,
            key => self.by_key.get(key).copied(),
        };
        let mut session_present = false;
        let sid = match existing {
            Some(sid) => {
                if let Some(old) = self.session_mut(sid).conn.take() {
                    self.by_conn.remove(&old);
                    self.counters.takeovers += 1;
                    self.command(old, Command::Close(CloseReason::TakenOver));
                }
                if request.clean_session || self.session(sid).clean {
                    self.remove_session(sid);
                    self.insert_session(Session::new(&request, now))
                } else {
                    session_present = true;
                    if let Some(at) = self.session_mut(sid).expires_at.take() {
                        self.expiries.remove(&(at, sid));
                    }
                    sid
                }
            }
            None => self.insert_session(Session::new(&request, now)),
        };
        let session = self.session_mut(sid);
        session.conn = Some(conn);
        session.last_progress = now;
        session.acl = request.acl;
        session.clean = request.clean_session;
        session.keep_alive = request.keep_alive;
        self.by_conn.insert(conn, sid);
        if let ClientKey::Device(identity) = &*request.key {
            self.recently_gone.remove(identity);
        }
        self.counters.connections_accepted += 1;
        self.command(conn, Command::SessionOpened { session_present });
        if session_present {
            // Unacknowledged deliveries first, with DUP, in their original order; then the queue.
            let resend: Vec<Delivery> = self
                .session(sid)
                .inflight
                .iter()
                .map(|(id, message)| Delivery {
                    message: message.clone(),
                    packet_id: Some(*id),
                    dup: true,
                })
                .collect();
            for delivery in resend {
                self.counters.messages_out += 1;
                self.command(conn, Command::Deliver(delivery));
            }
            self.pump(sid, now);
        }
    }

    fn detach(&mut self, conn: ConnId, now: Instant) {
        let Some(sid) = self.by_conn.remove(&conn) else {
            return;
        };
        let session = self.session_mut(sid);
        if session.conn != Some(conn) {
            return;
        }
        session.conn = None;
        let keep_alive = session.keep_alive;
        let clean = session.clean;
        if let ClientKey::Device(identity) = &*session.key {
            let identity = identity.clone();
            self.recently_gone.insert(identity, now + keep_alive);
        }
        if clean {
            self.remove_session(sid);
            return;
        }
        // Its queue is a store for later now: its publishers wait no longer.
        self.release_queue_holds(sid);
        if let Some(expiry) = self.config.session_expiry {
            let at = now + expiry;
            self.session_mut(sid).expires_at = Some(at);
            self.expiries.insert((at, sid));
        }
    }

    fn handle_publish(
        &mut self,
        from: Option<SessionId>,
        message: Message,
        ticket: Option<AckTicket>,
        now: Instant,
    ) {
        if let Some(sid) = from
            && let ClientKey::Device(identity) = &*self.session(sid).key
        {
            // A device's RRPC response is for the platform: correlated, never routed (routing
            // a custom-topic response would hand it back to the device as a new request).
            let parsed = RrpcTopic::parse(message.topic.as_str());
            let response_id = match parsed {
                Some(RrpcTopic::Response {
                    product_key,
                    device_name,
                    message_id,
                }) if product_key == identity.product_key
                    && device_name == identity.device_name =>
                {
                    Some((message_id, false))
                }
                Some(RrpcTopic::Custom { message_id, topic })
                    if is_device_topic(identity, topic) =>
                {
                    Some((message_id, true))
                }
                _ => None,
            };
            if let Some((id, custom)) = response_id {
                let identity = identity.clone();
                self.resolve_call(id, &identity, custom, message.payload);
                return;
            }
        }
        self.route(message, ticket, now);
    }

    fn resolve_call(
        &mut self,
        id: MessageId,
        device: &DeviceIdentity,
        custom: bool,
        payload: Bytes,
    ) {
        let matches = self
            .calls
            .get(&id)
            .is_some_and(|call| call.device == *device && call.custom == custom);
        if matches {
            if let Some(call) = self.calls.remove(&id) {
                self.call_deadlines.remove(&(call.deadline, id));
                self.finish_call(id, RrpcOutcome::Success(payload));
            }
        } else if self.timed_out.contains(&id) {
            self.counters.rrpc.late_responses += 1;
        } else {
            self.counters.rrpc.unknown_responses += 1;
        }
    }

    /// Delivers to every matching subscription, once per session at the highest granted QoS.
    /// A queue that falls behind holds `ticket`'s PUBACK.
    fn route(&mut self, message: Message, ticket: Option<AckTicket>, now: Instant) -> usize {
        let mut targets = mem::take(&mut self.scratch);
        targets.clear();
        self.index
            .for_each_match(&message.topic, |sid, qos| targets.push((*sid, *qos)));
        // Overlapping subscriptions of one session: one delivery, at the highest QoS.
        targets.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        targets.dedup_by_key(|(sid, _)| *sid);
        for &(sid, granted) in &targets {
            self.deliver(sid, &message, granted, ticket, now);
        }
        let reached = targets.len();
        self.scratch = targets;
        reached
    }

    fn deliver(
        &mut self,
        sid: SessionId,
        message: &Message,
        granted: QoS,
        ticket: Option<AckTicket>,
        now: Instant,
    ) -> DeviceDelivery {
        let qos = message.qos.min(granted).min(QoS::AtLeastOnce);
        let window = self.config.inflight_window;
        let session = self.session_mut(sid);
        match (session.conn, qos) {
            (Some(conn), QoS::AtMostOnce) => {
                let mut message = message.clone();
                message.qos = QoS::AtMostOnce;
                self.counters.messages_out += 1;
                self.command(
                    conn,
                    Command::Deliver(Delivery {
                        message,
                        packet_id: None,
                        dup: false,
                    }),
                );
                DeviceDelivery::Sent
            }
            (None, QoS::AtMostOnce) => {
                self.counters.dropped.offline_qos0 += 1;
                DeviceDelivery::NotSubscribed
            }
            (conn, _) => {
                let mut message = message.clone();
                message.qos = QoS::AtLeastOnce;
                if let Some(conn) =
                    conn.filter(|_| session.queue.is_empty() && session.inflight.len() < window)
                {
                    let packet_id = session.allocate_packet_id();
                    session.inflight.push_back((packet_id, message.clone()));
                    self.counters.messages_out += 1;
                    let delivery = Delivery {
                        message,
                        packet_id: Some(packet_id),
                        dup: false,
                    };
                    self.command(conn, Command::Deliver(delivery));
                    DeviceDelivery::Sent
                } else {
                    self.enqueue(sid, message, ticket, now);
                    DeviceDelivery::Queued
                }
            }
        }
    }

    fn enqueue(
        &mut self,
        sid: SessionId,
        message: Message,
        ticket: Option<AckTicket>,
        now: Instant,
    ) {
        let (max_messages, max_bytes, hold_from, max_hold) = (
            self.config.max_queued_messages,
            self.config.max_queued_bytes,
            self.config.ack_hold_threshold,
            self.config.max_ack_hold,
        );
        let session = self.session_mut(sid);
        // Only behind an online device that is slow, not stuck: an offline session's queue is a
        // store for later, and a device that has acknowledged nothing for the longest hold
        // would only slow its publishers to a window per hold.
        let behind = session.queue.len() >= hold_from
            || holds_by_bytes(session.queued_bytes, max_bytes, hold_from, max_messages);
        let holds = session.conn.is_some() && behind && now - session.last_progress < max_hold;
        let hold = match ticket.filter(|_| holds) {
            Some(ticket) => {
                let (hold, first) = self.held_acks.hold(ticket);
                self.counters.acks_held += u64::from(first);
                Some(hold)
            }
            None => None,
        };
        let session = self.session_mut(sid);
        session.queued_bytes += message.weight();
        session.queue.push_back(Queued {
            message,
            at: now,
            hold,
        });
        // A message whose publisher waits for its PUBACK may take the queue past its limits, up
        // to HELD_QUEUE_FACTOR times them: the publisher sends no more until it leaves, so the
        // excess is bounded by the publishers' windows, and a burst from many publishers at
        // once (their windows add up to more than the queue) loses nothing.
        let (max_messages, max_bytes) = match hold {
            Some(_) => (
                max_messages.saturating_mul(HELD_QUEUE_FACTOR),
                max_bytes.saturating_mul(HELD_QUEUE_FACTOR),
            ),
            None => (max_messages, max_bytes),
        };
        // The oldest go first. A PUBACK one of them holds is not sent now but when its hold
        // reaches its limit: the publishers of a queue that overflows stay slowed down (sending
        // it now would invite the next message to drop).
        let mut dropped = 0;
        while session.queue.len() > max_messages || session.queued_bytes > max_bytes {
            match session.queue.pop_front() {
                Some(oldest) => {
                    session.queued_bytes -= oldest.message.weight();
                    dropped += 1;
                }
                None => break,
            }
        }
        self.counters.dropped.queue_full += dropped;
    }

    /// A queued message leaves its queue: the PUBACK it held may go.
    fn release_hold(&mut self, hold: Option<HoldId>) {
        if let Some(ack) = hold.and_then(|hold| self.held_acks.release(hold)) {
            self.send_puback(ack);
        }
    }

    /// Every message of the session's queue lets go of the PUBACK it holds.
    fn release_queue_holds(&mut self, sid: SessionId) {
        let Some(Some(session)) = self.sessions.get_mut(sid.0 as usize) else {
            return;
        };
        let mut released = mem::take(&mut self.released_acks);
        for queued in &mut session.queue {
            released.extend(
                queued
                    .hold
                    .take()
                    .and_then(|hold| self.held_acks.release(hold)),
            );
        }
        for ack in released.drain(..) {
            self.send_puback(ack);
        }
        self.released_acks = released;
    }

    fn send_puback(&mut self, (conn, packet_id): (ConnId, PacketId)) {
        self.command(conn, Command::PubAck(packet_id));
    }

    /// Moves queued messages into the window while it has room and the device is online.
    fn pump(&mut self, sid: SessionId, now: Instant) {
        let window = self.config.inflight_window;
        let max_age = self.config.max_message_age;
        // The session, the holds, the outputs and the counters are separate fields: one pass.
        let Some(Some(session)) = self.sessions.get_mut(sid.0 as usize) else {
            return;
        };
        let Some(conn) = session.conn else {
            return;
        };
        // The deliveries go first, the PUBACKs they free after them: the device that is behind
        // is the one to get going (an adapter runs the connections in this order, or wakes
        // them so that they run in it).
        let mut released = mem::take(&mut self.released_acks);
        while session.inflight.len() < window {
            let Some(queued) = session.queue.pop_front() else {
                break;
            };
            session.queued_bytes -= queued.message.weight();
            released.extend(queued.hold.and_then(|hold| self.held_acks.release(hold)));
            if max_age.is_some_and(|age| now - queued.at > age) {
                self.counters.dropped.expired += 1;
                continue;
            }
            let packet_id = session.allocate_packet_id();
            session
                .inflight
                .push_back((packet_id, queued.message.clone()));
            self.counters.messages_out += 1;
            self.outputs.push_back(HubOutput::Connection {
                conn,
                command: Command::Deliver(Delivery {
                    message: queued.message,
                    packet_id: Some(packet_id),
                    dup: false,
                }),
            });
        }
        for ack in released.drain(..) {
            self.send_puback(ack);
        }
        self.released_acks = released;
    }

    fn finish_call(&mut self, id: MessageId, outcome: RrpcOutcome) {
        let counters = &mut self.counters.rrpc;
        match outcome {
            RrpcOutcome::Success(_) => counters.success += 1,
            RrpcOutcome::Timeout => counters.timeout += 1,
            RrpcOutcome::Offline => counters.offline += 1,
            RrpcOutcome::HalfConn => counters.halfconn += 1,
            RrpcOutcome::Unknown => counters.unknown += 1,
        }
        self.outputs
            .push_back(HubOutput::RrpcOutcome { id, outcome });
    }

    fn remember_timeout(&mut self, id: MessageId) {
        if self.timed_out.len() == REMEMBERED_TIMEOUTS {
            self.timed_out.pop_front();
        }
        self.timed_out.push_back(id);
    }

    fn count_close(&mut self, reason: &CloseReason) {
        let closed = &mut self.counters.closed;
        match reason {
            CloseReason::ClientDisconnected => closed.client_disconnected += 1,
            CloseReason::Refused(refusal) => {
                closed.refused += 1;
                let code = refusal.code as usize;
                if let Some(count) = self.counters.connections_refused.get_mut(code) {
                    *count += 1;
                }
            }
            CloseReason::ConnectTimeout => closed.connect_timeout += 1,
            CloseReason::KeepAliveTimeout => closed.keep_alive_timeout += 1,
            CloseReason::ProtocolViolation(_) | CloseReason::Decode(_) => {
                closed.protocol_violation += 1
            }
            CloseReason::TakenOver => closed.taken_over += 1,
            CloseReason::ServerShutdown => closed.server_shutdown += 1,
            CloseReason::TransportClosed => closed.transport_closed += 1,
        }
    }

    fn command(&mut self, conn: ConnId, command: Command) {
        self.outputs
            .push_back(HubOutput::Connection { conn, command });
    }

    fn session_of_device(&self, device: &DeviceIdentity) -> Option<SessionId> {
        // One allocation per server-side call (not per routed message).
        self.by_key.get(&ClientKey::Device(device.clone())).copied()
    }

    fn session(&self, sid: SessionId) -> &Session {
        match self.sessions.get(sid.0 as usize) {
            Some(Some(session)) => session,
            // Session ids are only created by insert_session and dropped with their tables.
            _ => unreachable!("session id {sid:?} without a session"),
        }
    }

    fn session_mut(&mut self, sid: SessionId) -> &mut Session {
        match self.sessions.get_mut(sid.0 as usize) {
            Some(Some(session)) => session,
            _ => unreachable!("session id {sid:?} without a session"),
        }
    }

    fn insert_session(&mut self, session: Session) -> SessionId {
        let key = Arc::clone(&session.key);
        let sid = match self.free_sessions.pop() {
            Some(slot) => {
                self.sessions[slot as usize] = Some(session);
                SessionId(slot)
            }
            None => {
                let slot = u32::try_from(self.sessions.len()).unwrap_or(u32::MAX);
                self.sessions.push(Some(session));
                SessionId(slot)
            }
        };
        if *key != ClientKey::Anonymous {
            self.by_key.insert(key, sid);
        }
        sid
    }

    fn remove_session(&mut self, sid: SessionId) {
        let Some(session) = self.sessions.get_mut(sid.0 as usize).and_then(Option::take) else {
            return;
        };
        self.free_sessions.push(sid.0);
        if self.by_key.get(&session.key) == Some(&sid) {
            self.by_key.remove(&session.key);
        }
        if let Some(conn) = session.conn {
            self.by_conn.remove(&conn);
        }
        if let Some(at) = session.expires_at {
            self.expiries.remove(&(at, sid));
        }
        for filter in session.subscriptions.keys() {
            self.index.remove(filter, &sid);
        }
        self.counters.dropped.session_discarded +=
            (session.queue.len() + session.inflight.len()) as u64;
        for queued in session.queue {
            self.release_hold(queued.hold);
        }
    }
}

/// Whether a queue with `queued_bytes` is as far behind, by bytes, as `hold_from` messages
/// are of `max_messages`: the same share of `max_bytes`, so that large messages are held too
/// before the byte limit drops them.
fn holds_by_bytes(
    queued_bytes: usize,
    max_bytes: usize,
    hold_from: usize,
    max_messages: usize,
) -> bool {
    // queued / max_bytes >= hold_from / max_messages, without dividing.
    (queued_bytes as u128) * (max_messages as u128) >= (max_bytes as u128) * (hold_from as u128)
        && queued_bytes > 0
}

/// Whether `topic` is one of the device's own topics (`/{productKey}/{deviceName}/...`).
fn is_device_topic(device: &DeviceIdentity, topic: &str) -> bool {
    let rest = topic
        .strip_prefix('/')
        .and_then(|t| t.strip_prefix(device.product_key.as_str()));
    let rest = rest
        .and_then(|t| t.strip_prefix('/'))
        .and_then(|t| t.strip_prefix(device.device_name.as_str()));
    rest.is_some_and(|t| t.starts_with('/') && t.len() > 1)
}
