//! The broker over real loopback sockets: refusals, QoS 1, kept sessions, takeover, ACL,
//! backpressure, the CONNECT deadline, graceful shutdown, services beside the broker and the
//! connection cap.

use std::time::Duration;

use aliot_auth::SecureMode;
use aliot_core::codec::{Packet, PublishQos, QoS, Will};
use aliot_core::hub::RrpcOutcome;
use aliot_io::Runtime;
use aliot_io::broker::{Broker, PublishError, RrpcError};
use aliot_io::runtime::sleep;
use aliot_topic::{TopicLimits, TopicName};

use crate::support::*;
use bytes::Bytes;
use futures_util::future::join3;

const BROADCAST: &str = "/broadcast/a1TestPK001/#";
const NEWS: &str = "/broadcast/a1TestPK001/news";

/// The CONNACK code a CONNECT gets, after which the broker closes the connection.
async fn refused_with<R: Runtime>(addr: std::net::SocketAddr, raw_connect: &[u8]) -> u8 {
    let mut client = TestClient::<R>::tcp(addr).await;
    client.send_raw(raw_connect).await;
    let packets = client.expect_closed().await;
    match packets.as_slice() {
        [Packet::ConnAck(connack)] => {
            assert!(!connack.session_present);
            connack.code as u8
        }
        other => panic!("expected one CONNACK before the close, got {other:?}"),
    }
}

fn encode(packet: Packet) -> Vec<u8> {
    let mut buf = bytes::BytesMut::new();
    packet.encode(&mut buf).unwrap();
    buf.to_vec()
}

pub async fn each_refusal_gets_its_connack_code_then_the_close<R: Runtime>() {
    let (broker, addr) = start::<R>(config(false)).await;
    let (client_id, username, password) = credentials(1, SecureMode::Tcp);

    // MQTT 5 (protocol level 5): unacceptable protocol version.
    let mqtt5 = [
        0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0, 1, b'a',
    ];
    assert_eq!(refused_with::<R>(addr, &mqtt5).await, 1);

    // Keepalive below 30 s: identifier rejected (the profile's code for it).
    let mut short_keepalive = device_connect(1, true);
    short_keepalive.keep_alive = 10;
    assert_eq!(
        refused_with::<R>(addr, &encode(Packet::from(short_keepalive))).await,
        2
    );

    // A username without `&`: bad user name or password.
    let bad_username = connect_packet(&client_id, Some("dev-001"), Some(&password));
    assert_eq!(
        refused_with::<R>(addr, &encode(Packet::from(bad_username))).await,
        4
    );

    // The signature of another secret: not authorized.
    let wrong = "0".repeat(password.len());
    let wrong_signature = connect_packet(&client_id, Some(&username), Some(&wrong));
    assert_eq!(
        refused_with::<R>(addr, &encode(Packet::from(wrong_signature))).await,
        5
    );

    // A device nobody registered: not authorized.
    let (ghost_id, ghost_user, ghost_password) = {
        let identity = aliot_auth::DeviceIdentity::new(PRODUCT, "ghost");
        let secret = aliot_auth::DeviceSecret::new("whatever");
        let signed = aliot_auth::SignRequest::new(&identity, &secret, SecureMode::Tcp)
            .sign()
            .unwrap();
        (signed.client_id, signed.username, signed.password)
    };
    let ghost = connect_packet(&ghost_id, Some(&ghost_user), Some(&ghost_password));
    assert_eq!(
        refused_with::<R>(addr, &encode(Packet::from(ghost))).await,
        5
    );

    // A will: not supported, not authorized.
    let mut with_will = device_connect(1, true);
    with_will.will = Some(Will {
        topic: utf8("/a1TestPK001/dev-001/user/update"),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtMostOnce,
        retain: false,
    });
    assert_eq!(
        refused_with::<R>(addr, &encode(Packet::from(with_will))).await,
        5
    );

    // Each refusal is counted under its code once its close reached the hub.
    let stats = wait_for_stats::<R>(&broker.handle(), "six refusals", |s| {
        s.counters.closed.refused == 6
    })
    .await;
    assert_eq!(stats.counters.connections_refused, [0, 1, 1, 0, 1, 3]);
    assert_eq!(stats.counters.connections_accepted, 0);
    broker.shutdown().await;
}

