//! [`BrokerHandle`]: the server side of a running broker.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aliot_auth::DeviceIdentity;
use aliot_core::Message;
use aliot_core::codec::QoS;
use aliot_core::hub::{self, Counters, DeviceDelivery, Hub, RrpcOutcome, ServerPublished};
use aliot_services::{
    AlinkCode, DeviceState, DownlinkResult, OtaJob, ShadowCode, ShadowRequest, is_identifier,
};
use aliot_topic::{MessageId, TopicName};
use bytes::Bytes;
use serde_json::{Map, Value};
use tokio_sync::sync::{mpsc, oneshot};

use super::cluster::{ClusterLink, ClusterStats, DeviceAnswer, DeviceCall};
use super::hub_task::{ConsumerAnswer, ConsumerDelivery, HubRequest};
use crate::registry::Registry;

/// The answer to an RRPC call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RrpcReply {
    /// The messageId the request was published with.
    pub message_id: MessageId,
    /// How the call ended (`SUCCESS` with the device's payload, `TIMEOUT`, `OFFLINE`,
    /// `HALFCONN` or `UNKNOWN`).
    pub outcome: RrpcOutcome,
}

/// Why an RRPC call could not be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RrpcError {
    /// The hub refused the call (timeout outside 1,000–8,000 ms, a custom topic that is not
    /// one of the device's own).
    #[error(transparent)]
    Rejected(#[from] hub::InvalidRrpcCall),
    /// The broker has stopped.
    #[error("the broker has stopped")]
    BrokerStopped,
}

/// Why a service call could not be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// The service identifier is not 1–50 letters, digits or `_`.
    #[error("service identifier {0:?} is not 1-50 letters, digits or _")]
    InvalidIdentifier(String),
    /// The hub refused the synchronous call's RRPC (a timeout outside 1,000–8,000 ms).
    #[error(transparent)]
    Rejected(#[from] hub::InvalidRrpcCall),
    /// The broker has stopped.
    #[error("the broker has stopped")]
    BrokerStopped,
}

/// Why a server-side publish was not made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The broker has stopped.
    #[error("the broker has stopped")]
    BrokerStopped,
    /// This node of a cluster could not hand a QoS 1 message to the other nodes (NATS is
    /// unreachable): it was published nowhere.
    #[error("the other nodes of the cluster cannot be reached: {0}")]
    ClusterUnreachable(String),
}

impl From<BrokerStopped> for PublishError {
    fn from(BrokerStopped: BrokerStopped) -> Self {
        PublishError::BrokerStopped
    }
}

/// The broker has stopped: the call was not made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the broker has stopped")]
pub struct BrokerStopped;

/// What the hub has counted, with the gauges of the moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Every counter of the hub.
    pub counters: Counters,
    /// Connections with an open session.
    pub connections: usize,
    /// Sessions kept (online and offline).
    pub sessions: usize,
    /// RRPC calls waiting for their device.
    pub pending_rrpc: usize,
    /// PUBACKs held now because a subscriber has fallen behind (flow control).
    pub held_acks: usize,
    /// The durable store, when the broker keeps one.
    pub store: Option<StoreStats>,
    /// Each consumer group of the server-side subscription: backlog, consumers, counts.
    pub consumer_groups: Vec<hub::GroupStats>,
}

/// What the durable store has done.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Transactions committed (each covers every batch of changes that waited).
    pub commits: u64,
    /// Changes committed.
    pub changes: u64,
    /// Commits that failed (each try counts); while the last one failed, QoS 1 PUBACKs wait.
    pub failures: u64,
    /// Whether the last commit failed.
    pub failing: bool,
    /// PUBACKs and answers waiting for a commit now.
    pub waiting: usize,
}

/// What the accept loops and TLS handshakes count: connections the hub never hears of.
#[derive(Debug, Default)]
pub(crate) struct TransportCounters {
    /// Connections closed at their accept, the broker holding its maximum already.
    pub(crate) refused_at_cap: AtomicU64,
    /// TLS-PSK handshakes refused for their identity (not the platform's form, or an unknown
    /// device).
    pub(crate) psk_identities_refused: AtomicU64,
    /// TLS 1.0 handshakes completed on listeners that allow it.
    pub(crate) tls_1_0_handshakes: AtomicU64,
    /// TLS 1.1 handshakes completed on listeners that allow it.
    pub(crate) tls_1_1_handshakes: AtomicU64,
}

