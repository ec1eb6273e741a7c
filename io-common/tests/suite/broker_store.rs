//! The broker with a durable store, over real sockets: a kept session and its queue survive a
//! restart on the same data directory (redb), PUBACKs wait for the commit and stop while the
//! store fails, and a directory that is not a store, or is in use, is refused.

use std::path::PathBuf;
use std::time::Duration;

use aliot_core::codec::{Packet, PubAck, PublishQos};
use aliot_io::Runtime;
use aliot_io::broker::{Broker, BrokerConfig, BrokerError};
use aliot_io::runtime::timeout_at;
use aliot_io::store::{MemoryStore, StoreConfig, StoreError};
use bytes::Bytes;

use crate::support::*;

const BROADCAST: &str = "/broadcast/a1TestPK001/#";
const NEWS: &str = "/broadcast/a1TestPK001/news";

/// A fresh directory under the system's temporary one, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "aliot-store-test-{}-{name}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn with_store(store: StoreConfig) -> BrokerConfig {
    BrokerConfig {
        store: Some(store),
        ..config(false)
    }
}

/// PUBLISH at QoS 1 without waiting for the PUBACK; returns the packet id.
async fn publish1_unacked<R: Runtime>(client: &mut TestClient<R>, payload: &'static [u8]) -> u16 {
    let packet_id = aliot_core::codec::PacketId::new(u16::from(payload[0])).unwrap();
    client
        .send(&Packet::Publish(aliot_core::codec::Publish {
            dup: false,
            qos: PublishQos::AtLeastOnce(packet_id),
            retain: false,
            topic: utf8(NEWS),
            payload: Bytes::from_static(payload),
        }))
        .await;
    packet_id.get()
}

pub async fn a_kept_session_and_its_queue_survive_a_restart_on_the_same_directory<R: Runtime>() {
    let dir = TempDir::new("restart");
    let store = StoreConfig::directory(&dir.0);
    let (broker, addr) = start::<R>(with_store(store.clone())).await;
    let (mut subscriber, _) = TestClient::<R>::device(addr, 2, false).await;
    assert_eq!(subscriber.subscribe(&[BROADCAST]).await, [1]);
    subscriber.disconnect().await;
    let (mut publisher, _) = TestClient::<R>::device(addr, 1, true).await;
    for payload in [&b"one"[..], b"two", b"three"] {
        publisher.publish1(NEWS, payload).await;
    }
    publisher.disconnect().await;
    broker.shutdown().await;

    let (broker, addr) = start::<R>(with_store(store)).await;
    let stats = broker.handle().stats().await;
    assert_eq!(
        stats.sessions, 1,
        "the session is back before anyone connects"
    );
    let (mut subscriber, present) = TestClient::<R>::device(addr, 2, false).await;
    assert!(present, "session present after the restart");
    for expected in [&b"one"[..], b"two", b"three"] {
        let delivery = subscriber.recv_publish().await;
        assert_eq!(&delivery.payload[..], expected);
        assert!(
            delivery.dup,
            "restored messages may have been delivered before"
        );
        subscriber.puback(&delivery).await;
    }
    subscriber.ping().await;
    subscriber.disconnect().await;
    broker.shutdown().await;
}

/// A broker on a store in memory, with device 2's kept session subscribed to the broadcasts
/// and offline.
async fn with_offline_subscriber<R: Runtime>(
    memory: &MemoryStore,
) -> (Broker<R>, std::net::SocketAddr) {
    let (broker, addr) = start::<R>(with_store(StoreConfig::memory(memory.clone()))).await;
    let (mut subscriber, _) = TestClient::<R>::device(addr, 2, false).await;
    assert_eq!(subscriber.subscribe(&[BROADCAST]).await, [1]);
    subscriber.disconnect().await;
    (broker, addr)
}

