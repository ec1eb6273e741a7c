//! What the adapter tests share, on any [`Runtime`]: a registry of test devices, a broker on
//! loopback, a small MQTT test client over the codec (over any byte stream, TCP or TLS), a
//! minimal HTTP client, and for the device client tests: options with a short backoff, waits
//! for its messages and events, and a TCP proxy whose connections a test can cut.
//!
//! It is the support module of the shared suite (`io-common/tests/suite`) and of aliot-tokio's
//! tests of its tokio-only parts (the HTTP API, rumqttc), which include this file by path.
//!
//! Every wait has a timeout and fails the test with what it was waiting for; nothing sleeps
//! for a fixed time to let things happen.

// Each test file uses its own part of these helpers.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::{Duration, Instant};

use aliot_auth::{DeviceIdentity, DeviceSecret, MemoryRegistry, SecureMode, SignRequest};
use aliot_core::PlatformAuthenticator;
use aliot_core::client::{Backoff, Jitter};
use aliot_core::codec::{
    ConnAck, Connect, Decoder, Packet, PacketId, ProtocolVersion, PubAck, Publish, PublishQos, QoS,
    SubAck, SubAckReturnCode, Subscribe, Utf8Bytes,
};
use aliot_core::hub::RrpcOutcome;
use aliot_io::Runtime;
use aliot_io::broker::{
    Broker, BrokerConfig, BrokerHandle, ListenerConfig, RrpcError, RrpcReply, Stats,
};
use aliot_io::client::{
    Client, ClientOptions, ConnectionEvent, Events, IncomingMessage, Login, Messages,
};
use aliot_io::runtime::{sleep, timeout_at};
use aliot_topic::{Permission, ProductCategories, TopicFilter, TopicLimits, TopicName};
use bytes::{Bytes, BytesMut};
use futures_io::{AsyncRead, AsyncWrite};
use futures_util::FutureExt as _;
use futures_util::future::select;
use futures_util::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The product of the test devices.
pub const PRODUCT: &str = "a1TestPK001";

/// How long any single wait of a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// `future`, or a failure of the test naming `what` if it takes longer than [`WAIT`].
pub async fn within<R: Runtime, F: Future>(what: &str, future: F) -> F::Output {
    match timeout_at(&R::default(), Instant::now() + WAIT, future).await {
        Some(output) => output,
        None => panic!("{what}: not done within {WAIT:?}"),
    }
}

/// Runs `future` in a task of its own; the future returned gives its output.
pub fn spawn<R: Runtime, T: Send + 'static>(
    future: impl Future<Output = T> + Send + 'static,
) -> impl Future<Output = T> {
    let (task, output) = future.remote_handle();
    // The task runs on even if the handle is dropped; `output` waits for it.
    drop(R::default().spawn(task));
    output
}

