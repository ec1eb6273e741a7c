//! The device's subscriptions, kept so that a session the broker lost can be rebuilt.
//!
//! MQTT keeps subscriptions in the broker's session. A CONNACK with `session_present = 0`
//! (every CONNACK, with cleanSession=1) says the broker holds none: whatever the device had
//! subscribed to is gone, and messages on it stop without a word. [`Subscriptions`] remembers
//! each filter the application subscribed to, until it unsubscribes or the broker refuses the
//! filter, so the connection can subscribe again by itself after such a CONNACK (when
//! [`resubscribe_on_session_loss`](super::ClientConfig::resubscribe_on_session_loss) is on).
//!
//! A filter whose SUBSCRIBE is still unanswered is not subscribed again: that SUBSCRIBE goes
//! out again by itself, like every unacknowledged packet. The last SUBSCRIBE of a filter
//! decides: a SUBACK of an older one changes nothing.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use aliot_topic::TopicFilter;

use crate::codec::{PacketId, QoS, SubAckReturnCode};

/// Who sent a SUBSCRIBE: the application, or the connection after a session loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SubscribeOrigin {
    /// [`Connection::subscribe`](super::Connection::subscribe).
    Application,
    /// The connection, rebuilding the subscriptions of a lost session.
    SessionLoss,
}

/// A filter the application subscribed to.
#[derive(Clone, Copy, Debug)]
struct Subscription {
    /// The QoS asked for.
    qos: QoS,
    /// The latest SUBSCRIBE carrying the filter, while it awaits its SUBACK.
    awaiting: Option<PacketId>,
}

/// A SUBSCRIBE awaiting its SUBACK.
#[derive(Clone, Debug)]
struct AwaitingSubAck {
    /// Its filters, in the order of the packet (and of the SUBACK's return codes).
    filters: Vec<TopicFilter>,
    origin: SubscribeOrigin,
}

/// What a SUBACK answered: the SUBSCRIBE's origin and its filters, in order.
#[derive(Debug)]
pub(super) struct Answered {
    pub(super) origin: SubscribeOrigin,
    pub(super) filters: Vec<TopicFilter>,
}

/// The subscriptions of one client session. See the [module docs](self).
#[derive(Clone, Debug, Default)]
pub(super) struct Subscriptions {
    filters: BTreeMap<TopicFilter, Subscription>,
    awaiting: BTreeMap<PacketId, AwaitingSubAck>,
}

impl Subscriptions {
    /// A SUBSCRIBE with `packet_id` was taken for `filters`.
    pub(super) fn subscribing(
        &mut self,
        packet_id: PacketId,
        filters: &[(TopicFilter, QoS)],
        origin: SubscribeOrigin,
    ) {
        for (filter, qos) in filters {
            let subscription = Subscription {
                qos: *qos,
                awaiting: Some(packet_id),
            };
            self.filters.insert(filter.clone(), subscription);
        }
        let filters = filters.iter().map(|(filter, _)| filter.clone()).collect();
        self.awaiting
            .insert(packet_id, AwaitingSubAck { filters, origin });
    }

    /// `filters` are not to be subscribed again: an UNSUBSCRIBE was taken for them, or they
    /// could not be restored after a session loss.
    pub(super) fn forget(&mut self, filters: &[TopicFilter]) {
        for filter in filters {
            self.filters.remove(filter);
        }
    }

    /// The SUBACK of `packet_id` arrived with these codes (one per filter, checked by the
    /// caller): a refused filter is forgotten, an accepted one is subscribed. `None` when no
    /// SUBSCRIBE with that id awaits its SUBACK.
    pub(super) fn answered(
        &mut self,
        packet_id: PacketId,
        return_codes: &[SubAckReturnCode],
    ) -> Option<Answered> {
        let AwaitingSubAck { filters, origin } = self.awaiting.remove(&packet_id)?;
        for (filter, code) in filters.iter().zip(return_codes) {
            let Some(subscription) = self.filters.get_mut(filter) else {
                continue;
            };
            if subscription.awaiting != Some(packet_id) {
                continue;
            }
            if *code == SubAckReturnCode::Failure {
                self.filters.remove(filter);
            } else {
                subscription.awaiting = None;
            }
        }
        Some(Answered { origin, filters })
    }

    /// A SUBSCRIBE taken with `packet_id` will never be sent (it could not be encoded): its
    /// filters are forgotten unless a later SUBSCRIBE carries them.
    pub(super) fn abandoned(&mut self, packet_id: PacketId) {
        let Some(AwaitingSubAck { filters, .. }) = self.awaiting.remove(&packet_id) else {
            return;
        };
        for filter in &filters {
            if self
                .filters
                .get(filter)
                .is_some_and(|subscription| subscription.awaiting == Some(packet_id))
            {
                self.filters.remove(filter);
            }
        }
    }

    /// The filters the broker accepted and no SUBSCRIBE is carrying now, with their QoS, in
    /// filter order: what a lost session had.
    pub(super) fn to_restore(&self) -> Vec<(TopicFilter, QoS)> {
        self.filters
            .iter()
            .filter(|(_, subscription)| subscription.awaiting.is_none())
            .map(|(filter, subscription)| (filter.clone(), subscription.qos))
            .collect()
    }

    /// How many filters are subscribed or being subscribed.
    pub(super) fn len(&self) -> usize {
        self.filters.len()
    }
}
