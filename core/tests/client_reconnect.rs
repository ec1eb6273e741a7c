//! What the device client's session keeps across transports: unacknowledged PUBLISHes,
//! SUBSCRIBEs and UNSUBSCRIBEs, and commands given while disconnected.

mod client_broker;

use aliot_core::client::{DisconnectReason, Event, PublishToken, SessionLostPolicy};
use aliot_core::codec::{Packet, QoS, SubAckReturnCode};
use aliot_topic::TopicFilter;
use bytes::Bytes;
use client_broker::{Harness, config, publishes, topic};

/// A client with cleanSession=0 that published three QoS 1 messages, of which the broker
/// acknowledged only the second, then lost the transport.
fn lost_pubacks(clean_session: bool, policy: SessionLostPolicy) -> (Harness, [u16; 3]) {
    let mut config = config();
    config.clean_session = clean_session;
    config.session_lost = policy;
    let mut harness = Harness::connected(config);
    let first = harness.publish_qos1(b"first");
    let second = harness.publish_qos1(b"second");
    let third = harness.publish_qos1(b"third");
    assert_eq!(publishes(&harness.sent()).len(), 3);
    harness.puback(second);
    assert_eq!(harness.events(), [Event::PublishAcked(second)]);

    harness.conn.handle_transport_closed(harness.now);
    assert_eq!(
        harness.events(),
        [Event::Disconnected(DisconnectReason::TransportClosed)]
    );
    assert_eq!(harness.conn.in_flight_len(), 2);
    (harness, [first.get(), second.get(), third.get()])
}

#[test]
fn resumed_session_resends_with_dup_and_the_same_ids_before_newer_messages() {
    let (mut harness, [first, _, third]) = lost_pubacks(false, SessionLostPolicy::ResendAsNew);
    // Given while disconnected: waits for the connection.
    let newer = harness.publish_qos1(b"newer");
    let newer_qos0 = harness
        .conn
        .publish(
            topic("update"),
            &b"newer-qos0"[..],
            QoS::AtMostOnce,
            harness.now,
        )
        .expect("accepted");
    let PublishToken::AtMostOnce(newer_qos0) = newer_qos0 else {
        panic!("QoS 0 has no packet id: {newer_qos0:?}");
    };
    assert!(
        harness.sent().is_empty(),
        "nothing is written while disconnected"
    );

    let (sent, events) = harness.connect(true);
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(
        publishes(&sent),
        [
            (Some(first), true, Bytes::from_static(b"first")),
            (Some(third), true, Bytes::from_static(b"third")),
            (Some(newer.get()), false, Bytes::from_static(b"newer")),
            (None, false, Bytes::from_static(b"newer-qos0")),
        ]
    );

    harness.puback(client_broker::id(first));
    harness.puback(client_broker::id(third));
    harness.puback(newer);
    assert_eq!(
        harness.events(),
        [
            Event::PublishSent(newer_qos0),
            Event::PublishAcked(client_broker::id(first)),
            Event::PublishAcked(client_broker::id(third)),
            Event::PublishAcked(newer),
        ]
    );
    assert_eq!(harness.conn.in_flight_len(), 0);
}

#[test]
fn session_absent_resends_as_new_messages_by_default() {
    let (mut harness, [first, _, third]) = lost_pubacks(false, SessionLostPolicy::default());
    let (sent, events) = harness.connect(false);
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(
        publishes(&sent),
        [
            (Some(first), false, Bytes::from_static(b"first")),
            (Some(third), false, Bytes::from_static(b"third")),
        ]
    );
}

#[test]
fn clean_session_resends_as_new_messages_by_default() {
    let (mut harness, [first, _, third]) = lost_pubacks(true, SessionLostPolicy::ResendAsNew);
    let (sent, _) = harness.connect(false);
    assert_eq!(
        publishes(&sent),
        [
            (Some(first), false, Bytes::from_static(b"first")),
            (Some(third), false, Bytes::from_static(b"third")),
        ]
    );
}

#[test]
fn session_absent_reports_failures_when_configured() {
    let (mut harness, [first, _, third]) = lost_pubacks(false, SessionLostPolicy::ReportFailed);
    let newer = harness.publish_qos1(b"newer");
    let (sent, events) = harness.connect(false);
    assert_eq!(
        events,
        [
            Event::PublishFailed(client_broker::id(first)),
            Event::PublishFailed(client_broker::id(third)),
        ]
    );
    assert_eq!(
        publishes(&sent),
        [(Some(newer.get()), false, Bytes::from_static(b"newer"))],
        "the lost messages are not sent, the new one is"
    );
    assert_eq!(harness.conn.in_flight_len(), 1);
}

