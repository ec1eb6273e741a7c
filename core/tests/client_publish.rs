//! The device client's commands on a live connection: PUBLISH at QoS 0 and 1, the in-flight
//! window, packet ids, SUBSCRIBE and UNSUBSCRIBE, against a scripted broker.

mod client_broker;

use std::collections::HashSet;

use aliot_core::client::{
    ClientError, DEFAULT_MAX_IN_FLIGHT, DisconnectReason, Event, ProtocolViolation, PublishToken,
};
use aliot_core::codec::{Packet, PublishQos, QoS, SubAckReturnCode, Subscribe, Unsubscribe};
use aliot_topic::{TopicFilter, TopicLimits, TopicName};
use bytes::Bytes;
use client_broker::{Harness, config, id, publishes, topic};

#[test]
fn qos0_publish_goes_out_at_once_without_an_id() {
    let mut harness = Harness::connected(config());
    let token = harness
        .conn
        .publish(
            topic("update"),
            &b"{\"t\":21}"[..],
            QoS::AtMostOnce,
            harness.now,
        )
        .expect("accepted");
    let PublishToken::AtMostOnce(token) = token else {
        panic!("a QoS 0 PUBLISH has no packet id: {token:?}");
    };
    assert!(harness.events().is_empty(), "not handed out yet");
    let sent = harness.sent();
    let [Packet::Publish(publish)] = sent.as_slice() else {
        panic!("expected one PUBLISH, got {sent:?}");
    };
    assert_eq!(publish.qos, PublishQos::AtMostOnce);
    assert_eq!(publish.topic, "/a1TestPK001/dev-001/user/update");
    assert_eq!(&publish.payload[..], b"{\"t\":21}");
    assert!(!publish.dup && !publish.retain);
    assert_eq!(harness.conn.in_flight_len(), 0);
    assert_eq!(harness.events(), [Event::PublishSent(token)]);
}

#[test]
fn qos1_publish_is_in_flight_until_its_puback() {
    let mut harness = Harness::connected(config());
    let packet_id = harness.publish_qos1(b"on");
    assert_eq!(
        publishes(&harness.sent()),
        [(Some(packet_id.get()), false, Bytes::from_static(b"on"))]
    );
    assert_eq!(harness.conn.in_flight_len(), 1);
    assert!(harness.events().is_empty());

    harness.puback(packet_id);
    assert_eq!(harness.events(), [Event::PublishAcked(packet_id)]);
    assert_eq!(harness.conn.in_flight_len(), 0);

    // A PUBACK for nothing in flight is ignored.
    harness.puback(packet_id);
    assert!(harness.events().is_empty());
    assert!(harness.conn.is_connected());
}

#[test]
fn the_33rd_publish_waits_for_a_puback() {
    let mut harness = Harness::connected(config());
    let ids: Vec<_> = (0..33).map(|_| harness.publish_qos1(b"m")).collect();
    let sent = publishes(&harness.sent());
    assert_eq!(sent.len(), DEFAULT_MAX_IN_FLIGHT);
    assert_eq!(harness.conn.in_flight_len(), 32);
    assert_eq!(harness.conn.queued_len(), 1);

    // A QoS 0 PUBLISH given now waits behind the 33rd, so messages keep their order.
    harness
        .conn
        .publish(topic("update"), &b"after"[..], QoS::AtMostOnce, harness.now)
        .expect("accepted");
    assert!(harness.sent().is_empty());

    harness.puback(ids[5]);
    assert_eq!(harness.events(), [Event::PublishAcked(ids[5])]);
    assert_eq!(
        publishes(&harness.sent()),
        [
            (Some(ids[32].get()), false, Bytes::from_static(b"m")),
            (None, false, Bytes::from_static(b"after")),
        ]
    );
    assert_eq!(harness.conn.in_flight_len(), 32);
    assert_eq!(harness.conn.queued_len(), 0);
}

