//! Whole conversations across restarts: the hub records its changes, a store in memory commits
//! them turn by turn, and a restart (or a crash before a commit) starts a new hub from what
//! was committed. Nothing a publisher saw acknowledged is lost; nothing is acknowledged that
//! was not committed.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use aliot_core::codec::{Packet, QoS};
use aliot_core::hub::HubConfig;
use aliot_core::hub::durable::StoreChange;
use aliot_topic::MessageId;
use proptest::prelude::*;
use support::*;

const TOPIC: &str = "/a1TestProd/sub/user/get";

/// The subscriber `sub` connects with cleanSession=0, subscribes to [`TOPIC`] at QoS 1 and
/// goes away; the publisher `pub` is connected. Returns the publisher's connection.
fn offline_subscriber(broker: &mut Broker) -> aliot_core::hub::ConnId {
    let (sub, present) = broker.connect_device("sub", false);
    assert!(!present);
    broker.send(sub, subscribe(1, &[(TOPIC, QoS::AtLeastOnce)]));
    assert!(
        matches!(broker.output(sub).as_slice(), [Packet::SubAck(ack)] if ack.return_codes[0] != aliot_core::codec::SubAckReturnCode::Failure),
        "the subscription is granted"
    );
    broker.drop_transport(sub);
    broker.connect_client("pub", true)
}

/// The payloads of the PUBLISHes among `packets`, with their DUP flags.
fn payloads(packets: &[Packet]) -> Vec<(String, bool)> {
    publishes(packets)
        .into_iter()
        .map(|p| (String::from_utf8_lossy(&p.payload).into_owned(), p.dup))
        .collect()
}

/// The packet id of a QoS 1 PUBLISH.
fn packet_id(publish: &aliot_core::codec::Publish) -> aliot_core::codec::PacketId {
    match publish.qos {
        aliot_core::codec::PublishQos::AtLeastOnce(id) => id,
        aliot_core::codec::PublishQos::AtMostOnce => panic!("a QoS 0 delivery"),
    }
}

/// The packet ids the broker acknowledged among `packets`.
fn pubacks(packets: &[Packet]) -> Vec<u16> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::PubAck(ack) => Some(ack.packet_id.get()),
            _ => None,
        })
        .collect()
}

#[test]
fn an_offline_sessions_queue_survives_a_restart_and_comes_back_with_dup_in_order() {
    let mut broker = Broker::durable(&["sub", "pub"], HubConfig::default());
    let publisher = offline_subscriber(&mut broker);
    for i in 1..=5u16 {
        broker.send(
            publisher,
            publish(TOPIC, &format!("m{i}"), QoS::AtLeastOnce, i),
        );
    }
    assert_eq!(pubacks(&broker.output(publisher)), [1, 2, 3, 4, 5]);

    let restored = broker.restart(Duration::from_secs(30));
    assert_eq!((restored.sessions, restored.messages), (1, 5));
    let (sub, present) = broker.connect_device("sub", false);
    assert!(present, "the session was kept across the restart");
    let got = payloads(&broker.output(sub));
    let expected: Vec<(String, bool)> = (1..=5).map(|i| (format!("m{i}"), true)).collect();
    assert_eq!(got, expected);
}

#[test]
fn what_the_subscriber_acknowledged_is_not_sent_again_after_a_restart() {
    let mut broker = Broker::durable(&["sub", "pub"], HubConfig::default());
    let publisher = offline_subscriber(&mut broker);
    for i in 1..=3u16 {
        broker.send(
            publisher,
            publish(TOPIC, &format!("m{i}"), QoS::AtLeastOnce, i),
        );
    }
    let (sub, _) = broker.connect_device("sub", false);
    let packets = broker.output(sub);
    let first = packet_id(publishes(&packets)[0]);
    broker.send(sub, puback(first));

    broker.restart(Duration::from_secs(1));
    let (sub, present) = broker.connect_device("sub", false);
    assert!(present);
    let got: Vec<String> = payloads(&broker.output(sub))
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert_eq!(got, ["m2", "m3"]);
    // Acknowledged now, they leave the store too.
    for p in publishes(&broker.output(sub)) {
        broker.send(sub, puback(packet_id(p)));
    }
}

