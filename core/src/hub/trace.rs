//! What an operator watches: the latest messages through the hub and where each device was
//! last seen.
//!
//! Two small tables, both off the protocol's path and never consulted by it:
//!
//! - [`MessageTrace`]: a ring of the latest messages in and out of devices, and their
//!   connects and disconnects, each with a sequence number so that a watcher asks for
//!   "what came after `seq`" ([`Hub::trace_after`](super::Hub::trace_after)). It is off unless
//!   [`HubConfig::trace_capacity`](super::HubConfig::trace_capacity) is set; a payload is kept
//!   up to [`TRACED_PAYLOAD_BYTES`], copied, so that the ring never pins a large buffer. A
//!   watcher that falls behind loses the oldest entries, and is told how many.
//! - [`Presences`]: per device that has connected since the hub started (or whose session a
//!   store kept: offline since then), its client address, when it came online and when it
//!   last went offline; kept only while the trace is on, so that a broker without watchers
//!   keeps no per-device record for them.
//!
//! Neither has a deadline.

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::IpAddr;

use aliot_auth::DeviceIdentity;
use aliot_services::UnixMillis;
use aliot_topic::TopicName;
use bytes::Bytes;
use hashbrown::HashMap;

use crate::authenticator::ClientKey;
use crate::codec::QoS;

/// The most payload bytes a traced message keeps (the rest is only counted).
pub const TRACED_PAYLOAD_BYTES: usize = 512;

/// What a traced message shows instead of a payload that carries device secrets.
pub const WITHHELD: &[u8] = b"(withheld: it carries device secrets)";

/// Whether messages on `topic` carry device secrets: the replies of registration, a
/// gateway's for its sub-devices (`thing/sub/register_reply`) and a device's own (`/ext/register`,
/// `/ext/regnwl`). Watchers never see their payloads.
fn carries_secrets(topic: &TopicName) -> bool {
    let topic = topic.as_str();
    topic.ends_with("/thing/sub/register_reply")
        || topic.starts_with("/ext/register")
        || topic.starts_with("/ext/regnwl")
}

/// Which way a traced entry went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceDirection {
    /// A client published it.
    FromClient,
    /// The hub delivered it to a client (or queued it for one).
    ToClient,
    /// The client's connection opened a session.
    Connected,
    /// The client's session lost its connection.
    Disconnected,
}

/// One entry of the hub's trace ([`Hub::trace_after`](super::Hub::trace_after)).
#[derive(Clone, Debug)]
pub struct TracedMessage {
    /// Its place in the trace: one more than the entry before.
    pub seq: u64,
    /// When, by the hub's wall clock.
    pub at: UnixMillis,
    /// Which way it went.
    pub direction: TraceDirection,
    /// The client it came from or went to.
    pub client: Arc<ClientKey>,
    /// Its topic (none for connects and disconnects).
    pub topic: Option<TopicName>,
    /// The start of its payload, at most [`TRACED_PAYLOAD_BYTES`].
    pub payload: Bytes,
    /// The payload's whole length.
    pub payload_len: usize,
    /// Its QoS (as delivered, for [`TraceDirection::ToClient`]).
    pub qos: QoS,
}

impl TracedMessage {
    /// The platform device it is about, if its client is one.
    pub fn device(&self) -> Option<&DeviceIdentity> {
        self.client.device()
    }
}

/// Which entries a watcher wants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceFilter {
    /// Only this product's devices.
    pub product_key: Option<alloc::string::String>,
    /// Only this device (of `product_key`).
    pub device_name: Option<alloc::string::String>,
    /// Only connects and disconnects, no messages.
    pub statuses_only: bool,
}

impl TraceFilter {
    /// Whether the entry passes.
    pub fn admits(&self, entry: &TracedMessage) -> bool {
        if self.statuses_only && entry.topic.is_some() {
            return false;
        }
        if self.product_key.is_none() && self.device_name.is_none() {
            return true;
        }
        let Some(device) = entry.device() else {
            return false;
        };
        self.product_key
            .as_deref()
            .is_none_or(|key| key == device.product_key)
            && self
                .device_name
                .as_deref()
                .is_none_or(|name| name == device.device_name)
    }
}

/// What [`Hub::trace_after`](super::Hub::trace_after) found.
#[derive(Clone, Debug, Default)]
pub struct TracePage {
    /// The entries that passed the filter, oldest first.
    pub entries: Vec<TracedMessage>,
    /// The sequence number to ask after next time.
    pub last_seq: u64,
    /// Entries that passed the filter beyond the limit asked for.
    pub missed: u64,
    /// Entries after the one asked for that had left the ring before this look, whatever
    /// the filter (the watcher fell behind the whole broker's traffic).
    pub lost: u64,
}

/// The ring of the latest entries.
#[derive(Debug, Default)]
pub(super) struct MessageTrace {
    capacity: usize,
    entries: VecDeque<TracedMessage>,
    /// The sequence number of the newest entry (0: none yet).
    last_seq: u64,
}

