//! Gateways and the sub-devices they carry (PLATFORM-PROTOCOLS §4).
//!
//! A sub-device logged in through a gateway is a device like any other: its session is keyed
//! by its own identity and holds its own subscriptions, window and queue; the server side finds
//! it as it finds a directly connected device. What differs is its connection: the gateway's,
//! shared with the gateway's own session and its other sub-devices. A [`Carrier`] is what the
//! hub keeps of such a connection: the sessions it carries and, since MQTT's packet ids belong
//! to the connection, whose each QoS 1 delivery in flight on it is (the gateway's PUBACK names
//! only the packet id). A connection that never carried a sub-device has no carrier and pays
//! nothing for this.
//!
//! What the platform knows of devices (topology, secrets, who is disabled) is the registry's,
//! not the hub's: [`Hub::handle_gateway_request`] asks a [`SubDeviceDirectory`] and records the
//! changes it returns; the answer goes out with [`Hub::send_gateway_reply`] once they are
//! durable.
//!
//! The rules the platform leaves open are ours (docs/PLATFORM-SERVICES.md §8):
//!
//! - the checks of a login, in order: the device exists (6100), is enabled (522), is in the
//!   gateway's topology (6401), and its proof is its secret's (6287); then the gateway's
//!   limits: [`HubConfig::max_sub_devices_per_gateway`](super::HubConfig) online (428) and
//!   [`HubConfig::max_sub_device_logins_per_minute`](super::HubConfig) (429). A batch is all
//!   or nothing, and a refused one lists the devices that failed;
//! - a login takes the sub-device's session from wherever it is attached: its own connection
//!   is closed (taken over), another gateway stops carrying it;
//! - a gateway's connection that closes, or is taken over by a new connection of the gateway,
//!   takes its sub-devices offline: the new connection logs them in again, and the sessions of
//!   those logged in with `cleanSession` `false` keep what was queued for them meanwhile;
//! - a sub-device gets the automatic subscription when its gateway's connection has `_ss=1`
//!   or its login's `clientId` does, and the `ext` RRPC form likewise.
//!
//! No deadlines: a login's minute is checked when it comes.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use aliot_auth::{ClientId, DeviceIdentity, DeviceSecret};
use aliot_services::forward::{self, LifecycleAction};
use aliot_services::gateway::{
    GatewayOp, GatewayRequest, ProxiedRegistration, SubDeviceLogin, TopologyChange,
    identities_data, identity_data, topology_change,
};
use aliot_services::{AlinkCode, Downlink, UnixMillis};
use aliot_topic::{Acl, ProductCategories};
use core::time::Duration;
use hashbrown::{HashMap, HashSet};
use serde_json::{Map, Value};

use super::durable::StoreChange;
use super::sessions::{Queued, Session, SessionId};
use super::{ConnId, DOWNLINK_QOS, DeviceDelivery, Hub, MessageKinds};
use crate::authenticator::{ClientFeatures, ClientKey};
use crate::codec::{PacketId, QoS};
use crate::message::Message;
use crate::server::{Command, SessionRequest};
use crate::time::Instant;

/// The window a gateway's logins are counted over.
const LOGIN_WINDOW: Duration = Duration::from_secs(60);

/// QoS 1 deliveries in flight on one connection at most: MQTT's packet ids (1 to 65,535).
/// A gateway's sessions together may want more (2,001 windows of 32 nearly do); beyond it their
/// messages wait in their queues until PUBACKs free ids.
const MAX_IN_FLIGHT_PER_CONNECTION: usize = u16::MAX as usize;

/// What the platform keeps of a device that a gateway asks about.
#[derive(Clone, Debug)]
pub struct SubDeviceRecord {
    /// Its secret: the key of its proofs.
    pub secret: DeviceSecret,
    /// Its product's topic categories: its ACL on the gateway's connection.
    pub categories: Arc<ProductCategories>,
    /// Whether the server side disabled it.
    pub disabled: bool,
    /// The gateway whose topology it is in, if any.
    pub gateway: Option<DeviceIdentity>,
    /// The platform's id of the device (`iotId`), if the directory gives one.
    pub iot_id: Option<String>,
}

