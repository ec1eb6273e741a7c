//! The server-side subscription's consumer groups (PLATFORM-PROTOCOLS §8): what each group
//! subscribes to, the backlog of messages it has not had settled, and which consumer holds
//! which of them.
//!
//! Every group gets every message it subscribes to; within a group each message goes to one
//! consumer, the one whose turn it is among those with credit. A message leaves the backlog when
//! its consumer settles it ([`Hub::forward_settled`]); one its consumer releases, or holds
//! when it goes away, goes back to the backlog for the next consumer (at least once: a
//! consumer may see a message twice, and dedupes by its `messageId`). Credit is the
//! consumer's: the hub hands out no more than it was given ([`Hub::consumer_credit`]), so a
//! slow consumer is never flooded; what waits, waits in the backlog, bounded by
//! [`BacklogLimits`] (the oldest waiting message is dropped first, and counted).
//!
//! In a cluster, a node's groups are relayed to the nodes where their consumers are: a
//! *relay* ([`Hub::attach_relay`]) is a consumer that carries messages to another node, and is
//! handed messages only while its group has no consumer on this node; the node that receives
//! one puts it in its own backlog ([`Hub::accept_relayed`]) before the relay settles it here.
//! The hub says when a group gets its first consumer here and loses its last
//! ([`HubOutput::ConsumersHere`](super::HubOutput::ConsumersHere)): the adapter receives
//! relayed messages for the group only while it has some.
//!
//! The adapter's side (the AMQP listener): [`Hub::attach_consumer`] when a consumer's link is
//! open, [`Hub::consumer_credit`] as its flow grants credit, each
//! [`HubOutput::Forward`](super::HubOutput::Forward) sent on its link, [`Hub::forward_settled`]
//! or [`Hub::forward_released`] as its dispositions come, [`Hub::detach_consumer`] when the
//! link or connection ends.
//!
//! Deadlines, in the one table of [`ConsumerGroups::next_deadline`]:
//!
//! | what | due | then |
//! |---|---|---|
//! | a waiting backlog message | [`BacklogLimits::max_age`] after it was made | dropped, counted |

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::time::Duration;

use aliot_services::UnixMillis;
use aliot_services::forward::{Forwarded, LifecycleAction, device_status, lifecycle};
use aliot_topic::TopicName;
use bytes::Bytes;
use hashbrown::HashMap;

use super::durable::{RegisteredDevice, StoreChange};
use super::sessions::SessionId;
use super::{ConnId, Hub, HubOutput};
use crate::message::Message;
use crate::time::Instant;

/// Which messages a consumer group subscribes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageKinds(u8);

impl MessageKinds {
    /// What devices publish on their own topics (`/{pk}/{dn}/…`), as they sent it.
    pub const UPSTREAM: MessageKinds = MessageKinds(1);
    /// Devices going online and offline (`/as/mqtt/status/{pk}/{dn}`, §9.1).
    pub const STATUS: MessageKinds = MessageKinds(2);
    /// Thing-model data: properties and events posted, in the platform's form
    /// (`/{pk}/{dn}/thing/event/…/post`, §9.2).
    pub const THING_MODEL: MessageKinds = MessageKinds(4);
    /// Devices registered, deleted, disabled, enabled (`/{pk}/{dn}/thing/lifecycle`).
    pub const LIFECYCLE: MessageKinds = MessageKinds(8);
    /// Gateways' topologies changed (`/{pk}/{dn}/thing/topo/lifecycle`), and the sub-devices
    /// gateways found (`/{pk}/{dn}/thing/list/found`; ours: the platform lists it apart).
    pub const TOPOLOGY: MessageKinds = MessageKinds(16);
    /// Devices' answers to property sets and service calls
    /// (`/{pk}/{dn}/thing/downlink/reply/message`, §9.3).
    pub const DOWNLINK_RESULT: MessageKinds = MessageKinds(32);
    /// OTA: modules' versions and upgrades' outcomes (`/{pk}/{dn}/ota/version/post`,
    /// `/{pk}/{dn}/ota/upgrade`).
    pub const OTA: MessageKinds = MessageKinds(64);
    /// Every kind.
    pub const ALL: MessageKinds = MessageKinds(0x7f);
    /// No kind.
    pub const NONE: MessageKinds = MessageKinds(0);

