//! The server-side subscription's consumer groups through the sans-IO broker: what each group
//! gets, how its consumers share it, credit, settlement and redelivery, the backlog's limits,
//! and the backlog across a restart. Whole conversations with a manual clock.

mod support;

use std::time::Duration;

use aliot_core::codec::QoS;
use aliot_core::hub::{BacklogLimits, ConsumerGroupConfig, ConsumerId, HubConfig, MessageKinds};
use aliot_core::server::ServerConfig;
use serde_json::Value;
use support::{Broker, PK, publish};

fn group(id: &str, products: &[&str], kinds: MessageKinds) -> ConsumerGroupConfig {
    ConsumerGroupConfig {
        id: id.into(),
        products: products.iter().map(|p| (*p).into()).collect(),
        kinds,
    }
}

fn broker_with(groups: Vec<ConsumerGroupConfig>, limits: BacklogLimits) -> Broker {
    let hub = HubConfig {
        consumer_groups: groups,
        backlog_limits: limits,
        ..HubConfig::default()
    };
    Broker::with(&["d1", "d2"], false, hub, ServerConfig::default())
}

/// The (topic, body) of what `consumer` got since the last look, settling each.
fn take(broker: &mut Broker, consumer: ConsumerId, settle: bool) -> Vec<(String, Vec<u8>)> {
    let (mine, others): (Vec<_>, Vec<_>) = std::mem::take(&mut broker.forwarded)
        .into_iter()
        .partition(|(c, _, _)| *c == consumer);
    broker.forwarded = others;
    mine.into_iter()
        .map(|(_, message, _)| {
            if settle {
                broker.hub.forward_settled(consumer, message.message_id);
            }
            (message.topic.to_string(), message.payload.to_vec())
        })
        .collect()
}

fn update(device: &str) -> String {
    format!("/{PK}/{device}/update")
}

#[test]
fn a_devices_messages_and_status_reach_a_consumer_and_leave_the_backlog_once_settled() {
    let mut broker = broker_with(
        vec![group("g1", &[], MessageKinds::ALL)],
        BacklogLimits::default(),
    );
    let consumer = broker.hub.attach_consumer("g1").unwrap();
    let (conn, _) = broker.connect_device("d1", true);
    broker.send(conn, publish(&update("d1"), "21.5", QoS::AtLeastOnce, 1));
    broker.output(conn);
    // Nothing without credit: it waits in the backlog.
    assert!(broker.forwarded.is_empty());
    let stats = &broker.hub.consumer_group_stats()[0];
    assert_eq!((stats.backlog, stats.in_flight), (2, 0));

    broker.hub.consumer_credit(consumer, 10);
    broker.pump();
    let got = take(&mut broker, consumer, true);
    assert_eq!(got.len(), 2);
    let (topic, status) = &got[0];
    assert_eq!(topic, &format!("/as/mqtt/status/{PK}/d1"));
    let status: Value = serde_json::from_slice(status).unwrap();
    assert_eq!(status["status"], "online");
    assert_eq!(status["deviceName"], "d1");
    assert_eq!(status["clientIp"], "");
    assert!(status["utcTime"].as_str().unwrap().ends_with('Z'));
    assert_eq!(got[1], (update("d1"), b"21.5".to_vec()));
    let stats = &broker.hub.consumer_group_stats()[0];
    assert_eq!((stats.backlog, stats.delivered, stats.settled), (0, 2, 2));

    broker.drop_transport(conn);
    let got = take(&mut broker, consumer, true);
    assert_eq!(got.len(), 1);
    let status: Value = serde_json::from_slice(&got[0].1).unwrap();
    assert_eq!(status["status"], "offline");
}

#[test]
fn consumers_of_a_group_share_and_every_group_gets_everything() {
    let mut broker = broker_with(
        vec![
            group("shared", &[], MessageKinds::UPSTREAM),
            group("audit", &[], MessageKinds::UPSTREAM),
            group("other-product", &["a1Other"], MessageKinds::ALL),
            group("status-only", &[], MessageKinds::STATUS),
        ],
        BacklogLimits::default(),
    );
    let a = broker.hub.attach_consumer("shared").unwrap();
    let b = broker.hub.attach_consumer("shared").unwrap();
    let audit = broker.hub.attach_consumer("audit").unwrap();
    let other = broker.hub.attach_consumer("other-product").unwrap();
    for consumer in [a, b, audit, other] {
        broker.hub.consumer_credit(consumer, 100);
    }
    assert!(broker.hub.attach_consumer("nobody").is_err());
    let (conn, _) = broker.connect_device("d1", true);
    for n in 0..10 {
        broker.send(
            conn,
            publish(&update("d1"), &n.to_string(), QoS::AtMostOnce, 0),
        );
    }
    let (got_a, got_b) = (take(&mut broker, a, true), take(&mut broker, b, true));
    assert_eq!((got_a.len(), got_b.len()), (5, 5), "shared in turn");
    assert_eq!(
        take(&mut broker, audit, true).len(),
        10,
        "each group gets everything"
    );
    assert!(
        take(&mut broker, other, true).is_empty(),
        "another product's group gets nothing"
    );
    let stats = broker.hub.consumer_group_stats();
    assert_eq!(
        stats[3].backlog, 1,
        "the status-only group holds the online status"
    );
}

