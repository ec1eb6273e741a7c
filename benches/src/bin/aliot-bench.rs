//! `aliot-bench`: the broker load generator of issue 7.
//!
//! ```text
//! aliot-bench [--host H --port P] [--open | --username U --password P | --platform PK:SEED]
//!             [--broker-label NAME] [--broker-pid PID] [--persistent-subscribers] [--json]
//!             <SCENARIO> [OPTIONS]
//!
//!   one-to-one   [--qos 0|1]             1 publisher → 1 subscriber
//!   fan-in       [--publishers 100]      100 publishers → 1 subscriber on a wildcard, QoS 1
//!   fan-out      [--subscribers 100]     1 publisher → 100 subscribers, QoS 0
//!   connections  [--count 20000]         idle connections: connect rate, broker memory each
//!   rrpc         [--devices 100]         RRPC through an in-process aliot broker's Rust API
//!   property-post [--devices 100]        platform devices posting properties (--platform)
//!   gateway      [--subs 2000 --batch 50] a gateway's logins and posts against direct devices
//!   amqp         --amqp-port P [--mode throughput|latency|drain]
//!                                        devices → one AMQP consumer (server-side subscription)
//!   aliot-config --devices N --bind ADDR [--amqp-bind ADDR --api-bind ADDR]
//!                                        a config for `aliot serve` with the --platform devices
//!   compare-table --results DIR          the markdown table of compare.sh
//!   store-table --results DIR            its durable-store table
//!   fill-store   --dir DIR               an aliot store of 10,000 sessions × 100 queued messages
//!   recovery     --aliot BIN --config F --data-dir DIR   time `aliot serve` on a filled store
//! ```
//!
//! Every scenario runs for a fixed time or count and stops by itself; only loopback addresses
//! are ever targeted. Each prints one line (or one JSON object with `--json`): messages per
//! second received, and the send-to-receive latency percentiles. See `benches/README.md`.
#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use aliot_benches::loadgen::LoadError;
use aliot_benches::loadgen::aliot_config::{
    SubscriptionConfig, aliot_config_toml, subscription_config_toml,
};
use aliot_benches::loadgen::amqp::{
    AmqpMode, AmqpSpec, ConsumerCredentials, ConsumerPlan, DEFAULT_ACCESS_KEY_ID,
    DEFAULT_ACCESS_KEY_SECRET, DEFAULT_CREDIT, DEFAULT_GROUP, DrainSpec, default_publishers,
    run_amqp, run_drain,
};
use aliot_benches::loadgen::cluster::{ClusterMode, ClusterPlan};
use aliot_benches::loadgen::compare::{
    ComparisonResults, StoreResults, markdown_table, read_report, slowest_publish_rate, store_table,
};
use aliot_benches::loadgen::gateway::{GatewaySpec, run_gateway};
use aliot_benches::loadgen::login::{Login, PlatformDevices};
use aliot_benches::loadgen::recovery::{FillSpec, RecoverySpec, fill_store, measure_recovery};
use aliot_benches::loadgen::report::ThroughputReport;
use aliot_benches::loadgen::scenario::{
    Common, ConnectionsSpec, RrpcSpec, ThroughputSpec, run_connections, run_rrpc, run_throughput,
};
use aliot_benches::loadgen::target::Target;
use aliot_benches::loadgen::transport::Transport;
use aliot_core::codec::QoS;
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

