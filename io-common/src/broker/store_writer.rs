//! The store's writer thread: commits the hub task's batches of changes, every batch waiting at
//! once in one transaction (group commit), and tells the hub task how far it got.
//!
//! A thread of its own, not a task: a commit blocks on the disk (an fsync), which no async
//! runtime's worker should. While it syncs one group, the hub goes on and the next group
//! gathers; the busier the broker, the more each fsync covers.
//!
//! A failed commit (disk full, an I/O error) is kept and retried, with the batches that come
//! meanwhile, until one succeeds: nothing is lost or skipped, and [`StoreWriter::committed`]
//! does not move, so the hub task sends no PUBACK that waits for it. It logs and counts the
//! failures, and says when commits succeed again.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aliot_core::hub::durable::StoreChange;
use tokio_sync::sync::watch;
use tracing::{error, info, warn};

use crate::store::{Durability, Store};

/// The first wait before a failed commit is tried again; it doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(10);
/// The longest wait between tries of a failing commit.
const MAX_RETRY: Duration = Duration::from_secs(1);
/// At most one warning about failing commits per this much time.
const FAILURE_WARNING_INTERVAL: Duration = Duration::from_secs(10);
/// How often the file is compacted (ours), when the writer has nothing else to do.
const COMPACT_EVERY: Duration = Duration::from_secs(3600);
/// With `durability = "none"`, a synced commit still comes this often: redb frees the pages of
/// removed records only then, and the file would otherwise only grow.
const NONE_SYNC_EVERY: Duration = Duration::from_secs(60);
/// With `immediate`, how long a group with saved messages waits for their acknowledgements
/// before its commit (ours): about a loopback round trip through a subscriber's connection.
/// A save acknowledged meanwhile is not written; PUBACKs wait at most this much longer.
const GATHER: Duration = Duration::from_micros(250);
/// Tries of a failing commit when the broker stops, before giving up on it (logged).
const TRIES_AT_STOP: u32 = 20;

/// What the writer has done, for the broker's statistics.
#[derive(Debug, Default)]
pub(crate) struct StoreStatus {
    /// Transactions committed.
    pub(crate) commits: AtomicU64,
    /// Commits that failed (each try counts).
    pub(crate) failures: AtomicU64,
    /// Whether the last commit failed.
    pub(crate) failing: AtomicBool,
    /// Changes committed.
    pub(crate) changes: AtomicU64,
    /// The number of the last batch committed.
    pub(crate) committed_batch: AtomicU64,
}

enum ToWriter {
    /// The changes of one hub turn, numbered from 1.
    Batch(u64, Vec<StoreChange>),
    /// Commit what is left, sync, and end.
    Stop,
}

/// The hub task's end of the writer thread.
pub(crate) struct StoreWriter {
    batches: mpsc::Sender<ToWriter>,
    committed: Option<watch::Receiver<u64>>,
    thread: Option<JoinHandle<()>>,
    status: Arc<StoreStatus>,
    durability: Durability,
    /// The number of the last batch sent.
    sent: u64,
}

impl StoreWriter {
    /// Starts the thread with the opened store.
    pub(crate) fn start(store: Box<dyn Store>, durability: Durability) -> std::io::Result<Self> {
        let (batches, receiver) = mpsc::channel();
        let (committed_tx, committed) = watch::channel(0);
        let status = Arc::new(StoreStatus::default());
        let thread_status = Arc::clone(&status);
        let thread = std::thread::Builder::new()
            .name("aliot-store".into())
            .spawn(move || {
                Writer {
                    store,
                    durability,
                    status: thread_status,
                    committed: committed_tx,
                }
                .run(receiver);
            })?;
        Ok(StoreWriter {
            batches,
            committed: Some(committed),
            thread: Some(thread),
            status,
            durability,
            sent: 0,
        })
    }

    /// The number the next batch's changes are committed under, after sending them; `None`
    /// when there were none (nothing to wait for beyond earlier batches).
    pub(crate) fn send(&mut self, changes: Vec<StoreChange>) -> u64 {
        if !changes.is_empty() {
            self.sent += 1;
            // The thread ends only when told to: it is there to take this.
            let _ = self.batches.send(ToWriter::Batch(self.sent, changes));
        }
        self.sent
    }

    /// The number of the last batch sent.
    pub(crate) fn sent(&self) -> u64 {
        self.sent
    }

    /// Whether PUBACKs and answers wait for the commit of their turn.
    pub(crate) fn acks_wait(&self) -> bool {
        self.durability.acks_wait()
    }

    /// The receiver of the number of the last batch committed (taken once, by the hub loop).
    pub(crate) fn take_committed(&mut self) -> Option<watch::Receiver<u64>> {
        self.committed.take()
    }

    /// What the writer has done.
    pub(crate) fn status(&self) -> &StoreStatus {
        &self.status
    }

    /// Commits what is left, syncs, and waits for the thread to end.
    pub(crate) fn stop(&mut self) {
        let _ = self.batches.send(ToWriter::Stop);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            error!("the store's writer thread panicked");
        }
    }
}