impl MessageTrace {
    pub(super) fn new(capacity: usize) -> Self {
        MessageTrace {
            capacity,
            entries: VecDeque::with_capacity(capacity.min(4096)),
            last_seq: 0,
        }
    }

    /// Whether entries are kept at all: callers test it before building one.
    pub(super) fn is_on(&self) -> bool {
        self.capacity > 0
    }

    /// Keeps a message on `topic` that went `direction` for `client`.
    pub(super) fn message(
        &mut self,
        direction: TraceDirection,
        client: &Arc<ClientKey>,
        topic: &TopicName,
        payload: &Bytes,
        qos: QoS,
        at: UnixMillis,
    ) {
        let kept = if carries_secrets(topic) {
            Bytes::from_static(WITHHELD)
        } else {
            Bytes::copy_from_slice(payload.get(..TRACED_PAYLOAD_BYTES).unwrap_or(payload))
        };
        self.push(TracedMessage {
            seq: 0,
            at,
            direction,
            client: Arc::clone(client),
            topic: Some(topic.clone()),
            payload: kept,
            payload_len: payload.len(),
            qos,
        });
    }

    /// Keeps a connect or a disconnect.
    pub(super) fn presence(
        &mut self,
        direction: TraceDirection,
        client: &Arc<ClientKey>,
        at: UnixMillis,
    ) {
        self.push(TracedMessage {
            seq: 0,
            at,
            direction,
            client: Arc::clone(client),
            topic: None,
            payload: Bytes::new(),
            payload_len: 0,
            qos: QoS::AtMostOnce,
        });
    }

    fn push(&mut self, mut entry: TracedMessage) {
        if !self.is_on() {
            return;
        }
        if self.entries.len() >= self.capacity {
            self.entries.pop_front();
        }
        self.last_seq += 1;
        entry.seq = self.last_seq;
        self.entries.push_back(entry);
    }

    /// The sequence number of the newest entry (0: none yet).
    pub(super) fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Up to `limit` entries after `after` that pass `filter`, the oldest first.
    pub(super) fn after(&self, after: u64, filter: &TraceFilter, limit: usize) -> TracePage {
        let oldest_kept = self.entries.front().map_or(self.last_seq + 1, |e| e.seq);
        let lost = oldest_kept.saturating_sub(after.saturating_add(1));
        let mut missed = 0;
        let start = usize::try_from(after.saturating_add(1).saturating_sub(oldest_kept))
            .unwrap_or(usize::MAX);
        let mut entries = Vec::new();
        for entry in self.entries.iter().skip(start) {
            if !filter.admits(entry) {
                continue;
            }
            if entries.len() < limit {
                entries.push(entry.clone());
            } else {
                missed += 1;
            }
        }
        TracePage {
            entries,
            last_seq: self.last_seq,
            missed,
            lost,
        }
    }

    /// The latest `limit` entries that pass `filter`, the oldest first.
    pub(super) fn latest(&self, filter: &TraceFilter, limit: usize) -> Vec<TracedMessage> {
        let mut found: Vec<TracedMessage> = self
            .entries
            .iter()
            .rev()
            .filter(|entry| filter.admits(entry))
            .take(limit)
            .cloned()
            .collect();
        found.reverse();
        found
    }
}

/// Where a device was last seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DevicePresence {
    /// Whether a connection has its session now.
    pub online: bool,
    /// The address of its last connection.
    pub client_ip: Option<IpAddr>,
    /// When its last connection opened its session, by the hub's wall clock.
    pub online_since: Option<UnixMillis>,
    /// When it last went offline.
    pub offline_since: Option<UnixMillis>,
}

/// Every device's [`DevicePresence`], once it has connected.
#[derive(Debug, Default)]
pub(super) struct Presences {
    devices: HashMap<DeviceIdentity, DevicePresence>,
}

impl Presences {
    pub(super) fn connected(
        &mut self,
        device: &DeviceIdentity,
        ip: Option<IpAddr>,
        at: UnixMillis,
    ) {
        let presence = self.devices.entry_ref(device).or_default();
        presence.online = true;
        presence.client_ip = ip.or(presence.client_ip);
        presence.online_since = Some(at);
    }

    pub(super) fn disconnected(&mut self, device: &DeviceIdentity, at: UnixMillis) {
        let presence = self.devices.entry_ref(device).or_default();
        presence.online = false;
        presence.offline_since = Some(at);
    }

    pub(super) fn get(&self, device: &DeviceIdentity) -> Option<DevicePresence> {
        self.devices.get(device).copied()
    }