impl TransportCounters {
    fn snapshot(&self) -> TransportStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        TransportStats {
            refused_at_cap: read(&self.refused_at_cap),
            psk_identities_refused: read(&self.psk_identities_refused),
            tls_1_0_handshakes: read(&self.tls_1_0_handshakes),
            tls_1_1_handshakes: read(&self.tls_1_1_handshakes),
        }
    }
}

/// What the listeners counted before MQTT ([`BrokerHandle::transport_stats`]), since the start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Connections closed as soon as they were accepted, at the connection cap.
    pub refused_at_cap: u64,
    /// TLS-PSK handshakes refused because their identity named no registered device (or was
    /// not in the platform's form).
    pub psk_identities_refused: u64,
    /// TLS 1.0 handshakes accepted (listeners with `min_version = "1.0"`).
    pub tls_1_0_handshakes: u64,
    /// TLS 1.1 handshakes accepted (listeners with `min_version` 1.0 or 1.1).
    pub tls_1_1_handshakes: u64,
}

/// The server side of a running broker: RRPC calls, publishes, statistics.
///
/// Cheap to clone; every call is a message to the hub task and its answer. Once the broker
/// has stopped, calls end at once: [`RrpcError::BrokerStopped`], no subscriber reached,
/// [`DeviceDelivery::Offline`], and the statistics as they were at shutdown.
#[derive(Clone)]
pub struct BrokerHandle {
    requests: mpsc::Sender<HubRequest>,
    final_stats: Arc<Mutex<Option<Stats>>>,
    /// Counted by the accept loops and handshakes (the hub never sees these connections).
    transport: Arc<TransportCounters>,
    /// The registry the server side may change, if the broker has one.
    registry: Option<Registry>,
    /// The cluster this broker is a node of: calls to devices it holds no session for go
    /// there, and server-side publishes are made on the other nodes too.
    cluster: Option<Arc<dyn ClusterLink>>,
}

impl std::fmt::Debug for BrokerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerHandle")
            .field("registry", &self.registry)
            .field("cluster", &self.cluster.is_some())
            .finish_non_exhaustive()
    }
}

impl BrokerHandle {
    pub(crate) fn new(
        requests: mpsc::Sender<HubRequest>,
        final_stats: Arc<Mutex<Option<Stats>>>,
        transport: Arc<TransportCounters>,
        registry: Option<Registry>,
        cluster: Option<Arc<dyn ClusterLink>>,
    ) -> Self {
        BrokerHandle {
            requests,
            final_stats,
            transport,
            registry,
            cluster,
        }
    }

    /// What the cluster's link counted, if this broker is a node of one.
    pub fn cluster_stats(&self) -> Option<ClusterStats> {
        self.cluster.as_ref().map(|cluster| cluster.stats())
    }

    /// This node alone: a handle whose calls never go to the cluster (how a cluster's link
    /// answers the calls other nodes carry to it). Without a cluster, the same handle.
    pub fn local(&self) -> BrokerHandle {
        BrokerHandle {
            cluster: None,
            ..self.clone()
        }
    }

    /// In a cluster, where this node holds no session for `device`: the answer of the node
    /// that does, to the call `call` makes. `None`: make it here.
    async fn elsewhere(
        &self,
        device: &DeviceIdentity,
        call: impl FnOnce() -> DeviceCall,
    ) -> Option<DeviceAnswer> {
        let link = self.cluster.as_ref()?;
        let wanted = device.clone();
        let here = self
            .on_hub(move |hub, _| hub.holds_session(&wanted))
            .await
            .unwrap_or(true);
        if here {
            return None;
        }
        link.call_device(device, call()).await
    }

    /// The device registry the server side may change ([`BrokerConfig::registry`]), if any.
    ///
    /// [`BrokerConfig::registry`]: super::BrokerConfig::registry
    pub fn registry(&self) -> Option<&Registry> {
        self.registry.as_ref()
    }

