//! What the hub counts: connections, messages, drops and RRPC outcomes.
//!
//! Nothing the hub drops or refuses goes uncounted. The counters only grow; an adapter reads
//! them with [`Hub::counters`](super::Hub::counters) for its metrics and its log warnings.

use super::rrpc::RrpcOutcome;
use crate::server::CloseReason;

/// What the hub has counted since it started. Read with [`Hub::counters`](super::Hub::counters).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Sessions opened (CONNACK 0 sent).
    pub connections_accepted: u64,
    /// CONNECTs refused, by CONNACK code (index = code; 0 unused).
    pub connections_refused: [u64; 6],
    /// Connections closed, by reason.
    pub closed: CloseCounters,
    /// Connections taken over by a new connection of the same client.
    pub takeovers: u64,
    /// In a cluster: sessions handed over to another node ([`Hub::hand_over`]).
    ///
    /// [`Hub::hand_over`]: super::Hub::hand_over
    pub sessions_handed_over: u64,
    /// In a cluster: sessions taken over from another node ([`Hub::take_over`]).
    ///
    /// [`Hub::take_over`]: super::Hub::take_over
    pub sessions_taken_over: u64,
    /// In a cluster: messages a hand-over carried that had been sent to the device here and
    /// not acknowledged: the new node sends them again, so the device may get them twice (at
    /// least once: the duplicates a move can cause, counted).
    pub messages_handed_again: u64,
    /// PUBLISHes accepted from clients (plus messages published by the server).
    pub messages_in: u64,
    /// Deliveries handed to connections.
    pub messages_out: u64,
    /// PUBLISHes refused by the ACL (dropped; QoS 1 still acknowledged).
    pub publish_denied: u64,
    /// QoS 1 PUBLISHes whose PUBACK was held because a subscriber had fallen behind.
    pub acks_held: u64,
    /// Of those, PUBACKs sent when the hold reached [`HubConfig::max_ack_hold`](super::HubConfig::max_ack_hold).
    pub acks_held_to_limit: u64,
    /// SUBSCRIBE filters refused by the ACL.
    pub subscribe_denied: u64,
    /// Drops, by reason.
    pub dropped: DropCounters,
    /// RRPC outcomes and strays.
    pub rrpc: RrpcCounters,
    /// The platform's device services.
    pub services: ServiceCounters,
    /// Gateways and their sub-devices.
    pub gateway: GatewayCounters,
}

/// Gateways and their sub-devices (PLATFORM-PROTOCOLS §4).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GatewayCounters {
    /// Gateway requests (topology, registration, login, logout).
    pub requests: u64,
    /// Of those, answered with a code other than 200.
    pub refused: u64,
    /// Sub-devices logged in (a login of one already carried by the same gateway not
    /// counted).
    pub logins: u64,
    /// Sub-devices logged out by their gateway or by a topology change.
    pub logouts: u64,
    /// Sub-devices that went offline with their gateway's connection.
    pub dropped_with_gateway: u64,
}

/// The platform's device services (thing model, NTP, shadow, OTA).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceCounters {
    /// Requests of devices to a service (replies to downlinks included).
    pub requests: u64,
    /// Of those, malformed: answered with an error code, or dropped when no answer can be
    /// made (an NTP request without its time, a report without its version).
    pub malformed: u64,
    /// Replies and downlinks not sent because the device neither subscribed to their topic
    /// nor asked for the automatic subscription (or unsubscribed from it).
    pub not_subscribed: u64,
    /// Devices' answers to downlinks (property set, service calls) kept as results.
    pub downlink_results: u64,
    /// Results dropped, the oldest first, to keep the latest
    /// [`MAX_DOWNLINK_RESULTS`](super::MAX_DOWNLINK_RESULTS).
    pub downlink_results_dropped: u64,
}

/// Connection closes by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CloseCounters {
    /// DISCONNECT from the client.
    pub client_disconnected: u64,
    /// CONNECT refused (see [`Counters::connections_refused`]).
    pub refused: u64,
    /// No CONNECT in time.
    pub connect_timeout: u64,
    /// Keepalive expired.
    pub keep_alive_timeout: u64,
    /// Protocol or profile rule broken, or malformed bytes.
    pub protocol_violation: u64,
    /// Taken over.
    pub taken_over: u64,
    /// Broker shutdown.
    pub server_shutdown: u64,
    /// Transport lost without DISCONNECT.
    pub transport_closed: u64,
    /// The device was disabled or deleted by the server side.
    pub device_disabled: u64,
    /// A dynamic registration connection, its grant given (after its grace time).
    pub registered: u64,
}

/// Messages dropped, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DropCounters {
    /// QoS 1 messages dropped from a full session queue (the oldest go first).
    pub queue_full: u64,
    /// Queued messages older than the maximum age.
    pub expired: u64,
    /// QoS 0 deliveries to a device that was not reading.
    pub slow_consumer: u64,
    /// QoS 0 messages for an offline session (QoS 0 is not kept).
    pub offline_qos0: u64,
    /// Queued or in-flight messages of a session that ended (clean session closed, clean
    /// start over a kept session, session expired).
    pub session_discarded: u64,
}

/// RRPC outcomes and stray responses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RrpcCounters {
    /// Calls answered.
    pub success: u64,
    /// Calls timed out.
    pub timeout: u64,
    /// Calls to offline devices.
    pub offline: u64,
    /// Calls to half-connected devices.
    pub halfconn: u64,
    /// Calls ended otherwise.
    pub unknown: u64,
    /// Responses that came after their call timed out (dropped).
    pub late_responses: u64,
    /// Responses to no known call (dropped).
    pub unknown_responses: u64,
}

impl Counters {
    /// Counts a connection's close by its reason (and a refusal by its CONNACK code).
    pub(super) fn count_close(&mut self, reason: &CloseReason) {
        let closed = &mut self.closed;
        match reason {
            CloseReason::ClientDisconnected => closed.client_disconnected += 1,
            CloseReason::Refused(refusal) => {
                closed.refused += 1;
                let code = refusal.code as usize;
                if let Some(count) = self.connections_refused.get_mut(code) {
                    *count += 1;
                }
            }
            CloseReason::ConnectTimeout => closed.connect_timeout += 1,
            CloseReason::KeepAliveTimeout => closed.keep_alive_timeout += 1,
            CloseReason::ProtocolViolation(_) | CloseReason::Decode(_) => {
                closed.protocol_violation += 1
            }
            CloseReason::TakenOver => closed.taken_over += 1,
            CloseReason::ServerShutdown => closed.server_shutdown += 1,
            CloseReason::TransportClosed => closed.transport_closed += 1,
            CloseReason::DeviceDisabled => closed.device_disabled += 1,
            CloseReason::Registered => closed.registered += 1,
        }
    }
}

impl RrpcCounters {
    /// Counts how a call ended.
    pub(super) fn count_outcome(&mut self, outcome: &RrpcOutcome) {
        match outcome {
            RrpcOutcome::Success(_) => self.success += 1,
            RrpcOutcome::Timeout => self.timeout += 1,
            RrpcOutcome::Offline => self.offline += 1,
            RrpcOutcome::HalfConn => self.halfconn += 1,
            RrpcOutcome::Unknown => self.unknown += 1,
        }
    }
}
