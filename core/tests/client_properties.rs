//! Properties of the device client over random conversations: whatever the broker and the
//! application do, no packet id is handed out while held, the window and queue bounds hold,
//! every acknowledged id is one the client handed out, and nothing panics.

mod client_broker;

use std::collections::HashSet;
use std::time::Duration;

use aliot_core::client::{ClientError, Event};
use aliot_core::codec::{
    ConnAck, ConnectReturnCode, Packet, PacketId, PubAck, QoS, SubAck, SubAckReturnCode, UnsubAck,
};
use aliot_topic::TopicFilter;
use client_broker::{Harness, config, topic};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Step {
    Publish {
        acknowledged: bool,
    },
    Subscribe,
    Unsubscribe,
    /// The broker acknowledges the n-th packet it holds unacknowledged.
    Acknowledge(usize),
    /// The broker sends arbitrary bytes.
    Garbage(Vec<u8>),
    /// The broker sends a QoS 1 message.
    Incoming(u16),
    TakeEvents,
    Advance(u16),
    TransportClosed,
    /// A new transport, and the broker's CONNACK (accepted or not, session or not).
    Reconnect {
        accepted: bool,
        session_present: bool,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => any::<bool>().prop_map(|acknowledged| Step::Publish { acknowledged }),
        1 => Just(Step::Subscribe),
        1 => Just(Step::Unsubscribe),
        6 => any::<usize>().prop_map(Step::Acknowledge),
        1 => proptest::collection::vec(any::<u8>(), 0..12).prop_map(Step::Garbage),
        2 => (1..=u16::MAX).prop_map(Step::Incoming),
        3 => Just(Step::TakeEvents),
        2 => any::<u16>().prop_map(Step::Advance),
        1 => Just(Step::TransportClosed),
        1 => (any::<bool>(), any::<bool>()).prop_map(|(accepted, session_present)| {
            Step::Reconnect { accepted, session_present }
        }),
    ]
}

/// What the broker received and has not acknowledged, on the current transport.
#[derive(Default)]
struct BrokerView {
    unacknowledged: Vec<Packet>,
}

impl BrokerView {
    fn read(&mut self, harness: &mut Harness) {
        for packet in harness.sent() {
            match &packet {
                Packet::Publish(publish) if publish.qos.packet_id().is_some() => {
                    self.unacknowledged.push(packet)
                }
                Packet::Subscribe(_) | Packet::Unsubscribe(_) => self.unacknowledged.push(packet),
                _ => {}
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_conversations_keep_the_client_invariants(
        steps in proptest::collection::vec(step(), 1..200),
        clean_session in any::<bool>(),
        window in 1_usize..6,
        queue in 1_usize..12,
    ) {
        let mut config = config();
        config.clean_session = clean_session;
        config.max_in_flight = window;
        config.max_queued = queue;
        // Subscribing again after a session loss is client_session_loss.rs's; here every
        // packet id is one the application was handed.
        config.resubscribe_on_session_loss = false;
        let mut harness = Harness::connected(config);
        let mut broker = BrokerView::default();
        // Ids handed out and not yet reported acknowledged or failed.
        let mut held: HashSet<PacketId> = HashSet::new();

        for step in steps {
            let mut handed_out = None;
            match step {
                Step::Publish { acknowledged } => {
                    let qos = if acknowledged { QoS::AtLeastOnce } else { QoS::AtMostOnce };
                    match harness.conn.publish(topic("update"), &b"m"[..], qos, harness.now) {
                        Ok(token) => {
                            prop_assert_eq!(token.packet_id().is_some(), acknowledged);
                            handed_out = token.packet_id();
                        }
                        Err(error) => prop_assert_eq!(error, ClientError::QueueFull { capacity: queue }),
                    }
                }
                Step::Subscribe => {
                    let filters = [(TopicFilter::from_static("a/+"), QoS::AtLeastOnce)];
                    match harness.conn.subscribe(&filters, harness.now) {
                        Ok(id) => handed_out = Some(id),
                        Err(error) => prop_assert_eq!(error, ClientError::QueueFull { capacity: queue }),
                    }
                }
                Step::Unsubscribe => {
                    match harness.conn.unsubscribe(&[TopicFilter::from_static("a/+")], harness.now) {
                        Ok(id) => handed_out = Some(id),
                        Err(error) => prop_assert_eq!(error, ClientError::QueueFull { capacity: queue }),
                    }
                }
                Step::Acknowledge(pick) => {
                    broker.read(&mut harness);
                    if !broker.unacknowledged.is_empty() {
                        let packet = broker.unacknowledged.remove(pick % broker.unacknowledged.len());
                        let ack = match packet {
                            Packet::Publish(publish) => publish
                                .qos
                                .packet_id()
                                .map(|packet_id| Packet::from(PubAck { packet_id })),
                            Packet::Subscribe(subscribe) => Some(Packet::from(SubAck {
                                packet_id: subscribe.packet_id,
                                return_codes: vec![SubAckReturnCode::Success(QoS::AtLeastOnce)],
                            })),
                            Packet::Unsubscribe(unsubscribe) => Some(Packet::from(UnsubAck {
                                packet_id: unsubscribe.packet_id,
                            })),
                            _ => None,
                        };
                        if let Some(ack) = ack {
                            harness.deliver(ack);
                        }
                    }
                }
                Step::Garbage(bytes) => harness.deliver_bytes(&bytes),
                Step::Incoming(packet_id) => harness.incoming(
                    "/a1TestPK001/dev-001/user/get",
                    b"x",
                    Some(packet_id),
                ),
                Step::TakeEvents => {}
                Step::Advance(seconds) => {
                    harness.advance(Duration::from_secs(u64::from(seconds)));
                    harness.conn.handle_timeout(harness.now);
                }
                Step::TransportClosed => harness.conn.handle_transport_closed(harness.now),
                Step::Reconnect { accepted, session_present } => {
                    harness.conn.connect(harness.now);
                    broker = BrokerView::default();
                    let code = if accepted {
                        ConnectReturnCode::Accepted
                    } else {
                        ConnectReturnCode::ServerUnavailable
                    };
                    harness.sent();
                    harness.deliver(ConnAck {
                        session_present: session_present && accepted && !clean_session,
                        code,
                    });
                }
            }

            if let Some(id) = handed_out {
                prop_assert!(held.insert(id), "{} handed out while still held", id);
            }
            broker.read(&mut harness);
            for event in harness.events() {
                match event {
                    Event::PublishAcked(id) | Event::PublishFailed(id) | Event::UnsubAck(id)
                    | Event::SubAck { packet_id: id, .. } => {
                        prop_assert!(held.remove(&id), "{} reported but not held", id);
                    }
                    _ => {}
                }
            }
            prop_assert!(harness.conn.in_flight_len() <= window);
            prop_assert!(harness.conn.queued_len() <= queue);
            // Every held id is a packet in flight or queued (queued QoS 0 PUBLISHes hold none).
            prop_assert!(harness.conn.in_flight_len() <= held.len());
            prop_assert!(held.len() <= harness.conn.in_flight_len() + harness.conn.queued_len());
        }
    }
}
