//! [`BrokerHandle`]: the server side of a running broker.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aliot_auth::DeviceIdentity;
use aliot_core::Message;
use aliot_core::codec::QoS;
use aliot_core::hub::{self, Counters, DeviceDelivery, RrpcOutcome};
use aliot_topic::{MessageId, TopicName};
use bytes::Bytes;
use tokio_sync::sync::{mpsc, oneshot};

use super::hub_task::HubRequest;

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
}

/// The server side of a running broker: RRPC calls, publishes, statistics.
///
/// Cheap to clone; every call is a message to the hub task and its answer. Once the broker
/// has stopped, calls end at once: [`RrpcError::BrokerStopped`], no subscriber reached,
/// [`DeviceDelivery::Offline`], and the statistics as they were at shutdown.
#[derive(Clone, Debug)]
pub struct BrokerHandle {
    requests: mpsc::Sender<HubRequest>,
    final_stats: Arc<Mutex<Option<Stats>>>,
    /// Counted by the accept loops (the hub never sees these connections).
    refused_at_cap: Arc<AtomicU64>,
}

impl BrokerHandle {
    pub(crate) fn new(
        requests: mpsc::Sender<HubRequest>,
        final_stats: Arc<Mutex<Option<Stats>>>,
        refused_at_cap: Arc<AtomicU64>,
    ) -> Self {
        BrokerHandle {
            requests,
            final_stats,
            refused_at_cap,
        }
    }

    /// Connections closed as soon as they were accepted, because the broker held
    /// [`max_connections`](super::BrokerConfig::max_connections) already. They never sent a
    /// CONNECT the broker read, so the hub's counters ([`stats`](Self::stats)) do not have them.
    pub fn connections_refused_at_cap(&self) -> u64 {
        self.refused_at_cap.load(Ordering::Relaxed)
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

    /// Publishes from the server side (the platform's `Pub`) to every subscriber; returns how
    /// many sessions it reached.
    pub async fn publish(&self, topic: TopicName, payload: Bytes, qos: QoS) -> usize {
        let message = Message::new(topic, payload, qos);
        self.ask(|reply| HubRequest::Publish { message, reply })
            .await
            .unwrap_or(0)
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

    /// Sends a request with a fresh reply channel and waits for the answer; `None` when the
    /// hub task has stopped (before or while handling it).
    async fn ask<T>(&self, request: impl FnOnce(oneshot::Sender<T>) -> HubRequest) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        self.requests.send(request(reply)).await.ok()?;
        answer.await.ok()
    }
}