/// Load generator for MQTT brokers: aliot, mosquitto, rumqttd, any broker on loopback.
#[derive(Parser, Debug)]
#[command(name = "aliot-bench", version)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Args, Debug)]
struct GlobalArgs {
    /// The broker's address: a loopback IP address or `localhost`.
    #[arg(long, global = true, default_value = "127.0.0.1")]
    host: String,
    /// The broker's MQTT port.
    #[arg(long, global = true, default_value_t = 1883)]
    port: u16,
    /// Log in with a client id only (the default when no other login is given).
    #[arg(long, global = true, conflicts_with_all = ["username", "platform"])]
    open: bool,
    /// Log every client in with this user name (and --password).
    #[arg(
        long,
        global = true,
        requires = "password",
        conflicts_with = "platform"
    )]
    username: Option<String>,
    /// The password of --username.
    #[arg(long, global = true, requires = "username")]
    password: Option<String>,
    /// Log in as platform devices `dev000000`, `dev000001`, … of product PK, each signing its
    /// CONNECT with a secret derived from SEED (see `aliot-config`).
    #[arg(long, global = true, value_name = "PK:SEED")]
    platform: Option<String>,
    /// The broker's name in the report.
    #[arg(long, global = true, default_value = "broker")]
    broker_label: String,
    /// The broker's pid: its CPU use and resident memory are read from /proc.
    #[arg(long, global = true)]
    broker_pid: Option<u32>,
    /// Print one JSON object instead of a line.
    #[arg(long, global = true)]
    json: bool,
    /// 1:1, fan-in and fan-out: the subscribers connect with cleanSession=0, so that the broker
    /// keeps their sessions (aliot with a store writes every QoS 1 message routed to them to
    /// disk). Publishers stay clean. Client ids carry this process's id, so a fresh broker has
    /// no old session for them; a client id used again resumes its session, with whatever was
    /// queued for it. The report says `persistent_subscribers`.
    #[arg(long, global = true)]
    persistent_subscribers: bool,
    /// Generator runtime threads (1: one current-thread runtime; pin it with taskset).
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    /// Connections driven per generator task.
    #[arg(long, global = true, default_value_t = 50)]
    conns_per_task: usize,
    /// Connection attempts in flight at once.
    #[arg(long, global = true, default_value_t = 64)]
    connect_concurrency: usize,
    /// The most one connection's handshake (TCP, CONNACK, SUBACK) may take, in seconds.
    #[arg(long, global = true, default_value_t = 10.0)]
    handshake_timeout: f64,
    /// TLS to the broker, trusting the CA certificates of this PEM file (the broker's
    /// certificate must name `localhost`); with --websocket, `wss://`.
    #[arg(long, global = true, value_name = "CA_PEM", conflicts_with = "psk")]
    tls: Option<std::path::PathBuf>,
    /// TLS-PSK to the broker, each client as its platform device (needs --platform).
    #[arg(long, global = true, requires = "platform")]
    psk: bool,
    /// MQTT over WebSocket at this path (e.g. `/mqtt`), over TLS with --tls.
    #[arg(long, global = true, value_name = "PATH", conflicts_with = "psk")]
    websocket: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// 1:1: one publisher, one subscriber, one topic.
    OneToOne {
        /// QoS of the publishes and the subscription.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
        qos: u8,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Fan-in: many publishers, each on its own topic, one subscriber on a `+` wildcard.
    FanIn {
        /// Publishing clients.
        #[arg(long, default_value_t = 100)]
        publishers: usize,
        /// QoS of the publishes and the subscription.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
        qos: u8,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Fan-out: one publisher on a broadcast topic, many subscribers.
    FanOut {
        /// Subscribing clients.
        #[arg(long, default_value_t = 100)]
        subscribers: usize,
        /// QoS of the publishes and the subscriptions.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
        qos: u8,
        #[command(flatten)]
        run: RunArgs,
    },
    /// The thing model: platform devices (--platform) each posting properties, with at most
    /// --inflight posts waiting for the platform's reply; msgs/s counts replies.
    PropertyPost {
        /// Posting devices.
        #[arg(long, default_value_t = 100)]
        devices: usize,
        /// QoS of the posts and of the reply subscriptions.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
        qos: u8,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Gateways (issue 15), against an `aliot serve` with the devices 0..=2×subs of
    /// --platform: gateway dev000000 (client id with `_ss=1`) adds sub-devices 1..=subs to its
    /// topology (30 a request, not timed), logs them in with `combine/batch_login` (timed: one
    /// batch at a time), then posts properties for them in turn; then as many direct devices
    /// (subs+1..=2×subs) post their own (`property-post`), with the same number of posts
    /// waiting in all. Reports the login time and logins/s, msgs/s (replies) on each side and
    /// their ratio.
    Gateway {
        /// Sub-devices of the gateway, and direct devices beside them.
        #[arg(long, default_value_t = 2_000)]
        subs: usize,
        /// Sub-devices per `batch_login` (at most 50).
        #[arg(long, default_value_t = 50)]
        batch: usize,
        /// QoS of the posts (and of the direct devices' reply subscriptions).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
        qos: u8,
        /// Posts waiting for their reply, at most, on each side: the gateway's window, spread
        /// evenly over the direct devices (a multiple of --subs). Default: --subs, one post
        /// waiting per device.
        #[arg(long)]
        inflight: Option<usize>,
        /// QoS 1 posts awaiting their PUBACK on the gateway's connection, at most (its MQTT
        /// window; the rest wait in its client's queue). Default: --inflight.
        #[arg(long)]
        gateway_window: Option<usize>,
        /// Posts per second on each side (default: as fast as the window allows).
        #[arg(long)]
        rate: Option<f64>,
        /// Seconds of posting before each side's window opens.
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        /// Seconds of each side's measurement window.
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        /// The most seconds to wait after each window for replies still owed.
        #[arg(long, default_value_t = 2.0)]
        drain: f64,
        /// The direct devices post first, then the gateway (default: the gateway first).
        #[arg(long)]
        direct_first: bool,
        /// The most seconds a topology or login request waits for its reply.
        #[arg(long, default_value_t = 10.0)]
        reply_timeout: f64,
    },
    /// The server-side subscription (issue 16), against an `aliot serve` configured by
    /// `aliot-config --amqp-bind …`: platform devices (--platform) publish QoS 1 on their own
    /// `/{pk}/{dn}/user/update` while one AMQP 1.0 consumer (SASL PLAIN aksign, one receiver
    /// link, every message accepted) receives them. `throughput`: as fast as the windows allow,
    /// msgs/s accepted in the window; `latency`: the same at --rate; `drain`: --messages into
    /// the group's backlog with no consumer (watched on `GET /metrics` at --api-port), then
    /// the consumer attaches and is timed until it has them all.
    Amqp {
        /// What to measure.
        #[arg(long, value_enum, default_value_t = AmqpModeArg::Throughput)]
        mode: AmqpModeArg,
        /// The broker's AMQP port (plain AMQP, on --host).
        #[arg(long)]
        amqp_port: u16,
        /// The broker's HTTP API port (on --host), for `/metrics`: needed by the drain.
        #[arg(long)]
        api_port: Option<u16>,
        /// The AccessKey ID the consumer signs its login with.
        #[arg(long, default_value = DEFAULT_ACCESS_KEY_ID)]
        access_key_id: String,
        /// Its secret.
        #[arg(long, default_value = DEFAULT_ACCESS_KEY_SECRET)]
        access_key_secret: String,
        /// The consumer group.
        #[arg(long, default_value = DEFAULT_GROUP)]
        group: String,
        /// The consumer's link credit (refilled when half is used).
        #[arg(long, default_value_t = DEFAULT_CREDIT)]
        credit: u32,
        /// Publishing devices (dev000000, dev000001, …).
        #[arg(long, default_value_t = 1)]
        publishers: usize,
        /// The drain: messages to publish into the backlog, then to drain.
        #[arg(long, default_value_t = 1_000_000)]
        messages: u64,
        /// The drain: the most seconds the fill may take.
        #[arg(long, default_value_t = 300.0)]
        fill_timeout: f64,
        /// The drain fails when no message comes for this many seconds.
        #[arg(long, default_value_t = 30.0)]
        stall_timeout: f64,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Idle connections: connect rate, and the broker's resident memory per connection
    /// (with --broker-pid).
    Connections {
        /// Connections to open and hold.
        #[arg(long, default_value_t = 20_000)]
        count: usize,
        /// The first loopback source address; the next ones follow (127.0.0.3, …).
        #[arg(long, default_value = "127.0.0.2")]
        first_source: Ipv4Addr,
        /// Connections per source address.
        #[arg(long, default_value_t = 5_000)]
        per_source: usize,
        /// Seconds to hold every connection idle before reading the broker's memory.
        #[arg(long, default_value_t = 2.0)]
        hold: f64,
        /// Connect with cleanSession=0 (the broker keeps, and with a store writes, each
        /// session); the report says `persistent_sessions`. Default: clean sessions.
        #[arg(long)]
        persistent: bool,
    },
    /// Issue 18: RRPC calls or `Pub` through one cluster node's HTTP API (--api-port) to
    /// platform devices (--platform) on the node at --port: another node's API measures calls
    /// across nodes, the same node's the baseline.
    Cluster {
        /// What to measure.
        #[arg(long, value_enum)]
        mode: ClusterMode,
        /// The HTTP API port the calls go through (on --host).
        #[arg(long)]
        api_port: u16,
        /// Devices answering RRPC (rrpc; pub uses one subscriber).
        #[arg(long, default_value_t = 10)]
        devices: usize,
        /// Concurrent HTTP callers, each one call at a time.
        #[arg(long, default_value_t = 32)]
        callers: usize,
        /// Payload bytes per call.
        #[arg(long, default_value_t = 64)]
        payload: usize,
        /// Seconds of calls before the window opens.
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        /// Seconds of the measurement window.
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
    },
    /// RRPC through the Rust API of an in-process aliot broker, answered by simulated devices.
    Rrpc {
        /// Simulated devices.
        #[arg(long, default_value_t = 100)]
        devices: usize,
        /// Concurrent callers.
        #[arg(long, default_value_t = 100)]
        callers: usize,
        /// Worker threads of the broker's runtime (1: a current-thread runtime).
        #[arg(long, default_value_t = 1)]
        broker_threads: usize,
        /// Each call's timeout, in seconds (1 to 8).
        #[arg(long, default_value_t = 8.0)]
        call_timeout: f64,
        /// Payload bytes per request.
        #[arg(long, default_value_t = 64)]
        payload: usize,
        /// Seconds of calls before the window opens.
        #[arg(long, default_value_t = 1.0)]
        warmup: f64,
        /// Seconds of the measurement window.
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
    },
    /// Print the markdown table of compare.sh from the JSON reports in a folder.
    CompareTable {
        /// The folder of reports (`{broker}-{run}.json`, …).
        #[arg(long)]
        results: PathBuf,
        /// A line to print under the table (repeatable).
        #[arg(long)]
        note: Vec<String>,
    },
    /// Print the durable-store table of compare.sh from the `store-*.json` reports in a folder.
    StoreTable {
        /// The folder of reports.
        #[arg(long)]
        results: PathBuf,
        /// A line to print under the table (repeatable).
        #[arg(long)]
        note: Vec<String>,
    },
    /// Write a new aliot store directly (no broker): --sessions cleanSession=0 sessions of
    /// open-mode clients fill-00000, fill-00001, …, each subscribed at QoS 1 to
    /// `bench/fill/<client id>` and offline, with --messages QoS 1 messages queued on it. Start
    /// `aliot serve --data-dir DIR` (open mode) on it, or time that with `recovery`.
    FillStore {
        /// The data directory: absent or empty.
        #[arg(long)]
        dir: PathBuf,
        /// Sessions.
        #[arg(long, default_value_t = 10_000)]
        sessions: usize,
        /// Messages queued per session.
        #[arg(long, default_value_t = 100)]
        messages: usize,
        /// Payload bytes per message (at least 8: the message's place in its session).
        #[arg(long, default_value_t = 100)]
        payload: usize,
        /// Changes (sessions and messages) per commit; each commit is synced.
        #[arg(long, default_value_t = 10_000)]
        batch: usize,
    },
    /// Time `BIN serve --config F --data-dir DIR` from its spawn to its `listening for MQTT`
    /// line, read its `store restored` log line and its memory, then resume one session with
    /// cleanSession=0 and count what it receives; then stop it (SIGTERM). The broker may
    /// change the store (expired or delivered messages are removed): time a copy.
    Recovery {
        /// The `aliot` binary.
        #[arg(long)]
        aliot: PathBuf,
        /// Its configuration: open mode (`aliot-config --open-mode`), for the resumed client.
        #[arg(long)]
        config: PathBuf,
        /// The data directory, e.g. filled by `fill-store`.
        #[arg(long)]
        data_dir: PathBuf,
        /// The client id of the session to resume afterwards (e.g. fill-04242); none: no check.
        #[arg(long)]
        check_client: Option<String>,
        /// Messages that session should receive.
        #[arg(long, default_value_t = 100)]
        expect: usize,
        /// The most seconds the broker may take to listen.
        #[arg(long, default_value_t = 300.0)]
        start_timeout: f64,
        /// The most seconds the check may take.
        #[arg(long, default_value_t = 30.0)]
        check_timeout: f64,
    },
    /// Print a configuration for `aliot serve --config` with the devices of --platform.
    AliotConfig {
        /// Devices to generate.
        #[arg(long)]
        devices: usize,
        /// The MQTT listener (a loopback address and port).
        #[arg(long)]
        bind: SocketAddr,
        /// Open mode: also admit plain MQTT clients (client id only).
        #[arg(long = "open-mode")]
        open_mode: bool,
        /// Serve the server-side subscription's AMQP listener here (loopback; port 0: any),
        /// with the product's custom category `/${productKey}/${deviceName}/user/update`, one
        /// AccessKey and one consumer group of the product's upstream messages (`amqp`).
        #[arg(long, requires = "api_bind", conflicts_with = "open_mode")]
        amqp_bind: Option<SocketAddr>,
        /// With --amqp-bind: the HTTP API (for `/metrics`; loopback, port 0: any).
        #[arg(long, requires = "amqp_bind")]
        api_bind: Option<SocketAddr>,
        /// With --amqp-bind: the AccessKey ID.
        #[arg(long, default_value = DEFAULT_ACCESS_KEY_ID)]
        access_key_id: String,
        /// Its secret.
        #[arg(long, default_value = DEFAULT_ACCESS_KEY_SECRET)]
        access_key_secret: String,
        /// With --amqp-bind: the consumer group.
        #[arg(long, default_value = DEFAULT_GROUP)]
        group: String,
        /// With --amqp-bind: `[backlog] max_messages` (aliot's default: 100,000).
        #[arg(long, default_value_t = 100_000)]
        backlog_messages: u64,
        /// With --amqp-bind: `[backlog] max_bytes` (aliot's default: 64 MiB).
        #[arg(long, default_value_t = 64 << 20)]
        backlog_bytes: u64,
    },
}

/// What `aliot-bench amqp` measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum AmqpModeArg {
    /// As fast as the publishers' windows allow: msgs/s accepted by the consumer.
    Throughput,
    /// Publishers paced at --rate: the send-to-accept latency.
    Latency,
    /// A full backlog drained: msgs/s of the drain.
    Drain,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Payload bytes per message (at least 8: the send time).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// QoS 1 publishes in flight per publisher, at most.
    #[arg(long, default_value_t = 32)]
    inflight: usize,
    /// Publishes per second of all publishers together (default: as fast as possible).
    #[arg(long, conflicts_with = "rate_of")]
    rate: Option<f64>,
    /// Publish at the rate that reproduces the delivery rate of an earlier JSON report
    /// (messages received per second ÷ subscribers), e.g. another broker's. Given several
    /// times: the slowest of them.
    #[arg(long, value_name = "REPORT.json")]
    rate_of: Vec<PathBuf>,
    /// With --rate-of: publish at this share of that rate (0 < share ≤ 1), e.g. 0.5 for
    /// half the slowest broker's rate.
    #[arg(long, default_value_t = 1.0, requires = "rate_of")]
    rate_fraction: f64,
    /// Seconds of publishing before the window opens.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds of the measurement window.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// The most seconds to wait after the window for messages still owed.
    #[arg(long, default_value_t = 2.0)]
    drain: f64,
}

impl RunArgs {
    fn apply(&self, spec: &mut ThroughputSpec) -> Result<(), LoadError> {
        spec.payload_len = self.payload;
        spec.inflight = self.inflight;
        spec.rate = if self.rate_of.is_empty() {
            self.rate
        } else {
            if !(self.rate_fraction > 0.0 && self.rate_fraction <= 1.0) {
                return Err(LoadError::Parameter(format!(
                    "--rate-fraction {} is not in (0, 1]",
                    self.rate_fraction
                )));
            }
            let mut reports = Vec::with_capacity(self.rate_of.len());
            for path in &self.rate_of {
                let report: ThroughputReport = read_report(path)?.ok_or_else(|| {
                    LoadError::Parameter(format!("--rate-of {}: no such file", path.display()))
                })?;
                reports.push(report);
            }
            slowest_publish_rate(&reports).map(|rate| rate * self.rate_fraction)
        };
        spec.warmup = seconds("--warmup", self.warmup)?;
        spec.duration = seconds("--duration", self.duration)?;
        spec.drain = seconds("--drain", self.drain)?;
        Ok(())
    }
}

/// mimalloc rather than glibc's malloc: the generator must not be the limit of what it
/// measures (`aliot` itself keeps the system's allocator; `docs/DESIGN-NOTES.md` says why).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut builder = if cli.global.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(cli.global.threads);
        builder
    };
    // Look for socket readiness after every task poll: a group that keeps publishing must not
    // delay the discovery that its subscribers have messages waiting.
    let runtime = builder.enable_all().event_interval(1).build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("aliot-bench: cannot build the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("aliot-bench: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), LoadError> {
    let global = &cli.global;
    let common = common(global)?;
    match &cli.scenario {
        Scenario::OneToOne { qos, run } => {
            let mut spec = ThroughputSpec::one_to_one(qos_of(*qos));
            spec.persistent_subscribers = global.persistent_subscribers;
            run.apply(&mut spec)?;
            print(global, &run_throughput(&common, &spec).await?);
        }
        Scenario::PropertyPost { devices, qos, run } => {
            let mut spec = ThroughputSpec::property_post();
            spec.publishers = *devices;
            spec.qos = qos_of(*qos);
            spec.persistent_subscribers = global.persistent_subscribers;
            run.apply(&mut spec)?;
            print(global, &run_throughput(&common, &spec).await?);
        }
        Scenario::Gateway {
            subs,
            batch,
            qos,
            inflight,
            gateway_window,
            rate,
            warmup,
            duration,
            drain,
            direct_first,
            reply_timeout,
        } => {
            if global.persistent_subscribers {
                return Err(LoadError::Parameter(
                    "gateway has no subscribers to make persistent".to_owned(),
                ));
            }
            let mut spec = GatewaySpec {
                subs: *subs,
                batch: *batch,
                gateway_window: *gateway_window,
                direct_first: *direct_first,
                reply_timeout: seconds("--reply-timeout", *reply_timeout)?,
                ..GatewaySpec::default()
            };
            spec.posts.qos = qos_of(*qos);
            spec.posts.inflight = inflight.unwrap_or(*subs);
            spec.posts.rate = *rate;
            spec.posts.warmup = seconds("--warmup", *warmup)?;
            spec.posts.duration = seconds("--duration", *duration)?;
            spec.posts.drain = seconds("--drain", *drain)?;
            print(global, &run_gateway(&common, &spec).await?);
        }
        Scenario::FanIn {
            publishers,
            qos,
            run,
        } => {
            let mut spec = ThroughputSpec::fan_in();
            spec.publishers = *publishers;
            spec.qos = qos_of(*qos);
            spec.persistent_subscribers = global.persistent_subscribers;
            run.apply(&mut spec)?;
            print(global, &run_throughput(&common, &spec).await?);
        }
        Scenario::FanOut {
            subscribers,
            qos,
            run,
        } => {
            let mut spec = ThroughputSpec::fan_out();
            spec.subscribers = *subscribers;
            spec.qos = qos_of(*qos);
            spec.persistent_subscribers = global.persistent_subscribers;
            run.apply(&mut spec)?;
            print(global, &run_throughput(&common, &spec).await?);
        }
        Scenario::Connections {
            count,
            first_source,
            per_source,
            hold,
            persistent,
        } => {
            if global.persistent_subscribers {
                return Err(LoadError::Parameter(
                    "connections has no subscribers: --persistent makes its sessions persistent"
                        .to_owned(),
                ));
            }
            let spec = ConnectionsSpec {
                count: *count,
                first_source: *first_source,
                per_source: *per_source,
                hold: seconds("--hold", *hold)?,
                persistent: *persistent,
            };
            print(global, &run_connections(&common, &spec).await?);
        }
        Scenario::Rrpc {
            devices,
            callers,
            broker_threads,
            call_timeout,
            payload,
            warmup,
            duration,
        } => {
            let spec = RrpcSpec {
                devices: *devices,
                callers: *callers,
                payload_len: *payload,
                warmup: seconds("--warmup", *warmup)?,
                duration: seconds("--duration", *duration)?,
                call_timeout: seconds("--call-timeout", *call_timeout)?,
                broker_threads: *broker_threads,
            };
            print(global, &run_rrpc(&common, &spec).await?);
        }
        Scenario::Cluster {
            mode,
            api_port,
            devices,
            callers,
            payload,
            warmup,
            duration,
        } => {
            let Some(spec) = &global.platform else {
                return Err(LoadError::Parameter(
                    "cluster needs --platform PK:SEED: its devices are platform devices".to_owned(),
                ));
            };
            let api = Target::new(&global.host, *api_port)?.addr().to_string();
            let plan = ClusterPlan {
                mode: *mode,
                target: Target::new(&global.host, global.port)?,
                devices: PlatformDevices::parse(spec)?,
                device_count: *devices,
                api,
                callers: *callers,
                payload: *payload,
                warmup: seconds("--warmup", *warmup)?,
                duration: seconds("--duration", *duration)?,
            };
            print(global, &aliot_benches::loadgen::cluster::run(plan).await?);
        }
        Scenario::CompareTable { results, note } => {
            let results = ComparisonResults::load(results, note.clone())?;
            print!("{}", markdown_table(&results));
        }
        Scenario::StoreTable { results, note } => {
            let results = StoreResults::load(results, note.clone())?;
            print!("{}", store_table(&results));
        }
        Scenario::FillStore {
            dir,
            sessions,
            messages,
            payload,
            batch,
        } => {
            let spec = FillSpec {
                dir: dir.clone(),
                sessions: *sessions,
                messages: *messages,
                payload_len: *payload,
                batch: *batch,
            };
            let report = tokio::task::spawn_blocking(move || fill_store(&spec))
                .await
                .map_err(|error| LoadError::Parameter(format!("fill-store: {error}")))??;
            print(global, &report);
        }
        Scenario::Recovery {
            aliot,
            config,
            data_dir,
            check_client,
            expect,
            start_timeout,
            check_timeout,
        } => {
            let spec = RecoverySpec {
                aliot: aliot.clone(),
                config: config.clone(),
                data_dir: data_dir.clone(),
                check_client: check_client.clone(),
                expect: *expect,
                start_timeout: seconds("--start-timeout", *start_timeout)?,
                check_timeout: seconds("--check-timeout", *check_timeout)?,
            };
            print(global, &measure_recovery(&spec).await?);
        }
        Scenario::AliotConfig {
            devices,
            bind,
            open_mode,
            amqp_bind,
            api_bind,
            access_key_id,
            access_key_secret,
            group,
            backlog_messages,
            backlog_bytes,
        } => {
            let Login::Platform(platform) = &common.login else {
                return Err(LoadError::Parameter(
                    "aliot-config needs --platform PK:SEED to name the devices".to_owned(),
                ));
            };
            let toml = match (amqp_bind, api_bind) {
                (Some(amqp_bind), Some(api_bind)) => {
                    let subscription = SubscriptionConfig {
                        amqp_bind: *amqp_bind,
                        api_bind: *api_bind,
                        access_key_id: access_key_id.clone(),
                        access_key_secret: access_key_secret.clone(),
                        group: group.clone(),
                        backlog_messages: *backlog_messages,
                        backlog_bytes: *backlog_bytes,
                    };
                    subscription_config_toml(*bind, platform, *devices, &subscription)?
                }
                _ => aliot_config_toml(*bind, platform, *devices, *open_mode)?,
            };
            print!("{toml}");
        }
        Scenario::Amqp {
            mode,
            amqp_port,
            api_port,
            access_key_id,
            access_key_secret,
            group,
            credit,
            publishers,
            messages,
            fill_timeout,
            stall_timeout,
            run,
        } => {
            if global.persistent_subscribers {
                return Err(LoadError::Parameter(
                    "amqp has no MQTT subscribers to make persistent".to_owned(),
                ));
            }
            let consumer = ConsumerPlan {
                target: Target::new(&global.host, *amqp_port)?,
                credentials: ConsumerCredentials {
                    client_id: format!("aliot-bench-{}", std::process::id()),
                    access_key_id: access_key_id.clone(),
                    access_key_secret: access_key_secret.clone(),
                    group: group.clone(),
                },
                credit: *credit,
                timeout: common.handshake_timeout,
            };
            let mut publishing = default_publishers();
            publishing.publishers = *publishers;
            run.apply(&mut publishing)?;
            match mode {
                AmqpModeArg::Throughput | AmqpModeArg::Latency => {
                    let spec = AmqpSpec {
                        mode: if *mode == AmqpModeArg::Latency {
                            AmqpMode::Latency
                        } else {
                            AmqpMode::Throughput
                        },
                        consumer,
                        run: publishing,
                    };
                    print(global, &run_amqp(&common, &spec).await?);
                }
                AmqpModeArg::Drain => {
                    let Some(api_port) = api_port else {
                        return Err(LoadError::Parameter(
                            "--mode drain needs --api-port: the backlog is read on /metrics"
                                .to_owned(),
                        ));
                    };
                    let spec = DrainSpec {
                        consumer,
                        api: Target::new(&global.host, *api_port)?,
                        messages: *messages,
                        run: publishing,
                        fill_timeout: seconds("--fill-timeout", *fill_timeout)?,
                        stall_timeout: seconds("--stall-timeout", *stall_timeout)?,
                    };
                    print(global, &run_drain(&common, &spec).await?);
                }
            }
        }
    }
    Ok(())
}

fn common(global: &GlobalArgs) -> Result<Common, LoadError> {
    let login = match (&global.username, &global.password, &global.platform) {
        (_, _, Some(spec)) => Login::Platform(PlatformDevices::parse(spec)?),
        (Some(username), Some(password), None) => Login::Password {
            username: username.clone(),
            password: password.clone(),
        },
        _ => Login::Open,
    };
    let tls = global
        .tls
        .as_deref()
        .map(Transport::tls_config)
        .transpose()?;
    let transport = match (&global.websocket, tls, &login) {
        (Some(path), tls, _) => Transport::WebSocket {
            path: path.clone(),
            tls,
        },
        (None, Some(tls), _) => Transport::Tls(tls),
        (None, None, Login::Platform(devices)) if global.psk => Transport::Psk(devices.clone()),
        (None, None, _) => Transport::Tcp,
    };
    Ok(Common {
        target: Target::new(&global.host, global.port)?.with_transport(transport),
        login,
        broker_label: global.broker_label.clone(),
        broker_pid: global.broker_pid,
        conns_per_task: global.conns_per_task.max(1),
        connect_concurrency: global.connect_concurrency.max(1),
        handshake_timeout: seconds("--handshake-timeout", global.handshake_timeout)?,
    })
}

fn print<T: Serialize + std::fmt::Display>(global: &GlobalArgs, report: &T) {
    if global.json {
        match serde_json::to_string(report) {
            Ok(json) => println!("{json}"),
            Err(error) => eprintln!("aliot-bench: cannot write the report as JSON: {error}"),
        }
    } else {
        println!("{report}");
    }
}

fn qos_of(qos: u8) -> QoS {
    if qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    }
}

/// A duration from a number of seconds given on the command line.
fn seconds(flag: &str, value: f64) -> Result<Duration, LoadError> {
    Duration::try_from_secs_f64(value).map_err(|_| {
        LoadError::Parameter(format!(
            "{flag} {value} is not a number of seconds (0 or more)"
        ))
    })
}
