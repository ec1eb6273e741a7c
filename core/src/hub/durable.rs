//! What the hub keeps on disk, as a stream of changes: the seam between the sans-IO hub and a
//! store.
//!
//! The hub does no I/O. When it is asked to ([`Hub::record_store_changes`]), it records each
//! change to its durable state as a [`StoreChange`]; the adapter takes the changes of a loop
//! turn with [`Hub::take_store_changes`], commits them in one transaction, and only then sends
//! the PUBACKs of that turn. A store is anything that applies the changes in order;
//! [`StoreImage`] is the simplest one (a map in memory), and what a restart gives back to the
//! hub ([`Hub::restore_session`] and the other `restore_*` calls).
//!
//! What is durable:
//!
//! | state | change | when |
//! |---|---|---|
//! | a cleanSession=0 session (subscriptions, features, when it went offline) | [`StoreChange::SessionSaved`] | at CONNECT, SUBSCRIBE, UNSUBSCRIBE, disconnect (once per turn) |
//! | its end (expired, or replaced by a clean one) | [`StoreChange::SessionRemoved`] | with every message it held |
//! | a QoS 1 message in the session's window or queue | [`StoreChange::MessageSaved`] | when routed to it |
//! | the message's end (acknowledged, dropped, expired) | [`StoreChange::MessageRemoved`] | |
//! | a device's service state (properties, shadow, OTA, ...) | [`StoreChange::DeviceSaved`] | after a request that may change it (once per turn) |
//! | the RRPC messageIds handed out | [`StoreChange::RrpcIdsReserved`] | a block ahead of use |
//!
//! Clean sessions, QoS 0 messages, held PUBACKs and RRPC calls in progress are not durable:
//! they end with the connections anyway. Messages carry the wall clock of their arrival, so
//! that their age still counts after a restart.
//!
//! [`Hub::record_store_changes`]: super::Hub::record_store_changes
//! [`Hub::take_store_changes`]: super::Hub::take_store_changes
//! [`Hub::restore_session`]: super::Hub::restore_session

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::time::Duration;

use aliot_auth::DeviceIdentity;
use aliot_services::{DeviceState, UnixMillis};
use aliot_topic::{Acl, TopicFilter, TopicName};
use bytes::Bytes;

use super::sessions::{InFlight, Queued, Session};
use super::{BacklogMessage, Hub};
use crate::authenticator::{ClientFeatures, ClientKey};
use crate::codec::QoS;
use crate::message::Message;
use crate::time::Instant;

/// RRPC messageIds reserved on disk at a time: a restart starts after the last reservation,
/// so no id handed out before it is handed out again. A new block is reserved when half of
/// the current one is used, long before it runs out.
pub const RRPC_ID_BLOCK: u64 = 1 << 20;

/// What a store keeps of a cleanSession=0 session (its messages are kept apart, by sequence).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    /// Whose session it is.
    pub key: Arc<ClientKey>,
    /// Its subscriptions, with their granted QoS.
    pub subscriptions: Vec<(TopicFilter, QoS)>,
    /// What its client id asked for (automatic subscription, the RRPC form).
    pub features: ClientFeatures,
    /// Filters it unsubscribed from while automatically subscribed.
    pub suppressed: Vec<TopicFilter>,
    /// The keepalive of its last connection.
    pub keep_alive: Duration,
    /// When it went offline (the wall clock), or `None` while a connection was attached.
    pub offline_since: Option<UnixMillis>,
}

/// A QoS 1 message kept for a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    /// Its topic.
    pub topic: TopicName,
    /// Its payload.
    pub payload: Bytes,
    /// When the broker took it (the wall clock), for the maximum age.
    pub at: UnixMillis,
}

/// A product of the registry (the platform's `CreateProduct`, or a `[[product]]` of the
/// configuration).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProductRecord {
    /// Its key.
    pub key: String,
    /// Its name.
    pub name: String,
    /// The product secret of dynamic registration, if it has one.
    pub secret: Option<String>,
    /// Whether its devices may register themselves (dynamic registration).
    pub dynamic_registration: bool,
    /// Its custom topic categories: template and permission (`pub`, `sub`, `pub&sub`).
    pub categories: Vec<(String, String)>,
    /// When it was made (the wall clock).
    pub created: UnixMillis,
    /// Its description, if it has one.
    pub description: Option<String>,
}

