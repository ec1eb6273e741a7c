//! The store on disk: one redb file, `aliot.redb`, in a directory of its own.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aliot_core::ClientKey;
use aliot_core::hub::durable::{StoreChange, StoreImage};
use aliot_services::DeviceState;
use redb::{
    CompactionMode, Database, DatabaseError, Durability as RedbDurability, ReadableDatabase,
    ReadableTable, TableDefinition,
};

use super::codec;
use super::{Store, StoreError};

/// The store's file in its directory.
pub const STORE_FILE_NAME: &str = "aliot.redb";

/// The layout of the records this aliot writes (and the newest it reads).
pub const STORE_FORMAT: u64 = 1;

/// The pages redb keeps in memory (ours): the store is read once at start and written after;
/// a large cache would only hold memory.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

const SESSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("sessions");
const MESSAGES: TableDefinition<(&[u8], u64), &[u8]> = TableDefinition::new("messages");
const DEVICES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("devices");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const PRODUCTS: TableDefinition<&str, &[u8]> = TableDefinition::new("products");
const REGISTRY: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("registry");
const BACKLOGS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("backlogs");

const META_FORMAT: &str = "format";
const META_RRPC_IDS: &str = "rrpc_ids_reserved";

/// The store on disk. Opening it takes a lock on the file: a second process is refused.
pub struct RedbStore {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .finish()
    }
}

fn io(error: impl std::fmt::Display) -> StoreError {
    StoreError::Io(error.to_string())
}

