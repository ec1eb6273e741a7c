//! The session table: every session the hub keeps, online or not, and how to find one.
//!
//! A [`Session`] is what the broker keeps of one client between its connections: the
//! subscriptions, the QoS 1 deliveries in flight towards the device (the window) and the queue
//! behind it. The [`SessionTable`] owns them in a slab and finds them by client key (the
//! device's identity), by the connection attached to them, and by when an offline one expires.
//! It is the narrow interface the rest of the hub goes through: a durable store can keep its
//! copy behind it, and a cluster can shard it by device identity.
//!
//! Deadlines, in the one table of [`SessionTable::next_deadline`]:
//!
//! | what | due | then |
//! |---|---|---|
//! | an offline cleanSession=0 session | [`HubConfig::session_expiry`] after its disconnect | the hub discards it |
//!
//! [`HubConfig::session_expiry`]: super::HubConfig::session_expiry

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::time::Duration;

use aliot_services::UnixMillis;
use aliot_topic::{Acl, TopicFilter, TopicName, system_downlink_owner};
use hashbrown::HashMap;

use super::ConnId;
use super::durable::SessionRecord;
use super::held_acks::HoldId;
use crate::authenticator::{ClientFeatures, ClientKey};
use crate::codec::{PacketId, QoS};
use crate::message::Message;
use crate::server::SessionRequest;
use crate::time::Instant;

/// The QoS a system downlink reaches an automatically subscribed device with (ours: the
/// platform documents none; QoS 1 keeps a downlink for a device that is briefly away).
pub(super) const AUTO_SUBSCRIBED_QOS: QoS = QoS::AtLeastOnce;

/// Unsubscribed filters one automatically subscribed session remembers (ours). The SDKs
/// unsubscribe from one or two (the C SDK 3.2 from `…/thing/event/+/post_reply`).
pub const MAX_SUPPRESSED_FILTERS: usize = 32;

/// What one session holds, from [`Hub::session_stats`](super::Hub::session_stats).
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

/// A session's place in the table; reused after the session is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct SessionId(u32);

/// A message waiting in a session's queue.
pub(super) struct Queued {
    pub(super) message: Message,
    /// When it was queued (for the maximum age).
    pub(super) at: Instant,
    /// The publisher's PUBACK this message holds, if it does.
    pub(super) hold: Option<HoldId>,
    /// Its place in the store (0: not kept, see [`Journal`](super::durable::Journal)).
    pub(super) seq: u64,
    /// Whether it may have been delivered before (restored after a restart): it goes out with
    /// DUP.
    pub(super) dup: bool,
}

/// A QoS 1 delivery sent to the device and not yet acknowledged.
pub(super) struct InFlight {
    pub(super) packet_id: PacketId,
    pub(super) message: Message,
    /// Its place in the store (0: not kept).
    pub(super) seq: u64,
}

/// What the broker keeps of one client between its connections.
pub(super) struct Session {
    /// Shared with the table's index by key: one copy of the key per session, not two.
    pub(super) key: Arc<ClientKey>,
    pub(super) acl: Acl,
    pub(super) clean: bool,
    pub(super) conn: Option<ConnId>,
    pub(super) keep_alive: Duration,
    pub(super) subscriptions: BTreeMap<TopicFilter, QoS>,
    /// What the client id asked for: with `auto_subscribe`, the device's system downlinks
    /// reach it without a subscription ([`granted_qos`](Self::granted_qos)).
    pub(super) features: ClientFeatures,
    /// Filters the device unsubscribed from while automatically subscribed: system downlinks
    /// they match no longer reach it by the automatic subscription (PLATFORM-PROTOCOLS §0.2),
    /// until it subscribes to the same filter again. At most [`MAX_SUPPRESSED_FILTERS`].
    pub(super) suppressed: Vec<TopicFilter>,
    /// QoS 1 deliveries sent and not yet acknowledged, in the order they were sent.
    pub(super) inflight: VecDeque<InFlight>,
    pub(super) queue: VecDeque<Queued>,
    pub(super) queued_bytes: usize,
    next_packet_id: u16,
    expires_at: Option<Instant>,
    /// When it went offline, by the wall clock (kept with a durable session, so that its
    /// expiry counts across a restart).
    pub(super) offline_since: Option<UnixMillis>,
    /// When the device last acknowledged a delivery, or attached: a queue whose device has not
    /// moved for `max_ack_hold` holds no more PUBACKs (it is stuck, not slow).
    pub(super) last_progress: Instant,
    /// The client's address, from its last connection (its status messages' `clientIp`).
    pub(super) client_ip: Option<core::net::IpAddr>,
    /// The platform's id of the device, from its last connection (what is forwarded about it
    /// names it so).
    pub(super) iot_id: Option<String>,
    /// When the hub last heard from the device (its attach, a publish, a subscription, an
    /// acknowledgement), by the wall clock: its status messages' `lastTime`.
    pub(super) last_seen: UnixMillis,
}

