//! aliot brokers as one cluster on NATS: each device's session lives on one node, and any node
//! reaches any device.
//!
//! This crate is the [`ClusterLink`] of `aliot-io`'s broker, on NATS (async-nats is tokio-only,
//! so the cluster is a tokio feature). The design is in `../shared/DESIGN.md` ("A cluster on
//! NATS") and the choices made here in `docs/DESIGN-NOTES.md`:
//!
//! - **Who owns a device's session**: a JetStream key-value bucket ([`OWNERS_BUCKET`]), one key
//!   per device, written with compare-and-swap when the device connects ([`owner_key`]). The
//!   key's revision is the owner's epoch.
//! - **Calls to a device** (RRPC, the thing model's calls, OTA, a publish to that device
//!   alone): the caller's node finds the device's owner (remembered from an earlier call, else
//!   read from the bucket; a node that does not hold the device answers "not here") and sends
//!   the call to the owner's subject ([`node_subject`]) as a request. No owner, or an owner
//!   nobody answers for (a node that is down), means no node holds a session: the call is
//!   made locally, where the device is offline (RRPC answers `OFFLINE` at once).
//! - **Takeover**: a node that claims a device another node owned asks that node to hand the
//!   session over; its subscriptions and undelivered messages move ([`Hub::hand_over`],
//!   [`Hub::take_over`]). A node back from a crash or a partition gives what it kept to the
//!   device's owner.
//! - **Server-side publishes** (`Pub`, `PubBroadcast`) are made on every
//!   node: QoS 0 over core NATS ([`PUBLISH_SUBJECT`]), QoS 1 kept in a JetStream stream
//!   ([`KEPT_PUBLISHES_STREAM`]) with one durable consumer per node, so that a node away when
//!   it was made publishes it when it is back.
//!
//! - **The registry** (products and devices) is shared through a key-value bucket
//!   ([`REGISTRY_BUCKET`]), each node's copy kept fresh by a watch: a device registered
//!   through any node's API connects to any node.
//!
//! - **Consumer groups** of the server-side subscription: a node whose group has no consumer
//!   relays the group's messages to a node that has some ([`group_subject`]), so a consumer
//!   may connect to any node.
//!
//! Each node keeps its own devices' sessions and queues in its own store. While NATS is
//! unreachable, local devices keep working and calls to other nodes fail at once; claims made
//! meanwhile are retried once NATS is back.
//!
//! [`Hub::hand_over`]: aliot_core::hub::Hub::hand_over
//! [`Hub::take_over`]: aliot_core::hub::Hub::take_over

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use aliot_auth::DeviceIdentity;
use aliot_core::Message;
use aliot_core::codec::QoS;
use aliot_core::hub::SessionHandOver;
use aliot_io::broker::BrokerHandle;
pub use aliot_io::broker::cluster::ClusterStats;
use aliot_io::broker::cluster::{
    ClusterLink, DeviceAnswer, DeviceCall, LinkFuture, OwnershipChange,
};
use aliot_io::broker::{RrpcError, RrpcReply, ServiceError};
use async_nats::client::RequestErrorKind;
use async_nats::jetstream;
use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::StreamExt as _;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

mod gate;
mod groups;
mod registry;
mod wire;

pub use gate::NatsGate;
use groups::GroupRelays;
pub use groups::group_subject;
use registry::SharedRegistry;
pub use registry::{AccessKeysObserver, REGISTRY_BUCKET};

use wire::{AnswerHeader, CallHeader, PublishHeader};

/// The key-value bucket that says which node owns each device's session.
pub const OWNERS_BUCKET: &str = "aliot_owners";

/// The subject every node's QoS 0 server-side publishes go out on (core NATS: at most once).
pub const PUBLISH_SUBJECT: &str = "aliot.publish";

/// The stream that keeps QoS 1 server-side publishes until every node has taken them.
pub const KEPT_PUBLISHES_STREAM: &str = "ALIOT_PUBLISH";

/// The subject of [`KEPT_PUBLISHES_STREAM`].
pub const KEPT_PUBLISH_SUBJECT: &str = "aliot.publish.kept";

/// How long a node has to publish a kept publish it took before the stream gives it again.
const KEPT_PUBLISH_ACK_WAIT: Duration = Duration::from_secs(10);

/// How long the stream keeps a publish a node has not taken (a node away longer misses it:
/// ours, a day).
const KEPT_PUBLISHES_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// How long a call that waits for no device (a publish, a property set, a hand-over) waits for
/// the owner's answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// What an RRPC call waits for beyond the device's own time-out: the trip between nodes.
const RRPC_MARGIN: Duration = Duration::from_secs(2);

/// How many claims and releases a node has in flight at once (each device's in order).
const OWNERSHIP_WORKERS: usize = 32;

/// How many devices' owners a node remembers for its calls (about 100 bytes each).
const REMEMBERED_OWNERS: usize = 100_000;

/// How long a node waits for NATS at start before it starts without it.
const FIRST_CONNECT_WAIT: Duration = Duration::from_secs(3);

/// How long a node back from a crash or a partition keeps asking for the owner of a session
/// it kept before it believes the owner gone (the servers of a NATS cluster learn each other's
/// subscriptions within moments of a restart).
const OWNER_GONE_AFTER: Duration = Duration::from_secs(3);

/// How long a hand-over's parts wait for their claimer to fetch them; what it has not fetched
/// by then is lost (logged): the claimer died in the middle.
const PARKED_FOR: Duration = Duration::from_secs(60);

/// How long a node back from a restart waits for the publishes kept while it was away before
/// it claims or hands over the sessions it kept: longer than the stream's ack wait, after
/// which those it took before a crash and did not acknowledge come again.
const KEPT_PUBLISHES_CATCH_UP: Duration = Duration::from_secs(12);

/// How often claims that NATS could not take are tried again.
const RETRY_CLAIMS_EVERY: Duration = Duration::from_secs(1);

/// How a node joins its cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterOptions {
    /// The NATS servers' URLs (JetStream on), tried in turn.
    pub nats: Vec<String>,
    /// This node's name, unique in the cluster.
    pub node_id: String,
    /// How many NATS servers keep the owners' bucket, when this node creates it (1 for one
    /// NATS server; 3 on a cluster of three or more).
    pub replicas: usize,
}

/// The cluster could not be joined.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A NATS URL is not one.
    #[error("NATS server address: {0}")]
    Address(String),
    /// NATS refused the connection's options.
    #[error("cannot connect to NATS: {0}")]
    Connect(String),
}

#[derive(Default)]
struct Counters {
    claims: AtomicU64,
    sessions_taken: AtomicU64,
    sessions_handed: AtomicU64,
    calls_sent: AtomicU64,
    calls_served: AtomicU64,
    publishes_received: AtomicU64,
    sessions_adopted: AtomicU64,
    sessions_returned: AtomicU64,
}

