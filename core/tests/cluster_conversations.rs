//! Several hubs as the nodes of one cluster, with a manual clock: a device's session follows
//! it from node to node, and a consumer group's messages go to the node where its consumers
//! are. The test plays the cluster's adapter: it keeps the table of owners (the key-value
//! bucket of `aliot-cluster`), carries each claim's hand-over between hubs, and carries what a
//! relay is handed to the other node.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use aliot_auth::DeviceIdentity;
use aliot_core::codec::{Packet, PublishQos, QoS};
use aliot_core::hub::HubConfig;
use aliot_core::server::ServerConfig;
use support::{Broker, PK, identity, puback, publishes, subscribe};

/// Nodes and the owners' table.
struct Cluster {
    nodes: Vec<Broker>,
    owners: HashMap<DeviceIdentity, usize>,
    /// Claims whose hand-over the test has carried: (device, from node, to node).
    moves: Vec<(DeviceIdentity, usize, usize)>,
}

impl Cluster {
    fn new(nodes: usize) -> Self {
        let config = HubConfig {
            cluster: true,
            session_expiry: Some(Duration::from_secs(600)),
            ..HubConfig::default()
        };
        Cluster {
            nodes: (0..nodes)
                .map(|_| Broker::with(&["d1", "d2"], true, config.clone(), ServerConfig::default()))
                .collect(),
            owners: HashMap::new(),
            moves: Vec::new(),
        }
    }

    /// Does what the adapter does with each node's claims and releases, until none is left.
    fn settle(&mut self) {
        loop {
            let Some((node, (device, claim))) =
                self.nodes.iter_mut().enumerate().find_map(|(i, n)| {
                    (!n.ownership.is_empty()).then(|| (i, n.ownership.remove(0)))
                })
            else {
                return;
            };
            match claim {
                Some(clean) => {
                    let previous = self.owners.insert(device.clone(), node);
                    if let Some(previous) = previous.filter(|p| *p != node) {
                        let from = &mut self.nodes[previous];
                        let now = from.now;
                        let handed = from.hub.hand_over(&device, clean, now);
                        from.pump();
                        if let Some(handed) = handed {
                            let to = &mut self.nodes[node];
                            let now = to.now;
                            to.hub.take_over(&device, handed, now);
                            to.pump();
                        }
                        self.moves.push((device, previous, node));
                    }
                }
                None => {
                    if self.owners.get(&device) == Some(&node) {
                        self.owners.remove(&device);
                    }
                }
            }
        }
    }
}

fn get_topic() -> String {
    format!("/{PK}/d1/user/get")
}

/// Each node's server-side publish to d1 on its `get` topic.
fn publish_to_d1(node: &mut Broker, payload: &'static str) -> aliot_core::hub::DeviceDelivery {
    let topic = aliot_topic::TopicName::new(&get_topic(), &Default::default()).unwrap();
    let now = node.now;
    let delivery = node.hub.publish_to_device(
        &identity("d1"),
        aliot_core::Message::new(topic, payload, QoS::AtLeastOnce),
        now,
    );
    node.pump();
    delivery
}

fn payloads(packets: &[Packet]) -> Vec<String> {
    publishes(packets)
        .iter()
        .map(|p| String::from_utf8_lossy(&p.payload).into_owned())
        .collect()
}

#[test]
fn a_kept_session_moves_with_its_queue_to_the_node_its_device_connects_to() {
    let mut cluster = Cluster::new(2);
    let a = &mut cluster.nodes[0];
    let (conn, present) = a.connect_device("d1", false);
    assert!(!present);
    a.send(conn, subscribe(1, &[(&get_topic(), QoS::AtLeastOnce)]));
    a.output(conn);
    a.drop_transport(conn);
    for payload in ["one", "two", "three"] {
        assert_eq!(
            publish_to_d1(a, payload),
            aliot_core::hub::DeviceDelivery::Queued
        );
    }
    cluster.settle();
    assert_eq!(cluster.owners[&identity("d1")], 0);

    // d1 comes back on node B: B claims it, A hands the session over.
    let b = &mut cluster.nodes[1];
    let (conn, present) = b.connect_device("d1", false);
    assert!(
        !present,
        "B never had the session: its CONNACK says so (ours)"
    );
    cluster.settle();
    assert_eq!(cluster.owners[&identity("d1")], 1);
    assert_eq!(cluster.moves, [(identity("d1"), 0, 1)]);
    let b = &mut cluster.nodes[1];
    let delivered = b.output(conn);
    assert_eq!(payloads(&delivered), ["one", "two", "three"]);
    for p in publishes(&delivered) {
        if let PublishQos::AtLeastOnce(id) = p.qos {
            b.send(conn, puback(id));
        }
    }
    // The subscription came along: B's own publish reaches d1 now.
    assert_eq!(
        publish_to_d1(b, "four"),
        aliot_core::hub::DeviceDelivery::Sent
    );
    assert_eq!(payloads(&b.output(conn)), ["four"]);
    assert_eq!(b.hub.counters().sessions_taken_over, 1);

    // A keeps nothing, counted nothing as lost, and released nothing (B owns it).
    let a = &cluster.nodes[0];
    assert!(!a.hub.holds_session(&identity("d1")));
    assert_eq!(a.hub.counters().sessions_handed_over, 1);
    assert_eq!(a.hub.counters().dropped.session_discarded, 0);
    assert!(a.ownership.is_empty());
}