impl Session {
    /// A new session for a CONNECT, not yet attached.
    pub(super) fn new(request: &SessionRequest, now: Instant) -> Self {
        Session {
            key: Arc::clone(&request.key),
            acl: request.acl.clone(),
            clean: request.clean_session,
            conn: None,
            keep_alive: request.keep_alive,
            subscriptions: BTreeMap::new(),
            features: request.features,
            suppressed: Vec::new(),
            inflight: VecDeque::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            next_packet_id: 0,
            expires_at: None,
            offline_since: None,
            last_progress: now,
            client_ip: request.client_ip,
            iot_id: request.iot_id.clone(),
            last_seen: UnixMillis::default(),
        }
    }

    /// A session a store kept, offline, with the ACL its device has now.
    pub(super) fn restored(record: SessionRecord, acl: Acl, now: Instant) -> Self {
        Session {
            key: record.key,
            acl,
            clean: false,
            conn: None,
            keep_alive: record.keep_alive,
            subscriptions: record.subscriptions.into_iter().collect(),
            features: record.features,
            suppressed: record.suppressed,
            inflight: VecDeque::new(),
            queue: VecDeque::new(),
            queued_bytes: 0,
            next_packet_id: 0,
            expires_at: None,
            offline_since: record.offline_since,
            last_progress: now,
            client_ip: None,
            iot_id: None,
            last_seen: UnixMillis::default(),
        }
    }

    /// A packet id not used by any delivery still in flight.
    pub(super) fn allocate_packet_id(&mut self) -> PacketId {
        loop {
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            if let Some(id) = PacketId::new(self.next_packet_id)
                && !self.inflight.iter().any(|sent| sent.packet_id == id)
            {
                return id;
            }
        }
    }

    /// The highest QoS of the subscriptions matching `topic`, if any matches; else QoS 1 when
    /// the automatic subscription reaches it.
    pub(super) fn granted_qos(&self, topic: &TopicName) -> Option<QoS> {
        self.subscribed_qos(topic)
            .or_else(|| self.auto_subscribed(topic).then_some(AUTO_SUBSCRIBED_QOS))
    }

    /// The highest QoS of the subscriptions matching `topic`, if any matches.
    pub(super) fn subscribed_qos(&self, topic: &TopicName) -> Option<QoS> {
        self.subscriptions
            .iter()
            .filter(|(filter, _)| filter.matches(topic))
            .map(|(_, qos)| *qos)
            .max()
    }

    /// Whether `topic` reaches the session by its automatic subscription (`_ss=1`): it is one
    /// of the device's own system downlinks ([`system_downlink_owner`]) and no filter it
    /// unsubscribed from matches it.
    pub(super) fn auto_subscribed(&self, topic: &TopicName) -> bool {
        self.features.auto_subscribe
            && self.key.device().is_some_and(|device| {
                system_downlink_owner(topic.as_str())
                    == Some((device.product_key.as_str(), device.device_name.as_str()))
            })
            && !self.suppressed.iter().any(|filter| filter.matches(topic))
    }

    /// The device subscribed to `filter`: an automatic subscription it had stopped comes back.
    pub(super) fn subscribed(&mut self, filter: &TopicFilter) {
        self.suppressed.retain(|kept| kept != filter);
    }