impl Drop for StoreWriter {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The thread's side.
struct Writer {
    store: Box<dyn Store>,
    durability: Durability,
    status: Arc<StoreStatus>,
    committed: watch::Sender<u64>,
}

impl Writer {
    fn run(mut self, receiver: mpsc::Receiver<ToWriter>) {
        let sync_every = match self.durability {
            Durability::Immediate => None,
            Durability::Periodic(every) => Some(every),
            Durability::None => Some(NONE_SYNC_EVERY),
        };
        let mut pending = Group::default();
        let mut unsynced = false;
        let mut next_sync = Instant::now() + sync_every.unwrap_or(COMPACT_EVERY);
        let mut next_compact = Instant::now() + COMPACT_EVERY;
        let mut retry: Option<Duration> = None;
        let mut failures_since = 0u64;
        let mut last_warning: Option<Instant> = None;
        let mut stopping = false;
        let mut tries_at_stop = 0;
        loop {
            // Wait for work: a batch, a retry, a sync or a compaction that is due.
            let wake = match retry {
                Some(after) => Instant::now() + after,
                None if unsynced => next_sync.min(next_compact),
                None => next_compact,
            };
            if !stopping {
                let wait = wake.saturating_duration_since(Instant::now());
                let first = match retry {
                    // A failing commit waits its turn, whatever arrives meanwhile.
                    Some(after) => {
                        std::thread::sleep(after);
                        None
                    }
                    None => match receiver.recv_timeout(wait) {
                        Ok(message) => Some(message),
                        Err(RecvTimeoutError::Timeout) => None,
                        Err(RecvTimeoutError::Disconnected) => Some(ToWriter::Stop),
                    },
                };
                // The group: everything that has arrived.
                for message in first.into_iter().chain(receiver.try_iter()) {
                    match message {
                        ToWriter::Batch(number, changes) => pending.absorb(number, changes),
                        ToWriter::Stop => stopping = true,
                    }
                }
                // Messages saved for subscribers that keep up are acknowledged by them within
                // a round trip of their delivery: wait that long for what cancels them, so that
                // a group that cancels out costs no fsync at all.
                if sync_every.is_none() && !stopping && !pending.saved_at.is_empty() {
                    let until = Instant::now() + GATHER;
                    while let Some(left) = until.checked_duration_since(Instant::now()) {
                        match receiver.recv_timeout(left) {
                            Ok(ToWriter::Batch(number, changes)) => pending.absorb(number, changes),
                            Ok(ToWriter::Stop) | Err(RecvTimeoutError::Disconnected) => {
                                stopping = true;
                                break;
                            }
                            Err(RecvTimeoutError::Timeout) => break,
                        }
                        if pending.saved_at.is_empty() {
                            break;
                        }
                    }
                }
            }
            if pending.has_batches {
                let sync = sync_every.is_none() || stopping;
                let live = pending.take_live();
                // A group whose changes all cancelled out leaves the disk as it is: nothing to
                // write, nothing to wait for.
                let written = match live.is_empty() {
                    true => Ok(()),
                    false => self.store.commit(&live, sync),
                };
                match written {
                    Ok(()) => {
                        if !live.is_empty() {
                            self.status.commits.fetch_add(1, Ordering::Relaxed);
                            unsynced = !sync;
                        }
                        self.status
                            .changes
                            .fetch_add(live.len() as u64, Ordering::Relaxed);
                        let pending_upto = pending.committed();
                        retry = None;
                        if self.status.failing.swap(false, Ordering::Relaxed) {
                            info!(
                                failed_tries = failures_since,
                                "the store commits again; acknowledgements resume"
                            );
                            failures_since = 0;
                        }
                        self.status
                            .committed_batch
                            .store(pending_upto, Ordering::Relaxed);
                        self.committed.send_replace(pending_upto);
                    }
                    Err(error) => {
                        pending.put_back(live);
                        self.status.failures.fetch_add(1, Ordering::Relaxed);
                        self.status.failing.store(true, Ordering::Relaxed);
                        failures_since += 1;
                        let due =
                            last_warning.is_none_or(|at| at.elapsed() >= FAILURE_WARNING_INTERVAL);
                        if due {
                            warn!(
                                %error,
                                failed_tries = failures_since,
                                waiting_changes = pending.changes.len(),
                                "a store commit failed; QoS 1 PUBACKs wait until one succeeds \
                                 (retrying)"
                            );
                            last_warning = Some(Instant::now());
                        }
                        retry = Some(retry.map_or(FIRST_RETRY, |r| (r * 2).min(MAX_RETRY)));
                        if stopping {
                            tries_at_stop += 1;
                            if tries_at_stop >= TRIES_AT_STOP {
                                error!(
                                    lost_changes = pending.changes.len(),
                                    "the broker stops with changes the store could not commit"
                                );
                                return;
                            }
                            std::thread::sleep(retry.unwrap_or(FIRST_RETRY));
                        }
                        continue;
                    }
                }
            }
            let now = Instant::now();
            if unsynced && (now >= next_sync || stopping) {
                match self.store.commit(&[], true) {
                    Ok(()) => unsynced = false,
                    Err(error) => warn!(%error, "a store sync failed (retrying)"),
                }
                next_sync = now + sync_every.unwrap_or(COMPACT_EVERY);
            }
            if stopping {
                return;
            }
            if now >= next_compact && !pending.has_batches {
                let started = Instant::now();
                match self.store.compact() {
                    Ok(()) => info!(
                        took_ms = started.elapsed().as_millis() as u64,
                        "store compacted"
                    ),
                    Err(error) => warn!(%error, "store compaction failed"),
                }
                next_compact = now + COMPACT_EVERY;
            }
        }
    }
}

/// The changes waiting for the next commit. A message saved and removed again before its
/// commit (delivered and acknowledged meanwhile, which is what a subscriber that keeps up
/// does) cancels out: neither is written.
#[derive(Default)]
struct Group {
    /// In order; a cancelled change leaves `None`.
    changes: Vec<Option<StoreChange>>,
    /// Where each message saved in this group is, by its sequence number (unique in the hub).
    saved_at: HashMap<u64, usize>,
    /// The number of the last batch absorbed.
    upto: u64,
    /// Whether a batch came since the last commit.
    has_batches: bool,
}

impl Group {
    /// Takes the changes of batch `number`.
    fn absorb(&mut self, number: u64, changes: Vec<StoreChange>) {
        for change in changes {
            match &change {
                StoreChange::MessageSaved { seq, .. } => {
                    self.saved_at.insert(*seq, self.changes.len());
                    self.changes.push(Some(change));
                }
                StoreChange::MessageRemoved { seq, .. } => match self.saved_at.remove(seq) {
                    Some(at) => self.changes[at] = None,
                    None => self.changes.push(Some(change)),
                },
                _ => self.changes.push(Some(change)),
            }
        }
        self.upto = number;
        self.has_batches = true;
    }

