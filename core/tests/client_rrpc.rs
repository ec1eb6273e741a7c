//! RRPC on the device side: requests recognised in both forms, answered on the right topic.

mod client_broker;

use aliot_core::client::{ClientConfig, ClientError, Credentials, Event};
use aliot_core::codec::{Packet, PubAck, PublishQos, QoS};
use aliot_topic::{MessageId, TopicName};
use bytes::Bytes;
use client_broker::{Harness, config, id};

fn name(topic: &str) -> TopicName {
    TopicName::new(topic, &Default::default()).expect("valid topic")
}

/// The single PUBLISH written, as (topic, QoS, payload).
fn sent_publish(harness: &mut Harness) -> (String, PublishQos, Bytes) {
    let sent = harness.sent();
    let [Packet::Publish(publish)] = sent.as_slice() else {
        panic!("expected one PUBLISH, got {sent:?}");
    };
    (
        publish.topic.to_string(),
        publish.qos,
        publish.payload.clone(),
    )
}

#[test]
fn a_system_rrpc_request_is_answered_on_its_response_topic() {
    let mut harness = Harness::connected(config());
    harness.incoming(
        "/sys/a1TestPK001/dev-001/rrpc/request/1539421321846",
        b"{\"cmd\":\"open\"}",
        None,
    );
    assert_eq!(
        harness.events(),
        [Event::RrpcRequest {
            message_id: MessageId(1_539_421_321_846),
            payload: Bytes::from_static(b"{\"cmd\":\"open\"}"),
            topic: name("/sys/a1TestPK001/dev-001/rrpc/request/1539421321846"),
        }]
    );

    harness
        .conn
        .respond_rrpc(
            MessageId(1_539_421_321_846),
            &b"{\"ok\":1}"[..],
            harness.now,
        )
        .expect("answered");
    assert_eq!(
        sent_publish(&mut harness),
        (
            "/sys/a1TestPK001/dev-001/rrpc/response/1539421321846".to_owned(),
            PublishQos::AtMostOnce,
            Bytes::from_static(b"{\"ok\":1}")
        )
    );

    // Answered once: the id is no longer pending.
    assert_eq!(
        harness
            .conn
            .respond_rrpc(MessageId(1_539_421_321_846), &b"again"[..], harness.now),
        Err(ClientError::UnknownRrpcMessageId(MessageId(
            1_539_421_321_846
        )))
    );
}

#[test]
fn a_custom_topic_rrpc_request_is_answered_on_the_same_topic() {
    let mut harness = Harness::connected(config());
    harness.incoming("/ext/rrpc/42/a1TestPK001/dev-001/user/get", b"ping", None);
    assert_eq!(
        harness.events(),
        [Event::RrpcRequest {
            message_id: MessageId(42),
            payload: Bytes::from_static(b"ping"),
            topic: name("/ext/rrpc/42/a1TestPK001/dev-001/user/get"),
        }]
    );
    harness
        .conn
        .respond_rrpc(MessageId(42), &b"pong"[..], harness.now)
        .expect("answered");
    assert_eq!(
        sent_publish(&mut harness),
        (
            "/ext/rrpc/42/a1TestPK001/dev-001/user/get".to_owned(),
            PublishQos::AtMostOnce,
            Bytes::from_static(b"pong")
        )
    );
}

#[test]
fn a_qos1_rrpc_request_is_acknowledged_when_taken() {
    let mut harness = Harness::connected(config());
    harness.incoming("/sys/a1TestPK001/dev-001/rrpc/request/5", b"x", Some(9));
    assert!(harness.sent().is_empty());
    assert!(matches!(
        harness.conn.poll_event(),
        Some(Event::RrpcRequest { .. })
    ));
    assert_eq!(
        harness.sent(),
        [Packet::PubAck(PubAck { packet_id: id(9) })]
    );
}