#[test]
fn the_subscriptions_and_features_of_a_session_survive_and_new_messages_reach_it() {
    let mut broker = Broker::durable(&["sub", "pub"], HubConfig::default());
    offline_subscriber(&mut broker);
    broker.restart(Duration::from_secs(5));
    // Published after the restart, while the subscriber is still away.
    let publisher = broker.connect_client("pub", true);
    broker.send(publisher, publish(TOPIC, "late", QoS::AtLeastOnce, 9));
    assert_eq!(pubacks(&broker.output(publisher)), [9]);
    let (sub, present) = broker.connect_device("sub", false);
    assert!(present);
    assert_eq!(payloads(&broker.output(sub)), [("late".to_string(), false)]);
}

#[test]
fn a_session_that_expired_while_the_broker_was_down_is_gone_from_the_store() {
    let hub = HubConfig {
        session_expiry: Some(Duration::from_secs(3600)),
        ..HubConfig::default()
    };
    let mut broker = Broker::durable(&["sub", "pub"], hub);
    let publisher = offline_subscriber(&mut broker);
    broker.send(publisher, publish(TOPIC, "m", QoS::AtLeastOnce, 1));
    broker.output(publisher);
    let restored = broker.restart(Duration::from_secs(3601));
    assert_eq!((restored.sessions, restored.expired_sessions), (0, 1));
    let store = broker.store.as_ref().unwrap();
    assert!(store.sessions.is_empty() && store.messages.is_empty());
    let (_, present) = broker.connect_device("sub", false);
    assert!(!present);
}

#[test]
fn an_offline_session_keeps_counting_its_expiry_across_a_restart() {
    let hub = HubConfig {
        session_expiry: Some(Duration::from_secs(3600)),
        ..HubConfig::default()
    };
    let mut broker = Broker::durable(&["sub", "pub"], hub);
    offline_subscriber(&mut broker);
    broker.advance(Duration::from_secs(3000));
    broker.restart(Duration::from_secs(500));
    assert_eq!(broker.hub.session_count(), 1);
    broker.advance(Duration::from_secs(101));
    assert_eq!(broker.hub.session_count(), 0, "3,601 s offline in all");
    assert!(broker.store.as_ref().unwrap().sessions.is_empty());
}

#[test]
fn a_message_past_its_maximum_age_is_not_restored() {
    let hub = HubConfig {
        max_message_age: Some(Duration::from_secs(60)),
        ..HubConfig::default()
    };
    let mut broker = Broker::durable(&["sub", "pub"], hub);
    let publisher = offline_subscriber(&mut broker);
    broker.send(publisher, publish(TOPIC, "old", QoS::AtLeastOnce, 1));
    broker.advance(Duration::from_secs(30));
    broker.send(publisher, publish(TOPIC, "young", QoS::AtLeastOnce, 2));
    broker.output(publisher);
    let restored = broker.restart(Duration::from_secs(40));
    assert_eq!((restored.messages, restored.dropped_messages), (1, 1));
    let (sub, _) = broker.connect_device("sub", false);
    assert_eq!(payloads(&broker.output(sub)), [("young".to_string(), true)]);
}

#[test]
fn clean_sessions_and_qos0_leave_nothing_in_the_store() {
    let mut broker = Broker::durable(&["sub", "pub"], HubConfig::default());
    let (sub, _) = broker.connect_device("sub", true);
    broker.send(sub, subscribe(1, &[(TOPIC, QoS::AtLeastOnce)]));
    let publisher = broker.connect_client("pub", true);
    broker.send(publisher, publish(TOPIC, "q1", QoS::AtLeastOnce, 1));
    broker.send(publisher, publish(TOPIC, "q0", QoS::AtMostOnce, 0));
    assert_eq!(payloads(&broker.output(sub)).len(), 2);
    let store = broker.store.as_ref().unwrap();
    assert!(store.sessions.is_empty() && store.messages.is_empty());
}

#[test]
fn a_clean_connect_removes_the_kept_session_from_the_store() {
    let mut broker = Broker::durable(&["sub", "pub"], HubConfig::default());
    let publisher = offline_subscriber(&mut broker);
    broker.send(publisher, publish(TOPIC, "m", QoS::AtLeastOnce, 1));
    broker.output(publisher);
    assert_eq!(broker.store.as_ref().unwrap().messages.len(), 1);
    broker.connect_device("sub", true);
    let store = broker.store.as_ref().unwrap();
    assert!(store.sessions.is_empty() && store.messages.is_empty());
}