/// Where the hub finds, and changes, what the platform knows of devices: the registry. Each
/// change comes back as a [`StoreChange`] the hub commits with its turn.
pub trait SubDeviceDirectory {
    /// A registered device, or `None`.
    fn sub_device(&self, identity: &DeviceIdentity) -> Option<SubDeviceRecord>;
    /// A gateway's topology, in order.
    fn topology(&self, gateway: &DeviceIdentity) -> Vec<DeviceIdentity>;
    /// Puts `sub` in `gateway`'s topology (out of another's); `None` when it was in already.
    fn add_to_topology(
        &self,
        gateway: &DeviceIdentity,
        sub: &DeviceIdentity,
    ) -> Result<Option<StoreChange>, AlinkCode>;
    /// Takes `sub` out of `gateway`'s topology; `None` when it was not in it.
    fn remove_from_topology(
        &self,
        gateway: &DeviceIdentity,
        sub: &DeviceIdentity,
    ) -> Result<Option<StoreChange>, AlinkCode>;
    /// Registers `sub` for its gateway and gives its secret: `thing/sub/register` without a
    /// proof (the gateway is trusted), `product_register` with its product secret's proof.
    /// The change is `Some` only when the device was made now (a registered one, not yet
    /// active, gets its secret again): its `create` lifecycle is forwarded then.
    fn register(
        &self,
        sub: &DeviceIdentity,
        proof: Option<&ProxiedRegistration>,
        now: UnixMillis,
    ) -> Result<(String, Option<StoreChange>), AlinkCode>;
    /// `sub` logged in: the change that activates it, the first time.
    fn logged_in(&self, sub: &DeviceIdentity, now: UnixMillis) -> Option<StoreChange>;
}

/// A directory that knows no device (a broker without a registry): every sub-device is
/// unknown (6100), every topology empty.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoDirectory;

impl SubDeviceDirectory for NoDirectory {
    fn sub_device(&self, _: &DeviceIdentity) -> Option<SubDeviceRecord> {
        None
    }
    fn topology(&self, _: &DeviceIdentity) -> Vec<DeviceIdentity> {
        Vec::new()
    }
    fn add_to_topology(
        &self,
        _: &DeviceIdentity,
        _: &DeviceIdentity,
    ) -> Result<Option<StoreChange>, AlinkCode> {
        Err(AlinkCode::NO_DEVICE)
    }
    fn remove_from_topology(
        &self,
        _: &DeviceIdentity,
        _: &DeviceIdentity,
    ) -> Result<Option<StoreChange>, AlinkCode> {
        Err(AlinkCode::NO_DEVICE)
    }
    fn register(
        &self,
        _: &DeviceIdentity,
        _: Option<&ProxiedRegistration>,
        _: UnixMillis,
    ) -> Result<(String, Option<StoreChange>), AlinkCode> {
        Err(AlinkCode::NO_DEVICE)
    }
    fn logged_in(&self, _: &DeviceIdentity, _: UnixMillis) -> Option<StoreChange> {
        None
    }
}

/// A gateway request's answer: send it with [`Hub::send_gateway_reply`] once the changes the
/// request made are committed (a sub-device's secret, a topology, must not be forgotten
/// after the gateway was told).
#[derive(Debug)]
pub struct GatewayReply {
    conn: ConnId,
    downlink: Downlink,
    qos: QoS,
}

/// Whose a PUBACK on a connection is.
pub(super) enum AckedOn {
    /// The connection carries no sub-device: its own session's.
    Own,
    /// This session's (the gateway's own, or a sub-device's); `freed_room`: the connection had
    /// every packet id in use until this PUBACK, so its other sessions may send again.
    Carried { sid: SessionId, freed_room: bool },
    /// No delivery in flight on the connection has that packet id.
    Unknown,
}