pub async fn qos1_and_qos0_travel_end_to_end<R: Runtime>() {
    let (broker, addr) = start::<R>(config(false)).await;
    let (mut publisher, _) = TestClient::<R>::device(addr, 1, true).await;
    let (mut subscriber, _) = TestClient::<R>::device(addr, 2, true).await;
    assert_eq!(subscriber.subscribe(&[BROADCAST]).await, [1]);

    publisher.publish1(NEWS, b"qos one").await;
    let delivered = subscriber.recv_publish().await;
    assert_eq!(delivered.topic.as_str(), NEWS);
    assert_eq!(&delivered.payload[..], b"qos one");
    assert!(matches!(delivered.qos, PublishQos::AtLeastOnce(_)));
    assert!(!delivered.dup && !delivered.retain);
    subscriber.puback(&delivered).await;

    publisher.publish0(NEWS, b"qos zero").await;
    let delivered = subscriber.recv_publish().await;
    assert_eq!(&delivered.payload[..], b"qos zero");
    assert_eq!(delivered.qos, PublishQos::AtMostOnce);

    let stats = broker.handle().stats().await;
    assert_eq!(stats.connections, 2);
    assert_eq!(stats.counters.messages_in, 2);
    assert_eq!(stats.counters.messages_out, 2);
    publisher.disconnect().await;
    subscriber.disconnect().await;
    broker.shutdown().await;
}

pub async fn a_kept_session_gets_what_arrived_while_offline_across_a_restart<R: Runtime>() {
    let (broker, addr) = start::<R>(config(false)).await;
    let (mut publisher, _) = TestClient::<R>::device(addr, 1, true).await;

    let (mut subscriber, session_present) = TestClient::<R>::device(addr, 2, false).await;
    assert!(!session_present);
    assert_eq!(subscriber.subscribe(&[BROADCAST]).await, [1]);
    // One delivery left unacknowledged when the client goes away.
    publisher.publish1(NEWS, b"unacked").await;
    let unacked = subscriber.recv_publish().await;
    assert_eq!(&unacked.payload[..], b"unacked");
    subscriber.disconnect().await;

    // While it is away: two QoS 1 messages are kept, a QoS 0 one is not.
    publisher.publish1(NEWS, b"first").await;
    publisher.publish0(NEWS, b"not kept").await;
    publisher.publish1(NEWS, b"second").await;

    let (mut subscriber, session_present) = TestClient::<R>::device(addr, 2, false).await;
    assert!(session_present);
    let resent = subscriber.recv_publish().await;
    assert_eq!(&resent.payload[..], b"unacked");
    assert!(resent.dup, "a re-sent delivery carries DUP");
    assert_eq!(resent.qos, unacked.qos, "with its packet id");
    let first = subscriber.recv_publish().await;
    let second = subscriber.recv_publish().await;
    assert_eq!(&first.payload[..], b"first");
    assert_eq!(&second.payload[..], b"second");
    assert!(!first.dup && !second.dup);
    for delivery in [&resent, &first, &second] {
        subscriber.puback(delivery).await;
    }
    // Nothing else was waiting: the next packet is the answer to this ping.
    subscriber.ping().await;
    let stats = broker.handle().stats().await;
    assert_eq!(stats.counters.dropped.offline_qos0, 1);

    // A clean restart drops the session.
    subscriber.disconnect().await;
    let (subscriber, session_present) = TestClient::<R>::device(addr, 2, true).await;
    assert!(!session_present);
    subscriber.disconnect().await;
    publisher.disconnect().await;
    broker.shutdown().await;
}

pub async fn a_second_connection_of_a_device_takes_over<R: Runtime>() {
    let (broker, addr) = start::<R>(config(false)).await;
    let (mut first, _) = TestClient::<R>::device(addr, 1, true).await;
    let (mut second, _) = TestClient::<R>::device(addr, 1, true).await;
    let left = first.expect_closed().await;
    assert!(left.is_empty(), "the first connection got {left:?}");
    drop(first);
    second.ping().await;
    let stats = wait_for_stats::<R>(&broker.handle(), "the close of the first", |s| {
        s.counters.closed.taken_over == 1
    })
    .await;
    assert_eq!(stats.counters.takeovers, 1);
    assert_eq!(stats.connections, 1);
    second.disconnect().await;
    broker.shutdown().await;
}

