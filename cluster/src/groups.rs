//! The server-side subscription across nodes: a consumer group's consumers may connect to any
//! node, and get the messages of devices on every node.
//!
//! Each node keeps its groups' backlogs, as a single broker does. While a group has no
//! consumer on a node, that node's *relay* of the group ([`Hub::attach_relay`]) takes its
//! messages and sends them (those handed at once together, up to [`RELAY_BATCH`]), as a NATS
//! request, to the group's subject ([`group_subject`]),
//! where the nodes that have consumers of the group listen in one queue group (NATS picks one
//! of them for each message). The node that gets it puts it in its own backlog
//! ([`Hub::accept_relayed`]), kept in its store, and answers; only then does the relay settle
//! it on its node. No answer (no node has consumers, or the request timed out) and the relay
//! gives the message back after [`RETRY_AFTER`], to be sent again: at least once, as within
//! one node. A node answers a message it was sent again (its answer was lost) without taking
//! it twice, as long as it remembers it ([`REMEMBERED_RELAYS`]).
//!
//! Within a node the group's consumers share its messages in turn; across nodes, the messages
//! of a node without consumers are spread over the nodes that have some.
//!
//! [`Hub::attach_relay`]: aliot_core::hub::Hub::attach_relay
//! [`Hub::accept_relayed`]: aliot_core::hub::Hub::accept_relayed

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use aliot_io::broker::{BrokerHandle, GroupConsumer};
use aliot_services::UnixMillis;
use bytes::Bytes;
use futures_util::FutureExt as _;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::push_key_part;
use crate::wire;

/// Messages a relay has on their way to other nodes at once.
const RELAY_WINDOW: u32 = 1024;

/// Requests a relay has on their way at once: while they are, what the hub hands it waits,
/// and goes in the next request together (the busier the relay, the larger its requests).
const RELAY_REQUESTS: usize = 4;

/// Messages one request carries at most (those the relay was handed at once)...
const RELAY_BATCH: usize = 256;

/// ...and their topics' and payloads' bytes at most, under NATS's default `max_payload`
/// (1 MiB) with room for the header (a message larger than this goes alone).
const RELAY_BATCH_BYTES: usize = 512 * 1024;

/// The largest message a relay carries (topic and payload; MQTT's default largest packet here
/// is 256 KiB): one larger cannot fit in a NATS message, and is dropped (counted).
const RELAY_MAX_MESSAGE: usize = 900 * 1024;

/// How long a relayed message nobody took waits before it is sent again.
pub(crate) const RETRY_AFTER: Duration = Duration::from_secs(1);

/// How long a node may take to keep a relayed message and answer.
const RELAY_TIMEOUT: Duration = Duration::from_secs(5);

/// Relayed messages a node remembers having taken (by their node and id there), to answer one
/// sent again without taking it twice.
pub(crate) const REMEMBERED_RELAYS: usize = 100_000;

/// The subject a consumer group's messages are relayed on: `aliot.group.` and the group's id
/// (as one token).
pub fn group_subject(group: &str) -> String {
    let mut subject = String::from("aliot.group.");
    push_key_part(&mut subject, group);
    subject
}

/// A relay request's header: the messages it carries, whose payloads follow it one after the
/// other.
#[derive(Debug, Serialize, Deserialize)]
struct RelayHeader {
    /// The node that relays them.
    node: String,
    /// That node's process (random at each start): message ids start again after a restart
    /// without a store, so the ids a node remembers are those of one process.
    #[serde(default)]
    incarnation: u64,
    messages: Vec<RelayedMessage>,
}

#[derive(Debug, Serialize, Deserialize)]
struct RelayedMessage {
    /// Its id on the relaying node.
    id: u64,
    topic: String,
    generate_time: u64,
    /// Its payload's length.
    len: usize,
}

/// The relays' side of a node.
pub(crate) struct GroupRelays {
    node_id: String,
    client: async_nats::Client,
    presence: mpsc::UnboundedSender<(String, bool)>,
    presence_rx: Mutex<Option<mpsc::UnboundedReceiver<(String, bool)>>>,
    /// The groups this node receives relays of, with the task that does.
    receiving: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
    /// This process's incarnation ([`RelayHeader::incarnation`]).
    incarnation: u64,
    /// Relayed messages taken here, by group, relaying node and its incarnation.
    remembered: Mutex<HashMap<(String, String, u64), Remembered>>,
    /// Messages too large to relay in one NATS message, dropped (counted, logged).
    pub(crate) too_large: AtomicU64,
    /// Messages this node's relays sent to other nodes, which took them.
    pub(crate) relayed_out: AtomicU64,
    /// Messages other nodes relayed here.
    pub(crate) relayed_in: AtomicU64,
}

/// The ids (on their node) of the last [`REMEMBERED_RELAYS`] messages one node relayed here
/// for one group.
#[derive(Default)]
struct Remembered {
    taken: HashSet<u64>,
    order: VecDeque<u64>,
}

