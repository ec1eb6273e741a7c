//! An in-memory broker for conversation tests: the hub and its server connections wired
//! together, bytes moved by hand, time moved by hand (a manual clock, nothing sleeps).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aliot_auth::{DeviceIdentity, DeviceSecret, MemoryRegistry, SecureMode, SignMethod};
use aliot_core::codec::{
    Connect, Decoder, Packet, PacketId, ProtocolVersion, PubAck, Publish, PublishQos, QoS,
    Subscribe, Utf8Bytes,
};
use aliot_core::hub::durable::{Restored, StoreImage};
use aliot_core::hub::{
    BacklogMessage, ConnId, ConsumerId, Hub, HubConfig, HubOutput, RrpcOutcome, SubDeviceDirectory,
};
use aliot_core::server::{self, Event, ServerConfig};
use aliot_core::{Authenticator, Instant, PlatformAuthenticator};
use aliot_services::UnixMillis;
use aliot_topic::{MessageId, Permission, ProductCategories};
use bytes::{Bytes, BytesMut};

/// The product every test device belongs to.
pub const PK: &str = "a1TestProd";

/// The secret of a test device.
pub fn secret(device_name: &str) -> DeviceSecret {
    DeviceSecret::new(format!("secret-of-{device_name}"))
}

/// The identity of a test device.
pub fn identity(device_name: &str) -> DeviceIdentity {
    DeviceIdentity::new(PK, device_name)
}

/// A registry with the test product (defaults plus `/user/get` sub and `/user/update` pub)
/// and the given devices.
pub fn registry(devices: &[&str]) -> MemoryRegistry {
    let mut categories = ProductCategories::defaults();
    categories
        .add_custom("/${productKey}/${deviceName}/user/get", Permission::Sub)
        .unwrap();
    categories
        .add_custom("/${productKey}/${deviceName}/user/update", Permission::Pub)
        .unwrap();
    let mut registry = MemoryRegistry::new();
    registry.add_product(PK, categories);
    for device in devices {
        registry.add_device(PK, device, secret(device)).unwrap();
    }
    registry
}

/// A registry that gives each device the platform's id `iot-{deviceName}`, as a broker's
/// registry gives each a generated one.
pub struct WithIotIds(pub MemoryRegistry);

impl aliot_auth::DeviceRegistry for WithIotIds {
    fn lookup(&self, product_key: &str, device_name: &str) -> Option<aliot_auth::DeviceRecord> {
        let mut record = self.0.lookup(product_key, device_name)?;
        record.iot_id = Some(format!("iot-{device_name}"));
        Some(record)
    }
}

/// The wall clock at the manual clock's start, in ms since the Unix epoch.
pub const WALL_AT_START: u64 = 1_700_000_000_000;

/// A CONNECT signed the platform's way for a test device.
pub fn signed_connect(device_name: &str, clean_session: bool, keep_alive: u16) -> Connect {
    signed_connect_with(device_name, clean_session, keep_alive, "")
}

/// A signed CONNECT whose client id extension has `extra` pairs (`_ss=1,ext=3`) too: they
/// are not signed, as on the platform.
pub fn signed_connect_with(
    device_name: &str,
    clean_session: bool,
    keep_alive: u16,
    extra: &str,
) -> Connect {
    let credentials = aliot_auth::sign(
        &identity(device_name),
        &secret(device_name),
        SignMethod::HmacSha256,
        &format!("{PK}.{device_name}"),
        Some("1700000000000"),
        SecureMode::Tcp,
    );
    let client_id = match extra {
        "" => credentials.client_id,
        extra => {
            let open = credentials.client_id.trim_end_matches('|');
            format!("{open},{extra}|")
        }
    };
    Connect {
        protocol: ProtocolVersion::V3_1_1,
        client_id: Utf8Bytes::try_from(client_id).unwrap(),
        clean_session,
        keep_alive,
        username: Some(Utf8Bytes::try_from(credentials.username).unwrap()),
        password: Some(Bytes::from(credentials.password)),
        will: None,
    }
}

/// A plain CONNECT for open mode.
pub fn plain_connect(client_id: &str, clean_session: bool) -> Connect {
    Connect {
        protocol: ProtocolVersion::V3_1_1,
        client_id: Utf8Bytes::try_from(client_id).unwrap(),
        clean_session,
        keep_alive: 60,
        username: None,
        password: None,
        will: None,
    }
}

/// A packet id.
pub fn pid(id: u16) -> PacketId {
    PacketId::new(id).unwrap()
}

/// A PUBLISH packet.
pub fn publish(topic: &str, payload: &str, qos: QoS, id: u16) -> Packet {
    let qos = match qos {
        QoS::AtMostOnce => PublishQos::AtMostOnce,
        _ => PublishQos::AtLeastOnce(pid(id)),
    };
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: Utf8Bytes::try_from(topic).unwrap(),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
    })
}

