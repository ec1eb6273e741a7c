//! RRPC and server-side publishes through the Rust API ([`BrokerHandle`]), over real sockets.

use std::time::Duration;

use aliot_core::codec::{PublishQos, QoS};
use aliot_core::hub::{self, DeviceDelivery, RrpcOutcome};
use aliot_io::Runtime;
use aliot_io::broker::RrpcError;

use crate::support::*;
use bytes::Bytes;

pub async fn rrpc_success_from_a_device_that_answers<R: Runtime>() {
    let (broker, addr) = start::<R>(config(false)).await;
    let handle = broker.handle();
    let client = TestClient::<R>::rrpc_device(addr, 1).await;
    let responder = answer_rrpc::<R>(client);
    let reply = rrpc_answered::<R>(&handle, 1, "ping", "pong:ping").await;
    // Another call gets another messageId.
    let again = rrpc_answered::<R>(&handle, 1, "2", "pong:2").await;
    assert_ne!(again.message_id, reply.message_id);
    let stats = handle.stats().await;
    assert_eq!(stats.counters.rrpc.success, 2);
    assert_eq!(stats.pending_rrpc, 0);
    broker.shutdown().await;
    responder.await;
}

pub async fn rrpc_request_goes_out_at_qos0_with_its_message_id<R: Runtime>() {
    let (broker, addr) = start::<R>(config(false)).await;
    let (mut client, _) = TestClient::<R>::device(addr, 2, true).await;
    client.subscribe(&[&rrpc_requests(2)]).await;
    let call = rrpc_in_background::<R>(&broker.handle(), 2, b"q", Duration::from_millis(1000));
    // The device sees the request and stays silent: TIMEOUT.
    let request = client.recv_publish().await;
    assert_eq!(request.qos, PublishQos::AtMostOnce);
    let reply = call.await.unwrap();
    assert_eq!(reply.outcome, RrpcOutcome::Timeout);
    assert_eq!(
        request.topic.as_str(),
        format!("/sys/a1TestPK001/dev-002/rrpc/request/{}", reply.message_id)
    );
    // A late answer is dropped and counted.
    let late = format!(
        "/sys/a1TestPK001/dev-002/rrpc/response/{}",
        reply.message_id
    );
    client.publish0(&late, b"too late").await;
    wait_for_stats::<R>(&broker.handle(), "the late response", |s| {
        s.counters.rrpc.late_responses == 1
    })
    .await;
    client.disconnect().await;
    broker.shutdown().await;
}

pub async fn rrpc_offline_and_halfconn<R: Runtime>() {
    let (broker, addr) = start::<R>(config(false)).await;
    let handle = broker.handle();
    let timeout = Duration::from_secs(2);

    // Never connected.
    let (never, _) = device(3);
    let reply = handle.rrpc(&never, Bytes::new(), timeout).await.unwrap();
    assert_eq!(reply.outcome, RrpcOutcome::Offline);

    // Connected, not subscribed to its requests.
    let (client, _) = TestClient::<R>::device(addr, 4, true).await;
    let (deaf, _) = device(4);
    let reply = handle.rrpc(&deaf, Bytes::new(), timeout).await.unwrap();
    assert_eq!(reply.outcome, RrpcOutcome::HalfConn);

    // Gone less than one keepalive ago.
    client.disconnect().await;
    let reply = handle.rrpc(&deaf, Bytes::new(), timeout).await.unwrap();
    assert_eq!(reply.outcome, RrpcOutcome::HalfConn);

    let stats = handle.stats().await;
    assert_eq!(stats.counters.rrpc.offline, 1);
    assert_eq!(stats.counters.rrpc.halfconn, 2);
    broker.shutdown().await;
}

