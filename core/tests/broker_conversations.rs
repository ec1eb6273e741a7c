//! Whole conversations between devices and the broker's sans-IO core (server connections and
//! the hub), in memory, with a manual clock.

mod support;

use std::num::NonZeroU16;
use std::sync::Arc;
use std::time::Duration;

use aliot_core::ClientKey;
use aliot_core::Message;
use aliot_core::codec::{
    ConnAck, ConnectReturnCode, Packet, PublishQos, QoS, SubAck, SubAckReturnCode, Utf8Bytes, Will,
};
use aliot_core::hub::{ConnId, DeviceDelivery, HubConfig, InvalidRrpcCall, RrpcOutcome};
use aliot_core::server::ServerConfig;
use aliot_topic::TopicName;
use bytes::Bytes;
use support::*;

fn connack(packets: &[Packet]) -> ConnAck {
    match packets {
        [Packet::ConnAck(ack)] => *ack,
        other => panic!("expected exactly one CONNACK, got {other:?}"),
    }
}

fn suback_codes(packets: &[Packet]) -> Vec<SubAckReturnCode> {
    match packets {
        [Packet::SubAck(SubAck { return_codes, .. })] => return_codes.clone(),
        other => panic!("expected exactly one SUBACK, got {other:?}"),
    }
}

fn topic(s: &str) -> TopicName {
    TopicName::new(s, &Default::default()).unwrap()
}

// ---------------------------------------------------------------------------------------------
// CONNECT: success and every refusal code

#[test]
fn a_signed_device_connects_and_gets_a_fresh_session() {
    let mut broker = Broker::new(&["dev-1"]);
    let (conn, present) = broker.connect_device("dev-1", true);
    assert!(!present);
    assert!(!broker.is_closed(conn));
    assert!(broker.hub.is_online(&identity("dev-1")));
    assert_eq!(broker.hub.counters().connections_accepted, 1);
}

#[test]
fn over_tls_psk_only_the_device_the_handshake_named_may_connect() {
    let mut broker = Broker::new(&["dev-1", "dev-2"]);
    // The handshake's key: the registry's device, derived from its secret; none for a
    // stranger.
    let named = aliot_auth::PskIdentity::new(identity("dev-1"), "2524608000000");
    let key = broker
        .authenticator()
        .psk_key(&named)
        .expect("a known device");
    assert_eq!(key, named.key(&secret("dev-1")));
    let stranger = aliot_auth::PskIdentity::new(identity("dev-9"), "2524608000000");
    assert!(broker.authenticator().psk_key(&stranger).is_none());

    broker.tls = true;
    broker.psk_device = Some(Arc::new(identity("dev-1")));
    let (conn, _) = broker.connect_device("dev-1", true);
    assert!(!broker.is_closed(conn));

    // Another device's signed CONNECT over dev-1's handshake.
    let other = broker.accept();
    broker.send(other, Packet::from(signed_connect("dev-2", true, 60)));
    let ack = connack(&broker.output(other));
    assert_eq!(ack.code, ConnectReturnCode::NotAuthorized);
    assert!(broker.is_closed(other));
    let reason = broker.close_reason(other).unwrap().to_string();
    assert!(reason.contains("pre-shared key"), "{reason}");
    assert!(!broker.hub.is_online(&identity("dev-2")));
}

fn refused_with(connect_bytes: &[u8]) -> (ConnectReturnCode, String) {
    let mut broker = Broker::new(&["dev-1"]);
    let conn = broker.accept();
    broker.input(conn, connect_bytes);
    let ack = connack(&broker.output(conn));
    assert!(!ack.session_present);
    assert!(broker.is_closed(conn), "a refused connection is closed");
    let reason = broker.close_reason(conn).unwrap().to_string();
    assert_eq!(
        broker.hub.counters().connections_refused[ack.code as usize],
        1
    );
    (ack.code, reason)
}

fn encode(packet: Packet) -> Vec<u8> {
    let mut buf = bytes::BytesMut::new();
    packet.encode(&mut buf).unwrap();
    buf.to_vec()
}

#[test]
fn an_unknown_protocol_level_is_refused_with_code_1() {
    let mut bytes = encode(Packet::from(signed_connect("dev-1", true, 60)));
    // Protocol level byte of "MQTT" level 4 -> 5 (MQTT 5): after 2 header bytes, 2+4 name bytes.
    let level_at = bytes.iter().position(|b| *b == b'T').unwrap() + 2;
    assert_eq!(bytes[level_at], 4);
    bytes[level_at] = 5;
    let (code, reason) = refused_with(&bytes);
    assert_eq!(code, ConnectReturnCode::UnacceptableProtocolVersion);
    assert!(reason.contains("protocol"), "{reason}");
}

#[test]
fn keepalive_below_30_seconds_is_refused_with_code_2() {
    for keep_alive in [0, 10, 29] {
        let (code, reason) = refused_with(&encode(Packet::from(signed_connect(
            "dev-1", true, keep_alive,
        ))));
        assert_eq!(code, ConnectReturnCode::IdentifierRejected);
        assert!(reason.contains("keepalive"), "{reason}");
    }
}

#[test]
fn a_malformed_client_id_is_refused_with_code_2() {
    let mut connect = signed_connect("dev-1", true, 60);
    // Missing the closing '|'.
    let id = connect.client_id.as_str().trim_end_matches('|').to_string();
    connect.client_id = Utf8Bytes::try_from(id).unwrap();
    let (code, _) = refused_with(&encode(Packet::from(connect)));
    assert_eq!(code, ConnectReturnCode::IdentifierRejected);
}

#[test]
fn a_username_without_product_key_is_refused_with_code_4() {
    let mut connect = signed_connect("dev-1", true, 60);
    connect.username = Some(Utf8Bytes::try_from("dev-1").unwrap());
    let (code, _) = refused_with(&encode(Packet::from(connect)));
    assert_eq!(code, ConnectReturnCode::BadUserNameOrPassword);
}

#[test]
fn a_wrong_signature_is_refused_with_code_5() {
    let mut connect = signed_connect("dev-1", true, 60);
    connect.password = Some(Bytes::from_static(
        b"0000000000000000000000000000000000000000000000000000000000000000",
    ));
    let (code, reason) = refused_with(&encode(Packet::from(connect)));
    assert_eq!(code, ConnectReturnCode::NotAuthorized);
    assert!(reason.contains("authentication"), "{reason}");
}

#[test]
fn an_unknown_device_is_refused_with_code_5() {
    let (code, _) = refused_with(&encode(Packet::from(signed_connect("dev-9", true, 60))));
    assert_eq!(code, ConnectReturnCode::NotAuthorized);
}

