//! The broker's shared state: sessions, routing, takeover, offline queues, RRPC correlation.
//!
//! The [`Hub`] is sans-IO like the connections. An adapter feeds it each connection's
//! [`server::Event`](crate::server::Event) with [`Hub::handle_event`], calls
//! [`Hub::handle_timeout`] when [`Hub::poll_timeout`] passes, and hands every [`HubOutput`] to
//! the connection it names (or to the RRPC caller).
//!
//! # The contract
//!
//! The caller (one task, or one thread: the hub is the broker's serial stage) owns the hub.
//! `now` never goes backwards between calls.
//!
//! 1. **Inputs.** Each connection's events go to [`Hub::handle_event`], in the order that
//!    connection gave them; server-side calls are [`Hub::publish`],
//!    [`Hub::publish_to_device`] and [`Hub::rrpc_call`]. When [`Hub::poll_timeout`] passes,
//!    call [`Hub::handle_timeout`].
//! 2. **Outputs, after each input.** Drain [`Hub::poll_output`]. Each
//!    [`HubOutput::Connection`] goes to the connection it names, and commands to one
//!    connection keep their order. Each [`HubOutput::RrpcOutcome`] goes to its caller. The
//!    outputs come in the order things happened. Which connection runs first is the caller's
//!    choice: a delivery and the PUBACK it freed may be handed out in either order.
//! 3. **Before waiting.** Read [`Hub::poll_timeout`] again: it is the earliest deadline of the
//!    hub's sub-states (held PUBACKs, RRPC calls and half-connected devices, offline
//!    sessions), each of which keeps its own.
//! 4. **Closing.** A connection's last event is its [`Event::Closed`]; commands the hub
//!    sends it after that are dropped. [`Hub::shutdown`] closes every connection and ends
//!    every RRPC call.
//!
//! Sessions live here whether the device is online or not (see `docs/DESIGN-NOTES.md`): the
//! subscriptions, the QoS 1 in-flight window towards the device and the queue behind it. Limits
//! on that queue are [`HubConfig`]'s; what is dropped is counted in [`Counters`], never silent.
//! The hub also acknowledges devices' QoS 1 PUBLISHes ([`Command::AckPublish`]), and holds those
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

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::mem;
use core::num::NonZeroU16;
use core::time::Duration;

use aliot_auth::{DeviceIdentity, RegistrationRefused};
use aliot_services::{
    AlinkCode, DeviceMessage, DeviceState, Downlink, DownlinkResult, OtaJob, ShadowCode,
    ShadowRequest, UnixMillis, forward, is_identifier, ota_upgrade_topic, property_set,
    service_call,
};
use aliot_topic::{
    MessageId, RrpcTopic, SubscriptionIndex, TopicFilter, TopicLimits, TopicName, is_device_topic,
    system_downlink_owner,
};
use bytes::Bytes;
use serde_json::{Map, Value};

use crate::authenticator::{ClientKey, Refusal};
use crate::codec::{PacketId, QoS};
use crate::message::Message;
use crate::server::{CloseReason, Command, Delivery, Event, SessionRequest};
use crate::time::Instant;

mod cluster;
mod consumer_groups;
mod counters;
mod devices;
pub mod durable;
mod gateways;
mod held_acks;
mod rrpc;
mod sessions;
mod trace;

pub use cluster::SessionHandOver;
pub use consumer_groups::{
    BacklogLimits, BacklogMessage, ConsumerGroupConfig, ConsumerId, GroupStats, MessageKinds,
    UnknownConsumerGroup,
};
pub use counters::{
    CloseCounters, Counters, DropCounters, GatewayCounters, RrpcCounters, ServiceCounters,
};
pub use devices::{MAX_DOWNLINK_RESULTS, MAX_DOWNLINK_RESULTS_PER_DEVICE};
pub use gateways::{GatewayReply, NoDirectory, SubDeviceDirectory, SubDeviceRecord};
pub use rrpc::{InvalidRrpcCall, RRPC_TIMEOUT_RANGE_MS, RrpcOutcome};
pub use sessions::{MAX_SUPPRESSED_FILTERS, SessionStats};
pub use trace::{
    DevicePresence, TRACED_PAYLOAD_BYTES, TraceDirection, TraceFilter, TracePage, TracedMessage,
};

use consumer_groups::{BacklogChange, ConsumerGroups, Handed};
use devices::DeviceTable;
use durable::Journal;
use gateways::{AckedOn, Carriers};
use held_acks::{AckTicket, HeldAcks};
use rrpc::{Answer, RrpcCalls};
use sessions::{AUTO_SUBSCRIBED_QOS, InFlight, Queued, Session, SessionId, SessionTable};
use trace::{MessageTrace, Presences};

/// The QoS of the platform's own downlinks (property set, service calls, shadow `control`,
/// OTA pushes; ours): kept in the session of a device briefly away, like any QoS 1 message.
const DOWNLINK_QOS: QoS = QoS::AtLeastOnce;

/// Why a service call could not be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidServiceCall {
    /// The service identifier is not one (letters, digits, `_`; 1–50 characters).
    #[error("service identifier {0:?} is not 1-50 letters, digits or _")]
    Identifier(String),
    /// The synchronous call's RRPC was refused.
    #[error(transparent)]
    Rrpc(#[from] InvalidRrpcCall),
}

/// How far past [`HubConfig::max_queued_messages`] and [`HubConfig::max_queued_bytes`] a queue
/// may grow with messages that hold their publishers' PUBACKs (flow control), as a factor of
/// those limits. Only such a message takes the queue past its limits; any other one brings it
/// back within them, the oldest dropped first.
pub const HELD_QUEUE_FACTOR: usize = 4;

/// What became of a message published from the server side ([`Hub::publish`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerPublished {
    /// The id the platform answers `Pub` with: unique among every id the hub hands out (RRPC
    /// calls, downlinks), across restarts when the hub is durable.
    pub message_id: MessageId,
    /// How many sessions the message reached.
    pub reached: usize,
}