/// A gateway's connection that carries sub-devices.
#[derive(Default)]
pub(super) struct Carrier {
    /// The sub-devices' sessions it carries.
    subs: HashSet<SessionId>,
    /// Every QoS 1 delivery in flight on it (the gateway's own too), by packet id: whose it is.
    /// `None`: the delivery of a sub-device no longer carried, whose PUBACK may still come; the
    /// id stays taken until it does (reused earlier, that PUBACK would end another delivery).
    in_flight: HashMap<PacketId, Option<SessionId>>,
    next_packet_id: u16,
    /// The current minute of logins: when it started and how many it had.
    logins: Option<(Instant, u32)>,
}

impl Carrier {
    /// A packet id free on the connection, now `sid`'s; `None` when all are in use.
    fn allocate(&mut self, sid: SessionId) -> Option<PacketId> {
        if self.in_flight.len() >= MAX_IN_FLIGHT_PER_CONNECTION {
            return None;
        }
        loop {
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            if let Some(id) = PacketId::new(self.next_packet_id)
                && !self.in_flight.contains_key(&id)
            {
                self.in_flight.insert(id, Some(sid));
                return Some(id);
            }
        }
    }

    /// Whether `count` more logins fit in the minute at `now`; counted if they do.
    fn admit_logins(&mut self, count: usize, now: Instant, per_minute: u32) -> bool {
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        let (start, used) = match self.logins {
            Some((start, used)) if now - start < LOGIN_WINDOW => (start, used),
            _ => (now, 0),
        };
        let total = used.saturating_add(count);
        if total > per_minute {
            self.logins = Some((start, used));
            return false;
        }
        self.logins = Some((start, total));
        true
    }
}

/// The gateways' connections that carry sub-devices, by connection.
#[derive(Default)]
pub(super) struct Carriers {
    by_conn: HashMap<ConnId, Carrier>,
}

impl Carriers {
    /// A packet id for a QoS 1 delivery of the session `sid` on `conn`: unique on the
    /// connection when it carries sub-devices, else the session's own choice. `None` when the
    /// connection has every packet id in use (see [`has_room`](Self::has_room)).
    pub(super) fn packet_id(
        &mut self,
        conn: ConnId,
        sid: SessionId,
        session: &mut Session,
    ) -> Option<PacketId> {
        match self.carrier_mut(conn) {
            Some(carrier) => carrier.allocate(sid),
            None => Some(session.allocate_packet_id()),
        }
    }

    /// Whether `conn` has a packet id free for one more QoS 1 delivery.
    pub(super) fn has_room(&self, conn: ConnId) -> bool {
        self.by_conn.is_empty()
            || self
                .by_conn
                .get(&conn)
                .is_none_or(|carrier| carrier.in_flight.len() < MAX_IN_FLIGHT_PER_CONNECTION)
    }

    /// The PUBACK `packet_id` came on `conn`: whose delivery it ends.
    pub(super) fn acked(&mut self, conn: ConnId, packet_id: PacketId) -> AckedOn {
        let Some(carrier) = self.carrier_mut(conn) else {
            return AckedOn::Own;
        };
        let was_full = carrier.in_flight.len() >= MAX_IN_FLIGHT_PER_CONNECTION;
        match carrier.in_flight.remove(&packet_id) {
            Some(Some(sid)) => AckedOn::Carried {
                sid,
                freed_room: was_full,
            },
            Some(None) | None => AckedOn::Unknown,
        }
    }

    /// The sessions on `conn` (the gateway's own first), when it carries sub-devices.
    pub(super) fn sessions_on(&self, conn: ConnId, own: Option<SessionId>) -> Vec<SessionId> {
        let subs = self.by_conn.get(&conn).map(|carrier| carrier.subs.iter());
        own.into_iter()
            .chain(subs.into_iter().flatten().copied())
            .collect()
    }

    fn carrier_mut(&mut self, conn: ConnId) -> Option<&mut Carrier> {
        if self.by_conn.is_empty() {
            return None;
        }
        self.by_conn.get_mut(&conn)
    }
}