/// One node's membership of the cluster: hand [`link`](Self::link) to the broker's
/// configuration, start the broker, then [`start`](Self::start) this with its handle.
#[derive(Clone)]
pub struct Cluster {
    node: Arc<Node>,
}

struct Node {
    id: String,
    replicas: usize,
    client: async_nats::Client,
    jetstream: jetstream::Context,
    /// The owners' bucket, once NATS gave it.
    owners: tokio::sync::OnceCell<kv::Store>,
    /// The stream of QoS 1 server-side publishes, once NATS gave it.
    kept_publishes: tokio::sync::OnceCell<jetstream::stream::Stream>,
    broker: OnceLock<BrokerHandle>,
    changes: mpsc::UnboundedSender<OwnershipChange>,
    changes_rx: Mutex<Option<mpsc::UnboundedReceiver<OwnershipChange>>>,
    publishes: mpsc::UnboundedSender<Bytes>,
    publishes_rx: Mutex<Option<mpsc::UnboundedReceiver<Bytes>>>,
    /// Each (re)connection to NATS, after which what this node owns is checked.
    reconnects_rx: Mutex<Option<mpsc::UnboundedReceiver<()>>>,
    /// The devices this node owns, with the revision of their key when it claimed them.
    owned: Mutex<HashMap<DeviceIdentity, u64>>,
    /// The owners of devices this node's server side called lately (at most
    /// [`REMEMBERED_OWNERS`]), so that a call reads the bucket only when this is wrong.
    remembered: Mutex<HashMap<DeviceIdentity, String>>,
    /// Claims to write once NATS is back (with whether the session was clean).
    unclaimed: Mutex<HashMap<DeviceIdentity, bool>>,
    counters: Counters,
    /// Whether this node's durable consumer of the kept publishes exists.
    following_publishes: std::sync::atomic::AtomicBool,
    /// Whether this node has taken the kept publishes made while it was away (raised once).
    kept_publishes_caught_up: tokio::sync::watch::Sender<bool>,
    /// The registry, shared with the other nodes.
    registry: Arc<SharedRegistry>,
    /// The consumer groups' relays between nodes.
    groups: Arc<GroupRelays>,
    /// Hand-overs too large for one answer, waiting for their claimers to fetch the rest.
    parked: Mutex<HashMap<DeviceIdentity, ParkedHandOver>>,
}

/// The rest of a hand-over its claimer fetches in parts ([`CallHeader::HandOverPart`]).
struct ParkedHandOver {
    claimer: String,
    messages: Vec<Message>,
    since: tokio::time::Instant,
}

/// Why a node claims a device.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ClaimKind {
    /// It connected here (the hub's claim): another node's ownership yields only while the
    /// device is still connected here.
    Connected,
    /// This node kept its session across a restart; nobody else owns it.
    Kept,
    /// The node that owns it (named) answers for it no more: this node's copy is the one,
    /// unless yet another node claimed it since.
    OwnerGone(String),
}

/// What a claim came to.
enum Claimed {
    /// This node owns the device, at this revision; `previous` owned it before.
    Owner {
        revision: u64,
        previous: Option<String>,
    },
    /// Another node owns it, by a newer claim than this one.
    OwnedBy(String),
}