/// A SUBSCRIBE packet.
pub fn subscribe(id: u16, filters: &[(&str, QoS)]) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: pid(id),
        filters: filters
            .iter()
            .map(|(f, q)| (Utf8Bytes::try_from(*f).unwrap(), *q))
            .collect(),
    })
}

/// A PUBACK packet.
pub fn puback(id: PacketId) -> Packet {
    Packet::PubAck(PubAck { packet_id: id })
}

/// The hub and its server connections, in memory.
/// Answers a dynamic registration with the command for its connection.
pub type Registrar = Box<dyn FnMut(&aliot_auth::RegistrationRequest) -> server::Command>;

pub struct Broker {
    /// The manual clock.
    pub now: Instant,
    /// The hub under test.
    pub hub: Hub,
    /// Live server connections.
    pub conns: BTreeMap<ConnId, server::Connection>,
    /// Every close, with the reason as the adapter would log it.
    pub closed: Vec<(ConnId, String)>,
    /// Every RRPC outcome, in order.
    pub outcomes: Vec<(MessageId, RrpcOutcome)>,
    /// Every message handed to a consumer of the server-side subscription, in order.
    pub forwarded: Vec<(ConsumerId, Arc<BacklogMessage>, bool)>,
    /// In a cluster: every claim (device, clean session) and release, in order, as
    /// `(device, Some(clean))` and `(device, None)`.
    pub ownership: Vec<(DeviceIdentity, Option<bool>)>,
    /// In a cluster: each consumer group that got its first consumer here (`true`) or lost its
    /// last, in order.
    pub consumers_here: Vec<(Arc<str>, bool)>,
    /// Packets each connection has sent that no test has looked at yet.
    pub unread: BTreeMap<ConnId, Vec<Packet>>,
    /// What a store has committed, when the broker keeps one ([`durable`](Self::durable)):
    /// the changes of each turn are applied before its outputs reach the connections.
    pub store: Option<StoreImage>,
    /// Set to crash at the next commit: the turn's changes and outputs are lost, as in a
    /// crash before its transaction commits; [`restart`](Self::restart) follows.
    pub crash_at_next_commit: bool,
    /// Whether the last commit crashed (and nothing has run since).
    pub crashed: bool,
    /// Answers dynamic registrations before the hub sees them, as the broker's registry
    /// does; `None`: they reach the hub.
    pub registrar: Option<Registrar>,
    /// Whether connections accepted from now on are TLS.
    pub tls: bool,
    /// The device the TLS-PSK handshake of connections accepted from now on proved, if any.
    pub psk_device: Option<Arc<DeviceIdentity>>,
    /// Answers gateways' requests with what it knows, as the broker's registry does; `None`:
    /// the hub answers them as a broker without a registry.
    pub directory: Option<Arc<dyn SubDeviceDirectory>>,
    hub_config: HubConfig,
    authenticator: Arc<dyn Authenticator + Send + Sync>,
    config: ServerConfig,
    next_conn: u64,
}

impl Broker {
    /// A broker that knows the given devices (platform authentication only).
    pub fn new(devices: &[&str]) -> Self {
        Self::with(
            devices,
            false,
            HubConfig::default(),
            ServerConfig::default(),
        )
    }

    /// A broker in open mode that also knows the given devices.
    pub fn open(devices: &[&str]) -> Self {
        Self::with(devices, true, HubConfig::default(), ServerConfig::default())
    }

    /// A broker with explicit configuration.
    pub fn with(devices: &[&str], open: bool, hub: HubConfig, config: ServerConfig) -> Self {
        let authenticator =
            PlatformAuthenticator::new(WithIotIds(registry(devices))).with_open_mode(open);
        let hub_config = hub.clone();
        let mut hub = Hub::new(hub);
        hub.set_wall_clock(UnixMillis(WALL_AT_START + 1_000_000));
        Broker {
            now: Instant::from_millis(1_000_000),
            hub,
            conns: BTreeMap::new(),
            closed: Vec::new(),
            outcomes: Vec::new(),
            forwarded: Vec::new(),
            ownership: Vec::new(),
            consumers_here: Vec::new(),
            unread: BTreeMap::new(),
            store: None,
            crash_at_next_commit: false,
            crashed: false,
            registrar: None,
            tls: false,
            psk_device: None,
            directory: None,
            hub_config,
            authenticator: Arc::new(authenticator),
            config,
            next_conn: 1,
        }
    }

    /// A broker that knows the given devices and keeps a store in memory.
    /// It is in open mode, so that a generic client ([`connect_client`](Self::connect_client))
    /// may publish to any device's topics.
    pub fn durable(devices: &[&str], hub: HubConfig) -> Self {
        let mut broker = Self::with(devices, true, hub, ServerConfig::default());
        broker.hub.record_store_changes();
        broker.store = Some(StoreImage::default());
        broker.hub.restore_rrpc_ids(0);
        broker.commit();
        broker
    }

