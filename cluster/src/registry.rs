//! The registry every node of a cluster shares: products and devices in one JetStream
//! key-value bucket ([`REGISTRY_BUCKET`]), each node's copy in memory kept fresh by a watch.
//!
//! - **Out**: each change a node's registry makes itself (the API's, dynamic registration, a
//!   first connect's activation, a gateway's topology) is told to this module as it is made
//!   ([`Registry::observe`]) and written to the bucket, one at a time in the order made, retried
//!   while NATS is away. A removal is written as an empty value (a tombstone), so that a node
//!   back from a long absence does not bring a removed device back, and so that the write
//!   gives its revision.
//! - **In**: every entry of the bucket, including this node's own, is applied to the
//!   registry ([`Registry::apply_shared`]) and kept in the node's store; a device removed or
//!   disabled elsewhere is disconnected here (a removed one loses its session).
//! - **At start**, the node merges the bucket's copy with its own ([`Registry::merge_shared`]):
//!   what it has that the bucket lacks is written; what its configuration declares keeps the
//!   configuration's secrets and categories.
//!
//! - **AccessKeys**: each node writes its configuration's (`k.<node>.<id>`, the secret as the
//!   value; one it no longer has, empty) and accepts every node's.
//!
//! The last write to a key wins, on every node: entries are applied in the bucket's order.
//! A node's own change is not undone meanwhile by an older entry of the same record: while
//! a record has writes of this node on the way, entries for it wait ([`Tracking`]), and entries
//! older than this node's last write of it are skipped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use aliot_auth::DeviceIdentity;
use aliot_core::hub::durable::StoreChange;
use aliot_io::broker::BrokerHandle;
use aliot_io::registry::{Registry, SharedApplied, SharedRecord};
use aliot_io::store::registry_records;
use async_nats::jetstream;
use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::StreamExt as _;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::{from_hex, key_part_from, open_bucket, push_hex, push_key_part};

/// The key-value bucket of the shared registry: `p.<product>` for each product, `d.<product>.<hex
/// of device name>` for each device (a product key that is not letters and digits, or starts
/// with `x`, is written in hex after an `x`); the value is
/// the record as the store keeps it, or empty for one removed.
pub const REGISTRY_BUCKET: &str = "aliot_registry";

/// How long a write NATS refused waits before it is tried again, and a broken watch before it
/// is made again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// The bucket key of a registry change's record; `None` for a change that is not the
/// registry's.
pub(crate) fn record_key(change: &StoreChange) -> Option<String> {
    let product_key = |product: &str| {
        let mut key = String::from("p.");
        push_key_part(&mut key, product);
        key
    };
    let device_key = |device: &DeviceIdentity| {
        let mut key = String::from("d.");
        push_key_part(&mut key, &device.product_key);
        key.push('.');
        push_hex(&mut key, &device.device_name);
        key
    };
    match change {
        StoreChange::ProductSaved(record) => Some(product_key(&record.key)),
        StoreChange::ProductRemoved(key) => Some(product_key(key)),
        StoreChange::RegisteredDeviceSaved(device) => Some(device_key(&device.identity)),
        StoreChange::RegisteredDeviceRemoved(identity) => Some(device_key(identity)),
        _ => None,
    }
}

/// The bucket key of a node's AccessKey: `k.<node>.<id>`, each as [`push_key_part`] writes it.
fn access_key_key(node: &str, id: &str) -> String {
    let mut key = String::from("k.");
    push_key_part(&mut key, node);
    key.push('.');
    push_key_part(&mut key, id);
    key
}

/// A registry change's value in the bucket: the record, or empty for a removal.
fn record_value(change: &StoreChange) -> Bytes {
    match change {
        StoreChange::ProductSaved(record) => registry_records::product_value(record).into(),
        StoreChange::RegisteredDeviceSaved(device) => registry_records::device_value(device).into(),
        _ => Bytes::new(),
    }
}

/// The record a bucket entry holds.
#[derive(Debug, PartialEq)]
enum Shared {
    Product(
        String,
        SharedRecord<aliot_core::hub::durable::ProductRecord>,
    ),
    Device(
        DeviceIdentity,
        SharedRecord<aliot_core::hub::durable::RegisteredDevice>,
    ),
    /// A node's `[[access_key]]`: the node, the id, the secret (`None`: no longer).
    AccessKey {
        node: String,
        id: String,
        secret: Option<String>,
    },
}

