//! Random sequences of what connections and the server can do to the hub (connect, take over,
//! subscribe, publish, acknowledge, drop, wait, call RRPC), checked after every step against a
//! model of the sessions:
//!
//! - conservation: every QoS 1 message the hub accepted into a session is acknowledged by the
//!   device, still held by the session (in flight or queued), or counted as dropped; never
//!   silently lost;
//! - every RRPC call ends with exactly one outcome;
//! - a device's QoS 1 PUBLISH gets exactly one PUBACK from the hub, held at most
//!   `max_ack_hold`;
//! - no queue grows past `HELD_QUEUE_FACTOR` times its limits;
//! - the automatic subscription (`_ss=1`) reaches exactly what the model says: a device's own
//!   system downlinks, unless a filter it unsubscribed from matches them (replies to its
//!   property posts, the server's publishes on its `/sys/` topics), each counted in the
//!   conservation above when it goes at QoS 1;
//! - durability: the hub's changes are committed to a store after every step, and a crash
//!   (the hub dropped with its connections and calls, a new one restored from the store) gives
//!   back every cleanSession=0 session with exactly the QoS 1 messages it held, and its
//!   subscriptions; clean sessions are gone.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use aliot_auth::DeviceIdentity;
use aliot_core::codec::{PacketId, QoS};
use aliot_core::hub::durable::StoreImage;
use aliot_core::hub::{
    ConnId, HELD_QUEUE_FACTOR, Hub, HubConfig, HubOutput, TRACED_PAYLOAD_BYTES, TraceFilter,
};
use aliot_core::server::{CloseReason, Command, Event, SessionRequest};
use aliot_core::{ClientFeatures, ClientKey, Instant, Message};
use aliot_services::DeviceMessage;
use aliot_topic::{Acl, MessageId, TopicFilter, TopicName};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

const DEVICES: [&str; 3] = ["d0", "d1", "d2"];
const MAX_QUEUED_MESSAGES: usize = 3;
const MAX_QUEUED_BYTES: usize = 100;
const FILTERS: [&str; 8] = [
    "/pk/d0/user/get",
    "/pk/+/user/get",
    "/broadcast/pk/#",
    "#",
    "/sys/pk/d0/rrpc/request/+",
    "/sys/pk/d1/rrpc/request/+",
    "/pk/d1/+/get",
    "/broadcast/pk/+",
];
const TOPICS: [&str; 7] = [
    "/pk/d0/user/get",
    "/pk/d1/user/get",
    "/pk/d2/user/get",
    "/broadcast/pk/a",
    "/broadcast/pk/b/c",
    "/sys/pk/d2/thing/service/property/set",
    "/sys/pk/d0/thing/config/push",
];

const MAX_ACK_HOLD: Duration = Duration::from_secs(5);
/// Entries the hub's trace keeps: small, so that the ring wraps often.
const TRACE_CAPACITY: usize = 64;

#[derive(Default)]
struct ModelSession {
    clean: bool,
    subscriptions: BTreeMap<usize, QoS>,
    /// The client id asked for the automatic subscription.
    auto: bool,
    /// Filters unsubscribed from while automatically subscribed.
    suppressed: BTreeSet<usize>,
}

/// Whether a filter can match a system downlink (an UNSUBSCRIBE of it suppresses those).
fn may_match_downlinks(filter: &str) -> bool {
    filter.starts_with(['+', '#'])
        || matches!(
            filter.split('/').nth(1).unwrap_or_default(),
            "sys" | "shadow" | "ota" | "ext" | "+" | "#"
        )
}

impl ModelSession {
    /// The QoS `topic` reaches device `device`'s session with: its subscriptions', else the
    /// automatic subscription's (server-side messages only), if any.
    fn granted(&self, device: usize, topic: &TopicName, server: bool) -> Option<QoS> {
        let subscribed = self
            .subscriptions
            .iter()
            .filter(|(f, _)| TopicFilter::from_static(FILTERS[**f]).matches(topic))
            .map(|(_, q)| *q)
            .max();
        let own = topic
            .as_str()
            .starts_with(&format!("/sys/pk/{}/", DEVICES[device]));
        let suppressed = self
            .suppressed
            .iter()
            .any(|f| TopicFilter::from_static(FILTERS[*f]).matches(topic));
        subscribed.or((server && self.auto && own && !suppressed).then_some(QoS::AtLeastOnce))
    }
}

