//! A broker that lost the session lost the device's subscriptions: after a CONNACK with
//! `session_present = 0` the client subscribes again by itself to what the application had
//! subscribed to, on a manual clock, across transports.

mod client_broker;

use core::time::Duration;

use aliot_core::client::{ClientError, Event, RESUBSCRIBE_CHUNK};
use aliot_core::codec::{Packet, PacketId, QoS, SubAckReturnCode, Subscribe};
use aliot_topic::TopicFilter;
use client_broker::{Harness, config, topic};

fn filter(suffix: &str) -> TopicFilter {
    TopicFilter::new(
        &format!("/a1TestPK001/dev-001/user/{suffix}"),
        &Default::default(),
    )
    .expect("valid filter")
}

/// The SUBSCRIBE packets among `packets`, as (packet id, [(filter, QoS)]).
fn subscribes(packets: &[Packet]) -> Vec<(PacketId, Vec<(String, QoS)>)> {
    packets
        .iter()
        .filter_map(|packet| match packet {
            Packet::Subscribe(Subscribe { packet_id, filters }) => Some((
                *packet_id,
                filters
                    .iter()
                    .map(|(filter, qos)| (filter.to_string(), *qos))
                    .collect(),
            )),
            _ => None,
        })
        .collect()
}

fn granted(qos: QoS) -> SubAckReturnCode {
    SubAckReturnCode::Success(qos)
}

/// A connected client that subscribed to `filters` and had them all accepted.
fn subscribed(harness: &mut Harness, filters: &[(TopicFilter, QoS)]) -> PacketId {
    let packet_id = harness
        .conn
        .subscribe(filters, harness.now)
        .expect("subscribe taken");
    assert_eq!(subscribes(&harness.sent()).len(), 1);
    let codes = filters.iter().map(|(_, qos)| granted(*qos)).collect();
    harness.suback(packet_id, codes);
    assert!(matches!(harness.events()[..], [Event::SubAck { .. }]));
    packet_id
}

/// The transport drops, a minute passes, and a new one comes up with this CONNACK.
fn reconnect(harness: &mut Harness, session_present: bool) -> (Vec<Packet>, Vec<Event>) {
    harness.conn.handle_transport_closed(harness.now);
    let events = harness.events();
    assert!(matches!(events[..], [Event::Disconnected(_)]), "{events:?}");
    harness.advance(Duration::from_secs(60));
    harness.connect(session_present)
}

#[test]
fn subscriptions_come_back_after_a_connack_without_the_session() {
    let mut harness = Harness::connected(config());
    let get = (filter("get"), QoS::AtLeastOnce);
    let all = (filter("#"), QoS::AtMostOnce);
    subscribed(&mut harness, &[get.clone(), all.clone()]);
    assert_eq!(harness.conn.subscriptions_len(), 2);

    let (sent, events) = reconnect(&mut harness, false);
    assert!(events.is_empty(), "{events:?}");
    let resent = subscribes(&sent);
    let [(packet_id, filters)] = resent.as_slice() else {
        panic!("expected one SUBSCRIBE, got {sent:?}");
    };
    // In filter order, each with the QoS the application asked for.
    assert_eq!(
        filters,
        &[
            (all.0.to_string(), QoS::AtMostOnce),
            (get.0.to_string(), QoS::AtLeastOnce)
        ]
    );

    harness.suback(
        *packet_id,
        vec![granted(QoS::AtMostOnce), granted(QoS::AtLeastOnce)],
    );
    assert_eq!(
        harness.events(),
        [Event::Resubscribed {
            packet_id: *packet_id,
            results: vec![
                (all.0, granted(QoS::AtMostOnce)),
                (get.0, granted(QoS::AtLeastOnce)),
            ],
        }]
    );
    // And a message on them arrives as before.
    harness.incoming("/a1TestPK001/dev-001/user/get", b"on", Some(5));
    assert!(matches!(harness.events()[..], [Event::Message { .. }]));
}

#[test]
fn a_resumed_session_is_not_subscribed_again() {
    let mut config = config();
    config.clean_session = false;
    let mut harness = Harness::connected(config);
    subscribed(&mut harness, &[(filter("get"), QoS::AtLeastOnce)]);

    let (sent, events) = reconnect(&mut harness, true);
    assert!(sent.is_empty(), "{sent:?}");
    assert!(events.is_empty(), "{events:?}");
}

#[test]
fn every_session_loss_restores_them_again() {
    let mut harness = Harness::connected(config());
    subscribed(&mut harness, &[(filter("get"), QoS::AtLeastOnce)]);
    for _ in 0..3 {
        let (sent, _) = reconnect(&mut harness, false);
        let resent = subscribes(&sent);
        let [(packet_id, filters)] = resent.as_slice() else {
            panic!("expected one SUBSCRIBE, got {sent:?}");
        };
        assert_eq!(filters.len(), 1);
        harness.suback(*packet_id, vec![granted(QoS::AtLeastOnce)]);
        assert!(matches!(harness.events()[..], [Event::Resubscribed { .. }]));
    }
}