    /// Commits the hub's changes to the store; `false` if it crashed instead.
    fn commit(&mut self) -> bool {
        let Some(store) = &mut self.store else {
            return true;
        };
        let mut changes = Vec::new();
        self.hub.take_store_changes(&mut changes);
        if self.crash_at_next_commit && !changes.is_empty() {
            self.crash_at_next_commit = false;
            self.crashed = true;
            return false;
        }
        for change in changes {
            store.apply(change);
        }
        true
    }

    /// The broker process ends (every connection with it, nothing sent) and starts again from
    /// its store, `downtime` later; the connections' transports are gone.
    pub fn restart(&mut self, downtime: Duration) -> Restored {
        self.conns.clear();
        self.unread.clear();
        self.crashed = false;
        self.now = self.now + downtime;
        let mut hub = Hub::new(self.hub_config.clone());
        hub.record_store_changes();
        hub.set_wall_clock(UnixMillis(WALL_AT_START + self.now.as_millis()));
        let image = self.store.clone().expect("a durable broker");
        let authenticator = Arc::clone(&self.authenticator);
        let restored = hub.restore(&image, |key| authenticator.session_acl(key), self.now);
        self.hub = hub;
        assert!(self.commit(), "the restore's own changes commit");
        restored
    }

    /// The authenticator the connections ask.
    pub fn authenticator(&self) -> &Arc<dyn Authenticator + Send + Sync> {
        &self.authenticator
    }

    /// A new transport connection.
    pub fn accept(&mut self) -> ConnId {
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        let conn = server::Connection::new(
            self.config.clone(),
            self.authenticator.clone(),
            aliot_core::AuthContext {
                wall_clock_ms: None,
                tls: self.tls,
                client_ip: None,
                psk_device: self.psk_device.clone(),
            },
            self.now,
        );
        self.conns.insert(id, conn);
        id
    }

