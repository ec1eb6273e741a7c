//! The registry every node of a cluster shares: products and devices in one JetStream
//! key-value bucket ([`REGISTRY_BUCKET`]), each node's copy in memory kept fresh by a watch.
//!
//! - **Out**: each change a node's registry makes itself (the API's, dynamic registration, a
//!   gateway's sub-device registrations and topology, a first connect's activation) is told to
//!   this module as it is made ([`Registry::observe`]) and written to the bucket once the merge
//!   at start is done, one at a time in the order made, retried while NATS is away. How
//!   depends on the change ([`How`]): a device made here is written only where the bucket has
//!   none (or a removed one); an edit of a device writes the fields it changed over the
//!   bucket's record with compare-and-swap, and nothing over a removal (so that a node
//!   with a stale copy, back from a restart or a partition, neither brings a deleted device
//!   back nor undoes another node's change of other fields); a removal, a product, an
//!   AccessKey are written over whatever is there. A removal is an empty value (a tombstone),
//!   so that a node back from a long absence learns of it, and so that it has a revision.
//! - **In**: the bucket's entries are applied to the registry in the bucket's order
//!   ([`Registry::apply_shared_if`]) and kept in the node's store; a device removed or
//!   disabled elsewhere is disconnected here (a removed one loses its session); one this
//!   node's configuration declares stays, and is written back.
//! - **While this node writes a record**, the watch's entries of it are not applied; the
//!   writer's outcome, the bucket's record after its last write, is ([`Tracking`], one task
//!   applies both). The check and the change are one step under the registry's lock, where
//!   the registry's own changes are made and told too: an entry never undoes a change this
//!   node made after it.
//! - **At start**, the node merges the bucket's copy with its own ([`Registry::merge_shared`],
//!   its writes made only if the bucket still holds what it read): what it has that the bucket
//!   lacks is written; what its configuration declares keeps the configuration's secrets and
//!   categories.
//! - **AccessKeys**: each node writes its configuration's (`k.<node>.<id>`, the secret as the
//!   value; one it no longer has, empty) and accepts every node's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use aliot_auth::DeviceIdentity;
use aliot_core::hub::durable::{RegisteredDevice, StoreChange};
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

/// Which of the bucket's entries this node applies, per record: the rules that keep a record
/// the same here as in the bucket while this node writes it too. Pure bookkeeping (no I/O),
/// used by the follow task, the writer and the registry's observer under one lock.
///
/// - While this node has writes of a record on the way (`writing`), the watch's entries of it
///   are not applied: the writer's outcome (the bucket's record after its last write, which
///   took those entries into account) is, when the last write is done. The newest such entry
///   is remembered (`skipped`): if it is newer than the outcome, the record is read again.
/// - After an outcome, the watch's entries up to its revision (`floor`) are older or this
///   node's own: skipped.
#[derive(Debug, Default)]
struct Tracking {
    /// Records with this node's writes on the way, how many.
    writing: HashMap<String, u32>,
    /// The newest entry the watch gave of a record while it was being written.
    skipped: HashMap<String, u64>,
    /// Records whose entries up to this revision are not applied, and whether the writer's
    /// outcome at that revision is still to be applied.
    floor: HashMap<String, (u64, bool)>,
    /// The newest revision the watch gave.
    seen: u64,
}

/// What to do with an entry of the watch, or with an outcome of the writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decision {
    Apply,
    Skip,
    /// The record changed since: read it again and apply that.
    ReadAgain,
}

impl Tracking {
    /// A write of `key` is queued (under the registry's lock, for this node's own changes).
    fn queued(&mut self, key: &str) {
        *self.writing.entry(key.to_owned()).or_default() += 1;
    }

    /// A write of `key` is done, the bucket's record at `revision` after it: whether it was
    /// the last one queued (its outcome is then to be applied).
    fn done(&mut self, key: &str, revision: u64) -> bool {
        let left = match self.writing.get_mut(key) {
            Some(writing) => {
                *writing = writing.saturating_sub(1);
                *writing
            }
            None => 0,
        };
        if left > 0 {
            return false;
        }
        self.writing.remove(key);
        let floor = self.floor.entry(key.to_owned()).or_insert((0, true));
        *floor = (floor.0.max(revision), true);
        true
    }