#[test]
fn a_connection_on_the_old_node_is_taken_over_and_what_it_had_in_flight_moves() {
    let mut cluster = Cluster::new(2);
    let a = &mut cluster.nodes[0];
    let (old, _) = a.connect_device("d1", false);
    a.send(old, subscribe(1, &[(&get_topic(), QoS::AtLeastOnce)]));
    a.output(old);
    // Sent to the device on A, never acknowledged.
    publish_to_d1(a, "unacked");
    assert_eq!(payloads(&a.output(old)), ["unacked"]);
    cluster.settle();

    let b = &mut cluster.nodes[1];
    let (new, _) = b.connect_device("d1", false);
    cluster.settle();
    let a = &mut cluster.nodes[0];
    assert!(a.is_closed(old));
    assert!(
        a.close_reason(old).unwrap().contains("taken over"),
        "{:?}",
        a.close_reason(old)
    );
    assert_eq!(a.hub.counters().takeovers, 1);
    // Sent once here, once there: counted as a possible duplicate.
    assert_eq!(a.hub.counters().messages_handed_again, 1);
    let b = &mut cluster.nodes[1];
    assert_eq!(payloads(&b.output(new)), ["unacked"]);
}

#[test]
fn a_clean_session_on_the_new_node_discards_what_the_old_one_kept() {
    let mut cluster = Cluster::new(2);
    let a = &mut cluster.nodes[0];
    let (conn, _) = a.connect_device("d1", false);
    a.send(conn, subscribe(1, &[(&get_topic(), QoS::AtLeastOnce)]));
    a.drop_transport(conn);
    publish_to_d1(a, "stale");
    cluster.settle();

    let b = &mut cluster.nodes[1];
    let (conn, present) = b.connect_device("d1", true);
    assert!(!present);
    cluster.settle();
    let b = &mut cluster.nodes[1];
    assert!(publishes(&b.output(conn)).is_empty());
    assert_eq!(
        publish_to_d1(b, "new"),
        aliot_core::hub::DeviceDelivery::NotSubscribed,
        "the old subscriptions went with the old session"
    );
    let a = &cluster.nodes[0];
    assert!(!a.hub.holds_session(&identity("d1")));
    assert_eq!(a.hub.counters().dropped.session_discarded, 1);
}

#[test]
fn a_session_that_ends_is_released_and_one_kept_is_released_when_it_expires() {
    let mut cluster = Cluster::new(1);
    let node = &mut cluster.nodes[0];
    let (clean, _) = node.connect_device("d1", true);
    let (kept, _) = node.connect_device("d2", false);
    assert_eq!(
        node.ownership,
        [(identity("d1"), Some(true)), (identity("d2"), Some(false))]
    );
    node.ownership.clear();
    node.drop_transport(clean);
    node.drop_transport(kept);
    assert_eq!(
        node.ownership,
        [(identity("d1"), None)],
        "d2's session stays"
    );
    node.ownership.clear();
    node.advance(Duration::from_secs(601));
    assert_eq!(node.ownership, [(identity("d2"), None)]);
}

#[test]
fn a_reconnect_on_the_same_node_claims_again_without_a_release_between() {
    let mut cluster = Cluster::new(1);
    let node = &mut cluster.nodes[0];
    let (first, _) = node.connect_device("d1", true);
    let (second, _) = node.connect_device("d1", true);
    assert!(node.is_closed(first));
    assert!(!node.is_closed(second));
    assert_eq!(
        node.ownership,
        [(identity("d1"), Some(true)), (identity("d1"), Some(true))]
    );
}

#[test]
fn a_hub_outside_a_cluster_says_nothing_of_ownership() {
    let mut node = Broker::new(&["d1"]);
    let (conn, _) = node.connect_device("d1", true);
    node.drop_transport(conn);
    assert!(node.ownership.is_empty());
    // A take-over for a device without a session here is counted as discarded.
    let now = node.now;
    let moved = node.hub.take_over(
        &identity("d1"),
        aliot_core::hub::SessionHandOver {
            subscriptions: Vec::new(),
            messages: vec![aliot_core::Message::new(
                aliot_topic::TopicName::new(&get_topic(), &Default::default()).unwrap(),
                "late",
                QoS::AtLeastOnce,
            )],
        },
        now,
    );
    assert_eq!(moved, 0);
    assert_eq!(node.hub.counters().dropped.session_discarded, 1);
}