    /// The device unsubscribed from `filter`: while automatically subscribed, the system
    /// downlinks it matches stop. A filter whose first level no system downlink has is not
    /// kept; past [`MAX_SUPPRESSED_FILTERS`] the oldest is forgotten.
    pub(super) fn unsubscribed(&mut self, filter: &TopicFilter) {
        if !self.features.auto_subscribe || self.suppressed.contains(filter) {
            return;
        }
        let first = filter.as_str().split('/').nth(1).unwrap_or_default();
        let may_match_downlinks = filter.as_str().starts_with(['+', '#'])
            || matches!(first, "sys" | "shadow" | "ota" | "ext" | "+" | "#");
        if may_match_downlinks {
            if self.suppressed.len() == MAX_SUPPRESSED_FILTERS {
                self.suppressed.remove(0);
            }
            self.suppressed.push(filter.clone());
        }
    }

    /// The device acknowledged the delivery `packet_id` at `now`: it leaves the window. Returns
    /// its place in the store (0 if not kept), or `None` if no such delivery was in flight.
    pub(super) fn delivery_acked(&mut self, packet_id: PacketId, now: Instant) -> Option<u64> {
        let at = self
            .inflight
            .iter()
            .position(|sent| sent.packet_id == packet_id)?;
        let sent = self.inflight.remove(at)?;
        self.last_progress = now;
        Some(sent.seq)
    }

    /// What a store keeps of this session.
    pub(super) fn record(&self) -> SessionRecord {
        SessionRecord {
            key: Arc::clone(&self.key),
            subscriptions: self
                .subscriptions
                .iter()
                .map(|(filter, qos)| (filter.clone(), *qos))
                .collect(),
            features: self.features,
            suppressed: self.suppressed.clone(),
            keep_alive: self.keep_alive,
            offline_since: self.offline_since,
        }
    }

    /// Takes the oldest queued message off the queue.
    pub(super) fn pop_queued(&mut self) -> Option<Queued> {
        let queued = self.queue.pop_front()?;
        self.queued_bytes -= queued.message.weight();
        Some(queued)
    }

    /// Puts a message back at the front of the queue (one that could not be sent after all).
    pub(super) fn push_queued_front(&mut self, queued: Queued) {
        self.queued_bytes += queued.message.weight();
        self.queue.push_front(queued);
    }

    /// Puts a message at the back of the queue.
    pub(super) fn push_queued(&mut self, queued: Queued) {
        self.queued_bytes += queued.message.weight();
        self.queue.push_back(queued);
    }

    /// What the session holds now.
    pub(super) fn stats(&self) -> SessionStats {
        SessionStats {
            online: self.conn.is_some(),
            clean: self.clean,
            subscriptions: self.subscriptions.len(),
            inflight: self.inflight.len(),
            queued: self.queue.len(),
            queued_bytes: self.queued_bytes,
        }
    }
}

/// Every session the hub keeps, found by key, by connection and by expiry.
#[derive(Default)]
pub(super) struct SessionTable {
    slots: Vec<Option<Session>>,
    free: Vec<u32>,
    by_key: BTreeMap<Arc<ClientKey>, SessionId>,
    by_conn: HashMap<ConnId, SessionId>,
    expiries: BTreeSet<(Instant, SessionId)>,
}

impl SessionTable {
    /// Sessions kept now, online and offline.
    pub(super) fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Sessions with a connection attached now.
    pub(super) fn connections(&self) -> usize {
        self.by_conn.len()
    }

    /// The connections attached now.
    pub(super) fn conns(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.by_conn.keys().copied()
    }

    pub(super) fn get(&self, sid: SessionId) -> Option<&Session> {
        self.slots.get(sid.0 as usize)?.as_ref()
    }

    pub(super) fn get_mut(&mut self, sid: SessionId) -> Option<&mut Session> {
        self.slots.get_mut(sid.0 as usize)?.as_mut()
    }