#[test]
fn a_will_is_refused_with_code_5() {
    let mut connect = signed_connect("dev-1", true, 60);
    connect.will = Some(Will {
        topic: Utf8Bytes::try_from("/a1TestProd/dev-1/update").unwrap(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtMostOnce,
        retain: false,
    });
    let (code, reason) = refused_with(&encode(Packet::from(connect)));
    assert_eq!(code, ConnectReturnCode::NotAuthorized);
    assert!(reason.contains("will"), "{reason}");
}

#[test]
fn a_keepalive_above_1200_is_accepted_and_enforced_as_1200() {
    let mut broker = Broker::new(&["dev-1"]);
    let conn = broker.accept();
    broker.send(conn, Packet::from(signed_connect("dev-1", true, 3600)));
    assert_eq!(
        connack(&broker.output(conn)).code,
        ConnectReturnCode::Accepted
    );
    // 1.5 x 1200 s = 1800 s of silence closes it, not 1.5 x 3600.
    broker.advance(Duration::from_secs(1799));
    assert!(!broker.is_closed(conn));
    broker.advance(Duration::from_secs(2));
    assert!(broker.is_closed(conn));
    assert!(broker.close_reason(conn).unwrap().contains("keepalive"));
}

#[test]
fn a_first_packet_other_than_connect_closes_the_connection() {
    let mut broker = Broker::new(&[]);
    let conn = broker.accept();
    broker.send(conn, Packet::PingReq);
    assert!(broker.output(conn).is_empty());
    assert!(broker.is_closed(conn));
    assert!(broker.close_reason(conn).unwrap().contains("not CONNECT"));
}

#[test]
fn a_connection_that_never_sends_connect_is_closed_at_the_deadline() {
    let mut broker = Broker::new(&[]);
    let conn = broker.accept();
    broker.advance(Duration::from_secs(9));
    assert!(!broker.is_closed(conn));
    broker.advance(Duration::from_secs(1));
    assert!(broker.is_closed(conn));
    assert_eq!(broker.hub.counters().closed.connect_timeout, 1);
}

#[test]
fn open_mode_admits_generic_clients_but_still_checks_platform_credentials() {
    let mut broker = Broker::open(&["dev-1"]);
    let generic = broker.accept();
    broker.send(
        generic,
        Packet::from(plain_connect("mosquitto-sub-1", true)),
    );
    assert_eq!(
        connack(&broker.output(generic)).code,
        ConnectReturnCode::Accepted
    );
    // A generic client may subscribe to anything in open mode.
    broker.send(generic, subscribe(1, &[("#", QoS::AtLeastOnce)]));
    assert_eq!(
        suback_codes(&broker.output(generic)),
        [SubAckReturnCode::Success(QoS::AtLeastOnce)]
    );

    // Platform credentials with a wrong signature are still refused.
    let mut connect = signed_connect("dev-1", true, 60);
    connect.password = Some(Bytes::from_static(b"00"));
    let device = broker.accept();
    broker.send(device, Packet::from(connect));
    assert_ne!(
        connack(&broker.output(device)).code,
        ConnectReturnCode::Accepted
    );
}

#[test]
fn open_mode_refuses_an_empty_client_id_that_asks_to_keep_a_session() {
    let mut broker = Broker::open(&[]);
    let conn = broker.accept();
    broker.send(conn, Packet::from(plain_connect("", false)));
    assert_eq!(
        connack(&broker.output(conn)).code,
        ConnectReturnCode::IdentifierRejected
    );
    // Two anonymous clean clients do not take each other over.
    let a = broker.accept();
    broker.send(a, Packet::from(plain_connect("", true)));
    let b = broker.accept();
    broker.send(b, Packet::from(plain_connect("", true)));
    assert_eq!(connack(&broker.output(a)).code, ConnectReturnCode::Accepted);
    assert_eq!(connack(&broker.output(b)).code, ConnectReturnCode::Accepted);
    assert!(!broker.is_closed(a) && !broker.is_closed(b));
}

// ---------------------------------------------------------------------------------------------
// Profile rules after CONNECT

#[test]
fn retain_is_refused_by_closing_the_connection() {
    let mut broker = Broker::new(&["dev-1"]);
    let (conn, _) = broker.connect_device("dev-1", true);
    let Packet::Publish(mut p) = publish("/a1TestProd/dev-1/update", "x", QoS::AtMostOnce, 0)
    else {
        unreachable!()
    };
    p.retain = true;
    broker.send(conn, Packet::Publish(p));
    assert!(broker.is_closed(conn));
    assert!(broker.close_reason(conn).unwrap().contains("retain"));
}

#[test]
fn qos_2_is_refused_by_closing_the_connection() {
    let mut broker = Broker::new(&["dev-1"]);
    let (conn, _) = broker.connect_device("dev-1", true);
    // PUBLISH QoS 2, topic "/a", packet id 1.
    broker.input(conn, &[0x34, 0x05, 0x00, 0x02, b'/', b'a', 0x00, 0x01][..7]);
    broker.input(conn, &[0x01]);
    assert!(broker.is_closed(conn));
    assert_eq!(broker.hub.counters().closed.protocol_violation, 1);
    // PUBREL on another connection: refused as well.
    let (other, _) = broker.connect_device("dev-1", true);
    broker.input(other, &[0x62, 0x02, 0x00, 0x01]);
    assert!(broker.is_closed(other));
}

#[test]
fn a_packet_over_the_size_limit_closes_the_connection_before_it_is_buffered() {
    let config = ServerConfig {
        max_packet_size: 1024,
        ..ServerConfig::default()
    };
    let mut broker = Broker::with(&["dev-1"], false, HubConfig::default(), config);
    let (conn, _) = broker.connect_device("dev-1", true);
    // A PUBLISH header claiming 100 MB: refused from the fixed header alone.
    broker.input(conn, &[0x30, 0x80, 0x80, 0x80, 0x30]);
    assert!(broker.is_closed(conn));
}

#[test]
fn ping_keeps_a_connection_alive_for_twenty_minutes_and_silence_ends_it() {
    let mut broker = Broker::new(&["dev-1"]);
    let (conn, _) = broker.connect_device("dev-1", true);
    for _ in 0..20 {
        broker.advance(Duration::from_secs(60));
        broker.send(conn, Packet::PingReq);
        assert_eq!(broker.output(conn), [Packet::PingResp]);
    }
    assert!(!broker.is_closed(conn));
    // keepalive 60 s: silent for 89 s is fine, 90 s is not.
    broker.advance(Duration::from_secs(89));
    assert!(!broker.is_closed(conn));
    broker.advance(Duration::from_secs(1));
    assert!(broker.is_closed(conn));
    assert_eq!(broker.hub.counters().closed.keep_alive_timeout, 1);
    assert!(!broker.hub.is_online(&identity("dev-1")));
}

// ---------------------------------------------------------------------------------------------
// ACL

#[test]
fn a_device_cannot_subscribe_to_another_devices_topics() {
    let mut broker = Broker::new(&["dev-1", "dev-2"]);
    let (conn, _) = broker.connect_device("dev-1", true);
    broker.send(
        conn,
        subscribe(
            7,
            &[
                ("/a1TestProd/dev-1/user/get", QoS::AtLeastOnce),
                ("/a1TestProd/dev-2/user/get", QoS::AtLeastOnce),
                ("/a1TestProd/+/user/get", QoS::AtMostOnce),
                ("/sys/a1TestProd/#", QoS::AtMostOnce),
                ("/sys/a1TestProd/dev-1/thing/#", QoS::ExactlyOnce),
            ],
        ),
    );
    assert_eq!(
        suback_codes(&broker.output(conn)),
        [
            SubAckReturnCode::Success(QoS::AtLeastOnce),
            SubAckReturnCode::Failure,
            SubAckReturnCode::Failure,
            SubAckReturnCode::Failure,
            // Requested QoS 2 is granted as QoS 1.
            SubAckReturnCode::Success(QoS::AtLeastOnce),
        ]
    );
    assert_eq!(broker.hub.counters().subscribe_denied, 3);
}

#[test]
fn a_publish_to_another_devices_topic_is_dropped_but_acknowledged() {
    let mut broker = Broker::new(&["dev-1", "dev-2"]);
    let (victim, _) = broker.connect_device("dev-2", true);
    broker.send(
        victim,
        subscribe(1, &[("/a1TestProd/dev-2/user/get", QoS::AtLeastOnce)]),
    );
    broker.output(victim);

    let (attacker, _) = broker.connect_device("dev-1", true);
    // dev-1 may not publish on dev-2's topic, nor on a sub-only topic of its own.
    broker.send(
        attacker,
        publish("/a1TestProd/dev-2/user/get", "evil", QoS::AtLeastOnce, 5),
    );
    broker.send(
        attacker,
        publish("/a1TestProd/dev-1/user/get", "nope", QoS::AtLeastOnce, 6),
    );
    assert_eq!(broker.output(attacker), [puback(pid(5)), puback(pid(6))]);
    assert!(broker.output(victim).is_empty());
    assert!(
        !broker.is_closed(attacker),
        "a denied publish does not close the connection"
    );
    assert_eq!(broker.hub.counters().publish_denied, 2);
}

// ---------------------------------------------------------------------------------------------
// Routing, QoS 1, sessions

#[test]
fn qos_1_flows_from_one_device_to_another_through_the_product_broadcast() {
    let mut broker = Broker::new(&["dev-1", "dev-2"]);
    let (sub, _) = broker.connect_device("dev-2", true);
    broker.send(
        sub,
        subscribe(1, &[("/broadcast/a1TestProd/#", QoS::AtLeastOnce)]),
    );
    broker.output(sub);
    let (publisher, _) = broker.connect_device("dev-1", true);
    broker.send(
        publisher,
        publish("/broadcast/a1TestProd/news", "hello", QoS::AtLeastOnce, 9),
    );
    assert_eq!(broker.output(publisher), [puback(pid(9))]);
    let received = broker.output(sub);
    let deliveries = publishes(&received);
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].topic.as_str(), "/broadcast/a1TestProd/news");
    assert_eq!(&deliveries[0].payload[..], b"hello");
    assert!(matches!(deliveries[0].qos, PublishQos::AtLeastOnce(_)));
    assert!(!deliveries[0].dup);
}