/// A test device: `dev-00{n}` of [`PRODUCT`], with secret `secret-{n}`.
pub fn device(n: u8) -> (DeviceIdentity, DeviceSecret) {
    (
        DeviceIdentity::new(PRODUCT, format!("dev-00{n}")),
        DeviceSecret::new(format!("secret-{n}")),
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

/// A broker configuration with one plain TCP listener on a free loopback port.
pub fn config(open_mode: bool) -> BrokerConfig {
    config_on("127.0.0.1:0".parse().unwrap(), open_mode)
}

/// A broker configuration with one plain TCP listener on `bind`.
pub fn config_on(bind: SocketAddr, open_mode: bool) -> BrokerConfig {
    let authenticator = PlatformAuthenticator::new(registry()).with_open_mode(open_mode);
    BrokerConfig {
        listeners: vec![ListenerConfig::tcp(bind)],
        server: Default::default(),
        hub: Default::default(),
        authenticator: Arc::new(authenticator),
        max_connections: BrokerConfig::DEFAULT_MAX_CONNECTIONS,
        store: None,
        registry: None,
        cluster: None,
    }
}

/// Starts a broker and returns it with the address of its first listener.
pub async fn start<R: Runtime>(config: BrokerConfig) -> (Broker<R>, SocketAddr) {
    let broker = Broker::<R>::start(config).await.expect("the broker starts");
    let (addr, _) = broker.listener_addrs()[0];
    (broker, addr)
}

/// Platform credentials for a device, signed as the platform's SDKs do.
pub fn credentials(n: u8, mode: SecureMode) -> (String, String, String) {
    let (identity, secret) = device(n);
    let signed = SignRequest::new(&identity, &secret, mode)
        .timestamp("2524608000000")
        .sign()
        .unwrap();
    (signed.client_id, signed.username, signed.password)
}

/// A CONNECT with these fields, MQTT 3.1.1, keepalive 60 s.
pub fn connect_packet(client_id: &str, username: Option<&str>, password: Option<&str>) -> Connect {
    Connect {
        protocol: ProtocolVersion::V3_1_1,
        client_id: Utf8Bytes::try_from(client_id).unwrap(),
        clean_session: true,
        keep_alive: 60,
        username: username.map(|u| Utf8Bytes::try_from(u).unwrap()),
        password: password.map(|p| Bytes::copy_from_slice(p.as_bytes())),
        will: None,
    }
}

/// The CONNECT of `pk`/`dn` signed with `secret` (securemode=3).
pub fn signed_connect(pk: &str, dn: &str, secret: &str) -> Connect {
    let identity = DeviceIdentity::new(pk, dn);
    let signed = SignRequest::new(&identity, &DeviceSecret::new(secret), SecureMode::Tcp)
        .sign()
        .unwrap();
    connect_packet(
        &signed.client_id,
        Some(&signed.username),
        Some(&signed.password),
    )
}

/// Connects `pk`/`dn` over plain TCP with a signature made with `secret`, disconnects if
/// accepted, and returns the CONNACK code.
pub async fn login_code<R: Runtime>(addr: SocketAddr, pk: &str, dn: &str, secret: &str) -> u8 {
    let connect = signed_connect(pk, dn, secret);
    let (client, connack) = TestClient::<R>::connect(addr, connect).await;
    if connack.code as u8 == 0 {
        client.disconnect().await;
    }
    connack.code as u8
}

/// The CONNECT of device `n` with its platform credentials.
pub fn device_connect(n: u8, clean_session: bool) -> Connect {
    let (client_id, username, password) = credentials(n, SecureMode::Tcp);
    Connect {
        clean_session,
        ..connect_packet(&client_id, Some(&username), Some(&password))
    }
}

/// A topic string as the codec's string type.
pub fn utf8(text: &str) -> Utf8Bytes {
    Utf8Bytes::try_from(text).unwrap()
}

/// A byte stream the test client can run over.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A minimal MQTT client over the codec: writes packets, reads packets, sees the close.
pub struct TestClient<R: Runtime> {
    runtime: R,
    stream: Box<dyn Io>,
    decoder: Decoder,
    read: BytesMut,
    next_packet_id: u16,
}

impl<R: Runtime> TestClient<R> {
    /// A client over a connected stream.
    pub fn over(stream: impl Io + 'static) -> Self {
        TestClient {
            runtime: R::default(),
            stream: Box::new(stream),
            decoder: Decoder::default(),
            read: BytesMut::new(),
            next_packet_id: 0,
        }
    }

    /// A TCP connection to the broker, with nothing sent yet.
    pub async fn tcp(addr: SocketAddr) -> Self {
        let runtime = R::default();
        let connecting = runtime.connect("127.0.0.1", addr.port());
        let stream = within::<R, _>("connect", connecting)
            .await
            .expect("the broker accepts");
        Self::over(stream)
    }

    /// Connects with this CONNECT and returns the client and the CONNACK.
    pub async fn connect(addr: SocketAddr, connect: Connect) -> (Self, ConnAck) {
        let mut client = Self::tcp(addr).await;
        let connack = client.handshake(connect).await;
        (client, connack)
    }

    /// Connects device `n` with its credentials and expects to be accepted.
    pub async fn device(addr: SocketAddr, n: u8, clean_session: bool) -> (Self, bool) {
        let (client, connack) = Self::connect(addr, device_connect(n, clean_session)).await;
        assert_eq!(connack.code as u8, 0, "device {n} is accepted");
        (client, connack.session_present)
    }

    /// Connects device `n` and subscribes it to its RRPC requests.
    pub async fn rrpc_device(addr: SocketAddr, n: u8) -> Self {
        let (mut client, _) = Self::device(addr, n, true).await;
        assert_eq!(client.subscribe(&[&rrpc_requests(n)]).await, [1]);
        client
    }

    /// Sends CONNECT and reads the CONNACK.
    pub async fn handshake(&mut self, connect: Connect) -> ConnAck {
        self.send(&Packet::from(connect)).await;
        match self.recv().await {
            Packet::ConnAck(connack) => connack,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Writes one packet.
    pub async fn send(&mut self, packet: &Packet) {
        let mut buf = BytesMut::new();
        packet.encode(&mut buf).unwrap();
        self.send_raw(&buf).await;
    }

    /// Writes raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// Reads the next packet, failing the test if none comes in time or the broker closes.
    pub async fn recv(&mut self) -> Packet {
        let deadline = Instant::now() + WAIT;
        match timeout_at(&self.runtime.clone(), deadline, self.next_packet()).await {
            Some(Some(packet)) => packet,
            Some(None) => panic!("the broker closed the connection while a packet was expected"),
            None => panic!("no packet within {WAIT:?}"),
        }
    }

    /// Reads the next PUBLISH (skipping nothing: any other packet fails the test).
    pub async fn recv_publish(&mut self) -> Publish {
        match self.recv().await {
            Packet::Publish(publish) => publish,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// Expects the broker to close the connection (after any packets, which are returned).
    pub async fn expect_closed(&mut self) -> Vec<Packet> {
        let mut before = Vec::new();
        let runtime = self.runtime.clone();
        loop {
            match timeout_at(&runtime, Instant::now() + WAIT, self.next_packet()).await {
                Some(Some(packet)) => before.push(packet),
                Some(None) => return before,
                None => panic!("the broker did not close the connection within {WAIT:?}"),
            }
        }
    }

    /// SUBSCRIBE to these filters at QoS 1; returns the SUBACK's return codes as bytes.
    pub async fn subscribe(&mut self, filters: &[&str]) -> Vec<u8> {
        let packet_id = self.packet_id();
        let subscribe = Subscribe {
            packet_id,
            filters: filters
                .iter()
                .map(|f| (utf8(f), QoS::AtLeastOnce))
                .collect(),
        };
        self.send(&Packet::Subscribe(subscribe)).await;
        match self.recv().await {
            Packet::SubAck(SubAck {
                packet_id: acked,
                return_codes,
            }) => {
                assert_eq!(acked, packet_id);
                return_codes.into_iter().map(u8::from).collect()
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// PUBLISH at QoS 0.
    pub async fn publish0(&mut self, topic: &str, payload: &[u8]) {
        let publish = Publish {
            dup: false,
            qos: PublishQos::AtMostOnce,
            retain: false,
            topic: utf8(topic),
            payload: Bytes::copy_from_slice(payload),
        };
        self.send(&Packet::Publish(publish)).await;
    }

    /// PUBLISH at QoS 1 and wait for its PUBACK.
    pub async fn publish1(&mut self, topic: &str, payload: &[u8]) {
        let packet_id = self.packet_id();
        let publish = Publish {
            dup: false,
            qos: PublishQos::AtLeastOnce(packet_id),
            retain: false,
            topic: utf8(topic),
            payload: Bytes::copy_from_slice(payload),
        };
        self.send(&Packet::Publish(publish)).await;
        match self.recv().await {
            Packet::PubAck(PubAck { packet_id: acked }) => assert_eq!(acked, packet_id),
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }

    /// Acknowledges a QoS 1 delivery.
    pub async fn puback(&mut self, publish: &Publish) {
        let PublishQos::AtLeastOnce(packet_id) = publish.qos else {
            panic!("not a QoS 1 delivery: {publish:?}");
        };
        self.send(&Packet::PubAck(PubAck { packet_id })).await;
    }

    /// A PINGREQ answered by a PINGRESP: the connection is alive.
    pub async fn ping(&mut self) {
        self.send(&Packet::PingReq).await;
        match self.recv().await {
            Packet::PingResp => {}
            other => panic!("expected PINGRESP, got {other:?}"),
        }
    }

    /// DISCONNECT, then wait for the broker to close.
    pub async fn disconnect(mut self) {
        self.send(&Packet::Disconnect).await;
        let left = self.expect_closed().await;
        assert!(left.is_empty(), "packets after DISCONNECT: {left:?}");
    }

    fn packet_id(&mut self) -> PacketId {
        self.next_packet_id = self.next_packet_id.wrapping_add(1).max(1);
        PacketId::new(self.next_packet_id).unwrap()
    }

    /// The next packet, or `None` at the end of the stream (or a reset: the broker closed).
    pub async fn next_packet(&mut self) -> Option<Packet> {
        loop {
            if let Some(packet) = self.decoder.decode(&mut self.read).expect("valid packets") {
                return Some(packet);
            }
            let mut chunk = [0; 4096];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(read) => self.read.extend_from_slice(&chunk[..read]),
            }
        }
    }
}

/// The answer to an HTTP request: status and body.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl HttpResponse {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("body is not JSON ({error}): {}", self.body))
    }
}

/// One HTTP/1.1 request (`Connection: close`), read to the end.
pub async fn http<R: Runtime>(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> HttpResponse {
    let mut stream = R::default()
        .connect("127.0.0.1", addr.port())
        .await
        .expect("the API accepts");
    let body = body.unwrap_or("");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    within::<R, _>("the API's answer", stream.read_to_end(&mut raw))
        .await
        .expect("the answer is readable");
    let raw = String::from_utf8(raw).expect("a UTF-8 answer");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head and a body");
    let (status_line, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status code");
    HttpResponse {
        status,
        headers: headers.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

/// Waits until `check` holds for the broker's statistics, failing the test after [`WAIT`].
pub async fn wait_for_stats<R: Runtime>(
    handle: &BrokerHandle,
    what: &str,
    check: impl Fn(&Stats) -> bool,
) -> Stats {
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = handle.stats().await;
        if check(&stats) {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "statistics never showed {what}: {stats:?}"
        );
        // A short pause between two questions to the hub, not a wait for something to happen.
        sleep(&R::default(), Duration::from_millis(5)).await;
    }
}

/// How long the tests' RRPC calls wait for the device's answer.
pub const RRPC_TIMEOUT: Duration = Duration::from_secs(5);

/// Calls device `n` by RRPC with `request` and expects it to answer `answer` within
/// [`RRPC_TIMEOUT`]; returns the reply (for its message id).
pub async fn rrpc_answered<R: Runtime>(
    handle: &BrokerHandle,
    n: u8,
    request: impl Into<Bytes>,
    answer: impl Into<Bytes>,
) -> RrpcReply {
    let (identity, _) = device(n);
    let call = handle.rrpc(&identity, request.into(), RRPC_TIMEOUT);
    let reply = within::<R, _>("the RRPC reply", call)
        .await
        .expect("the RRPC call is made");
    assert_eq!(reply.outcome, RrpcOutcome::Success(answer.into()));
    reply
}

/// Calls device `n` by RRPC with `request`, waiting up to `timeout`, in a task of its own (the
/// test plays the device meanwhile); the future returned gives the call's result.
pub fn rrpc_in_background<R: Runtime>(
    handle: &BrokerHandle,
    n: u8,
    request: &'static [u8],
    timeout: Duration,
) -> impl Future<Output = Result<RrpcReply, RrpcError>> + use<R> {
    let handle = handle.clone();
    let (identity, _) = device(n);
    spawn::<R, _>(async move {
        handle
            .rrpc(&identity, Bytes::from_static(request), timeout)
            .await
    })
}

/// Answers every RRPC request the client receives (it must be subscribed already) with
/// `pong:` and the request, on the response topic of its form; ends when the broker closes.
pub fn answer_rrpc<R: Runtime>(mut client: TestClient<R>) -> impl Future<Output = ()> {
    spawn::<R, _>(async move {
        while let Some(packet) = client.next_packet().await {
            let Packet::Publish(request) = packet else {
                continue;
            };
            let topic = request.topic.as_str();
            let response_topic = if topic.starts_with("/ext/rrpc/") {
                topic.to_owned()
            } else {
                topic.replacen("/rrpc/request/", "/rrpc/response/", 1)
            };
            let mut answer = b"pong:".to_vec();
            answer.extend_from_slice(&request.payload);
            client.publish0(&response_topic, &answer).await;
        }
    })
}

/// The name of test device `n` (see [`device`]).
pub fn device_name(n: u8) -> String {
    device(n).0.device_name.to_string()
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

/// Device client options for device `n` at `addr`, plain TCP, signed with its secret, quick
/// backoff.
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
    format!("/{PRODUCT}/{}/user/get", device_name(n))
}

/// Device `n`'s own publishable topic.
pub fn user_update(n: u8) -> String {
    format!("/{PRODUCT}/{}/user/update", device_name(n))
}

/// The filter of device `n`'s RRPC requests.
pub fn rrpc_requests(n: u8) -> String {
    format!("/sys/{PRODUCT}/{}/rrpc/request/+", device_name(n))
}

/// The product's broadcast topic (every device may publish and subscribe under it).
pub fn broadcast(rest: &str) -> String {
    format!("/broadcast/{PRODUCT}/{rest}")
}

/// Polls `future` exactly once, then drops it; whether it completed in that poll.
///
/// This is how a caller that gives up on a call (a `select!` branch that lost, a timeout)
/// drops it half way.
pub async fn poll_once_then_drop<F: Future>(future: F) -> bool {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx).is_ready())).await
}

/// Lets the runtime run other tasks once before going on.
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

/// The device client's next message, within [`WAIT`].
pub async fn next_message<R: Runtime>(messages: &Messages) -> IncomingMessage {
    within::<R, _>("a message", messages.recv())
        .await
        .expect("the client is running")
}

/// Skips the device client's events until one `matches`, within [`WAIT`]; returns it.
pub async fn event_matching<R: Runtime>(
    events: &mut Events,
    what: &str,
    matches: impl Fn(&ConnectionEvent) -> bool,
) -> ConnectionEvent {
    within::<R, _>(what, async {
        loop {
            let event = events.recv().await.expect("the client is running");
            if matches(&event) {
                return event;
            }
        }
    })
    .await
}

/// A TCP proxy in front of the broker that a test can cut: [`cut`](Self::cut) closes every
/// connection through it and refuses new ones until [`resume`](Self::resume).
pub struct Proxy<R: Runtime> {
    pub addr: SocketAddr,
    runtime: R,
    open: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<R::Task>>>,
    accepting: Option<R::Task>,
}

impl<R: Runtime> Proxy<R> {
    /// A proxy on a free loopback port, forwarding to `target`.
    pub async fn start(target: SocketAddr) -> Proxy<R> {
        let runtime = R::default();
        let listener = runtime.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = runtime.local_addr(&listener).unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let accepting = runtime.spawn({
            let (runtime, open, connections) = (runtime.clone(), open.clone(), connections.clone());
            async move {
                loop {
                    let Ok((inbound, _)) = runtime.accept(&listener).await else {
                        continue;
                    };
                    // Checked and recorded under the lock, so that a cut misses no connection.
                    let mut live = connections.lock().unwrap_or_else(PoisonError::into_inner);
                    if !open.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    live.push(runtime.spawn(forward(runtime.clone(), inbound, target)));
                }
            }
        });
        Proxy {
            addr,
            runtime,
            open,
            connections,
            accepting: Some(accepting),
        }
    }

    /// Closes every connection through the proxy and refuses new ones.
    pub fn cut(&self) {
        let mut live = self
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.open.store(false, Ordering::SeqCst);
        let cut = std::mem::take(&mut *live);
        drop(live);
        for connection in cut {
            self.runtime.abort(connection);
        }
    }

    /// Lets connections through again.
    pub fn resume(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

/// Copies bytes both ways between a device's connection and a new one to `target`, until either
/// side closes; the task ending closes both.
async fn forward<R: Runtime>(runtime: R, inbound: R::Tcp, target: SocketAddr) {
    let Ok(outbound) = runtime.connect("127.0.0.1", target.port()).await else {
        return;
    };
    let (from_device, mut to_device) = inbound.split();
    let (from_broker, mut to_broker) = outbound.split();
    let up = std::pin::pin!(futures_util::io::copy(from_device, &mut to_broker));
    let down = std::pin::pin!(futures_util::io::copy(from_broker, &mut to_device));
    let _ = select(up, down).await;
}

impl<R: Runtime> Drop for Proxy<R> {
    fn drop(&mut self) {
        if let Some(accepting) = self.accepting.take() {
            self.runtime.abort(accepting);
        }
        self.cut();
    }
}

/// Skips the device client's events up to its next disconnect; returns that event.
pub async fn disconnected<R: Runtime>(events: &mut Events) -> ConnectionEvent {
    event_matching::<R>(events, "the disconnect", |event| {
        matches!(event, ConnectionEvent::Disconnected { .. })
    })
    .await
}

/// Skips the device client's events up to its next reconnect; returns that event.
pub async fn reconnected<R: Runtime>(events: &mut Events) -> ConnectionEvent {
    event_matching::<R>(events, "the reconnect", |event| {
        matches!(event, ConnectionEvent::Reconnected { .. })
    })
    .await
}

/// Skips the device client's events up to its next failed reconnect attempt; returns that event.
pub async fn reconnect_failed<R: Runtime>(events: &mut Events) -> ConnectionEvent {
    event_matching::<R>(events, "a failed attempt", |event| {
        matches!(event, ConnectionEvent::ReconnectFailed { .. })
    })
    .await
}

/// Device 1's round trip, whatever its transport (`label` names it in the topic and the RRPC
/// call): subscribes, publishes `payload` at QoS 1 to itself and receives it, answers an RRPC
/// call, disconnects, and the broker counts the close as the client's.
pub async fn device_round_trip<R: Runtime>(
    broker: &Broker<R>,
    client: Client<R>,
    label: &str,
    payload: &[u8],
) {
    let messages = client.messages();
    let codes = client
        .subscribe(&[
            (filter(&broadcast("#")), QoS::AtLeastOnce),
            (filter(&rrpc_requests(1)), QoS::AtMostOnce),
        ])
        .await
        .unwrap();
    assert_eq!(
        codes,
        [
            SubAckReturnCode::Success(QoS::AtLeastOnce),
            SubAckReturnCode::Success(QoS::AtMostOnce)
        ]
    );
    let id = client
        .publish(
            topic(&broadcast(label)),
            Bytes::copy_from_slice(payload),
            QoS::AtLeastOnce,
        )
        .await
        .unwrap();
    assert!(id.is_some(), "a QoS 1 publish is acknowledged");
    let message = next_message::<R>(&messages).await;
    assert_eq!(message.payload, payload);

    client.on_rrpc(|request| request.payload.clone());
    let call = format!("over {label}");
    rrpc_answered::<R>(&broker.handle(), 1, call.clone(), call).await;

    drop(client);
    let stats = wait_for_stats::<R>(&broker.handle(), "the close", |stats| {
        stats.connections == 0
    })
    .await;
    assert_eq!(stats.counters.closed.client_disconnected, 1);
}