#[test]
fn requests_for_other_devices_are_plain_messages() {
    let mut harness = Harness::connected(config());
    for topic in [
        "/sys/a1TestPK001/dev-002/rrpc/request/1",
        "/sys/otherPK/dev-001/rrpc/request/1",
        "/ext/rrpc/1/otherPK/dev-001/user/get",
        "/sys/a1TestPK001/dev-001/rrpc/response/1",
        "/sys/a1TestPK001/dev-001/rrpc/request/not-a-number",
    ] {
        harness.incoming(topic, b"x", None);
        let events = harness.events();
        assert!(
            matches!(events.as_slice(), [Event::Message { message, .. }] if message.topic.as_str() == topic),
            "{topic}: {events:?}"
        );
    }
    assert_eq!(
        harness
            .conn
            .respond_rrpc(MessageId(1), &b"x"[..], harness.now),
        Err(ClientError::UnknownRrpcMessageId(MessageId(1)))
    );
}

#[test]
fn without_an_identity_there_is_no_rrpc() {
    let config = ClientConfig::new(Credentials::anonymous("tool").expect("valid"));
    let mut harness = Harness::connected(config);
    harness.incoming("/sys/a1TestPK001/dev-001/rrpc/request/1", b"x", None);
    assert!(matches!(
        harness.events().as_slice(),
        [Event::Message { .. }]
    ));
    assert_eq!(
        harness
            .conn
            .respond_rrpc(MessageId(1), &b"x"[..], harness.now),
        Err(ClientError::NoIdentity)
    );
}

#[test]
fn pending_requests_are_bounded_forgetting_the_oldest() {
    let mut config = config();
    config.max_pending_rrpc = 2;
    let mut harness = Harness::connected(config);
    for message_id in 1..=3 {
        harness.incoming(
            &format!("/sys/a1TestPK001/dev-001/rrpc/request/{message_id}"),
            b"x",
            None,
        );
    }
    assert_eq!(harness.events().len(), 3);
    assert_eq!(
        harness
            .conn
            .respond_rrpc(MessageId(1), &b"late"[..], harness.now),
        Err(ClientError::UnknownRrpcMessageId(MessageId(1)))
    );
    for message_id in [3, 2] {
        harness
            .conn
            .respond_rrpc(MessageId(message_id), &b"ok"[..], harness.now)
            .expect("still pending");
    }
    assert_eq!(
        harness
            .sent()
            .iter()
            .filter(|packet| matches!(packet, Packet::Publish(_)))
            .count(),
        2
    );
}

#[test]
fn an_answer_given_while_disconnected_waits_for_the_connection() {
    let mut harness = Harness::connected(config());
    harness.incoming("/sys/a1TestPK001/dev-001/rrpc/request/8", b"x", None);
    harness.events();
    harness.conn.handle_transport_closed(harness.now);
    harness.events();
    harness
        .conn
        .respond_rrpc(MessageId(8), &b"ok"[..], harness.now)
        .expect("queued");
    let (sent, _) = harness.connect(false);
    assert!(
        matches!(
            sent.as_slice(),
            [Packet::Publish(p)] if p.topic == "/sys/a1TestPK001/dev-001/rrpc/response/8"
                && p.qos.qos() == QoS::AtMostOnce
        ),
        "{sent:?}"
    );
}

#[test]
fn a_custom_topic_call_is_told_apart_by_the_hubs_own_rule() {
    // `aliot_topic::is_device_topic` decides for the hub (which calls it routes), the HTTP API
    // and the client alike: the device's user and thing-model topics are calls; a topic that
    // only mentions the device further down (the shadow's) is a plain message, as the hub
    // never makes a call of it.
    let mut harness = Harness::connected(config());
    for (topic, is_call) in [
        ("/ext/rrpc/7/a1TestPK001/dev-001/user/get", true),
        ("/ext/rrpc/7/sys/a1TestPK001/dev-001/thing/service/x", true),
        ("/ext/rrpc/7/shadow/get/a1TestPK001/dev-001", false),
        ("/ext/rrpc/7/a1TestPK001/dev-002/user/get", false),
    ] {
        harness.incoming(topic, b"x", None);
        let events = harness.events();
        assert_eq!(
            matches!(events[..], [Event::RrpcRequest { .. }]),
            is_call,
            "{topic}: {events:?}"
        );
        assert_eq!(
            aliot_topic::is_device_topic(&topic["/ext/rrpc/7".len()..], "a1TestPK001", "dev-001"),
            is_call,
            "{topic}"
        );
    }
}