#[derive(Default)]
struct Link {
    conn: Option<ConnId>,
    /// QoS 1 deliveries received on the live connection and not yet acknowledged.
    unacked: Vec<PacketId>,
    /// RRPC requests received on the live connection.
    requests: Vec<MessageId>,
    /// QoS 1 PUBLISHes sent on the live connection and not yet acknowledged, and when.
    awaiting_puback: Vec<(PacketId, Instant)>,
    next_packet_id: u16,
}

struct World {
    hub: Hub,
    config: HubConfig,
    /// What the store has committed.
    store: StoreImage,
    now: Instant,
    next_conn: u64,
    sessions: BTreeMap<usize, ModelSession>,
    links: [Link; 3],
    owed: u64,
    acked: u64,
    pending_calls: BTreeSet<MessageId>,
}

fn key(device: usize) -> ClientKey {
    ClientKey::Device(DeviceIdentity::new("pk", DEVICES[device]))
}

impl World {
    fn conn_of(&self, conn: ConnId) -> Option<usize> {
        self.links.iter().position(|l| l.conn == Some(conn))
    }

    /// Commits the hub's changes: what happened so far is on disk.
    fn commit(&mut self) {
        let mut changes = Vec::new();
        self.hub.take_store_changes(&mut changes);
        for change in changes {
            self.store.apply(change);
        }
    }

    /// The process dies after a commit and starts again from its store.
    fn crash(&mut self) {
        self.commit();
        let held = |hub: &Hub, d: usize| {
            hub.session_stats(&key(d))
                .map(|s| (s.inflight + s.queued, s.subscriptions))
        };
        let before: Vec<_> = (0..DEVICES.len())
            .map(|d| held(&self.hub, d).filter(|_| self.sessions.get(&d).is_some_and(|s| !s.clean)))
            .collect();
        let mut hub = Hub::new(self.config.clone());
        hub.record_store_changes();
        hub.restore(&self.store, |_| Acl::open(), self.now);
        self.hub = hub;
        self.commit();
        self.links = Default::default();
        self.sessions.retain(|_, session| !session.clean);
        self.pending_calls.clear();
        for (d, before) in before.iter().enumerate() {
            assert_eq!(
                held(&self.hub, d),
                *before,
                "device {d}'s kept session came back with other messages or subscriptions"
            );
        }
        self.owed = before
            .iter()
            .flatten()
            .map(|(messages, _)| *messages as u64)
            .sum();
        self.acked = 0;
    }

    fn drain(&mut self) {
        self.commit();
        while let Some(output) = self.hub.poll_output() {
            match output {
                HubOutput::Connection { conn, command } => {
                    let Some(device) = self.conn_of(conn) else {
                        // Only a connection that was taken over is no longer ours, and the
                        // hub has nothing for it but the close; it answers as a real one would.
                        // A PUBACK held for it may still come; the adapter drops it.
                        if let Command::AckPublish(_) = command {
                            continue;
                        }
                        let Command::Close(reason) = command else {
                            panic!("the hub sent {command:?} to a detached connection");
                        };
                        self.hub.handle_event(conn, Event::Closed(reason), self.now);
                        continue;
                    };
                    match command {
                        Command::SessionOpened { .. } => {}
                        Command::Deliver(delivery) => {
                            let topic = delivery.message.topic.as_str();
                            if let Some(id) = topic
                                .strip_prefix(&format!("/sys/pk/{}/rrpc/request/", DEVICES[device]))
                            {
                                if let Ok(id) = id.parse() {
                                    self.links[device].requests.push(MessageId(id));
                                }
                            }
                            if let Some(id) = delivery.packet_id {
                                assert_eq!(delivery.message.qos, QoS::AtLeastOnce);
                                self.links[device].unacked.push(id);
                            }
                        }
                        Command::AckPublish(id) => {
                            let awaiting = &mut self.links[device].awaiting_puback;
                            let at = awaiting.iter().position(|(waiting, _)| *waiting == id);
                            let at = at.expect("a PUBACK for a PUBLISH that awaits one");
                            awaiting.remove(at);
                        }
                        Command::Registered(_) | Command::Refuse(_) => {
                            panic!("the hub answered a registration this model never asked for")
                        }
                        Command::SubDeviceOnline { .. } | Command::SubDeviceOffline(_) => {
                            panic!("the hub carried a sub-device this model never logged in")
                        }
                        Command::Close(reason) => {
                            // The connection closes, as a real one would, and says so.
                            self.links[device] = Link::default();
                            if self.sessions.get(&device).is_some_and(|s| s.clean) {
                                self.sessions.remove(&device);
                            }
                            self.hub.handle_event(conn, Event::Closed(reason), self.now);
                        }
                    }
                }
                HubOutput::Forward { .. } => {
                    panic!("the hub forwarded a message with no consumer group configured")
                }
                HubOutput::Claim { .. }
                | HubOutput::Release { .. }
                | HubOutput::ConsumersHere { .. } => {
                    panic!("the hub spoke of a cluster outside one")
                }
                HubOutput::RrpcOutcome { id, .. } => {
                    assert!(
                        self.pending_calls.remove(&id),
                        "one outcome per call, for a call that exists"
                    );
                }
            }
        }
    }