    /// The kind named as in the configuration (`upstream`, `status`, `thing_model`,
    /// `lifecycle`, `topology`, `downlink_result`, `ota`).
    ///
    /// ```
    /// use aliot_core::hub::MessageKinds;
    /// assert_eq!(MessageKinds::named("status"), Some(MessageKinds::STATUS));
    /// assert_eq!(MessageKinds::named("telepathy"), None);
    /// ```
    pub fn named(name: &str) -> Option<MessageKinds> {
        match name {
            "upstream" => Some(MessageKinds::UPSTREAM),
            "status" => Some(MessageKinds::STATUS),
            "thing_model" => Some(MessageKinds::THING_MODEL),
            "lifecycle" => Some(MessageKinds::LIFECYCLE),
            "topology" => Some(MessageKinds::TOPOLOGY),
            "downlink_result" => Some(MessageKinds::DOWNLINK_RESULT),
            "ota" => Some(MessageKinds::OTA),
            _ => None,
        }
    }

    /// The names of every kind, for messages that list them.
    pub const NAMES: [&'static str; 7] = [
        "upstream",
        "status",
        "thing_model",
        "lifecycle",
        "topology",
        "downlink_result",
        "ota",
    ];

    /// These kinds and `other`'s.
    #[must_use]
    pub fn with(self, other: MessageKinds) -> MessageKinds {
        MessageKinds(self.0 | other.0)
    }

    /// Whether every kind of `other` is among these.
    pub fn contains(self, other: MessageKinds) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether some kind of `other` is among these.
    pub fn intersects(self, other: MessageKinds) -> bool {
        self.0 & other.0 != 0
    }
}

/// One consumer group of the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerGroupConfig {
    /// Its id (the `consumerGroupId` of a consumer's user name).
    pub id: String,
    /// The products whose devices' messages it gets; empty: every product.
    pub products: Vec<String>,
    /// The kinds of messages it gets.
    pub kinds: MessageKinds,
}

/// How much one group's backlog may hold (ours: the platform documents none it enforces).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BacklogLimits {
    /// Messages waiting or unsettled, at most (default 100,000).
    pub max_messages: usize,
    /// Bytes of their topics and payloads, at most (default 64 MiB).
    pub max_bytes: usize,
    /// A message waiting longer than this is dropped (default 1 day).
    pub max_age: Option<Duration>,
}

impl Default for BacklogLimits {
    fn default() -> Self {
        BacklogLimits {
            max_messages: 100_000,
            max_bytes: 64 * 1024 * 1024,
            max_age: Some(Duration::from_secs(24 * 3600)),
        }
    }
}

/// A consumer of a group, as the hub knows it; the adapter assigns nothing, the hub does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConsumerId(pub u64);

/// A message in a group's backlog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BacklogMessage {
    /// Its id, unique among every id the hub hands out (the AMQP `messageId`); the same
    /// message has the same id in every group.
    pub message_id: u64,
    /// Its topic (the AMQP `topic` property): a device's message shares its bytes, not a
    /// copy.
    pub topic: TopicName,
    /// Its body.
    pub payload: Bytes,
    /// When it was made, by the wall clock (the AMQP `generateTime`).
    pub generate_time: UnixMillis,
}

impl BacklogMessage {
    /// The bytes it counts for against [`BacklogLimits::max_bytes`].
    pub fn weight(&self) -> usize {
        self.topic.len() + self.payload.len()
    }
}

/// What one group holds and has counted, from [`Hub::consumer_group_stats`](super::Hub::consumer_group_stats).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupStats {
    /// The group's id.
    pub id: String,
    /// Messages in its backlog (waiting or unsettled).
    pub backlog: usize,
    /// Of those, handed to a consumer and not yet settled.
    pub in_flight: usize,
    /// Consumers attached now (on this node).
    pub consumers: usize,
    /// Relays attached now (consumers carrying messages to other nodes of a cluster).
    pub relays: usize,
    /// Messages put in the backlog that came from other nodes of a cluster.
    pub relayed_in: u64,
    /// Messages handed to consumers (redeliveries included).
    pub delivered: u64,
    /// Of those, handed out again after a consumer released them or went away.
    pub redelivered: u64,
    /// Messages settled by consumers.
    pub settled: u64,
    /// Messages dropped: the backlog full, or too old.
    pub dropped: u64,
}

