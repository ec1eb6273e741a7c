//! A restart with 10,000 kept sessions on disk: each client reconnects with session present and
//! gets its queue, in order, with DUP.

// The support module of the shared adapter suite, here on tokio only.
#[path = "../../io-common/tests/suite/support.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aliot_core::codec::{Connect, QoS};
use aliot_io::broker::{Broker, BrokerConfig};
use aliot_io::store::StoreConfig;
use aliot_tokio::Tokio;
use bytes::Bytes;
use support::*;

const CLIENTS: usize = 10_000;
/// Connections made at once.
const AT_ONCE: usize = 50;
const FLEET: &str = "fleet/news";
const QUEUED: [&[u8]; 3] = [b"first", b"second", b"third"];

fn kept_connect(n: usize) -> Connect {
    Connect {
        clean_session: false,
        ..connect_packet(&format!("fleet-{n:05}"), None, None)
    }
}

/// Runs `each(n)` for every client, [`AT_ONCE`] at a time.
async fn for_every_client<F, Fut>(each: F)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let each = Arc::new(each);
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..AT_ONCE)
        .map(|_| {
            let each = Arc::clone(&each);
            let next = Arc::clone(&next);
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= CLIENTS {
                        break;
                    }
                    each(n).await;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("a client's work panicked");
    }
}

#[test]
fn ten_thousand_kept_sessions_come_back_with_their_queues() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = std::env::temp_dir().join(format!("aliot-store-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = BrokerConfig {
        store: Some(StoreConfig::directory(&dir)),
        ..config(true)
    };
    runtime.block_on(async {
        let broker = Broker::<Tokio>::start(config.clone()).await.unwrap();
        let (addr, _) = broker.listener_addrs()[0];
        for_every_client(move |n| async move {
            let (mut client, connack) = TestClient::<Tokio>::connect(addr, kept_connect(n)).await;
            assert!(!connack.session_present);
            assert_eq!(client.subscribe(&[FLEET]).await, [1]);
            client.disconnect().await;
        })
        .await;
        for payload in QUEUED {
            let reached = broker
                .handle()
                .publish(topic(FLEET), Bytes::from_static(payload), QoS::AtLeastOnce)
                .await
                .unwrap()
                .reached;
            assert_eq!(reached, CLIENTS);
        }
        broker.shutdown().await;

        let broker = Broker::<Tokio>::start(config).await.unwrap();
        let stats = broker.handle().stats().await;
        assert_eq!(
            stats.sessions, CLIENTS,
            "every session is back before anyone connects"
        );
        let (addr, _) = broker.listener_addrs()[0];
        for_every_client(move |n| async move {
            let (mut client, connack) = TestClient::<Tokio>::connect(addr, kept_connect(n)).await;
            assert!(connack.session_present, "client {n}: session present");
            for expected in QUEUED {
                let delivery = client.recv_publish().await;
                assert_eq!(&delivery.payload[..], expected, "client {n}");
                assert!(delivery.dup);
                client.puback(&delivery).await;
            }
            client.ping().await;
            client.disconnect().await;
        })
        .await;
        let stats = broker.handle().stats().await;
        assert_eq!(stats.counters.messages_out, (CLIENTS * QUEUED.len()) as u64);
        broker.shutdown().await;
    });
    let _ = std::fs::remove_dir_all(&dir);
}