impl RedbStore {
    /// Opens the store in `dir`, making the directory and the file if they are missing.
    /// Refused: a `dir` that is a file or holds other files but no store, a file that is not
    /// a store, a store another process has open, a store of a newer format.
    pub fn open(dir: &Path) -> Result<RedbStore, StoreError> {
        let not_a_store = |why: String| StoreError::NotAStore {
            path: dir.to_path_buf(),
            why,
        };
        if dir.exists() && !dir.is_dir() {
            return Err(not_a_store("it is a file, not a directory".into()));
        }
        std::fs::create_dir_all(dir).map_err(|error| not_a_store(error.to_string()))?;
        let path = dir.join(STORE_FILE_NAME);
        if !path.exists() {
            let others = std::fs::read_dir(dir)
                .map_err(|error| not_a_store(error.to_string()))?
                .count();
            if others > 0 {
                return Err(not_a_store(format!(
                    "it holds {others} other entries but no {STORE_FILE_NAME}"
                )));
            }
        }
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|error| match error {
                DatabaseError::DatabaseAlreadyOpen | DatabaseError::LockProtocolMismatch => {
                    StoreError::InUse(path.clone())
                }
                other => not_a_store(format!("{STORE_FILE_NAME} cannot be opened: {other}")),
            })?;
        let store = RedbStore { db, path };
        store.check_format()?;
        Ok(store)
    }

    /// Refuses a newer format; marks a new store with ours.
    fn check_format(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(io)?;
        {
            let mut meta = txn.open_table(META).map_err(io)?;
            let found = meta.get(META_FORMAT).map_err(io)?.map(|v| v.value());
            match found {
                Some(found) if found > STORE_FORMAT => {
                    return Err(StoreError::NewerFormat {
                        path: self.path.clone(),
                        found,
                        supported: STORE_FORMAT,
                    });
                }
                Some(_) => {}
                None => {
                    meta.insert(META_FORMAT, STORE_FORMAT).map_err(io)?;
                }
            }
            // Every table exists from the start, so that reads need not ask.
            txn.open_table(SESSIONS).map_err(io)?;
            txn.open_table(MESSAGES).map_err(io)?;
            txn.open_table(DEVICES).map_err(io)?;
            txn.open_table(PRODUCTS).map_err(io)?;
            txn.open_table(REGISTRY).map_err(io)?;
            txn.open_table(BACKLOGS).map_err(io)?;
        }
        txn.commit().map_err(io)
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Store for RedbStore {
    fn load(&mut self) -> Result<StoreImage, StoreError> {
        let txn = self.db.begin_read().map_err(io)?;
        let mut image = StoreImage::default();
        // One key per session, shared by its messages.
        let mut keys: HashMap<Vec<u8>, Arc<ClientKey>> = HashMap::new();
        let sessions = txn.open_table(SESSIONS).map_err(io)?;
        for entry in sessions.iter().map_err(io)? {
            let (key, value) = entry.map_err(io)?;
            let client = codec::decode_client_key(key.value())?;
            let record = codec::decode_session(client, value.value())?;
            keys.insert(key.value().to_vec(), Arc::clone(&record.key));
            image.sessions.insert(Arc::clone(&record.key), record);
        }
        let messages = txn.open_table(MESSAGES).map_err(io)?;
        let mut last: Option<(Vec<u8>, Arc<ClientKey>)> = None;
        for entry in messages.iter().map_err(io)? {
            let (key, value) = entry.map_err(io)?;
            let (session, seq) = key.value();
            let client = match &last {
                Some((bytes, client)) if bytes == session => Arc::clone(client),
                _ => {
                    let client = match keys.get(session) {
                        Some(client) => Arc::clone(client),
                        None => Arc::new(codec::decode_client_key(session)?),
                    };
                    last = Some((session.to_vec(), Arc::clone(&client)));
                    client
                }
            };
            let message = codec::decode_message(value.value())?;
            image.messages.insert((client, seq), message);
        }
        let devices = txn.open_table(DEVICES).map_err(io)?;
        for entry in devices.iter().map_err(io)? {
            let (key, value) = entry.map_err(io)?;
            let (product_key, device_name) = key.value();
            let state: DeviceState = serde_json::from_slice(value.value()).map_err(|error| {
                StoreError::Corrupt(format!("device {product_key}/{device_name}: {error}"))
            })?;
            image.devices.insert(
                aliot_auth::DeviceIdentity::new(product_key, device_name),
                state,
            );
        }
        let products = txn.open_table(PRODUCTS).map_err(io)?;
        for entry in products.iter().map_err(io)? {
            let (key, value) = entry.map_err(io)?;
            let product = codec::decode_product(key.value(), value.value())?;
            image.products.insert(product.key.clone(), product);
        }
        let registry = txn.open_table(REGISTRY).map_err(io)?;
        for entry in registry.iter().map_err(io)? {
            let (key, value) = entry.map_err(io)?;
            let (product_key, device_name) = key.value();
            let device = codec::decode_registered(product_key, device_name, value.value())?;
            image.registered.insert(device.identity.clone(), device);
        }
        let backlogs = txn.open_table(BACKLOGS).map_err(io)?;
        for entry in backlogs.iter().map_err(io)? {
            let (key, value) = entry.map_err(io)?;
            let (group, message_id) = key.value();
            let message = codec::decode_backlog_message(message_id, value.value())?;
            image
                .backlogs
                .insert((group.to_owned(), message_id), message);
        }
        let meta = txn.open_table(META).map_err(io)?;
        image.rrpc_ids_reserved = meta
            .get(META_RRPC_IDS)
            .map_err(io)?
            .map_or(0, |v| v.value());
        Ok(image)
    }

    fn commit(&mut self, changes: &[StoreChange], sync: bool) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(io)?;
        txn.set_durability(match sync {
            true => RedbDurability::Immediate,
            false => RedbDurability::None,
        })
        .map_err(io)?;
        {
            let mut sessions = txn.open_table(SESSIONS).map_err(io)?;
            let mut messages = txn.open_table(MESSAGES).map_err(io)?;
            let mut devices = txn.open_table(DEVICES).map_err(io)?;
            let mut meta = txn.open_table(META).map_err(io)?;
            let mut products = txn.open_table(PRODUCTS).map_err(io)?;
            let mut registry = txn.open_table(REGISTRY).map_err(io)?;
            let mut backlogs = txn.open_table(BACKLOGS).map_err(io)?;
            for change in changes {
                match change {
                    StoreChange::SessionSaved(record) => {
                        if let Some(key) = codec::client_key(&record.key) {
                            sessions
                                .insert(key.as_slice(), codec::session(record).as_slice())
                                .map_err(io)?;
                        }
                    }
                    StoreChange::SessionRemoved(client) => {
                        if let Some(key) = codec::client_key(client) {
                            sessions.remove(key.as_slice()).map_err(io)?;
                            let range = (key.as_slice(), 0u64)..=(key.as_slice(), u64::MAX);
                            messages.retain_in(range, |_, _| false).map_err(io)?;
                        }
                    }
                    StoreChange::MessageSaved {
                        session,
                        seq,
                        message,
                    } => {
                        if let Some(key) = codec::client_key(session) {
                            messages
                                .insert((key.as_slice(), *seq), codec::message(message).as_slice())
                                .map_err(io)?;
                        }
                    }
                    StoreChange::MessageRemoved { session, seq } => {
                        if let Some(key) = codec::client_key(session) {
                            messages.remove((key.as_slice(), *seq)).map_err(io)?;
                        }
                    }
                    StoreChange::DeviceSaved(state) => {
                        let json = serde_json::to_vec(state).map_err(io)?;
                        devices
                            .insert((state.product_key(), state.device_name()), json.as_slice())
                            .map_err(io)?;
                    }
                    StoreChange::RrpcIdsReserved(next) => {
                        meta.insert(META_RRPC_IDS, *next).map_err(io)?;
                    }
                    StoreChange::ProductSaved(product) => {
                        let value = codec::product(product);
                        products
                            .insert(product.key.as_str(), value.as_slice())
                            .map_err(io)?;
                    }
                    StoreChange::ProductRemoved(key) => {
                        products.remove(key.as_str()).map_err(io)?;
                    }
                    StoreChange::RegisteredDeviceSaved(device) => {
                        let key = (
                            device.identity.product_key.as_str(),
                            device.identity.device_name.as_str(),
                        );
                        registry
                            .insert(key, codec::registered(device).as_slice())
                            .map_err(io)?;
                    }
                    StoreChange::RegisteredDeviceRemoved(identity) => {
                        let key = (identity.product_key.as_str(), identity.device_name.as_str());
                        registry.remove(key).map_err(io)?;
                    }
                    StoreChange::BacklogSaved { group, message } => {
                        let key = (&**group, message.message_id);
                        backlogs
                            .insert(key, codec::backlog_message(message).as_slice())
                            .map_err(io)?;
                    }
                    StoreChange::BacklogRemoved { group, message_id } => {
                        backlogs.remove((&**group, *message_id)).map_err(io)?;
                    }
                }
            }
        }
        txn.commit().map_err(io)
    }

    fn compact(&mut self) -> Result<(), StoreError> {
        self.db.compact(CompactionMode::Balanced).map_err(io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aliot_core::hub::durable::{SessionRecord, StoredMessage};
    use aliot_services::UnixMillis;
    use aliot_topic::{TopicLimits, TopicName};
    use bytes::Bytes;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "aliot-redb-{}-{name}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn session(id: &str) -> Arc<ClientKey> {
        Arc::new(ClientKey::Client(id.into()))
    }

    fn saved(key: &Arc<ClientKey>, seq: u64, payload: usize) -> StoreChange {
        StoreChange::MessageSaved {
            session: Arc::clone(key),
            seq,
            message: StoredMessage {
                topic: TopicName::new("fleet/news", &TopicLimits::default()).unwrap(),
                payload: Bytes::from(vec![b'x'; payload]),
                at: UnixMillis(seq),
            },
        }
    }

    fn record(key: &Arc<ClientKey>) -> StoreChange {
        StoreChange::SessionSaved(SessionRecord {
            key: Arc::clone(key),
            subscriptions: Vec::new(),
            features: Default::default(),
            suppressed: Vec::new(),
            keep_alive: std::time::Duration::from_secs(60),
            offline_since: None,
        })
    }

    #[test]
    fn what_is_committed_is_loaded_as_the_model_has_it() {
        let dir = temp_dir("model");
        let (a, b) = (session("a"), session("b"));
        let changes = vec![
            record(&a),
            record(&b),
            saved(&a, 1, 10),
            saved(&b, 2, 10),
            saved(&a, 3, 10),
            StoreChange::MessageRemoved {
                session: Arc::clone(&a),
                seq: 1,
            },
            StoreChange::SessionRemoved(Arc::clone(&b)),
            StoreChange::RrpcIdsReserved(77),
        ];
        let mut model = StoreImage::default();
        for change in &changes {
            model.apply(change.clone());
        }
        let mut store = RedbStore::open(&dir).unwrap();
        store.commit(&changes, true).unwrap();
        drop(store);
        let mut store = RedbStore::open(&dir).unwrap();
        assert_eq!(store.load().unwrap(), model);
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_devices_float_properties_come_back_to_the_last_bit() {
        let dir = temp_dir("floats");
        let mut device = DeviceState::new("pk", "dn");
        let topic = "/sys/pk/dn/thing/event/property/post";
        let payload = br#"{"id":"1","params":{"a":0.30000000000000004,"b":2.2250738585072014e-308,"c":1.7976931348623157e308,"d":0.1234567890123456789,"e":-5e-324,"f":2.560156710993911e-167,"g":5.5460775746035397e160}}"#;
        let request = aliot_services::DeviceMessage::parse(topic, payload, "pk", "dn").unwrap();
        device.handle(request, UnixMillis(1));
        let mut store = RedbStore::open(&dir).unwrap();
        store
            .commit(&[StoreChange::DeviceSaved(Box::new(device.clone()))], true)
            .unwrap();
        let loaded = store.load().unwrap();
        let back = &loaded.devices[&aliot_auth::DeviceIdentity::new("pk", "dn")];
        // f and g: values whose stored text serde_json's default parser reads one unit off.
        for name in ["a", "b", "c", "d", "e", "f", "g"] {
            let (stored, read) = (device.property(name), back.property(name));
            assert_eq!(stored, read, "property {name}");
            let bits = |p: Option<&aliot_services::PropertyValue>| {
                p.and_then(|p| p.value.as_f64()).map(f64::to_bits)
            };
            assert_eq!(bits(stored), bits(read), "property {name}, bit for bit");
        }
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_store_of_a_newer_format_is_refused() {
        let dir = temp_dir("newer");
        let store = RedbStore::open(&dir).unwrap();
        let txn = store.db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(META_FORMAT, STORE_FORMAT + 1)
            .unwrap();
        txn.commit().unwrap();
        drop(store);
        match RedbStore::open(&dir) {
            Err(StoreError::NewerFormat { found, .. }) => assert_eq!(found, STORE_FORMAT + 1),
            other => panic!("{other:?}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn compaction_gives_back_what_removed_messages_took() {
        let dir = temp_dir("compact");
        let mut store = RedbStore::open(&dir).unwrap();
        let key = session("bulk");
        let puts: Vec<StoreChange> = (1..=20_000).map(|seq| saved(&key, seq, 1000)).collect();
        store.commit(&puts, true).unwrap();
        let full = std::fs::metadata(store.path()).unwrap().len();
        store
            .commit(&[StoreChange::SessionRemoved(Arc::clone(&key))], true)
            .unwrap();
        // redb frees the pages at the next durable commits.
        store.commit(&[], true).unwrap();
        store.commit(&[], true).unwrap();
        store.compact().unwrap();
        let compacted = std::fs::metadata(store.path()).unwrap().len();
        assert!(compacted * 4 < full, "{full} bytes, then {compacted}");
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