impl Hub {
    /// Decides a gateway's request (PLATFORM-PROTOCOLS §4) with what `directory` knows, and
    /// returns its answer, to send with [`send_gateway_reply`](Self::send_gateway_reply) once
    /// this turn's changes are committed (`None` when `conn` has no device session). A QoS 1
    /// request is acknowledged, and the message reaches whoever subscribed to it, as any
    /// other.
    ///
    /// Logins and logouts take effect at once: the connection learns which sub-devices it
    /// carries ([`Command::SubDeviceOnline`], [`Command::SubDeviceOffline`]) before the reply.
    pub fn handle_gateway_request(
        &mut self,
        conn: ConnId,
        mut request: GatewayRequest,
        message: Message,
        packet_id: Option<PacketId>,
        directory: &dyn SubDeviceDirectory,
        now: Instant,
    ) -> Option<GatewayReply> {
        self.counters.messages_in += 1;
        self.counters.gateway.requests += 1;
        if let Some(packet_id) = packet_id {
            self.send_puback((conn, packet_id));
        }
        let qos = message.qos;
        let gateway_sid = self.sessions.of_conn(conn);
        self.trace_from(gateway_sid, &message.topic, &message.payload, qos);
        self.route(message, None, now);
        let gateway_sid = gateway_sid?;
        let gateway = self.sessions.get(gateway_sid)?.key.device()?.clone();
        let op = core::mem::replace(&mut request.op, Err(AlinkCode::SUCCESS));
        let (code, data) = match op {
            Err(code) => (code, Value::Object(Map::new())),
            Ok(op) => self.gateway_op(conn, gateway_sid, &gateway, op, directory, now),
        };
        if code != AlinkCode::SUCCESS {
            self.counters.gateway.refused += 1;
        }
        Some(GatewayReply {
            conn,
            downlink: request.reply(code, &data),
            qos,
        })
    }

    /// Sends a gateway request's answer to the gateway's session (by its subscription, or
    /// the automatic one).
    pub fn send_gateway_reply(&mut self, reply: GatewayReply, now: Instant) {
        if let Some(sid) = self.sessions.of_conn(reply.conn) {
            self.send_downlink(sid, reply.downlink, reply.qos, now);
        }
    }

    /// The server side changed a gateway's topology (the OpenAPI's `AddThingTopo`,
    /// `RemoveThingTopo`, a sub-device deleted, disabled or enabled): the gateway is told on
    /// `thing/topo/change`, and a sub-device removed or disabled that it carries is logged
    /// out. What became of the push.
    pub fn topology_changed(
        &mut self,
        gateway: &DeviceIdentity,
        change: TopologyChange,
        subs: &[DeviceIdentity],
        now: Instant,
    ) -> DeviceDelivery {
        let id = self.allocate_message_id();
        let Some(gateway_sid) = self.online_session(gateway) else {
            return DeviceDelivery::Offline;
        };
        if matches!(change, TopologyChange::Removed | TopologyChange::Disabled)
            && let Some(conn) = self.sessions.get(gateway_sid).and_then(|s| s.conn)
        {
            for sub in subs {
                self.log_out(conn, sub, now);
            }
        }
        let push = topology_change(gateway, id.0, change, subs);
        self.counters.messages_in += 1;
        self.send_downlink(gateway_sid, push, DOWNLINK_QOS, now)
    }

    /// A gateway's topology changed (by its own request or the server side's): the
    /// `thing/topo/lifecycle` message (§9.2) to the groups that take its product's topology.
    /// Each device comes with its iotId.
    pub fn forward_topology(
        &mut self,
        gateway: (&DeviceIdentity, &str),
        change: TopologyChange,
        subs: &[(DeviceIdentity, String)],
        now: Instant,
    ) {
        let (gateway, gateway_iot_id) = gateway;
        self.forward_platform(MessageKinds::TOPOLOGY, &gateway.product_key, now, |at| {
            forward::topology(gateway, gateway_iot_id, change, subs, at)
        });
    }

