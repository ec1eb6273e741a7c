//! Issue 18's calls between the nodes of a cluster, driven through a node's HTTP API.
//!
//! - [`ClusterMode::Rrpc`]: `devices` platform devices connect to one node (`--port`) and
//!   answer every RRPC call with its own payload; `callers` HTTP clients call them through
//!   the API given (`--api`: another node's for calls across nodes, the same node's for the
//!   baseline), each waiting for its answer before the next call.
//! - [`ClusterMode::Pub`]: one platform device on `--port` subscribes to a topic of its
//!   product's (`/broadcast/{productKey}/bench/cluster`); `callers` HTTP clients publish QoS 1
//!   stamped payloads to it with the API's `Pub` at `--api`. What it receives in the window is counted, with the latency from the call to
//!   the delivery.
//!
//! Each caller keeps one HTTP/1.1 connection open (the client is a few lines here: requests
//! are small and known). Calls are counted and timed in a window after a warm-up.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use aliot_tokio::client::{Client, ClientOptions, Login};
use aliot_topic::{TopicFilter, TopicLimits};
use base64::Engine as _;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

use super::LoadError;
use super::clock::RunClock;
use super::login::PlatformDevices;
use super::report::{Percentiles, latency_histogram};
use super::stamp::{read_stamp, stamped_payload};
use super::target::Target;

/// What the cluster scenario measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ClusterMode {
    /// RRPC calls through the API to devices on the node at `--port`.
    Rrpc,
    /// `Pub` through the API to a subscriber on the node at `--port`.
    Pub,
}

/// The scenario's settings.
#[derive(Clone, Debug)]
pub struct ClusterPlan {
    /// What is measured.
    pub mode: ClusterMode,
    /// The node the devices connect to.
    pub target: Target,
    /// Who they are.
    pub devices: PlatformDevices,
    /// How many devices answer RRPC (`Rrpc`; `Pub` uses one).
    pub device_count: usize,
    /// The API calls go through: `host:port`.
    pub api: String,
    /// HTTP callers, each one call at a time.
    pub callers: usize,
    /// Bytes of each request's payload.
    pub payload: usize,
    /// Calls before the window opens.
    pub warmup: Duration,
    /// The window.
    pub duration: Duration,
}

/// What the scenario measured.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterReport {
    /// `rrpc` or `pub`.
    pub mode: ClusterMode,
    /// The API's address.
    pub api: String,
    /// Concurrent callers.
    pub callers: usize,
    /// Devices answering (`rrpc`) or subscribed (`pub`: 1).
    pub devices: usize,
    /// The window, seconds.
    pub window_secs: f64,
    /// Calls answered `SUCCESS` (`rrpc`) or messages delivered (`pub`) per second.
    pub per_sec: f64,
    /// Calls the API answered in the window, per second (`pub`: accepted publishes).
    pub calls_per_sec: f64,
    /// Calls that failed or did not answer `SUCCESS` in the window.
    pub failed: u64,
    /// Call → answer (`rrpc`) or call → delivery (`pub`) latency.
    pub latency: Percentiles,
}

impl std::fmt::Display for ClusterReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cluster {:?} via {}: {:.0}/s ({:.0} calls/s, {} failed), {} callers, latency {}",
            self.mode,
            self.api,
            self.per_sec,
            self.calls_per_sec,
            self.failed,
            self.callers,
            self.latency
        )
    }
}

/// Runs the scenario.
///
/// # Errors
///
/// A device that cannot connect or subscribe, an API that cannot be reached.
pub async fn run(plan: ClusterPlan) -> Result<ClusterReport, LoadError> {
    let clock = RunClock::start();
    let device_count = match plan.mode {
        ClusterMode::Rrpc => plan.device_count.max(1),
        ClusterMode::Pub => 1,
    };
    let window = Window::default();
    let window = Arc::new(window);
    let mut clients = Vec::with_capacity(device_count);
    for index in 0..device_count {
        let login = Login::device(plan.devices.identity(index), plan.devices.secret(index));
        let addr = plan.target.addr();
        let options = ClientOptions::new(addr.ip().to_string(), addr.port(), login);
        let client = Client::connect(options)
            .await
            .map_err(|e| LoadError::Cluster(format!("device {index} cannot connect: {e}")))?;
        client.on_rrpc(|request| request.payload.clone());
        clients.push(client);
    }
    let (topic, receiver) = match plan.mode {
        ClusterMode::Rrpc => (String::new(), None),
        ClusterMode::Pub => {
            // The product's broadcast topics are the ones every device may subscribe to.
            let topic = format!("/broadcast/{}/bench/cluster", plan.devices.product_key);
            let filter = TopicFilter::new(&topic, &TopicLimits::default())
                .map_err(|e| LoadError::Cluster(e.to_string()))?;
            clients[0]
                .subscribe(&[(filter, aliot_core::codec::QoS::AtLeastOnce)])
                .await
                .map_err(|e| LoadError::Cluster(format!("cannot subscribe: {e}")))?;
            let messages = clients[0].messages();
            let window = Arc::clone(&window);
            let receiver = tokio::spawn(async move {
                let mut histogram = latency_histogram();
                let mut received = 0u64;
                while let Some(message) = messages.recv().await {
                    let now = clock.now_ns();
                    if !window.open.load(Ordering::Relaxed) {
                        if window.closed.load(Ordering::Relaxed) {
                            break;
                        }
                        continue;
                    }
                    if let Some(sent) = read_stamp(&message.payload) {
                        let _ = histogram.record(now.saturating_sub(sent).max(1));
                        received += 1;
                    }
                }
                (received, histogram)
            });
            (topic, Some(receiver))
        }
    };

    let mut callers = Vec::with_capacity(plan.callers);
    for caller in 0..plan.callers {
        let plan = plan.clone();
        let window = Arc::clone(&window);
        let topic = topic.clone();
        callers.push(tokio::spawn(async move {
            call_loop(&plan, caller, device_count, &topic, &window, clock).await
        }));
    }
    tokio::time::sleep(plan.warmup).await;
    window.open.store(true, Ordering::Relaxed);
    let opened = clock.now_ns();
    tokio::time::sleep(plan.duration).await;
    window.open.store(false, Ordering::Relaxed);
    let window_secs = (clock.now_ns() - opened) as f64 / 1e9;
    window.closed.store(true, Ordering::Relaxed);
    let mut histogram = latency_histogram();
    let mut answered = 0u64;
    let mut failed = 0u64;
    for caller in callers {
        let outcome = caller
            .await
            .map_err(|e| LoadError::Cluster(format!("a caller failed: {e}")))??;
        answered += outcome.answered;
        failed += outcome.failed;
        if plan.mode == ClusterMode::Rrpc {
            histogram
                .add(&outcome.histogram)
                .map_err(|e| LoadError::Cluster(e.to_string()))?;
        }
    }
    let mut delivered = answered;
    if let Some(receiver) = receiver {
        // A publish accepted at the window's end may still be on its way: a moment for it.
        tokio::time::sleep(Duration::from_millis(200)).await;
        for client in clients.drain(..) {
            client.disconnect().await;
        }
        let (received, received_histogram) = receiver
            .await
            .map_err(|e| LoadError::Cluster(format!("the subscriber failed: {e}")))?;
        delivered = received;
        histogram = received_histogram;
    }
    for client in clients {
        client.disconnect().await;
    }
    Ok(ClusterReport {
        mode: plan.mode,
        api: plan.api.clone(),
        callers: plan.callers,
        devices: device_count,
        window_secs,
        per_sec: delivered as f64 / window_secs,
        calls_per_sec: answered as f64 / window_secs,
        failed,
        latency: Percentiles::of(&histogram),
    })
}