/// Limits of the hub. The defaults are the documented ones (SPEC §1: ours).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubConfig {
    /// QoS 1 deliveries sent to a device and not yet acknowledged, at most (default 32). Never
    /// 0 (nothing would be delivered), and at most 65,535: a packet id per delivery in flight.
    pub inflight_window: NonZeroU16,
    /// Messages a session keeps queued behind the window or while offline (default 1,000).
    /// QoS 1 messages that hold their publishers' PUBACKs may take an online session's queue up
    /// to [`HELD_QUEUE_FACTOR`] times this before the oldest are dropped.
    pub max_queued_messages: usize,
    /// Bytes (topic + payload) a session keeps queued (default 4 MiB); as far as
    /// [`HELD_QUEUE_FACTOR`] times this with messages that hold PUBACKs.
    pub max_queued_bytes: usize,
    /// Messages queued for an online session from which on a QoS 1 message queued behind them
    /// holds its publisher's PUBACK until it leaves the queue (default 100). The same share of
    /// `max_queued_bytes` (10 % by default) counts too. Publishers that wait for their PUBACKs
    /// then slow down to the pace of a subscriber that falls behind, rather than overflow its
    /// queue. Above `max_queued_messages`, nothing is held.
    pub ack_hold_threshold: usize,
    /// The longest a PUBACK is held for a subscriber that falls behind (default 1 s). A
    /// subscriber that has acknowledged nothing for this long holds no more PUBACKs: a stuck
    /// one does not slow its publishers down. Its queue drops the oldest, as an offline one's
    /// does.
    pub max_ack_hold: Duration,
    /// A queued message older than this is dropped instead of delivered (default 7 days).
    pub max_message_age: Option<Duration>,
    /// An offline cleanSession=0 session is discarded after this long (default 7 days).
    pub session_expiry: Option<Duration>,
    /// The first messageId handed out (RRPC calls, downlinks and server-side publishes share
    /// the sequence). An adapter seeds it from the wall clock so ids stay fresh across restarts.
    pub first_rrpc_message_id: u64,
    /// Sub-devices one gateway's connection carries at once, at most (default 2,000, the
    /// platform's; a login beyond is answered 428).
    pub max_sub_devices_per_gateway: usize,
    /// Sub-device logins one gateway's connection may make in a minute (default 6,000, ours:
    /// the platform documents the code, 429, not the number).
    pub max_sub_device_logins_per_minute: u32,
    /// The server-side subscription's consumer groups (none by default: nothing is
    /// forwarded).
    pub consumer_groups: Vec<ConsumerGroupConfig>,
    /// How much each consumer group's backlog may hold.
    pub backlog_limits: BacklogLimits,
    /// How many of the latest messages, connects and disconnects the hub keeps for watchers
    /// ([`Hub::trace_after`]; default 0: none, and the trace costs nothing).
    pub trace_capacity: usize,
    /// Whether the hub is one node of a cluster: it then says which devices' sessions it takes
    /// and lets go ([`HubOutput::Claim`], [`HubOutput::Release`]; default off).
    pub cluster: bool,
}

