//! PUBACKs the hub holds back while subscribers fall behind: flow control for QoS 1.
//!
//! A QoS 1 PUBLISH is acknowledged once the hub has taken it. When routing puts it at the back
//! of an online session's long queue (see [`HubConfig::ack_hold_threshold`]), that queue holds
//! the PUBACK until the message leaves it for the device (or the session goes offline), or
//! [`HubConfig::max_ack_hold`] passes, whichever comes first. A publisher that waits for its
//! PUBACKs, as MQTT clients do with a window of messages in flight, thereby slows down to the
//! subscriber's pace instead of overflowing its queue. A subscriber that has acknowledged
//! nothing for the longest hold is stuck rather than slow and holds nothing more (the hub
//! decides; this module only keeps the holds). A message that holds a PUBACK may take its queue
//! past the queue's limits, up to [`HELD_QUEUE_FACTOR`] times them, so that a burst from many
//! publishers at once loses nothing. When they still overflow it (their windows add up to more
//! than that), a message dropped from it keeps its hold to the limit, so that they stay slowed
//! down rather than drop one message per message.
//!
//! [`HELD_QUEUE_FACTOR`]: super::HELD_QUEUE_FACTOR
//!
//! [`HubConfig::ack_hold_threshold`]: super::HubConfig::ack_hold_threshold
//! [`HubConfig::max_ack_hold`]: super::HubConfig::max_ack_hold

use alloc::collections::VecDeque;
use core::num::NonZeroU64;

use hashbrown::HashMap;

use super::ConnId;
use crate::codec::PacketId;
use crate::time::Instant;

/// One QoS 1 PUBLISH being routed: whom to acknowledge, and the key its holds are kept under.
#[derive(Clone, Copy, Debug)]
pub(super) struct AckTicket {
    id: NonZeroU64,
    pub(super) conn: ConnId,
    pub(super) packet_id: PacketId,
}

/// Where a held PUBACK is kept; queued messages carry it to release their hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct HoldId(NonZeroU64);

struct Held {
    conn: ConnId,
    packet_id: PacketId,
    /// Queues holding it now.
    holds: u32,
    /// Whether routing has finished: until then no count of holds is final.
    routed: bool,
}

/// The PUBACKs held now. Nothing is stored for a PUBLISH that no queue holds.
#[derive(Default)]
pub(super) struct HeldAcks {
    held: HashMap<NonZeroU64, Held>,
    /// When each hold ends at the latest, in order (the limit is the same for all). Entries of
    /// holds released earlier stay until they reach the front.
    deadlines: VecDeque<(Instant, NonZeroU64)>,
    next_id: u64,
}

impl HeldAcks {
    /// A ticket for a QoS 1 PUBLISH about to be routed.
    pub(super) fn ticket(&mut self, conn: ConnId, packet_id: PacketId) -> AckTicket {
        self.next_id += 1;
        AckTicket {
            id: NonZeroU64::new(self.next_id).unwrap_or(NonZeroU64::MIN),
            conn,
            packet_id,
        }
    }

    /// A queue holds the ticket's PUBACK. Returns whether this is its first hold.
    pub(super) fn hold(&mut self, ticket: AckTicket) -> (HoldId, bool) {
        let mut first = false;
        let held = self.held.entry(ticket.id).or_insert_with(|| {
            first = true;
            Held {
                conn: ticket.conn,
                packet_id: ticket.packet_id,
                holds: 0,
                routed: false,
            }
        });
        held.holds += 1;
        (HoldId(ticket.id), first)
    }

    /// Routing is done: the PUBACK to send now if nothing holds it; otherwise it is due by
    /// `deadline` at the latest.
    pub(super) fn routed(
        &mut self,
        ticket: AckTicket,
        deadline: Instant,
    ) -> Option<(ConnId, PacketId)> {
        match self.held.get_mut(&ticket.id) {
            None => Some((ticket.conn, ticket.packet_id)),
            Some(held) if held.holds == 0 => {
                self.held.remove(&ticket.id);
                Some((ticket.conn, ticket.packet_id))
            }
            Some(held) => {
                held.routed = true;
                // In order even if the caller's clock stepped back (a hold then lasts longer).
                let deadline = match self.deadlines.back() {
                    Some(&(last, _)) => deadline.max(last),
                    None => deadline,
                };
                self.deadlines.push_back((deadline, ticket.id));
                None
            }
        }
    }

    /// A queue lets go of its hold: the PUBACK to send now if that was the last one.
    pub(super) fn release(&mut self, hold: HoldId) -> Option<(ConnId, PacketId)> {
        let held = self.held.get_mut(&hold.0)?;
        held.holds = held.holds.saturating_sub(1);
        if held.holds > 0 || !held.routed {
            return None;
        }
        let held = self.held.remove(&hold.0)?;
        self.forget_released();
        Some((held.conn, held.packet_id))
    }

    /// Drops the deadlines of holds already released from the front: holds mostly end in the
    /// order they began (a queue drains from its front), so this keeps the list about as long
    /// as the holds in force.
    fn forget_released(&mut self) {
        while let Some((_, id)) = self.deadlines.front() {
            if self.held.contains_key(id) {
                break;
            }
            self.deadlines.pop_front();
        }
        if self.deadlines.is_empty() && self.deadlines.capacity() > 1024 {
            self.deadlines = VecDeque::new();
        }
    }

    /// The earliest time a hold ends by its limit.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.front().map(|(at, _)| *at)
    }

    /// The next PUBACK whose hold has lasted its limit at `now`, if any (taken out: the queues
    /// that still carry its hold find nothing when they let go).
    pub(super) fn expire(&mut self, now: Instant) -> Option<(ConnId, PacketId)> {
        while let Some(&(at, id)) = self.deadlines.front() {
            if at > now {
                return None;
            }
            self.deadlines.pop_front();
            if let Some(held) = self.held.remove(&id) {
                self.forget_released();
                return Some((held.conn, held.packet_id));
            }
        }
        // No wake-up for a deadline nothing holds any more.
        self.forget_released();
        None
    }

    /// PUBACKs held now.
    pub(super) fn len(&self) -> usize {
        self.held.len()
    }

    /// Forgets every hold (the broker shuts down: the connections are closing).
    pub(super) fn clear(&mut self) {
        self.held.clear();
        self.deadlines.clear();
    }
}
