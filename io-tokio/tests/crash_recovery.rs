//! `aliot serve` with a store, killed with SIGKILL at a random moment while rumqttc publishers
//! send QoS 1 to a cleanSession=0 subscriber, then started again on the same data directory;
//! ten times in a row. Every message whose PUBACK a publisher received reaches the subscriber
//! in the end (at least once: duplicates are counted and allowed, losses are not).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

/// Kills and restarts, at least ten (the issue's bar).
const ROUNDS: usize = 10;
const PUBLISHERS: usize = 3;
const TOPIC: &str = "crash/test";
const SUBSCRIBER: &str = "crash-subscriber";
/// How long anything may take before the test fails.
const PATIENCE: Duration = Duration::from_secs(30);

const CONFIG: &str = r#"
[[listener]]
bind = "127.0.0.1:0"

[limits]
# The subscriber is offline for whole rounds: its queue must not drop what it is owed.
max_queued_messages = 10000000
max_queued_bytes = 4294967296

[auth]
open = true
"#;

/// A running `aliot serve`, its log in a file.
struct Served {
    child: Child,
    addr: SocketAddr,
}

impl Served {
    fn start(config: &Path, data: &Path, log: &Path) -> Served {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("the broker's log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_aliot"))
            .args(["serve", "--config"])
            .arg(config)
            .arg("--data-dir")
            .arg(data)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("start aliot");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut addr = None;
        for line in lines.by_ref() {
            let line = line.expect("read aliot's stdout");
            if let Some(rest) = line.strip_prefix("aliot: listening for MQTT on ") {
                let text = rest.split(' ').next().unwrap_or_default();
                addr = Some(text.parse().expect("a socket address"));
            }
            if line.starts_with("aliot: running") {
                break;
            }
        }
        // Whatever else it prints is not read: keep the pipe drained.
        std::thread::spawn(move || for _ in lines {});
        let addr = addr.unwrap_or_else(|| {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("aliot did not start; its log:\n{log}")
        });
        Served { child, addr }
    }

    /// SIGKILL: no shutdown, no last commit.
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL aliot");
        self.child.wait().expect("reap aliot");
    }

    /// SIGTERM, and a clean exit.
    fn stop(self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(status.success());
        let mut child = self.child;
        let status = child.wait().expect("wait for aliot");
        assert_eq!(status.code(), Some(0));
    }
}

fn options(id: &str, addr: SocketAddr, clean: bool) -> MqttOptions {
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options
        .set_keep_alive(Duration::from_secs(60))
        .set_clean_session(clean)
        .set_inflight(32);
    options
}