/// Why a consumer could not be attached.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no consumer group {0:?} is configured")]
pub struct UnknownConsumerGroup(pub String);

/// A message handed to a consumer, for [`HubOutput::Forward`](super::HubOutput::Forward).
pub(super) struct Handed {
    pub(super) consumer: ConsumerId,
    pub(super) message: Arc<BacklogMessage>,
    pub(super) redelivery: bool,
}

struct Entry {
    message: Arc<BacklogMessage>,
    /// When it entered the backlog, on the hub's clock (for the maximum age).
    at: Instant,
    /// The consumer holding it, if one does.
    holder: Option<ConsumerId>,
    /// Whether it was handed out before.
    handed_before: bool,
}

struct Group {
    config: ConsumerGroupConfig,
    /// The group's id, shared with the store's changes.
    id: Arc<str>,
    /// Every message not yet settled, by id.
    entries: BTreeMap<u64, Entry>,
    /// The ids of those no consumer holds, the next to hand out first. Oldest first: new ones
    /// join at the back, and one given back goes to the front (it was handed out from the
    /// front, so it is older than every one still waiting).
    waiting: VecDeque<u64>,
    bytes: usize,
    consumers: Vec<ConsumerId>,
    /// Whose turn it is among `consumers`.
    turn: usize,
    stats: GroupStats,
}

struct Consumer {
    group: usize,
    credit: u32,
    holds: BTreeSet<u64>,
    /// Whether it carries messages to another node (handed some only while the group has no
    /// consumer here).
    relay: bool,
}

/// What happened to the backlog, for the store.
pub(super) enum BacklogChange {
    Saved(Arc<str>, Arc<BacklogMessage>),
    Removed(Arc<str>, u64),
}

/// Every consumer group, its backlog and its consumers.
#[derive(Default)]
pub(super) struct ConsumerGroups {
    groups: Vec<Group>,
    consumers: HashMap<ConsumerId, Consumer>,
    next_consumer: u64,
    limits: BacklogLimits,
}

impl ConsumerGroups {
    pub(super) fn new(configs: &[ConsumerGroupConfig], limits: BacklogLimits) -> Self {
        ConsumerGroups {
            groups: configs
                .iter()
                .map(|config| Group {
                    id: Arc::from(config.id.as_str()),
                    config: config.clone(),
                    entries: BTreeMap::new(),
                    waiting: VecDeque::new(),
                    bytes: 0,
                    consumers: Vec::new(),
                    turn: 0,
                    stats: GroupStats {
                        id: config.id.clone(),
                        ..GroupStats::default()
                    },
                })
                .collect(),
            consumers: HashMap::new(),
            next_consumer: 1,
            limits,
        }
    }

    /// Whether any group is configured (else nothing is forwarded at all).
    pub(super) fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Whether some group takes messages of `kind` (of some kind of it) for `product_key`.
    pub(super) fn wants(&self, kind: MessageKinds, product_key: &str) -> bool {
        self.groups
            .iter()
            .any(|group| group.config.kinds.intersects(kind) && group.takes_product(product_key))
    }

    /// Puts `message` in the backlog of every group that takes it; the changes for the store
    /// and what is handed out at once go to `changes` and `handed`.
    pub(super) fn forward(
        &mut self,
        kind: MessageKinds,
        product_key: &str,
        message: BacklogMessage,
        now: Instant,
        changes: &mut Vec<BacklogChange>,
        handed: &mut Vec<Handed>,
    ) {
        let message = Arc::new(message);
        for index in 0..self.groups.len() {
            let Some(group) = self.groups.get_mut(index) else {
                continue;
            };
            if !group.takes(kind, product_key) {
                continue;
            }
            group.insert(Arc::clone(&message), now);
            changes.push(BacklogChange::Saved(
                Arc::clone(&group.id),
                Arc::clone(&message),
            ));
            group.enforce(&self.limits, changes);
            self.dispatch(index, handed);
        }
    }

    /// A message a store kept for `group`, back in its backlog, waiting; `false` when no
    /// such group is configured any more (the caller forgets it).
    pub(super) fn restore(&mut self, group: &str, message: BacklogMessage, at: Instant) -> bool {
        let Some(group) = self.groups.iter_mut().find(|g| g.config.id == group) else {
            return false;
        };
        group.insert(Arc::new(message), at);
        true
    }