    /// The keys of every session kept, in key order.
    pub(super) fn keys(&self) -> impl Iterator<Item = &ClientKey> + '_ {
        self.by_key.keys().map(|key| &**key)
    }

    /// The session of a client key (an anonymous client's is found by its connection only).
    pub(super) fn find(&self, key: &ClientKey) -> Option<SessionId> {
        self.by_key.get(key).copied()
    }

    /// The session attached to `conn`.
    pub(super) fn of_conn(&self, conn: ConnId) -> Option<SessionId> {
        self.by_conn.get(&conn).copied()
    }

    /// Keeps a new session, unattached.
    pub(super) fn insert(&mut self, session: Session) -> SessionId {
        let key = Arc::clone(&session.key);
        let sid = match self.free.pop() {
            Some(slot) => {
                if let Some(free) = self.slots.get_mut(slot as usize) {
                    *free = Some(session);
                }
                SessionId(slot)
            }
            None => {
                let slot = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
                self.slots.push(Some(session));
                SessionId(slot)
            }
        };
        if *key != ClientKey::Anonymous {
            self.by_key.insert(key, sid);
        }
        sid
    }

    /// Takes a session out of the table, with its connection and expiry.
    pub(super) fn remove(&mut self, sid: SessionId) -> Option<Session> {
        let session = self.slots.get_mut(sid.0 as usize).and_then(Option::take)?;
        self.free.push(sid.0);
        if self.by_key.get(&session.key) == Some(&sid) {
            self.by_key.remove(&session.key);
        }
        if let Some(conn) = session.conn
            && self.by_conn.get(&conn) == Some(&sid)
        {
            self.by_conn.remove(&conn);
        }
        if let Some(at) = session.expires_at {
            self.expiries.remove(&(at, sid));
        }
        Some(session)
    }

    /// Attaches `conn` to the session at `now`, as the connection's own session; an offline
    /// session no longer expires.
    pub(super) fn attach(&mut self, sid: SessionId, conn: ConnId, now: Instant) {
        if self.attach_carried(sid, conn, now) {
            self.by_conn.insert(conn, sid);
        }
    }

    /// Attaches a gateway's connection `conn` to a sub-device's session at `now`: the
    /// connection carries it, and stays found by its own session. Whether the session exists.
    pub(super) fn attach_carried(&mut self, sid: SessionId, conn: ConnId, now: Instant) -> bool {
        let Some(session) = self.slots.get_mut(sid.0 as usize).and_then(Option::as_mut) else {
            return false;
        };
        session.conn = Some(conn);
        session.offline_since = None;
        session.last_progress = now;
        if let Some(at) = session.expires_at.take() {
            self.expiries.remove(&(at, sid));
        }
        true
    }

    /// Whether the session's connection carries it for a gateway (rather than being its own).
    pub(super) fn is_carried(&self, sid: SessionId) -> bool {
        self.get(sid)
            .and_then(|session| session.conn)
            .is_some_and(|conn| self.by_conn.get(&conn) != Some(&sid))
    }

    /// Detaches whatever connection the session has (taken over): that connection, if any.
    pub(super) fn take_conn(&mut self, sid: SessionId) -> Option<ConnId> {
        let conn = self.get_mut(sid)?.conn.take()?;
        if self.by_conn.get(&conn) == Some(&sid) {
            self.by_conn.remove(&conn);
        }
        Some(conn)
    }

    /// `conn` went away: the session it was attached to, now offline, if any.
    pub(super) fn detach(&mut self, conn: ConnId) -> Option<SessionId> {
        let sid = self.by_conn.remove(&conn)?;
        let session = self.get_mut(sid)?;
        if session.conn != Some(conn) {
            return None;
        }
        session.conn = None;
        Some(sid)
    }

    /// An offline session expires at `at`.
    pub(super) fn expire_at(&mut self, sid: SessionId, at: Instant) {
        let Some(session) = self.slots.get_mut(sid.0 as usize).and_then(Option::as_mut) else {
            return;
        };
        if let Some(before) = session.expires_at.replace(at) {
            self.expiries.remove(&(before, sid));
        }
        self.expiries.insert((at, sid));
    }

    /// When the next offline session expires.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.expiries.first().map(|(at, _)| *at)
    }

    /// The next session that expired by `now`, if any (still in the table: the hub removes it
    /// with what it holds). Call until `None`.
    pub(super) fn expire(&mut self, now: Instant) -> Option<SessionId> {
        let &(at, sid) = self.expiries.first()?;
        if at > now {
            return None;
        }
        self.expiries.pop_first();
        if let Some(session) = self.get_mut(sid) {
            session.expires_at = None;
        }
        Some(sid)
    }
}
