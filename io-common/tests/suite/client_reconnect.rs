//! Reconnecting: after the broker restarts on the same port (the client subscribes again to a
//! clean session), across a cut connection with cleanSession=0 (messages kept while offline
//! are delivered), commands given while offline, and the backoff between failed attempts.

use std::net::SocketAddr;
use std::time::Duration;

use aliot_core::client::DisconnectReason;
use aliot_core::codec::{QoS, SubAckReturnCode};
use aliot_core::hub::DeviceDelivery;
use aliot_io::Runtime;
use aliot_io::client::{Client, ConnectionEvent, Events};
use bytes::Bytes;
use futures_util::FutureExt as _;

use crate::support::*;

/// Device 1 connected through a proxy (which the test cuts) to the broker at `broker_addr`,
/// and its events.
async fn device_1_through_a_proxy<R: Runtime>(
    broker_addr: SocketAddr,
    clean_session: bool,
) -> (Proxy<R>, Client<R>, Events) {
    let proxy = Proxy::<R>::start(broker_addr).await;
    let mut options = device_options(proxy.addr, 1);
    options.clean_session = clean_session;
    let client = Client::<R>::connect(options).await.unwrap();
    let events = client.events();
    (proxy, client, events)
}

pub async fn after_a_broker_restart_the_client_reconnects_and_subscribes_again<R: Runtime>() {
    let (broker, addr) = start::<R>(config(false)).await;
    let client = Client::<R>::connect(device_options(addr, 1)).await.unwrap();
    let mut events = client.events();
    let messages = client.messages();
    let subscribed = [
        (filter(&user_get(1)), QoS::AtLeastOnce),
        (filter(&broadcast("#")), QoS::AtMostOnce),
    ];
    client.subscribe(&subscribed).await.unwrap();
    // Refused: not subscribed again.
    let refused = client
        .subscribe(&[(filter(&user_get(2)), QoS::AtLeastOnce)])
        .await
        .unwrap();
    assert_eq!(refused, [SubAckReturnCode::Failure]);

    broker.shutdown().await;
    let lost = disconnected::<R>(&mut events).await;
    assert!(
        matches!(
            lost,
            ConnectionEvent::Disconnected {
                reason: DisconnectReason::TransportClosed
            }
        ),
        "{lost:?}"
    );

    let (broker, _) = start::<R>(config_on(addr, false)).await;
    let back = reconnected::<R>(&mut events).await;
    assert!(
        matches!(
            back,
            ConnectionEvent::Reconnected {
                session_present: false
            }
        ),
        "{back:?}"
    );
    let again = event_matching::<R>(&mut events, "the re-subscription", |event| {
        matches!(event, ConnectionEvent::Resubscribed { .. })
    })
    .await;
    let ConnectionEvent::Resubscribed { mut results } = again else {
        unreachable!()
    };
    results.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expected = vec![
        (
            filter(&user_get(1)),
            SubAckReturnCode::Success(QoS::AtLeastOnce),
        ),
        (
            filter(&broadcast("#")),
            SubAckReturnCode::Success(QoS::AtMostOnce),
        ),
    ];
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(results, expected);

    // The new broker delivers on the subscription the client restored by itself.
    let delivery = broker
        .handle()
        .publish_to_device(
            &device(1).0,
            topic(&user_get(1)),
            Bytes::from_static(b"after restart"),
            QoS::AtLeastOnce,
        )
        .await;
    assert_eq!(delivery, DeviceDelivery::Sent);
    let message = next_message::<R>(&messages).await;
    assert_eq!(message.payload, Bytes::from_static(b"after restart"));
    drop(client);
    broker.shutdown().await;
}

pub async fn with_a_kept_session_messages_sent_while_offline_arrive_after_the_reconnect<
    R: Runtime,
