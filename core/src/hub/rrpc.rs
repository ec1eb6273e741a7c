//! RRPC calls waiting for their device, and the devices that went away a moment ago.
//!
//! A call ([`Hub::rrpc_call`](super::Hub::rrpc_call)) gets a fresh [`MessageId`] and waits here
//! until its device answers, its timeout passes, or the hub shuts down. A call's id is
//! remembered for a while after it timed out, so that a late answer is counted as late rather
//! than unknown. A device whose connection went away is "half connected" (the platform's
//! `HALFCONN`) until one keepalive has passed since: a call to it then says so instead of
//! `OFFLINE`.
//!
//! Deadlines, in the one table of [`RrpcCalls::next_deadline`]:
//!
//! | what | due | then |
//! |---|---|---|
//! | a call | its timeout | ends `TIMEOUT`; its id is remembered as timed out |
//! | a device gone | one keepalive after its disconnect | forgotten: calls to it are `OFFLINE` |

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::string::String;
use alloc::sync::Arc;

use aliot_auth::DeviceIdentity;
use aliot_topic::MessageId;
use bytes::Bytes;

use crate::authenticator::ClientKey;
use crate::time::Instant;

/// How long the platform waits for an RRPC response at least and at most (SPEC §4).
pub const RRPC_TIMEOUT_RANGE_MS: core::ops::RangeInclusive<u64> = 1_000..=8_000;

/// How many timed-out RRPC message ids are remembered to tell a late response from an unknown one.
const REMEMBERED_TIMEOUTS: usize = 4096;

/// How an RRPC call ended (SPEC §4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RrpcOutcome {
    /// The device answered with this payload.
    Success(Bytes),
    /// No answer within the call's timeout.
    Timeout,
    /// The device is not connected.
    Offline,
    /// The device's connection went away less than one keepalive ago, or it is connected but
    /// not subscribed to the request topic.
    HalfConn,
    /// Anything else (the broker shut down with the call pending).
    Unknown,
}

impl RrpcOutcome {
    /// The platform's name for the outcome: `SUCCESS`, `TIMEOUT`, `OFFLINE`, `HALFCONN`, `UNKNOWN`.
    pub fn code(&self) -> &'static str {
        match self {
            RrpcOutcome::Success(_) => "SUCCESS",
            RrpcOutcome::Timeout => "TIMEOUT",
            RrpcOutcome::Offline => "OFFLINE",
            RrpcOutcome::HalfConn => "HALFCONN",
            RrpcOutcome::Unknown => "UNKNOWN",
        }
    }
}

/// Why the hub refused to start an RRPC call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRrpcCall {
    /// The timeout is outside 1,000–8,000 ms.
    #[error("RRPC timeout {0} ms is outside 1000..=8000 ms")]
    InvalidTimeout(u64),
    /// The custom topic is not one of the device's own (`/{productKey}/{deviceName}/...` or
    /// `/sys/{productKey}/{deviceName}/...`).
    #[error("custom RRPC topic {0:?} is not one of the device's own topics")]
    NotDeviceTopic(String),
    /// The request topic would not be a valid topic name.
    #[error("RRPC request topic is invalid")]
    InvalidTopic,
}

/// What became of a device's answer to a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Answer {
    /// It answered a call waiting for it, which has now ended.
    Matched,
    /// Its call had timed out already.
    Late,
    /// No call of this device and form has this id.
    Unknown,
}

struct PendingCall {
    device: DeviceIdentity,
    deadline: Instant,
    /// Whether the call went out on a custom topic (`/ext/rrpc/...`): the answer must come in
    /// the same form.
    custom: bool,
}

/// The calls in flight and the devices that went away less than a keepalive ago.
pub(super) struct RrpcCalls {
    calls: BTreeMap<MessageId, PendingCall>,
    call_deadlines: BTreeSet<(Instant, MessageId)>,
    timed_out: VecDeque<MessageId>,
    next_message_id: u64,
    /// Until when each device that went away counts as half connected. The keys are the
    /// sessions' own (`Arc`), not copies.
    gone: BTreeMap<Arc<ClientKey>, Instant>,
    gone_deadlines: BTreeSet<(Instant, Arc<ClientKey>)>,
}

impl RrpcCalls {
    /// No calls; the first id handed out is `first_message_id`.
    pub(super) fn new(first_message_id: u64) -> Self {
        RrpcCalls {
            calls: BTreeMap::new(),
            call_deadlines: BTreeSet::new(),
            timed_out: VecDeque::new(),
            next_message_id: first_message_id,
            gone: BTreeMap::new(),
            gone_deadlines: BTreeSet::new(),
        }
    }