    /// [`forward_topology`](Self::forward_topology) for a gateway's own request, the iotIds
    /// as `directory` has them.
    fn forward_topology_in(
        &mut self,
        gateway: &DeviceIdentity,
        change: TopologyChange,
        subs: &[DeviceIdentity],
        directory: &dyn SubDeviceDirectory,
        now: Instant,
    ) {
        if !self
            .consumer_groups
            .wants(MessageKinds::TOPOLOGY, &gateway.product_key)
        {
            return;
        }
        let iot_id = |device: &DeviceIdentity| {
            directory
                .sub_device(device)
                .and_then(|record| record.iot_id)
                .unwrap_or_default()
        };
        let subs: Vec<(DeviceIdentity, String)> =
            subs.iter().map(|sub| (sub.clone(), iot_id(sub))).collect();
        self.forward_topology((gateway, &iot_id(gateway)), change, &subs, now);
    }

    /// A gateway registered a new sub-device: its `create` lifecycle message, with its secret.
    fn forward_created(
        &mut self,
        sub: &DeviceIdentity,
        secret: &str,
        directory: &dyn SubDeviceDirectory,
        now: Instant,
    ) {
        self.forward_platform(MessageKinds::LIFECYCLE, &sub.product_key, now, |at| {
            let iot_id = directory
                .sub_device(sub)
                .and_then(|record| record.iot_id)
                .unwrap_or_default();
            forward::lifecycle(sub, &iot_id, LifecycleAction::Create, Some(secret), at)
        });
    }

    /// Sub-devices carried by `conn` now.
    fn carried_count(&self, conn: ConnId) -> usize {
        self.carriers
            .by_conn
            .get(&conn)
            .map_or(0, |carrier| carrier.subs.len())
    }

    /// The session of `sub` if `conn` carries it.
    fn carried_session(&self, conn: ConnId, sub: &DeviceIdentity) -> Option<SessionId> {
        let sid = self.session_of_device(sub)?;
        let carrier = self.carriers.by_conn.get(&conn)?;
        carrier.subs.contains(&sid).then_some(sid)
    }

