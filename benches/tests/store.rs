//! The durable-store tools of the load generator against a real aliot broker with a store:
//! persistent subscribers reach the disk, and a store written by `fill-store` is what a broker
//! restores and delivers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aliot_auth::MemoryRegistry;
use aliot_benches::loadgen::LoadError;
use aliot_benches::loadgen::login::Login;
use aliot_benches::loadgen::recovery::{FillSpec, check_session, fill_client_id, fill_store};
use aliot_benches::loadgen::scenario::{Common, ThroughputSpec, run_throughput};
use aliot_benches::loadgen::target::Target;
use aliot_core::PlatformAuthenticator;
use aliot_tokio::store::StoreConfig;
use aliot_tokio::{Broker, BrokerConfig, ListenerConfig};

/// A fresh folder under the system's temporary one, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "aliot-bench-store-{}-{name}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An open-mode aliot broker on a free loopback port, with its store in `dir`.
async fn durable_broker(dir: &TempDir) -> Broker {
    Broker::start(BrokerConfig {
        listeners: vec![ListenerConfig::tcp(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            0,
        ))],
        server: Default::default(),
        hub: Default::default(),
        authenticator: Arc::new(
            PlatformAuthenticator::new(MemoryRegistry::new()).with_open_mode(true),
        ),
        max_connections: BrokerConfig::DEFAULT_MAX_CONNECTIONS,
        store: Some(StoreConfig::directory(&dir.0)),
        registry: None,
        cluster: None,
    })
    .await
    .expect("the broker starts on its store")
}

fn target(broker: &Broker) -> Target {
    let (addr, _) = broker.listener_addrs()[0];
    Target::from_addr(addr).expect("loopback")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_subscribers_have_every_message_written_and_lose_none() {
    let dir = TempDir::new("persistent");
    let broker = durable_broker(&dir).await;
    let common = Common {
        target: target(&broker),
        login: Login::Open,
        broker_label: "aliot-durable".to_owned(),
        broker_pid: None,
        conns_per_task: 8,
        connect_concurrency: 8,
        handshake_timeout: Duration::from_secs(10),
    };
    let mut spec = ThroughputSpec::fan_in();
    spec.publishers = 4;
    spec.rate = Some(1_000.0);
    spec.warmup = Duration::from_millis(200);
    spec.duration = Duration::from_millis(600);
    spec.drain = Duration::from_secs(5);
    spec.persistent_subscribers = true;
    let report = run_throughput(&common, &spec).await.expect("runs");
    assert!(report.persistent_subscribers, "{report}");
    assert!(report.to_string().contains("(persistent)"), "{report}");
    assert!(report.published > 0, "{report}");
    assert_eq!(report.missing, 0, "{report}");
    assert_eq!(report.acked, report.published, "{report}");
    let stats = broker.handle().stats().await;
    let store = stats.store.expect("the broker has a store");
    // The persistent session was written. Its messages need not be: a message saved and
    // acknowledged before the writer commits it cancels out, so no count per message holds.
    assert!(store.commits > 0 && store.changes > 0, "{store:?}");
    assert_eq!(store.failures, 0, "{store:?}");
    // The subscriber's session outlives its connection.
    assert_eq!(stats.sessions, 1, "{stats:?}");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filled_store_is_restored_and_a_resumed_session_receives_its_queue_in_order() {
    let dir = TempDir::new("fill");
    let mut spec = FillSpec::new(dir.0.clone());
    spec.sessions = 30;
    spec.messages = 40;
    spec.batch = 100;
    let report = fill_store(&spec).expect("fills");
    assert_eq!(report.messages, 1_200);
    // 30 sessions and 1,200 messages, 100 changes a commit.
    assert_eq!(report.commits, 13);
    assert!(report.file_bytes > 0);
    assert!(matches!(fill_store(&spec), Err(LoadError::Parameter(_))));

    let broker = durable_broker(&dir).await;
    assert_eq!(broker.handle().stats().await.sessions, 30);
    let check = check_session(
        target(&broker),
        &fill_client_id(17),
        40,
        Duration::from_secs(10),
    )
    .await
    .expect("connects");
    assert!(check.session_present, "{check:?}");
    assert_eq!(check.received, 40, "{check:?}");
    assert_eq!(check.distinct, 40, "{check:?}");
    assert!(check.in_order, "{check:?}");
    broker.shutdown().await;
}