#[test]
fn a_configured_window_of_one_sends_one_at_a_time() {
    let mut config = config();
    config.max_in_flight = 1;
    let mut harness = Harness::connected(config);
    let first = harness.publish_qos1(b"1");
    let second = harness.publish_qos1(b"2");
    assert_eq!(publishes(&harness.sent()).len(), 1);
    harness.puback(first);
    assert_eq!(
        publishes(&harness.sent()),
        [(Some(second.get()), false, Bytes::from_static(b"2"))]
    );
}

#[test]
fn the_queue_is_bounded() {
    let mut config = config();
    config.max_in_flight = 2;
    config.max_queued = 3;
    let mut harness = Harness::connected(config);
    for _ in 0..5 {
        harness.publish_qos1(b"m");
    }
    assert_eq!(
        harness
            .conn
            .publish(topic("update"), &b"m"[..], QoS::AtLeastOnce, harness.now),
        Err(ClientError::QueueFull { capacity: 3 })
    );
    assert_eq!(
        harness
            .conn
            .publish(topic("update"), &b"m"[..], QoS::AtMostOnce, harness.now),
        Err(ClientError::QueueFull { capacity: 3 })
    );
    assert_eq!(harness.conn.queued_len(), 3);
}

#[test]
fn packet_ids_are_never_those_in_flight_or_queued() {
    let mut config = config();
    config.max_in_flight = 8;
    let mut harness = Harness::connected(config);
    let mut held: Vec<aliot_core::codec::PacketId> = Vec::new();
    let mut seen = HashSet::new();
    // A fixed xorshift sequence picks which held packet the broker acknowledges, so ids come
    // back out of order and leave holes; up to 24 are held (8 in flight, the rest queued),
    // and 150,000 publishes wrap the ids twice.
    let mut state: u32 = 0x9E37_79B9;
    let mut next_random = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    };
    for round in 0..150_000 {
        let packet_id = harness.publish_qos1(b"m");
        assert!(
            !held.contains(&packet_id),
            "round {round}: {packet_id} handed out while still held"
        );
        seen.insert(packet_id);
        held.push(packet_id);
        harness.sent();
        while held.len() > 24 || (held.len() > 8 && next_random() % 3 == 0) {
            // Only what was sent can be acknowledged: the first 8 held are in flight.
            let pick = next_random() as usize % harness.conn.in_flight_len();
            let in_flight_ids: Vec<_> = held.iter().take(harness.conn.in_flight_len()).collect();
            let acked = *in_flight_ids[pick];
            harness.puback(acked);
            assert_eq!(harness.events(), [Event::PublishAcked(acked)]);
            held.retain(|&held_id| held_id != acked);
            harness.sent();
        }
    }
    assert_eq!(seen.len(), usize::from(u16::MAX), "every id was used");
}

#[test]
fn packet_ids_wrap_past_65535_and_skip_an_id_still_in_flight() {
    let mut config = config();
    config.max_in_flight = 4;
    let mut harness = Harness::connected(config);
    // Id 1 is never acknowledged.
    let stuck = harness.publish_qos1(b"stuck");
    assert_eq!(stuck, id(1));
    harness.sent();
    let mut previous = stuck.get();
    for _ in 0..70_000 {
        let packet_id = harness.publish_qos1(b"m");
        assert_ne!(packet_id, stuck, "id 1 is still in flight");
        let expected = if previous == u16::MAX {
            2
        } else {
            previous + 1
        };
        assert_eq!(packet_id.get(), expected, "ids go up and wrap past 65535");
        previous = packet_id.get();
        harness.puback(packet_id);
        assert_eq!(harness.events(), [Event::PublishAcked(packet_id)]);
    }
    harness.sent();
    assert_eq!(harness.conn.in_flight_len(), 1);
    harness.puback(stuck);
    assert_eq!(harness.events(), [Event::PublishAcked(stuck)]);
}