/// A device of the registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisteredDevice {
    /// Its product and name.
    pub identity: DeviceIdentity,
    /// Its secret.
    pub secret: String,
    /// The platform's device id (`IotId`).
    pub iot_id: String,
    /// Its nickname, if it has one.
    pub nickname: Option<String>,
    /// When it was registered (the wall clock).
    pub created: UnixMillis,
    /// When it first connected, if it has (until `ResetThing`).
    pub activated: Option<UnixMillis>,
    /// Whether it is disabled (refused at CONNECT).
    pub disabled: bool,
    /// Its token, if it registered without pre-registration (`regnwl`): its password for the
    /// token login (`connwl`).
    pub token: Option<String>,
    /// The gateway whose topology holds it, if one does (a sub-device has at most one:
    /// adding it to another gateway's topology moves it).
    pub gateway: Option<DeviceIdentity>,
}

/// One change to the hub's durable state. Applied in the order given, the changes of every
/// turn turn a store's copy into the hub's (see [`StoreImage::apply`]).
#[derive(Clone, Debug, PartialEq)]
pub enum StoreChange {
    /// Keep this session (replacing what was kept of it, but its messages).
    SessionSaved(SessionRecord),
    /// Forget this session and every message kept for it.
    SessionRemoved(Arc<ClientKey>),
    /// Keep this message for the session, at this sequence number. Sequence numbers grow with
    /// each message the hub keeps: a session's messages in sequence order are in the order they
    /// were routed to it.
    MessageSaved {
        /// The session.
        session: Arc<ClientKey>,
        /// Its place.
        seq: u64,
        /// The message.
        message: StoredMessage,
    },
    /// Forget one message of the session.
    MessageRemoved {
        /// The session.
        session: Arc<ClientKey>,
        /// Its place.
        seq: u64,
    },
    /// Keep this device's service state (replacing what was kept of it).
    DeviceSaved(alloc::boxed::Box<DeviceState>),
    /// RRPC messageIds below this one may have been handed out: a restart starts from it.
    RrpcIdsReserved(u64),
    /// Keep this product of the registry (replacing what was kept of it).
    ProductSaved(ProductRecord),
    /// Forget this product (its devices are removed one by one before).
    ProductRemoved(String),
    /// Keep this device of the registry (replacing what was kept of it).
    RegisteredDeviceSaved(alloc::boxed::Box<RegisteredDevice>),
    /// Forget this device of the registry.
    RegisteredDeviceRemoved(DeviceIdentity),
    /// Keep this message in the backlog of this consumer group.
    BacklogSaved {
        /// The group's id.
        group: Arc<str>,
        /// The message (its id is its place).
        message: Arc<BacklogMessage>,
    },
    /// Forget this message of this group's backlog (settled, dropped, or its group gone).
    BacklogRemoved {
        /// The group's id.
        group: Arc<str>,
        /// The message's id.
        message_id: u64,
    },
}

/// A store's whole content in memory: what applying every committed [`StoreChange`] in order
/// gives. It is the in-memory store, the model the on-disk ones are tested against, and what
/// a restart hands to the hub.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoreImage {
    /// The sessions, by key.
    pub sessions: BTreeMap<Arc<ClientKey>, SessionRecord>,
    /// The messages, by session and sequence.
    pub messages: BTreeMap<(Arc<ClientKey>, u64), StoredMessage>,
    /// The devices' service state.
    pub devices: BTreeMap<DeviceIdentity, DeviceState>,
    /// The last RRPC messageId reservation.
    pub rrpc_ids_reserved: u64,
    /// The registry's products, by key.
    pub products: BTreeMap<String, ProductRecord>,
    /// The registry's devices.
    pub registered: BTreeMap<DeviceIdentity, RegisteredDevice>,
    /// The consumer groups' backlogs, by group and message id.
    pub backlogs: BTreeMap<(String, u64), BacklogMessage>,
}