pub async fn the_acl_refuses_other_devices_topics<R: Runtime>() {
    // Open mode, so that a generic client can watch every topic.
    let (broker, addr) = start::<R>(config(true)).await;
    let (mut watcher, connack) =
        TestClient::<R>::connect(addr, connect_packet("watcher", None, None)).await;
    assert_eq!(connack.code as u8, 0);
    assert_eq!(watcher.subscribe(&["#"]).await, [1]);

    let (mut device, _) = TestClient::<R>::device(addr, 1, true).await;
    let codes = device
        .subscribe(&[
            "/a1TestPK001/dev-002/user/get",
            "/a1TestPK001/dev-001/user/get",
            "/a1TestPK001/+/user/get",
        ])
        .await;
    assert_eq!(codes, [0x80, 1, 0x80]);

    // Refused, yet acknowledged; then one it may publish.
    device
        .publish1("/a1TestPK001/dev-002/user/update", b"not mine")
        .await;
    device
        .publish1("/a1TestPK001/dev-001/user/update", b"mine")
        .await;
    let seen = watcher.recv_publish().await;
    assert_eq!(seen.topic.as_str(), "/a1TestPK001/dev-001/user/update");
    assert_eq!(&seen.payload[..], b"mine");

    let stats = broker.handle().stats().await;
    assert_eq!(stats.counters.publish_denied, 1);
    assert_eq!(stats.counters.subscribe_denied, 2);
    device.disconnect().await;
    watcher.disconnect().await;
    broker.shutdown().await;
}

pub async fn a_device_that_does_not_read_loses_qos0_and_slows_nobody<R: Runtime>() {
    let mut config = config(false);
    config.server.max_pending_output = 16 * 1024;
    let (broker, addr) = start::<R>(config).await;
    let handle = broker.handle();
    let (mut sleeper, _) = TestClient::<R>::device(addr, 1, true).await;
    assert_eq!(sleeper.subscribe(&[BROADCAST]).await, [1]);
    let (mut other, _) = TestClient::<R>::device(addr, 2, true).await;

    // Far more than the socket buffers and the connection's backlog hold; the sleeper reads
    // nothing meanwhile.
    let topic = TopicName::new(NEWS, &TopicLimits::default()).unwrap();
    let payload = Bytes::from(vec![b'x'; 16 * 1024]);
    let stats = {
        let mut published = 0;
        loop {
            for _ in 0..256 {
                handle
                    .publish(topic.clone(), payload.clone(), QoS::AtMostOnce)
                    .await
                    .unwrap();
            }
            published += 256;
            let stats = handle.stats().await;
            if stats.counters.dropped.slow_consumer > 0 {
                break stats;
            }
            assert!(
                published < 64 * 1024,
                "{published} messages of 16 KiB and nothing dropped: {stats:?}"
            );
        }
    };
    assert!(stats.counters.dropped.slow_consumer > 0);
    // The broker still serves everyone else.
    other.ping().await;
    other.disconnect().await;
    // And the sleeper reads what was kept, then is still connected.
    let first = sleeper.recv_publish().await;
    assert_eq!(first.payload.len(), 16 * 1024);
    drop(sleeper);
    broker.shutdown().await;
}

pub async fn a_silent_connection_is_closed_at_the_connect_deadline<R: Runtime>() {
    let mut config = config(false);
    config.server.connect_timeout = Duration::from_millis(200);
    let (broker, addr) = start::<R>(config).await;
    let mut silent = TestClient::<R>::tcp(addr).await;
    assert!(silent.expect_closed().await.is_empty());
    drop(silent);
    wait_for_stats::<R>(&broker.handle(), "a connect timeout", |s| {
        s.counters.closed.connect_timeout == 1
    })
    .await;
    broker.shutdown().await;
}