    /// Attaches a consumer (a relay, with `relay`) to the group: its id, and the group's id
    /// when it is the group's first consumer here.
    pub(super) fn attach(
        &mut self,
        group_id: &str,
        relay: bool,
    ) -> Result<(ConsumerId, Option<Arc<str>>), UnknownConsumerGroup> {
        let Some(index) = self.groups.iter().position(|g| g.config.id == group_id) else {
            return Err(UnknownConsumerGroup(group_id.into()));
        };
        let id = ConsumerId(self.next_consumer);
        self.next_consumer += 1;
        self.consumers.insert(
            id,
            Consumer {
                group: index,
                credit: 0,
                holds: BTreeSet::new(),
                relay,
            },
        );
        let mut first = None;
        if let Some(group) = self.groups.get_mut(index) {
            group.consumers.push(id);
            match relay {
                true => group.stats.relays += 1,
                false => {
                    group.stats.consumers += 1;
                    if group.stats.consumers == 1 {
                        first = Some(Arc::clone(&group.id));
                    }
                }
            }
        }
        Ok((id, first))
    }

    /// Puts a message another node relayed in the group's backlog, as made at `at` (on the
    /// hub's clock, for its maximum age); its id is a fresh one of this hub.
    pub(super) fn accept_relayed(
        &mut self,
        group_id: &str,
        message: BacklogMessage,
        at: Instant,
        changes: &mut Vec<BacklogChange>,
        handed: &mut Vec<Handed>,
    ) -> Result<(), UnknownConsumerGroup> {
        let Some(index) = self.groups.iter().position(|g| g.config.id == group_id) else {
            return Err(UnknownConsumerGroup(group_id.into()));
        };
        if let Some(group) = self.groups.get_mut(index) {
            let message = Arc::new(message);
            group.insert(Arc::clone(&message), at);
            group.stats.relayed_in += 1;
            changes.push(BacklogChange::Saved(Arc::clone(&group.id), message));
            group.enforce(&self.limits, changes);
        }
        self.dispatch(index, handed);
        Ok(())
    }

    /// The consumer may take `credit` more messages.
    pub(super) fn credit(&mut self, consumer: ConsumerId, credit: u32, handed: &mut Vec<Handed>) {
        let Some(state) = self.consumers.get_mut(&consumer) else {
            return;
        };
        state.credit = state.credit.saturating_add(credit);
        let group = state.group;
        self.dispatch(group, handed);
    }

    /// The consumer settled the message: it leaves the backlog.
    pub(super) fn settled(
        &mut self,
        consumer: ConsumerId,
        message_id: u64,
        changes: &mut Vec<BacklogChange>,
    ) {
        let Some(state) = self.consumers.get_mut(&consumer) else {
            return;
        };
        if !state.holds.remove(&message_id) {
            return;
        }
        if let Some(group) = self.groups.get_mut(state.group)
            && let Some(entry) = group.entries.remove(&message_id)
        {
            group.bytes -= entry.message.weight();
            group.stats.settled += 1;
            changes.push(BacklogChange::Removed(Arc::clone(&group.id), message_id));
        }
    }

    /// The consumer gave the message back (released, rejected, or gone): it waits for the
    /// next consumer, first in line.
    pub(super) fn released(
        &mut self,
        consumer: ConsumerId,
        message_id: u64,
        handed: &mut Vec<Handed>,
    ) {
        let Some(state) = self.consumers.get_mut(&consumer) else {
            return;
        };
        if !state.holds.remove(&message_id) {
            return;
        }
        let group = state.group;
        if let Some(g) = self.groups.get_mut(group) {
            g.give_back(message_id);
        }
        self.dispatch(group, handed);
    }

    /// The consumer went away: what it held goes to the others. The group's id when it was
    /// the group's last consumer here.
    pub(super) fn detach(
        &mut self,
        consumer: ConsumerId,
        handed: &mut Vec<Handed>,
    ) -> Option<Arc<str>> {
        let state = self.consumers.remove(&consumer)?;
        let mut last = None;
        if let Some(group) = self.groups.get_mut(state.group) {
            group.consumers.retain(|c| *c != consumer);
            match state.relay {
                true => group.stats.relays -= 1,
                false => {
                    group.stats.consumers -= 1;
                    if group.stats.consumers == 0 {
                        last = Some(Arc::clone(&group.id));
                    }
                }
            }
            // Oldest first, ahead of what waited.
            for message_id in state.holds.into_iter().rev() {
                group.give_back(message_id);
            }
        }
        self.dispatch(state.group, handed);
        last
    }

