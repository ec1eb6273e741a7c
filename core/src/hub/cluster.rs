//! A hub as one node of a cluster: which devices' sessions it holds, and a session's move to
//! another node.
//!
//! In a cluster ([`HubConfig::cluster`](super::HubConfig::cluster)) each device's session
//! lives on one node, its owner; the cluster's adapter records owners in a shared,
//! compare-and-swap store and carries calls between nodes. The hub tells its adapter, in
//! order with its other outputs:
//!
//! - [`HubOutput::Claim`](super::HubOutput::Claim) when a device connects here: the adapter
//!   makes this node the owner, and asks the previous owner, if any, to hand the session over;
//! - [`HubOutput::Release`](super::HubOutput::Release) when a device's session ends here (a
//!   clean session's disconnect, an expiry, a deleted device): nobody owns it any more.
//!
//! The adapter answers with two inputs:
//!
//! - [`Hub::hand_over`] on the previous owner: the device's connection there is closed
//!   ([`CloseReason::TakenOver`]) and its session leaves the hub, subscriptions, messages in
//!   flight and queue, as a [`SessionHandOver`] (no Release follows: the new owner holds it);
//! - [`Hub::take_over`] on the new owner: the subscriptions join the session the device opened
//!   here and the messages are delivered to it (or queued), kept in the store like any other.
//!
//! A node that restarts with its store holds sessions nobody claimed since
//! ([`Hub::device_sessions`]): its adapter claims each again, or, where another node owns the
//! device now, hands the session over to it ([`Hub::hand_over`] here, [`Hub::take_over`]
//! there), so that what was queued before the crash is delivered (at least once).
//!
//! A device that opens a clean session on the new node discards what the old one kept: the
//! claim says so, and the adapter hands over with `discard`. A device's session present flag
//! is that of the node it connects to (0 on a node it never used: ours); what the old node kept
//! follows right after the CONNACK.

use alloc::vec::Vec;

use aliot_auth::DeviceIdentity;
use aliot_topic::TopicFilter;

use super::{Hub, HubOutput, SessionId};
use crate::authenticator::ClientKey;
use crate::codec::QoS;
use crate::message::Message;
use crate::server::CloseReason;
use crate::time::Instant;

/// A device's session as it leaves one node for another ([`Hub::hand_over`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionHandOver {
    /// The session's subscriptions, with their granted QoS.
    pub subscriptions: Vec<(TopicFilter, QoS)>,
    /// The messages it had not delivered: those in flight (sent, not acknowledged) first, then
    /// its queue, oldest first. All QoS 1.
    pub messages: Vec<Message>,
}

impl Hub {
    /// Another node now owns `device`'s session: its connection here, if any, is closed
    /// ([`CloseReason::TakenOver`]) and its session leaves this hub. Returns what the session
    /// held, or nothing when there was no session or when `discard` is set (the device opened
    /// a clean session there). The PUBACKs its queue held go out now.
    pub fn hand_over(
        &mut self,
        device: &DeviceIdentity,
        discard: bool,
        now: Instant,
    ) -> Option<SessionHandOver> {
        let sid = self.session_of_device(device)?;
        if self.unplug(sid, CloseReason::TakenOver, now).is_some() {
            self.counters.takeovers += 1;
            // Its RRPC calls here cannot be answered any more.
            if let Some(session) = self.sessions.get(sid) {
                self.rrpc.device_gone(&session.key, now);
            }
        }
        if discard {
            self.remove_session(sid, false);
            return None;
        }
        self.release_queue_holds(sid);
        let moved = self.sessions.get_mut(sid).map(|session| {
            let subscriptions = session
                .subscriptions
                .iter()
                .map(|(filter, qos)| (filter.clone(), *qos))
                .collect();
            let inflight = core::mem::take(&mut session.inflight);
            self.counters.messages_handed_again += inflight.len() as u64;
            let queue = core::mem::take(&mut session.queue);
            session.queued_bytes = 0;
            let messages = inflight
                .into_iter()
                .map(|sent| sent.message)
                .chain(queue.into_iter().map(|queued| queued.message))
                .collect();
            SessionHandOver {
                subscriptions,
                messages,
            }
        });
        self.counters.sessions_handed_over += 1;
        self.remove_session(sid, false);
        moved
    }

    /// What another node kept of `device`'s session joins the one it opened here: its
    /// subscriptions are added, its messages delivered or queued. Returns how many messages
    /// were taken (none without a session here: the device left again, and the messages are
    /// counted as discarded).
    pub fn take_over(
        &mut self,
        device: &DeviceIdentity,
        handed: SessionHandOver,
        now: Instant,
    ) -> usize {
        let Some(sid) = self.session_of_device(device) else {
            self.counters.dropped.session_discarded += handed.messages.len() as u64;
            return 0;
        };
        self.subscribe(sid, handed.subscriptions, now);
        self.counters.sessions_taken_over += 1;
        self.take_over_more(device, handed.messages, now)
    }

    /// More messages of a session another node hands over in parts (its first part went to
    /// [`Hub::take_over`]): delivered or queued after those, in order. Returns how many were
    /// taken (none without a session here: they are counted as discarded).
    pub fn take_over_more(
        &mut self,
        device: &DeviceIdentity,
        messages: Vec<Message>,
        now: Instant,
    ) -> usize {
        let Some(sid) = self.session_of_device(device) else {
            self.counters.dropped.session_discarded += messages.len() as u64;
            return 0;
        };
        let taken = messages.len();
        for message in messages {
            self.deliver(sid, &message, QoS::AtLeastOnce, None, now);
        }
        taken
    }

    /// The devices whose sessions this hub keeps, online or offline (after a restart: those
    /// its store gave back, which a cluster's node claims again or hands to the node that
    /// took their device meanwhile).
    pub fn device_sessions(&self) -> Vec<DeviceIdentity> {
        self.sessions
            .keys()
            .filter_map(|key| key.device().cloned())
            .collect()
    }

    /// In a cluster, tells the adapter this node now holds the session `sid` of a device.
    pub(super) fn claim(&mut self, sid: SessionId, clean_session: bool) {
        if !self.config.cluster {
            return;
        }
        if let Some(ClientKey::Device(device)) = self.sessions.get(sid).map(|s| &*s.key) {
            let device = device.clone();
            self.outputs.push_back(HubOutput::Claim {
                device,
                clean_session,
            });
        }
    }

    /// In a cluster, tells the adapter the session of a device with `key` ended here.
    pub(super) fn release(&mut self, key: &ClientKey) {
        if let (true, ClientKey::Device(device)) = (self.config.cluster, key) {
            self.outputs.push_back(HubOutput::Release {
                device: device.clone(),
            });
        }
    }
}
