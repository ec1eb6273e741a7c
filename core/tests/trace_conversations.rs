//! What an operator's watcher sees through the sans-IO broker: the trace of messages in and
//! out of devices with their connects and disconnects, and where each device was last seen.
//! Whole conversations with a manual clock.

mod support;

use aliot_core::codec::QoS;
use aliot_core::hub::{HubConfig, TraceDirection, TraceFilter};
use aliot_core::server::ServerConfig;
use aliot_services::UnixMillis;
use support::{Broker, PK, identity, publish, subscribe};

fn traced_broker(capacity: usize) -> Broker {
    let hub = HubConfig {
        trace_capacity: capacity,
        ..HubConfig::default()
    };
    Broker::with(&["d1", "d2"], false, hub, ServerConfig::default())
}

fn of(device: &str) -> TraceFilter {
    TraceFilter {
        product_key: Some(PK.into()),
        device_name: Some(device.into()),
        ..TraceFilter::default()
    }
}

#[test]
fn a_devices_connect_publish_delivery_and_disconnect_are_traced_in_order() {
    let mut broker = traced_broker(100);
    broker.hub.set_wall_clock(UnixMillis(1_000));
    let (d1, _) = broker.connect_device("d1", true);
    broker.send(
        d1,
        subscribe(1, &[(&format!("/{PK}/d1/user/get"), QoS::AtLeastOnce)]),
    );
    broker.send(
        d1,
        publish(
            &format!("/{PK}/d1/user/update"),
            "21.5",
            QoS::AtLeastOnce,
            2,
        ),
    );
    broker.output(d1);
    let (d2, _) = broker.connect_device("d2", true);
    // The server's publish to d1 reaches it: an entry going to d1.
    broker.hub.set_wall_clock(UnixMillis(2_000));
    let topic =
        aliot_topic::TopicName::new(&format!("/{PK}/d1/user/get"), &Default::default()).unwrap();
    broker.hub.publish(
        aliot_core::Message::new(topic, &b"on"[..], QoS::AtLeastOnce),
        broker.now,
    );
    broker.pump();
    broker.output(d1);
    broker.drop_transport(d1);

    let page = broker.hub.trace_after(0, &of("d1"), 100);
    let seen: Vec<(TraceDirection, Option<String>, Vec<u8>)> = page
        .entries
        .iter()
        .map(|e| {
            (
                e.direction,
                e.topic.as_ref().map(|t| t.as_str().to_owned()),
                e.payload.to_vec(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (TraceDirection::Connected, None, vec![]),
            (
                TraceDirection::FromClient,
                Some(format!("/{PK}/d1/user/update")),
                b"21.5".to_vec()
            ),
            (
                TraceDirection::ToClient,
                Some(format!("/{PK}/d1/user/get")),
                b"on".to_vec()
            ),
            (TraceDirection::Disconnected, None, vec![]),
        ]
    );
    assert_eq!(page.missed, 0);
    // d2's connect is in the whole trace, between d1's entries; not in d1's.
    let all = broker.hub.trace_after(0, &TraceFilter::default(), 100);
    assert_eq!(all.entries.len(), 5);
    assert_eq!(all.last_seq, 5);
    assert_eq!(broker.hub.trace_last_seq(), 5, "where a new watcher starts");
    assert!(
        broker
            .hub
            .trace_after(all.last_seq, &TraceFilter::default(), 100)
            .entries
            .is_empty()
    );

    let d1_seen = broker.hub.device_presence(&identity("d1")).unwrap();
    assert!(!d1_seen.online);
    assert_eq!(d1_seen.online_since, Some(UnixMillis(1_000)));
    assert_eq!(d1_seen.offline_since, Some(UnixMillis(2_000)));
    assert!(broker.hub.device_presence(&identity("d2")).unwrap().online);
    let _ = d2;
}

#[test]
fn without_a_capacity_nothing_is_traced_nor_kept_per_device() {
    let mut broker = traced_broker(0);
    let (d1, _) = broker.connect_device("d1", true);
    broker.send(
        d1,
        publish(&format!("/{PK}/d1/user/update"), "x", QoS::AtMostOnce, 0),
    );
    let page = broker.hub.trace_after(0, &TraceFilter::default(), 100);
    assert!(page.entries.is_empty());
    assert_eq!(page.last_seq, 0);
    assert_eq!(broker.hub.device_presence(&identity("d1")), None);
}

#[test]
fn an_rrpc_answer_is_traced_from_the_device() {
    let mut broker = traced_broker(100);
    let (d1, _) = broker.connect_device("d1", true);
    let requests = format!("/sys/{PK}/d1/rrpc/request/+");
    broker.send(d1, subscribe(1, &[(&requests, QoS::AtMostOnce)]));
    broker.output(d1);
    let id = broker
        .hub
        .rrpc_call(
            &identity("d1"),
            bytes::Bytes::from_static(b"ping"),
            std::time::Duration::from_secs(5),
            None,
            broker.now,
        )
        .unwrap();
    broker.pump();
    broker.output(d1);
    let answer = format!("/sys/{PK}/d1/rrpc/response/{}", id.0);
    broker.send(d1, publish(&answer, "pong", QoS::AtMostOnce, 0));
    broker.pump();
    let entries = broker.hub.trace_after(0, &of("d1"), 100).entries;
    let last = entries.last().unwrap();
    assert_eq!(last.direction, TraceDirection::FromClient);
    assert_eq!(last.topic.as_ref().unwrap().as_str(), answer);
    assert_eq!(&last.payload[..], b"pong");
    assert!(
        entries
            .iter()
            .any(|e| e.direction == TraceDirection::ToClient && &e.payload[..] == b"ping"),
        "the request went out"
    );
}

#[test]
fn a_kept_sessions_device_is_seen_offline_after_a_restart() {
    let hub = HubConfig {
        trace_capacity: 10,
        ..HubConfig::default()
    };
    let mut broker = Broker::durable(&["d1"], hub);
    let (d1, _) = broker.connect_device("d1", false);
    broker.advance(std::time::Duration::from_secs(3));
    broker.drop_transport(d1);
    let before = broker.hub.device_presence(&identity("d1")).unwrap();
    let went = before.offline_since.expect("offline");
    let restored = broker.restart(std::time::Duration::from_secs(60));
    assert_eq!(restored.sessions, 1);
    let seen = broker
        .hub
        .device_presence(&identity("d1"))
        .expect("the kept session's device");
    assert!(!seen.online);
    assert_eq!(
        seen.offline_since,
        Some(went),
        "when it went, not the restart"
    );
}