    pub(super) fn stats(&self) -> Vec<GroupStats> {
        self.groups
            .iter()
            .map(|group| GroupStats {
                backlog: group.entries.len(),
                in_flight: group.entries.len() - group.waiting.len(),
                ..group.stats.clone()
            })
            .collect()
    }

    /// When the oldest waiting message of a group gets too old.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let max_age = self.limits.max_age?;
        // The front of a group's waiting line is its oldest (see `Group::waiting`): a look at
        // each group's, not a walk of its backlog, however long.
        self.groups
            .iter()
            .filter_map(|group| {
                let oldest = group.waiting.front()?;
                group.entries.get(oldest).map(|entry| entry.at)
            })
            .min()
            .map(|at| at + max_age)
    }

    /// Drops the waiting messages too old at `now`.
    pub(super) fn expire(&mut self, now: Instant, changes: &mut Vec<BacklogChange>) {
        let Some(max_age) = self.limits.max_age else {
            return;
        };
        for group in &mut self.groups {
            while let Some(oldest) = group.waiting.front()
                && group
                    .entries
                    .get(oldest)
                    .is_none_or(|entry| now - entry.at >= max_age)
            {
                group.drop_oldest(changes);
            }
        }
    }

    /// Hands waiting messages of group `index` to its consumers with credit, in turn.
    fn dispatch(&mut self, index: usize, handed: &mut Vec<Handed>) {
        let Some(group) = self.groups.get_mut(index) else {
            return;
        };
        // Relays take messages only while no consumer here does.
        let relays_take = group.stats.consumers == 0;
        while !group.waiting.is_empty() && !group.consumers.is_empty() {
            // The next consumer in turn with credit, if any has some.
            let count = group.consumers.len();
            let next = (0..count)
                .map(|step| (group.turn + step) % count)
                .find(|at| {
                    group
                        .consumers
                        .get(*at)
                        .and_then(|id| self.consumers.get(id))
                        .is_some_and(|c| c.credit > 0 && (relays_take || !c.relay))
                });
            let Some(at) = next else {
                break;
            };
            group.turn = (at + 1) % count;
            let (Some(&consumer), Some(message_id)) =
                (group.consumers.get(at), group.waiting.pop_front())
            else {
                break;
            };
            let (Some(state), Some(entry)) = (
                self.consumers.get_mut(&consumer),
                group.entries.get_mut(&message_id),
            ) else {
                continue;
            };
            state.credit -= 1;
            state.holds.insert(message_id);
            entry.holder = Some(consumer);
            group.stats.delivered += 1;
            group.stats.redelivered += u64::from(entry.handed_before);
            handed.push(Handed {
                consumer,
                message: Arc::clone(&entry.message),
                redelivery: entry.handed_before,
            });
            entry.handed_before = true;
        }
    }
}

impl Group {
    fn takes(&self, kind: MessageKinds, product_key: &str) -> bool {
        self.config.kinds.contains(kind) && self.takes_product(product_key)
    }

    fn takes_product(&self, product_key: &str) -> bool {
        self.config.products.is_empty() || self.config.products.iter().any(|p| p == product_key)
    }

    fn insert(&mut self, message: Arc<BacklogMessage>, at: Instant) {
        let id = message.message_id;
        self.bytes += message.weight();
        let replaced = self.entries.insert(
            id,
            Entry {
                message,
                at,
                holder: None,
                handed_before: false,
            },
        );
        match replaced {
            // The same id twice (a restore over a live one): counted once.
            Some(old) => self.bytes -= old.message.weight(),
            None => self.waiting.push_back(id),
        }
    }

    fn give_back(&mut self, message_id: u64) {
        if let Some(entry) = self.entries.get_mut(&message_id) {
            entry.holder = None;
            self.waiting.push_front(message_id);
        }
    }

    /// Within the limits again: the oldest waiting messages go first (those consumers hold
    /// stay: they are on their way).
    fn enforce(&mut self, limits: &BacklogLimits, changes: &mut Vec<BacklogChange>) {
        while self.entries.len() > limits.max_messages || self.bytes > limits.max_bytes {
            if !self.drop_oldest(changes) {
                break;
            }
        }
    }