    /// Runs `call` on the hub task, between two batches of requests, and gives what it
    /// returns: once the store (if the broker keeps one) has committed what the call changed,
    /// including what it recorded with [`Hub::record_store_change`]. For changes of the
    /// registry, which must commit with the hub's turn, and their effects on sessions.
    pub async fn call_hub<T: Send + 'static>(
        &self,
        call: impl FnOnce(&mut Hub, aliot_core::Instant) -> T + Send + 'static,
    ) -> Result<T, BrokerStopped> {
        self.on_hub(call).await
    }

    /// Connections closed as soon as they were accepted, because the broker held
    /// [`max_connections`](super::BrokerConfig::max_connections) already. They never sent a
    /// CONNECT the broker read, so the hub's counters ([`stats`](Self::stats)) do not have them.
    pub fn connections_refused_at_cap(&self) -> u64 {
        self.transport.refused_at_cap.load(Ordering::Relaxed)
    }

    /// What the listeners counted before MQTT: connections refused at the cap, TLS-PSK
    /// identities refused, TLS 1.0 and 1.1 handshakes accepted.
    pub fn transport_stats(&self) -> TransportStats {
        self.transport.snapshot()
    }

    /// Calls a device (RRPC, SPEC §4) on `/sys/{productKey}/{deviceName}/rrpc/request/{messageId}`
    /// and waits for its answer, at most `timeout` (1,000–8,000 ms).
    pub async fn rrpc(
        &self,
        device: &DeviceIdentity,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<RrpcReply, RrpcError> {
        self.call_rrpc(device, payload, timeout, None).await
    }

    /// Calls a device on one of its own topics (custom-topic RRPC):
    /// `/ext/rrpc/{messageId}{topic}`, where `topic` is `/{productKey}/{deviceName}/...`.
    pub async fn rrpc_on_topic(
        &self,
        device: &DeviceIdentity,
        topic: &TopicName,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<RrpcReply, RrpcError> {
        self.call_rrpc(device, payload, timeout, Some(topic.clone()))
            .await
    }

    /// Sends a message to one device, if its ACL lets it subscribe to the topic and it is
    /// subscribed; says what became of it.
    pub async fn publish_to_device(
        &self,
        device: &DeviceIdentity,
        topic: TopicName,
        payload: Bytes,
        qos: QoS,
    ) -> DeviceDelivery {
        let call = || DeviceCall::Publish {
            topic: topic.clone(),
            payload: payload.clone(),
            qos,
        };
        if let Some(DeviceAnswer::Delivery(delivery)) = self.elsewhere(device, call).await {
            return delivery;
        }
        let device = device.clone();
        let message = Message::new(topic, payload, qos);
        self.ask(|reply| HubRequest::PublishToDevice {
            device,
            message,
            reply,
        })
        .await
        .unwrap_or(DeviceDelivery::Offline)
    }

    /// Publishes from the server side (the platform's `Pub`) to every subscriber; says which
    /// message id it was given and how many sessions it reached, once that is durable. In a
    /// cluster, the other nodes publish it too (a QoS 1 one is kept for them first: see
    /// [`ClusterLink::publish_elsewhere`]); `reached` counts this node's sessions.
    pub async fn publish(
        &self,
        topic: TopicName,
        payload: Bytes,
        qos: QoS,
    ) -> Result<ServerPublished, PublishError> {
        let message = Message::new(topic, payload, qos);
        if let Some(link) = &self.cluster {
            link.publish_elsewhere(&message)
                .await
                .map_err(PublishError::ClusterUnreachable)?;
        }
        self.ask(|reply| HubRequest::Publish { message, reply })
            .await
            .ok_or(PublishError::BrokerStopped)
    }

    /// Sets properties of an online device (the platform's `SetDeviceProperty`): returns the
    /// downlink's message id and what became of it ([`DeviceDelivery::Offline`]: not sent).
    pub async fn set_device_property(
        &self,
        device: &DeviceIdentity,
        items: Value,
    ) -> Result<(MessageId, DeviceDelivery), BrokerStopped> {
        let call = || DeviceCall::SetProperty {
            items: items.clone(),
        };
        if let Some(DeviceAnswer::Downlink(id, delivery)) = self.elsewhere(device, call).await {
            return Ok((id, delivery));
        }
        let device = device.clone();
        self.on_hub(move |hub, now| hub.set_device_property(&device, &items, now))
            .await
    }

    /// Calls a service of an online device asynchronously (`InvokeThingService`): the
    /// downlink's message id and what became of it; the device's answer becomes a downlink
    /// result.
    pub async fn invoke_service(
        &self,
        device: &DeviceIdentity,
        identifier: &str,
        args: Value,
    ) -> Result<(MessageId, DeviceDelivery), ServiceError> {
        if !is_identifier(identifier) {
            return Err(ServiceError::InvalidIdentifier(identifier.into()));
        }
        let call = || DeviceCall::InvokeService {
            identifier: identifier.to_owned(),
            args: args.clone(),
        };
        if let Some(DeviceAnswer::Downlink(id, delivery)) = self.elsewhere(device, call).await {
            return Ok((id, delivery));
        }
        let device = device.clone();
        let identifier = identifier.to_owned();
        self.on_hub(move |hub, now| hub.invoke_service(&device, &identifier, &args, now))
            .await
            .map_err(|BrokerStopped| ServiceError::BrokerStopped)?
            .map_err(|error| match error {
                hub::InvalidServiceCall::Identifier(identifier) => {
                    ServiceError::InvalidIdentifier(identifier)
                }
                hub::InvalidServiceCall::Rrpc(error) => ServiceError::Rejected(error),
            })
    }

    /// Calls a service of a device synchronously and waits for its answer, at most
    /// `timeout`: an RRPC call in the device's wire form, whose `SUCCESS` payload is the
    /// device's Alink reply (`{"id":…,"code":…,"data":…}`).
    pub async fn invoke_service_sync(
        &self,
        device: &DeviceIdentity,
        identifier: &str,
        args: Value,
        timeout: Duration,
    ) -> Result<RrpcReply, ServiceError> {
        if !is_identifier(identifier) {
            return Err(ServiceError::InvalidIdentifier(identifier.into()));
        }
        let call = || DeviceCall::InvokeServiceSync {
            identifier: identifier.to_owned(),
            args: args.clone(),
            timeout,
        };
        if let Some(DeviceAnswer::Rrpc(answer)) = self.elsewhere(device, call).await {
            return Ok(answer?);
        }
        let device = device.clone();
        let identifier = identifier.to_owned();
        let answer = self
            .ask(|reply| HubRequest::ServiceSync {
                device,
                identifier,
                args,
                timeout,
                reply,
            })
            .await
            .ok_or(ServiceError::BrokerStopped)?;
        Ok(answer?)
    }

    /// What the platform keeps of a device (latest properties, tags, desired values, shadow,
    /// OTA modules), if it has used a service or been sent one.
    pub async fn device_state(
        &self,
        device: &DeviceIdentity,
    ) -> Result<Option<DeviceState>, BrokerStopped> {
        let device = device.clone();
        self.on_hub(move |hub, _| hub.device_state(&device).cloned())
            .await
    }

    /// Updates a device's shadow from the server side (`UpdateDeviceShadow`): the new version
    /// and what became of the `control` push, or the shadow's refusal.
    pub async fn update_device_shadow(
        &self,
        device: &DeviceIdentity,
        request: ShadowRequest,
    ) -> Result<Result<(u64, DeviceDelivery), ShadowCode>, BrokerStopped> {
        let device = device.clone();
        self.on_hub(move |hub, now| hub.update_device_shadow(&device, &request, now))
            .await
    }

    /// Sets desired property values of a device (`SetDeviceDesiredProperty`).
    pub async fn set_desired_properties(
        &self,
        device: &DeviceIdentity,
        items: Map<String, Value>,
    ) -> Result<Result<(), AlinkCode>, BrokerStopped> {
        let device = device.clone();
        self.on_hub(move |hub, _| hub.set_desired_properties(&device, &items))
            .await
    }

    /// Starts an upgrade of one of a device's modules: pushed now if the device is online
    /// ([`DeviceDelivery::Sent`] or `Queued`), else when it next comes online.
    pub async fn start_ota(
        &self,
        device: &DeviceIdentity,
        job: OtaJob,
    ) -> Result<DeviceDelivery, BrokerStopped> {
        let call = || DeviceCall::StartOta { job: job.clone() };
        if let Some(DeviceAnswer::Delivery(delivery)) = self.elsewhere(device, call).await {
            return Ok(delivery);
        }
        let device = device.clone();
        self.on_hub(move |hub, now| hub.start_ota(&device, job, now))
            .await
    }

    /// The devices' latest answers to the platform's downlinks, oldest first.
    pub async fn downlink_results(
        &self,
    ) -> Result<Vec<(DeviceIdentity, DownlinkResult)>, BrokerStopped> {
        self.on_hub(|hub, _| hub.downlink_results().cloned().collect())
            .await
    }

    /// Attaches a consumer to the consumer group `group` (the server-side subscription): it
    /// gets messages of the group's backlog as it gives credit, one consumer of the group at
    /// a time for each message. `Ok(Err(_))`: no such group is configured.
    pub async fn attach_consumer(
        &self,
        group: &str,
    ) -> Result<Result<GroupConsumer, hub::UnknownConsumerGroup>, BrokerStopped> {
        self.attach(group, false).await
    }

    /// In a cluster: attaches a relay to the consumer group `group`, a consumer that carries
    /// the group's messages to another node while the group has no consumer here
    /// ([`Hub::attach_relay`](aliot_core::hub::Hub::attach_relay)).
    pub async fn attach_relay(
        &self,
        group: &str,
    ) -> Result<Result<GroupConsumer, hub::UnknownConsumerGroup>, BrokerStopped> {
        self.attach(group, true).await
    }

    /// In a cluster: puts messages another node's relay of `group` carried here (topic,
    /// payload, when each was made) in this node's backlog of the group, in order, and gives
    /// their ids here once the store (if any) has them
    /// ([`Hub::accept_relayed`](aliot_core::hub::Hub::accept_relayed)).
    pub async fn accept_relayed(
        &self,
        group: &str,
        messages: Vec<(aliot_topic::TopicName, Bytes, aliot_services::UnixMillis)>,
    ) -> Result<Result<Vec<u64>, hub::UnknownConsumerGroup>, BrokerStopped> {
        let group = group.to_owned();
        self.on_hub(move |hub, now| {
            messages
                .into_iter()
                .map(|(topic, payload, generate_time)| {
                    hub.accept_relayed(&group, topic, payload, generate_time, now)
                })
                .collect()
        })
        .await
    }

    async fn attach(
        &self,
        group: &str,
        relay: bool,
    ) -> Result<Result<GroupConsumer, hub::UnknownConsumerGroup>, BrokerStopped> {
        let (deliveries, messages) = mpsc::unbounded_channel();
        let group = group.to_owned();
        let attached = self
            .ask(|reply| HubRequest::AttachConsumer {
                group,
                relay,
                deliveries,
                reply,
            })
            .await
            .ok_or(BrokerStopped)?;
        Ok(attached.map(|id| GroupConsumer {
            id,
            messages,
            requests: self.requests.clone(),
        }))
    }

    /// Each consumer group's backlog, consumers and counts.
    pub async fn consumer_group_stats(&self) -> Result<Vec<hub::GroupStats>, BrokerStopped> {
        self.on_hub(|hub, _| hub.consumer_group_stats()).await
    }

    /// The hub's counters and gauges now (after shutdown: as they were then).
    pub async fn stats(&self) -> Stats {
        match self.ask(|reply| HubRequest::Stats { reply }).await {
            Some(stats) => stats,
            None => self
                .final_stats
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
                .unwrap_or_default(),
        }
    }

    async fn call_rrpc(
        &self,
        device: &DeviceIdentity,
        payload: Bytes,
        timeout: Duration,
        topic: Option<TopicName>,
    ) -> Result<RrpcReply, RrpcError> {
        let call = || DeviceCall::Rrpc {
            payload: payload.clone(),
            timeout,
            topic: topic.clone(),
        };
        if let Some(DeviceAnswer::Rrpc(answer)) = self.elsewhere(device, call).await {
            return answer.map_err(RrpcError::from);
        }
        let device = device.clone();
        let answer = self
            .ask(|reply| HubRequest::Rrpc {
                device,
                payload,
                timeout,
                topic,
                reply,
            })
            .await
            .ok_or(RrpcError::BrokerStopped)?;
        answer.map_err(RrpcError::from)
    }

    /// Runs `call` on the hub and waits for what it returns.
    async fn on_hub<T: Send + 'static>(
        &self,
        call: impl FnOnce(&mut Hub, aliot_core::Instant) -> T + Send + 'static,
    ) -> Result<T, BrokerStopped> {
        self.ask(|reply| {
            HubRequest::Call(Box::new(move |hub, now| {
                let value = call(hub, now);
                Box::new(move || {
                    // The caller may have given up (an HTTP client that went away).
                    let _ = reply.send(value);
                })
            }))
        })
        .await
        .ok_or(BrokerStopped)
    }

    /// Sends a request with a fresh reply channel and waits for the answer; `None` when the
    /// hub task has stopped (before or while handling it).
    async fn ask<T>(&self, request: impl FnOnce(oneshot::Sender<T>) -> HubRequest) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        self.requests.send(request(reply)).await.ok()?;
        answer.await.ok()
    }
}