#[test]
fn a_resumed_session_resends_even_with_the_report_policy() {
    let (mut harness, [first, _, third]) = lost_pubacks(false, SessionLostPolicy::ReportFailed);
    let (sent, events) = harness.connect(true);
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(
        publishes(&sent),
        [
            (Some(first), true, Bytes::from_static(b"first")),
            (Some(third), true, Bytes::from_static(b"third")),
        ]
    );
}

#[test]
fn unanswered_subscribe_and_unsubscribe_are_sent_again() {
    let mut config = config();
    config.clean_session = false;
    let mut harness = Harness::connected(config);
    let filter = TopicFilter::from_static("/a1TestPK001/dev-001/user/get");
    let sub_id = harness
        .conn
        .subscribe(&[(filter.clone(), QoS::AtLeastOnce)], harness.now)
        .expect("accepted");
    let unsub_id = harness
        .conn
        .unsubscribe(&[filter], harness.now)
        .expect("accepted");
    assert_eq!(harness.sent().len(), 2);
    harness.conn.handle_transport_closed(harness.now);
    harness.events();

    let (sent, _) = harness.connect(false);
    assert!(
        matches!(
            sent.as_slice(),
            [Packet::Subscribe(s), Packet::Unsubscribe(u)]
                if s.packet_id == sub_id && u.packet_id == unsub_id
        ),
        "{sent:?}"
    );
    harness.suback(sub_id, vec![SubAckReturnCode::Success(QoS::AtLeastOnce)]);
    harness.unsuback(unsub_id);
    assert_eq!(
        harness.events(),
        [
            Event::SubAck {
                packet_id: sub_id,
                return_codes: vec![SubAckReturnCode::Success(QoS::AtLeastOnce)],
            },
            Event::UnsubAck(unsub_id),
        ]
    );
}

#[test]
fn a_refused_reconnect_keeps_the_session_for_the_next_one() {
    let (mut harness, [first, _, third]) = lost_pubacks(false, SessionLostPolicy::ResendAsNew);
    harness.conn.connect(harness.now);
    harness.sent();
    harness.deliver(aliot_core::codec::ConnAck {
        session_present: false,
        code: aliot_core::codec::ConnectReturnCode::ServerUnavailable,
    });
    harness.events();
    assert_eq!(harness.conn.in_flight_len(), 2);

    let (sent, _) = harness.connect(true);
    assert_eq!(
        publishes(&sent),
        [
            (Some(first), true, Bytes::from_static(b"first")),
            (Some(third), true, Bytes::from_static(b"third")),
        ]
    );
}

#[test]
fn disconnect_keeps_the_session_and_bytes_written_before_it() {
    let mut config = config();
    config.clean_session = false;
    let mut harness = Harness::connected(config);
    let packet_id = harness.publish_qos1(b"last words");
    harness.conn.disconnect(harness.now);
    let sent = harness.sent();
    assert!(
        matches!(sent.as_slice(), [Packet::Publish(_), Packet::Disconnect]),
        "{sent:?}"
    );
    harness.events();
    let (sent, _) = harness.connect(true);
    assert_eq!(
        publishes(&sent),
        [(
            Some(packet_id.get()),
            true,
            Bytes::from_static(b"last words")
        )]
    );
}

#[test]
fn bytes_not_taken_before_the_transport_closed_are_not_written_to_the_next() {
    let mut harness = Harness::connected(config());
    let token = harness
        .conn
        .publish(topic("update"), &b"qos0"[..], QoS::AtMostOnce, harness.now)
        .expect("accepted");
    harness.conn.handle_transport_closed(harness.now);
    harness.conn.connect(harness.now);
    let sent = harness.sent();
    assert!(matches!(sent.as_slice(), [Packet::Connect(_)]), "{sent:?}");
    // The QoS 0 PUBLISH is reported dropped, not sent: its bytes never left.
    let PublishToken::AtMostOnce(token) = token else {
        panic!("QoS 0 has no packet id: {token:?}");
    };
    assert_eq!(
        harness.events(),
        [
            Event::PublishDropped(token),
            Event::Disconnected(DisconnectReason::TransportClosed)
        ]
    );
}