    /// Drops the oldest waiting message; whether there was one.
    fn drop_oldest(&mut self, changes: &mut Vec<BacklogChange>) -> bool {
        let Some(message_id) = self.waiting.pop_front() else {
            return false;
        };
        if let Some(entry) = self.entries.remove(&message_id) {
            self.bytes -= entry.message.weight();
            self.stats.dropped += 1;
            changes.push(BacklogChange::Removed(Arc::clone(&self.id), message_id));
        }
        true
    }
}

impl Hub {
    /// Attaches a consumer to the group `group_id` (the `consumerGroupId` of its user name).
    /// It gets nothing until it is given credit.
    pub fn attach_consumer(&mut self, group_id: &str) -> Result<ConsumerId, UnknownConsumerGroup> {
        self.attach(group_id, false)
    }

    /// In a cluster: attaches a relay to the group `group_id`, a consumer that carries its
    /// messages to the nodes where the group's consumers are. It is handed messages, as its
    /// credit allows, only while the group has no consumer here; it settles each once another
    /// node has it in its backlog ([`Hub::accept_relayed`] there), or releases it.
    pub fn attach_relay(&mut self, group_id: &str) -> Result<ConsumerId, UnknownConsumerGroup> {
        self.attach(group_id, true)
    }

    fn attach(&mut self, group_id: &str, relay: bool) -> Result<ConsumerId, UnknownConsumerGroup> {
        let (id, first) = self.consumer_groups.attach(group_id, relay)?;
        if let Some(group) = first {
            self.consumers_here(group, true);
        }
        Ok(id)
    }

    /// In a cluster: says that the group has its first consumer here, or lost its last.
    fn consumers_here(&mut self, group: Arc<str>, present: bool) {
        if self.config.cluster {
            self.outputs
                .push_back(HubOutput::ConsumersHere { group, present });
        }
    }

    /// In a cluster: a message another node's relay of the group `group_id` carried here, put
    /// in this node's backlog of the group with a fresh id (returned), kept in the store like
    /// any other and handed to the group's consumers here. The relay settles it on its node
    /// once this is committed.
    pub fn accept_relayed(
        &mut self,
        group_id: &str,
        topic: TopicName,
        payload: Bytes,
        generate_time: UnixMillis,
        now: Instant,
    ) -> Result<u64, UnknownConsumerGroup> {
        let message_id = self.allocate_message_id().0;
        let message = BacklogMessage {
            message_id,
            topic,
            payload,
            generate_time,
        };
        // Its age counts from when it was made, by the wall clock, as a restored one's.
        let age_ms = self.wall_clock.0.saturating_sub(generate_time.0);
        let at = Instant::from_millis(now.as_millis().saturating_sub(age_ms));
        let mut changes = core::mem::take(&mut self.backlog_changes);
        let mut handed = core::mem::take(&mut self.handed);
        let accepted =
            self.consumer_groups
                .accept_relayed(group_id, message, at, &mut changes, &mut handed);
        self.record_backlog(&mut changes);
        self.hand_out(&mut handed);
        self.backlog_changes = changes;
        self.handed = handed;
        accepted.map(|()| message_id)
    }

    /// The consumer may take `credit` more messages (its link's flow): as many waiting
    /// messages go out as [`HubOutput::Forward`]s.
    pub fn consumer_credit(&mut self, consumer: ConsumerId, credit: u32) {
        let mut handed = core::mem::take(&mut self.handed);
        self.consumer_groups.credit(consumer, credit, &mut handed);
        self.hand_out(&mut handed);
        self.handed = handed;
    }

    /// The consumer settled (accepted) the message: it leaves its group's backlog, in the
    /// store too.
    pub fn forward_settled(&mut self, consumer: ConsumerId, message_id: u64) {
        let mut changes = core::mem::take(&mut self.backlog_changes);
        self.consumer_groups
            .settled(consumer, message_id, &mut changes);
        self.record_backlog(&mut changes);
        self.backlog_changes = changes;
    }

    /// The consumer gave the message back (released, rejected, modified): the next consumer
    /// of its group gets it.
    pub fn forward_released(&mut self, consumer: ConsumerId, message_id: u64) {
        let mut handed = core::mem::take(&mut self.handed);
        self.consumer_groups
            .released(consumer, message_id, &mut handed);
        self.hand_out(&mut handed);
        self.handed = handed;
    }