/// A consumer of a consumer group, attached by [`BrokerHandle::attach_consumer`]: the
/// messages the hub hands it ([`next`](Self::next)), as many as the credit it gave, and its
/// answers to each. Dropping it (or [`detach`](Self::detach)) gives what it held and did not
/// settle to the group's other consumers.
#[derive(Debug)]
pub struct GroupConsumer {
    id: hub::ConsumerId,
    messages: mpsc::UnboundedReceiver<ConsumerDelivery>,
    requests: mpsc::Sender<HubRequest>,
}

impl GroupConsumer {
    /// The hub's id of this consumer.
    pub fn id(&self) -> hub::ConsumerId {
        self.id
    }

    /// The next message handed to it, and whether a consumer had it before; `None` once the
    /// broker has stopped.
    pub async fn next(&mut self) -> Option<ConsumerDelivery> {
        self.messages.recv().await
    }

    /// It may take `credit` more messages.
    pub async fn credit(&self, credit: u32) -> Result<(), BrokerStopped> {
        self.answer(ConsumerAnswer::Credit(credit)).await
    }

    /// It settled (accepted) the message `message_id`: the message leaves the backlog.
    pub async fn settled(&self, message_id: u64) -> Result<(), BrokerStopped> {
        self.answered(message_id, true, 0).await
    }