#[test]
fn after_a_full_wrap_the_free_id_is_found_past_queued_ones() {
    let mut config = config();
    config.max_in_flight = 2;
    config.max_queued = 70_000;
    let mut harness = Harness::connected(config);
    // Ids 1 and 2 in flight, 3 to 65,535 queued: every id is held.
    for expected in 1..=u16::MAX {
        assert_eq!(harness.publish_qos1(b"m"), id(expected));
    }
    harness.sent();
    assert_eq!(
        harness
            .conn
            .publish(topic("update"), &b"m"[..], QoS::AtLeastOnce, harness.now),
        Err(ClientError::PacketIdsExhausted)
    );
    // 1 is acknowledged (3 goes out): the ids wrap round to 1.
    harness.puback(id(1));
    assert_eq!(harness.publish_qos1(b"m"), id(1));
    // 3 is acknowledged before 2 (4 goes out): 2 is in flight, 3 is next.
    harness.puback(id(3));
    assert_eq!(harness.publish_qos1(b"m"), id(3));
    // 2 is acknowledged (5 goes out): in flight are 4 and 5, queued 6 to 65,535, 1 and 3.
    // The only free id is 2, found only by walking past every queued one.
    harness.puback(id(2));
    assert_eq!(harness.publish_qos1(b"m"), id(2));
    assert_eq!(harness.conn.in_flight_len(), 2);
    assert_eq!(harness.conn.queued_len(), usize::from(u16::MAX) - 2);
}

#[test]
fn every_id_taken_is_an_error_not_a_reuse() {
    let mut config = config();
    config.max_in_flight = 1;
    config.max_queued = 70_000;
    let mut harness = Harness::new(config); // not connected: everything queues
    for _ in 0..u16::MAX {
        harness.publish_qos1(b"m");
    }
    assert_eq!(
        harness
            .conn
            .publish(topic("update"), &b"m"[..], QoS::AtLeastOnce, harness.now),
        Err(ClientError::PacketIdsExhausted)
    );
    // QoS 0 needs no id.
    assert_eq!(
        harness
            .conn
            .publish(topic("update"), &b"m"[..], QoS::AtMostOnce, harness.now)
            .map(PublishToken::packet_id),
        Ok(None)
    );
}

#[test]
fn qos2_and_oversized_publishes_are_refused() {
    let mut config = config();
    config.max_packet_size = 64;
    let mut harness = Harness::connected(config);
    assert_eq!(
        harness
            .conn
            .publish(topic("update"), &b"m"[..], QoS::ExactlyOnce, harness.now),
        Err(ClientError::Qos2NotSupported)
    );
    let result = harness.conn.publish(
        topic("update"),
        vec![0_u8; 100],
        QoS::AtMostOnce,
        harness.now,
    );
    assert!(
        matches!(result, Err(ClientError::PacketTooLarge { max: 64, size }) if size > 100),
        "{result:?}"
    );
    assert!(harness.sent().is_empty());
}

#[test]
fn a_topic_longer_than_an_mqtt_string_is_refused() {
    let mut harness = Harness::connected(config());
    let long = "a".repeat(70_000);
    let topic = TopicName::new(&long, &TopicLimits::with_max_len(100_000)).expect("valid");
    assert_eq!(
        harness
            .conn
            .publish(topic, &b"m"[..], QoS::AtMostOnce, harness.now),
        Err(ClientError::TopicTooLong { len: 70_000 })
    );
}

