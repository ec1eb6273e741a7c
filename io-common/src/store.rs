//! The broker's durable state: what the hub's changes are committed to, so that sessions,
//! queued QoS 1 messages and the devices' service state survive a restart or a crash.
//!
//! The hub is sans-IO: it records each change to its durable state as a
//! [`StoreChange`] (see [`aliot_core::hub::durable`]).
//! The broker's hub task hands the changes of each loop turn to a writer thread, which commits
//! every batch it has at once in one transaction (group commit) to a [`Store`]. With
//! [`Durability::Immediate`], the PUBACKs of a turn (and the answers to server-side calls) go
//! out only once its transaction is on disk; a failed commit is retried, and until one
//! succeeds nothing more is acknowledged.
//!
//! Two stores: [`RedbStore`], a file in a data directory (redb: pure Rust, ACID, checksummed
//! commits, one fsync per commit; `docs/STORE-ENGINE.md` says why), and [`MemoryStore`], for
//! tests (a restart of the broker within the process finds it as it was, and it can be made
//! to fail).

mod codec;
mod redb_store;

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aliot_core::hub::durable::{StoreChange, StoreImage};

pub use redb_store::{RedbStore, STORE_FILE_NAME, STORE_FORMAT};

/// The registry's records as bytes, as the store keeps them: what a cluster shares between
/// its nodes too (one layout, one place).
pub mod registry_records {
    use aliot_auth::DeviceIdentity;
    use aliot_core::hub::durable::{ProductRecord, RegisteredDevice};

    use super::{StoreError, codec};

    /// A product's value (its key is the product key).
    pub fn product_value(record: &ProductRecord) -> Vec<u8> {
        codec::product(record)
    }

    /// A product from its key and value.
    ///
    /// # Errors
    ///
    /// [`StoreError::Corrupt`] for a value that is not a product's.
    pub fn product_from(key: &str, value: &[u8]) -> Result<ProductRecord, StoreError> {
        codec::decode_product(key, value)
    }

    /// A registered device's value (its key is its identity).
    pub fn device_value(device: &RegisteredDevice) -> Vec<u8> {
        codec::registered(device)
    }

    /// A registered device from its identity and value.
    ///
    /// # Errors
    ///
    /// [`StoreError::Corrupt`] for a value that is not a device's.
    pub fn device_from(
        identity: &DeviceIdentity,
        value: &[u8],
    ) -> Result<RegisteredDevice, StoreError> {
        codec::decode_registered(&identity.product_key, &identity.device_name, value)
    }
}

/// When a commit is on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Each commit is synced to disk before the PUBACKs it covers are sent (the default).
    Immediate,
    /// Commits are written at once and synced every so often; PUBACKs do not wait. A crash
    /// loses at most this much (as mosquitto's autosave).
    Periodic(Duration),
    /// Commits are written but never synced until a clean stop: a crash may lose anything
    /// since the start, a clean restart keeps everything.
    None,
}

impl Durability {
    /// Whether PUBACKs wait for their commit.
    pub fn acks_wait(self) -> bool {
        self == Durability::Immediate
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Durability::Immediate => f.write_str("immediate"),
            Durability::Periodic(every) => write!(f, "periodic ({} ms)", every.as_millis()),
            Durability::None => f.write_str("none"),
        }
    }
}

/// Where the broker keeps its durable state.
#[derive(Clone, Debug)]
pub enum StoreLocation {
    /// A redb file in this directory (made if missing).
    Directory(PathBuf),
    /// A [`MemoryStore`] (tests).
    Memory(MemoryStore),
}

/// The broker's store: where and how durably.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Where.
    pub location: StoreLocation,
    /// How durably.
    pub durability: Durability,
}

impl StoreConfig {
    /// A store in `dir`, synced before each PUBACK.
    pub fn directory(dir: impl Into<PathBuf>) -> Self {
        StoreConfig {
            location: StoreLocation::Directory(dir.into()),
            durability: Durability::Immediate,
        }
    }

    /// A [`MemoryStore`], synced (as far as memory is) before each PUBACK.
    pub fn memory(store: MemoryStore) -> Self {
        StoreConfig {
            location: StoreLocation::Memory(store),
            durability: Durability::Immediate,
        }
    }

    /// Opens the store it names.
    pub fn open(&self) -> Result<Box<dyn Store>, StoreError> {
        match &self.location {
            StoreLocation::Directory(dir) => Ok(Box::new(RedbStore::open(dir)?)),
            StoreLocation::Memory(memory) => Ok(Box::new(memory.clone())),
        }
    }
}

/// Why the store cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory is a file, or holds files that are not a store.
    #[error("{path}: {why}; give aliot a directory of its own (--data-dir)")]
    NotAStore {
        /// The path.
        path: PathBuf,
        /// What is there.
        why: String,
    },
    /// Another process has the store open.
    #[error("{0}: the store is in use by another process (is another aliot running on it?)")]
    InUse(PathBuf),
    /// The store was written by a newer aliot.
    #[error(
        "{path}: the store has format {found}, this aliot reads format {supported} at most; \
         run the newer aliot, or move the directory away to start empty"
    )]
    NewerFormat {
        /// The path.
        path: PathBuf,
        /// Its format.
        found: u64,
        /// Ours.
        supported: u64,
    },
    /// A record could not be read back.
    #[error(
        "the store holds a record that cannot be read ({0}); refusing to start rather than lose it"
    )]
    Corrupt(String),
    /// The database or the disk failed.
    #[error("store: {0}")]
    Io(String),
    /// A [`MemoryStore`] was told to fail.
    #[error("store: commit refused (failing on purpose)")]
    Failing,
}

/// A place the hub's changes are committed to.
pub trait Store: Send + 'static {
    /// Everything committed so far.
    fn load(&mut self) -> Result<StoreImage, StoreError>;

    /// Applies `changes` in order, in one transaction: all or none. With `sync`, the
    /// transaction is on disk when this returns; without, it is written and made durable by a
    /// later synced commit (a crash may lose it).
    fn commit(&mut self, changes: &[StoreChange], sync: bool) -> Result<(), StoreError>;

    /// Gives the file's free space back to the file system, if there is some to give (after
    /// many messages came and went). Blocks commits meanwhile.
    fn compact(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A store in memory: clones share it, so a broker restarted within the process finds what
/// the last one committed. [`fail_commits`](Self::fail_commits) makes its commits fail, as a
/// full disk would.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    shared: Arc<Mutex<MemoryShared>>,
}

#[derive(Debug, Default)]
struct MemoryShared {
    image: StoreImage,
    failing: bool,
    commits: u64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    /// What it holds now.
    pub fn image(&self) -> StoreImage {
        self.lock().image.clone()
    }

    /// Transactions committed so far.
    pub fn commits(&self) -> u64 {
        self.lock().commits
    }

    /// From now on, every commit fails (`true`) or succeeds again (`false`).
    pub fn fail_commits(&self, failing: bool) {
        self.lock().failing = failing;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryShared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Store for MemoryStore {
    fn load(&mut self) -> Result<StoreImage, StoreError> {
        Ok(self.image())
    }

    fn commit(&mut self, changes: &[StoreChange], _sync: bool) -> Result<(), StoreError> {
        let mut shared = self.lock();
        if shared.failing {
            return Err(StoreError::Failing);
        }
        for change in changes {
            shared.image.apply(change.clone());
        }
        shared.commits += 1;
        Ok(())
    }
}