    fn gateway_op(
        &mut self,
        conn: ConnId,
        gateway_sid: SessionId,
        gateway: &DeviceIdentity,
        op: GatewayOp,
        directory: &dyn SubDeviceDirectory,
        now: Instant,
    ) -> (AlinkCode, Value) {
        let success = AlinkCode::SUCCESS;
        match op {
            GatewayOp::TopoGet => (success, identities_data(&directory.topology(gateway))),
            GatewayOp::ListFound(found) => {
                // Only told to the applications (ours: with the topology's kind); nothing
                // changes here until one of them adds a found device to the topology.
                self.forward_platform(MessageKinds::TOPOLOGY, &gateway.product_key, now, |_| {
                    let iot_id = |device: &DeviceIdentity| {
                        directory
                            .sub_device(device)
                            .and_then(|record| record.iot_id)
                    };
                    let found: Vec<(DeviceIdentity, Option<String>)> = found
                        .into_iter()
                        .map(|sub| {
                            let id = iot_id(&sub);
                            (sub, id)
                        })
                        .collect();
                    let gateway_iot_id = iot_id(gateway).unwrap_or_default();
                    forward::found(gateway, &gateway_iot_id, &found)
                });
                (success, Value::Object(serde_json::Map::new()))
            }
            GatewayOp::TopoAdd(proofs) => {
                // Every proof first: all or nothing.
                for proof in &proofs {
                    let sub = proof.identity();
                    let Some(record) = directory.sub_device(sub) else {
                        return (AlinkCode::NO_DEVICE, identities_data([sub]));
                    };
                    if !proof.matches(record.secret.as_bytes()) {
                        return (AlinkCode::BAD_SIGN, identities_data([sub]));
                    }
                }
                let subs: Vec<DeviceIdentity> = proofs
                    .iter()
                    .map(|proof| proof.identity().clone())
                    .collect();
                for sub in &subs {
                    match directory.add_to_topology(gateway, sub) {
                        Ok(change) => self.record_changes(change),
                        Err(code) => return (code, identities_data([sub])),
                    }
                }
                self.forward_topology_in(gateway, TopologyChange::Added, &subs, directory, now);
                (success, identities_data(&subs))
            }
            GatewayOp::TopoDelete(subs) => {
                for sub in &subs {
                    match directory.remove_from_topology(gateway, sub) {
                        Ok(change) => self.record_changes(change),
                        Err(code) => return (code, identities_data([sub])),
                    }
                    // Out of the topology, out of the gateway's connection.
                    self.log_out(conn, sub, now);
                }
                self.forward_topology_in(gateway, TopologyChange::Removed, &subs, directory, now);
                (success, identities_data(&subs))
            }
            GatewayOp::SubRegister(subs) => {
                let mut registered = Vec::with_capacity(subs.len());
                for sub in &subs {
                    match directory.register(sub, None, self.wall_clock) {
                        Ok((secret, change)) => {
                            let new = change.is_some();
                            self.record_changes(change);
                            if new {
                                self.forward_created(sub, &secret, directory, now);
                            }
                            registered.push(secret_data(sub, &secret));
                        }
                        Err(code) => return (code, identities_data([sub])),
                    }
                }
                (success, Value::Array(registered))
            }
            GatewayOp::ProductRegister(proxieds) => {
                let mut successes = Vec::new();
                let mut failures = Vec::new();
                for proxied in &proxieds {
                    let sub = &proxied.identity;
                    match directory.register(sub, Some(proxied), self.wall_clock) {
                        Ok((secret, change)) => {
                            let new = change.is_some();
                            self.record_changes(change);
                            if new {
                                self.forward_created(sub, &secret, directory, now);
                            }
                            successes.push(secret_data(sub, &secret));
                        }
                        Err(code) => failures.push(failure_data(sub, code)),
                    }
                }
                let mut data = Map::new();
                data.insert("successes".into(), Value::Array(successes));
                data.insert("failures".into(), Value::Array(failures));
                (success, Value::Object(data))
            }
            GatewayOp::Login(login) => {
                let sub = login.proof.identity().clone();
                match self.log_in(conn, gateway_sid, gateway, &[login], directory, now) {
                    Ok(()) => (success, identity_data(&sub)),
                    Err((code, _)) => (code, identity_data(&sub)),
                }
            }
            GatewayOp::BatchLogin(logins) => {
                let subs: Vec<DeviceIdentity> = logins
                    .iter()
                    .map(|login| login.proof.identity().clone())
                    .collect();
                match self.log_in(conn, gateway_sid, gateway, &logins, directory, now) {
                    Ok(()) => (success, identities_data(&subs)),
                    Err((code, failed)) => (code, identities_data(&failed)),
                }
            }
            GatewayOp::Logout(sub) => match self.log_out(conn, &sub, now) {
                true => (success, identity_data(&sub)),
                false => (AlinkCode::NO_SESSION, identity_data(&sub)),
            },
            GatewayOp::BatchLogout(subs) => {
                let absent: Vec<&DeviceIdentity> = subs
                    .iter()
                    .filter(|sub| self.carried_session(conn, sub).is_none())
                    .collect();
                if !absent.is_empty() {
                    return (AlinkCode::NO_SESSION, identities_data(absent));
                }
                for sub in &subs {
                    self.log_out(conn, sub, now);
                }
                (success, identities_data(&subs))
            }
        }
    }

    fn record_changes(&mut self, change: Option<StoreChange>) {
        if let Some(change) = change {
            self.record_store_change(change);
        }
    }