#[test]
fn subscribe_and_unsubscribe_get_their_answers() {
    let mut harness = Harness::connected(config());
    let get = TopicFilter::from_static("/a1TestPK001/dev-001/user/get");
    let thing = TopicFilter::from_static("/sys/a1TestPK001/dev-001/thing/#");
    let sub_id = harness
        .conn
        .subscribe(
            &[(get.clone(), QoS::AtLeastOnce), (thing, QoS::AtMostOnce)],
            harness.now,
        )
        .expect("accepted");
    assert_eq!(
        harness.sent(),
        [Packet::Subscribe(Subscribe {
            packet_id: sub_id,
            filters: vec![
                (
                    "/a1TestPK001/dev-001/user/get".try_into().expect("valid"),
                    QoS::AtLeastOnce
                ),
                (
                    "/sys/a1TestPK001/dev-001/thing/#"
                        .try_into()
                        .expect("valid"),
                    QoS::AtMostOnce
                ),
            ],
        })]
    );
    let codes = vec![
        SubAckReturnCode::Success(QoS::AtLeastOnce),
        SubAckReturnCode::Failure,
    ];
    harness.suback(sub_id, codes.clone());
    assert_eq!(
        harness.events(),
        [Event::SubAck {
            packet_id: sub_id,
            return_codes: codes
        }]
    );

    let unsub_id = harness
        .conn
        .unsubscribe(&[get], harness.now)
        .expect("accepted");
    assert_ne!(unsub_id, sub_id);
    assert_eq!(
        harness.sent(),
        [Packet::Unsubscribe(Unsubscribe {
            packet_id: unsub_id,
            filters: vec!["/a1TestPK001/dev-001/user/get".try_into().expect("valid")],
        })]
    );
    harness.unsuback(unsub_id);
    assert_eq!(harness.events(), [Event::UnsubAck(unsub_id)]);
    assert_eq!(harness.conn.in_flight_len(), 0);
}

#[test]
fn acknowledgements_of_the_wrong_kind_release_nothing() {
    let mut harness = Harness::connected(config());
    let publish_id = harness.publish_qos1(b"m");
    let sub_id = harness
        .conn
        .subscribe(
            &[(TopicFilter::from_static("a/b"), QoS::AtMostOnce)],
            harness.now,
        )
        .expect("accepted");
    harness.sent();
    harness.unsuback(publish_id);
    harness.puback(sub_id);
    harness.unsuback(sub_id);
    assert!(harness.events().is_empty());
    assert_eq!(harness.conn.in_flight_len(), 2);
    assert!(harness.conn.is_connected());
}

#[test]
fn empty_subscribe_and_unsubscribe_are_refused() {
    let mut harness = Harness::connected(config());
    assert_eq!(
        harness.conn.subscribe(&[], harness.now),
        Err(ClientError::EmptySubscribe)
    );
    assert_eq!(
        harness.conn.unsubscribe(&[], harness.now),
        Err(ClientError::EmptyUnsubscribe)
    );
    assert!(harness.sent().is_empty());
}

#[test]
fn a_suback_with_the_wrong_number_of_codes_is_a_protocol_violation() {
    let mut harness = Harness::connected(config());
    let sub_id = harness
        .conn
        .subscribe(
            &[
                (TopicFilter::from_static("a/b"), QoS::AtMostOnce),
                (TopicFilter::from_static("c/d"), QoS::AtMostOnce),
            ],
            harness.now,
        )
        .expect("accepted");
    harness.sent();
    harness.suback(sub_id, vec![SubAckReturnCode::Success(QoS::AtMostOnce)]);
    assert_eq!(
        harness.events(),
        [Event::Disconnected(DisconnectReason::ProtocolViolation(
            ProtocolViolation::SubAckCountMismatch {
                expected: 2,
                received: 1
            }
        ))]
    );
}

#[test]
fn subscribe_counts_against_the_window_and_keeps_its_place() {
    let mut config = config();
    config.max_in_flight = 1;
    let mut harness = Harness::connected(config);
    let publish_id = harness.publish_qos1(b"first");
    let sub_id = harness
        .conn
        .subscribe(
            &[(TopicFilter::from_static("a/b"), QoS::AtMostOnce)],
            harness.now,
        )
        .expect("accepted");
    assert_eq!(publishes(&harness.sent()).len(), 1);
    harness.puback(publish_id);
    let sent = harness.sent();
    assert!(
        matches!(sent.as_slice(), [Packet::Subscribe(s)] if s.packet_id == sub_id),
        "{sent:?}"
    );
}
