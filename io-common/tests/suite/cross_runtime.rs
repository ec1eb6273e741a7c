//! The two runtimes against each other: a tokio device client against a smol broker, a smol
//! device client against a tokio broker.

use aliot_core::codec::{QoS, SubAckReturnCode};
use aliot_io::client::{ClientOptions, Login};
use aliot_smol::Smol;
use aliot_tokio::Tokio;
use aliot_tokio::client::Client;
use aliot_topic::{TopicFilter, TopicLimits, TopicName};
use bytes::Bytes;

use crate::support::*;

const UPDATE: &str = "/a1TestPK001/dev-001/user/update";

#[test]
fn a_tokio_client_against_a_smol_broker() {
    crate::run_on_tokio(async {
        // The broker's tasks run on smol's executor, the client's on this tokio runtime.
        let (broker, addr) = start::<Smol>(config(false)).await;
        let (mut watcher, _) = TestClient::<Smol>::device(addr, 2, true).await;
        // Device 2 may not read device 1's topics: it watches the broadcast instead.
        assert_eq!(watcher.subscribe(&["/broadcast/a1TestPK001/#"]).await, [1]);

        let (identity, secret) = device(1);
        let options = ClientOptions::new("127.0.0.1", addr.port(), Login::device(identity, secret));
        let client = within::<Tokio, _>("connect", Client::connect(options))
            .await
            .expect("the smol broker accepts the tokio client");
        let limits = TopicLimits::default();
        let filters = [
            "/a1TestPK001/dev-001/user/get",
            "/sys/a1TestPK001/dev-001/rrpc/request/+",
        ]
        .map(|filter| (TopicFilter::new(filter, &limits).unwrap(), QoS::AtLeastOnce));
        let codes = client.subscribe(&filters).await.unwrap();
        assert_eq!(codes, [SubAckReturnCode::Success(QoS::AtLeastOnce); 2]);

        // QoS 1 from the client, acknowledged by the smol broker.
        let topic = TopicName::new(UPDATE, &TopicLimits::default()).unwrap();
        let acked = client.publish(topic, "up", QoS::AtLeastOnce).await.unwrap();
        assert!(acked.is_some());

        // A server-side message reaches the client, and an RRPC call is answered by it.
        client.on_rrpc(|request| {
            let mut answer = b"pong:".to_vec();
            answer.extend_from_slice(&request.payload);
            answer
        });
        let messages = client.messages();
        let handle = broker.handle();
        let down =
            TopicName::new("/a1TestPK001/dev-001/user/get", &TopicLimits::default()).unwrap();
        assert_eq!(
            handle
                .publish(down, Bytes::from_static(b"down"), QoS::AtLeastOnce)
                .await
                .unwrap()
                .reached,
            1
        );
        let message = within::<Tokio, _>("the message", messages.recv())
            .await
            .unwrap();
        assert_eq!(&message.payload[..], b"down");
        rrpc_answered::<Tokio>(&handle, 1, "ping", "pong:ping").await;

        client.disconnect().await;
        watcher.disconnect().await;
        broker.shutdown().await;
    });
}

#[test]
fn a_smol_client_against_a_tokio_broker() {
    crate::run_on_tokio(async {
        // The broker's tasks run on this tokio runtime, the client's on smol's executor.
        let (broker, addr) = start::<Tokio>(config(false)).await;
        let (mut watcher, _) = TestClient::<Tokio>::device(addr, 2, true).await;
        assert_eq!(watcher.subscribe(&["/broadcast/a1TestPK001/#"]).await, [1]);

        let (identity, secret) = device(1);
        let options = ClientOptions::new("127.0.0.1", addr.port(), Login::device(identity, secret));
        let client = within::<Smol, _>("connect", aliot_smol::Client::connect(options))
            .await
            .expect("the tokio broker accepts the smol client");
        // Another device's topic: acknowledged all the same, and not routed.
        let topic = TopicName::new("/a1TestPK001/dev-002/user/update", &TopicLimits::default());
        let denied = client.publish(topic.unwrap(), "across", QoS::AtLeastOnce);
        assert!(denied.await.unwrap().is_some());
        let topic = TopicName::new(UPDATE, &TopicLimits::default()).unwrap();
        let acked = client.publish(topic, "up", QoS::AtLeastOnce).await.unwrap();
        assert!(acked.is_some());
        let stats = broker.handle().stats().await;
        assert_eq!(stats.connections, 2);
        assert_eq!(stats.counters.publish_denied, 1);

        client.disconnect().await;
        watcher.disconnect().await;
        broker.shutdown().await;
    });
}