impl Shared {
    /// The entry's record; `None` for a key or value no node writes (logged by the caller).
    fn read(key: &str, value: &[u8], removed: bool) -> Option<Shared> {
        if let Some(rest) = key.strip_prefix("k.") {
            let (node, id) = rest.split_once('.')?;
            let secret = if removed || value.is_empty() {
                None
            } else {
                Some(String::from_utf8(value.to_vec()).ok()?)
            };
            return Some(Shared::AccessKey {
                node: key_part_from(node)?,
                id: key_part_from(id)?,
                secret,
            });
        }
        if let Some(product) = key.strip_prefix("p.") {
            let product = key_part_from(product)?;
            let record = if removed || value.is_empty() {
                SharedRecord::Removed
            } else {
                SharedRecord::Kept(registry_records::product_from(&product, value).ok()?)
            };
            return Some(Shared::Product(product, record));
        }
        let (product, name) = key.strip_prefix("d.")?.split_once('.')?;
        let identity = DeviceIdentity::new(key_part_from(product)?, from_hex(name)?);
        let record = if removed || value.is_empty() {
            SharedRecord::Removed
        } else {
            SharedRecord::Kept(registry_records::device_from(&identity, value).ok()?)
        };
        Some(Shared::Device(identity, record))
    }

    /// The change that makes a registry hold this; `None` for an AccessKey.
    fn change(self) -> Option<StoreChange> {
        Some(match self {
            Shared::Product(key, SharedRecord::Removed) => StoreChange::ProductRemoved(key),
            Shared::Product(_, SharedRecord::Kept(record)) => StoreChange::ProductSaved(record),
            Shared::Device(identity, SharedRecord::Removed) => {
                StoreChange::RegisteredDeviceRemoved(identity)
            }
            Shared::Device(_, SharedRecord::Kept(device)) => {
                StoreChange::RegisteredDeviceSaved(Box::new(device))
            }
            Shared::AccessKey { .. } => return None,
        })
    }
}

/// Which entries of the bucket wait, or are this node's own, per record.
#[derive(Default)]
struct Tracking {
    /// Records with this node's writes on the way, how many.
    writing: HashMap<String, u32>,
    /// Records this node wrote, with the revision of its last write, until the watch has
    /// passed it.
    written: HashMap<String, u64>,
    /// The newest entry of a record that came while this node's writes of it were on the way.
    waiting: HashMap<String, kv::Entry>,
    /// The newest revision the watch gave.
    seen: u64,
}

/// A record to write to the bucket.
struct Write {
    key: String,
    value: Bytes,
    /// `None`: whatever the bucket holds (this node's own change, made now). Else the merge's
    /// write, made only if the record is still as the merge read it: another node's write
    /// since is newer than the merge's view, and wins.
    expected: Option<Expected>,
}

/// What the bucket must hold for a merge's write to be made.
#[derive(Clone, Copy, Debug)]
enum Expected {
    /// No such record.
    Absent,
    /// The record at this revision.
    Revision(u64),
}

/// Told every AccessKey of the cluster (id and secret), this node's first, whenever they
/// change.
pub type AccessKeysObserver = Arc<dyn Fn(Vec<(String, String)>) + Send + Sync>;

/// The AccessKeys this node shares and learns.
#[derive(Default)]
struct AccessKeyShare {
    /// This node's, from its configuration.
    own: Vec<(String, String)>,
    observer: Option<AccessKeysObserver>,
    /// Every node's, as the bucket has them: (node, id) and secret.
    known: std::collections::BTreeMap<(String, String), String>,
}

/// One node's share of the cluster's registry.
pub(crate) struct SharedRegistry {
    node_id: String,
    jetstream: jetstream::Context,
    replicas: usize,
    bucket: tokio::sync::OnceCell<kv::Store>,
    sync: Mutex<Tracking>,
    writes: mpsc::UnboundedSender<Write>,
    writes_rx: Mutex<Option<mpsc::UnboundedReceiver<Write>>>,
    access_keys: Mutex<AccessKeyShare>,
    /// Changes this node wrote to the bucket.
    pub(crate) shared: AtomicU64,
    /// Changes of other nodes this node took.
    pub(crate) taken: AtomicU64,
}

