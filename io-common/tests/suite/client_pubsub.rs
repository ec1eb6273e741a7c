//! Publish and subscribe through the broker over loopback: QoS 0 and 1 from one device to
//! another, SUBACK return codes, unsubscribe, messages from the server side, and calls
//! dropped half way.

use std::num::NonZeroU16;
use std::time::{Duration, Instant};

use aliot_core::client::ClientError;
use aliot_core::codec::{QoS, SubAckReturnCode};
use aliot_core::hub::DeviceDelivery;
use aliot_io::Runtime;
use aliot_io::client::{Client, Messages, RequestError};
use aliot_io::runtime::timeout_at;
use bytes::Bytes;

use crate::support::*;

/// Devices 1 and 2 connected, device 2 subscribed to the product's broadcast topics at QoS 1.
async fn publisher_and_subscriber<R: Runtime>(
    addr: std::net::SocketAddr,
) -> (Client<R>, Client<R>, Messages) {
    let publisher = Client::<R>::connect(device_options(addr, 1)).await.unwrap();
    let subscriber = Client::<R>::connect(device_options(addr, 2)).await.unwrap();
    let messages = subscriber.messages();
    let codes = within::<R, _>(
        "SUBACK",
        subscriber.subscribe(&[(filter(&broadcast("#")), QoS::AtLeastOnce)]),
    )
    .await
    .unwrap();
    assert_eq!(codes, [SubAckReturnCode::Success(QoS::AtLeastOnce)]);
    (publisher, subscriber, messages)
}

pub async fn qos0_and_qos1_messages_reach_another_device<R: Runtime>() {
    let (broker, addr) = start::<R>(config(false)).await;
    let (publisher, _subscriber, messages) = publisher_and_subscriber::<R>(addr).await;

    let written = within::<R, _>(
        "QoS 0 written",
        publisher.publish(topic(&broadcast("a")), "zero", QoS::AtMostOnce),
    )
    .await;
    assert_eq!(written, Ok(None), "QoS 0 resolves without a packet id");
    let acked = within::<R, _>(
        "PUBACK",
        publisher.publish(topic(&broadcast("b")), "one", QoS::AtLeastOnce),
    )
    .await
    .unwrap();
    assert!(acked.is_some());

    let first = next_message::<R>(&messages).await;
    assert_eq!(first.topic.as_str(), broadcast("a"));
    assert_eq!(first.payload, Bytes::from_static(b"zero"));
    assert_eq!(first.qos, QoS::AtMostOnce);
    let second = next_message::<R>(&messages).await;
    assert_eq!(second.topic.as_str(), broadcast("b"));
    assert_eq!(second.payload, Bytes::from_static(b"one"));
    assert_eq!(second.qos, QoS::AtLeastOnce);
    assert!(!second.dup);
    broker.shutdown().await;
}

pub async fn successive_qos1_publishes_get_distinct_packet_ids<R: Runtime>() {
    let (broker, addr) = start::<R>(config(false)).await;
    let client = Client::<R>::connect(device_options(addr, 1)).await.unwrap();
    let mut ids = Vec::new();
    for n in 0..5 {
        let id = client
            .publish(topic(&broadcast("n")), format!("{n}"), QoS::AtLeastOnce)
            .await
            .unwrap()
            .expect("QoS 1 has an id");
        ids.push(id);
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "{ids:?}");
    broker.shutdown().await;
}

pub async fn suback_codes_refuse_a_topic_of_another_device<R: Runtime>() {
    let (broker, addr) = start::<R>(config(false)).await;
    let client = Client::<R>::connect(device_options(addr, 1)).await.unwrap();
    let codes = within::<R, _>(
        "SUBACK",
        client.subscribe(&[
            (filter(&user_get(1)), QoS::AtLeastOnce),
            (filter(&user_get(2)), QoS::AtLeastOnce),
            (filter(&broadcast("#")), QoS::AtMostOnce),
        ]),
    )
    .await
    .unwrap();
    assert_eq!(
        codes,
        [
            SubAckReturnCode::Success(QoS::AtLeastOnce),
            SubAckReturnCode::Failure,
            SubAckReturnCode::Success(QoS::AtMostOnce),
        ]
    );
    assert_eq!(codes[1].to_u8(), 0x80);
    let stats = broker.handle().stats().await;
    assert_eq!(stats.counters.subscribe_denied, 1);
    broker.shutdown().await;
}

