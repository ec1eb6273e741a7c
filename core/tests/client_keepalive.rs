//! Keepalive over simulated time: PINGREQ when nothing was sent for the keepalive period, and
//! the connection declared dead when the broker stays silent after it.

mod client_broker;

use core::time::Duration;

use aliot_core::Instant;
use aliot_core::client::{DEFAULT_PING_TIMEOUT, DisconnectReason, Event};
use aliot_core::codec::{Packet, QoS};
use client_broker::{Harness, config, topic};

/// Runs the client's timers until `until`, the broker answering every PINGREQ at once;
/// returns when each PINGREQ went out.
fn run_answering_pings(harness: &mut Harness, until: Instant) -> Vec<Instant> {
    let mut pings = Vec::new();
    while let Some(deadline) = harness.conn.poll_timeout() {
        if deadline > until {
            break;
        }
        harness.now = deadline;
        harness.conn.handle_timeout(harness.now);
        for packet in harness.sent() {
            assert_eq!(packet, Packet::PingReq);
            pings.push(harness.now);
            harness.deliver(Packet::PingResp);
        }
        assert!(harness.events().is_empty());
    }
    pings
}

#[test]
fn pings_every_keepalive_period_for_twenty_minutes() {
    let mut config = config();
    config.keep_alive_secs = 60;
    let mut harness = Harness::connected(config);
    let start = harness.now;
    let pings = run_answering_pings(&mut harness, start + Duration::from_secs(20 * 60));
    let expected: Vec<_> = (1..=20)
        .map(|minute| start + Duration::from_secs(60 * minute))
        .collect();
    assert_eq!(pings, expected);
    assert!(harness.conn.is_connected());
}

#[test]
fn traffic_postpones_the_ping() {
    let mut config = config();
    config.keep_alive_secs = 30;
    let mut harness = Harness::connected(config);
    let start = harness.now;

    // A message at 20 s: the next ping is due 30 s after it, not at 30 s.
    harness.advance(Duration::from_secs(20));
    harness
        .conn
        .publish(topic("update"), &b"m"[..], QoS::AtMostOnce, harness.now)
        .expect("accepted");
    harness.sent();
    assert!(matches!(harness.events()[..], [Event::PublishSent(_)]));
    assert_eq!(
        harness.conn.poll_timeout(),
        Some(start + Duration::from_secs(50))
    );
    harness.now = start + Duration::from_secs(30);
    harness.conn.handle_timeout(harness.now);
    assert!(harness.sent().is_empty(), "no PINGREQ before its time");

    let pings = run_answering_pings(&mut harness, start + Duration::from_secs(20 * 60));
    assert_eq!(pings.first(), Some(&(start + Duration::from_secs(50))));
    assert_eq!(pings.len(), 39, "every 30 s from 50 s to 1,190 s");

    // Incoming traffic alone does not: the rule is about what the client sent.
    let before = harness.conn.poll_timeout();
    harness.advance(Duration::from_secs(5));
    harness.incoming("/a1TestPK001/dev-001/user/get", b"x", None);
    harness.events();
    assert_eq!(harness.conn.poll_timeout(), before);
}

#[test]
fn a_missing_pingresp_ends_the_connection() {
    let mut config = config();
    config.keep_alive_secs = 60;
    let mut harness = Harness::connected(config);
    let start = harness.now;

    // Twenty minutes of answered pings, then silence.
    run_answering_pings(&mut harness, start + Duration::from_secs(20 * 60));
    harness.now = harness.conn.poll_timeout().expect("a ping is due");
    assert_eq!(harness.now, start + Duration::from_secs(21 * 60));
    harness.conn.handle_timeout(harness.now);
    assert_eq!(harness.sent(), [Packet::PingReq]);
    let ping_at = harness.now;
    assert_eq!(
        harness.conn.poll_timeout(),
        Some(ping_at + DEFAULT_PING_TIMEOUT)
    );

    harness.now = ping_at + (DEFAULT_PING_TIMEOUT - Duration::from_millis(1));
    harness.conn.handle_timeout(harness.now);
    assert!(harness.events().is_empty(), "still within the ping timeout");

    harness.now = ping_at + DEFAULT_PING_TIMEOUT;
    harness.conn.handle_timeout(harness.now);
    assert_eq!(
        harness.events(),
        [Event::Disconnected(DisconnectReason::KeepaliveTimeout)]
    );
    assert!(!harness.conn.is_connected());
    assert_eq!(harness.conn.poll_timeout(), None);
}

#[test]
fn any_packet_after_the_ping_proves_the_broker_alive() {
    let mut config = config();
    config.keep_alive_secs = 60;
    let mut harness = Harness::connected(config);
    harness.advance(Duration::from_secs(60));
    harness.conn.handle_timeout(harness.now);
    assert_eq!(harness.sent(), [Packet::PingReq]);

    harness.advance(Duration::from_secs(3));
    harness.incoming("/a1TestPK001/dev-001/user/get", b"x", None);
    harness.events();
    harness.now = harness.now + DEFAULT_PING_TIMEOUT;
    harness.conn.handle_timeout(harness.now);
    assert!(harness.events().is_empty());
    assert!(harness.conn.is_connected());
}

#[test]
fn the_ping_timeout_is_configurable() {
    let mut config = config();
    config.keep_alive_secs = 30;
    config.ping_timeout = Duration::from_secs(2);
    let mut harness = Harness::connected(config);
    harness.advance(Duration::from_secs(30));
    harness.conn.handle_timeout(harness.now);
    assert_eq!(harness.sent(), [Packet::PingReq]);
    harness.advance(Duration::from_secs(2));
    harness.conn.handle_timeout(harness.now);
    assert_eq!(
        harness.events(),
        [Event::Disconnected(DisconnectReason::KeepaliveTimeout)]
    );
}

#[test]
fn keepalive_zero_never_pings() {
    let mut config = config();
    config.keep_alive_secs = 0;
    let mut harness = Harness::connected(config);
    assert_eq!(harness.conn.poll_timeout(), None);
    harness.advance(Duration::from_secs(20 * 60));
    harness.conn.handle_timeout(harness.now);
    assert!(harness.sent().is_empty());
    assert!(harness.events().is_empty());
    assert!(harness.conn.is_connected());
}