#[test]
fn broadcast_reaches_every_subscribed_device_of_the_product_once() {
    let names: Vec<String> = (0..50).map(|i| format!("dev-{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut broker = Broker::new(&refs);
    let mut conns = Vec::new();
    for name in &refs {
        let (conn, _) = broker.connect_device(name, true);
        // Two overlapping subscriptions: still one delivery per device.
        broker.send(
            conn,
            subscribe(
                1,
                &[
                    ("/broadcast/a1TestProd/#", QoS::AtMostOnce),
                    ("/broadcast/a1TestProd/+", QoS::AtLeastOnce),
                ],
            ),
        );
        broker.output(conn);
        conns.push(conn);
    }
    let reached = broker.publish("/broadcast/a1TestProd/firmware", "v2", QoS::AtLeastOnce);
    broker.pump();
    assert_eq!(reached, 50);
    for conn in conns {
        let received = broker.output(conn);
        let deliveries = publishes(&received);
        assert_eq!(deliveries.len(), 1);
        // Delivered at the highest granted QoS among the overlapping subscriptions.
        assert!(matches!(deliveries[0].qos, PublishQos::AtLeastOnce(_)));
    }
}

#[test]
fn the_in_flight_window_holds_qos_1_until_acknowledged() {
    let hub = HubConfig {
        inflight_window: NonZeroU16::new(4).expect("a window"),
        ..HubConfig::default()
    };
    let mut broker = Broker::with(&["dev-1"], false, hub, ServerConfig::default());
    let (conn, _) = broker.connect_device("dev-1", true);
    broker.send(
        conn,
        subscribe(1, &[("/a1TestProd/dev-1/user/get", QoS::AtLeastOnce)]),
    );
    broker.output(conn);
    for i in 0..10 {
        broker.publish(
            "/a1TestProd/dev-1/user/get",
            format!("m{i}"),
            QoS::AtLeastOnce,
        );
    }
    broker.pump();
    let first = broker.output(conn);
    let first = publishes(&first);
    assert_eq!(first.len(), 4, "only the window's worth goes out");
    let ids: Vec<_> = first.iter().map(|p| p.qos.packet_id().unwrap()).collect();
    // Acknowledge two: two more go out, in order.
    broker.send(conn, puback(ids[0]));
    broker.send(conn, puback(ids[1]));
    let more = broker.output(conn);
    let payloads: Vec<_> = publishes(&more).iter().map(|p| p.payload.clone()).collect();
    assert_eq!(payloads, [Bytes::from("m4"), Bytes::from("m5")]);
}

#[test]
fn lost_pubacks_are_redelivered_with_dup_after_reconnect_and_nothing_is_lost() {
    let mut broker = Broker::new(&["dev-1", "dev-2"]);
    let (conn, present) = broker.connect_device("dev-1", false);
    assert!(!present);
    broker.send(
        conn,
        subscribe(1, &[("/a1TestProd/dev-1/user/get", QoS::AtLeastOnce)]),
    );
    broker.output(conn);
    for i in 0..3 {
        broker.publish(
            "/a1TestProd/dev-1/user/get",
            format!("m{i}"),
            QoS::AtLeastOnce,
        );
    }
    broker.pump();
    let sent = broker.output(conn);
    let sent: Vec<_> = publishes(&sent).into_iter().cloned().collect();
    assert_eq!(sent.len(), 3);
    // The device acknowledges only the first, then its connection breaks.
    broker.send(conn, puback(sent[0].qos.packet_id().unwrap()));
    broker.drop_transport(conn);
    // While it is offline, one more message arrives.
    broker.publish("/a1TestProd/dev-1/user/get", "m3", QoS::AtLeastOnce);
    broker.pump();
    assert_eq!(broker.hub.counters().dropped.queue_full, 0);

    let (again, present) = broker.connect_device("dev-1", false);
    assert!(present, "the session was kept");
    let resent = broker.output(again);
    let resent = publishes(&resent);
    let summary: Vec<_> = resent
        .iter()
        .map(|p| {
            (
                String::from_utf8(p.payload.to_vec()).unwrap(),
                p.dup,
                p.qos.packet_id(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("m1".to_string(), true, sent[1].qos.packet_id()),
            ("m2".to_string(), true, sent[2].qos.packet_id()),
            ("m3".to_string(), false, summary[2].2),
        ]
    );
    assert!(summary[2].2.is_some());
}

#[test]
fn a_clean_session_loses_its_subscriptions_and_queue_at_disconnect() {
    let mut broker = Broker::new(&["dev-1"]);
    let (conn, _) = broker.connect_device("dev-1", false);
    broker.send(
        conn,
        subscribe(1, &[("/a1TestProd/dev-1/user/get", QoS::AtLeastOnce)]),
    );
    broker.output(conn);
    broker.drop_transport(conn);
    broker.publish("/a1TestProd/dev-1/user/get", "kept", QoS::AtLeastOnce);
    broker.pump();
    // Reconnecting with cleanSession=1 discards the kept session and its queued message.
    let (clean, present) = broker.connect_device("dev-1", true);
    assert!(!present);
    assert!(publishes(&broker.output(clean)).is_empty());
    assert_eq!(broker.hub.counters().dropped.session_discarded, 1);
    // And nothing is routed to it without a new SUBSCRIBE.
    broker.publish("/a1TestProd/dev-1/user/get", "later", QoS::AtLeastOnce);
    broker.pump();
    assert!(broker.output(clean).is_empty());
}

#[test]
fn the_offline_queue_is_bounded_and_drops_the_oldest_counting_them() {
    let hub = HubConfig {
        max_queued_messages: 5,
        ..HubConfig::default()
    };
    let mut broker = Broker::with(&["dev-1"], false, hub, ServerConfig::default());
    let (conn, _) = broker.connect_device("dev-1", false);
    broker.send(
        conn,
        subscribe(1, &[("/a1TestProd/dev-1/user/get", QoS::AtLeastOnce)]),
    );
    broker.output(conn);
    broker.send(conn, Packet::Disconnect);
    for i in 0..8 {
        broker.publish(
            "/a1TestProd/dev-1/user/get",
            format!("m{i}"),
            QoS::AtLeastOnce,
        );
    }
    // QoS 0 is not kept for an offline session, and that is counted too.
    broker.publish("/a1TestProd/dev-1/user/get", "q0", QoS::AtMostOnce);
    broker.pump();
    assert_eq!(broker.hub.counters().dropped.queue_full, 3);
    assert_eq!(broker.hub.counters().dropped.offline_qos0, 1);
    let (again, present) = broker.connect_device("dev-1", false);
    assert!(present);
    let received = broker.output(again);
    let payloads: Vec<_> = publishes(&received)
        .iter()
        .map(|p| p.payload.clone())
        .collect();
    assert_eq!(payloads, ["m3", "m4", "m5", "m6", "m7"].map(Bytes::from));
}

// ---------------------------------------------------------------------------------------------
// Flow control: a subscriber that falls behind slows its QoS 1 publishers down

/// dev-1 subscribes to the product's broadcasts at QoS 1 with a window of one and acknowledges
/// nothing unless told; dev-2 publishes there. Every message that has to wait behind the window
/// holds its PUBACK.
fn slow_subscriber(max_queued_messages: usize) -> (Broker, ConnId, ConnId) {
    slow_subscriber_with(HubConfig {
        inflight_window: NonZeroU16::new(1).expect("a window"),
        ack_hold_threshold: 0,
        max_queued_messages,
        max_ack_hold: Duration::from_secs(5),
        ..HubConfig::default()
    })
}

fn slow_subscriber_with(hub: HubConfig) -> (Broker, ConnId, ConnId) {
    let mut broker = Broker::with(&["dev-1", "dev-2"], false, hub, ServerConfig::default());
    let (sub, _) = broker.connect_device("dev-1", false);
    broker.send(
        sub,
        subscribe(1, &[("/broadcast/a1TestProd/+", QoS::AtLeastOnce)]),
    );
    broker.output(sub);
    let (publisher, _) = broker.connect_device("dev-2", true);
    (broker, sub, publisher)
}

/// dev-2 publishes these packet ids to the product's broadcast topic at QoS 1.
fn publish_news(broker: &mut Broker, publisher: ConnId, ids: std::ops::RangeInclusive<u16>) {
    for id in ids {
        broker.send(
            publisher,
            publish("/broadcast/a1TestProd/news", "x", QoS::AtLeastOnce, id),
        );
    }
}

/// Messages queued for the device's session.
fn queued(broker: &Broker, device: &str) -> usize {
    broker
        .hub
        .queued_messages(&ClientKey::Device(identity(device)))
}

fn pubacks(packets: &[Packet]) -> Vec<u16> {
    packets
        .iter()
        .map(|packet| match packet {
            Packet::PubAck(ack) => ack.packet_id.get(),
            other => panic!("expected PUBACKs only, got {other:?}"),
        })
        .collect()
}

#[test]
fn a_subscriber_that_falls_behind_holds_the_pubacks_of_its_publishers_and_loses_nothing() {
    let (mut broker, sub, publisher) = slow_subscriber(1_000);
    for id in 1..=6 {
        broker.send(
            publisher,
            publish(
                "/broadcast/a1TestProd/news",
                &format!("m{id}"),
                QoS::AtLeastOnce,
                id,
            ),
        );
    }
    // m1 went into the window; m2 and later wait in the queue and hold their PUBACKs.
    assert_eq!(pubacks(&broker.output(publisher)), [1]);
    assert_eq!(broker.hub.held_ack_count(), 5);
    assert_eq!(broker.hub.counters().acks_held, 5);
    // Each message the subscriber takes frees one PUBACK, in order.
    let mut received = Vec::new();
    for expected in [2, 3, 4, 5, 6] {
        let delivered = broker.output(sub);
        let delivered = publishes(&delivered);
        assert_eq!(delivered.len(), 1);
        received.push(delivered[0].payload.clone());
        broker.send(sub, puback(delivered[0].qos.packet_id().unwrap()));
        assert_eq!(pubacks(&broker.output(publisher)), [expected]);
    }
    let rest = broker.output(sub);
    let rest = publishes(&rest);
    received.extend(rest.iter().map(|p| p.payload.clone()));
    assert_eq!(
        received,
        ["m1", "m2", "m3", "m4", "m5", "m6"].map(Bytes::from)
    );
    assert_eq!(broker.hub.held_ack_count(), 0);
    assert_eq!(broker.hub.counters().dropped.queue_full, 0);
}

#[test]
fn pubacks_keep_the_order_of_their_publishes_when_one_is_held() {
    let (mut broker, sub, publisher) = slow_subscriber(1_000);
    publish_news(&mut broker, publisher, 1..=3);
    assert_eq!(pubacks(&broker.output(publisher)), [1]);
    // Nobody subscribes to this one: the hub is done with it at once, yet its PUBACK must
    // follow those of 2 and 3 (MQTT-4.6.0-2).
    broker.send(
        publisher,
        publish("/a1TestProd/dev-2/user/update", "y", QoS::AtLeastOnce, 4),
    );
    assert!(broker.output(publisher).is_empty());
    let take_one = |broker: &mut Broker| {
        let delivered = broker.output(sub);
        broker.send(
            sub,
            puback(publishes(&delivered)[0].qos.packet_id().unwrap()),
        );
    };
    take_one(&mut broker);
    assert_eq!(pubacks(&broker.output(publisher)), [2]);
    take_one(&mut broker);
    assert_eq!(pubacks(&broker.output(publisher)), [3, 4]);
}

#[test]
fn a_held_puback_goes_out_at_its_limit_when_the_subscriber_stays_stuck() {
    let (mut broker, _sub, publisher) = slow_subscriber(1_000);
    publish_news(&mut broker, publisher, 1..=3);
    assert_eq!(pubacks(&broker.output(publisher)), [1]);
    broker.advance(Duration::from_millis(4_999));
    assert!(broker.output(publisher).is_empty());
    broker.advance(Duration::from_millis(1));
    assert_eq!(pubacks(&broker.output(publisher)), [2, 3]);
    assert_eq!(broker.hub.counters().acks_held_to_limit, 2);
    // The message itself stays queued for the subscriber.
    assert_eq!(queued(&broker, "dev-1"), 2);
    // Stuck, not slow: it has acknowledged nothing for the longest hold, so it holds no more
    // PUBACKs; its queue fills and drops the oldest as an offline one does.
    publish_news(&mut broker, publisher, 4..=5);
    assert_eq!(pubacks(&broker.output(publisher)), [4, 5]);
    assert_eq!(queued(&broker, "dev-1"), 4);
    assert_eq!(broker.hub.held_ack_count(), 0);
}

#[test]
fn large_messages_are_held_by_the_share_of_bytes_queued() {
    // 100 of 1,000 messages, or 10 % of 10,000 bytes: 2 KiB messages are held from the
    // second one queued on, long before the byte limit would drop them.
    let (mut broker, _sub, publisher) = slow_subscriber_with(HubConfig {
        inflight_window: NonZeroU16::new(1).expect("a window"),
        max_queued_messages: 1_000,
        max_queued_bytes: 10_000,
        ack_hold_threshold: 100,
        ..HubConfig::default()
    });
    let payload = "x".repeat(2048);
    for id in 1..=5 {
        broker.send(
            publisher,
            publish("/broadcast/a1TestProd/news", &payload, QoS::AtLeastOnce, id),
        );
    }
    assert_eq!(pubacks(&broker.output(publisher)), [1, 2]);
    assert_eq!(broker.hub.held_ack_count(), 3);
    assert_eq!(broker.hub.counters().dropped.queue_full, 0);
}

#[test]
fn a_subscriber_going_offline_releases_the_pubacks_it_held() {
    let (mut broker, sub, publisher) = slow_subscriber(1_000);
    publish_news(&mut broker, publisher, 1..=4);
    assert_eq!(pubacks(&broker.output(publisher)), [1]);
    // Its kept session's queue is a store for later now: nobody waits for it.
    broker.drop_transport(sub);
    assert_eq!(pubacks(&broker.output(publisher)), [2, 3, 4]);
    assert_eq!(queued(&broker, "dev-1"), 3);
    assert_eq!(broker.hub.held_ack_count(), 0);
}

#[test]
fn a_publisher_that_ignores_its_pubacks_is_no_longer_read_beyond_the_limit() {
    let (mut broker, sub, publisher) = slow_subscriber(5_000);
    let limit = aliot_core::server::MAX_UNACKED_PUBLISHES;
    // One goes into the window, acknowledged at once; the rest wait.
    for id in 1..=limit + 1 {
        assert!(broker.conns[&publisher].wants_input());
        let id = u16::try_from(id).unwrap();
        broker.send(
            publisher,
            publish("/broadcast/a1TestProd/news", "x", QoS::AtLeastOnce, id),
        );
    }
    assert_eq!(pubacks(&broker.output(publisher)), [1]);
    assert!(
        !broker.conns[&publisher].wants_input(),
        "TCP slows it down from here"
    );
    // The subscriber takes one: one PUBACK goes, and the publisher is read again.
    let delivered = broker.output(sub);
    broker.send(
        sub,
        puback(publishes(&delivered)[0].qos.packet_id().unwrap()),
    );
    assert_eq!(pubacks(&broker.output(publisher)), [2]);
    assert!(broker.conns[&publisher].wants_input());
}

#[test]
fn a_publisher_that_is_not_read_for_its_unacknowledged_publishes_keeps_its_connection() {
    // Held far longer than the publisher's keepalive (60 s, closed after 90 s of silence).
    let (mut broker, sub, publisher) = slow_subscriber_with(HubConfig {
        inflight_window: NonZeroU16::new(1).expect("a window"),
        ack_hold_threshold: 0,
        max_queued_messages: 5_000,
        max_ack_hold: Duration::from_secs(600),
        ..HubConfig::default()
    });
    let limit = u16::try_from(aliot_core::server::MAX_UNACKED_PUBLISHES).unwrap();
    publish_news(&mut broker, publisher, 1..=limit + 1);
    assert!(!broker.conns[&publisher].wants_input());
    // Its PINGREQs would wait unread behind the PUBLISHes: the broker does not count that
    // silence against it. (The subscriber pings, and stays.)
    for _ in 0..5 {
        broker.advance(Duration::from_secs(30));
        broker.send(sub, Packet::PingReq);
    }
    assert!(!broker.is_closed(publisher), "closed while not read");
    let delivered = broker.output(sub);
    let first = publishes(&delivered)[0].qos.packet_id().unwrap();
    broker.send(sub, puback(first));
    assert!(broker.conns[&publisher].wants_input());
    // Read again from now on: the keepalive runs from here.
    broker.advance(Duration::from_secs(89));
    assert!(!broker.is_closed(publisher));
    broker.advance(Duration::from_secs(1));
    assert!(broker.is_closed(publisher));
}

#[test]
fn messages_that_hold_pubacks_may_take_the_queue_past_its_limit_and_lose_nothing() {
    // Publishers whose windows add up to more than the queue: while each waits for its PUBACK,
    // its message may stay beyond the limit (3) up to HELD_QUEUE_FACTOR times it.
    let factor = aliot_core::hub::HELD_QUEUE_FACTOR;
    let (mut broker, sub, publisher) = slow_subscriber(3);
    let last = u16::try_from(1 + 3 * factor).unwrap();
    publish_news(&mut broker, publisher, 1..=last);
    assert_eq!(pubacks(&broker.output(publisher)), [1]);
    assert_eq!(queued(&broker, "dev-1"), 3 * factor);
    assert_eq!(broker.hub.counters().dropped.queue_full, 0);
    // The subscriber takes them all, in order, and each frees its PUBACK.
    let mut received = 0;
    for expected in 2..=last {
        let delivered = broker.output(sub);
        let delivered = publishes(&delivered);
        assert_eq!(delivered.len(), 1);
        received += 1;
        broker.send(sub, puback(delivered[0].qos.packet_id().unwrap()));
        assert_eq!(pubacks(&broker.output(publisher)), [expected]);
    }
    assert_eq!(received + 1, usize::from(last));
    assert_eq!(broker.hub.held_ack_count(), 0);
    assert_eq!(broker.hub.counters().dropped.queue_full, 0);
}

#[test]
fn a_message_that_holds_nothing_brings_the_queue_back_within_its_limit() {
    let (mut broker, _sub, publisher) = slow_subscriber(3);
    publish_news(&mut broker, publisher, 1..=9);
    assert_eq!(queued(&broker, "dev-1"), 8);
    // The platform's own publish waits for no PUBACK: the queue keeps its limit again, the
    // oldest dropped (m2 to m7), and their PUBACKs wait for the limit of the hold.
    broker.publish("/broadcast/a1TestProd/news", "platform", QoS::AtLeastOnce);
    assert_eq!(queued(&broker, "dev-1"), 3);
    assert_eq!(broker.hub.counters().dropped.queue_full, 6);
    assert_eq!(pubacks(&broker.output(publisher)), [1]);
    broker.advance(Duration::from_secs(5));
    assert_eq!(pubacks(&broker.output(publisher)), [2, 3, 4, 5, 6, 7, 8, 9]);
}

#[test]
fn a_queue_that_overflows_even_so_drops_the_oldest_and_keeps_their_publishers_slowed_down() {
    // Past HELD_QUEUE_FACTOR times the limit (here a publisher that does not wait for its
    // PUBACKs): the oldest go, counted, and their PUBACKs wait for the limit of the hold.
    let factor = aliot_core::hub::HELD_QUEUE_FACTOR;
    let (mut broker, _sub, publisher) = slow_subscriber(3);
    let last = u16::try_from(3 + 3 * factor).unwrap();
    publish_news(&mut broker, publisher, 1..=last);
    // m1 went out; m2 and m3 were dropped for m14 and m15.
    assert_eq!(pubacks(&broker.output(publisher)), [1]);
    assert_eq!(broker.hub.counters().dropped.queue_full, 2);
    assert_eq!(broker.hub.held_ack_count(), usize::from(last) - 1);
    broker.advance(Duration::from_secs(5));
    let expected: Vec<u16> = (2..=last).collect();
    assert_eq!(pubacks(&broker.output(publisher)), expected);
    assert_eq!(
        broker.hub.counters().acks_held_to_limit,
        u64::from(last) - 1
    );
    assert_eq!(queued(&broker, "dev-1"), 3 * factor);
}

#[test]
fn a_second_connection_of_the_same_device_takes_over_with_its_session() {
    let mut broker = Broker::new(&["dev-1"]);
    let (first, _) = broker.connect_device("dev-1", false);
    broker.send(
        first,
        subscribe(1, &[("/a1TestProd/dev-1/user/get", QoS::AtLeastOnce)]),
    );
    broker.output(first);
    let (second, present) = broker.connect_device("dev-1", false);
    assert!(present, "the session moves to the new connection");
    assert!(broker.is_closed(first));
    assert!(broker.close_reason(first).unwrap().contains("taken over"));
    assert_eq!(broker.hub.counters().takeovers, 1);
    assert_eq!(broker.hub.connection_count(), 1);
    // Messages now go to the new connection only.
    broker.publish("/a1TestProd/dev-1/user/get", "to-new", QoS::AtLeastOnce);
    broker.pump();
    assert_eq!(publishes(&broker.output(second)).len(), 1);
    assert!(publishes(&broker.output(first)).is_empty());
}

#[test]
fn a_device_that_never_reads_does_not_stall_the_others() {
    let config = ServerConfig {
        max_pending_output: 4 * 1024,
        ..ServerConfig::default()
    };
    let hub = HubConfig {
        max_queued_messages: 100,
        ..HubConfig::default()
    };
    let mut broker = Broker::with(&["slow", "fast"], false, hub, config);
    let (slow, _) = broker.connect_device("slow", false);
    let (fast, _) = broker.connect_device("fast", false);
    for conn in [slow, fast] {
        broker.send(
            conn,
            subscribe(
                1,
                &[
                    ("/broadcast/a1TestProd/#", QoS::AtMostOnce),
                    ("/broadcast/a1TestProd/q1/+", QoS::AtLeastOnce),
                ],
            ),
        );
        broker.output(conn);
    }
    let payload = "x".repeat(100);
    let mut fast_received = 0;
    for i in 0..2_000 {
        let t = if i % 2 == 0 {
            "/broadcast/a1TestProd/q0"
        } else {
            "/broadcast/a1TestProd/q1/m"
        };
        let qos = if i % 2 == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        broker.publish(t, payload.clone(), qos);
        // The fast device reads and acknowledges everything as it comes.
        let received = broker.output(fast);
        for p in publishes(&received) {
            fast_received += 1;
            if let PublishQos::AtLeastOnce(id) = p.qos {
                broker.send(fast, puback(id));
            }
        }
    }
    assert_eq!(fast_received, 2_000, "the fast device got everything");
    // The slow one: its output is bounded, QoS 0 was dropped and counted, QoS 1 waits in the
    // session, bounded by the window plus the queue.
    let pending = broker.conns[&slow].pending_output();
    assert!(
        pending <= 4 * 1024 + 32 * 200,
        "pending output bounded, was {pending}"
    );
    let counters = broker.hub.counters();
    assert!(counters.dropped.slow_consumer > 900, "{counters:?}");
    assert!(
        broker
            .hub
            .queued_messages(&aliot_core::ClientKey::Device(identity("slow")))
            <= 100
    );
    assert_eq!(counters.dropped.queue_full, 1_000 - 32 - 100);
    // And it stops asking for input while its output is backed up.
    assert!(!broker.conns[&slow].wants_input());
}

// ---------------------------------------------------------------------------------------------
// RRPC

fn rrpc_ready(broker: &mut Broker, device: &str) -> aliot_core::hub::ConnId {
    let (conn, _) = broker.connect_device(device, true);
    broker.send(
        conn,
        subscribe(
            1,
            &[(
                &format!("/sys/a1TestProd/{device}/rrpc/request/+"),
                QoS::AtMostOnce,
            )],
        ),
    );
    broker.output(conn);
    conn
}

#[test]
fn rrpc_success_returns_the_devices_answer() {
    let mut broker = Broker::new(&["dev-1"]);
    let conn = rrpc_ready(&mut broker, "dev-1");
    let id = broker
        .hub
        .rrpc_call(
            &identity("dev-1"),
            Bytes::from("ping"),
            Duration::from_secs(5),
            None,
            broker.now,
        )
        .unwrap();
    broker.pump();
    let received = broker.output(conn);
    let request = publishes(&received)[0].clone();
    assert_eq!(
        request.topic.as_str(),
        format!("/sys/a1TestProd/dev-1/rrpc/request/{id}")
    );
    assert_eq!(request.qos, PublishQos::AtMostOnce);
    broker.send(
        conn,
        publish(
            &format!("/sys/a1TestProd/dev-1/rrpc/response/{id}"),
            "pong",
            QoS::AtMostOnce,
            0,
        ),
    );
    assert_eq!(
        broker.outcome(id),
        Some(&RrpcOutcome::Success(Bytes::from("pong")))
    );
    assert_eq!(broker.hub.pending_rrpc_calls(), 0);
}

#[test]
fn rrpc_on_a_custom_topic_uses_the_ext_form_both_ways() {
    let mut broker = Broker::new(&["dev-1"]);
    let (conn, _) = broker.connect_device("dev-1", true);
    broker.send(
        conn,
        subscribe(
            1,
            &[("/ext/rrpc/+/a1TestProd/dev-1/user/get", QoS::AtMostOnce)],
        ),
    );
    assert_eq!(
        suback_codes(&broker.output(conn)),
        [SubAckReturnCode::Success(QoS::AtMostOnce)]
    );
    let custom = topic("/a1TestProd/dev-1/user/get");
    let id = broker
        .hub
        .rrpc_call(
            &identity("dev-1"),
            Bytes::from("on"),
            Duration::from_secs(2),
            Some(&custom),
            broker.now,
        )
        .unwrap();
    broker.pump();
    let received = broker.output(conn);
    let request = publishes(&received)[0].clone();
    let expected = format!("/ext/rrpc/{id}/a1TestProd/dev-1/user/get");
    assert_eq!(request.topic.as_str(), expected);
    broker.send(conn, publish(&expected, "done", QoS::AtMostOnce, 0));
    assert_eq!(
        broker.outcome(id),
        Some(&RrpcOutcome::Success(Bytes::from("done")))
    );
    // The response was not routed back to the device as another request.
    assert!(broker.output(conn).is_empty());
}

#[test]
fn rrpc_times_out_and_a_late_answer_is_dropped_and_counted() {
    let mut broker = Broker::new(&["dev-1"]);
    let conn = rrpc_ready(&mut broker, "dev-1");
    let id = broker
        .hub
        .rrpc_call(
            &identity("dev-1"),
            Bytes::from("ping"),
            Duration::from_millis(1500),
            None,
            broker.now,
        )
        .unwrap();
    broker.pump();
    broker.output(conn);
    broker.advance(Duration::from_millis(1499));
    assert_eq!(broker.outcome(id), None);
    broker.advance(Duration::from_millis(1));
    assert_eq!(broker.outcome(id), Some(&RrpcOutcome::Timeout));
    broker.send(
        conn,
        publish(
            &format!("/sys/a1TestProd/dev-1/rrpc/response/{id}"),
            "late",
            QoS::AtMostOnce,
            0,
        ),
    );
    // Exactly one outcome per call.
    assert_eq!(broker.outcomes.iter().filter(|(i, _)| *i == id).count(), 1);
    assert_eq!(broker.hub.counters().rrpc.late_responses, 1);
    // A response nobody asked for is dropped too.
    broker.send(
        conn,
        publish(
            "/sys/a1TestProd/dev-1/rrpc/response/123456789",
            "?",
            QoS::AtMostOnce,
            0,
        ),
    );
    assert_eq!(broker.hub.counters().rrpc.unknown_responses, 1);
}

#[test]
fn rrpc_to_an_offline_device_is_offline_and_halfconn_just_after_it_left() {
    let mut broker = Broker::new(&["dev-1", "dev-2"]);
    let never = broker
        .hub
        .rrpc_call(
            &identity("dev-2"),
            Bytes::new(),
            Duration::from_secs(1),
            None,
            broker.now,
        )
        .unwrap();
    assert_eq!(broker.hub.poll_output().map(|_| ()), Some(()));
    broker.outcomes.push((never, RrpcOutcome::Offline));

    let conn = rrpc_ready(&mut broker, "dev-1");
    broker.drop_transport(conn);
    let just_gone = broker
        .hub
        .rrpc_call(
            &identity("dev-1"),
            Bytes::new(),
            Duration::from_secs(1),
            None,
            broker.now,
        )
        .unwrap();
    broker.pump();
    assert_eq!(broker.outcome(just_gone), Some(&RrpcOutcome::HalfConn));
    // One keepalive (60 s) later it is plainly offline.
    broker.advance(Duration::from_secs(61));
    let later = broker
        .hub
        .rrpc_call(
            &identity("dev-1"),
            Bytes::new(),
            Duration::from_secs(1),
            None,
            broker.now,
        )
        .unwrap();
    broker.pump();
    assert_eq!(broker.outcome(later), Some(&RrpcOutcome::Offline));
}

#[test]
fn rrpc_to_a_connected_device_that_does_not_listen_is_halfconn() {
    let mut broker = Broker::new(&["dev-1"]);
    let (_conn, _) = broker.connect_device("dev-1", true);
    let id = broker
        .hub
        .rrpc_call(
            &identity("dev-1"),
            Bytes::new(),
            Duration::from_secs(1),
            None,
            broker.now,
        )
        .unwrap();
    broker.pump();
    assert_eq!(broker.outcome(id), Some(&RrpcOutcome::HalfConn));
}

#[test]
fn rrpc_refuses_timeouts_outside_the_platform_range_and_foreign_topics() {
    let mut hub = aliot_core::hub::Hub::new(HubConfig::default());
    let device = identity("dev-1");
    let now = aliot_core::Instant::ZERO;
    assert_eq!(
        hub.rrpc_call(&device, Bytes::new(), Duration::from_millis(999), None, now),
        Err(InvalidRrpcCall::InvalidTimeout(999))
    );
    assert_eq!(
        hub.rrpc_call(
            &device,
            Bytes::new(),
            Duration::from_millis(8001),
            None,
            now
        ),
        Err(InvalidRrpcCall::InvalidTimeout(8001))
    );
    let foreign = topic("/a1TestProd/dev-2/user/get");
    assert!(matches!(
        hub.rrpc_call(
            &device,
            Bytes::new(),
            Duration::from_secs(1),
            Some(&foreign),
            now
        ),
        Err(InvalidRrpcCall::NotDeviceTopic(_))
    ));
    assert!(hub.poll_output().is_none(), "a refused call has no outcome");
}

#[test]
fn every_pending_rrpc_call_ends_unknown_at_shutdown() {
    let mut broker = Broker::new(&["dev-1"]);
    let conn = rrpc_ready(&mut broker, "dev-1");
    let id = broker
        .hub
        .rrpc_call(
            &identity("dev-1"),
            Bytes::new(),
            Duration::from_secs(8),
            None,
            broker.now,
        )
        .unwrap();
    broker.hub.shutdown();
    broker.pump();
    assert_eq!(broker.outcome(id), Some(&RrpcOutcome::Unknown));
    assert!(broker.is_closed(conn));
    assert!(broker.close_reason(conn).unwrap().contains("shutting down"));
}

// ---------------------------------------------------------------------------------------------
// Server-side publish to one device

#[test]
fn publish_to_device_respects_the_devices_acl_and_subscriptions() {
    let mut broker = Broker::new(&["dev-1"]);
    let (conn, _) = broker.connect_device("dev-1", true);
    let get = topic("/a1TestProd/dev-1/user/get");
    let msg = |t: &TopicName| Message::new(t.clone(), "cmd", QoS::AtLeastOnce);
    assert_eq!(
        broker
            .hub
            .publish_to_device(&identity("dev-1"), msg(&get), broker.now),
        DeviceDelivery::NotSubscribed
    );
    broker.send(
        conn,
        subscribe(1, &[("/a1TestProd/dev-1/user/get", QoS::AtMostOnce)]),
    );
    broker.output(conn);
    assert_eq!(
        broker
            .hub
            .publish_to_device(&identity("dev-1"), msg(&get), broker.now),
        DeviceDelivery::Sent
    );
    broker.pump();
    let received = broker.output(conn);
    // Delivered at the lower of the message's QoS and the subscription's.
    assert_eq!(publishes(&received)[0].qos, PublishQos::AtMostOnce);
    // A pub-only topic is not something the device may receive.
    let update = topic("/a1TestProd/dev-1/user/update");
    assert_eq!(
        broker
            .hub
            .publish_to_device(&identity("dev-1"), msg(&update), broker.now),
        DeviceDelivery::Denied
    );
    assert_eq!(
        broker
            .hub
            .publish_to_device(&identity("dev-9"), msg(&get), broker.now),
        DeviceDelivery::Offline
    );
}

#[test]
fn a_device_that_left_stops_being_half_connected_at_its_own_deadline() {
    // A clean session leaves no expiry behind: the only deadline is the end of the device's
    // HALFCONN window, one keepalive (60 s) after it left. The hub must wake for it itself,
    // not wait for some other deadline to pass.
    let mut broker = Broker::new(&["dev-1"]);
    let conn = rrpc_ready(&mut broker, "dev-1");
    let left_at = broker.now;
    broker.drop_transport(conn);
    assert_eq!(broker.hub.half_connected_devices(), 1);
    assert_eq!(
        broker.hub.poll_timeout(),
        Some(left_at + Duration::from_secs(60))
    );
    broker.advance(Duration::from_secs(60));
    assert_eq!(broker.hub.half_connected_devices(), 0);
    assert_eq!(broker.hub.poll_timeout(), None);
}

#[test]
fn a_device_back_online_is_not_half_connected_and_leaves_no_deadline() {
    let mut broker = Broker::new(&["dev-1"]);
    let conn = rrpc_ready(&mut broker, "dev-1");
    broker.drop_transport(conn);
    let _again = rrpc_ready(&mut broker, "dev-1");
    assert_eq!(broker.hub.half_connected_devices(), 0);
    assert_eq!(broker.hub.poll_timeout(), None);
}

#[test]
fn a_qos1_rrpc_answer_is_acknowledged_and_not_routed() {
    let mut broker = Broker::new(&["dev-1"]);
    let conn = rrpc_ready(&mut broker, "dev-1");
    // The device also listens on the response topic: an answer must still not reach it.
    broker.send(
        conn,
        subscribe(
            2,
            &[("/sys/a1TestProd/dev-1/rrpc/response/+", QoS::AtLeastOnce)],
        ),
    );
    broker.output(conn);
    let id = broker
        .hub
        .rrpc_call(
            &identity("dev-1"),
            Bytes::from("ping"),
            Duration::from_secs(5),
            None,
            broker.now,
        )
        .unwrap();
    broker.pump();
    broker.output(conn);
    let response = format!("/sys/a1TestProd/dev-1/rrpc/response/{id}");
    broker.send(conn, publish(&response, "pong", QoS::AtLeastOnce, 9));
    assert_eq!(
        broker.outcome(id),
        Some(&RrpcOutcome::Success(Bytes::from("pong")))
    );
    assert_eq!(broker.output(conn), [puback(pid(9))]);
    assert_eq!(broker.hub.counters().messages_in, 1);
}

#[test]
fn a_custom_rrpc_topic_may_be_one_of_the_devices_thing_topics() {
    // The platform's synchronous service calls wrap the device's /sys/ topics
    // (`/ext/rrpc/{id}/sys/{pk}/{dn}/thing/service/...`): they are the device's own too.
    let mut hub = aliot_core::hub::Hub::new(HubConfig::default());
    let service = topic("/sys/a1TestProd/dev-1/thing/service/reboot");
    let call = hub.rrpc_call(
        &identity("dev-1"),
        Bytes::new(),
        Duration::from_secs(1),
        Some(&service),
        aliot_core::Instant::ZERO,
    );
    assert!(call.is_ok(), "{call:?}");
    let foreign = topic("/sys/a1TestProd/dev-2/thing/service/reboot");
    let call = hub.rrpc_call(
        &identity("dev-1"),
        Bytes::new(),
        Duration::from_secs(1),
        Some(&foreign),
        aliot_core::Instant::ZERO,
    );
    assert!(matches!(call, Err(InvalidRrpcCall::NotDeviceTopic(_))));
}

#[test]
fn output_handed_out_but_not_yet_written_still_counts_against_the_limit() {
    // An adapter that takes every byte as soon as it is there (into a socket buffer of its
    // own) must not switch off QoS 0 dropping and input throttling: the connection counts what
    // it handed out until the adapter reports it written.
    let config = ServerConfig {
        max_pending_output: 4 * 1024,
        ..ServerConfig::default()
    };
    let mut broker = Broker::with(&["slow"], false, HubConfig::default(), config);
    let (slow, _) = broker.connect_device("slow", true);
    broker.send(
        slow,
        subscribe(1, &[("/broadcast/a1TestProd/#", QoS::AtMostOnce)]),
    );
    broker.output(slow);
    let mut taken = bytes::BytesMut::new();
    for _ in 0..200 {
        broker.publish("/broadcast/a1TestProd/q0", "x".repeat(100), QoS::AtMostOnce);
        // Drained eagerly, never reported written: the device is not reading.
        broker
            .conns
            .get_mut(&slow)
            .unwrap()
            .poll_transmit(&mut taken);
    }
    let connection = &broker.conns[&slow];
    assert!(connection.pending_output() >= 4 * 1024);
    assert!(!connection.wants_input());
    assert!(broker.hub.counters().dropped.slow_consumer > 100);
    // Once it is written, the connection reads again.
    let written = taken.len();
    broker.conns.get_mut(&slow).unwrap().handle_written(written);
    assert_eq!(broker.conns[&slow].pending_output(), 0);
    assert!(broker.conns[&slow].wants_input());
}