>() {
    let (broker, broker_addr) = start::<R>(config(false)).await;
    let handle = broker.handle();
    let (proxy, client, mut events) = device_1_through_a_proxy::<R>(broker_addr, false).await;
    let messages = client.messages();
    client
        .subscribe(&[(filter(&user_get(1)), QoS::AtLeastOnce)])
        .await
        .unwrap();

    proxy.cut();
    disconnected::<R>(&mut events).await;
    wait_for_stats::<R>(&handle, "the broker to see the device gone", |stats| {
        stats.connections == 0
    })
    .await;
    let (identity, _) = device(1);
    for n in 0..3 {
        let delivery = handle
            .publish_to_device(
                &identity,
                topic(&user_get(1)),
                Bytes::from(format!("offline {n}")),
                QoS::AtLeastOnce,
            )
            .await;
        assert_eq!(delivery, DeviceDelivery::Queued);
    }

    proxy.resume();
    let back = reconnected::<R>(&mut events).await;
    assert!(
        matches!(
            back,
            ConnectionEvent::Reconnected {
                session_present: true
            }
        ),
        "{back:?}"
    );
    for n in 0..3 {
        let message = next_message::<R>(&messages).await;
        assert_eq!(message.payload, Bytes::from(format!("offline {n}")));
    }
    drop(client);
    broker.shutdown().await;
}

pub async fn commands_given_while_offline_go_out_after_the_reconnect<R: Runtime>() {
    let (broker, broker_addr) = start::<R>(config(false)).await;
    let (proxy, client, mut events) = device_1_through_a_proxy::<R>(broker_addr, true).await;
    let listener = Client::<R>::connect(device_options(broker_addr, 2))
        .await
        .unwrap();
    let messages = listener.messages();
    listener
        .subscribe(&[(filter(&broadcast("#")), QoS::AtLeastOnce)])
        .await
        .unwrap();

    proxy.cut();
    disconnected::<R>(&mut events).await;
    let mut qos1 = std::pin::pin!(spawn::<R, _>({
        let client = client.clone();
        async move {
            client
                .publish(topic(&broadcast("late")), "one", QoS::AtLeastOnce)
                .await
        }
    }));
    let mut qos0 = std::pin::pin!(spawn::<R, _>({
        let client = client.clone();
        async move {
            client
                .publish(topic(&broadcast("late")), "zero", QoS::AtMostOnce)
                .await
        }
    }));
    // The attempts through the cut proxy fail; the client keeps trying.
    let failed = reconnect_failed::<R>(&mut events).await;
    assert!(matches!(failed, ConnectionEvent::ReconnectFailed { .. }));
    assert!(qos1.as_mut().now_or_never().is_none() && qos0.as_mut().now_or_never().is_none());

    proxy.resume();
    let id = within::<R, _>("the QoS 1 publish", qos1).await.unwrap();
    assert!(id.is_some());
    assert_eq!(within::<R, _>("the QoS 0 publish", qos0).await, Ok(None));
    let mut payloads = vec![
        next_message::<R>(&messages).await.payload,
        next_message::<R>(&messages).await.payload,
    ];
    payloads.sort();
    assert_eq!(
        payloads,
        [Bytes::from_static(b"one"), Bytes::from_static(b"zero")]
    );
    drop(client);
    drop(listener);
    broker.shutdown().await;
}

pub async fn failed_attempts_back_off_within_the_configured_bounds<R: Runtime>() {
    let (broker, broker_addr) = start::<R>(config(false)).await;
    let (proxy, client, mut events) = device_1_through_a_proxy::<R>(broker_addr, true).await;
    proxy.cut();
    let backoff = quick_backoff();
    for expected_attempt in 1..=5_u32 {
        let event = reconnect_failed::<R>(&mut events).await;
        let ConnectionEvent::ReconnectFailed {
            attempt, retry_in, ..
        } = event
        else {
            unreachable!()
        };
        assert_eq!(attempt, expected_attempt);
        // The first delay (attempt 0) followed the disconnect; failed attempt k waits with
        // the ceiling of attempt k, jittered into its upper half.
        let ceiling = backoff.ceiling(attempt);
        assert!(
            retry_in >= ceiling / 2 && retry_in <= ceiling,
            "attempt {attempt}: {retry_in:?} outside [{:?}, {ceiling:?}]",
            ceiling / 2
        );
        assert!(retry_in <= Duration::from_millis(200));
    }
    proxy.resume();
    reconnected::<R>(&mut events).await;
    drop(client);
    broker.shutdown().await;
}