#[derive(Default)]
struct Window {
    open: AtomicBool,
    closed: AtomicBool,
}

struct CallerOutcome {
    answered: u64,
    failed: u64,
    histogram: hdrhistogram::Histogram<u64>,
}

async fn call_loop(
    plan: &ClusterPlan,
    caller: usize,
    devices: usize,
    topic: &str,
    window: &Window,
    clock: RunClock,
) -> Result<CallerOutcome, LoadError> {
    let mut http = Http::connect(&plan.api).await?;
    let mut outcome = CallerOutcome {
        answered: 0,
        failed: 0,
        histogram: latency_histogram(),
    };
    let sent = AtomicU64::new(0);
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut next = caller;
    while !window.closed.load(Ordering::Relaxed) {
        let started = clock.now_ns();
        let payload = b64.encode(stamped_payload(plan.payload, started));
        let (path, body) = match plan.mode {
            ClusterMode::Rrpc => {
                let device = plan.devices.identity(next % devices);
                next += plan.callers;
                (
                    "/rrpc",
                    serde_json::json!({
                        "ProductKey": device.product_key,
                        "DeviceName": device.device_name,
                        "RequestBase64Byte": payload,
                        "Timeout": 5000,
                    }),
                )
            }
            ClusterMode::Pub => (
                "/pub",
                serde_json::json!({
                    "ProductKey": plan.devices.product_key,
                    "TopicFullName": topic,
                    "MessageContent": payload,
                    "Qos": 1,
                }),
            ),
        };
        let answer = http.post(path, &body.to_string()).await?;
        let took = clock.now_ns().saturating_sub(started).max(1);
        sent.fetch_add(1, Ordering::Relaxed);
        if !window.open.load(Ordering::Relaxed) {
            continue;
        }
        let ok = match plan.mode {
            ClusterMode::Rrpc => answer["RrpcCode"] == "SUCCESS",
            ClusterMode::Pub => answer["Success"] == true,
        };
        if ok {
            outcome.answered += 1;
            let _ = outcome.histogram.record(took);
        } else {
            outcome.failed += 1;
        }
    }
    Ok(outcome)
}

/// One kept-alive HTTP/1.1 connection to the API.
struct Http {
    host: String,
    stream: BufReader<TcpStream>,
}

impl Http {
    async fn connect(host: &str) -> Result<Http, LoadError> {
        let stream = TcpStream::connect(host)
            .await
            .map_err(|e| LoadError::Cluster(format!("cannot reach the API at {host}: {e}")))?;
        let _ = stream.set_nodelay(true);
        Ok(Http {
            host: host.to_owned(),
            stream: BufReader::new(stream),
        })
    }

    /// POSTs a JSON body and reads the JSON answer.
    async fn post(&mut self, path: &str, body: &str) -> Result<serde_json::Value, LoadError> {
        let broken = |e: std::io::Error| LoadError::Cluster(format!("API connection: {e}"));
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        );
        self.stream
            .get_mut()
            .write_all(request.as_bytes())
            .await
            .map_err(broken)?;
        let mut length = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            let read = self.stream.read_line(&mut line).await.map_err(broken)?;
            if read == 0 {
                return Err(LoadError::Cluster("the API closed the connection".into()));
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await.map_err(broken)?;
        serde_json::from_slice(&body)
            .map_err(|e| LoadError::Cluster(format!("the API's answer is not JSON: {e}")))
    }
}