pub async fn rrpc_on_a_custom_topic<R: Runtime>() {
    let (broker, addr) = start::<R>(config(false)).await;
    let (mut client, _) = TestClient::<R>::device(addr, 1, true).await;
    assert_eq!(
        client
            .subscribe(&["/ext/rrpc/+/a1TestPK001/dev-001/user/get"])
            .await,
        [1]
    );
    let responder = answer_rrpc::<R>(client);
    let (identity, _) = device(1);
    let handle = broker.handle();
    let reply = handle
        .rrpc_on_topic(
            &identity,
            &topic("/a1TestPK001/dev-001/user/get"),
            Bytes::from_static(b"custom"),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(
        reply.outcome,
        RrpcOutcome::Success(Bytes::from_static(b"pong:custom"))
    );

    // Another device's topic is refused before anything is sent.
    let refused = handle
        .rrpc_on_topic(
            &identity,
            &topic("/a1TestPK001/dev-002/user/get"),
            Bytes::new(),
            Duration::from_secs(5),
        )
        .await;
    assert!(matches!(
        refused,
        Err(RrpcError::Rejected(hub::InvalidRrpcCall::NotDeviceTopic(_)))
    ));
    // So is a timeout outside 1000..=8000 ms.
    let refused = handle
        .rrpc(&identity, Bytes::new(), Duration::from_millis(999))
        .await;
    assert_eq!(
        refused,
        Err(RrpcError::Rejected(hub::InvalidRrpcCall::InvalidTimeout(
            999
        )))
    );
    broker.shutdown().await;
    responder.await;
}

pub async fn server_side_publishes_reach_subscribers_and_say_what_became_of_them<R: Runtime>() {
    let (broker, addr) = start::<R>(config(false)).await;
    let handle = broker.handle();
    let (mut one, _) = TestClient::<R>::device(addr, 1, true).await;
    let (mut two, _) = TestClient::<R>::device(addr, 2, true).await;
    assert_eq!(one.subscribe(&["/a1TestPK001/dev-001/user/get"]).await, [1]);
    assert_eq!(two.subscribe(&["/broadcast/a1TestPK001/#"]).await, [1]);

    let (identity_one, _) = device(1);
    let (identity_two, _) = device(2);
    let (identity_three, _) = device(3);
    let own = topic("/a1TestPK001/dev-001/user/get");
    let delivery = handle
        .publish_to_device(
            &identity_one,
            own.clone(),
            Bytes::from_static(b"to one"),
            QoS::AtLeastOnce,
        )
        .await;
    assert_eq!(delivery, DeviceDelivery::Sent);
    let got = one.recv_publish().await;
    assert_eq!(&got.payload[..], b"to one");
    assert!(matches!(got.qos, PublishQos::AtLeastOnce(_)));
    one.puback(&got).await;

    // Device two may not subscribe to device one's topic; device three has no session.
    let denied = handle
        .publish_to_device(&identity_two, own.clone(), Bytes::new(), QoS::AtMostOnce)
        .await;
    assert_eq!(denied, DeviceDelivery::Denied);
    let offline = handle
        .publish_to_device(
            &identity_three,
            topic("/a1TestPK001/dev-003/user/get"),
            Bytes::new(),
            QoS::AtMostOnce,
        )
        .await;
    assert_eq!(offline, DeviceDelivery::Offline);
    let not_subscribed = handle
        .publish_to_device(
            &identity_two,
            topic("/a1TestPK001/dev-002/user/get"),
            Bytes::new(),
            QoS::AtMostOnce,
        )
        .await;
    assert_eq!(not_subscribed, DeviceDelivery::NotSubscribed);

    // To every subscriber.
    let reached = handle
        .publish(
            topic("/broadcast/a1TestPK001/all"),
            Bytes::from_static(b"hi all"),
            QoS::AtMostOnce,
        )
        .await
        .unwrap()
        .reached;
    assert_eq!(reached, 1);
    let got = two.recv_publish().await;
    assert_eq!(&got.payload[..], b"hi all");
    one.disconnect().await;
    two.disconnect().await;
    broker.shutdown().await;
}