impl SharedRegistry {
    pub(crate) fn new(node_id: &str, jetstream: jetstream::Context, replicas: usize) -> Self {
        let (writes, writes_rx) = mpsc::unbounded_channel();
        SharedRegistry {
            node_id: node_id.to_owned(),
            jetstream,
            replicas,
            bucket: tokio::sync::OnceCell::new(),
            sync: Mutex::new(Tracking::default()),
            writes,
            writes_rx: Mutex::new(Some(writes_rx)),
            access_keys: Mutex::new(AccessKeyShare::default()),
            shared: AtomicU64::new(0),
            taken: AtomicU64::new(0),
        }
    }

    fn sync(&self) -> MutexGuard<'_, Tracking> {
        self.sync.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn access_keys(&self) -> MutexGuard<'_, AccessKeyShare> {
        self.access_keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Shares this node's AccessKeys (`own`, id and secret) with the cluster, and tells
    /// `observer` every node's as they change. Call it before [`start`](Self::start).
    pub(crate) fn share_access_keys(
        &self,
        own: Vec<(String, String)>,
        observer: AccessKeysObserver,
    ) {
        let mut keys = self.access_keys();
        keys.own = own;
        keys.observer = Some(observer);
    }

    /// Learns (or forgets, `secret` `None`) another node's AccessKey; `true` when that changed
    /// what this node knows.
    fn learn_key(&self, node: String, id: String, secret: Option<String>) -> bool {
        if node == self.node_id {
            // This node's own come from its configuration.
            return false;
        }
        let mut keys = self.access_keys();
        match secret {
            Some(secret) => keys.known.insert((node, id), secret.clone()) != Some(secret),
            None => keys.known.remove(&(node, id)).is_some(),
        }
    }

    /// Tells the observer every AccessKey of the cluster: this node's, then the others' by
    /// node (an id another node has with another secret is left out, and logged).
    fn tell_access_keys(&self) {
        let keys = self.access_keys();
        let Some(observer) = keys.observer.clone() else {
            return;
        };
        let mut all = keys.own.clone();
        for ((node, id), secret) in &keys.known {
            if node == &self.node_id {
                continue;
            }
            match all.iter().find(|(known, _)| known == id) {
                Some((_, known)) if known != secret => {
                    warn!(node = %self.node_id, other = %node, access_key = %id,
                        "another node has this AccessKey with another secret; this one is kept");
                }
                Some(_) => {}
                None => all.push((id.clone(), secret.clone())),
            }
        }
        drop(keys);
        observer(all);
    }

    /// After the merge: this node's AccessKeys written as its configuration has them, those
    /// it no longer has written as removed.
    fn share_own_keys(&self) {
        let mut writes = Vec::new();
        {
            let mut keys = self.access_keys();
            let own = keys.own.clone();
            for (id, secret) in &own {
                let mine = (self.node_id.clone(), id.clone());
                if keys.known.get(&mine) != Some(secret) {
                    writes.push((
                        access_key_key(&self.node_id, id),
                        Bytes::from(secret.clone()),
                    ));
                }
            }
            let dropped: Vec<_> = keys
                .known
                .keys()
                .filter(|(node, id)| node == &self.node_id && !own.iter().any(|(own, _)| own == id))
                .cloned()
                .collect();
            for mine in dropped {
                keys.known.remove(&mine);
                writes.push((access_key_key(&mine.0, &mine.1), Bytes::new()));
            }
        }
        for (key, value) in writes {
            self.write_record(key, value, None);
        }
    }

    /// Starts sharing `broker`'s registry, if it has one: its changes go out from now on, the
    /// bucket's come in once it is merged.
    pub(crate) fn start(self: &Arc<Self>, broker: &BrokerHandle) {
        let Some(registry) = broker.registry().cloned() else {
            return;
        };
        let Some(writes) = crate::taken(&self.writes_rx) else {
            return;
        };
        let this = Arc::clone(self);
        let observed = registry.observe(Arc::new(move |change: &StoreChange| this.share(change)));
        if !observed {
            warn!(node = %self.node_id, "the registry is shared already; not sharing it twice");
            return;
        }
        let broker = broker.local();
        tokio::spawn(Arc::clone(self).write_changes(writes, broker.clone(), registry.clone()));
        tokio::spawn(Arc::clone(self).follow(broker, registry));
    }

    /// Queues a change of this node's registry for the bucket.
    fn share(&self, change: &StoreChange) {
        self.write(change.clone(), None);
    }