impl Cluster {
    /// Connects to NATS. The connection is retried in the background if no server answers
    /// yet: the node starts and serves its own devices meanwhile.
    pub async fn connect(options: ClusterOptions) -> Result<Cluster, ClusterError> {
        let servers = options
            .nats
            .iter()
            .map(|url| url.parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ClusterError::Address(e.to_string()))?;
        let id = options.node_id.clone();
        let (reconnects, reconnects_rx) = mpsc::unbounded_channel();
        let client = async_nats::ConnectOptions::new()
            .name(format!("aliot {id}"))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .event_callback(move |event| {
                let id = id.clone();
                if matches!(event, async_nats::Event::Connected) {
                    let _ = reconnects.send(());
                }
                async move { info!(node = %id, %event, "NATS") }
            })
            .connect(servers)
            .await
            .map_err(|e| ClusterError::Connect(e.to_string()))?;
        // A node whose NATS is up starts connected; one whose NATS is not starts anyway.
        let deadline = tokio::time::Instant::now() + FIRST_CONNECT_WAIT;
        while client.connection_state() != async_nats::connection::State::Connected
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (changes, changes_rx) = mpsc::unbounded_channel();
        let (publishes, publishes_rx) = mpsc::unbounded_channel();
        let replicas = options.replicas.max(1);
        let registry = Arc::new(SharedRegistry::new(
            &options.node_id,
            jetstream::new(client.clone()),
            replicas,
        ));
        let groups = Arc::new(GroupRelays::new(&options.node_id, client.clone()));
        Ok(Cluster {
            node: Arc::new(Node {
                id: options.node_id,
                replicas,
                jetstream: jetstream::new(client.clone()),
                client,
                owners: tokio::sync::OnceCell::new(),
                kept_publishes: tokio::sync::OnceCell::new(),
                broker: OnceLock::new(),
                changes,
                changes_rx: Mutex::new(Some(changes_rx)),
                publishes,
                publishes_rx: Mutex::new(Some(publishes_rx)),
                reconnects_rx: Mutex::new(Some(reconnects_rx)),
                owned: Mutex::new(HashMap::new()),
                unclaimed: Mutex::new(HashMap::new()),
                remembered: Mutex::new(HashMap::new()),
                following_publishes: std::sync::atomic::AtomicBool::new(false),
                kept_publishes_caught_up: tokio::sync::watch::Sender::new(false),
                counters: Counters::default(),
                registry,
                groups,
                parked: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The link to put in [`BrokerConfig::cluster`](aliot_io::broker::BrokerConfig::cluster).
    pub fn link(&self) -> Arc<dyn ClusterLink> {
        Arc::clone(&self.node) as Arc<dyn ClusterLink>
    }

    /// This node's name.
    pub fn node_id(&self) -> &str {
        &self.node.id
    }

    /// Whether NATS is connected now.
    pub fn is_connected(&self) -> bool {
        self.node.client.connection_state() == async_nats::connection::State::Connected
    }

    /// The NATS client, for a [`NatsGate`].
    pub fn nats(&self) -> &async_nats::Client {
        &self.node.client
    }

    /// Starts serving the cluster with the broker this node runs (its [`BrokerConfig::cluster`]
    /// was [`link`](Self::link)): ownership claims, calls from other nodes, their publishes.
    /// Call it once; the tasks end with the tokio runtime.
    ///
    /// [`BrokerConfig::cluster`]: aliot_io::broker::BrokerConfig::cluster
    pub fn start(&self, broker: BrokerHandle) {
        if self.node.broker.set(broker.clone()).is_err() {
            return;
        }
        self.node.registry.start(&broker);
        self.node.groups.start(&broker);
        if let Some(changes) = taken(&self.node.changes_rx) {
            tokio::spawn(Arc::clone(&self.node).follow_ownership(changes));
        }
        if let Some(publishes) = taken(&self.node.publishes_rx) {
            tokio::spawn(Arc::clone(&self.node).send_publishes(publishes));
        }
        if let Some(reconnects) = taken(&self.node.reconnects_rx) {
            tokio::spawn(Arc::clone(&self.node).check_after_reconnects(reconnects));
        }
        tokio::spawn(Arc::clone(&self.node).answer_calls());
        tokio::spawn(Arc::clone(&self.node).receive_publishes());
        tokio::spawn(Arc::clone(&self.node).receive_kept_publishes());
        tokio::spawn(Arc::clone(&self.node).retry_claims());
    }

    /// Shares this node's AccessKeys (id and secret, from its configuration) with the other
    /// nodes through the registry's bucket, and tells `observer` every node's, this node's
    /// first, whenever they change: the OpenAPI and the AMQP listener of any node then accept
    /// any node's keys. Call it before [`start`](Self::start).
    pub fn share_access_keys(&self, own: Vec<(String, String)>, observer: AccessKeysObserver) {
        self.node.registry.share_access_keys(own, observer);
    }

    /// What this node counted.
    pub fn stats(&self) -> ClusterStats {
        self.node.stats()
    }
}

/// A key-value bucket of the cluster (one value per key), made with `replicas` if no node
/// made it yet.
async fn open_bucket(
    jetstream: &jetstream::Context,
    name: &str,
    description: &str,
    replicas: usize,
) -> Result<kv::Store, String> {
    match jetstream.get_key_value(name).await {
        Ok(store) => Ok(store),
        Err(_) => jetstream
            .create_key_value(kv::Config {
                bucket: name.into(),
                description: description.into(),
                history: 1,
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string()),
    }
}

/// What `slot` held, taken out of it.
fn taken<T>(slot: &Mutex<Option<T>>) -> Option<T> {
    slot.lock().unwrap_or_else(PoisonError::into_inner).take()
}

/// A device's key in [`OWNERS_BUCKET`]: its product key, `.`, its device name in hex. Device
/// names may hold `.`, `:` and `@`, which keys and subjects do not allow; product keys are
/// letters and digits (one that is not, or starts with `x`, is written in hex after an `x`).
pub fn owner_key(device: &DeviceIdentity) -> String {
    let mut key =
        String::with_capacity(device.product_key.len() + 2 + 2 * device.device_name.len());
    push_key_part(&mut key, &device.product_key);
    key.push('.');
    push_hex(&mut key, &device.device_name);
    key
}

/// Writes `s` as one token of a NATS key or subject that reads back unambiguously
/// ([`key_part_from`]): as it is when it is letters, digits, `_` and `-` and does not start
/// with `x`; else `x` and its bytes in hex.
pub(crate) fn push_key_part(out: &mut String, s: &str) {
    let plain = !s.is_empty()
        && !s.starts_with('x')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if plain {
        out.push_str(s);
    } else {
        out.push('x');
        push_hex(out, s);
    }
}

/// What [`push_key_part`] wrote; `None` for a token it cannot have written.
pub(crate) fn key_part_from(token: &str) -> Option<String> {
    match token.strip_prefix('x') {
        Some(hex) => from_hex(hex),
        None => (!token.is_empty()).then(|| token.to_owned()),
    }
}

/// The text whose UTF-8 bytes `hex` gives, two lowercase digits each.
pub(crate) fn from_hex(hex: &str) -> Option<String> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(hex.get(at..at + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// The subject a node answers calls to its devices on: `aliot.node.` and its id (letters,
/// digits, `-` and `_`: one token).
pub fn node_subject(node_id: &str) -> String {
    format!("aliot.node.{node_id}")
}

fn push_hex(out: &mut String, s: &str) {
    for byte in s.bytes() {
        let _ = write!(out, "{byte:02x}");
    }
}

impl Node {
    fn owned(&self) -> std::sync::MutexGuard<'_, HashMap<DeviceIdentity, u64>> {
        self.owned.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn remembered_owner(&self, device: &DeviceIdentity) -> Option<String> {
        let remembered = self
            .remembered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        remembered.get(device).cloned()
    }

    fn remember_owner(&self, device: &DeviceIdentity, owner: &str) {
        let mut remembered = self
            .remembered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if remembered.len() >= REMEMBERED_OWNERS {
            // Forgotten all at once: cheap, and read again as calls need them.
            remembered.clear();
        }
        remembered.insert(device.clone(), owner.to_owned());
    }

    fn forget_owner(&self, device: &DeviceIdentity) {
        let mut remembered = self
            .remembered
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        remembered.remove(device);
    }

    fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    async fn owners(&self) -> Result<&kv::Store, String> {
        self.owners
            .get_or_try_init(|| {
                open_bucket(
                    &self.jetstream,
                    OWNERS_BUCKET,
                    "which aliot node holds each device's session",
                    self.replicas,
                )
            })
            .await
    }

    /// Applies the hub's claims and releases: those of one device one at a time, in the hub's
    /// order, by one of [`OWNERSHIP_WORKERS`] workers (the devices spread over them by hash),
    /// so that a reconnect storm waits for many round trips to the bucket at once, not in turn.
    async fn follow_ownership(
        self: Arc<Self>,
        mut changes: mpsc::UnboundedReceiver<OwnershipChange>,
    ) {
        // The sessions kept across a restart are claimed (or given back) beside the new
        // claims, which do not wait for them.
        let reclaiming = Arc::clone(&self);
        tokio::spawn(async move { reclaiming.reclaim_restored().await });
        let workers: Vec<_> = (0..OWNERSHIP_WORKERS)
            .map(|_| {
                let (worker, work) = mpsc::unbounded_channel();
                tokio::spawn(Arc::clone(&self).apply_changes(work));
                worker
            })
            .collect();
        while let Some(change) = changes.recv().await {
            let device = match &change {
                OwnershipChange::Claimed { device, .. } | OwnershipChange::Released { device } => {
                    device
                }
            };
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            std::hash::Hash::hash(device, &mut hasher);
            let worker = std::hash::Hasher::finish(&hasher) as usize % OWNERSHIP_WORKERS;
            let _ = workers[worker].send(change);
        }
    }

    /// One worker of [`follow_ownership`](Self::follow_ownership): its devices' changes, in
    /// order.
    async fn apply_changes(self: Arc<Self>, mut work: mpsc::UnboundedReceiver<OwnershipChange>) {
        while let Some(change) = work.recv().await {
            match change {
                OwnershipChange::Claimed {
                    device,
                    clean_session,
                } => self.claim(device, clean_session).await,
                OwnershipChange::Released { device } => self.release(device).await,
            }
        }
    }

    /// Makes this node the owner of `device`'s session, takes it over from the previous owner
    /// and answers calls to the device.
    async fn claim(self: &Arc<Self>, device: DeviceIdentity, clean_session: bool) {
        self.claim_as(device, clean_session, ClaimKind::Connected)
            .await;
    }

    async fn claim_as(
        self: &Arc<Self>,
        device: DeviceIdentity,
        clean_session: bool,
        kind: ClaimKind,
    ) {
        debug!(node = %self.id, %device, clean_session, ?kind, "claiming");
        if !self.connected() {
            self.unclaimed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(device, clean_session);
            return;
        }
        match self.write_claim(&device, &kind).await {
            Ok(Claimed::Owner { revision, previous }) => {
                self.counters.claims.fetch_add(1, Ordering::Relaxed);
                self.owned().insert(device.clone(), revision);
                if let Some(previous) = previous.filter(|node| *node != self.id) {
                    self.take_session_from(&device, &previous, clean_session)
                        .await;
                }
            }
            Ok(Claimed::OwnedBy(owner)) => {
                // A later connection elsewhere won: what this node has goes there.
                info!(node = %self.id, %device, %owner, "claim overtaken by a newer one");
                self.owned().remove(&device);
                self.keep_or_return(device, owner).await;
            }
            Err(error) => {
                warn!(node = %self.id, %device, %error, "ownership claim failed; retried");
                self.unclaimed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(device, clean_session);
            }
        }
    }

    /// Writes this node as the device's owner (compare-and-swap on the key's revision, retried
    /// while other nodes race). Another node's ownership is overwritten only if the device is
    /// connected here at that moment (or `kind` says its owner is gone): a claim that took
    /// long, for a connection since ended, does not undo a newer one.
    async fn write_claim(
        &self,
        device: &DeviceIdentity,
        kind: &ClaimKind,
    ) -> Result<Claimed, String> {
        let owners = self.owners().await?;
        let key = owner_key(device);
        let me = Bytes::from(self.id.clone());
        let mut last = String::new();
        for _ in 0..8 {
            let entry = owners.entry(key.clone()).await.map_err(|e| e.to_string())?;
            let previous = entry
                .as_ref()
                .filter(|entry| entry.operation == kv::Operation::Put)
                .map(|entry| String::from_utf8_lossy(&entry.value).into_owned());
            // Another node's ownership yields to a device connected here now, and to nothing
            // else; a claim for an owner judged gone yields to any other owner since.
            if let Some(owner) = previous.as_ref().filter(|owner| **owner != self.id) {
                let yields = match kind {
                    ClaimKind::Connected => !self.connected_here(device).await,
                    ClaimKind::Kept => true,
                    ClaimKind::OwnerGone(gone) => owner != gone,
                };
                if yields {
                    return Ok(Claimed::OwnedBy(owner.clone()));
                }
            }
            let written = match &entry {
                None => owners
                    .create(&key, me.clone())
                    .await
                    .map_err(|e| e.to_string()),
                Some(entry) => owners
                    .update(&key, me.clone(), entry.revision)
                    .await
                    .map_err(|e| e.to_string()),
            };
            match written {
                Ok(revision) => return Ok(Claimed::Owner { revision, previous }),
                Err(error) => last = error,
            }
        }
        Err(format!("eight writes failed, the last: {last}"))
    }

    /// Whether this node's hub keeps a session of `device`, online or not.
    async fn holds_here(&self, device: &DeviceIdentity) -> bool {
        let Some(broker) = self.broker.get() else {
            return false;
        };
        let device = device.clone();
        broker
            .call_hub(move |hub, _| hub.holds_session(&device))
            .await
            .unwrap_or(false)
    }

    /// Whether `device` has a connection to this node now.
    async fn connected_here(&self, device: &DeviceIdentity) -> bool {
        let Some(broker) = self.broker.get() else {
            return false;
        };
        let device = device.clone();
        broker
            .call_hub(move |hub, _| hub.is_online(&device))
            .await
            .unwrap_or(false)
    }

    /// The sessions the hub holds at start (its store's): each is claimed again, or given to
    /// the node its device moved to while this one was down.
    async fn reclaim_restored(self: &Arc<Self>) {
        let Some(broker) = self.broker.get() else {
            return;
        };
        let Ok(devices) = broker.call_hub(|hub, _| hub.device_sessions()).await else {
            return;
        };
        if devices.is_empty() {
            return;
        }
        info!(node = %self.id, sessions = devices.len(), "claiming the sessions kept across the restart");
        // What was published while this node was away joins its kept sessions first, so that
        // a session handed to the node its device moved to carries it.
        let mut caught_up = self.kept_publishes_caught_up.subscribe();
        let waited = tokio::time::timeout(KEPT_PUBLISHES_CATCH_UP, caught_up.wait_for(|up| *up));
        if self.connected() && waited.await.is_err() {
            warn!(node = %self.id, "the publishes kept while this node was away are not all taken yet; claiming anyway");
        }
        for device in devices {
            // One that reconnected here already is claimed by its connection.
            if self.connected_here(&device).await {
                continue;
            }
            let owner = match self.owner_of(&device).await {
                Ok(owner) => owner,
                Err(error) => {
                    warn!(node = %self.id, %device, %error, "owner unknown; claimed when NATS answers");
                    None
                }
            };
            match owner {
                Some(owner) if owner != self.id => self.keep_or_return(device, owner).await,
                // Nobody has it, or it is ours: ours (again).
                _ => self.claim_as(device, false, ClaimKind::Kept).await,
            }
        }
    }

    /// After each reconnection to NATS, the devices this node owned are checked against the
    /// bucket: one another node claimed while this one could not hear it is no longer this
    /// node's to serve. Its session here goes to that node (or stays, claimed again, if that
    /// node is gone too): a partitioned node that lost a device does not deliver for it.
    async fn check_after_reconnects(self: Arc<Self>, mut reconnects: mpsc::UnboundedReceiver<()>) {
        while reconnects.recv().await.is_some() {
            // The reconnection's own subscriptions first.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let owned: Vec<DeviceIdentity> = self.owned().keys().cloned().collect();
            for device in owned {
                match self.owner_of(&device).await {
                    Ok(Some(owner)) if owner != self.id => {
                        info!(node = %self.id, %device, %owner, "ownership lost while NATS was away");
                        self.owned().remove(&device);
                        self.keep_or_return(device, owner).await;
                    }
                    _ => {}
                }
            }
        }
    }

    /// This node has a session of `device`, which `owner` owns by the bucket: given to it if
    /// it answers for the device, else claimed back.
    fn keep_or_return(
        self: &Arc<Self>,
        device: DeviceIdentity,
        owner: String,
    ) -> LinkFuture<'_, ()> {
        // Boxed, and said to be Send: claims and this call each other (a claim whose owner is
        // gone comes back here only for a newer owner), and this is retried in a task.
        Box::pin(async move {
            match self.holds_elsewhere(&device, &owner).await {
                Some(true) => self.return_session(&device, &owner).await,
                Some(false) => {
                    self.claim_as(device, false, ClaimKind::OwnerGone(owner))
                        .await;
                }
                None => {
                    // The owner neither answered nor is known gone: the session stays here,
                    // and the question is asked again later.
                    let node = Arc::clone(self);
                    tokio::spawn(async move {
                        tokio::time::sleep(OWNER_GONE_AFTER).await;
                        node.keep_or_return(device, owner).await;
                    });
                }
            }
        })
    }

    /// Who owns `device` by the bucket.
    async fn owner_of(&self, device: &DeviceIdentity) -> Result<Option<String>, String> {
        if !self.connected() {
            return Err("NATS is not connected".into());
        }
        let owners = self.owners().await?;
        let entry = owners
            .entry(owner_key(device))
            .await
            .map_err(|e| e.to_string())?;
        Ok(entry
            .filter(|entry| entry.operation == kv::Operation::Put)
            .map(|entry| String::from_utf8_lossy(&entry.value).into_owned()))
    }

    /// Whether `owner` answers for `device`'s session now.
    ///
    /// Asked right after a (re)connection, when the NATS server this node reached may not know
    /// yet who listens elsewhere in its cluster: nobody listening is believed only after
    /// [`OWNER_GONE_AFTER`].
    ///
    /// `Some(false)`: it does not, or nobody answers for that node; `None`: no answer (a time-out,
    /// NATS away), which says neither.
    async fn holds_elsewhere(&self, device: &DeviceIdentity, owner: &str) -> Option<bool> {
        let deadline = tokio::time::Instant::now() + OWNER_GONE_AFTER;
        loop {
            let request = async_nats::Request::new()
                .payload(wire::request(device, CallHeader::Holds, &[]))
                .timeout(Some(CALL_TIMEOUT));
            match self.client.send_request(node_subject(owner), request).await {
                Ok(reply) => {
                    return Some(matches!(
                        wire::unframe::<AnswerHeader>(&reply.payload),
                        Ok((AnswerHeader::Done { taken: 1.. }, _))
                    ));
                }
                Err(error) if error.kind() == RequestErrorKind::NoResponders => {
                    if tokio::time::Instant::now() >= deadline {
                        return Some(false);
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(error) => {
                    debug!(node = %self.id, %device, owner, %error, "the owner does not answer");
                    return None;
                }
            }
        }
    }

    /// Gives the session this node kept of `device` to `owner`, which holds it now.
    async fn return_session(&self, device: &DeviceIdentity, owner: &str) {
        let Some(broker) = self.broker.get() else {
            return;
        };
        let wanted = device.clone();
        let Ok(Some(handed)) = broker
            .call_hub(move |hub, now| hub.hand_over(&wanted, false, now))
            .await
        else {
            return;
        };
        let moved = handed.messages.len();
        // In parts when it is large: the first with the subscriptions.
        let mut sent = 0;
        let mut first = true;
        let mut result = Ok(());
        while first || sent < moved {
            let rest = &handed.messages[sent..];
            let len = wire::part_len(rest);
            let subscriptions = if first {
                &handed.subscriptions[..]
            } else {
                &[]
            };
            let body = wire::encode_hand_over_part(subscriptions, &rest[..len], rest.len() - len);
            let header = CallHeader::Adopt {
                from: self.id.clone(),
                part: !first,
            };
            result = self.adopt(device, owner, header, body).await;
            if result.is_err() {
                break;
            }
            sent += len;
            first = false;
        }
        match result {
            Ok(()) => {
                self.counters
                    .sessions_returned
                    .fetch_add(1, Ordering::Relaxed);
                info!(node = %self.id, %device, to = owner, moved, "kept session given to the device's node");
            }
            Err(error) => {
                let lost = moved - sent;
                warn!(node = %self.id, %device, to = owner, moved, lost, %error, "kept session lost on its way to the device's node");
            }
        }
    }

    /// Gives one part of a kept session to `owner` (`Adopt`).
    async fn adopt(
        &self,
        device: &DeviceIdentity,
        owner: &str,
        header: CallHeader,
        body: Bytes,
    ) -> Result<(), String> {
        let request = async_nats::Request::new()
            .payload(wire::request(device, header, &[&body]))
            .timeout(Some(CALL_TIMEOUT));
        let reply = self
            .client
            .send_request(node_subject(owner), request)
            .await
            .map_err(|error| error.to_string())?;
        match wire::unframe::<AnswerHeader>(&reply.payload) {
            Ok((AnswerHeader::Done { .. }, _)) => Ok(()),
            Ok((other, _)) => Err(format!("{other:?}")),
            Err(error) => Err(error.to_string()),
        }
    }

    /// Asks the node that owned `device` for its session and adds it to the hub's.
    async fn take_session_from(&self, device: &DeviceIdentity, previous: &str, discard: bool) {
        let Some(broker) = self.broker.get() else {
            return;
        };
        let request = wire::request(
            device,
            CallHeader::HandOver {
                claimer: self.id.clone(),
                discard,
            },
            &[],
        );
        let asked = self
            .client
            .send_request(
                node_subject(previous),
                async_nats::Request::new()
                    .payload(request)
                    .timeout(Some(CALL_TIMEOUT)),
            )
            .await;
        let reply = match asked {
            Ok(reply) => reply,
            Err(error) if error.kind() == RequestErrorKind::NoResponders => {
                info!(node = %self.id, %device, previous, "previous owner gone: its session is not here");
                return;
            }
            Err(error) => {
                warn!(node = %self.id, %device, previous, %error, "session hand-over failed");
                return;
            }
        };
        let (handed, mut more) = match wire::decode_hand_over(&reply.payload) {
            Ok(part) => part,
            Err(error) => {
                warn!(node = %self.id, %device, %error, "session hand-over unreadable");
                return;
            }
        };
        let mut moved = handed.messages.len();
        let wanted = device.clone();
        let _ = broker
            .call_hub(move |hub, now| hub.take_over(&wanted, handed, now))
            .await;
        // The rest, in parts, in order.
        let parts = more > 0;
        while more > 0 {
            let header = CallHeader::HandOverPart {
                claimer: self.id.clone(),
                from: moved,
            };
            let Some((part, left)) = self.hand_over_part(device, previous, header).await else {
                warn!(node = %self.id, %device, previous, lost = more, "session hand-over cut short");
                return;
            };
            if part.messages.is_empty() {
                warn!(node = %self.id, %device, previous, lost = more, "session hand-over part empty");
                return;
            }
            moved += part.messages.len();
            more = left;
            let wanted = device.clone();
            let _ = broker
                .call_hub(move |hub, now| hub.take_over_more(&wanted, part.messages, now))
                .await;
        }
        if parts {
            let header = CallHeader::HandOverDone {
                claimer: self.id.clone(),
            };
            let request = wire::request(device, header, &[]);
            let _ = self.client.request(node_subject(previous), request).await;
        }
        self.counters.sessions_taken.fetch_add(1, Ordering::Relaxed);
        debug!(node = %self.id, previous, moved, "session taken over");
    }

    /// One part of a hand-over from `previous` (asked up to three times: asking again is
    /// harmless); `None` when it did not come.
    async fn hand_over_part(
        &self,
        device: &DeviceIdentity,
        previous: &str,
        header: CallHeader,
    ) -> Option<(SessionHandOver, usize)> {
        let request = wire::request(device, header, &[]);
        for _ in 0..3 {
            let asked = self
                .client
                .send_request(
                    node_subject(previous),
                    async_nats::Request::new()
                        .payload(request.clone())
                        .timeout(Some(CALL_TIMEOUT)),
                )
                .await;
            match asked.map(|reply| wire::decode_hand_over(&reply.payload)) {
                Ok(Ok(part)) => return Some(part),
                Ok(Err(error)) => {
                    debug!(node = %self.id, %device, previous, %error, "hand-over part refused");
                    return None;
                }
                Err(error) => {
                    debug!(node = %self.id, %device, previous, %error, "hand-over part: asking again");
                }
            }
        }
        None
    }

    /// The device's session ended here: the key goes (unless another node claimed it since)
    /// and nobody here answers for it.
    async fn release(&self, device: DeviceIdentity) {
        self.unclaimed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&device);
        let Some(revision) = self.owned().remove(&device) else {
            return;
        };
        if !self.connected() {
            return;
        }
        if let Ok(owners) = self.owners().await
            && let Err(error) = owners
                .delete_expect_revision(owner_key(&device), Some(revision))
                .await
        {
            debug!(node = %self.id, %device, %error, "ownership not released (claimed elsewhere)");
        }
    }

    /// Answers the calls other nodes send this one (`aliot.node.<id>`): calls to its devices,
    /// and requests about their sessions. Each in a task of its own (an RRPC call waits for its
    /// device).
    async fn answer_calls(self: Arc<Self>) {
        let mut requests = match self.client.subscribe(node_subject(&self.id)).await {
            Ok(requests) => requests,
            Err(error) => {
                warn!(node = %self.id, %error, "cannot answer the other nodes' calls");
                return;
            }
        };
        while let Some(request) = requests.next().await {
            let Some(reply) = request.reply else {
                continue;
            };
            let node = Arc::clone(&self);
            tokio::spawn(async move {
                let answer = node.answer(&request.payload).await;
                let len = answer.len();
                if let Err(error) = node.client.publish(reply, answer).await {
                    warn!(node = %node.id, len, %error, "answer to another node not sent");
                }
            });
        }
    }

    fn parked(&self) -> std::sync::MutexGuard<'_, HashMap<DeviceIdentity, ParkedHandOver>> {
        self.parked.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The answer that hands `handed` to `claimer`: all of it, or its first part with the rest
    /// parked for the claimer to fetch (a NATS message carries 1 MiB at most by default).
    fn first_part(
        &self,
        device: DeviceIdentity,
        claimer: String,
        handed: SessionHandOver,
    ) -> Bytes {
        let len = wire::part_len(&handed.messages);
        let more = handed.messages.len() - len;
        let frame =
            wire::encode_hand_over_part(&handed.subscriptions, &handed.messages[..len], more);
        let mut parked = self.parked();
        parked.retain(|device, parked| {
            let waiting = parked.since.elapsed() < PARKED_FOR;
            if !waiting {
                warn!(node = %self.id, %device, claimer = %parked.claimer, messages = parked.messages.len(),
                    "hand-over not fetched in time: its messages are lost");
            }
            waiting
        });
        if more > 0 {
            parked.insert(
                device,
                ParkedHandOver {
                    claimer,
                    messages: handed.messages,
                    since: tokio::time::Instant::now(),
                },
            );
        }
        frame
    }

    /// The answer to one request of another node.
    async fn answer(&self, request: &Bytes) -> Bytes {
        let failed = |reason: String| wire::frame(&AnswerHeader::Failed { reason }, &[]);
        let Some(broker) = self.broker.get().map(BrokerHandle::local) else {
            return failed("the broker has not started".into());
        };
        let wire::Request { device, call } = match wire::decode_call(request) {
            Ok(request) => request,
            Err(error) => return failed(error.to_string()),
        };
        match call {
            Ok(_) if !self.owned().contains_key(&device) => {
                // The caller remembered an owner that is not this node any more.
                wire::frame(&AnswerHeader::NotHere, &[])
            }
            Ok(call) => {
                self.counters.calls_served.fetch_add(1, Ordering::Relaxed);
                match answer_call(&broker, &device, call).await {
                    Some(answer) => wire::encode_answer(&answer),
                    None => failed("the broker has stopped".into()),
                }
            }
            Err((CallHeader::HandOver { claimer, discard }, _)) => {
                self.owned().remove(&device);
                let wanted = device.clone();
                let handed = broker
                    .call_hub(move |hub, now| hub.hand_over(&wanted, discard, now))
                    .await
                    .ok()
                    .flatten();
                self.counters
                    .sessions_handed
                    .fetch_add(1, Ordering::Relaxed);
                info!(node = %self.id, %device, to = %claimer, "session handed over");
                match handed {
                    Some(handed) => self.first_part(device, claimer, handed),
                    None => wire::encode_hand_over_part(&[], &[], 0),
                }
            }
            Err((CallHeader::HandOverPart { claimer, from }, _)) => {
                let parked = self.parked();
                match parked.get(&device).filter(|p| p.claimer == claimer) {
                    Some(parked) => {
                        let rest = parked.messages.get(from..).unwrap_or_default();
                        let len = wire::part_len(rest);
                        wire::encode_hand_over_part(&[], &rest[..len], rest.len() - len)
                    }
                    None => failed(format!("no hand-over of {device} waits for {claimer}")),
                }
            }
            Err((CallHeader::HandOverDone { claimer }, _)) => {
                let mut parked = self.parked();
                if parked.get(&device).is_some_and(|p| p.claimer == claimer) {
                    parked.remove(&device);
                }
                wire::frame(&AnswerHeader::Done { taken: 0 }, &[])
            }
            Err((CallHeader::Holds, _)) => {
                let taken = usize::from(self.owned().contains_key(&device));
                wire::frame(&AnswerHeader::Done { taken }, &[])
            }
            Err((CallHeader::Adopt { from, part }, body)) => match wire::decode_hand_over(&body) {
                Ok((handed, _)) => {
                    let wanted = device.clone();
                    let taken = broker
                        .call_hub(move |hub, now| match part {
                            false => hub.take_over(&wanted, handed, now),
                            true => hub.take_over_more(&wanted, handed.messages, now),
                        })
                        .await
                        .unwrap_or(0);
                    if !part {
                        self.counters
                            .sessions_adopted
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    info!(node = %self.id, %device, %from, taken, part, "session adopted from a node back from a crash or a partition");
                    wire::frame(&AnswerHeader::Done { taken }, &[])
                }
                Err(error) => failed(error.to_string()),
            },
            Err((_, _)) => failed("not a request about a session".into()),
        }
    }

    /// Claims NATS could not take are written once it is back.
    async fn retry_claims(self: Arc<Self>) {
        loop {
            tokio::time::sleep(RETRY_CLAIMS_EVERY).await;
            if !self.connected() {
                continue;
            }
            let pending: Vec<(DeviceIdentity, bool)> = self
                .unclaimed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .drain()
                .collect();
            for (device, clean) in pending {
                // Only a session still here is claimed (a release since took it out too).
                if !self.holds_here(&device).await {
                    continue;
                }
                debug!(node = %self.id, %device, "claim retried");
                let _ = self.changes.send(OwnershipChange::Claimed {
                    device,
                    clean_session: clean,
                });
            }
        }
    }

    async fn send_publishes(self: Arc<Self>, mut publishes: mpsc::UnboundedReceiver<Bytes>) {
        while let Some(frame) = publishes.recv().await {
            if let Err(error) = self.client.publish(PUBLISH_SUBJECT, frame).await {
                warn!(node = %self.id, %error, "publish to the other nodes failed");
            }
        }
    }

    /// The stream that keeps QoS 1 server-side publishes for the other nodes (created by the
    /// first node that needs it).
    async fn kept_publishes(&self) -> Result<&jetstream::stream::Stream, String> {
        self.kept_publishes
            .get_or_try_init(|| async {
                self.jetstream
                    .get_or_create_stream(jetstream::stream::Config {
                        name: KEPT_PUBLISHES_STREAM.into(),
                        description: Some(
                            "QoS 1 server-side publishes of aliot nodes, kept until every node took them".into(),
                        ),
                        subjects: vec![KEPT_PUBLISH_SUBJECT.into()],
                        retention: jetstream::stream::RetentionPolicy::Interest,
                        max_age: KEPT_PUBLISHES_MAX_AGE,
                        num_replicas: self.replicas,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| e.to_string())
            })
            .await
    }

    /// Takes the other nodes' QoS 1 publishes from the stream, through this node's durable
    /// consumer, and publishes each here before acknowledging it: one made while this node
    /// was away (down, cut off) is published when it is back.
    async fn receive_kept_publishes(self: Arc<Self>) {
        let Some(broker) = self.broker.get().map(BrokerHandle::local) else {
            return;
        };
        loop {
            if self.connected()
                && let Err(error) = self.follow_kept_publishes(&broker).await
            {
                debug!(node = %self.id, %error, "kept publishes: following again");
            }
            tokio::time::sleep(RETRY_CLAIMS_EVERY).await;
        }
    }

    async fn follow_kept_publishes(&self, broker: &BrokerHandle) -> Result<(), String> {
        let name = format!("aliot-node-{}", self.id);
        let consumer = self
            .kept_publishes()
            .await?
            .get_or_create_consumer(
                &name,
                jetstream::consumer::pull::Config {
                    durable_name: Some(name.clone()),
                    description: Some(format!("aliot node {}", self.id)),
                    // A new node starts with what comes from now on; a known one where it was.
                    deliver_policy: jetstream::consumer::DeliverPolicy::New,
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    // One this node took and did not acknowledge (it died first) comes again.
                    ack_wait: KEPT_PUBLISH_ACK_WAIT,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        self.following_publishes.store(true, Ordering::Relaxed);
        // Caught up once nothing waits for this node: neither undelivered, nor delivered before
        // a crash and not acknowledged (those come again after the ack wait).
        if !*self.kept_publishes_caught_up.borrow() {
            let mut watched = consumer.clone();
            let caught_up = self.kept_publishes_caught_up.clone();
            tokio::spawn(async move {
                loop {
                    match watched.info().await {
                        Ok(info) if info.num_pending == 0 && info.num_ack_pending == 0 => {
                            caught_up.send_replace(true);
                            return;
                        }
                        Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                        Err(_) => return,
                    }
                }
            });
        }
        let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
        while let Some(message) = messages.next().await {
            let message = message.map_err(|e| e.to_string())?;
            if let Ok((header, payload)) = wire::unframe::<PublishHeader>(&message.payload)
                && header.node != self.id
                && let (Ok(topic), Ok(qos)) =
                    (wire::topic(&header.topic), wire::qos_from(header.qos))
            {
                // Published here (and, with a store, durable) before the stream lets it go.
                broker
                    .publish(topic, payload, qos)
                    .await
                    .map_err(|e| e.to_string())?;
                self.counters
                    .publishes_received
                    .fetch_add(1, Ordering::Relaxed);
            }
            message.ack().await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    async fn receive_publishes(self: Arc<Self>) {
        let Some(broker) = self.broker.get().map(BrokerHandle::local) else {
            return;
        };
        let mut publishes = match self.client.subscribe(PUBLISH_SUBJECT).await {
            Ok(publishes) => publishes,
            Err(error) => {
                warn!(node = %self.id, %error, "cannot receive the other nodes' publishes");
                return;
            }
        };
        while let Some(message) = publishes.next().await {
            let Ok((header, payload)) = wire::unframe::<PublishHeader>(&message.payload) else {
                continue;
            };
            if header.node == self.id {
                continue;
            }
            let (Ok(topic), Ok(qos)) = (wire::topic(&header.topic), wire::qos_from(header.qos))
            else {
                continue;
            };
            if broker.publish(topic, payload, qos).await.is_ok() {
                self.counters
                    .publishes_received
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// What a call whose owner did not answer in time (or answered what cannot be read) comes
/// to: RRPC and synchronous service calls end `UNKNOWN` (the device may have been called;
/// the call's message id is not known here: 0); the others are made here, where the device
/// is offline, as they have no way to say "unknown".
fn unknown_outcome(call: &DeviceCall) -> Option<DeviceAnswer> {
    match call {
        DeviceCall::Rrpc { .. } | DeviceCall::InvokeServiceSync { .. } => {
            Some(DeviceAnswer::Rrpc(Ok(RrpcReply {
                message_id: aliot_topic::MessageId(0),
                outcome: aliot_core::hub::RrpcOutcome::Unknown,
            })))
        }
        _ => None,
    }
}

/// Makes a call another node carried here, on this node's broker alone. `None`: the broker
/// has stopped.
async fn answer_call(
    broker: &BrokerHandle,
    device: &DeviceIdentity,
    call: DeviceCall,
) -> Option<DeviceAnswer> {
    let rrpc = |answer: Result<_, RrpcError>| match answer {
        Ok(reply) => Some(DeviceAnswer::Rrpc(Ok(reply))),
        Err(RrpcError::Rejected(refused)) => Some(DeviceAnswer::Rrpc(Err(refused))),
        Err(RrpcError::BrokerStopped) => None,
    };
    match call {
        DeviceCall::Publish {
            topic,
            payload,
            qos,
        } => Some(DeviceAnswer::Delivery(
            broker.publish_to_device(device, topic, payload, qos).await,
        )),
        DeviceCall::Rrpc {
            payload,
            timeout,
            topic: None,
        } => rrpc(broker.rrpc(device, payload, timeout).await),
        DeviceCall::Rrpc {
            payload,
            timeout,
            topic: Some(topic),
        } => rrpc(broker.rrpc_on_topic(device, &topic, payload, timeout).await),
        DeviceCall::SetProperty { items } => broker
            .set_device_property(device, items)
            .await
            .ok()
            .map(|(id, delivery)| DeviceAnswer::Downlink(id, delivery)),
        DeviceCall::InvokeService { identifier, args } => broker
            .invoke_service(device, &identifier, args)
            .await
            .ok()
            .map(|(id, delivery)| DeviceAnswer::Downlink(id, delivery)),
        DeviceCall::InvokeServiceSync {
            identifier,
            args,
            timeout,
        } => match broker
            .invoke_service_sync(device, &identifier, args, timeout)
            .await
        {
            Ok(reply) => Some(DeviceAnswer::Rrpc(Ok(reply))),
            Err(ServiceError::Rejected(refused)) => Some(DeviceAnswer::Rrpc(Err(refused))),
            Err(_) => None,
        },
        DeviceCall::StartOta { job } => broker
            .start_ota(device, job)
            .await
            .ok()
            .map(DeviceAnswer::Delivery),
    }
}

impl ClusterLink for Node {
    fn ownership_changed(&self, change: OwnershipChange) {
        let _ = self.changes.send(change);
    }

    fn call_device<'a>(
        &'a self,
        device: &'a DeviceIdentity,
        call: DeviceCall,
    ) -> LinkFuture<'a, Option<DeviceAnswer>> {
        Box::pin(async move {
            // Unreachable NATS: the call fails now, not after a time-out.
            if !self.connected() {
                return None;
            }
            let timeout = match &call {
                DeviceCall::Rrpc { timeout, .. }
                | DeviceCall::InvokeServiceSync { timeout, .. } => *timeout + RRPC_MARGIN,
                _ => CALL_TIMEOUT,
            };
            // The owner: remembered from an earlier call, else read from the bucket (and then
            // remembered). None, or this node (a stale entry: the hub holds no session), means
            // the call is made here. A remembered owner that answers "not here", or not at all,
            // is forgotten and the bucket read once more.
            let mut remembered = self.remembered_owner(device);
            loop {
                let (owner, from_memory) = match remembered.take() {
                    Some(owner) => (owner, true),
                    None => match self.owner_of(device).await {
                        Ok(Some(owner)) if owner != self.id => {
                            self.remember_owner(device, &owner);
                            (owner, false)
                        }
                        Ok(_) => return None,
                        Err(error) => {
                            warn!(node = %self.id, %device, %error, "owner unknown: the call is made here");
                            return None;
                        }
                    },
                };
                let request = async_nats::Request::new()
                    .payload(wire::encode_call(device, &call))
                    .timeout(Some(timeout));
                let answered = self
                    .client
                    .send_request(node_subject(&owner), request)
                    .await;
                let gone = match answered {
                    Ok(reply) => match wire::decode_answer(&reply.payload) {
                        Ok(Some(answer)) => {
                            self.counters.calls_sent.fetch_add(1, Ordering::Relaxed);
                            return Some(answer);
                        }
                        // The node does not hold the device (any more).
                        Ok(None) => true,
                        Err(error) => {
                            warn!(node = %self.id, %device, %error, "the owner's answer is unusable");
                            return unknown_outcome(&call);
                        }
                    },
                    Err(error) if error.kind() == RequestErrorKind::NoResponders => true,
                    Err(error) => {
                        // The owner may have made the call: it is not said to be offline.
                        warn!(node = %self.id, %device, %error, "call to the device's node failed");
                        return unknown_outcome(&call);
                    }
                };
                if gone {
                    self.forget_owner(device);
                    if !from_memory {
                        // The bucket's own answer: nobody answers for the device.
                        return None;
                    }
                }
            }
        })
    }

    fn stats(&self) -> ClusterStats {
        let c = &self.counters;
        ClusterStats {
            node_id: self.id.clone(),
            connected: self.connected(),
            owned: self.owned().len() as u64,
            claims: c.claims.load(Ordering::Relaxed),
            claims_pending: self
                .unclaimed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len() as u64,
            sessions_taken: c.sessions_taken.load(Ordering::Relaxed),
            sessions_handed: c.sessions_handed.load(Ordering::Relaxed),
            sessions_adopted: c.sessions_adopted.load(Ordering::Relaxed),
            sessions_returned: c.sessions_returned.load(Ordering::Relaxed),
            calls_sent: c.calls_sent.load(Ordering::Relaxed),
            calls_served: c.calls_served.load(Ordering::Relaxed),
            publishes_received: c.publishes_received.load(Ordering::Relaxed),
            following_publishes: self.following_publishes.load(Ordering::Relaxed),
            registry_changes_shared: self.registry.shared.load(Ordering::Relaxed),
            registry_changes_taken: self.registry.taken.load(Ordering::Relaxed),
            relayed_out: self.groups.relayed_out.load(Ordering::Relaxed),
            relayed_in: self.groups.relayed_in.load(Ordering::Relaxed),
            relay_dropped: self.groups.too_large.load(Ordering::Relaxed),
        }
    }

    fn consumers_here(&self, group: &str, present: bool) {
        self.groups.consumers_here(group, present);
    }

    fn publish_elsewhere<'a>(&'a self, message: &'a Message) -> LinkFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let header = PublishHeader {
                node: self.id.clone(),
                topic: message.topic.as_str().to_owned(),
                qos: wire::qos_byte(message.qos),
            };
            let frame = wire::frame(&header, &[&message.payload]);
            if message.qos == QoS::AtMostOnce {
                // At most once, as QoS 0 is: core NATS, in order.
                let _ = self.publishes.send(frame);
                return Ok(());
            }
            // At least once: kept in the stream before the caller is answered.
            if !self.connected() {
                return Err("NATS is not connected".into());
            }
            self.kept_publishes().await?;
            self.jetstream
                .publish(KEPT_PUBLISH_SUBJECT, frame)
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_subjects_hold_no_separator_of_nats() {
        let device = DeviceIdentity {
            product_key: "a1Prod".into(),
            device_name: "dev.1:x@y".into(),
        };
        assert_eq!(owner_key(&device), "a1Prod.6465762e313a784079");
        assert_eq!(node_subject("node-a"), "aliot.node.node-a");
        let odd = DeviceIdentity {
            product_key: "a.b".into(),
            device_name: "d".into(),
        };
        assert_eq!(owner_key(&odd), "x612e62.64");
        // A product key starting with x is written in hex too: no plain key can collide
        // with a hex one.
        let x = DeviceIdentity {
            product_key: "x612e62".into(),
            device_name: "d".into(),
        };
        assert_eq!(owner_key(&x), "x78363132653632.64");
        for part in ["a1Prod", "a.b", "x612e62", "x", "dev.1:x@y"] {
            let mut key = String::new();
            push_key_part(&mut key, part);
            assert_eq!(key_part_from(&key).as_deref(), Some(part));
        }
        assert_eq!(key_part_from("x6"), None);
        assert_eq!(key_part_from(""), None);
    }
}