pub async fn pubacks_stop_while_the_store_fails_and_resume_when_it_recovers<R: Runtime>() {
    let memory = MemoryStore::new();
    let (broker, addr) = with_offline_subscriber::<R>(&memory).await;
    let (mut publisher, _) = TestClient::<R>::device(addr, 1, true).await;

    memory.fail_commits(true);
    let packet_id = publish1_unacked(&mut publisher, b"\x07held").await;
    wait_for_stats::<R>(&broker.handle(), "a failing store", |stats| {
        stats
            .store
            .is_some_and(|store| store.failing && store.waiting == 1)
    })
    .await;
    // No PUBACK while the message is not on disk: the next packet answers this ping.
    publisher.ping().await;
    assert!(memory.image().messages.is_empty());

    memory.fail_commits(false);
    match publisher.recv().await {
        Packet::PubAck(PubAck { packet_id: acked }) => assert_eq!(acked.get(), packet_id),
        other => panic!("expected the PUBACK once the store recovered, got {other:?}"),
    }
    assert_eq!(
        memory.image().messages.len(),
        1,
        "committed before the PUBACK"
    );
    let stats = broker.handle().stats().await.store.unwrap();
    assert!(stats.failures >= 1 && !stats.failing, "{stats:?}");
    publisher.disconnect().await;
    broker.shutdown().await;

    // The next broker on the same store delivers it.
    let (broker, addr) = start::<R>(with_store(StoreConfig::memory(memory))).await;
    let (mut subscriber, present) = TestClient::<R>::device(addr, 2, false).await;
    assert!(present);
    assert_eq!(&subscriber.recv_publish().await.payload[..], b"\x07held");
    subscriber.disconnect().await;
    broker.shutdown().await;
}

pub async fn server_side_publishes_are_answered_after_their_commit<R: Runtime>() {
    let memory = MemoryStore::new();
    let (broker, _) = with_offline_subscriber::<R>(&memory).await;
    memory.fail_commits(true);
    let handle = broker.handle();
    let publish = spawn::<R, _>(async move {
        let qos = aliot_core::codec::QoS::AtLeastOnce;
        handle
            .publish(topic(NEWS), Bytes::from_static(b"api"), qos)
            .await
    });
    let unanswered = timeout_at(
        &R::default(),
        std::time::Instant::now() + Duration::from_millis(300),
        publish,
    )
    .await;
    assert!(unanswered.is_none(), "answered before the store had it");
    memory.fail_commits(false);
    wait_for_stats::<R>(&broker.handle(), "the commit", |stats| {
        stats
            .store
            .is_some_and(|store| !store.failing && store.waiting == 0)
    })
    .await;
    assert_eq!(memory.image().messages.len(), 1);
    broker.shutdown().await;
}

pub async fn a_directory_in_use_or_holding_something_else_is_refused<R: Runtime>() {
    let dir = TempDir::new("refused");
    let (broker, _) = start::<R>(with_store(StoreConfig::directory(&dir.0))).await;
    match Broker::<R>::start(with_store(StoreConfig::directory(&dir.0))).await {
        Err(BrokerError::Store(StoreError::InUse(_))) => {}
        other => panic!(
            "a second broker on the same directory: {:?}",
            other.map(|_| ())
        ),
    }
    broker.shutdown().await;

    let other = TempDir::new("other");
    std::fs::create_dir_all(&other.0).unwrap();
    std::fs::write(other.0.join("notes.txt"), "mine").unwrap();
    let file = other.0.join("notes.txt");
    std::fs::create_dir_all(other.0.join("bad")).unwrap();
    std::fs::write(other.0.join("bad").join("aliot.redb"), vec![7u8; 8192]).unwrap();
    for path in [other.0.clone(), file, other.0.join("bad")] {
        match Broker::<R>::start(with_store(StoreConfig::directory(&path))).await {
            Err(BrokerError::Store(StoreError::NotAStore { why, .. })) => {
                assert!(!why.is_empty());
            }
            other => panic!("{}: {:?}", path.display(), other.map(|_| ())),
        }
    }
}
