//! RRPC: the broker calls the device (`BrokerHandle::rrpc`), the client answers with the
//! handler of `on_rrpc` / `on_rrpc_async`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aliot_core::codec::{QoS, SubAckReturnCode};
use aliot_core::hub::RrpcOutcome;
use aliot_io::Runtime;
use aliot_io::client::Client;
use bytes::Bytes;

use crate::support::*;

/// Device `n` connected and subscribed to its RRPC request topic.
async fn rrpc_device<R: Runtime>(addr: std::net::SocketAddr, n: u8) -> Client<R> {
    let client = Client::<R>::connect(device_options(addr, n)).await.unwrap();
    let request_filter = filter(&rrpc_requests(n));
    let codes = client
        .subscribe(&[(request_filter, QoS::AtMostOnce)])
        .await
        .unwrap();
    assert_eq!(codes, [SubAckReturnCode::Success(QoS::AtMostOnce)]);
    client
}

pub async fn a_sync_handler_answers_rrpc_calls<R: Runtime>() {
    let (broker, addr) = start::<R>(config(false)).await;
    let client = rrpc_device::<R>(addr, 1).await;
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&seen);
    client.on_rrpc(move |request| {
        counter.fetch_add(1, Ordering::SeqCst);
        let mut answer = b"echo:".to_vec();
        answer.extend_from_slice(&request.payload);
        answer
    });
    for call in ["first", "second"] {
        rrpc_answered::<R>(&broker.handle(), 1, call, format!("echo:{call}")).await;
    }
    assert_eq!(seen.load(Ordering::SeqCst), 2);
    let stats = broker.handle().stats().await;
    assert_eq!(stats.pending_rrpc, 0);
    drop(client);
    broker.shutdown().await;
}

pub async fn the_handler_sees_the_request_topic_and_message_id<R: Runtime>() {
    let (broker, addr) = start::<R>(config(false)).await;
    let client = rrpc_device::<R>(addr, 2).await;
    client.on_rrpc(|request| format!("{}|{}", request.message_id, request.topic.as_str()));
    let (identity, _) = device(2);
    let reply = broker
        .handle()
        .rrpc(&identity, Bytes::from_static(b"?"), RRPC_TIMEOUT)
        .await
        .unwrap();
    let expected = format!(
        "{}|/sys/{PRODUCT}/{}/rrpc/request/{}",
        reply.message_id,
        device_name(2),
        reply.message_id
    );
    assert_eq!(reply.outcome, RrpcOutcome::Success(Bytes::from(expected)));
    drop(client);
    broker.shutdown().await;
}

pub async fn an_async_handler_answers_from_its_own_task<R: Runtime>() {
    let (broker, addr) = start::<R>(config(false)).await;
    let client = rrpc_device::<R>(addr, 3).await;
    client.on_rrpc_async(|request| async move {
        // Work that yields to the runtime before answering.
        yield_now().await;
        let mut answer = request.payload.to_vec();
        answer.reverse();
        answer
    });
    rrpc_answered::<R>(&broker.handle(), 3, "abc", "cba").await;
    drop(client);
    broker.shutdown().await;
}

pub async fn a_custom_topic_call_is_answered_on_its_own_topic<R: Runtime>() {
    let (broker, addr) = start::<R>(config(false)).await;
    let client = Client::<R>::connect(device_options(addr, 1)).await.unwrap();
    let own = user_get(1);
    let codes = client
        .subscribe(&[(filter(&format!("/ext/rrpc/+{own}")), QoS::AtMostOnce)])
        .await
        .unwrap();
    assert_eq!(codes, [SubAckReturnCode::Success(QoS::AtMostOnce)]);
    client.on_rrpc(|request| request.topic.as_str().to_owned());
    let (identity, _) = device(1);
    let reply = within::<R, _>(
        "the RRPC reply",
        broker.handle().rrpc_on_topic(
            &identity,
            &topic(&own),
            Bytes::from_static(b"go"),
            RRPC_TIMEOUT,
        ),
    )
    .await
    .unwrap();
    // The request came on `/ext/rrpc/{id}{topic}`, and the answer went back there.
    let request_topic = format!("/ext/rrpc/{}{own}", reply.message_id);
    assert_eq!(
        reply.outcome,
        RrpcOutcome::Success(Bytes::from(request_topic))
    );
    drop(client);
    broker.shutdown().await;
}

pub async fn without_a_handler_the_caller_times_out<R: Runtime>() {
    let (broker, addr) = start::<R>(config(false)).await;
    let client = rrpc_device::<R>(addr, 4).await;
    let (identity, _) = device(4);
    let reply = broker
        .handle()
        .rrpc(
            &identity,
            Bytes::from_static(b"anyone?"),
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    assert_eq!(reply.outcome, RrpcOutcome::Timeout);
    // Setting a handler afterwards answers the next call.
    client.on_rrpc(|_| "here");
    rrpc_answered::<R>(&broker.handle(), 4, "now?", "here").await;
    drop(client);
    broker.shutdown().await;
}