pub async fn graceful_shutdown_closes_everyone_and_ends_pending_calls<R: Runtime>() {
    let (broker, addr) = start::<R>(config(false)).await;
    let handle = broker.handle();
    let mut client = TestClient::<R>::rrpc_device(addr, 1).await;
    // A connection that has not said anything yet.
    let silent = TestClient::<R>::tcp(addr).await;

    // An RRPC call the device never answers, pending when the broker stops.
    let call = rrpc_in_background::<R>(&handle, 1, b"hello?", Duration::from_secs(8));
    let request = client.recv_publish().await;
    assert_eq!(&request.payload[..], b"hello?");

    // The clients see the close while the broker waits for them to go, as real ones do.
    let see_close = |mut client: TestClient<R>| async move {
        let left = client.expect_closed().await;
        assert!(left.is_empty(), "packets before the close: {left:?}");
    };
    let shutdown = within::<R, _>("shutdown", broker.shutdown());
    join3(shutdown, see_close(client), see_close(silent)).await;

    let reply = call.await.expect("the call was made");
    assert_eq!(reply.outcome, RrpcOutcome::Unknown);
    assert!(
        R::default()
            .connect("127.0.0.1", addr.port())
            .await
            .is_err(),
        "the listener is closed"
    );

    // The handle outlives the broker and says so.
    let (identity, _) = device(1);
    let late = handle
        .rrpc(&identity, Bytes::new(), Duration::from_secs(1))
        .await;
    assert_eq!(late, Err(RrpcError::BrokerStopped));
    let topic = TopicName::new(NEWS, &TopicLimits::default()).unwrap();
    assert_eq!(
        handle.publish(topic, Bytes::new(), QoS::AtMostOnce).await,
        Err(PublishError::BrokerStopped)
    );
    let stats = handle.stats().await;
    assert_eq!(stats.counters.connections_accepted, 1);
    assert_eq!(stats.counters.rrpc.unknown, 1);
}

pub async fn start_names_the_address_it_cannot_bind<R: Runtime>() {
    let (broker, addr) = start::<R>(config(false)).await;
    let mut taken = config(false);
    taken.listeners[0].bind = addr;
    let error = Broker::<R>::start(taken)
        .await
        .expect_err("the port is taken");
    assert!(error.to_string().contains(&addr.to_string()), "{error}");
    broker.shutdown().await;
}

pub async fn a_service_beside_the_broker_stops_with_it_and_is_waited_for<R: Runtime>() {
    let (mut broker, addr) = start::<R>(config(false)).await;
    let (stopped_tx, mut stopped) = tokio_sync::sync::oneshot::channel();
    broker.spawn_service("a test service", move |stop| async move {
        stop.raised().await;
        // Work after the signal, as an HTTP server finishing its requests has.
        yield_now().await;
        let _ = stopped_tx.send(());
    });
    let (mut device, _) = TestClient::<R>::device(addr, 1, true).await;
    device.ping().await;
    assert_eq!(
        stopped.try_recv(),
        Err(tokio_sync::sync::oneshot::error::TryRecvError::Empty),
        "running while the broker runs"
    );
    broker.shutdown().await;
    assert_eq!(
        stopped.try_recv(),
        Ok(()),
        "the broker's shutdown stopped the service and waited for its end"
    );
    assert!(device.expect_closed().await.is_empty());
}

pub async fn over_the_connection_cap_a_device_is_closed_until_one_leaves<R: Runtime>() {
    let mut config = config(false);
    config.max_connections = std::num::NonZeroUsize::new(2).unwrap();
    let (broker, addr) = start::<R>(config).await;
    let (first, _) = TestClient::<R>::device(addr, 1, true).await;
    let (mut second, _) = TestClient::<R>::device(addr, 2, true).await;

    // The third is closed without a CONNACK: its CONNECT is never read.
    let mut third = TestClient::<R>::tcp(addr).await;
    third.send(&Packet::from(device_connect(3, true))).await;
    assert_eq!(third.expect_closed().await, [], "no CONNACK over the cap");
    assert_eq!(broker.handle().connections_refused_at_cap(), 1);
    assert_eq!(broker.handle().stats().await.connections, 2);
    // The two inside go on.
    second.ping().await;

    // One leaves; its slot is free once its task has ended, which a device cannot see, so the
    // next one tries until it gets in.
    first.disconnect().await;
    let mut attempts = 0_u32;
    let mut third = within::<R, _>("a device gets in after one left", async {
        loop {
            attempts += 1;
            let mut client = TestClient::<R>::tcp(addr).await;
            client.send(&Packet::from(device_connect(3, true))).await;
            match client.next_packet().await {
                Some(Packet::ConnAck(connack)) => {
                    assert_eq!(connack.code as u8, 0, "device 3 is accepted");
                    return client;
                }
                Some(other) => panic!("expected CONNACK or the close, got {other:?}"),
                None => sleep(&R::default(), Duration::from_millis(10)).await,
            }
        }
    })
    .await;
    assert_eq!(
        broker.handle().connections_refused_at_cap(),
        u64::from(attempts),
        "each attempt but the last was refused at the cap, and counted"
    );
    third.ping().await;
    second.ping().await;

    third.disconnect().await;
    second.disconnect().await;
    broker.shutdown().await;
}