#[test]
fn what_a_consumer_held_goes_to_the_next_when_it_goes_away_or_gives_it_back() {
    let mut broker = broker_with(
        vec![group("g", &[], MessageKinds::UPSTREAM)],
        BacklogLimits::default(),
    );
    let first = broker.hub.attach_consumer("g").unwrap();
    broker.hub.consumer_credit(first, 3);
    let (conn, _) = broker.connect_device("d1", true);
    for n in 0..5 {
        broker.send(
            conn,
            publish(&update("d1"), &format!("m{n}"), QoS::AtMostOnce, 0),
        );
    }
    // Three in flight to the first consumer (its credit), two waiting.
    let held: Vec<_> = std::mem::take(&mut broker.forwarded);
    assert_eq!(held.len(), 3);
    broker.hub.forward_settled(first, held[0].1.message_id);
    broker.hub.forward_released(first, held[1].1.message_id);
    let second = broker.hub.attach_consumer("g").unwrap();
    broker.hub.detach_consumer(first);
    broker.hub.consumer_credit(second, 10);
    broker.pump();
    let got: Vec<_> = std::mem::take(&mut broker.forwarded);
    let bodies: Vec<String> = got
        .iter()
        .map(|(_, m, _)| String::from_utf8(m.payload.to_vec()).unwrap())
        .collect();
    // The released and the held one again (marked as redeliveries), then the two waiting.
    assert_eq!(bodies, ["m2", "m1", "m3", "m4"]);
    let redelivered: Vec<bool> = got.iter().map(|(_, _, again)| *again).collect();
    assert_eq!(redelivered, [true, true, false, false]);
    let stats = &broker.hub.consumer_group_stats()[0];
    assert_eq!((stats.redelivered, stats.backlog), (2, 4));
}

#[test]
fn a_full_or_old_backlog_drops_its_oldest_waiting_messages_and_counts_them() {
    let limits = BacklogLimits {
        max_messages: 3,
        max_bytes: 1 << 20,
        max_age: Some(Duration::from_secs(60)),
    };
    let mut broker = broker_with(vec![group("g", &[], MessageKinds::UPSTREAM)], limits);
    let consumer = broker.hub.attach_consumer("g").unwrap();
    let (conn, _) = broker.connect_device("d1", true);
    for n in 0..5 {
        broker.send(
            conn,
            publish(&update("d1"), &format!("m{n}"), QoS::AtMostOnce, 0),
        );
    }
    let stats = &broker.hub.consumer_group_stats()[0];
    assert_eq!((stats.backlog, stats.dropped), (3, 2));
    broker.advance(Duration::from_secs(30));
    broker.send(conn, publish(&update("d1"), "late", QoS::AtMostOnce, 0));
    broker.advance(Duration::from_secs(31));
    // The three from before are a minute old: gone; the late one waits.
    let stats = &broker.hub.consumer_group_stats()[0];
    assert_eq!((stats.backlog, stats.dropped), (1, 5));
    broker.hub.consumer_credit(consumer, 10);
    broker.pump();
    assert_eq!(
        take(&mut broker, consumer, true),
        [(update("d1"), b"late".to_vec())]
    );
}

#[test]
fn the_backlog_survives_a_restart_and_leaves_the_store_when_settled() {
    let hub = HubConfig {
        consumer_groups: vec![
            group("kept", &[], MessageKinds::UPSTREAM),
            group("idle", &[], MessageKinds::UPSTREAM),
        ],
        ..HubConfig::default()
    };
    let mut broker = Broker::durable(&["d1"], hub);
    let (device, _) = broker.connect_device("d1", true);
    broker.send(
        device,
        publish(&update("d1"), "before", QoS::AtLeastOnce, 1),
    );
    broker.output(device);
    let consumer = broker.hub.attach_consumer("kept").unwrap();
    broker.hub.consumer_credit(consumer, 1);
    broker.pump();
    // Handed out, not settled: still in the backlog, in the store too.
    assert_eq!(broker.forwarded.len(), 1);
    let id = broker.forwarded[0].1.message_id;
    assert_eq!(broker.store.as_ref().unwrap().backlogs.len(), 2);

    broker.restart(Duration::from_secs(5));
    let stats = broker.hub.consumer_group_stats();
    assert_eq!(stats[0].backlog, 1);
    let consumer = broker.hub.attach_consumer("kept").unwrap();
    broker.hub.consumer_credit(consumer, 1);
    broker.pump();
    let again = broker.forwarded.last().unwrap();
    assert_eq!(
        (again.1.message_id, again.1.topic.as_str()),
        (id, &update("d1")[..])
    );
    broker.hub.forward_settled(consumer, id);
    broker.pump();
    let kept: Vec<_> = broker
        .store
        .as_ref()
        .unwrap()
        .backlogs
        .keys()
        .cloned()
        .collect();
    // The idle group's copy waits for its consumers.
    assert_eq!(kept, [("idle".to_owned(), id)]);
}