    /// Queues a write of `change`, made if the bucket holds what `expected` says.
    fn write(&self, change: StoreChange, expected: Option<Expected>) {
        if let Some(key) = record_key(&change) {
            self.write_record(key, record_value(&change), expected);
        }
    }

    /// Queues a write of `value` at `key`, made if the bucket holds what `expected` says.
    fn write_record(&self, key: String, value: Bytes, expected: Option<Expected>) {
        *self.sync().writing.entry(key.clone()).or_default() += 1;
        let _ = self.writes.send(Write {
            key,
            value,
            expected,
        });
    }

    /// The bucket, made if no node made it yet.
    async fn bucket(&self) -> Result<&kv::Store, String> {
        self.bucket
            .get_or_try_init(|| {
                open_bucket(
                    &self.jetstream,
                    REGISTRY_BUCKET,
                    "the aliot cluster's products, devices and AccessKeys",
                    self.replicas,
                )
            })
            .await
    }

    /// Writes this node's changes to the bucket, in the order they were made, each retried
    /// until NATS takes it.
    async fn write_changes(
        self: Arc<Self>,
        mut writes: mpsc::UnboundedReceiver<Write>,
        broker: BrokerHandle,
        registry: Registry,
    ) {
        while let Some(Write {
            key,
            value,
            expected,
        }) = writes.recv().await
        {
            let mut failures = 0u32;
            let revision = loop {
                let written = match self.bucket().await {
                    Ok(bucket) => put(bucket, &key, value.clone(), expected).await,
                    Err(error) => Err(Refused::Unreachable(error)),
                };
                match written {
                    Ok(revision) => break Some(revision),
                    Err(Refused::Newer) => break None,
                    Err(Refused::Unreachable(error)) => {
                        if failures == 0 {
                            warn!(node = %self.node_id, %key, %error,
                                "registry change not shared yet; retrying");
                        }
                        failures += 1;
                        tokio::time::sleep(RETRY_EVERY).await;
                    }
                }
            };
            let Some(revision) = revision else {
                debug!(node = %self.node_id, %key, "the cluster's copy changed since the merge read it; it wins");
                if let Some(entry) = self.written(&key, None) {
                    self.apply(&broker, &registry, [entry]).await;
                }
                continue;
            };
            self.shared.fetch_add(1, Ordering::Relaxed);
            debug!(node = %self.node_id, %key, revision, "registry change shared");
            if let Some(entry) = self.written(&key, Some(revision)) {
                self.apply(&broker, &registry, [entry]).await;
            }
        }
    }

    /// One of this node's writes of `key` is done, at `revision` (`None`: not made): the entry
    /// that waited for this node's writes of it, if they are all done and it is newer.
    fn written(&self, key: &str, revision: Option<u64>) -> Option<kv::Entry> {
        let mut sync = self.sync();
        let left = match sync.writing.get_mut(key) {
            Some(writing) => {
                *writing = writing.saturating_sub(1);
                *writing
            }
            None => 0,
        };
        if let Some(revision) = revision
            && sync.seen < revision
        {
            let last = sync.written.entry(key.to_owned()).or_default();
            *last = (*last).max(revision);
        }
        if left > 0 {
            return None;
        }
        sync.writing.remove(key);
        let last = sync.written.get(key).copied().unwrap_or(0);
        sync.waiting
            .remove(key)
            .filter(|entry| entry.revision > last)
    }

