//! The server-side subscription's backlog on disk: what a device published while no consumer
//! was attached waits in the redb store across a restart, reaches the first consumer after it,
//! and leaves the store once settled. Over real sockets, with the broker's own consumer handle
//! (the AMQP side is tested with rhea and qpid-proton in tests/real-clients).

#[path = "../../io-common/tests/suite/support.rs"]
mod support;

use aliot_core::hub::{ConsumerGroupConfig, HubConfig, MessageKinds};
use aliot_io::broker::BrokerConfig;
use aliot_io::store::StoreConfig;
use aliot_tokio::Tokio;
use support::*;

#[test]
fn the_backlog_survives_a_restart_and_is_settled_once() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("aliot-backlog-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = BrokerConfig {
        store: Some(StoreConfig::directory(&dir)),
        hub: HubConfig {
            consumer_groups: vec![ConsumerGroupConfig {
                id: "g".into(),
                products: Vec::new(),
                kinds: MessageKinds::UPSTREAM,
            }],
            ..HubConfig::default()
        },
        ..config(false)
    };
    let (device, _) = device(1);
    let topic = format!("/{}/{}/user/update", device.product_key, device.device_name);
    runtime.block_on(async {
        let (broker, addr) = start::<Tokio>(config.clone()).await;
        let (mut client, _) = TestClient::<Tokio>::device(addr, 1, true).await;
        // Each acknowledged only once it is in the backlog on disk.
        client.publish1(&topic, b"kept 1").await;
        client.publish1(&topic, b"kept 2").await;
        client.disconnect().await;
        broker.shutdown().await;

        let (broker, _) = start::<Tokio>(config.clone()).await;
        let handle = broker.handle();
        let stats = handle.consumer_group_stats().await.unwrap();
        assert_eq!(
            stats[0].backlog, 2,
            "both messages came back from the store"
        );
        let mut consumer = handle.attach_consumer("g").await.unwrap().unwrap();
        consumer.credit(10).await.unwrap();
        for expected in [&b"kept 1"[..], b"kept 2"] {
            let (message, redelivery) = within::<Tokio, _>("a message", consumer.next())
                .await
                .unwrap();
            assert_eq!(
                (message.topic.as_str(), &message.payload[..]),
                (topic.as_str(), expected)
            );
            assert!(!redelivery);
            consumer.settled(message.message_id).await.unwrap();
        }
        let stats = handle.consumer_group_stats().await.unwrap();
        assert_eq!((stats[0].backlog, stats[0].settled), (0, 2));
        consumer.detach().await;
        broker.shutdown().await;

        // Settled is settled: nothing comes back.
        let (broker, _) = start::<Tokio>(config).await;
        let stats = broker.handle().consumer_group_stats().await.unwrap();
        assert_eq!(stats[0].backlog, 0);
        broker.shutdown().await;
    });
    let _ = std::fs::remove_dir_all(&dir);
}