    /// Logs sub-devices in through the gateway's connection `conn`, all or none: each one's
    /// checks (in the order of the module docs), then the gateway's limits. On refusal, the
    /// code and the sub-devices that failed.
    fn log_in(
        &mut self,
        conn: ConnId,
        gateway_sid: SessionId,
        gateway: &DeviceIdentity,
        logins: &[SubDeviceLogin],
        directory: &dyn SubDeviceDirectory,
        now: Instant,
    ) -> Result<(), (AlinkCode, Vec<DeviceIdentity>)> {
        let (keep_alive, gateway_features, client_ip) = match self.sessions.get(gateway_sid) {
            Some(session) => (session.keep_alive, session.features, session.client_ip),
            None => return Err((AlinkCode::NO_SESSION, Vec::new())),
        };
        let mut requests = Vec::with_capacity(logins.len());
        let mut failed = None;
        for login in logins {
            let sub = login.proof.identity();
            let checked = match directory.sub_device(sub) {
                None => Err(AlinkCode::NO_DEVICE),
                Some(record) if record.disabled => Err(AlinkCode::DISABLED),
                Some(record) if record.gateway.as_ref() != Some(gateway) => {
                    Err(AlinkCode::NOT_IN_TOPOLOGY)
                }
                Some(record) if !login.proof.matches(record.secret.as_bytes()) => {
                    Err(AlinkCode::BAD_SIGN)
                }
                Some(record) => Ok(record),
            };
            match (checked, &mut failed) {
                (Ok(record), None) => requests.push(SessionRequest {
                    key: Arc::new(ClientKey::Device(sub.clone())),
                    acl: Acl::for_device(&sub.product_key, &sub.device_name, &record.categories),
                    clean_session: login.clean_session,
                    keep_alive,
                    features: login_features(gateway_features, login.proof.client_id()),
                    client_ip,
                    iot_id: record.iot_id,
                }),
                (Ok(_), Some(_)) => {}
                (Err(code), None) => failed = Some((code, alloc::vec![sub.clone()])),
                (Err(_), Some((_, subs))) => subs.push(sub.clone()),
            }
        }
        if let Some(failed) = failed {
            return Err(failed);
        }
        let subs = || logins.iter().map(|l| l.proof.identity().clone()).collect();
        let new = requests
            .iter()
            .filter(|request| {
                request
                    .key
                    .device()
                    .is_none_or(|sub| self.carried_session(conn, sub).is_none())
            })
            .count();
        if self.carried_count(conn) + new > self.config.max_sub_devices_per_gateway {
            return Err((AlinkCode::TOO_MANY_SUBDEVICES, subs()));
        }
        let per_minute = self.config.max_sub_device_logins_per_minute;
        let admitted = self
            .carriers
            .by_conn
            .entry(conn)
            .or_insert_with(|| {
                // The gateway's own deliveries in flight keep their packet ids.
                let mut carrier = Carrier::default();
                if let Some(session) = self.sessions.get(gateway_sid) {
                    for sent in &session.inflight {
                        carrier.in_flight.insert(sent.packet_id, Some(gateway_sid));
                    }
                }
                carrier
            })
            .admit_logins(requests.len(), now, per_minute);
        if !admitted {
            return Err((AlinkCode::TOO_FAST, subs()));
        }
        for request in requests {
            if let Some(sub) = request.key.device()
                && let Some(change) = directory.logged_in(sub, self.wall_clock)
            {
                self.record_store_change(change);
            }
            self.attach_sub_device(conn, request, now);
        }
        Ok(())
    }

    /// Attaches a sub-device's session to the gateway's connection `conn` (which has a
    /// carrier): taken from wherever it was, its unacknowledged deliveries renumbered on the
    /// connection and sent again.
    fn attach_sub_device(&mut self, conn: ConnId, request: SessionRequest, now: Instant) {
        // The connection learns first, so that what follows for the sub-device passes.
        self.command(
            conn,
            Command::SubDeviceOnline {
                key: Arc::clone(&request.key),
                acl: request.acl.clone(),
            },
        );
        if let Some(sid) = self.sessions.find(&request.key)
            && self.sessions.get(sid).is_some_and(|s| s.conn == Some(conn))
        {
            // Logged in again through the same gateway: its terms are the new login's.
            if let Some(session) = self.sessions.get_mut(sid) {
                session.acl = request.acl;
                session.features = request.features;
            }
            return;
        }
        let (sid, session_present) = self.take_session(&request, now);
        self.sessions.attach_carried(sid, conn, now);
        self.counters.gateway.logins += 1;
        if let (Some(carrier), Some(session)) = (
            self.carriers.by_conn.get_mut(&conn),
            self.sessions.get_mut(sid),
        ) {
            carrier.subs.insert(sid);
            // Renumbered on this connection; those that find no free id wait at the front of
            // the queue, in their order, to be sent when ids are freed.
            let mut waiting = Vec::new();
            for mut sent in core::mem::take(&mut session.inflight) {
                match carrier.allocate(sid) {
                    Some(packet_id) => {
                        sent.packet_id = packet_id;
                        session.inflight.push_back(sent);
                    }
                    None => waiting.push(sent),
                }
            }
            for sent in waiting.into_iter().rev() {
                session.push_queued_front(Queued {
                    message: sent.message,
                    at: now,
                    hold: None,
                    seq: sent.seq,
                    dup: true,
                });
            }
        }
        self.resume(sid, conn, request, session_present, now);
    }