    /// Bytes from the device.
    pub fn input(&mut self, conn: ConnId, bytes: &[u8]) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.handle_input(self.now, bytes);
        }
        self.pump();
    }

    /// A packet from the device.
    pub fn send(&mut self, conn: ConnId, packet: Packet) {
        let mut buf = BytesMut::new();
        packet.encode(&mut buf).unwrap();
        self.input(conn, &buf);
    }

    /// Everything the broker has sent to the device since the last call, decoded.
    pub fn output(&mut self, conn: ConnId) -> Vec<Packet> {
        let mut buf = BytesMut::new();
        if let Some(c) = self.conns.get_mut(&conn) {
            c.poll_transmit(&mut buf);
            // The device has read it all: written.
            c.handle_written(buf.len());
        }
        let decoder = Decoder::default();
        let mut packets = self.unread.remove(&conn).unwrap_or_default();
        while let Some(packet) = decoder
            .decode(&mut buf)
            .expect("the broker sent a valid packet")
        {
            packets.push(packet);
        }
        assert!(buf.is_empty(), "a partial packet was left over");
        packets
    }

    /// Moves the clock and fires every deadline that passed.
    pub fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        // Step through deadlines in order, so that each fires at its own time.
        loop {
            let next = self
                .conns
                .values()
                .filter_map(|c| c.poll_timeout())
                .chain(self.hub.poll_timeout())
                .filter(|t| *t <= until)
                .min();
            let Some(at) = next else { break };
            self.now = at.max(self.now);
            self.hub
                .set_wall_clock(UnixMillis(WALL_AT_START + self.now.as_millis()));
            for c in self.conns.values_mut() {
                c.handle_timeout(self.now);
            }
            self.hub.handle_timeout(self.now);
            self.pump();
        }
        self.now = until;
        self.hub
            .set_wall_clock(UnixMillis(WALL_AT_START + self.now.as_millis()));
        self.pump();
    }

    /// The transport of `conn` broke.
    pub fn drop_transport(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.handle_transport_closed();
        }
        self.pump();
    }

    /// Whether the connection is closed.
    pub fn is_closed(&self, conn: ConnId) -> bool {
        self.conns.get(&conn).is_none_or(|c| c.is_closed())
    }

    /// The logged close reason of `conn`, if it closed.
    pub fn close_reason(&self, conn: ConnId) -> Option<&str> {
        self.closed
            .iter()
            .find(|(c, _)| *c == conn)
            .map(|(_, r)| r.as_str())
    }

    /// Moves events to the hub and commands to the connections until nothing moves.
    pub fn pump(&mut self) {
        loop {
            let mut moved = false;
            for (&id, conn) in self.conns.iter_mut() {
                loop {
                    // Every conversation also checks that has_event announces poll_event.
                    let announced = conn.has_event();
                    let event = conn.poll_event();
                    assert_eq!(
                        announced,
                        event.is_some(),
                        "has_event disagrees with poll_event"
                    );
                    let Some(event) = event else {
                        break;
                    };
                    moved = true;
                    if let Event::Closed(reason) = &event {
                        self.closed.push((id, reason.to_string()));
                    }
                    if let (Event::RegistrationRequested(request), Some(registrar)) =
                        (&event, &mut self.registrar)
                    {
                        let command = registrar(request);
                        conn.handle_command(self.now, command);
                        continue;
                    }
                    if let Some(directory) = &self.directory
                        && let Event::GatewayRequest {
                            request,
                            message,
                            packet_id,
                        } = event
                    {
                        let reply = self.hub.handle_gateway_request(
                            id,
                            *request,
                            message,
                            packet_id,
                            &**directory,
                            self.now,
                        );
                        // Sent with the turn's outputs, after its commit.
                        if let Some(reply) = reply {
                            self.hub.send_gateway_reply(reply, self.now);
                        }
                        continue;
                    }
                    self.hub.handle_event(id, event, self.now);
                }
            }
            if self.crashed {
                return;
            }
            if !self.commit() {
                // Nothing of this turn reaches anyone.
                while self.hub.poll_output().is_some() {}
                return;
            }
            while let Some(output) = self.hub.poll_output() {
                moved = true;
                match output {
                    HubOutput::Connection { conn, command } => {
                        if let Some(c) = self.conns.get_mut(&conn) {
                            c.handle_command(self.now, command);
                        }
                    }
                    HubOutput::RrpcOutcome { id, outcome } => self.outcomes.push((id, outcome)),
                    HubOutput::Forward {
                        consumer,
                        message,
                        redelivery,
                    } => self.forwarded.push((consumer, message, redelivery)),
                    HubOutput::Claim {
                        device,
                        clean_session,
                    } => self.ownership.push((device, Some(clean_session))),
                    HubOutput::Release { device } => self.ownership.push((device, None)),
                    HubOutput::ConsumersHere { group, present } => {
                        self.consumers_here.push((group, present));
                    }
                }
            }
            if !moved {
                break;
            }
        }
    }

    /// Connects a device with signed credentials and checks CONNACK 0; returns the
    /// connection and the session-present flag. What follows the CONNACK (a resumed
    /// session's deliveries) is left for the next [`output`](Self::output).
    pub fn connect_device(&mut self, device_name: &str, clean_session: bool) -> (ConnId, bool) {
        self.connect_device_with(device_name, clean_session, "")
    }

    /// [`connect_device`](Self::connect_device) with `extra` client id pairs (`_ss=1,ext=3`).
    pub fn connect_device_with(
        &mut self,
        device_name: &str,
        clean_session: bool,
        extra: &str,
    ) -> (ConnId, bool) {
        let conn = self.accept();
        self.send(
            conn,
            Packet::from(signed_connect_with(device_name, clean_session, 60, extra)),
        );
        let mut packets = self.output(conn);
        assert!(!packets.is_empty(), "no CONNACK");
        let rest = packets.split_off(1);
        self.unread.insert(conn, rest);
        match packets.as_slice() {
            [Packet::ConnAck(ack)] => {
                assert_eq!(ack.code, aliot_core::codec::ConnectReturnCode::Accepted);
                (conn, ack.session_present)
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Connects a generic client (open mode) and checks CONNACK 0.
    pub fn connect_client(&mut self, client_id: &str, clean_session: bool) -> ConnId {
        let conn = self.accept();
        self.send(conn, Packet::from(plain_connect(client_id, clean_session)));
        match self.output(conn).as_slice() {
            [Packet::ConnAck(ack)]
                if ack.code == aliot_core::codec::ConnectReturnCode::Accepted =>
            {
                conn
            }
            other => panic!("expected CONNACK 0, got {other:?}"),
        }
    }

    /// Publishes from the server side (the platform's Pub) and moves everything it caused;
    /// returns how many sessions it reached.
    pub fn publish(&mut self, topic: &str, payload: impl Into<Bytes>, qos: QoS) -> usize {
        let topic = aliot_topic::TopicName::new(topic, &Default::default()).unwrap();
        let published = self
            .hub
            .publish(aliot_core::Message::new(topic, payload, qos), self.now);
        self.pump();
        published.reached
    }

    /// The outcome of an RRPC call, if it ended.
    pub fn outcome(&self, id: MessageId) -> Option<&RrpcOutcome> {
        self.outcomes.iter().find(|(i, _)| *i == id).map(|(_, o)| o)
    }
}

/// The PUBLISH packets among `packets`.
pub fn publishes(packets: &[Packet]) -> Vec<&Publish> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some(p),
            _ => None,
        })
        .collect()
}