impl Default for HubConfig {
    fn default() -> Self {
        let week = Duration::from_secs(7 * 24 * 3600);
        HubConfig {
            inflight_window: NonZeroU16::new(32).unwrap_or(NonZeroU16::MIN),
            max_queued_messages: 1_000,
            max_queued_bytes: 4 * 1024 * 1024,
            ack_hold_threshold: 100,
            max_ack_hold: Duration::from_secs(1),
            max_message_age: Some(week),
            session_expiry: Some(week),
            first_rrpc_message_id: 1,
            max_sub_devices_per_gateway: 2_000,
            max_sub_device_logins_per_minute: 6_000,
            consumer_groups: Vec::new(),
            backlog_limits: BacklogLimits::default(),
            trace_capacity: 0,
            cluster: false,
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
    /// Send this message of its group's backlog to this consumer (it had credit for it);
    /// answer with [`Hub::forward_settled`] or [`Hub::forward_released`].
    Forward {
        /// The consumer.
        consumer: ConsumerId,
        /// The message.
        message: alloc::sync::Arc<BacklogMessage>,
        /// Whether a consumer had it before (it went back to the backlog).
        redelivery: bool,
    },
    /// In a cluster: a device connected here, so this node now owns its session. Make it the
    /// owner, and have the previous owner, if any, call [`Hub::hand_over`] (with `discard` for
    /// a clean session) and this hub [`Hub::take_over`] with what it gives.
    Claim {
        /// The device.
        device: DeviceIdentity,
        /// Whether it opened a clean session (what another node kept is discarded).
        clean_session: bool,
    },
    /// In a cluster: the device's session ended here; no node owns it any more.
    Release {
        /// The device.
        device: DeviceIdentity,
    },
    /// In a cluster: the consumer group got its first consumer on this node (`present`), or
    /// lost its last. While it has some, other nodes' relays of the group may bring messages
    /// here ([`Hub::accept_relayed`]); while it has none, this node's relays take its messages
    /// ([`Hub::attach_relay`]).
    ConsumersHere {
        /// The group's id.
        group: alloc::sync::Arc<str>,
        /// Whether it has consumers here now.
        present: bool,
    },
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

/// The broker's shared state. See the [module docs](self).
pub struct Hub {
    config: HubConfig,
    /// Topics the server builds itself (RRPC requests) may be longer than a device's limit.
    server_topic_limits: TopicLimits,
    sessions: SessionTable,
    index: SubscriptionIndex<SessionId, QoS>,
    rrpc: RrpcCalls,
    held_acks: HeldAcks,
    devices: DeviceTable,
    /// The gateways' connections that carry sub-devices.
    carriers: Carriers,
    /// The server-side subscription's groups, backlogs and consumers.
    consumer_groups: ConsumerGroups,
    /// Scratch: messages handed to consumers, and backlog changes for the store.
    handed: Vec<Handed>,
    backlog_changes: Vec<BacklogChange>,
    /// Changes to the durable state not yet taken by the store.
    journal: Journal,
    /// The wall clock as last given ([`Hub::set_wall_clock`]): NTP answers and the times the
    /// services stamp come from it.
    wall_clock: UnixMillis,
    counters: Counters,
    /// The latest messages, for watchers (off unless configured).
    trace: MessageTrace,
    /// Where each device was last seen.
    presences: Presences,
    outputs: alloc::collections::VecDeque<HubOutput>,
    /// Scratch for [`route`](Self::route): the sessions a message reaches.
    targets: Vec<(SessionId, QoS)>,
    /// Scratch for a session going offline: the PUBACKs its queue held.
    released_acks: Vec<(ConnId, PacketId)>,
}

impl core::fmt::Debug for Hub {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Hub")
            .field("sessions", &self.sessions.len())
            .field("connections", &self.sessions.connections())
            .field("pending_rrpc_calls", &self.rrpc.len())
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// An empty hub.
    pub fn new(config: HubConfig) -> Self {
        Hub {
            server_topic_limits: TopicLimits {
                max_len: usize::from(u16::MAX),
            },
            sessions: SessionTable::default(),
            index: SubscriptionIndex::new(),
            rrpc: RrpcCalls::new(config.first_rrpc_message_id),
            held_acks: HeldAcks::default(),
            devices: DeviceTable::default(),
            carriers: Carriers::default(),
            consumer_groups: ConsumerGroups::new(&config.consumer_groups, config.backlog_limits),
            handed: Vec::new(),
            backlog_changes: Vec::new(),
            journal: Journal::default(),
            wall_clock: UnixMillis::default(),
            counters: Counters::default(),
            trace: MessageTrace::new(config.trace_capacity),
            presences: Presences::default(),
            outputs: alloc::collections::VecDeque::new(),
            targets: Vec::new(),
            released_acks: Vec::new(),
            config,
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
        self.sessions.connections()
    }

    /// Sessions kept now (online and offline).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// RRPC calls waiting for a response.
    pub fn pending_rrpc_calls(&self) -> usize {
        self.rrpc.len()
    }

    /// Devices whose connection went away less than a keepalive ago (an RRPC call to one of
    /// them ends `HALFCONN`).
    pub fn half_connected_devices(&self) -> usize {
        self.rrpc.gone_len()
    }

    /// PUBACKs held now for subscribers that fell behind.
    pub fn held_ack_count(&self) -> usize {
        self.held_acks.len()
    }

    /// Whether the hub keeps a session of the device, online or offline.
    pub fn holds_session(&self, device: &DeviceIdentity) -> bool {
        self.session_of_device(device).is_some()
    }

    /// Whether the device has a connection with an open session now.
    pub fn is_online(&self, device: &DeviceIdentity) -> bool {
        self.session_of_device(device)
            .and_then(|sid| self.sessions.get(sid))
            .is_some_and(|session| session.conn.is_some())
    }

    /// Where the device was last seen, if it has connected since the hub started with its
    /// trace on ([`HubConfig::trace_capacity`]).
    pub fn device_presence(&self, device: &DeviceIdentity) -> Option<DevicePresence> {
        self.presences.get(device)
    }

    /// Forgets where a device was seen (it left the registry).
    pub fn forget_device_presence(&mut self, device: &DeviceIdentity) {
        self.presences.forget(device);
    }

    /// Up to `limit` traced entries after sequence number `after` that pass `filter`, the
    /// oldest first, and how many were missed (see [`TracePage`]). Empty unless
    /// [`HubConfig::trace_capacity`] is set.
    pub fn trace_after(&self, after: u64, filter: &TraceFilter, limit: usize) -> TracePage {
        self.trace.after(after, filter, limit)
    }

    /// The sequence number of the trace's newest entry (0: none yet): where a watcher that
    /// wants only what comes next starts asking.
    pub fn trace_last_seq(&self) -> u64 {
        self.trace.last_seq()
    }

    /// The latest `limit` traced entries that pass `filter`, the oldest first.
    pub fn trace_latest(&self, filter: &TraceFilter, limit: usize) -> Vec<TracedMessage> {
        self.trace.latest(filter, limit)
    }

    /// Messages queued for a client's session (waiting behind the window or while offline).
    pub fn queued_messages(&self, key: &ClientKey) -> usize {
        self.session_stats(key).map_or(0, |stats| stats.queued)
    }

    /// What a client's session holds now, if it has one.
    pub fn session_stats(&self, key: &ClientKey) -> Option<SessionStats> {
        let sid = self.sessions.find(key)?;
        self.sessions.get(sid).map(Session::stats)
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<HubOutput> {
        self.outputs.pop_front()
    }

    /// The next deadline, if any: the earliest of the sub-states' (a held PUBACK's limit, an
    /// RRPC call's timeout, the end of a device's half-connected window, an offline session's
    /// expiry). Call [`handle_timeout`](Self::handle_timeout) when it passes.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.held_acks.next_deadline(),
            self.rrpc.next_deadline(),
            self.sessions.next_deadline(),
            self.consumer_groups.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Ends what is due at `now`: PUBACKs held to their limit go out, RRPC calls time out,
    /// half-connected devices become offline, expired offline sessions are discarded.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(ack) = self.held_acks.expire(now) {
            self.counters.acks_held_to_limit += 1;
            self.send_puback(ack);
        }
        while let Some(id) = self.rrpc.expire(now) {
            self.finish_call(id, RrpcOutcome::Timeout);
        }
        while let Some(sid) = self.sessions.expire(now) {
            self.remove_session(sid, true);
        }
        self.expire_backlog(now);
    }

    /// Takes one event of a connection.
    pub fn handle_event(&mut self, conn: ConnId, event: Event, now: Instant) {
        match event {
            Event::SessionRequested(request) => self.open_session(conn, request, now),
            Event::Publish { message, packet_id } => {
                self.counters.messages_in += 1;
                if !self.consumer_groups.is_empty() {
                    self.forward_from(conn, &message, now);
                }
                let sid = self.sessions.of_conn(conn);
                self.trace_from(sid, &message.topic, &message.payload, message.qos);
                let ticket = packet_id.map(|packet_id| self.held_acks.ticket(conn, packet_id));
                self.route(message, ticket, now);
                if let Some(ticket) = ticket
                    && let Some(ack) = self
                        .held_acks
                        .routed(ticket, now + self.config.max_ack_hold)
                {
                    self.send_puback(ack);
                }
            }
            Event::RrpcResponse {
                topic,
                message_id,
                custom,
                payload,
                packet_id,
                sub_device,
            } => {
                self.counters.messages_in += 1;
                let sid = self.session_on(conn, sub_device.as_deref());
                let qos = match packet_id {
                    Some(_) => QoS::AtLeastOnce,
                    None => QoS::AtMostOnce,
                };
                self.trace_from(sid, &topic, &payload, qos);
                self.rrpc_answered(sid, message_id, custom, payload);
                if let Some(packet_id) = packet_id {
                    self.send_puback((conn, packet_id));
                }
            }
            Event::ServiceRequest {
                request,
                message,
                packet_id,
                sub_device,
            } => {
                self.counters.messages_in += 1;
                let sid = self.session_on(conn, sub_device.as_deref());
                self.trace_from(sid, &message.topic, &message.payload, message.qos);
                if let Some(sid) = sid {
                    self.serve(sid, *request, message.qos, now);
                }
                if let Some(packet_id) = packet_id {
                    self.send_puback((conn, packet_id));
                }
                // Whoever subscribed to the topic gets it too, as before the services.
                self.route(message, None, now);
            }
            Event::PublishDenied(_) => self.counters.publish_denied += 1,
            Event::Subscribe(filters) => {
                if let Some(sid) = self.sessions.of_conn(conn) {
                    self.subscribe(sid, filters, now);
                }
            }
            Event::SubDeviceSubscribe {
                sub_device,
                filters,
            } => {
                if let Some(sid) = self.session_on(conn, Some(&sub_device)) {
                    self.subscribe(sid, filters, now);
                }
            }
            Event::SubscribeDenied(_) => self.counters.subscribe_denied += 1,
            Event::Unsubscribe(filters) => {
                if let Some(sid) = self.sessions.of_conn(conn) {
                    self.unsubscribe(sid, filters);
                }
            }
            Event::SubDeviceUnsubscribe {
                sub_device,
                filters,
            } => {
                if let Some(sid) = self.session_on(conn, Some(&sub_device)) {
                    self.unsubscribe(sid, filters);
                }
            }
            Event::GatewayRequest {
                request,
                message,
                packet_id,
            } => {
                // Without a registry no sub-device is known: each request is answered so.
                let reply = self.handle_gateway_request(
                    conn,
                    *request,
                    message,
                    packet_id,
                    &NoDirectory,
                    now,
                );
                if let Some(reply) = reply {
                    self.send_gateway_reply(reply, now);
                }
            }
            Event::DeliveryAcked(packet_id) => {
                let (sid, freed_room) = match self.carriers.acked(conn, packet_id) {
                    AckedOn::Own => (self.sessions.of_conn(conn), false),
                    AckedOn::Carried { sid, freed_room } => (Some(sid), freed_room),
                    AckedOn::Unknown => (None, false),
                };
                if let Some(sid) = sid
                    && let Some(session) = self.sessions.get_mut(sid)
                {
                    if let Some(seq) = session.delivery_acked(packet_id, now) {
                        self.journal.message_removed(&session.key, seq);
                    }
                    self.pump(sid, now);
                }
                if freed_room {
                    // A gateway's connection had no packet id free: its sessions' queues move.
                    let own = self.sessions.of_conn(conn);
                    for waiting in self.carriers.sessions_on(conn, own) {
                        self.pump(waiting, now);
                    }
                }
            }
            Event::DeliveriesDropped(count) => self.counters.dropped.slow_consumer += count,
            // The hub keeps no registry: whoever does answers registrations before the hub
            // sees them (the broker's hub task does). One that reaches the hub is refused.
            Event::RegistrationRequested(_) => self.command(
                conn,
                Command::Refuse(Refusal::registration(RegistrationRefused::Unavailable)),
            ),
            Event::Closed(reason) => {
                self.counters.count_close(&reason);
                self.detach(conn, now);
            }
        }
    }

    /// Publishes a message from the server side (the platform's `Pub` API) to every subscriber.
    /// Says which message id it was given and how many sessions it reached.
    ///
    /// A system downlink of a device (see [`system_downlink_owner`]) also reaches that device
    /// when it asked for the automatic subscription and has no subscription of its own to it.
    pub fn publish(&mut self, message: Message, now: Instant) -> ServerPublished {
        let message_id = self.allocate_message_id();
        let reached = self.route_from_server(message, now);
        ServerPublished {
            message_id,
            reached,
        }
    }

    fn route_from_server(&mut self, message: Message, now: Instant) -> usize {
        self.counters.messages_in += 1;
        let auto = system_downlink_owner(message.topic.as_str())
            .and_then(|(product_key, device_name)| {
                self.session_of_device(&DeviceIdentity::new(product_key, device_name))
            })
            .filter(|sid| {
                self.sessions.get(*sid).is_some_and(|session| {
                    session.subscribed_qos(&message.topic).is_none()
                        && session.auto_subscribed(&message.topic)
                })
            });
        let auto_reached = match auto {
            Some(sid) => {
                self.deliver(sid, &message, AUTO_SUBSCRIBED_QOS, None, now);
                1
            }
            None => 0,
        };
        auto_reached + self.route(message, None, now)
    }

    /// Sends a message from the server to one device, if its ACL lets it subscribe to the topic
    /// and it is subscribed (QoS is the lower of `message.qos` and the subscription's).
    pub fn publish_to_device(
        &mut self,
        device: &DeviceIdentity,
        message: Message,
        now: Instant,
    ) -> DeviceDelivery {
        let Some((sid, session)) = self
            .session_of_device(device)
            .and_then(|sid| Some((sid, self.sessions.get(sid)?)))
        else {
            return DeviceDelivery::Offline;
        };
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
    /// messageId and later yields exactly one [`HubOutput::RrpcOutcome`] for it. With `topic`
    /// (one of the device's own, see [`is_device_topic`]), the custom-topic form
    /// `/ext/rrpc/{messageId}{topic}` is used.
    pub fn rrpc_call(
        &mut self,
        device: &DeviceIdentity,
        payload: Bytes,
        timeout: Duration,
        topic: Option<&TopicName>,
        now: Instant,
    ) -> Result<MessageId, InvalidRrpcCall> {
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        if !RRPC_TIMEOUT_RANGE_MS.contains(&timeout_ms) {
            return Err(InvalidRrpcCall::InvalidTimeout(timeout_ms));
        }
        if let Some(topic) = topic
            && !is_device_topic(topic.as_str(), &device.product_key, &device.device_name)
        {
            return Err(InvalidRrpcCall::NotDeviceTopic(topic.as_str().to_string()));
        }
        let id = self.allocate_message_id();
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
            .map_err(|_| InvalidRrpcCall::InvalidTopic)?;

        let key = ClientKey::Device(device.clone());
        let online = self
            .sessions
            .find(&key)
            .and_then(|sid| Some((sid, self.sessions.get(sid)?)))
            .filter(|(_, session)| session.conn.is_some());
        let Some((sid, session)) = online else {
            let outcome = if self.rrpc.is_half_connected(&key, now) {
                RrpcOutcome::HalfConn
            } else {
                RrpcOutcome::Offline
            };
            self.finish_call(id, outcome);
            return Ok(id);
        };
        // A client of the `ext` form (C SDK 4.x, Python) takes a custom-topic call on the plain
        // topic it subscribed to.
        let listens = session.granted_qos(&request).is_some()
            || (session.features.rrpc_ext
                && topic.is_some_and(|topic| session.granted_qos(topic).is_some()));
        if !listens {
            // Connected but not listening for requests: the platform's HALFCONN (ours).
            self.finish_call(id, RrpcOutcome::HalfConn);
            return Ok(id);
        }
        self.rrpc
            .start(id, device.clone(), topic.is_some(), now + timeout);
        self.deliver(
            sid,
            &Message::new(request, payload, QoS::AtMostOnce),
            QoS::AtMostOnce,
            None,
            now,
        );
        Ok(id)
    }

    /// The wall clock now: NTP answers and the times the services stamp (property times the
    /// device did not give, shadow metadata, downlink results) use the last value given. The
    /// adapter gives it before each batch of inputs; core reads no clock.
    pub fn set_wall_clock(&mut self, now: UnixMillis) {
        self.wall_clock = now;
    }

    /// What the platform keeps of a device (latest properties, tags, desired values, shadow,
    /// OTA modules), if it has used a service or been sent one.
    pub fn device_state(&self, device: &DeviceIdentity) -> Option<&DeviceState> {
        self.devices.get(device)
    }

    /// Devices the platform keeps service state of.
    pub fn device_states(&self) -> usize {
        self.devices.len()
    }

    /// The devices' latest answers to the platform's downlinks (property set, service calls),
    /// oldest first, at most [`MAX_DOWNLINK_RESULTS`].
    pub fn downlink_results(&self) -> impl Iterator<Item = &(DeviceIdentity, DownlinkResult)> {
        self.devices.results()
    }

    /// Sets properties of an online device (the platform's `SetDeviceProperty`): the property
    /// set downlink on `/sys/{pk}/{dn}/thing/service/property/set`. Returns the message id
    /// (the downlink's `id`) and what became of it: a device that is not online is not sent
    /// one ([`DeviceDelivery::Offline`]). Its answer becomes a downlink result.
    pub fn set_device_property(
        &mut self,
        device: &DeviceIdentity,
        items: &Value,
        now: Instant,
    ) -> (MessageId, DeviceDelivery) {
        let id = self.allocate_message_id();
        let Some(sid) = self.online_session(device) else {
            return (id, DeviceDelivery::Offline);
        };
        let downlink = property_set(&device.product_key, &device.device_name, id.0, items);
        self.counters.messages_in += 1;
        (id, self.send_downlink(sid, downlink, DOWNLINK_QOS, now))
    }

    /// Calls a service of an online device asynchronously (the platform's
    /// `InvokeThingService` for an asynchronous service): the downlink on
    /// `/sys/{pk}/{dn}/thing/service/{identifier}`; its answer becomes a downlink result.
    pub fn invoke_service(
        &mut self,
        device: &DeviceIdentity,
        identifier: &str,
        args: &Value,
        now: Instant,
    ) -> Result<(MessageId, DeviceDelivery), InvalidServiceCall> {
        if !is_identifier(identifier) {
            return Err(InvalidServiceCall::Identifier(identifier.into()));
        }
        let id = self.allocate_message_id();
        let Some(sid) = self.online_session(device) else {
            return Ok((id, DeviceDelivery::Offline));
        };
        let call = service_call(
            &device.product_key,
            &device.device_name,
            id.0,
            identifier,
            args,
        );
        self.counters.messages_in += 1;
        Ok((id, self.send_downlink(sid, call, DOWNLINK_QOS, now)))
    }

    /// Calls a service of a device synchronously: an RRPC call (ending in one
    /// [`HubOutput::RrpcOutcome`], its payload the device's Alink reply) in the device's wire
    /// form (PLATFORM-PROTOCOLS §1.5): `/ext/rrpc/{id}/sys/{pk}/{dn}/thing/service/{identifier}`
    /// for a client that asked for it (`ext` bit 0), else `/sys/{pk}/{dn}/rrpc/request/{id}`.
    pub fn invoke_service_sync(
        &mut self,
        device: &DeviceIdentity,
        identifier: &str,
        args: &Value,
        timeout: Duration,
        now: Instant,
    ) -> Result<MessageId, InvalidServiceCall> {
        if !is_identifier(identifier) {
            return Err(InvalidServiceCall::Identifier(identifier.into()));
        }
        let body_id = self.allocate_message_id();
        let call = service_call(
            &device.product_key,
            &device.device_name,
            body_id.0,
            identifier,
            args,
        );
        let ext = self
            .online_session(device)
            .and_then(|sid| self.sessions.get(sid))
            .is_some_and(|session| session.features.rrpc_ext);
        let topic = match ext {
            true => Some(
                TopicName::new(&call.topic, &self.server_topic_limits)
                    .map_err(|_| InvalidRrpcCall::InvalidTopic)?,
            ),
            false => None,
        };
        Ok(self.rrpc_call(
            device,
            Bytes::from(call.payload),
            timeout,
            topic.as_ref(),
            now,
        )?)
    }

    /// Sets desired property values of a device (the platform's `SetDeviceDesiredProperty`);
    /// the device reads them with `thing/property/desired/get`.
    pub fn set_desired_properties(
        &mut self,
        device: &DeviceIdentity,
        items: &Map<String, Value>,
    ) -> Result<(), AlinkCode> {
        self.journal.device_touched(device);
        self.devices.state_mut(device).set_desired(items)
    }

    /// Updates a device's shadow from the server side (the platform's `UpdateDeviceShadow`):
    /// on success the shadow's new version, and the `control` push to the device if it is
    /// online.
    pub fn update_device_shadow(
        &mut self,
        device: &DeviceIdentity,
        request: &ShadowRequest,
        now: Instant,
    ) -> Result<(u64, DeviceDelivery), ShadowCode> {
        self.journal.device_touched(device);
        let state = self.devices.state_mut(device);
        let push = state.update_shadow(request, self.wall_clock)?;
        let version = state.shadow().version();
        let delivery = match self.online_session(device) {
            Some(sid) => self.send_downlink(sid, push, DOWNLINK_QOS, now),
            None => DeviceDelivery::Offline,
        };
        Ok((version, delivery))
    }

    /// Starts an upgrade of one of a device's modules: pushed now if the device is online,
    /// and again each time it comes online, until it reports the new version or a failed step.
    pub fn start_ota(
        &mut self,
        device: &DeviceIdentity,
        job: OtaJob,
        now: Instant,
    ) -> DeviceDelivery {
        self.journal.device_touched(device);
        let push = self.devices.state_mut(device).start_ota(job);
        match self.online_session(device) {
            Some(sid) => self.send_downlink(sid, push, DOWNLINK_QOS, now),
            None => DeviceDelivery::Offline,
        }
    }

    /// The server side disabled or deleted a device: its connection, if any, is closed
    /// ([`CloseReason::DeviceDisabled`]), and with `discard_session` its session goes too (a
    /// deleted device), with what it holds. Returns whether it was online.
    pub fn disconnect_device(
        &mut self,
        device: &DeviceIdentity,
        discard_session: bool,
        now: Instant,
    ) -> bool {
        let Some(sid) = self.session_of_device(device) else {
            return false;
        };
        // Offline from now, as if its connection had gone: its close comes later and finds no
        // session attached. A sub-device is logged out of its gateway's connection.
        let conn = self.unplug(sid, CloseReason::DeviceDisabled, now);
        if conn.is_some() {
            self.went_offline(sid, now);
        }
        if discard_session {
            self.remove_session(sid, true);
        }
        conn.is_some()
    }

    /// Closes every connection (reason: server shutdown) and ends pending RRPC calls as
    /// `UNKNOWN`. Kept sessions stay, to be resumed if the hub keeps running.
    pub fn shutdown(&mut self) {
        let conns: Vec<ConnId> = self.sessions.conns().collect();
        for conn in conns {
            self.command(conn, Command::Close(CloseReason::ServerShutdown));
        }
        self.held_acks.clear();
        let calls: Vec<MessageId> = self.rrpc.drain().collect();
        for id in calls {
            self.finish_call(id, RrpcOutcome::Unknown);
        }
    }

    fn open_session(&mut self, conn: ConnId, request: SessionRequest, now: Instant) {
        let (sid, session_present) = self.take_session(&request, now);
        self.sessions.attach(sid, conn, now);
        self.counters.connections_accepted += 1;
        let clean_session = request.clean_session;
        self.command(conn, Command::SessionOpened { session_present });
        self.resume(sid, conn, request, session_present, now);
        self.claim(sid, clean_session);
    }

    /// The session a client opens: its kept one (taken from the connection it was attached to),
    /// or a new one; and whether it was kept. Not attached yet.
    fn take_session(&mut self, request: &SessionRequest, now: Instant) -> (SessionId, bool) {
        let existing = match &*request.key {
            ClientKey::Anonymous => None,
            key => self.sessions.find(key),
        };
        let Some(sid) = existing else {
            return (self.sessions.insert(Session::new(request, now)), false);
        };
        if self.unplug(sid, CloseReason::TakenOver, now).is_some() {
            self.counters.takeovers += 1;
            // Its old connection ended: offline, before the new one's online.
            self.status_changed(sid, false, now);
        }
        let kept_clean = self.sessions.get(sid).is_none_or(|session| session.clean);
        if request.clean_session || kept_clean {
            // A new session follows at once, claimed again: not released.
            self.remove_session(sid, false);
            (self.sessions.insert(Session::new(request, now)), false)
        } else {
            (sid, true)
        }
    }

    /// A session just attached to `conn` takes the request's terms; a kept one sends again
    /// what it had in flight and what it queued, and pending upgrades are pushed.
    fn resume(
        &mut self,
        sid: SessionId,
        conn: ConnId,
        request: SessionRequest,
        session_present: bool,
        now: Instant,
    ) {
        self.rrpc.device_back(&request.key);
        let Some(session) = self.sessions.get_mut(sid) else {
            return;
        };
        session.acl = request.acl;
        session.clean = request.clean_session;
        session.keep_alive = request.keep_alive;
        session.features = request.features;
        session.client_ip = request.client_ip;
        session.iot_id = request.iot_id;
        session.last_seen = self.wall_clock;
        if !session.clean {
            self.journal.session_touched(&session.key);
        }
        if session_present {
            // Unacknowledged deliveries first, with DUP, in their original order; then the queue.
            for sent in &session.inflight {
                self.counters.messages_out += 1;
                self.outputs.push_back(HubOutput::Connection {
                    conn,
                    command: Command::Deliver(Delivery {
                        message: sent.message.clone(),
                        packet_id: Some(sent.packet_id),
                        dup: true,
                    }),
                });
            }
            self.pump(sid, now);
        }
        self.status_changed(sid, true, now);
        // Upgrades not yet done are pushed again each time the device comes online (§6).
        self.push_pending_ota(sid, now);
    }

    /// Takes the session's connection from it (a takeover, a disabled device): a connection of
    /// its own is closed with `reason`, and the sub-devices it carried go offline; a gateway's
    /// connection that carried it stops carrying it. Returns that connection, if it had one.
    fn unplug(&mut self, sid: SessionId, reason: CloseReason, now: Instant) -> Option<ConnId> {
        let carried = self.sessions.is_carried(sid);
        let conn = self.sessions.take_conn(sid)?;
        if carried {
            self.stop_carrying(conn, sid);
        } else {
            self.command(conn, Command::Close(reason));
            self.drop_carried(conn, now);
        }
        Some(conn)
    }

    /// Filters granted to a session (its device's own, or a sub-device's through its gateway).
    fn subscribe(&mut self, sid: SessionId, filters: Vec<(TopicFilter, QoS)>, now: Instant) {
        // A device without the automatic subscription gets its pending upgrades once
        // it subscribes to their topic (the push at CONNACK found no subscription).
        let upgrades = self.ota_topic_with_pending_jobs(sid);
        let listened = upgrades
            .as_ref()
            .is_some_and(|topic| self.listens(sid, topic));
        if let Some(session) = self.sessions.get_mut(sid) {
            for (filter, qos) in filters {
                self.index.insert(&filter, sid, qos);
                session.subscribed(&filter);
                session.subscriptions.insert(filter, qos);
            }
            if !session.clean {
                self.journal.session_touched(&session.key);
            }
        }
        if let Some(topic) = upgrades
            && !listened
            && self.listens(sid, &topic)
        {
            self.push_pending_ota(sid, now);
        }
    }

    /// Filters a session unsubscribed from.
    fn unsubscribe(&mut self, sid: SessionId, filters: Vec<TopicFilter>) {
        let Some(session) = self.sessions.get_mut(sid) else {
            return;
        };
        for filter in filters {
            if session.subscriptions.remove(&filter).is_some() {
                self.index.remove(&filter, &sid);
            }
            session.unsubscribed(&filter);
        }
        if !session.clean {
            self.journal.session_touched(&session.key);
        }
    }

    /// The session an event of `conn` is for: the connection's own, or the sub-device's it
    /// carries (`None` for one it no longer carries).
    fn session_on(&self, conn: ConnId, sub_device: Option<&ClientKey>) -> Option<SessionId> {
        match sub_device {
            None => self.sessions.of_conn(conn),
            Some(key) => self.sessions.find(key).filter(|sid| {
                self.sessions
                    .get(*sid)
                    .is_some_and(|session| session.conn == Some(conn))
            }),
        }
    }

    /// The device's OTA upgrade topic, if it has upgrades not yet done.
    fn ota_topic_with_pending_jobs(&self, sid: SessionId) -> Option<TopicName> {
        let device = self.sessions.get(sid)?.key.device()?;
        if !self.devices.get(device)?.has_pending_ota() {
            return None;
        }
        let topic = ota_upgrade_topic(&device.product_key, &device.device_name);
        TopicName::from_bytes(Bytes::from(topic.into_bytes()), &self.server_topic_limits).ok()
    }

    /// Whether the session gets `topic` (by a subscription or the automatic one).
    fn listens(&self, sid: SessionId, topic: &TopicName) -> bool {
        self.sessions
            .get(sid)
            .is_some_and(|session| session.granted_qos(topic).is_some())
    }

    /// Pushes the device's upgrades not yet done, but those its session still holds (a
    /// resumed session re-sends its unacknowledged ones itself).
    fn push_pending_ota(&mut self, sid: SessionId, now: Instant) {
        let Some(session) = self.sessions.get(sid) else {
            return;
        };
        let pushes = session
            .key
            .device()
            .and_then(|device| self.devices.get(device))
            .map(DeviceState::pending_ota_pushes)
            .unwrap_or_default();
        let held = |push: &Downlink| {
            let same = |message: &Message| {
                message.topic.as_str() == push.topic && message.payload[..] == push.payload[..]
            };
            session.inflight.iter().any(|sent| same(&sent.message))
                || session.queue.iter().any(|queued| same(&queued.message))
        };
        let fresh: Vec<Downlink> = pushes.into_iter().filter(|push| !held(push)).collect();
        for push in fresh {
            self.send_downlink(sid, push, DOWNLINK_QOS, now);
        }
    }

    /// `conn` closed: its session and the sub-devices it carried go offline.
    fn detach(&mut self, conn: ConnId, now: Instant) {
        self.drop_carried(conn, now);
        if let Some(sid) = self.sessions.detach(conn) {
            self.went_offline(sid, now);
        }
    }

    /// Keeps a message a session's client published, for watchers.
    fn trace_from(&mut self, sid: Option<SessionId>, topic: &TopicName, payload: &Bytes, qos: QoS) {
        if !self.trace.is_on() {
            return;
        }
        if let Some(session) = sid.and_then(|sid| self.sessions.get(sid)) {
            let at = self.wall_clock;
            self.trace.message(
                TraceDirection::FromClient,
                &session.key,
                topic,
                payload,
                qos,
                at,
            );
        }
    }

    /// A session came online or went offline: where its device was seen is kept, watchers
    /// see it, and the consumer groups are told (PLATFORM-PROTOCOLS §9.1).
    fn status_changed(&mut self, sid: SessionId, online: bool, now: Instant) {
        // Both are for watchers: without the trace, no record per device is kept for them.
        if self.trace.is_on()
            && let Some(session) = self.sessions.get(sid)
        {
            let at = self.wall_clock;
            if let Some(device) = session.key.device() {
                if online {
                    self.presences.connected(device, session.client_ip, at);
                } else {
                    self.presences.disconnected(device, at);
                }
            }
            let direction = if online {
                TraceDirection::Connected
            } else {
                TraceDirection::Disconnected
            };
            self.trace.presence(direction, &session.key, at);
        }
        if !self.consumer_groups.is_empty() {
            self.forward_status(sid, online, now);
        }
    }

    /// A session lost its connection: a clean one ends; a kept one waits (its queue a store
    /// for later) until it expires.
    fn went_offline(&mut self, sid: SessionId, now: Instant) {
        self.status_changed(sid, false, now);
        let Some(session) = self.sessions.get(sid) else {
            return;
        };
        self.rrpc
            .device_gone(&session.key, now + session.keep_alive);
        if session.clean {
            self.remove_session(sid, true);
            return;
        }
        // Its queue is a store for later now: its publishers wait no longer.
        self.release_queue_holds(sid);
        if let Some(session) = self.sessions.get_mut(sid) {
            session.offline_since = Some(self.wall_clock);
            self.journal.session_touched(&session.key);
        }
        if let Some(expiry) = self.config.session_expiry {
            self.sessions.expire_at(sid, now + expiry);
        }
    }

    /// Answers a device's service request (parsed by its connection) and keeps what it
    /// changes: the reply goes back with the request's QoS (or the subscription's, if lower).
    fn serve(&mut self, sid: SessionId, request: DeviceMessage, qos: QoS, now: Instant) {
        // The key, not the device's name, is copied (a count): forwarding needs the whole hub.
        let Some(key) = self
            .sessions
            .get(sid)
            .map(|session| alloc::sync::Arc::clone(&session.key))
        else {
            return;
        };
        let Some(device) = key.device() else {
            return;
        };
        self.counters.services.requests += 1;
        if matches!(
            request,
            DeviceMessage::Alink(_)
                | DeviceMessage::Shadow(_)
                | DeviceMessage::OtaReport(_)
                | DeviceMessage::OtaProgress(_)
        ) {
            self.journal.device_touched(device);
        }
        // What the device reports is made for the server-side subscription only if a
        // consumer group takes it.
        let forwarded = MessageKinds::THING_MODEL
            .with(MessageKinds::OTA)
            .with(MessageKinds::DOWNLINK_RESULT);
        let reported = self.consumer_groups.wants(forwarded, &device.product_key);
        let state = self.devices.state_mut(device);
        let handled = match reported {
            true => state.handle_reported(request, self.wall_clock),
            false => state.handle(request, self.wall_clock),
        };
        if handled.malformed {
            self.counters.services.malformed += 1;
        }
        if let Some(report) = handled.report {
            let kind = match report.is_ota() {
                true => MessageKinds::OTA,
                false => MessageKinds::THING_MODEL,
            };
            let iot_id = String::from(self.session_iot_id(sid));
            self.forward_platform(kind, &device.product_key, now, |at| {
                forward::report(device, &iot_id, &report, at)
            });
        }
        if let Some(result) = handled.result {
            self.counters.services.downlink_results += 1;
            if reported {
                let iot_id = String::from(self.session_iot_id(sid));
                self.forward_platform(
                    MessageKinds::DOWNLINK_RESULT,
                    &device.product_key,
                    now,
                    |_| forward::downlink_result(device, &iot_id, &result),
                );
            }
            if self.devices.push_result(device.clone(), result) {
                self.counters.services.downlink_results_dropped += 1;
            }
        }
        if let Some(reply) = handled.reply {
            self.send_downlink(sid, reply, qos, now);
        }
    }

    /// Sends a service's message to a device's session, if it subscribed to the topic or the
    /// automatic subscription reaches it; QoS 0 is not kept for an offline session.
    fn send_downlink(
        &mut self,
        sid: SessionId,
        downlink: Downlink,
        qos: QoS,
        now: Instant,
    ) -> DeviceDelivery {
        // The topic's bytes change hands: no copy per reply.
        let topic = Bytes::from(downlink.topic.into_bytes());
        let Ok(topic) = TopicName::from_bytes(topic, &self.server_topic_limits) else {
            return DeviceDelivery::Denied;
        };
        let message = Message::new(topic, Bytes::from(downlink.payload), qos);
        let Some(session) = self.sessions.get(sid) else {
            return DeviceDelivery::Offline;
        };
        let Some(granted) = session.granted_qos(&message.topic) else {
            self.counters.services.not_subscribed += 1;
            return DeviceDelivery::NotSubscribed;
        };
        if session.conn.is_none() && qos.min(granted) == QoS::AtMostOnce {
            self.counters.dropped.offline_qos0 += 1;
            return DeviceDelivery::NotSubscribed;
        }
        self.deliver(sid, &message, granted, None, now)
    }

    /// The device's session, if a connection is attached to it.
    fn online_session(&self, device: &DeviceIdentity) -> Option<SessionId> {
        self.session_of_device(device).filter(|sid| {
            self.sessions
                .get(*sid)
                .is_some_and(|session| session.conn.is_some())
        })
    }

    /// A device answered an RRPC call: the call ends (or the answer is counted as late or
    /// unknown). Answers are for the platform, never routed: routing a custom-topic answer
    /// would hand it back to the device as a new request.
    fn rrpc_answered(
        &mut self,
        sid: Option<SessionId>,
        id: MessageId,
        custom: bool,
        payload: Bytes,
    ) {
        let device = sid
            .and_then(|sid| self.sessions.get(sid))
            .and_then(|session| session.key.device());
        let answer = match device {
            Some(device) => self.rrpc.answer(id, device, custom),
            None => Answer::Unknown,
        };
        match answer {
            Answer::Matched => self.finish_call(id, RrpcOutcome::Success(payload)),
            Answer::Late => self.counters.rrpc.late_responses += 1,
            Answer::Unknown => self.counters.rrpc.unknown_responses += 1,
        }
    }

    /// Delivers to every matching subscription, once per session at the highest granted QoS.
    /// A queue that falls behind holds `ticket`'s PUBACK.
    fn route(&mut self, message: Message, ticket: Option<AckTicket>, now: Instant) -> usize {
        let mut targets = mem::take(&mut self.targets);
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
        self.targets = targets;
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
        let window = usize::from(self.config.inflight_window.get());
        let Some(session) = self.sessions.get_mut(sid) else {
            return DeviceDelivery::Offline;
        };
        if self.trace.is_on() && (session.conn.is_some() || qos == QoS::AtLeastOnce) {
            let at = self.wall_clock;
            self.trace.message(
                TraceDirection::ToClient,
                &session.key,
                &message.topic,
                &message.payload,
                qos,
                at,
            );
        }
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
                let seq = match session.clean {
                    true => 0,
                    false => self.journal.message_saved(
                        &session.key,
                        &message.topic,
                        &message.payload,
                        self.wall_clock,
                    ),
                };
                let sendable =
                    conn.filter(|_| session.queue.is_empty() && session.inflight.len() < window);
                if let Some(conn) = sendable
                    && let Some(packet_id) = self.carriers.packet_id(conn, sid, session)
                {
                    session.inflight.push_back(InFlight {
                        packet_id,
                        message: message.clone(),
                        seq,
                    });
                    self.counters.messages_out += 1;
                    let delivery = Delivery {
                        message,
                        packet_id: Some(packet_id),
                        dup: false,
                    };
                    self.command(conn, Command::Deliver(delivery));
                    DeviceDelivery::Sent
                } else {
                    self.enqueue(sid, message, seq, ticket, now);
                    DeviceDelivery::Queued
                }
            }
        }
    }

    /// Queues a message (kept in the store at `seq`, 0 if not) behind the session's window.
    fn enqueue(
        &mut self,
        sid: SessionId,
        message: Message,
        seq: u64,
        ticket: Option<AckTicket>,
        now: Instant,
    ) {
        let (max_messages, max_bytes, hold_from, max_hold) = (
            self.config.max_queued_messages,
            self.config.max_queued_bytes,
            self.config.ack_hold_threshold,
            self.config.max_ack_hold,
        );
        let Some(session) = self.sessions.get_mut(sid) else {
            return;
        };
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
        session.push_queued(Queued {
            message,
            at: now,
            hold,
            seq,
            dup: false,
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
        while session.queue.len() > max_messages || session.queued_bytes > max_bytes {
            let Some(dropped) = session.pop_queued() else {
                break;
            };
            self.journal.message_removed(&session.key, dropped.seq);
            self.counters.dropped.queue_full += 1;
        }
    }

    /// Every message of the session's queue lets go of the PUBACK it holds.
    fn release_queue_holds(&mut self, sid: SessionId) {
        let Some(session) = self.sessions.get_mut(sid) else {
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
        self.command(conn, Command::AckPublish(packet_id));
    }

    /// Moves queued messages into the window while it has room and the device is online. Each
    /// message that leaves the queue lets go of the PUBACK it held: that PUBACK and the
    /// delivery go out in the order they happen (which connection runs first is the adapter's
    /// choice).
    fn pump(&mut self, sid: SessionId, now: Instant) {
        let window = usize::from(self.config.inflight_window.get());
        let max_age = self.config.max_message_age;
        // The session, the holds, the outputs and the counters are separate fields: one pass.
        let Some(session) = self.sessions.get_mut(sid) else {
            return;
        };
        let Some(conn) = session.conn else {
            return;
        };
        while session.inflight.len() < window && self.carriers.has_room(conn) {
            let Some(mut queued) = session.pop_queued() else {
                break;
            };
            if let Some((publisher, packet_id)) = queued
                .hold
                .take()
                .and_then(|hold| self.held_acks.release(hold))
            {
                self.outputs.push_back(HubOutput::Connection {
                    conn: publisher,
                    command: Command::AckPublish(packet_id),
                });
            }
            if max_age.is_some_and(|age| now - queued.at > age) {
                self.journal.message_removed(&session.key, queued.seq);
                self.counters.dropped.expired += 1;
                continue;
            }
            // `has_room` said an id is free.
            let Some(packet_id) = self.carriers.packet_id(conn, sid, session) else {
                session.push_queued_front(queued);
                break;
            };
            session.inflight.push_back(InFlight {
                packet_id,
                message: queued.message.clone(),
                seq: queued.seq,
            });
            self.counters.messages_out += 1;
            self.outputs.push_back(HubOutput::Connection {
                conn,
                command: Command::Deliver(Delivery {
                    message: queued.message,
                    packet_id: Some(packet_id),
                    dup: queued.dup,
                }),
            });
        }
    }

    /// A fresh messageId for an RRPC call or a downlink; the store reserves them ahead.
    fn allocate_message_id(&mut self) -> MessageId {
        let id = self.rrpc.allocate_id();
        self.journal.rrpc_id_used(id.0);
        id
    }

    fn finish_call(&mut self, id: MessageId, outcome: RrpcOutcome) {
        self.counters.rrpc.count_outcome(&outcome);
        self.outputs
            .push_back(HubOutput::RrpcOutcome { id, outcome });
    }

    fn command(&mut self, conn: ConnId, command: Command) {
        self.outputs
            .push_back(HubOutput::Connection { conn, command });
    }

    fn session_of_device(&self, device: &DeviceIdentity) -> Option<SessionId> {
        // One allocation per server-side call (not per routed message).
        self.sessions.find(&ClientKey::Device(device.clone()))
    }

    /// Discards a session with what it holds: its subscriptions leave the index, its queue's
    /// holds are released, its messages are counted as discarded. With `released`, a
    /// cluster's adapter is told nobody holds it now.
    fn remove_session(&mut self, sid: SessionId, released: bool) {
        let Some(session) = self.sessions.remove(sid) else {
            return;
        };
        if released {
            self.release(&session.key);
        }
        if !session.clean {
            self.journal.session_removed(&session.key);
        }
        for filter in session.subscriptions.keys() {
            self.index.remove(filter, &sid);
        }
        self.counters.dropped.session_discarded +=
            (session.queue.len() + session.inflight.len()) as u64;
        for queued in session.queue {
            if let Some(ack) = queued.hold.and_then(|hold| self.held_acks.release(hold)) {
                self.send_puback(ack);
            }
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