    /// The watch gave an entry of `key` at `revision`.
    fn entry(&mut self, key: &str, revision: u64) -> Decision {
        self.seen = self.seen.max(revision);
        if self.writing.contains_key(key) {
            let skipped = self.skipped.entry(key.to_owned()).or_default();
            *skipped = (*skipped).max(revision);
            return Decision::Skip;
        }
        match self.floor.get_mut(key) {
            Some((floor, outcome_due)) if revision <= *floor => {
                if revision == *floor && !*outcome_due {
                    self.floor.remove(key);
                }
                Decision::Skip
            }
            Some((floor, _)) => {
                // Newer than this node's last write: it wins, and the outcome is old.
                *floor = revision;
                Decision::Apply
            }
            None => Decision::Apply,
        }
    }

    /// The record was read again at `revision` (after [`Decision::ReadAgain`]): older entries
    /// of it are skipped.
    fn read_again(&mut self, key: &str, revision: u64) {
        if self.seen < revision {
            self.floor.insert(key.to_owned(), (revision, false));
        }
    }

    /// The writer's outcome for `key`: the bucket's record at `revision` after this node's
    /// last write of it.
    fn outcome(&mut self, key: &str, revision: u64) -> Decision {
        if self.writing.contains_key(key) {
            // Written again since: that write's outcome will come.
            return Decision::Skip;
        }
        let skipped = self.skipped.remove(key).unwrap_or(0);
        let Some((floor, outcome_due)) = self.floor.get_mut(key) else {
            return Decision::Apply;
        };
        *outcome_due = false;
        let decision = if *floor > revision {
            // The watch gave (and applied) a newer one meanwhile.
            Decision::Skip
        } else if skipped > revision {
            Decision::ReadAgain
        } else {
            Decision::Apply
        };
        if self.seen >= *floor {
            self.floor.remove(key);
        }
        decision
    }
}

/// A record to write to the bucket.
struct Write {
    key: String,
    value: Bytes,
    how: How,
}

/// How a record is written.
enum How {
    /// Over whatever the bucket holds: a removal, a product, an AccessKey, a record this
    /// node's configuration declares.
    Put,
    /// A device this node made: written where the bucket has none, or a removed one; where it
    /// has one (made elsewhere meanwhile), the bucket's stays.
    Create,
    /// An edit of a device: the fields that changed from `before` (the record as this node had
    /// it) to the value are written over the bucket's record, so that what another node
    /// changed meanwhile stays; nothing when the bucket has it removed (it was deleted
    /// elsewhere: the removal wins).
    Edit(Box<RegisteredDevice>),
    /// The merge's: made only if the record is still as the merge read it.
    Expect(Expected),
}

/// What the bucket must hold for a merge's write to be made.
#[derive(Clone, Copy, Debug)]
enum Expected {
    /// No such record.
    Absent,
    /// The record at this revision.
    Revision(u64),
}