    /// A device that left the registry is forgotten.
    pub(super) fn forget(&mut self, device: &DeviceIdentity) {
        self.devices.remove(device);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aliot_topic::TopicLimits;

    fn topic(text: &str) -> TopicName {
        TopicName::new(text, &TopicLimits::default()).unwrap()
    }

    fn device(name: &str) -> Arc<ClientKey> {
        Arc::new(ClientKey::Device(DeviceIdentity::new("a1PK", name)))
    }

    #[test]
    fn off_by_default_and_keeps_nothing() {
        let mut trace = MessageTrace::default();
        trace.message(
            TraceDirection::FromClient,
            &device("d1"),
            &topic("/a1PK/d1/user/up"),
            &Bytes::copy_from_slice(b"x"),
            QoS::AtMostOnce,
            UnixMillis(1),
        );
        let page = trace.after(0, &TraceFilter::default(), 10);
        assert!(page.entries.is_empty());
        assert_eq!((page.missed, page.lost), (0, 0));
    }

    #[test]
    fn a_watcher_that_falls_behind_is_told_how_much_it_missed() {
        let mut trace = MessageTrace::new(3);
        for i in 0..5u8 {
            trace.message(
                TraceDirection::FromClient,
                &device("d1"),
                &topic("/a1PK/d1/user/up"),
                &Bytes::copy_from_slice(&[i]),
                QoS::AtMostOnce,
                UnixMillis(u64::from(i)),
            );
        }
        let page = trace.after(0, &TraceFilter::default(), 10);
        assert_eq!(page.lost, 2, "entries 1 and 2 left the ring");
        assert_eq!(page.missed, 0);
        let seqs: Vec<u64> = page.entries.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [3, 4, 5]);
        assert_eq!(page.last_seq, 5);
        let page = trace.after(5, &TraceFilter::default(), 10);
        assert!(page.entries.is_empty());
        assert_eq!((page.missed, page.lost, page.last_seq), (0, 0, 5));
        let page = trace.after(3, &TraceFilter::default(), 1);
        assert_eq!(page.entries[0].seq, 4);
        assert_eq!(
            (page.missed, page.lost),
            (1, 0),
            "beyond the limit asked for"
        );
    }

    #[test]
    fn payloads_are_cut_and_filters_pick_devices() {
        let mut trace = MessageTrace::new(10);
        let big = [7u8; TRACED_PAYLOAD_BYTES + 100];
        trace.message(
            TraceDirection::ToClient,
            &device("d1"),
            &topic("/a1PK/d1/user/get"),
            &Bytes::copy_from_slice(&big),
            QoS::AtLeastOnce,
            UnixMillis(1),
        );
        trace.presence(TraceDirection::Connected, &device("d2"), UnixMillis(2));
        trace.presence(
            TraceDirection::Connected,
            &Arc::new(ClientKey::Anonymous),
            UnixMillis(3),
        );
        let all = trace.after(0, &TraceFilter::default(), 10);
        assert_eq!(all.entries.len(), 3);
        assert_eq!(all.entries[0].payload.len(), TRACED_PAYLOAD_BYTES);
        assert_eq!(all.entries[0].payload_len, TRACED_PAYLOAD_BYTES + 100);
        let of_d2 = TraceFilter {
            product_key: Some("a1PK".into()),
            device_name: Some("d2".into()),
            ..TraceFilter::default()
        };
        let page = trace.after(0, &of_d2, 10);
        assert_eq!(page.entries.len(), 1);
        assert_eq!(page.entries[0].direction, TraceDirection::Connected);
        let latest = trace.latest(&TraceFilter::default(), 2);
        assert_eq!(latest.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3]);
    }

    #[test]
    fn registration_replies_are_withheld() {
        let mut trace = MessageTrace::new(10);
        let reply = br#"{"data":[{"deviceSecret":"s3cr3t"}]}"#;
        for name in [
            "/sys/a1PK/gw/thing/sub/register_reply",
            "/ext/register",
            "/ext/regnwl",
        ] {
            trace.message(
                TraceDirection::ToClient,
                &device("gw"),
                &topic(name),
                &Bytes::from_static(reply),
                QoS::AtMostOnce,
                UnixMillis(1),
            );
        }
        for entry in trace.latest(&TraceFilter::default(), 10) {
            assert_eq!(&entry.payload[..], WITHHELD);
            assert_eq!(entry.payload_len, reply.len());
        }
    }

    #[test]
    fn presence_remembers_the_last_address_and_times() {
        let mut presences = Presences::default();
        let d1 = DeviceIdentity::new("a1PK", "d1");
        assert_eq!(presences.get(&d1), None);
        presences.connected(&d1, "10.0.0.7".parse().ok(), UnixMillis(10));
        presences.disconnected(&d1, UnixMillis(20));
        let seen = presences.get(&d1).unwrap();
        assert!(!seen.online);
        assert_eq!(seen.client_ip, "10.0.0.7".parse().ok());
        assert_eq!(seen.online_since, Some(UnixMillis(10)));
        assert_eq!(seen.offline_since, Some(UnixMillis(20)));
        presences.forget(&d1);
        assert_eq!(presences.get(&d1), None);
    }
}