    /// The changes to write, in order, taken out of the group.
    fn take_live(&mut self) -> Vec<StoreChange> {
        self.saved_at.clear();
        self.changes.drain(..).flatten().collect()
    }

    /// The commit of what [`take_live`](Self::take_live) gave failed: it waits again, first.
    fn put_back(&mut self, live: Vec<StoreChange>) {
        let later = std::mem::take(&mut self.changes);
        self.saved_at.clear();
        for change in live.into_iter().map(Some).chain(later) {
            if let Some(StoreChange::MessageSaved { seq, .. }) = &change {
                self.saved_at.insert(*seq, self.changes.len());
            }
            self.changes.push(change);
        }
    }

    /// What was taken is on disk: the number of the last batch it covered.
    fn committed(&mut self) -> u64 {
        // `take_live` emptied the group: nothing waits now.
        self.has_batches = false;
        self.upto
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aliot_core::ClientKey;
    use aliot_core::hub::durable::StoredMessage;
    use aliot_services::UnixMillis;
    use aliot_topic::TopicName;
    use bytes::Bytes;

    fn saved(seq: u64) -> StoreChange {
        StoreChange::MessageSaved {
            session: Arc::new(ClientKey::Client("s".into())),
            seq,
            message: StoredMessage {
                topic: TopicName::new("t", &Default::default()).unwrap(),
                payload: Bytes::new(),
                at: UnixMillis(0),
            },
        }
    }

    fn removed(seq: u64) -> StoreChange {
        StoreChange::MessageRemoved {
            session: Arc::new(ClientKey::Client("s".into())),
            seq,
        }
    }

    fn seqs(changes: &[StoreChange]) -> Vec<(bool, u64)> {
        changes
            .iter()
            .map(|change| match change {
                StoreChange::MessageSaved { seq, .. } => (true, *seq),
                StoreChange::MessageRemoved { seq, .. } => (false, *seq),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_message_saved_and_removed_before_its_commit_is_not_written() {
        let mut group = Group::default();
        group.absorb(1, vec![saved(1), saved(2)]);
        group.absorb(2, vec![removed(1), removed(7), saved(3)]);
        assert_eq!(seqs(&group.take_live()), [(true, 2), (false, 7), (true, 3)]);
        assert_eq!(group.committed(), 2);
        assert!(!group.has_batches);

        // Everything cancels out: nothing to write, and the batch still counts as committed.
        group.absorb(3, vec![saved(4)]);
        group.absorb(4, vec![removed(4)]);
        assert!(group.take_live().is_empty());
        assert_eq!(group.committed(), 4);
    }

    #[test]
    fn a_failed_commit_waits_again_and_can_still_cancel() {
        let mut group = Group::default();
        group.absorb(1, vec![saved(1), saved(2)]);
        let live = group.take_live();
        group.put_back(live);
        group.absorb(2, vec![removed(2), saved(3)]);
        assert_eq!(seqs(&group.take_live()), [(true, 1), (true, 3)]);
        assert_eq!(group.committed(), 2);
    }
}