pub async fn after_unsubscribe_nothing_more_arrives<R: Runtime>() {
    let (broker, addr) = start::<R>(config(false)).await;
    let (publisher, subscriber, messages) = publisher_and_subscriber::<R>(addr).await;
    subscriber
        .subscribe(&[(filter(&user_get(2)), QoS::AtLeastOnce)])
        .await
        .unwrap();
    within::<R, _>(
        "UNSUBACK",
        subscriber.unsubscribe(&[filter(&broadcast("#"))]),
    )
    .await
    .unwrap();
    publisher
        .publish(topic(&broadcast("gone")), "unseen", QoS::AtLeastOnce)
        .await
        .unwrap();
    // A message on the filter still subscribed, sent after: the first to arrive must be it.
    let delivery = broker
        .handle()
        .publish_to_device(
            &device(2).0,
            topic(&user_get(2)),
            Bytes::from_static(b"still here"),
            QoS::AtLeastOnce,
        )
        .await;
    assert_eq!(delivery, DeviceDelivery::Sent);
    let message = next_message::<R>(&messages).await;
    assert_eq!(message.topic.as_str(), user_get(2));
    assert_eq!(message.payload, Bytes::from_static(b"still here"));
    broker.shutdown().await;
}

pub async fn the_server_side_reaches_the_device<R: Runtime>() {
    let (broker, addr) = start::<R>(config(false)).await;
    let client = Client::<R>::connect(device_options(addr, 3)).await.unwrap();
    let messages = client.messages();
    client
        .subscribe(&[(filter(&user_get(3)), QoS::AtLeastOnce)])
        .await
        .unwrap();
    let delivered = broker
        .handle()
        .publish(
            topic(&user_get(3)),
            Bytes::from_static(b"cmd"),
            QoS::AtLeastOnce,
        )
        .await
        .unwrap()
        .reached;
    assert_eq!(delivered, 1);
    let message = next_message::<R>(&messages).await;
    assert_eq!(message.payload, Bytes::from_static(b"cmd"));
    let stats = broker.handle().stats().await;
    assert_eq!(stats.counters.messages_out, 1);
    broker.shutdown().await;
}

pub async fn qos2_and_empty_filter_lists_are_rejected_without_sending<R: Runtime>() {
    let (broker, addr) = start::<R>(config(false)).await;
    let client = Client::<R>::connect(device_options(addr, 1)).await.unwrap();
    assert_eq!(
        client
            .publish(topic(&broadcast("x")), "two", QoS::ExactlyOnce)
            .await,
        Err(RequestError::Rejected(ClientError::Qos2NotSupported))
    );
    assert_eq!(
        client.subscribe(&[]).await,
        Err(RequestError::Rejected(ClientError::EmptySubscribe))
    );
    assert_eq!(
        client.unsubscribe(&[]).await,
        Err(RequestError::Rejected(ClientError::EmptyUnsubscribe))
    );
    assert_eq!(broker.handle().stats().await.counters.messages_in, 0);
    broker.shutdown().await;
}

pub async fn publishes_dropped_before_their_puback_do_not_disturb_later_ones<R: Runtime>() {
    let (broker, addr) = start::<R>(config(false)).await;
    let (publisher, _subscriber, messages) = publisher_and_subscriber::<R>(addr).await;
    // Each future is polled once (the command reaches the driver's channel) and dropped,
    // nearly always before the driver has run: the driver runs on another thread, so one may
    // now and then finish first, which the test allows.
    let mut unfinished = 0;
    for n in 0..20 {
        let finished = poll_once_then_drop(publisher.publish(
            topic(&broadcast("dropped")),
            format!("{n}"),
            QoS::AtLeastOnce,
        ))
        .await;
        unfinished += usize::from(!finished);
    }
    assert!(unfinished > 0, "no publish was dropped before its PUBACK");
    // A subscribe dropped half way, too.
    poll_once_then_drop(publisher.subscribe(&[(filter(&user_get(1)), QoS::AtLeastOnce)])).await;

    let last = within::<R, _>(
        "the PUBACK of the last publish",
        publisher.publish(topic(&broadcast("kept")), "last", QoS::AtLeastOnce),
    )
    .await
    .unwrap();
    assert!(last.is_some());
    // Every dropped publish still went out, in order, then the last one.
    for n in 0..20 {
        let message = next_message::<R>(&messages).await;
        assert_eq!(message.topic.as_str(), broadcast("dropped"));
        assert_eq!(message.payload, Bytes::from(format!("{n}")));
    }
    let message = next_message::<R>(&messages).await;
    assert_eq!(message.payload, Bytes::from_static(b"last"));
    // And the client still answers calls normally.
    let codes = publisher
        .subscribe(&[(filter(&user_get(1)), QoS::AtMostOnce)])
        .await
        .unwrap();
    assert_eq!(codes, [SubAckReturnCode::Success(QoS::AtMostOnce)]);
    broker.shutdown().await;
}