    fn check(&self) {
        let held: u64 = (0..DEVICES.len())
            .filter_map(|d| self.hub.session_stats(&key(d)))
            .map(|s| (s.inflight + s.queued) as u64)
            .sum();
        let dropped = &self.hub.counters().dropped;
        assert_eq!(
            self.owed,
            self.acked + held + dropped.queue_full + dropped.expired + dropped.session_discarded,
            "a QoS 1 message was lost without being counted"
        );
        for d in 0..DEVICES.len() {
            for (id, at) in &self.links[d].awaiting_puback {
                assert!(
                    self.now - *at < MAX_ACK_HOLD,
                    "the PUBACK of {id:?} held past its limit"
                );
            }
            let online = self.links[d].conn.is_some();
            let stats = self.hub.session_stats(&key(d));
            if let Some(stats) = stats {
                assert!(
                    stats.queued <= MAX_QUEUED_MESSAGES * HELD_QUEUE_FACTOR
                        && stats.queued_bytes <= MAX_QUEUED_BYTES * HELD_QUEUE_FACTOR,
                    "a queue past its ceiling: {stats:?}"
                );
            }
            assert_eq!(stats.map(|s| s.online).unwrap_or(false), online);
            assert_eq!(stats.is_some(), self.sessions.contains_key(&d));
            // Where the device was last seen agrees with the model.
            let device = key(d).device().cloned().expect("a platform device");
            let presence = self.hub.device_presence(&device);
            assert_eq!(
                presence.is_some_and(|p| p.online),
                online,
                "presence of {device}"
            );
        }
        // The trace: bounded, its entries numbered one after another, the rest counted.
        let trace = self.hub.trace_after(0, &TraceFilter::default(), usize::MAX);
        assert!(trace.entries.len() <= TRACE_CAPACITY);
        assert_eq!(trace.missed, 0, "no limit: nothing left out");
        assert_eq!(trace.lost + trace.entries.len() as u64, trace.last_seq);
        for (n, entry) in trace.entries.iter().enumerate() {
            assert_eq!(entry.seq, trace.lost + 1 + n as u64, "trace numbering");
            assert!(entry.payload.len() <= TRACED_PAYLOAD_BYTES);
        }
    }

    fn connect(&mut self, device: usize, clean: bool, auto: bool) {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        let kept = self.sessions.get(&device).is_some_and(|s| !s.clean) && !clean;
        if !kept {
            self.sessions.insert(device, ModelSession::default());
        }
        if let Some(s) = self.sessions.get_mut(&device) {
            s.clean = clean;
            s.auto = auto;
        }
        // A live connection of the same device is taken over: the hub closes it.
        self.links[device] = Link {
            conn: Some(conn),
            ..Link::default()
        };
        let request = SessionRequest {
            key: Arc::new(key(device)),
            acl: Acl::open(),
            clean_session: clean,
            keep_alive: Duration::from_secs(30),
            features: ClientFeatures {
                auto_subscribe: auto,
                rrpc_ext: false,
            },
            client_ip: None,
            iot_id: None,
        };
        self.hub
            .handle_event(conn, Event::SessionRequested(request), self.now);
        self.drain();
    }

