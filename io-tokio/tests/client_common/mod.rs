//! What the device client tests share: test devices, a broker on loopback, client options with
//! a short backoff, waits that fail the test with what they waited for, and a TCP proxy whose
//! connections a test can cut.
//!
//! Nothing sleeps for a fixed time to let things happen: every wait is for an event or a
//! condition, with a timeout.

// Each test file uses its own part of these helpers.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use aliot_auth::{DeviceIdentity, DeviceSecret, MemoryRegistry};
use aliot_core::PlatformAuthenticator;
use aliot_core::client::{Backoff, Jitter};
use aliot_tokio::broker::{Broker, BrokerConfig, BrokerHandle, ListenerConfig, Stats};
use aliot_tokio::client::IncomingMessage;
use aliot_tokio::client::{ClientOptions, ConnectionEvent, Events, Login, Messages};
use aliot_topic::{Permission, ProductCategories, TopicFilter, TopicLimits, TopicName};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The product of the test devices.
pub const PRODUCT: &str = "a1ClientPK01";

/// How long any single wait of a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// Test device `n`: `dev-{n}` of [`PRODUCT`], with secret `secret-of-{n}`.
pub fn device(n: u8) -> (DeviceIdentity, DeviceSecret) {
    (
        DeviceIdentity::new(PRODUCT, format!("dev-{n}")),
        DeviceSecret::new(format!("secret-of-{n}")),
    )
}

/// The registry: [`PRODUCT`] with the default categories plus `/user/get` (sub) and
/// `/user/update` (pub), and devices 1 to 4.
pub fn registry() -> MemoryRegistry {
    let mut categories = ProductCategories::defaults();
    categories
        .add_custom("/${productKey}/${deviceName}/user/get", Permission::Sub)
        .unwrap();
    categories
        .add_custom("/${productKey}/${deviceName}/user/update", Permission::Pub)
        .unwrap();
    let mut registry = MemoryRegistry::new();
    registry.add_product(PRODUCT, categories);
    for n in 1..=4 {
        let (identity, secret) = device(n);
        registry
            .add_device(&identity.product_key, &identity.device_name, secret)
            .unwrap();
    }
    registry
}

/// A broker configuration with one plain TCP listener on `bind`.
pub fn broker_config(bind: SocketAddr, open_mode: bool) -> BrokerConfig {
    let authenticator = PlatformAuthenticator::new(registry()).with_open_mode(open_mode);
    BrokerConfig {
        listeners: vec![ListenerConfig { bind, tls: None }],
        server: Default::default(),
        hub: Default::default(),
        authenticator: Arc::new(authenticator),
        api: None,
    }
}

/// Starts a broker (platform credentials only) on a free loopback port.
pub async fn start_broker() -> (Broker, SocketAddr) {
    start_broker_on("127.0.0.1:0".parse().unwrap(), false).await
}

/// Starts a broker on `bind` and returns it with its listener's address.
pub async fn start_broker_on(bind: SocketAddr, open_mode: bool) -> (Broker, SocketAddr) {
    let broker = Broker::start(broker_config(bind, open_mode))
        .await
        .expect("the broker starts");
    let (addr, _) = broker.listener_addrs()[0];
    (broker, addr)
}

/// A backoff short enough for tests: 20 ms doubling to 200 ms, equal jitter.
pub fn quick_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
        multiplier: 2,
        jitter: Jitter::Equal,
    }
}

/// Options for device `n` at `addr`, plain TCP, signed with its secret, quick backoff.
pub fn device_options(addr: SocketAddr, n: u8) -> ClientOptions {
    let (identity, secret) = device(n);
    let mut options = ClientOptions::new(
        addr.ip().to_string(),
        addr.port(),
        Login::device(identity, secret),
    );
    options.backoff = quick_backoff();
    options
}

/// A topic name of the test product.
pub fn topic(text: &str) -> TopicName {
    TopicName::new(text, &TopicLimits::default()).unwrap()
}

/// A topic filter of the test product.
pub fn filter(text: &str) -> TopicFilter {
    TopicFilter::new(text, &TopicLimits::default()).unwrap()
}

/// Device `n`'s own subscribable topic.
pub fn user_get(n: u8) -> String {
    format!("/{PRODUCT}/dev-{n}/user/get")
}

/// The product's broadcast topic (every device may publish and subscribe under it).
pub fn broadcast(rest: &str) -> String {
    format!("/broadcast/{PRODUCT}/{rest}")
}

/// Awaits `future`, failing the test if it takes longer than [`WAIT`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// Polls `future` exactly once, then drops it; whether it completed in that poll.
///
/// This is how a caller that gives up on a call (a `select!` branch that lost, a timeout)
/// drops it half way.
pub async fn poll_once_then_drop<F: Future>(future: F) -> bool {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx).is_ready())).await
}

/// The next message, within [`WAIT`].
pub async fn next_message(messages: &Messages) -> IncomingMessage {
    within("a message", messages.recv())
        .await
        .expect("the client is running")
}

/// Skips events until one `matches`, within [`WAIT`]; returns it.
pub async fn event_matching(
    events: &mut Events,
    what: &str,
    matches: impl Fn(&ConnectionEvent) -> bool,
) -> ConnectionEvent {
    within(what, async {
        loop {
            let event = events.recv().await.expect("the client is running");
            if matches(&event) {
                return event;
            }
        }
    })
    .await
}

/// Polls the broker's statistics until `condition` holds, within [`WAIT`]; returns them.
pub async fn stats_until(
    handle: &BrokerHandle,
    what: &str,
    condition: impl Fn(&Stats) -> bool,
) -> Stats {
    within(what, async {
        loop {
            let stats = handle.stats().await;
            if condition(&stats) {
                return stats;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

/// A TCP proxy in front of the broker that a test can cut: [`cut`](Self::cut) closes every
/// connection through it and refuses new ones until [`resume`](Self::resume).
pub struct Proxy {
    pub addr: SocketAddr,
    open: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (open, watcher) = watch::channel(true);
        let task = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    continue;
                };
                if !*watcher.borrow() {
                    drop(inbound);
                    continue;
                }
                let mut cut = watcher.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut inbound, mut outbound) = (inbound, outbound);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.wait_for(|open| !*open) => {}
                    }
                });
            }
        });
        Proxy { addr, open, task }
    }

    /// Closes every connection through the proxy and refuses new ones.
    pub fn cut(&self) {
        self.open.send_replace(false);
    }

    /// Lets connections through again.
    pub fn resume(&self) {
        self.open.send_replace(true);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