    /// Merges the bucket with this node's registry, then follows it: each entry is applied
    /// here, but this node's own and those of records it is writing.
    async fn follow(self: Arc<Self>, broker: BrokerHandle, registry: Registry) {
        let mut failures = 0u32;
        let mut merged = false;
        loop {
            let watched = match self.bucket().await {
                Ok(bucket) if merged => {
                    let from = self.sync().seen + 1;
                    bucket
                        .watch_all_from_revision(from)
                        .await
                        .map_err(|e| e.to_string())
                }
                Ok(bucket) => self.merge(bucket, &broker, &registry).await,
                Err(error) => Err(error),
            };
            let mut watch = match watched {
                Ok(watch) => watch,
                Err(error) => {
                    if failures == 0 {
                        warn!(node = %self.node_id, %error,
                            "the shared registry is out of reach; trying again");
                    }
                    failures += 1;
                    tokio::time::sleep(RETRY_EVERY).await;
                    continue;
                }
            };
            merged = true;
            failures = 0;
            while let Some(entry) = watch.next().await {
                match entry {
                    Ok(entry) => {
                        if let Some(entry) = self.received(entry) {
                            self.apply(&broker, &registry, [entry]).await;
                        }
                    }
                    Err(error) => {
                        debug!(node = %self.node_id, %error, "the registry's watch broke");
                        break;
                    }
                }
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }

    /// Reads the whole bucket, merges it with the registry, and gives the watch that follows
    /// what comes after.
    async fn merge(
        &self,
        bucket: &kv::Store,
        broker: &BrokerHandle,
        registry: &Registry,
    ) -> Result<kv::Watch, String> {
        let started = std::time::Instant::now();
        let mut watch = bucket
            .watch_with_history(">")
            .await
            .map_err(|e| e.to_string())?;
        let held = bucket.status().await.map_err(|e| e.to_string())?.values();
        let mut products = Vec::new();
        let mut devices = Vec::new();
        let mut revisions = HashMap::new();
        let mut current = held == 0;
        while !current {
            let Some(entry) = watch.next().await else {
                return Err("the registry's watch ended".into());
            };
            let entry = entry.map_err(|e| e.to_string())?;
            current = entry.delta == 0;
            let Some(entry) = self.received(entry) else {
                continue;
            };
            revisions.insert(entry.key.clone(), entry.revision);
            match self.read(&entry) {
                Some(Shared::Product(key, record)) => products.push((key, record)),
                Some(Shared::Device(identity, record)) => devices.push((identity, record)),
                Some(Shared::AccessKey { node, id, secret }) => {
                    let mut keys = self.access_keys();
                    match secret {
                        Some(secret) => keys.known.insert((node, id), secret),
                        None => keys.known.remove(&(node, id)),
                    };
                }
                None => {}
            }
        }
        self.share_own_keys();
        self.tell_access_keys();
        let (read_products, read_devices) = (products.len(), devices.len());
        let merge = registry.merge_shared(products, devices);
        let written = merge.to_share.len();
        for change in merge.to_share {
            let expected = match record_key(&change).and_then(|key| revisions.get(&key)) {
                Some(&revision) => Expected::Revision(revision),
                None => Expected::Absent,
            };
            self.write(change, Some(expected));
        }
        info!(node = %self.node_id, products = read_products, devices = read_devices,
            written, taken = merge.applied.len(), took_ms = started.elapsed().as_millis() as u64,
            "registry merged with the cluster's");
        self.taken
            .fetch_add(merge.applied.len() as u64, Ordering::Relaxed);
        keep_and_act(broker, merge.applied).await;
        Ok(watch)
    }

    /// What to do with an entry the watch gave: `None` when it is this node's own, older
    /// than this node's last write of its record, or waits for this node's writes of it.
    fn received(&self, entry: kv::Entry) -> Option<kv::Entry> {
        let mut sync = self.sync();
        sync.seen = sync.seen.max(entry.revision);
        if let Some(&last) = sync.written.get(&entry.key) {
            if entry.revision <= last {
                if entry.revision == last {
                    sync.written.remove(&entry.key);
                }
                return None;
            }
            sync.written.remove(&entry.key);
        }
        if sync.writing.contains_key(&entry.key) {
            sync.waiting.insert(entry.key.clone(), entry);
            return None;
        }
        Some(entry)
    }

    /// The record of an entry; `None` (logged) for one no node writes.
    fn read(&self, entry: &kv::Entry) -> Option<Shared> {
        let removed = entry.operation != kv::Operation::Put;
        let shared = Shared::read(&entry.key, &entry.value, removed);
        if shared.is_none() {
            warn!(node = %self.node_id, key = %entry.key, "not a registry record; skipped");
        }
        shared
    }

    /// Applies entries of other nodes to the registry, keeps what changed in the store and
    /// disconnects the devices they removed or disabled.
    async fn apply(
        &self,
        broker: &BrokerHandle,
        registry: &Registry,
        entries: impl IntoIterator<Item = kv::Entry>,
    ) {
        let mut applied = Vec::new();
        let mut keys_changed = false;
        for entry in entries {
            let shared = match self.read(&entry) {
                Some(Shared::AccessKey { node, id, secret }) => {
                    keys_changed |= self.learn_key(node, id, secret);
                    continue;
                }
                Some(shared) => shared,
                None => continue,
            };
            let Some(change) = shared.change() else {
                continue;
            };
            let outcome = registry.apply_shared(&change);
            debug!(node = %self.node_id, key = %entry.key, revision = entry.revision,
                ?outcome, "registry change taken");
            if outcome != SharedApplied::Unchanged {
                applied.push((change, outcome));
            }
        }
        if keys_changed {
            self.tell_access_keys();
        }
        self.taken
            .fetch_add(applied.len() as u64, Ordering::Relaxed);
        keep_and_act(broker, applied).await;
    }
}

/// Why a write was not made.
enum Refused {
    /// The bucket holds a newer record than the merge read.
    Newer,
    /// NATS did not take it.
    Unreachable(String),
}

/// Writes `value` at `key`, if the bucket holds what `expected` says; its revision.
async fn put(
    bucket: &kv::Store,
    key: &str,
    value: Bytes,
    expected: Option<Expected>,
) -> Result<u64, Refused> {
    match expected {
        None => bucket
            .put(key, value)
            .await
            .map_err(|e| Refused::Unreachable(e.to_string())),
        Some(Expected::Absent) => bucket.create(key, value).await.map_err(|e| {
            if e.kind() == kv::CreateErrorKind::AlreadyExists {
                Refused::Newer
            } else {
                Refused::Unreachable(e.to_string())
            }
        }),
        Some(Expected::Revision(revision)) => {
            bucket.update(key, value, revision).await.map_err(|e| {
                if e.kind() == kv::UpdateErrorKind::WrongLastRevision {
                    Refused::Newer
                } else {
                    Refused::Unreachable(e.to_string())
                }
            })
        }
    }
}

/// Keeps registry changes taken from the cluster in the node's store, and disconnects the
/// devices they removed (with their sessions) or disabled.
async fn keep_and_act(broker: &BrokerHandle, applied: Vec<(StoreChange, SharedApplied)>) {
    if applied.is_empty() {
        return;
    }
    let _ = broker
        .call_hub(move |hub, now| {
            for (change, outcome) in applied {
                hub.record_store_change(change);
                match outcome {
                    SharedApplied::DeviceRemoved(device) => {
                        hub.disconnect_device(&device, true, now);
                        hub.forget_device_presence(&device);
                    }
                    SharedApplied::DeviceDisabled(device) => {
                        hub.disconnect_device(&device, false, now);
                    }
                    SharedApplied::Changed | SharedApplied::Unchanged => {}
                }
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use aliot_core::hub::durable::{ProductRecord, RegisteredDevice};
    use aliot_services::UnixMillis;

    use super::*;

    #[test]
    fn records_read_back_from_their_keys_and_values() {
        let product = ProductRecord {
            key: "a1Prod".into(),
            name: "lamps".into(),
            secret: Some("s".into()),
            dynamic_registration: false,
            categories: vec![("/${productKey}/${deviceName}/user/get".into(), "sub".into())],
            created: UnixMillis(7),
            description: None,
        };
        let device = RegisteredDevice {
            identity: DeviceIdentity::new("a1Prod", "dev.1:x@y"),
            secret: "secret".into(),
            iot_id: "iot".into(),
            nickname: None,
            created: UnixMillis(8),
            activated: Some(UnixMillis(9)),
            disabled: true,
            token: None,
            gateway: None,
        };
        let changes = [
            StoreChange::ProductSaved(product.clone()),
            StoreChange::ProductRemoved("a.b".into()),
            StoreChange::RegisteredDeviceSaved(Box::new(device.clone())),
            StoreChange::RegisteredDeviceRemoved(device.identity.clone()),
        ];
        for change in changes {
            let key = record_key(&change).expect("a registry change");
            let value = record_value(&change);
            let read = Shared::read(&key, &value, false).expect("a record");
            assert_eq!(read.change(), Some(change), "{key}");
        }
        assert_eq!(
            record_key(&StoreChange::RegisteredDeviceSaved(Box::new(device))).as_deref(),
            Some("d.a1Prod.6465762e313a784079")
        );
        assert_eq!(
            Shared::read(&access_key_key("node-a", "LTAI.x"), b"s", false),
            Some(Shared::AccessKey {
                node: "node-a".into(),
                id: "LTAI.x".into(),
                secret: Some("s".into()),
            })
        );
        assert_eq!(Shared::read("q.a1Prod", b"", false), None);
        assert_eq!(Shared::read("d.a1Prod.zz", b"", false), None);
    }
}