    /// The consumer went away (its link or connection closed): what it held and had not
    /// settled goes to the next consumer of its group.
    pub fn detach_consumer(&mut self, consumer: ConsumerId) {
        let mut handed = core::mem::take(&mut self.handed);
        let last = self.consumer_groups.detach(consumer, &mut handed);
        self.hand_out(&mut handed);
        self.handed = handed;
        if let Some(group) = last {
            self.consumers_here(group, false);
        }
    }

    /// Each consumer group's backlog, consumers and counts.
    pub fn consumer_group_stats(&self) -> Vec<GroupStats> {
        self.consumer_groups.stats()
    }

    /// A message a store kept in the backlog of `group`, back in it (waiting for a
    /// consumer). One of a group no longer configured is forgotten, in the store too.
    pub fn restore_backlog_message(&mut self, group: &str, message: BacklogMessage, now: Instant) {
        // Its age counts from when it was made, by the wall clock.
        let age_ms = self.wall_clock.0.saturating_sub(message.generate_time.0);
        let at = Instant::from_millis(now.as_millis().saturating_sub(age_ms));
        let message_id = message.message_id;
        if !self.consumer_groups.restore(group, message, at) {
            self.record_store_change(StoreChange::BacklogRemoved {
                group: Arc::from(group),
                message_id,
            });
        }
    }

    /// A connection's device published `message` (the ACL let it): the device was heard
    /// from, and the message is forwarded. An open-mode client's is not: it is no device.
    pub(super) fn forward_from(&mut self, conn: ConnId, message: &Message, now: Instant) {
        let wall_clock = self.wall_clock;
        let Some(session) = self
            .sessions
            .of_conn(conn)
            .and_then(|sid| self.sessions.get_mut(sid))
        else {
            return;
        };
        if session.key.device().is_none() {
            return;
        }
        session.last_seen = wall_clock;
        self.forward_upstream(message, now);
    }

    /// A device published `message` on one of its own topics: forwarded to the groups that
    /// take its product's upstream messages.
    fn forward_upstream(&mut self, message: &Message, now: Instant) {
        let Some(product_key) = topic_product_key(message.topic.as_str()) else {
            return;
        };
        if !self
            .consumer_groups
            .wants(MessageKinds::UPSTREAM, product_key)
        {
            return;
        }
        let product_key = String::from(product_key);
        let backlog = BacklogMessage {
            message_id: self.allocate_message_id().0,
            topic: message.topic.clone(),
            payload: message.payload.clone(),
            generate_time: self.wall_clock,
        };
        self.forward(MessageKinds::UPSTREAM, &product_key, backlog, now);
    }

    /// A device's session got or lost its connection: its status message (§9.1) to the
    /// groups that take its product's status.
    pub(super) fn forward_status(&mut self, sid: SessionId, online: bool, now: Instant) {
        let Some(session) = self.sessions.get(sid) else {
            return;
        };
        let Some(device) = session.key.device() else {
            return;
        };
        if !self
            .consumer_groups
            .wants(MessageKinds::STATUS, &device.product_key)
        {
            return;
        }
        let client_ip = session
            .client_ip
            .map(|ip| alloc::format!("{ip}"))
            .unwrap_or_default();
        let last = match online {
            true => self.wall_clock,
            false => session.last_seen,
        };
        let iot_id = session.iot_id.as_deref().unwrap_or_default();
        let status = device_status(device, iot_id, online, self.wall_clock, last, &client_ip);
        let product_key = device.product_key.clone();
        self.forward_made(MessageKinds::STATUS, &product_key, status, now);
    }

    /// A message the platform makes (a device's lifecycle, a gateway's topology, …), to the
    /// groups that take `kind` for `product_key`: `make` is called with the wall clock, only
    /// if one does.
    pub fn forward_platform(
        &mut self,
        kind: MessageKinds,
        product_key: &str,
        now: Instant,
        make: impl FnOnce(UnixMillis) -> Forwarded,
    ) {
        if self.consumer_groups.wants(kind, product_key) {
            let message = make(self.wall_clock);
            self.forward_made(kind, product_key, message, now);
        }
    }