#[test]
fn unsubscribed_and_refused_filters_stay_gone() {
    let mut harness = Harness::connected(config());
    let [a, b, c] = [filter("a"), filter("b"), filter("c")];
    let packet_id = harness
        .conn
        .subscribe(
            &[
                (a.clone(), QoS::AtLeastOnce),
                (b.clone(), QoS::AtLeastOnce),
                (c.clone(), QoS::AtLeastOnce),
            ],
            harness.now,
        )
        .expect("taken");
    harness.sent();
    harness.suback(
        packet_id,
        vec![
            granted(QoS::AtLeastOnce),
            SubAckReturnCode::Failure,
            granted(QoS::AtLeastOnce),
        ],
    );
    harness.events();
    let unsubscribe = harness.conn.unsubscribe(&[c], harness.now).expect("taken");
    harness.sent();
    harness.unsuback(unsubscribe);
    harness.events();
    assert_eq!(harness.conn.subscriptions_len(), 1);

    let (sent, _) = reconnect(&mut harness, false);
    let resent = subscribes(&sent);
    assert_eq!(
        resent
            .iter()
            .map(|(_, filters)| filters.clone())
            .collect::<Vec<_>>(),
        [vec![(a.to_string(), QoS::AtLeastOnce)]]
    );

    // A filter the broker refuses on the way back is forgotten too.
    let (resubscribe, _) = resent[0];
    harness.suback(resubscribe, vec![SubAckReturnCode::Failure]);
    assert_eq!(
        harness.events(),
        [Event::Resubscribed {
            packet_id: resubscribe,
            results: vec![(a, SubAckReturnCode::Failure)],
        }]
    );
    assert_eq!(harness.conn.subscriptions_len(), 0);
    let (sent, events) = reconnect(&mut harness, false);
    assert!(sent.is_empty() && events.is_empty(), "{sent:?} {events:?}");
}

#[test]
fn an_unanswered_subscribe_goes_out_once_and_answers_its_caller() {
    let mut harness = Harness::connected(config());
    let packet_id = harness
        .conn
        .subscribe(&[(filter("get"), QoS::AtLeastOnce)], harness.now)
        .expect("taken");
    assert_eq!(subscribes(&harness.sent()).len(), 1);

    // Lost before its SUBACK: the SUBSCRIBE itself goes out again, no second one beside it.
    let (sent, _) = reconnect(&mut harness, false);
    let resent = subscribes(&sent);
    assert_eq!(
        resent.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [packet_id]
    );
    harness.suback(packet_id, vec![granted(QoS::AtLeastOnce)]);
    assert_eq!(
        harness.events(),
        [Event::SubAck {
            packet_id,
            return_codes: vec![granted(QoS::AtLeastOnce)],
        }]
    );

    // Now answered, it is restored after the next loss.
    let (sent, _) = reconnect(&mut harness, false);
    assert_eq!(subscribes(&sent).len(), 1);
}

#[test]
fn many_filters_go_in_subscribes_of_sixteen() {
    let mut harness = Harness::connected(config());
    let filters: Vec<_> = (0..RESUBSCRIBE_CHUNK + 4)
        .map(|n| (filter(&format!("f{n:02}")), QoS::AtMostOnce))
        .collect();
    subscribed(&mut harness, &filters);

    let (sent, _) = reconnect(&mut harness, false);
    let sizes: Vec<usize> = subscribes(&sent)
        .iter()
        .map(|(_, filters)| filters.len())
        .collect();
    assert_eq!(sizes, [RESUBSCRIBE_CHUNK, 4]);
}

#[test]
fn resubscribes_go_behind_queued_commands_and_wait_for_the_window() {
    let mut config = config();
    config.max_in_flight = 1;
    config.max_queued = 1;
    let mut harness = Harness::connected(config);
    subscribed(&mut harness, &[(filter("get"), QoS::AtLeastOnce)]);
    harness.conn.handle_transport_closed(harness.now);
    harness.events();

    // Offline, the application fills the queue; the SUBSCRIBE the session needs is not
    // refused for it, and goes after the PUBLISH, once the window has room.
    let queued = harness.publish_qos1(b"offline");
    assert_eq!(
        harness.conn.publish(
            topic("update"),
            &b"one more"[..],
            QoS::AtLeastOnce,
            harness.now
        ),
        Err(ClientError::QueueFull { capacity: 1 })
    );
    let (sent, _) = harness.connect(false);
    assert!(matches!(sent[..], [Packet::Publish(_)]), "{sent:?}");
    assert_eq!(harness.conn.queued_len(), 1);

    harness.puback(queued);
    assert_eq!(harness.events(), [Event::PublishAcked(queued)]);
    assert_eq!(subscribes(&harness.sent()).len(), 1);
}

#[test]
fn with_the_switch_off_the_application_subscribes_again_itself() {
    let mut config = config();
    config.resubscribe_on_session_loss = false;
    let mut harness = Harness::connected(config);
    subscribed(&mut harness, &[(filter("get"), QoS::AtLeastOnce)]);
    let (sent, events) = reconnect(&mut harness, false);
    assert!(sent.is_empty() && events.is_empty(), "{sent:?} {events:?}");
}