impl StoreImage {
    /// Applies one change.
    pub fn apply(&mut self, change: StoreChange) {
        match change {
            StoreChange::SessionSaved(record) => {
                self.sessions.insert(Arc::clone(&record.key), record);
            }
            StoreChange::SessionRemoved(key) => {
                self.sessions.remove(&key);
                let from = (Arc::clone(&key), 0);
                let kept: Vec<(Arc<ClientKey>, u64)> = self
                    .messages
                    .range(from..)
                    .take_while(|((of, _), _)| **of == *key)
                    .map(|(at, _)| at.clone())
                    .collect();
                for at in kept {
                    self.messages.remove(&at);
                }
            }
            StoreChange::MessageSaved {
                session,
                seq,
                message,
            } => {
                self.messages.insert((session, seq), message);
            }
            StoreChange::MessageRemoved { session, seq } => {
                self.messages.remove(&(session, seq));
            }
            StoreChange::DeviceSaved(state) => {
                let device = DeviceIdentity::new(state.product_key(), state.device_name());
                self.devices.insert(device, *state);
            }
            StoreChange::RrpcIdsReserved(next) => self.rrpc_ids_reserved = next,
            StoreChange::ProductSaved(product) => {
                self.products.insert(product.key.clone(), product);
            }
            StoreChange::ProductRemoved(key) => {
                self.products.remove(&key);
            }
            StoreChange::RegisteredDeviceSaved(device) => {
                self.registered.insert(device.identity.clone(), *device);
            }
            StoreChange::RegisteredDeviceRemoved(identity) => {
                self.registered.remove(&identity);
            }
            StoreChange::BacklogSaved { group, message } => {
                let key = (String::from(&*group), message.message_id);
                self.backlogs.insert(key, (*message).clone());
            }
            StoreChange::BacklogRemoved { group, message_id } => {
                self.backlogs.remove(&(String::from(&*group), message_id));
            }
        }
    }

    /// The messages kept for one session, in sequence order.
    pub fn messages_of<'a>(
        &'a self,
        key: &Arc<ClientKey>,
    ) -> impl Iterator<Item = (u64, &'a StoredMessage)> + 'a {
        let key = Arc::clone(key);
        self.messages
            .range((Arc::clone(&key), 0)..)
            .take_while(move |((of, _), _)| **of == *key)
            .map(|((_, seq), message)| (*seq, message))
    }
}

/// The hub's record of changes not yet taken: the ordered changes, and what must be saved
/// whole once per turn (sessions and devices touched).
#[derive(Default)]
pub(super) struct Journal {
    /// Whether changes are recorded at all (a hub without a store records none).
    pub(super) enabled: bool,
    pub(super) changes: Vec<StoreChange>,
    pub(super) dirty_sessions: BTreeSet<Arc<ClientKey>>,
    pub(super) dirty_devices: BTreeSet<DeviceIdentity>,
    /// The next message's sequence number (from 1: 0 marks a message not kept).
    next_seq: u64,
    /// RRPC messageIds below this are reserved on disk.
    pub(super) rrpc_reserved: u64,
}

impl Journal {
    /// The session changed: it is saved whole when the turn's changes are taken.
    pub(super) fn session_touched(&mut self, key: &Arc<ClientKey>) {
        if self.enabled && **key != ClientKey::Anonymous {
            self.dirty_sessions.insert(Arc::clone(key));
        }
    }

    /// The device's service state may have changed.
    pub(super) fn device_touched(&mut self, device: &DeviceIdentity) {
        if self.enabled && !self.dirty_devices.contains(device) {
            self.dirty_devices.insert(device.clone());
        }
    }

    /// A QoS 1 message joins a durable session: its sequence number (0 when nothing is
    /// recorded).
    pub(super) fn message_saved(
        &mut self,
        session: &Arc<ClientKey>,
        topic: &TopicName,
        payload: &Bytes,
        at: UnixMillis,
    ) -> u64 {
        if !self.enabled {
            return 0;
        }
        let seq = self.next_seq.max(1);
        self.next_seq = seq + 1;
        self.changes.push(StoreChange::MessageSaved {
            session: Arc::clone(session),
            seq,
            message: StoredMessage {
                topic: topic.clone(),
                payload: payload.clone(),
                at,
            },
        });
        seq
    }

    /// A kept message leaves its session (`seq` 0: it was never kept).
    pub(super) fn message_removed(&mut self, session: &Arc<ClientKey>, seq: u64) {
        if self.enabled && seq != 0 {
            self.changes.push(StoreChange::MessageRemoved {
                session: Arc::clone(session),
                seq,
            });
        }
    }