    /// A device's lifecycle changed in the registry (registered, deleted, disabled,
    /// enabled): its `thing/lifecycle` message (§9.2) to the groups that take its product's
    /// lifecycle; the secret goes only with `create`.
    pub fn forward_lifecycle(
        &mut self,
        device: &RegisteredDevice,
        action: LifecycleAction,
        now: Instant,
    ) {
        let identity = &device.identity;
        self.forward_platform(MessageKinds::LIFECYCLE, &identity.product_key, now, |at| {
            lifecycle(identity, &device.iot_id, action, Some(&device.secret), at)
        });
    }

    /// The platform's id of a session's device, or `""` when not known (a session restored
    /// from the store whose device has not connected since).
    pub(super) fn session_iot_id(&self, sid: SessionId) -> &str {
        self.sessions
            .get(sid)
            .and_then(|session| session.iot_id.as_deref())
            .unwrap_or_default()
    }

    fn forward_made(
        &mut self,
        kind: MessageKinds,
        product_key: &str,
        made: Forwarded,
        now: Instant,
    ) {
        // A device's identity makes a valid topic; the check costs nothing.
        let topic = Bytes::from(made.topic.into_bytes());
        let Ok(topic) = TopicName::from_bytes(topic, &self.server_topic_limits) else {
            return;
        };
        let backlog = BacklogMessage {
            message_id: self.allocate_message_id().0,
            topic,
            payload: Bytes::from(made.payload),
            generate_time: self.wall_clock,
        };
        self.forward(kind, product_key, backlog, now);
    }

    /// Drops the backlog's messages too old at `now`.
    pub(super) fn expire_backlog(&mut self, now: Instant) {
        let mut changes = core::mem::take(&mut self.backlog_changes);
        self.consumer_groups.expire(now, &mut changes);
        self.record_backlog(&mut changes);
        self.backlog_changes = changes;
    }

    fn forward(
        &mut self,
        kind: MessageKinds,
        product_key: &str,
        message: BacklogMessage,
        now: Instant,
    ) {
        let mut changes = core::mem::take(&mut self.backlog_changes);
        let mut handed = core::mem::take(&mut self.handed);
        self.consumer_groups
            .forward(kind, product_key, message, now, &mut changes, &mut handed);
        self.record_backlog(&mut changes);
        self.hand_out(&mut handed);
        self.backlog_changes = changes;
        self.handed = handed;
    }

    fn record_backlog(&mut self, changes: &mut Vec<BacklogChange>) {
        for change in changes.drain(..) {
            let change = match change {
                BacklogChange::Saved(group, message) => {
                    StoreChange::BacklogSaved { group, message }
                }
                BacklogChange::Removed(group, message_id) => {
                    StoreChange::BacklogRemoved { group, message_id }
                }
            };
            self.record_store_change(change);
        }
    }

    fn hand_out(&mut self, handed: &mut Vec<Handed>) {
        for Handed {
            consumer,
            message,
            redelivery,
        } in handed.drain(..)
        {
            self.outputs.push_back(HubOutput::Forward {
                consumer,
                message,
                redelivery,
            });
        }
    }
}

/// The product a device's own topic belongs to: `/{pk}/…` or `/sys/{pk}/…`.
fn topic_product_key(topic: &str) -> Option<&str> {
    let rest = topic.strip_prefix('/')?;
    let rest = rest.strip_prefix("sys/").unwrap_or(rest);
    let (product_key, _) = rest.split_once('/')?;
    // A product's broadcast topics and the platform's system topics are no device's own.
    let system = matches!(product_key, "broadcast" | "ext" | "shadow" | "ota" | "as");
    (!product_key.is_empty() && !system).then_some(product_key)
}

#[cfg(test)]
mod tests {
    use super::topic_product_key;

    #[test]
    fn only_a_devices_own_topics_name_a_product() {
        assert_eq!(topic_product_key("/a1PK/dev-1/user/update"), Some("a1PK"));
        assert_eq!(topic_product_key("/sys/a1PK/dev-1/thing/x"), Some("a1PK"));
        for other in [
            "/broadcast/a1PK/news",
            "/ext/ntp/a1PK/d/request",
            "/shadow/update/a1PK/d",
            "a1PK/d/x",
            "//d/x",
        ] {
            assert_eq!(topic_product_key(other), None, "{other}");
        }
    }
}