    fn disconnect(&mut self, device: usize) {
        let Some(conn) = self.links[device].conn else {
            return;
        };
        self.links[device] = Link::default();
        if self.sessions.get(&device).is_some_and(|s| s.clean) {
            self.sessions.remove(&device);
        }
        self.hub
            .handle_event(conn, Event::Closed(CloseReason::TransportClosed), self.now);
        self.drain();
    }

    fn publish(&mut self, from: Option<usize>, topic: usize, qos: QoS, payload: u8) {
        let name = TopicName::from_static(TOPICS[topic]);
        let device_sends = from.is_some_and(|d| self.links[d].conn.is_some());
        for (device, session) in &self.sessions {
            let granted = session.granted(*device, &name, !device_sends);
            if granted.is_some_and(|g| qos.min(g) == QoS::AtLeastOnce) {
                self.owed += 1;
            }
        }
        let message = Message::new(
            name,
            Bytes::from(vec![payload; usize::from(payload % 64)]),
            qos,
        );
        match from.filter(|d| self.links[*d].conn.is_some()) {
            Some(device) => {
                let link = &mut self.links[device];
                let packet_id = (qos == QoS::AtLeastOnce).then(|| {
                    link.next_packet_id = link.next_packet_id.wrapping_add(1).max(1);
                    PacketId::new(link.next_packet_id).unwrap()
                });
                if let Some(id) = packet_id {
                    link.awaiting_puback.push((id, self.now));
                }
                let conn = link.conn.unwrap();
                self.hub
                    .handle_event(conn, Event::Publish { message, packet_id }, self.now)
            }
            None => {
                self.hub.publish(message, self.now);
            }
        }
        self.drain();
    }