/// Two nodes whose group `g` takes every device message (in a cluster, durable).
fn nodes_with_a_group() -> (Broker, Broker) {
    let config = HubConfig {
        cluster: true,
        consumer_groups: vec![aliot_core::hub::ConsumerGroupConfig {
            id: "g".into(),
            products: Vec::new(),
            kinds: aliot_core::hub::MessageKinds::UPSTREAM,
        }],
        ..HubConfig::default()
    };
    (
        Broker::durable(&["d1", "d2"], config.clone()),
        Broker::durable(&["d1", "d2"], config),
    )
}

#[test]
fn a_group_without_consumers_on_a_node_is_relayed_to_the_node_that_has_them() {
    let (mut a, mut b) = nodes_with_a_group();
    // Node A's relay waits with credit; node B gets the group's first consumer.
    let relay = a.hub.attach_relay("g").unwrap();
    a.hub.consumer_credit(relay, 10);
    let consumer = b.hub.attach_consumer("g").unwrap();
    b.hub.consumer_credit(consumer, 10);
    b.pump();
    a.pump();
    assert_eq!(b.consumers_here, [("g".into(), true)]);
    assert!(a.consumers_here.is_empty(), "a relay is no consumer here");

    // A device on node A reports: A has no consumer of g, so its relay takes the message.
    let (conn, _) = a.connect_device("d1", true);
    a.send(
        conn,
        support::publish(&format!("/{PK}/d1/update"), "21.5", QoS::AtLeastOnce, 1),
    );
    a.output(conn);
    let (to, message, _) = a.forwarded.pop().expect("handed to the relay");
    assert_eq!(to, relay);
    // The adapter carries it to node B, which keeps it and hands it to its consumer...
    let now = b.now;
    let id = b
        .hub
        .accept_relayed(
            "g",
            message.topic.clone(),
            message.payload.clone(),
            message.generate_time,
            now,
        )
        .unwrap();
    b.pump();
    let (to, got, _) = b.forwarded.pop().expect("handed to B's consumer");
    assert_eq!((to, got.message_id), (consumer, id));
    assert_eq!(&got.payload[..], b"21.5");
    assert_eq!(b.hub.consumer_group_stats()[0].relayed_in, 1);
    assert!(
        b.store
            .as_ref()
            .unwrap()
            .backlogs
            .contains_key(&("g".to_owned(), id)),
        "kept in B's store before the relay settles it on A"
    );
    // ...and node A's relay settles it: it leaves A's backlog and store.
    a.hub.forward_settled(relay, message.message_id);
    a.pump();
    assert_eq!(a.hub.consumer_group_stats()[0].backlog, 0);
    assert!(a.store.as_ref().unwrap().backlogs.is_empty());
    assert!(
        b.hub
            .accept_relayed(
                "nobody",
                got.topic.clone(),
                Default::default(),
                got.generate_time,
                now
            )
            .is_err()
    );
}

#[test]
fn a_relay_takes_nothing_while_its_group_has_a_consumer_here() {
    let (mut a, _) = nodes_with_a_group();
    let relay = a.hub.attach_relay("g").unwrap();
    a.hub.consumer_credit(relay, 10);
    let local = a.hub.attach_consumer("g").unwrap();
    a.hub.consumer_credit(local, 10);
    a.pump();
    assert_eq!(a.consumers_here, [("g".into(), true)]);
    let stats = &a.hub.consumer_group_stats()[0];
    assert_eq!((stats.consumers, stats.relays), (1, 1));

    let (conn, _) = a.connect_device("d1", true);
    for n in 0..3 {
        a.send(
            conn,
            support::publish(
                &format!("/{PK}/d1/update"),
                &format!("{n}"),
                QoS::AtLeastOnce,
                n + 1,
            ),
        );
    }
    a.output(conn);
    assert_eq!(a.forwarded.len(), 3);
    assert!(a.forwarded.iter().all(|(to, _, _)| *to == local));

    // The consumer goes away holding them: they go to the relay now, oldest first.
    a.forwarded.clear();
    a.hub.detach_consumer(local);
    a.pump();
    assert_eq!(a.consumers_here.last(), Some(&("g".into(), false)));
    let bodies: Vec<_> = a
        .forwarded
        .iter()
        .map(|(to, message, redelivery)| {
            assert_eq!((*to, *redelivery), (relay, true));
            String::from_utf8(message.payload.to_vec()).unwrap()
        })
        .collect();
    assert_eq!(bodies, ["0", "1", "2"]);
}
