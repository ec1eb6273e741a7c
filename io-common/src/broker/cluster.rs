//! The seam between a broker and the cluster it is a node of ([`ClusterLink`]).
//!
//! The broker itself knows nothing of other nodes. With [`BrokerConfig::cluster`] set, its hub
//! says which devices' sessions it takes and lets go ([`OwnershipChange`], in the hub's order),
//! and its [`BrokerHandle`](super::BrokerHandle) carries a call to a device it holds no session
//! for to the link ([`DeviceCall`]), which finds the node that does. The link answers calls from
//! other nodes through [`BrokerHandle::local`](super::BrokerHandle::local), which never asks it
//! again. `aliot-cluster` is the link on NATS.
//!
//! [`BrokerConfig::cluster`]: super::BrokerConfig::cluster

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use aliot_auth::DeviceIdentity;
use aliot_core::Message;
use aliot_core::codec::QoS;
use aliot_core::hub::{DeviceDelivery, InvalidRrpcCall};
use aliot_services::OtaJob;
use aliot_topic::{MessageId, TopicName};
use bytes::Bytes;
use serde_json::Value;

use super::handle::RrpcReply;

/// A change of which node holds a device's session, as this node's hub reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OwnershipChange {
    /// The device connected here: this node holds its session now. What another node kept
    /// must be handed over ([`Hub::hand_over`] there, [`Hub::take_over`] here), or discarded
    /// when the device opened a clean session.
    ///
    /// [`Hub::hand_over`]: aliot_core::hub::Hub::hand_over
    /// [`Hub::take_over`]: aliot_core::hub::Hub::take_over
    Claimed {
        /// The device.
        device: DeviceIdentity,
        /// Whether it opened a clean session.
        clean_session: bool,
    },
    /// The device's session ended here; no node holds it now.
    Released {
        /// The device.
        device: DeviceIdentity,
    },
}

/// A server-side call to one device, carried to the node that holds its session.
#[derive(Clone, Debug, PartialEq)]
pub enum DeviceCall {
    /// [`BrokerHandle::publish_to_device`](super::BrokerHandle::publish_to_device).
    Publish {
        /// The topic.
        topic: TopicName,
        /// The payload.
        payload: Bytes,
        /// The QoS.
        qos: QoS,
    },
    /// An RRPC call ([`BrokerHandle::rrpc`](super::BrokerHandle::rrpc), or on one of the
    /// device's topics).
    Rrpc {
        /// The request's payload.
        payload: Bytes,
        /// How long the device has to answer.
        timeout: Duration,
        /// The custom topic, if any.
        topic: Option<TopicName>,
    },
    /// [`BrokerHandle::set_device_property`](super::BrokerHandle::set_device_property).
    SetProperty {
        /// The properties.
        items: Value,
    },
    /// [`BrokerHandle::invoke_service`](super::BrokerHandle::invoke_service).
    InvokeService {
        /// The service.
        identifier: String,
        /// Its input.
        args: Value,
    },
    /// [`BrokerHandle::invoke_service_sync`](super::BrokerHandle::invoke_service_sync).
    InvokeServiceSync {
        /// The service.
        identifier: String,
        /// Its input.
        args: Value,
        /// How long the device has to answer.
        timeout: Duration,
    },
    /// [`BrokerHandle::start_ota`](super::BrokerHandle::start_ota).
    StartOta {
        /// The job.
        job: OtaJob,
    },
}

/// What the owning node answered to a [`DeviceCall`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceAnswer {
    /// What became of a message sent to the device (`Publish`, `StartOta`).
    Delivery(DeviceDelivery),
    /// A downlink's message id and what became of it (`SetProperty`, `InvokeService`).
    Downlink(MessageId, DeviceDelivery),
    /// How an RRPC call ended, or why it was refused (`Rrpc`, `InvokeServiceSync`).
    Rrpc(Result<RrpcReply, InvalidRrpcCall>),
}

/// What a node counted of its cluster's traffic ([`ClusterLink::stats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterStats {
    /// This node's name in the cluster.
    pub node_id: String,
    /// Whether it reaches the cluster now.
    pub connected: bool,
    /// Devices whose session this node holds and answers for.
    pub owned: u64,
    /// Ownership claims written (devices that connected here).
    pub claims: u64,
    /// Claims the cluster could not take yet (retried).
    pub claims_pending: u64,
    /// Sessions taken from another node when their device connected here.
    pub sessions_taken: u64,
    /// Sessions handed to another node when their device connected there.
    pub sessions_handed: u64,
    /// Sessions a node back from a crash or a partition gave this node (their device had
    /// moved here).
    pub sessions_adopted: u64,
    /// Sessions this node, back from a crash or a partition, gave to the node their device had
    /// moved to.
    pub sessions_returned: u64,
    /// Calls this node's server side sent to another node's device.
    pub calls_sent: u64,
    /// Calls this node answered for another node.
    pub calls_served: u64,
    /// Server-side publishes received from other nodes.
    pub publishes_received: u64,
    /// Whether this node follows the stream of the other nodes' QoS 1 publishes (its durable
    /// consumer exists; what is published from then on reaches it, even while it is away).
    pub following_publishes: bool,
    /// Records (products, devices, AccessKeys) this node wrote to the cluster's shared registry.
    pub registry_changes_shared: u64,
    /// Changes of other nodes' registries this node took.
    pub registry_changes_taken: u64,
    /// Consumer groups' messages this node relayed to another node (its groups had no
    /// consumer here), which took them.
    pub relayed_out: u64,
    /// Consumer groups' messages other nodes relayed here.
    pub relayed_in: u64,
    /// Consumer groups' messages too large for a NATS message, which this node could not
    /// relay and dropped.
    pub relay_dropped: u64,
}

/// A boxed future, as the link's methods return them.
pub type LinkFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A broker's side of the cluster it is a node of. See the [module docs](self).
pub trait ClusterLink: Send + Sync + 'static {
    /// The hub took or let go of a device's session. Called in the hub's order, from the hub
    /// task: it must not block (queue the change and act on it elsewhere, in order).
    fn ownership_changed(&self, change: OwnershipChange);

    /// Carries `call` to the node that holds `device`'s session and gives its answer; `None`
    /// when no other node holds it (the call is then made here, where the device is offline).
    fn call_device<'a>(
        &'a self,
        device: &'a DeviceIdentity,
        call: DeviceCall,
    ) -> LinkFuture<'a, Option<DeviceAnswer>>;

    /// A server-side publish to every subscriber is about to be made here: make it on the
    /// other nodes too. A QoS 1 message must be kept where the other nodes will take it from
    /// (their subscribers may be offline, their node away) before this resolves; `Err` says
    /// why it could not be (the publish is then made nowhere, and its caller told).
    fn publish_elsewhere<'a>(&'a self, message: &'a Message) -> LinkFuture<'a, Result<(), String>>;

    /// The consumer group `group` got its first consumer on this node (`present`), or lost its
    /// last ([`HubOutput::ConsumersHere`](aliot_core::hub::HubOutput::ConsumersHere)): receive
    /// the other nodes' relays of it only while it has some. Called from the hub task, in
    /// order: it must not block.
    fn consumers_here(&self, group: &str, present: bool);

    /// What the link counted.
    fn stats(&self) -> ClusterStats;
}