#[test]
fn device_state_survives_a_restart() {
    let mut broker = Broker::durable(&["dev"], HubConfig::default());
    let (dev, _) = broker.connect_device_with("dev", true, "_ss=1");
    broker.send(
        dev,
        publish(
            "/sys/a1TestProd/dev/thing/event/property/post",
            r#"{"id":"1","version":"1.0","params":{"temp":21.5},"method":"thing.event.property.post"}"#,
            QoS::AtLeastOnce,
            1,
        ),
    );
    broker.output(dev);
    let before = broker.hub.device_state(&identity("dev")).cloned().unwrap();
    broker.restart(Duration::from_secs(1));
    let after = broker.hub.device_state(&identity("dev")).cloned().unwrap();
    assert_eq!(before, after);
    assert!(after.property("temp").is_some());
}

#[test]
fn rrpc_message_ids_are_not_handed_out_again_after_a_restart() {
    let mut broker = Broker::durable(&["dev"], HubConfig::default());
    let device = identity("dev");
    let id = |broker: &mut Broker| -> MessageId {
        let now = broker.now;
        broker
            .hub
            .rrpc_call(&device, "x".into(), Duration::from_secs(5), None, now)
            .unwrap()
    };
    let first = id(&mut broker);
    broker.pump();
    broker.restart(Duration::from_secs(1));
    let second = id(&mut broker);
    assert!(second.0 > first.0, "{second:?} after {first:?}");
    // The reservation is one write per block, not per call.
    let mut changes = Vec::new();
    broker.hub.take_store_changes(&mut changes);
    assert!(
        !changes
            .iter()
            .any(|c| matches!(c, StoreChange::RrpcIdsReserved(_))),
        "{changes:?}"
    );
}

#[test]
fn a_crash_before_the_commit_sends_no_puback_and_loses_nothing_acknowledged() {
    let mut broker = Broker::durable(&["sub", "pub"], HubConfig::default());
    let publisher = offline_subscriber(&mut broker);
    broker.send(publisher, publish(TOPIC, "kept", QoS::AtLeastOnce, 1));
    assert_eq!(pubacks(&broker.output(publisher)), [1]);
    broker.crash_at_next_commit = true;
    broker.send(publisher, publish(TOPIC, "lost", QoS::AtLeastOnce, 2));
    assert!(broker.crashed);
    assert_eq!(pubacks(&broker.output(publisher)), Vec::<u16>::new());
    broker.restart(Duration::from_secs(1));
    let (sub, _) = broker.connect_device("sub", false);
    assert_eq!(payloads(&broker.output(sub)), [("kept".to_string(), true)]);
}