    /// Calls waiting for an answer.
    pub(super) fn len(&self) -> usize {
        self.calls.len()
    }

    /// Devices counted as half connected now (or until the next [`expire`](Self::expire)).
    pub(super) fn gone_len(&self) -> usize {
        self.gone.len()
    }

    /// A message id no call has had.
    /// Ids below `first` are not handed out (they were before a restart).
    pub(super) fn skip_ids_below(&mut self, first: u64) {
        self.next_message_id = self.next_message_id.max(first);
    }

    /// The id the next call gets.
    pub(super) fn next_id(&self) -> u64 {
        self.next_message_id
    }

    pub(super) fn allocate_id(&mut self) -> MessageId {
        let id = MessageId(self.next_message_id);
        self.next_message_id = self.next_message_id.wrapping_add(1);
        id
    }

    /// A call went out to `device`; it times out at `deadline`.
    pub(super) fn start(
        &mut self,
        id: MessageId,
        device: DeviceIdentity,
        custom: bool,
        deadline: Instant,
    ) {
        self.call_deadlines.insert((deadline, id));
        self.calls.insert(
            id,
            PendingCall {
                device,
                deadline,
                custom,
            },
        );
    }

    /// `device` answered call `id` in the custom form or not. A matched call has ended.
    pub(super) fn answer(
        &mut self,
        id: MessageId,
        device: &DeviceIdentity,
        custom: bool,
    ) -> Answer {
        let matches = self
            .calls
            .get(&id)
            .is_some_and(|call| call.device == *device && call.custom == custom);
        if matches {
            if let Some(call) = self.calls.remove(&id) {
                self.call_deadlines.remove(&(call.deadline, id));
            }
            Answer::Matched
        } else if self.timed_out.contains(&id) {
            Answer::Late
        } else {
            Answer::Unknown
        }
    }

    /// A device's connection went away: it counts as half connected until `until`.
    pub(super) fn device_gone(&mut self, key: &Arc<ClientKey>, until: Instant) {
        if !matches!(**key, ClientKey::Device(_)) {
            return;
        }
        if let Some(before) = self.gone.insert(Arc::clone(key), until) {
            self.gone_deadlines.remove(&(before, Arc::clone(key)));
        }
        self.gone_deadlines.insert((until, Arc::clone(key)));
    }

    /// A device has a connection again: no longer half connected.
    pub(super) fn device_back(&mut self, key: &ClientKey) {
        if let Some((key, until)) = self.gone.remove_entry(key) {
            self.gone_deadlines.remove(&(until, key));
        }
    }

    /// Whether `device`'s connection went away less than a keepalive before `now`.
    pub(super) fn is_half_connected(&self, device: &ClientKey, now: Instant) -> bool {
        self.gone.get(device).is_some_and(|until| *until > now)
    }

    /// The next deadline: a call's timeout, or the end of a device's half-connected window.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let call = self.call_deadlines.first().map(|(at, _)| *at);
        let gone = self.gone_deadlines.first().map(|(at, _)| *at);
        call.into_iter().chain(gone).min()
    }

    /// Forgets the devices whose half-connected window has ended by `now`, then gives the next
    /// call that timed out by `now` (remembered as timed out), if any. Call until `None`.
    pub(super) fn expire(&mut self, now: Instant) -> Option<MessageId> {
        while let Some((at, _)) = self.gone_deadlines.first() {
            if *at > now {
                break;
            }
            if let Some((_, key)) = self.gone_deadlines.pop_first() {
                self.gone.remove(&key);
            }
        }
        while let Some(&(at, id)) = self.call_deadlines.first() {
            if at > now {
                return None;
            }
            self.call_deadlines.pop_first();
            if self.calls.remove(&id).is_some() {
                self.remember_timeout(id);
                return Some(id);
            }
        }
        None
    }

    /// Ends every call (the hub shuts down): their ids, to be answered `UNKNOWN`.
    pub(super) fn drain(&mut self) -> impl Iterator<Item = MessageId> + use<> {
        self.call_deadlines.clear();
        core::mem::take(&mut self.calls).into_keys()
    }

    fn remember_timeout(&mut self, id: MessageId) {
        if self.timed_out.len() == REMEMBERED_TIMEOUTS {
            self.timed_out.pop_front();
        }
        self.timed_out.push_back(id);
    }
}