    /// A durable session ends, with its messages.
    pub(super) fn session_removed(&mut self, key: &Arc<ClientKey>) {
        if self.enabled && **key != ClientKey::Anonymous {
            self.changes
                .push(StoreChange::SessionRemoved(Arc::clone(key)));
        }
    }

    /// A restored message had this sequence number: later ones come after it.
    pub(super) fn restored_seq(&mut self, seq: u64) {
        self.next_seq = self.next_seq.max(seq.saturating_add(1));
    }

    /// The RRPC messageId `id` is handed out: reserves the next block when half of this one
    /// is used.
    pub(super) fn rrpc_id_used(&mut self, id: u64) {
        if self.enabled && id.saturating_add(RRPC_ID_BLOCK / 2) >= self.rrpc_reserved {
            self.rrpc_reserved = id.saturating_add(RRPC_ID_BLOCK);
            self.changes
                .push(StoreChange::RrpcIdsReserved(self.rrpc_reserved));
        }
    }
}

/// What a restart gave back, from [`Hub::restore`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// Sessions restored (offline until their devices come back).
    pub sessions: usize,
    /// Messages restored into their queues.
    pub messages: usize,
    /// Devices whose service state was restored.
    pub devices: usize,
    /// Sessions that had expired while the broker was down (removed).
    pub expired_sessions: usize,
    /// Messages past their maximum age, or of no session (removed).
    pub dropped_messages: usize,
}

impl Hub {
    /// From now on, every change to the durable state is recorded, to be taken with
    /// [`take_store_changes`](Self::take_store_changes). Call it before the first input; a hub
    /// without a store never does, and records nothing.
    pub fn record_store_changes(&mut self) {
        self.journal.enabled = true;
    }

    /// Records a change the hub did not make itself (the registry's, made by the server
    /// side), to be committed with this turn's; nothing when no store is kept.
    pub fn record_store_change(&mut self, change: StoreChange) {
        if self.journal.enabled {
            self.journal.changes.push(change);
        }
    }

    /// Whether changes were recorded since the last [`take_store_changes`](Self::take_store_changes).
    pub fn has_store_changes(&self) -> bool {
        !self.journal.changes.is_empty()
            || !self.journal.dirty_sessions.is_empty()
            || !self.journal.dirty_devices.is_empty()
    }

    /// Moves the changes recorded since the last call into `out`, in the order they must be
    /// applied: a store that commits them in one transaction, and sends the PUBACKs the hub
    /// gave meanwhile only after that commit, never acknowledges what it would lose in a crash.
    /// Sessions and devices changed in this time are saved whole, once, after the other
    /// changes.
    pub fn take_store_changes(&mut self, out: &mut Vec<StoreChange>) {
        out.append(&mut self.journal.changes);
        for key in core::mem::take(&mut self.journal.dirty_sessions) {
            let session = self
                .sessions
                .find(&key)
                .and_then(|sid| self.sessions.get(sid));
            if let Some(session) = session.filter(|session| !session.clean) {
                out.push(StoreChange::SessionSaved(session.record()));
            }
        }
        for device in core::mem::take(&mut self.journal.dirty_devices) {
            if let Some(state) = self.devices.get(&device) {
                out.push(StoreChange::DeviceSaved(alloc::boxed::Box::new(
                    state.clone(),
                )));
            }
        }
    }

    /// Restores everything a store kept (`acl_of` gives each session's device the ACL it has
    /// now), at `now` with the wall clock already set ([`set_wall_clock`](Self::set_wall_clock)).
    /// Expired sessions and messages are removed, as changes to commit.
    pub fn restore(
        &mut self,
        image: &StoreImage,
        mut acl_of: impl FnMut(&ClientKey) -> Acl,
        now: Instant,
    ) -> Restored {
        let mut restored = Restored::default();
        for (key, record) in &image.sessions {
            self.restore_session(record.clone(), acl_of(key), now, &mut restored);
        }
        for ((key, seq), message) in &image.messages {
            self.restore_message(key, *seq, message.clone(), now, &mut restored);
        }
        for state in image.devices.values() {
            self.restore_device(state.clone(), &mut restored);
        }
        for ((group, _), message) in &image.backlogs {
            self.restore_backlog_message(group, message.clone(), now);
        }
        self.restore_rrpc_ids(image.rrpc_ids_reserved);
        restored
    }