impl Remembered {
    fn remember(&mut self, id: u64) {
        if self.taken.insert(id) {
            self.order.push_back(id);
        }
        while self.order.len() > REMEMBERED_RELAYS {
            if let Some(old) = self.order.pop_front() {
                self.taken.remove(&old);
            }
        }
    }
}

impl GroupRelays {
    pub(crate) fn new(node_id: &str, client: async_nats::Client) -> Self {
        let (presence, presence_rx) = mpsc::unbounded_channel();
        GroupRelays {
            node_id: node_id.to_owned(),
            client,
            presence,
            presence_rx: Mutex::new(Some(presence_rx)),
            receiving: Mutex::new(HashMap::new()),
            incarnation: {
                let mut bytes = [0u8; 8];
                // Any value differs from the last process's but by chance; the clock will do
                // when the OS gives no random bytes.
                if getrandom::getrandom(&mut bytes).is_err() {
                    bytes = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |t| t.as_nanos() as u64)
                        .to_le_bytes();
                }
                u64::from_le_bytes(bytes)
            },
            remembered: Mutex::new(HashMap::new()),
            too_large: AtomicU64::new(0),
            relayed_out: AtomicU64::new(0),
            relayed_in: AtomicU64::new(0),
        }
    }

    /// The hub said whether `group` has consumers here (from the hub task: queued).
    pub(crate) fn consumers_here(&self, group: &str, present: bool) {
        let _ = self.presence.send((group.to_owned(), present));
    }

    /// Attaches a relay to each of the broker's consumer groups, and follows which groups
    /// have consumers here.
    pub(crate) fn start(self: &Arc<Self>, broker: &BrokerHandle) {
        let Some(presence) = crate::taken(&self.presence_rx) else {
            return;
        };
        let broker = broker.local();
        tokio::spawn(Arc::clone(self).follow_presence(presence, broker.clone()));
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let Ok(groups) = broker.consumer_group_stats().await else {
                return;
            };
            for group in groups {
                match broker.attach_relay(&group.id).await {
                    Ok(Ok(relay)) => {
                        tokio::spawn(Arc::clone(&this).relay(group.id, relay));
                    }
                    Ok(Err(error)) => warn!(node = %this.node_id, %error, "no relay"),
                    Err(_) => return,
                }
            }
        });
    }

    /// Receives the other nodes' relays of each group while it has consumers here.
    async fn follow_presence(
        self: Arc<Self>,
        mut presence: mpsc::UnboundedReceiver<(String, bool)>,
        broker: BrokerHandle,
    ) {
        while let Some((group, present)) = presence.recv().await {
            let mut receiving = self
                .receiving
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match present {
                true => {
                    let task =
                        tokio::spawn(Arc::clone(&self).receive(group.clone(), broker.clone()));
                    if let Some(old) = receiving.insert(group, task) {
                        old.abort();
                    }
                }
                false => {
                    if let Some(task) = receiving.remove(&group) {
                        task.abort();
                    }
                }
            }
        }
    }

    /// Takes the other nodes' relays of `group` into this node's backlog of it, and answers
    /// each once it is kept.
    async fn receive(self: Arc<Self>, group: String, broker: BrokerHandle) {
        let subject = group_subject(&group);
        // One queue per group: NATS gives each message to one of the nodes listening.
        let queue = subject.replace('.', "_");
        let mut requests = loop {
            match self
                .client
                .queue_subscribe(subject.clone(), queue.clone())
                .await
            {
                Ok(requests) => break requests,
                Err(error) => {
                    warn!(node = %self.node_id, %group, %error, "cannot receive relays yet");
                    tokio::time::sleep(RETRY_AFTER).await;
                }
            }
        };
        debug!(node = %self.node_id, %group, "receiving relays");
        while let Some(request) = requests.next().await {
            let Some(reply) = request.reply else {
                continue;
            };
            let (node, broker, group) = (Arc::clone(&self), broker.clone(), group.clone());
            tokio::spawn(async move {
                let answer = node.take(&group, &request.payload, &broker).await;
                let _ = node.client.publish(reply, answer).await;
            });
        }
    }

    /// Keeps the messages of one relay request here; the answer to send: empty for "kept",
    /// else why not.
    async fn take(&self, group: &str, request: &Bytes, broker: &BrokerHandle) -> Bytes {
        let Ok((header, mut payloads)) = wire::unframe::<RelayHeader>(request) else {
            return Bytes::from_static(b"malformed");
        };
        let origin = (group.to_owned(), header.node, header.incarnation);
        let mut fresh = Vec::with_capacity(header.messages.len());
        let mut batch = Vec::with_capacity(header.messages.len());
        {
            let mut remembered = self.remembered();
            let remembered = remembered.entry(origin.clone()).or_default();
            for message in header.messages {
                if message.len > payloads.len() {
                    return Bytes::from_static(b"malformed: payloads shorter than said");
                }
                let payload = payloads.split_to(message.len);
                // One sent again (its answer was lost) and taken already.
                if remembered.taken.contains(&message.id) {
                    continue;
                }
                let Ok(topic) = wire::topic(&message.topic) else {
                    return Bytes::from_static(b"malformed topic");
                };
                fresh.push(message.id);
                batch.push((topic, payload, UnixMillis(message.generate_time)));
            }
        }
        if batch.is_empty() {
            return Bytes::new();
        }
        match broker.accept_relayed(group, batch).await {
            Ok(Ok(ids)) => {
                self.relayed_in
                    .fetch_add(ids.len() as u64, Ordering::Relaxed);
                let mut remembered = self.remembered();
                let remembered = remembered.entry(origin).or_default();
                for id in fresh {
                    remembered.remember(id);
                }
                Bytes::new()
            }
            Ok(Err(error)) => Bytes::from(error.to_string()),
            Err(_) => Bytes::from_static(b"the broker has stopped"),
        }
    }

    fn remembered(&self) -> MutexGuard<'_, HashMap<(String, String, u64), Remembered>> {
        self.remembered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends what the hub hands this relay of `group` to a node with consumers of it, and
    /// settles each message that node took.
    async fn relay(self: Arc<Self>, group: String, mut relay: GroupConsumer) {
        let subject = group_subject(&group);
        if relay.credit(RELAY_WINDOW).await.is_err() {
            return;
        }
        info!(node = %self.node_id, %group, "relaying the group while it has no consumer here");
        let mut sending = FuturesUnordered::new();
        loop {
            tokio::select! {
                handed = relay.next(), if sending.len() < RELAY_REQUESTS => {
                    let Some((first, _redelivery)) = handed else { return };
                    if first.payload.len() + first.topic.len() > RELAY_MAX_MESSAGE {
                        // No NATS message can carry it: another node never will.
                        self.too_large.fetch_add(1, Ordering::Relaxed);
                        warn!(node = %self.node_id, %group, bytes = first.payload.len(),
                            "a message too large to relay to another node is dropped");
                        if relay.answered_all(vec![first.message_id], true).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    // What else the hub handed at once goes in the same request, within
                    // its limits.
                    let mut bytes = first.payload.len() + first.topic.len();
                    let mut batch = vec![first];
                    let mut held_back = None;
                    while batch.len() < RELAY_BATCH {
                        match relay.next().now_or_never() {
                            Some(Some((message, _))) => {
                                let size = message.payload.len() + message.topic.len();
                                if bytes + size > RELAY_BATCH_BYTES {
                                    held_back = Some(message);
                                    break;
                                }
                                bytes += size;
                                batch.push(message);
                            }
                            _ => break,
                        }
                    }
                    // One that did not fit goes back, first in line for the next request.
                    if let Some(held) = held_back
                        && relay.answered(held.message_id, false, 1).await.is_err()
                    {
                        return;
                    }
                    let header = RelayHeader {
                        node: self.node_id.clone(),
                        incarnation: self.incarnation,
                        messages: batch
                            .iter()
                            .map(|message| RelayedMessage {
                                id: message.message_id,
                                topic: message.topic.as_str().to_owned(),
                                generate_time: message.generate_time.0,
                                len: message.payload.len(),
                            })
                            .collect(),
                    };
                    let payloads: Vec<&[u8]> = batch.iter().map(|m| &m.payload[..]).collect();
                    let frame = wire::frame(&header, &payloads);
                    let ids: Vec<u64> = batch.iter().map(|m| m.message_id).collect();
                    let (client, subject) = (self.client.clone(), subject.clone());
                    sending.push(async move {
                        let sent = tokio::time::timeout(
                            RELAY_TIMEOUT,
                            client.request(subject, frame),
                        )
                        .await;
                        let taken = match sent {
                            Ok(Ok(answer)) if answer.payload.is_empty() => Ok(()),
                            Ok(Ok(answer)) => {
                                Err(String::from_utf8_lossy(&answer.payload).into_owned())
                            }
                            Ok(Err(error)) => Err(error.to_string()),
                            Err(_) => Err("no answer in time".to_owned()),
                        };
                        if let Err(why) = &taken {
                            debug!(messages = ids.len(), %why, "relayed messages not taken; sent again later");
                            // Held meanwhile, so that they are not handed back at once.
                            tokio::time::sleep(RETRY_AFTER).await;
                        }
                        (ids, taken.is_ok())
                    });
                }
                Some((ids, taken)) = sending.next(), if !sending.is_empty() => {
                    if taken {
                        self.relayed_out.fetch_add(ids.len() as u64, Ordering::Relaxed);
                    }
                    // Settled when taken, given back when not; the window stays as it was.
                    if relay.answered_all(ids, taken).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}