/// One step of the model-based test.
#[derive(Clone, Debug)]
enum Step {
    /// The publisher sends a QoS 1 message.
    Publish,
    /// The subscriber comes online (cleanSession=0) if it is not.
    SubscriberOnline,
    /// The subscriber acknowledges every delivery it has.
    SubscriberAcks,
    /// The subscriber's connection breaks.
    SubscriberOffline,
    /// Time passes.
    Wait(u16),
    /// The next commit fails: the process dies before it, then restarts.
    CrashAtNextCommit,
    /// A clean restart.
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => Just(Step::Publish),
        2 => Just(Step::SubscriberOnline),
        3 => Just(Step::SubscriberAcks),
        1 => Just(Step::SubscriberOffline),
        1 => (1u16..120).prop_map(Step::Wait),
        1 => Just(Step::CrashAtNextCommit),
        1 => Just(Step::Restart),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever happens, crashes included: every message whose PUBACK the publisher got reaches
    /// the subscriber in the end, and none is acknowledged that the store did not commit.
    #[test]
    fn every_acknowledged_message_is_delivered_across_crashes(steps in proptest::collection::vec(step(), 1..60)) {
        let hub = HubConfig { inflight_window: core::num::NonZeroU16::new(4).unwrap(), ..HubConfig::default() };
        let mut broker = Broker::durable(&["sub", "pub"], hub);
        let (sub, _) = broker.connect_device("sub", false);
        broker.send(sub, subscribe(1, &[(TOPIC, QoS::AtLeastOnce)]));
        broker.output(sub);
        let mut sub = Some(sub);
        let mut publisher = broker.connect_client("pub", true);
        let mut next = 0u32;
        // Payloads by the packet id they were sent with (ids are not reused before a PUBACK).
        let mut sent: std::collections::BTreeMap<u16, String> = Default::default();
        let mut acknowledged = BTreeSet::new();
        let mut delivered = BTreeSet::new();
        let collect = |broker: &mut Broker, sub: Option<_>, publisher, acknowledged: &mut BTreeSet<String>, delivered: &mut BTreeSet<String>, sent: &mut std::collections::BTreeMap<u16, String>| {
            for id in pubacks(&broker.output(publisher)) {
                if let Some(payload) = sent.remove(&id) {
                    acknowledged.insert(payload);
                }
            }
            if let Some(sub) = sub {
                for (payload, _) in payloads(&broker.output(sub)) {
                    delivered.insert(payload);
                }
            }
        };
        for step in steps {
            match step {
                Step::Publish => {
                    next += 1;
                    let id = (next % 60_000 + 1) as u16;
                    let payload = format!("m{next}");
                    sent.insert(id, payload.clone());
                    broker.send(publisher, publish(TOPIC, &payload, QoS::AtLeastOnce, id));
                }
                Step::SubscriberOnline => {
                    if sub.is_none() {
                        // Its CONNACK may be lost in a crash.
                        let conn = broker.accept();
                        broker.send(conn, Packet::from(signed_connect("sub", false, 60)));
                        if !broker.crashed {
                            let packets = broker.output(conn);
                            prop_assert!(
                                matches!(packets.first(), Some(Packet::ConnAck(ack)) if ack.session_present),
                                "the session is kept: {:?}", packets
                            );
                            broker.unread.insert(conn, packets[1..].to_vec());
                            sub = Some(conn);
                        }
                    }
                }
                Step::SubscriberAcks => {
                    if let Some(conn) = sub {
                        let packets = broker.output(conn);
                        for p in publishes(&packets) {
                            delivered.insert(String::from_utf8_lossy(&p.payload).into_owned());
                            broker.send(conn, puback(packet_id(p)));
                        }
                    }
                }
                Step::SubscriberOffline => {
                    if let Some(conn) = sub.take() {
                        collect(&mut broker, Some(conn), publisher, &mut acknowledged, &mut delivered, &mut sent);
                        broker.drop_transport(conn);
                    }
                }
                Step::Wait(secs) => broker.advance(Duration::from_secs(u64::from(secs))),
                Step::CrashAtNextCommit => broker.crash_at_next_commit = true,
                Step::Restart => {}
            }
            if !broker.crashed {
                collect(&mut broker, sub, publisher, &mut acknowledged, &mut delivered, &mut sent);
            }
            if broker.crashed || matches!(step, Step::Restart) {
                broker.crash_at_next_commit = false;
                broker.restart(Duration::from_secs(1));
                // Unacknowledged publishes are the publisher's to send again; it does not here.
                sent.clear();
                sub = None;
                publisher = broker.connect_client("pub", true);
            }
        }
        // Drain: the subscriber comes back and takes everything.
        broker.crash_at_next_commit = false;
        // Deliveries read and not acknowledged come again with the next connection.
        if let Some(conn) = sub {
            broker.drop_transport(conn);
        }
        let (conn, present) = broker.connect_device("sub", false);
        prop_assert!(present);
        for _ in 0..10_000 {
            let packets = broker.output(conn);
            let got = publishes(&packets);
            if got.is_empty() {
                break;
            }
            for p in got {
                delivered.insert(String::from_utf8_lossy(&p.payload).into_owned());
                broker.send(conn, puback(packet_id(p)));
            }
        }
        let lost: Vec<&String> = acknowledged.difference(&delivered).collect();
        prop_assert!(lost.is_empty(), "acknowledged and never delivered: {:?}", lost);
        prop_assert!(broker.store.as_ref().unwrap().messages.is_empty(), "everything delivered leaves the store");
    }
}