    /// The device posts a property (a service request its connection parsed); the hub
    /// answers on the reply topic, which reaches it by subscription or automatically.
    fn post_property(&mut self, device: usize, qos: QoS) {
        let Some(conn) = self.links[device].conn else {
            return;
        };
        let topic = format!("/sys/pk/{}/thing/event/property/post", DEVICES[device]);
        let Some(request) = DeviceMessage::parse(
            &topic,
            br#"{"id":"1","params":{"a":1}}"#,
            "pk",
            DEVICES[device],
        ) else {
            panic!("a property post is a service request");
        };
        let reply = TopicName::new(&format!("{topic}_reply"), &Default::default()).unwrap();
        let granted = self
            .sessions
            .get(&device)
            .and_then(|session| session.granted(device, &reply, true));
        if granted.is_some_and(|g| qos.min(g) == QoS::AtLeastOnce) {
            self.owed += 1;
        }
        let link = &mut self.links[device];
        let packet_id = (qos == QoS::AtLeastOnce).then(|| {
            link.next_packet_id = link.next_packet_id.wrapping_add(1).max(1);
            PacketId::new(link.next_packet_id).unwrap()
        });
        if let Some(id) = packet_id {
            link.awaiting_puback.push((id, self.now));
        }
        let message = Message::new(
            TopicName::new(&topic, &Default::default()).unwrap(),
            Bytes::from_static(br#"{"id":"1","params":{"a":1}}"#),
            qos,
        );
        // Routed too, to the explicit subscriptions that match the post.
        for (d, session) in &self.sessions {
            let granted = session.granted(*d, &message.topic, false);
            if granted.is_some_and(|g| qos.min(g) == QoS::AtLeastOnce) {
                self.owed += 1;
            }
        }
        let event = Event::ServiceRequest {
            request: Box::new(request),
            message,
            packet_id,
            sub_device: None,
        };
        self.hub.handle_event(conn, event, self.now);
        self.drain();
    }
}

fuzz_target!(|data: &[u8]| {
    let config = HubConfig {
        inflight_window: core::num::NonZeroU16::new(2).expect("a window"),
        max_queued_messages: MAX_QUEUED_MESSAGES,
        max_queued_bytes: MAX_QUEUED_BYTES,
        ack_hold_threshold: 1,
        max_ack_hold: MAX_ACK_HOLD,
        max_message_age: Some(Duration::from_secs(50)),
        session_expiry: None,
        first_rrpc_message_id: 1000,
        trace_capacity: TRACE_CAPACITY,
        ..HubConfig::default()
    };
    let mut hub = Hub::new(config.clone());
    hub.record_store_changes();
    hub.restore_rrpc_ids(0);
    let mut world = World {
        hub,
        config,
        store: StoreImage::default(),
        now: Instant::ZERO,
        next_conn: 1,
        sessions: BTreeMap::new(),
        links: Default::default(),
        owed: 0,
        acked: 0,
        pending_calls: BTreeSet::new(),
    };
    for op in data.chunks_exact(2) {
        let (code, arg) = (op[0], op[1]);
        let device = usize::from(arg) % DEVICES.len();
        match code % 11 {
            0 => world.connect(device, arg & 0x80 != 0, arg & 0x40 != 0),
            1 => world.disconnect(device),
            2 => {
                if let Some(conn) = world.links[device].conn {
                    let filter = usize::from(arg >> 2) % FILTERS.len();
                    let qos = if arg & 0x40 != 0 {
                        QoS::AtLeastOnce
                    } else {
                        QoS::AtMostOnce
                    };
                    if let Some(s) = world.sessions.get_mut(&device) {
                        s.subscriptions.insert(filter, qos);
                        s.suppressed.remove(&filter);
                    }
                    let filters = vec![(TopicFilter::from_static(FILTERS[filter]), qos)];
                    world
                        .hub
                        .handle_event(conn, Event::Subscribe(filters), world.now);
                }
            }
            3 => {
                if let Some(conn) = world.links[device].conn {
                    let filter = usize::from(arg >> 2) % FILTERS.len();
                    if let Some(s) = world.sessions.get_mut(&device) {
                        s.subscriptions.remove(&filter);
                        if s.auto && may_match_downlinks(FILTERS[filter]) {
                            s.suppressed.insert(filter);
                        }
                    }
                    let filters = vec![TopicFilter::from_static(FILTERS[filter])];
                    world
                        .hub
                        .handle_event(conn, Event::Unsubscribe(filters), world.now);
                }
            }
            4 => {
                let from = (arg & 0x80 != 0).then_some(device);
                let qos = if arg & 0x40 != 0 {
                    QoS::AtLeastOnce
                } else {
                    QoS::AtMostOnce
                };
                world.publish(from, usize::from(arg >> 2) % TOPICS.len(), qos, arg);
            }
            5 => {
                let link = &mut world.links[device];
                if let (Some(conn), false) = (link.conn, link.unacked.is_empty()) {
                    let id = link
                        .unacked
                        .remove(usize::from(arg >> 2) % link.unacked.len());
                    world.acked += 1;
                    world
                        .hub
                        .handle_event(conn, Event::DeliveryAcked(id), world.now);
                    world.drain();
                }
            }
            6 => {
                world.now = world.now + Duration::from_secs(u64::from(arg));
                world.hub.handle_timeout(world.now);
                world.drain();
            }
            7 => {
                let identity = DeviceIdentity::new("pk", DEVICES[device]);
                let timeout = Duration::from_millis(1000 + u64::from(arg) * 20);
                if let Ok(id) =
                    world
                        .hub
                        .rrpc_call(&identity, Bytes::new(), timeout, None, world.now)
                {
                    world.pending_calls.insert(id);
                }
                world.drain();
            }
            10 => world.crash(),
            9 => {
                let qos = if arg & 0x40 != 0 {
                    QoS::AtLeastOnce
                } else {
                    QoS::AtMostOnce
                };
                world.post_property(device, qos);
            }
            _ => {
                let link = &mut world.links[device];
                if let (Some(conn), Some(id)) = (link.conn, link.requests.pop()) {
                    // The connection tells a device's answer from its other PUBLISHes.
                    let topic = format!("/sys/pk/{}/rrpc/response/{}", DEVICES[device], id.0);
                    let answer = Event::RrpcResponse {
                        topic: TopicName::new(&topic, &Default::default()).unwrap(),
                        message_id: id,
                        custom: false,
                        payload: Bytes::from_static(b"ok"),
                        packet_id: None,
                        sub_device: None,
                    };
                    world.hub.handle_event(conn, answer, world.now);
                    world.drain();
                }
            }
        }
        world.check();
    }
    world.hub.shutdown();
    world.drain();
    assert!(
        world.pending_calls.is_empty(),
        "calls left without an outcome at shutdown"
    );
});