    /// It gave the message `message_id` back: another consumer gets it.
    pub async fn released(&self, message_id: u64) -> Result<(), BrokerStopped> {
        self.answered(message_id, false, 0).await
    }

    /// It settled the message `message_id` (or, with `settled` false, gave it back) and may
    /// take `credit` more: one request to the hub where [`settled`](Self::settled) and
    /// [`credit`](Self::credit) would be two, for a consumer that keeps a window.
    pub async fn answered(
        &self,
        message_id: u64,
        settled: bool,
        credit: u32,
    ) -> Result<(), BrokerStopped> {
        self.answer(ConsumerAnswer::Answered {
            message_id,
            settled,
            credit,
        })
        .await
    }

    /// It settled (or, with `settled` false, gave back) each of `message_ids` and may take as
    /// many more: one request to the hub for a batch answered alike.
    pub async fn answered_all(
        &self,
        message_ids: Vec<u64>,
        settled: bool,
    ) -> Result<(), BrokerStopped> {
        self.answer(ConsumerAnswer::AnsweredAll {
            message_ids,
            settled,
        })
        .await
    }

    /// It goes away now: what it held goes to the others.
    pub async fn detach(self) {
        let _ = self.answer(ConsumerAnswer::Detached).await;
    }

    async fn answer(&self, answer: ConsumerAnswer) -> Result<(), BrokerStopped> {
        self.requests
            .send(HubRequest::Consumer(self.id, answer))
            .await
            .map_err(|_| BrokerStopped)
    }
}