/// Publishes QoS 1 messages `{prefix}-{n}` until its connection breaks; every payload whose
/// PUBACK came goes into `acked`.
async fn publish_until_killed(
    addr: SocketAddr,
    id: String,
    prefix: String,
    acked: Arc<Mutex<BTreeSet<String>>>,
) -> usize {
    let (client, mut eventloop) = AsyncClient::new(options(&id, addr, true), 64);
    // Payloads in the order they were handed to the client: rumqttc sends them in that order,
    // and says which packet id each got as it goes out.
    let order: Arc<Mutex<VecDeque<String>>> = Arc::default();
    let feeder_order = Arc::clone(&order);
    let feeder = tokio::spawn(async move {
        for n in 0.. {
            let payload = format!("{prefix}-{n}");
            feeder_order.lock().unwrap().push_back(payload.clone());
            if client
                .publish(TOPIC, QoS::AtLeastOnce, false, payload.into_bytes())
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let mut in_flight: HashMap<u16, String> = HashMap::new();
    let mut sent = 0;
    loop {
        match eventloop.poll().await {
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                if let Some(payload) = order.lock().unwrap().pop_front() {
                    in_flight.insert(pkid, payload);
                    sent += 1;
                }
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                if let Some(payload) = in_flight.remove(&ack.pkid) {
                    acked.lock().unwrap().insert(payload);
                }
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    feeder.abort();
    sent
}

/// The subscriber online: every payload it receives is counted (rumqttc acknowledges each).
/// Runs until its connection breaks, or until nothing came for `quiet`.
async fn receive(addr: SocketAddr, received: Arc<Mutex<BTreeMap<String, usize>>>, quiet: Duration) {
    let (client, mut eventloop) = AsyncClient::new(options(SUBSCRIBER, addr, false), 64);
    loop {
        match tokio::time::timeout(quiet, eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::Publish(publish)))) => {
                let payload = String::from_utf8_lossy(&publish.payload).into_owned();
                *received.lock().unwrap().entry(payload).or_default() += 1;
            }
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => break,
        }
    }
    // The PUBACKs of the last deliveries go out before the connection is dropped.
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_message_survives_kill_9_at_random_moments() {
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("crash_recovery")
        .join(std::process::id().to_string());
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let config = work.join("aliot.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let data = work.join("data");
    let log = work.join("aliot.log");

    // The subscriber's session: subscribed, then away.
    let served = Served::start(&config, &data, &log);
    {
        let (client, mut eventloop) = AsyncClient::new(options(SUBSCRIBER, served.addr, false), 16);
        client.subscribe(TOPIC, QoS::AtLeastOnce).await.unwrap();
        let subscribed = tokio::time::timeout(PATIENCE, async {
            loop {
                if let Event::Incoming(Packet::SubAck(_)) = eventloop.poll().await.unwrap() {
                    break;
                }
            }
        })
        .await;
        assert!(subscribed.is_ok(), "no SUBACK");
        client.disconnect().await.unwrap();
        let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
    }

    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let received: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let mut served = served;
    let mut sent = 0;
    for round in 0..ROUNDS {
        let addr = served.addr;
        let publishers: Vec<_> = (0..PUBLISHERS)
            .map(|p| {
                tokio::spawn(publish_until_killed(
                    addr,
                    format!("crash-pub-{p}"),
                    format!("r{round}-p{p}"),
                    Arc::clone(&acked),
                ))
            })
            .collect();
        // Every other round, the subscriber is online while the broker is killed.
        let subscriber =
            (round % 2 == 1).then(|| tokio::spawn(receive(addr, Arc::clone(&received), PATIENCE)));
        let before = acked.lock().unwrap().len();
        tokio::time::sleep(Duration::from_millis(fastrand::u64(150..1200))).await;
        served.kill();
        for publisher in publishers {
            sent += tokio::time::timeout(PATIENCE, publisher)
                .await
                .expect("a publisher sees its connection end")
                .unwrap();
        }
        if let Some(subscriber) = subscriber {
            tokio::time::timeout(PATIENCE, subscriber)
                .await
                .expect("the subscriber sees its connection end")
                .unwrap();
        }
        // While the subscriber works through its backlog, PUBACKs may be held (flow control):
        // a round may end before any.
        println!(
            "crash test: round {round}: {} PUBACKs before the kill",
            acked.lock().unwrap().len() - before
        );
        served = Served::start(&config, &data, &log);
    }

    // After the last restart, the subscriber takes what it is owed. A pause of 3 s in the
    // redelivery (a loaded machine) ends one session; it comes back while anything is owed,
    // for PATIENCE in all.
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        receive(served.addr, Arc::clone(&received), Duration::from_secs(3)).await;
        let owed = {
            let received = received.lock().unwrap();
            acked
                .lock()
                .unwrap()
                .iter()
                .any(|p| !received.contains_key(p))
        };
        if !owed || std::time::Instant::now() >= deadline {
            break;
        }
    }
    served.stop();

    let acked = acked.lock().unwrap();
    assert!(!acked.is_empty(), "no PUBACK in any round");
    let received = received.lock().unwrap();
    let lost: Vec<&String> = acked
        .iter()
        .filter(|p| !received.contains_key(*p))
        .collect();
    let deliveries: usize = received.values().sum();
    let duplicates = deliveries - received.len();
    println!(
        "crash test: {ROUNDS} kills; {sent} QoS 1 messages sent, {} acknowledged, {} delivered \
         ({deliveries} deliveries, {duplicates} duplicates), {} lost",
        acked.len(),
        received.len(),
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "{} acknowledged messages never delivered, e.g. {:?}; broker log: {}",
        lost.len(),
        lost.iter().take(10).collect::<Vec<_>>(),
        log.display()
    );
    let _ = std::fs::remove_dir_all(&work);
}