    /// Restores one session a store kept, offline, before its messages. One that expired
    /// while the broker was down is removed instead.
    pub fn restore_session(
        &mut self,
        record: SessionRecord,
        acl: Acl,
        now: Instant,
        restored: &mut Restored,
    ) {
        if *record.key == ClientKey::Anonymous || self.sessions.find(&record.key).is_some() {
            return;
        }
        let offline_for = record
            .offline_since
            .map_or(Duration::ZERO, |since| wall_since(self.wall_clock, since));
        if self
            .config
            .session_expiry
            .is_some_and(|expiry| offline_for >= expiry)
        {
            restored.expired_sessions += 1;
            self.journal.session_removed(&record.key);
            return;
        }
        let was_online = record.offline_since.is_none();
        let mut session = Session::restored(record, acl, now);
        if was_online {
            // Its connection ended with the broker: offline from now.
            session.offline_since = Some(self.wall_clock);
            self.journal.session_touched(&session.key);
        }
        // Watchers see when a kept session's device was last seen, not a blank.
        if self.trace.is_on()
            && let (Some(device), Some(since)) = (session.key.device(), session.offline_since)
        {
            self.presences.disconnected(device, since);
        }
        let filters: Vec<(TopicFilter, QoS)> = session
            .subscriptions
            .iter()
            .map(|(filter, qos)| (filter.clone(), *qos))
            .collect();
        let sid = self.sessions.insert(session);
        for (filter, qos) in filters {
            self.index.insert(&filter, sid, qos);
        }
        if let Some(expiry) = self.config.session_expiry {
            let left = expiry.saturating_sub(offline_for);
            self.sessions.expire_at(sid, now + left);
        }
        restored.sessions += 1;
    }

    /// Restores one message a store kept for a session restored before, behind the ones
    /// restored before it (call in sequence order): into the session's window while it has
    /// room, then its queue. It goes out with DUP: it may have been delivered before the
    /// restart. One past its maximum age, or of no session, is removed.
    pub fn restore_message(
        &mut self,
        key: &Arc<ClientKey>,
        seq: u64,
        message: StoredMessage,
        now: Instant,
        restored: &mut Restored,
    ) {
        self.journal.restored_seq(seq);
        let age = wall_since(self.wall_clock, message.at);
        let session = self
            .sessions
            .find(key)
            .and_then(|sid| self.sessions.get_mut(sid));
        let Some(session) = session.filter(|_| {
            self.config
                .max_message_age
                .is_none_or(|max_age| age <= max_age)
        }) else {
            restored.dropped_messages += 1;
            self.journal.message_removed(key, seq);
            return;
        };
        let message = Message::new(message.topic, message.payload, QoS::AtLeastOnce);
        // The first ones take the window again, as they did (or would have) before the
        // restart: a resumed session sends its window again with DUP, then its queue. The
        // queue then holds no more than it did.
        let window = usize::from(self.config.inflight_window.get());
        if session.queue.is_empty() && session.inflight.len() < window {
            let packet_id = session.allocate_packet_id();
            session.inflight.push_back(InFlight {
                packet_id,
                message,
                seq,
            });
        } else {
            let age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
            session.push_queued(Queued {
                message,
                at: Instant::from_millis(now.as_millis().saturating_sub(age_ms)),
                hold: None,
                seq,
                dup: true,
            });
        }
        restored.messages += 1;
    }

    /// Restores a device's service state.
    pub fn restore_device(&mut self, state: DeviceState, restored: &mut Restored) {
        let device = DeviceIdentity::new(state.product_key(), state.device_name());
        *self.devices.state_mut(&device) = state;
        restored.devices += 1;
    }

    /// Restores the RRPC messageId reservation: ids start after it, and the next block is
    /// reserved at once (commit it before taking calls).
    pub fn restore_rrpc_ids(&mut self, reserved: u64) {
        self.rrpc.skip_ids_below(reserved);
        let next = self.rrpc.next_id();
        self.journal.rrpc_reserved = next;
        self.journal.rrpc_id_used(next);
    }
}

/// How long before `now` the wall clock read `then` (zero if it reads later now).
fn wall_since(now: UnixMillis, then: UnixMillis) -> Duration {
    Duration::from_millis(now.0.saturating_sub(then.0))
}