pub async fn a_message_receiver_dropped_while_waiting_loses_nothing<R: Runtime>() {
    let (broker, addr) = start::<R>(config(false)).await;
    let (publisher, _subscriber, messages) = publisher_and_subscriber::<R>(addr).await;
    // A receive dropped before anything arrived.
    assert!(
        timeout_at(
            &R::default(),
            Instant::now() + Duration::from_millis(1),
            messages.recv()
        )
        .await
        .is_none()
    );
    publisher
        .publish(topic(&broadcast("after")), "kept", QoS::AtLeastOnce)
        .await
        .unwrap();
    let message = next_message::<R>(&messages).await;
    assert_eq!(message.payload, Bytes::from_static(b"kept"));
    broker.shutdown().await;
}

pub async fn a_subscriber_that_falls_behind_slows_its_publisher_down_and_loses_nothing<
    R: Runtime,
>() {
    let mut config = config(false);
    // A small queue, and PUBACKs held from its fifth message on until the subscriber takes
    // them (the limit is far beyond the test).
    config.hub.inflight_window = NonZeroU16::new(4).expect("a window");
    config.hub.max_queued_messages = 20;
    config.hub.ack_hold_threshold = 5;
    config.hub.max_ack_hold = Duration::from_secs(60);
    let (broker, addr) = start::<R>(config).await;
    let handle = broker.handle();
    let mut options = device_options(addr, 2);
    options.message_capacity = 1;
    let subscriber = Client::<R>::connect(options).await.unwrap();
    subscriber
        .subscribe(&[(filter(&broadcast("#")), QoS::AtLeastOnce)])
        .await
        .unwrap();
    let publisher = Client::<R>::connect(device_options(addr, 1)).await.unwrap();
    // Five times what the queue holds, one after the other, each waiting for its PUBACK: at
    // full speed, without flow control, most of them would be dropped.
    let count = 100;
    let publishing = spawn::<R, _>(async move {
        for n in 0..count {
            publisher
                .publish(topic(&broadcast("burst")), format!("{n}"), QoS::AtLeastOnce)
                .await
                .unwrap();
        }
        publisher
    });
    // The subscriber reads nothing until the publisher is held back.
    wait_for_stats::<R>(&handle, "a held PUBACK", |stats| stats.held_acks > 0).await;
    let messages = subscriber.messages();
    for n in 0..count {
        let message = next_message::<R>(&messages).await;
        assert_eq!(message.payload, Bytes::from(format!("{n}")));
    }
    let publisher = within::<R, _>("the last PUBACK", publishing).await;
    let stats = handle.stats().await;
    assert_eq!(stats.counters.dropped.queue_full, 0);
    assert!(stats.counters.acks_held > 0);
    assert_eq!(stats.held_acks, 0);
    drop(publisher);
    broker.shutdown().await;
}

pub async fn a_full_message_queue_holds_the_broker_back_without_losing_messages<R: Runtime>() {
    let (broker, addr) = start::<R>(config(false)).await;
    let publisher = Client::<R>::connect(device_options(addr, 1)).await.unwrap();
    let mut options = device_options(addr, 2);
    options.message_capacity = 2;
    let subscriber = Client::<R>::connect(options).await.unwrap();
    subscriber
        .subscribe(&[(filter(&broadcast("#")), QoS::AtLeastOnce)])
        .await
        .unwrap();
    let count = 50;
    for n in 0..count {
        publisher
            .publish(topic(&broadcast("burst")), format!("{n}"), QoS::AtLeastOnce)
            .await
            .unwrap();
    }
    let messages = subscriber.messages();
    for n in 0..count {
        let message = next_message::<R>(&messages).await;
        assert_eq!(message.payload, Bytes::from(format!("{n}")));
    }
    broker.shutdown().await;
}