/// A device's record with the fields that changed from `before` to `after` taken from
/// `after`, the others from `current`.
fn edited(
    current: &RegisteredDevice,
    before: &RegisteredDevice,
    after: &RegisteredDevice,
) -> RegisteredDevice {
    fn take<T: Clone + PartialEq>(current: &T, before: &T, after: &T) -> T {
        if before == after {
            current.clone()
        } else {
            after.clone()
        }
    }
    RegisteredDevice {
        identity: current.identity.clone(),
        secret: take(&current.secret, &before.secret, &after.secret),
        iot_id: take(&current.iot_id, &before.iot_id, &after.iot_id),
        nickname: take(&current.nickname, &before.nickname, &after.nickname),
        created: take(&current.created, &before.created, &after.created),
        activated: take(&current.activated, &before.activated, &after.activated),
        disabled: take(&current.disabled, &before.disabled, &after.disabled),
        token: take(&current.token, &before.token, &after.token),
        gateway: take(&current.gateway, &before.gateway, &after.gateway),
    }
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
    /// Whether the merge at start is done (the writer waits for it: what this node changed
    /// before is written over what the bucket had, not under it).
    merged: tokio::sync::watch::Sender<bool>,
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
            merged: tokio::sync::watch::Sender::new(false),
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
            self.write_record(key, value, How::Put);
        }
    }

    /// Starts sharing `broker`'s registry, if it has one: its changes go out once the bucket
    /// is merged with it, the bucket's come in from then on.
    pub(crate) fn start(self: &Arc<Self>, broker: &BrokerHandle) {
        let Some(registry) = broker.registry().cloned() else {
            return;
        };
        let Some(writes) = crate::taken(&self.writes_rx) else {
            return;
        };
        let this = Arc::clone(self);
        let observed = registry.observe(Arc::new(
            move |change: &StoreChange, before: Option<&RegisteredDevice>| {
                this.share(change, before);
            },
        ));
        if !observed {
            warn!(node = %self.node_id, "the registry is shared already; not sharing it twice");
            return;
        }
        let broker = broker.local();
        let (outcomes, outcomes_rx) = mpsc::unbounded_channel();
        tokio::spawn(Arc::clone(self).write_changes(writes, outcomes));
        tokio::spawn(Arc::clone(self).follow(broker, registry, outcomes_rx));
    }

    /// Queues a change of this node's registry for the bucket (`before`: the device's record
    /// before an edit of it).
    fn share(&self, change: &StoreChange, before: Option<&RegisteredDevice>) {
        let how = match (change, before) {
            (StoreChange::RegisteredDeviceSaved(_), Some(before)) => {
                How::Edit(Box::new(before.clone()))
            }
            (StoreChange::RegisteredDeviceSaved(_), None) => How::Create,
            _ => How::Put,
        };
        self.write(change, how);
    }

    /// Queues a write of `change`.
    fn write(&self, change: &StoreChange, how: How) {
        if let Some(key) = record_key(change) {
            self.write_record(key, record_value(change), how);
        }
    }

    /// Queues a write of `value` at `key`.
    fn write_record(&self, key: String, value: Bytes, how: How) {
        self.sync().queued(&key);
        let _ = self.writes.send(Write { key, value, how });
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

    /// Writes this node's changes to the bucket once it is merged, in the order they were
    /// made, each retried until NATS takes it; tells the follow task the bucket's record after
    /// the last queued write of each.
    async fn write_changes(
        self: Arc<Self>,
        mut writes: mpsc::UnboundedReceiver<Write>,
        outcomes: mpsc::UnboundedSender<Outcome>,
    ) {
        let mut merged = self.merged.subscribe();
        if merged.wait_for(|merged| *merged).await.is_err() {
            return;
        }
        while let Some(write) = writes.recv().await {
            let mut failures = 0u32;
            let outcome = loop {
                match self.write_once(&write).await {
                    Ok(outcome) => break outcome,
                    Err(error) => {
                        if failures == 0 {
                            warn!(node = %self.node_id, key = %write.key, %error,
                                "registry change not shared yet; retrying");
                        }
                        failures += 1;
                        tokio::time::sleep(RETRY_EVERY).await;
                    }
                }
            };
            if outcome.wrote {
                self.shared.fetch_add(1, Ordering::Relaxed);
            }
            debug!(node = %self.node_id, key = %write.key, revision = outcome.revision,
                wrote = outcome.wrote, "registry change shared");
            if self.sync().done(&write.key, outcome.revision) {
                let _ = outcomes.send(outcome.of(write.key));
            }
        }
    }

    /// One write, as its `how` says; the bucket's record after it.
    async fn write_once(&self, write: &Write) -> Result<Written, String> {
        let bucket = self.bucket().await?;
        let (key, value) = (&write.key, &write.value);
        match &write.how {
            How::Put => {
                let revision = bucket
                    .put(key, value.clone())
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Written::made(revision, value.clone()))
            }
            How::Create => create_or_revive(bucket, key, value).await,
            How::Edit(before) => loop {
                let Some(entry) = bucket.entry(key).await.map_err(|e| e.to_string())? else {
                    // Never shared: made whole.
                    return create_or_revive(bucket, key, value).await;
                };
                if is_removal(&entry) {
                    // Deleted elsewhere: the removal wins.
                    return Ok(Written::found(&entry));
                }
                let (
                    Some(Shared::Device(_, SharedRecord::Kept(current))),
                    Some(Shared::Device(_, SharedRecord::Kept(after))),
                ) = (
                    Shared::read(key, &entry.value, false),
                    Shared::read(key, value, false),
                )
                else {
                    return Ok(Written::found(&entry));
                };
                let merged = edited(&current, before, &after);
                if merged == current {
                    return Ok(Written::found(&entry));
                }
                let bytes = Bytes::from(registry_records::device_value(&merged));
                match bucket.update(key, bytes.clone(), entry.revision).await {
                    Ok(revision) => return Ok(Written::made(revision, bytes)),
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                    Err(e) => return Err(e.to_string()),
                }
            },
            How::Expect(Expected::Absent) => match bucket.create(key, value.clone()).await {
                Ok(revision) => Ok(Written::made(revision, value.clone())),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    current(bucket, key).await
                }
                Err(e) => Err(e.to_string()),
            },
            How::Expect(Expected::Revision(revision)) => {
                match bucket.update(key, value.clone(), *revision).await {
                    Ok(revision) => Ok(Written::made(revision, value.clone())),
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                        current(bucket, key).await
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
        }
    }

    /// Merges the bucket with this node's registry, then follows it: each entry is applied
    /// here as [`Tracking`] decides, and each outcome of this node's writes.
    async fn follow(
        self: Arc<Self>,
        broker: BrokerHandle,
        registry: Registry,
        mut outcomes: mpsc::UnboundedReceiver<Outcome>,
    ) {
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
            if !merged {
                merged = true;
                self.merged.send_replace(true);
            }
            failures = 0;
            loop {
                tokio::select! {
                    entry = watch.next() => match entry {
                        Some(Ok(entry)) => {
                            if self.sync().entry(&entry.key, entry.revision) == Decision::Apply {
                                self.apply(&broker, &registry, &entry.key, &entry.value, is_removal(&entry)).await;
                            }
                        }
                        Some(Err(error)) => {
                            debug!(node = %self.node_id, %error, "the registry's watch broke");
                            break;
                        }
                        None => break,
                    },
                    Some(outcome) = outcomes.recv() => {
                        self.outcome(&broker, &registry, outcome).await;
                    }
                }
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }

    /// Applies what the bucket holds after this node's last write of a record, unless the
    /// record changed since (then what it holds now).
    async fn outcome(&self, broker: &BrokerHandle, registry: &Registry, outcome: Outcome) {
        let decision = self.sync().outcome(&outcome.key, outcome.revision);
        match decision {
            Decision::Skip => {}
            Decision::Apply => {
                self.apply(
                    broker,
                    registry,
                    &outcome.key,
                    &outcome.value,
                    outcome.removed,
                )
                .await;
            }
            Decision::ReadAgain => {
                let read = match self.bucket().await {
                    Ok(bucket) => bucket.entry(&outcome.key).await.map_err(|e| e.to_string()),
                    Err(error) => Err(error),
                };
                match read {
                    Ok(Some(entry)) => {
                        self.sync().read_again(&entry.key, entry.revision);
                        self.apply(
                            broker,
                            registry,
                            &entry.key,
                            &entry.value,
                            is_removal(&entry),
                        )
                        .await;
                    }
                    Ok(None) => {}
                    Err(error) => {
                        warn!(node = %self.node_id, key = %outcome.key, %error, "registry record not read again");
                    }
                }
            }
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
            if self.sync().entry(&entry.key, entry.revision) != Decision::Apply {
                continue;
            }
            revisions.insert(entry.key.clone(), entry.revision);
            match self.read(&entry.key, &entry.value, is_removal(&entry)) {
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
            self.write(&change, How::Expect(expected));
        }
        info!(node = %self.node_id, products = read_products, devices = read_devices,
            written, taken = merge.applied.len(), took_ms = started.elapsed().as_millis() as u64,
            "registry merged with the cluster's");
        self.taken
            .fetch_add(merge.applied.len() as u64, Ordering::Relaxed);
        keep_and_act(broker, merge.applied).await;
        Ok(watch)
    }

    /// The record of an entry; `None` (logged) for one no node writes.
    fn read(&self, key: &str, value: &[u8], removed: bool) -> Option<Shared> {
        let shared = Shared::read(key, value, removed);
        if shared.is_none() {
            warn!(node = %self.node_id, %key, "not a registry record; skipped");
        }
        shared
    }

    /// Applies a record of the bucket here: keeps it in the store and disconnects the device
    /// it removed or disabled; one this node's configuration declares, removed elsewhere,
    /// stays and is shared again. Not while this node has writes of it on the way (they were
    /// made after it, under the registry's lock: their outcome comes).
    async fn apply(
        &self,
        broker: &BrokerHandle,
        registry: &Registry,
        key: &str,
        value: &[u8],
        removed: bool,
    ) {
        let change = match self.read(key, value, removed) {
            Some(Shared::AccessKey { node, id, secret }) => {
                if self.learn_key(node, id, secret) {
                    self.tell_access_keys();
                }
                return;
            }
            Some(shared) => shared.change(),
            None => None,
        };
        let Some(change) = change else {
            return;
        };
        let outcome = registry.apply_shared_if(&change, || !self.sync().writing.contains_key(key));
        debug!(node = %self.node_id, %key, ?outcome, "registry change taken");
        match outcome {
            SharedApplied::Unchanged => {}
            SharedApplied::Declared(declared) => self.write(&declared, How::Put),
            outcome => {
                self.taken.fetch_add(1, Ordering::Relaxed);
                keep_and_act(broker, vec![(change, outcome)]).await;
            }
        }
    }
}

/// A write's result: the bucket's record after it.
struct Written {
    revision: u64,
    value: Bytes,
    removed: bool,
    /// Whether this write made it (else it is what the bucket held, which won).
    wrote: bool,
}

impl Written {
    fn made(revision: u64, value: Bytes) -> Self {
        Written {
            revision,
            removed: value.is_empty(),
            value,
            wrote: true,
        }
    }

    fn found(entry: &kv::Entry) -> Self {
        Written {
            revision: entry.revision,
            value: entry.value.clone(),
            removed: is_removal(entry),
            wrote: false,
        }
    }

    fn of(self, key: String) -> Outcome {
        Outcome {
            key,
            revision: self.revision,
            value: self.value,
            removed: self.removed,
        }
    }
}

/// The bucket's record after this node's last queued write of it.
struct Outcome {
    key: String,
    revision: u64,
    value: Bytes,
    removed: bool,
}

/// Whether an entry says its record was removed (a tombstone, or the bucket's own delete).
fn is_removal(entry: &kv::Entry) -> bool {
    entry.operation != kv::Operation::Put || entry.value.is_empty()
}

/// What the bucket holds at `key` now.
async fn current(bucket: &kv::Store, key: &str) -> Result<Written, String> {
    match bucket.entry(key).await.map_err(|e| e.to_string())? {
        Some(entry) => Ok(Written::found(&entry)),
        None => Ok(Written {
            revision: 0,
            value: Bytes::new(),
            removed: true,
            wrote: false,
        }),
    }
}

/// Writes a device this node made where the bucket has none or a removed one; where it has
/// one, that one.
async fn create_or_revive(bucket: &kv::Store, key: &str, value: &Bytes) -> Result<Written, String> {
    loop {
        match bucket.create(key, value.clone()).await {
            Ok(revision) => return Ok(Written::made(revision, value.clone())),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.to_string()),
        }
        let Some(entry) = bucket.entry(key).await.map_err(|e| e.to_string())? else {
            continue;
        };
        if !is_removal(&entry) {
            return Ok(Written::found(&entry));
        }
        match bucket.update(key, value.clone(), entry.revision).await {
            Ok(revision) => return Ok(Written::made(revision, value.clone())),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
            Err(e) => return Err(e.to_string()),
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
                    SharedApplied::Changed
                    | SharedApplied::Unchanged
                    | SharedApplied::Declared(_) => {}
                }
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use aliot_core::hub::durable::ProductRecord;
    use aliot_services::UnixMillis;

    use super::*;

    #[test]
    fn this_nodes_write_comes_back_as_its_outcome_not_as_an_entry() {
        let mut t = Tracking::default();
        t.queued("k");
        // Its own entry, seen while the write is on its way.
        assert_eq!(t.entry("k", 5), Decision::Skip);
        assert!(t.done("k", 5));
        assert_eq!(t.outcome("k", 5), Decision::Apply);
        assert_eq!(t.entry("k", 6), Decision::Apply);
    }

    #[test]
    fn a_newer_entry_wins_over_an_outcome_that_comes_after_it() {
        let mut t = Tracking::default();
        t.queued("k");
        assert!(t.done("k", 5));
        // Another node's, after this node's write and before its outcome is applied.
        assert_eq!(t.entry("k", 5), Decision::Skip);
        assert_eq!(t.entry("k", 6), Decision::Apply);
        assert_eq!(t.outcome("k", 5), Decision::Skip);
        assert_eq!(t.entry("k", 7), Decision::Apply);
    }

    #[test]
    fn an_entry_skipped_while_writing_that_is_newer_than_the_outcome_is_read_again() {
        let mut t = Tracking::default();
        t.queued("k");
        assert_eq!(t.entry("k", 6), Decision::Skip);
        assert!(t.done("k", 5));
        assert_eq!(t.outcome("k", 5), Decision::ReadAgain);
        // Read again at 8, ahead of the watch: its entries up to 8 are older.
        t.read_again("k", 8);
        assert_eq!(t.entry("k", 7), Decision::Skip);
        assert_eq!(t.entry("k", 8), Decision::Skip);
        assert_eq!(t.entry("k", 9), Decision::Apply);
    }

    #[test]
    fn entries_older_than_an_outcome_are_skipped_until_the_watch_passes_it() {
        let mut t = Tracking::default();
        t.queued("k");
        assert!(t.done("k", 7));
        assert_eq!(t.outcome("k", 7), Decision::Apply);
        assert_eq!(t.entry("k", 6), Decision::Skip);
        assert_eq!(t.entry("k", 7), Decision::Skip);
        assert!(t.floor.is_empty(), "the watch passed it: nothing kept");
        assert_eq!(t.entry("k", 8), Decision::Apply);
        // Other records are not concerned.
        assert_eq!(t.entry("j", 3), Decision::Apply);
    }

    #[test]
    fn only_the_last_of_several_writes_has_its_outcome_applied() {
        let mut t = Tracking::default();
        t.queued("k");
        t.queued("k");
        assert!(!t.done("k", 5));
        // A change made here after the writes: the outcome waits for that one's.
        assert!(t.done("k", 6));
        t.queued("k");
        assert_eq!(t.outcome("k", 6), Decision::Skip);
        assert!(t.done("k", 7));
        assert_eq!(t.outcome("k", 7), Decision::Apply);
    }

    #[test]
    fn an_edit_writes_only_the_fields_it_changed() {
        let base = RegisteredDevice {
            identity: DeviceIdentity::new("a1Prod", "dev-1"),
            secret: "secret".into(),
            iot_id: "iot".into(),
            nickname: None,
            created: UnixMillis(1),
            activated: None,
            disabled: false,
            token: None,
            gateway: None,
        };
        // Here: activated. Elsewhere meanwhile: disabled.
        let after = RegisteredDevice {
            activated: Some(UnixMillis(9)),
            ..base.clone()
        };
        let current = RegisteredDevice {
            disabled: true,
            ..base.clone()
        };
        let merged = edited(&current, &base, &after);
        assert!(merged.disabled, "the other node's change stays");
        assert_eq!(merged.activated, Some(UnixMillis(9)));
    }

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