    /// Logs `sub` out of the gateway's connection `conn`, if it carries it: the connection is
    /// told, the session goes offline. Whether it was carried.
    fn log_out(&mut self, conn: ConnId, sub: &DeviceIdentity, now: Instant) -> bool {
        let Some(sid) = self.carried_session(conn, sub) else {
            return false;
        };
        self.sessions.take_conn(sid);
        self.stop_carrying(conn, sid);
        self.counters.gateway.logouts += 1;
        self.went_offline(sid, now);
        true
    }

    /// `conn` no longer carries the session `sid` (its connection is already taken), and is
    /// told. Its deliveries still in flight stay in its session, to be sent again wherever it
    /// comes back; their packet ids stay taken on this connection until the gateway
    /// acknowledges them.
    pub(super) fn stop_carrying(&mut self, conn: ConnId, sid: SessionId) {
        if let Some(carrier) = self.carriers.by_conn.get_mut(&conn) {
            carrier.subs.remove(&sid);
            for owner in carrier.in_flight.values_mut() {
                if *owner == Some(sid) {
                    *owner = None;
                }
            }
        }
        if let Some(session) = self.sessions.get(sid) {
            let key = Arc::clone(&session.key);
            self.command(conn, Command::SubDeviceOffline(key));
        }
    }

    /// `conn` is gone or taken over: the sub-devices it carried go offline.
    pub(super) fn drop_carried(&mut self, conn: ConnId, now: Instant) {
        if self.carriers.by_conn.is_empty() {
            return;
        }
        let Some(carrier) = self.carriers.by_conn.remove(&conn) else {
            return;
        };
        for sid in carrier.subs {
            if self.sessions.get(sid).is_some_and(|s| s.conn == Some(conn)) {
                self.sessions.take_conn(sid);
                self.counters.gateway.dropped_with_gateway += 1;
                self.went_offline(sid, now);
            }
        }
    }
}

/// The features of a sub-device's session: its gateway's, and those its login's `clientId`
/// asks for (C 3.2 and Python log in with `…|_ss=1,…|`).
fn login_features(gateway: ClientFeatures, client_id: &str) -> ClientFeatures {
    let own = ClientId::parse(client_id).ok();
    ClientFeatures {
        auto_subscribe: gateway.auto_subscribe
            || own.as_ref().is_some_and(ClientId::auto_subscribe),
        rrpc_ext: gateway.rrpc_ext || own.as_ref().is_some_and(ClientId::rrpc_ext),
    }
}

/// `{"productKey","deviceName","deviceSecret"}`: a registered sub-device.
fn secret_data(sub: &DeviceIdentity, secret: &str) -> Value {
    let mut data = match identity_data(sub) {
        Value::Object(data) => data,
        _ => Map::new(),
    };
    data.insert("deviceSecret".into(), Value::String(secret.into()));
    Value::Object(data)
}

/// `{"productKey","deviceName","errorDetail":{"code","message"}}`: a proxied registration
/// refused.
fn failure_data(sub: &DeviceIdentity, code: AlinkCode) -> Value {
    let mut data = match identity_data(sub) {
        Value::Object(data) => data,
        _ => Map::new(),
    };
    let mut detail = Map::new();
    detail.insert("code".into(), Value::from(code.code));
    detail.insert("message".into(), Value::String(code.message.into()));
    data.insert("errorDetail".into(), Value::Object(detail));
    Value::Object(data)
}
