//! The five scenarios of issue 7.
//!
//! - [`run_throughput`]: 1:1, fan-in and fan-out: messages per second received by the
//!   subscribers over a window after a warm-up, and the send-to-receive latency.
//! - [`run_connections`]: many idle connections: connect rate, and the broker's resident
//!   memory per connection.
//! - [`run_rrpc`]: RRPC calls through the Rust API of an in-process aliot broker, answered by
//!   simulated devices.
//!
//! Each runs for a fixed time (or a fixed number of connections) and stops by itself.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aliot_auth::{DeviceIdentity, MemoryRegistry};
use aliot_core::PlatformAuthenticator;
use aliot_core::codec::QoS;
use aliot_core::hub::RrpcOutcome;
use aliot_tokio::{Broker, BrokerConfig, BrokerHandle, ListenerConfig};
use aliot_topic::{ProductCategories, TopicFilter, TopicLimits, TopicName};
use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use super::LoadError;
use super::clock::{RunClock, duration_ns};
use super::group::{Group, GroupOutcome, PropertyPoster, Publisher, Role, RunShared};
use super::login::{Login, PlatformDevices};
use super::procfs::{self, Process};
use super::report::{
    ConnectionsReport, Percentiles, RrpcReport, ThroughputReport, latency_histogram,
};
use super::session::{Session, SessionPlan, establish};
use super::stamp::{STAMP_LEN, stamped_payload};
use super::target::{SourceAddresses, Target};

/// File descriptors kept free beyond one per connection (stdio, the runtime's own).
const SPARE_FILE_DESCRIPTORS: u64 = 64;

/// Settings every scenario against an external broker shares.
#[derive(Clone, Debug)]
pub struct Common {
    /// The broker.
    pub target: Target,
    /// How clients log in.
    pub login: Login,
    /// The broker's name in reports.
    pub broker_label: String,
    /// The broker's pid, for its CPU time and resident memory.
    pub broker_pid: Option<u32>,
    /// Connections per generator task.
    pub conns_per_task: usize,
    /// Connection attempts in flight at once.
    pub connect_concurrency: usize,
    /// The most one connection's handshake may take.
    pub handshake_timeout: Duration,
}

/// Who publishes to whom in a throughput scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    /// Publishers and subscribers on one topic.
    OneToOne,
    /// Each publisher on its own topic, subscribers on a `+` wildcard over them all.
    FanIn,
    /// Publishers on one broadcast topic that every subscriber subscribes to.
    FanOut,
    /// Each publisher a platform device posting its properties
    /// (`/sys/{pk}/{dn}/thing/event/property/post`) and waiting for the platform's reply
    /// before the next post; no subscribers (a device subscribes to its own reply topic).
    PropertyPost,
}

impl Topology {
    /// The scenario's name in reports.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Topology::OneToOne => "one-to-one",
            Topology::FanIn => "fan-in",
            Topology::FanOut => "fan-out",
            Topology::PropertyPost => "property-post",
        }
    }
}

/// A throughput scenario.
#[derive(Clone, Debug)]
pub struct ThroughputSpec {
    /// Who publishes to whom.
    pub topology: Topology,
    /// Publishing clients.
    pub publishers: usize,
    /// Subscribing clients.
    pub subscribers: usize,
    /// QoS of publishes and subscriptions.
    pub qos: QoS,
    /// Payload bytes per message (at least 8, the send time).
    pub payload_len: usize,
    /// QoS 1 publishes in flight per publisher, at most.
    pub inflight: usize,
    /// Publishes per second of all publishers together; `None`: as fast as possible.
    pub rate: Option<f64>,
    /// Publishing before the window opens.
    pub warmup: Duration,
    /// The measurement window.
    pub duration: Duration,
    /// The most to wait after the window for messages still owed.
    pub drain: Duration,
    /// Subscribers connect with cleanSession=0: the broker keeps their sessions (and, with a
    /// store, writes each QoS 1 message routed to them to disk). Publishers stay clean. Client
    /// ids carry the generator's process id, so a run resumes no earlier run's session.
    pub persistent_subscribers: bool,
    /// With platform devices, the index of the first device the scenario's clients sign in
    /// as: subscribers are devices `first_device..`, publishers the next ones. 0 by default;
    /// the gateway scenario's direct devices start after its gateway and sub-devices.
    pub first_device: usize,
}

impl ThroughputSpec {
    /// Scenario 1: one publisher, one subscriber, 64-byte payloads, 1 s warm-up, 5 s window.
    #[must_use]
    pub fn one_to_one(qos: QoS) -> ThroughputSpec {
        ThroughputSpec {
            topology: Topology::OneToOne,
            publishers: 1,
            subscribers: 1,
            qos,
            payload_len: 64,
            inflight: 32,
            rate: None,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(5),
            drain: Duration::from_secs(2),
            persistent_subscribers: false,
            first_device: 0,
        }
    }

    /// Scenario 2: 100 publishers, one subscriber on a wildcard, QoS 1.
    #[must_use]
    pub fn fan_in() -> ThroughputSpec {
        ThroughputSpec {
            topology: Topology::FanIn,
            publishers: 100,
            ..ThroughputSpec::one_to_one(QoS::AtLeastOnce)
        }
    }

    /// The thing model at MQTT speed: 100 platform devices each posting properties and
    /// waiting for each reply, at most 32 waiting at once (the QoS 1 window of the other
    /// scenarios), QoS 1.
    #[must_use]
    pub fn property_post() -> ThroughputSpec {
        ThroughputSpec {
            topology: Topology::PropertyPost,
            publishers: 100,
            subscribers: 0,
            ..ThroughputSpec::one_to_one(QoS::AtLeastOnce)
        }
    }

    /// Scenario 3: one publisher, 100 subscribers of a broadcast topic, QoS 0.
    #[must_use]
    pub fn fan_out() -> ThroughputSpec {
        ThroughputSpec {
            topology: Topology::FanOut,
            subscribers: 100,
            ..ThroughputSpec::one_to_one(QoS::AtMostOnce)
        }
    }

    fn check(&self) -> Result<(), LoadError> {
        let problem = if self.publishers == 0 {
            "a throughput scenario needs at least one publisher"
        } else if self.subscribers == 0 && self.topology != Topology::PropertyPost {
            "a throughput scenario needs at least one subscriber"
        } else if self.persistent_subscribers && self.topology == Topology::PropertyPost {
            "property-post has no subscribers to make persistent (its devices publish and \
             subscribe to their own replies)"
        } else if self.payload_len < STAMP_LEN {
            "payloads need at least 8 bytes for the send time"
        } else if self.duration.is_zero() {
            "the measurement window must be longer than zero"
        } else if self.qos == QoS::ExactlyOnce {
            "QoS 2 is not part of the profile; use QoS 0 or 1"
        } else if self
            .rate
            .is_some_and(|rate| !(rate > 0.0 && rate.is_finite()))
        {
            "the publish rate must be a positive number of messages per second"
        } else {
            return Ok(());
        };
        Err(LoadError::Parameter(problem.to_owned()))
    }
}

/// Runs a throughput scenario against `common.target`.
///
/// # Errors
///
/// [`LoadError::Parameter`] for an impossible spec; any error opening a client (every client
/// must connect and subscribe before publishing starts); [`LoadError::Proc`] when the broker's
/// pid is given and cannot be read.
pub async fn run_throughput(
    common: &Common,
    spec: &ThroughputSpec,
) -> Result<ThroughputReport, LoadError> {
    spec.check()?;
    let clock = RunClock::start();
    let tag = run_tag(spec.topology.name());
    let root = common.login.topic_root(&tag);
    let (filter, publisher_topic): (String, Box<dyn Fn(usize) -> String>) = match spec.topology {
        Topology::OneToOne => {
            let topic = format!("{root}/one");
            (topic.clone(), Box::new(move |_| topic.clone()))
        }
        Topology::FanIn => {
            let base = format!("{root}/in");
            (
                format!("{base}/+"),
                Box::new(move |index| format!("{base}/{index}")),
            )
        }
        Topology::FanOut => {
            let topic = format!("{root}/out");
            (topic.clone(), Box::new(move |_| topic.clone()))
        }
        Topology::PropertyPost => {
            let Login::Platform(devices) = &common.login else {
                return Err(LoadError::Parameter(
                    "the property-post scenario needs platform devices (--platform PK:SEED)"
                        .to_owned(),
                ));
            };
            let devices = devices.clone();
            let first_publisher = spec.first_device + spec.subscribers;
            (
                format!("{root}/unused"),
                Box::new(move |index| {
                    let device = devices.identity(first_publisher + index);
                    format!(
                        "/sys/{}/{}/thing/event/property/post",
                        device.product_key, device.device_name
                    )
                }),
            )
        }
    };
    let filter = topic_filter(&filter)?;
    let posting = spec.topology == Topology::PropertyPost;

    let mut subscriber_plans = Vec::with_capacity(spec.subscribers);
    for index in 0..spec.subscribers {
        let client_id = format!("ab-{tag}-s{index}");
        let mut config =
            common
                .login
                .client_config(spec.first_device + index, &client_id, spec.inflight)?;
        config.clean_session = !spec.persistent_subscribers;
        subscriber_plans.push(SessionPlan {
            target: common.target.clone(),
            source: None,
            config,
            subscriptions: vec![(filter.clone(), spec.qos)],
            timeout: common.handshake_timeout,
        });
    }
    let mut publisher_plans = Vec::with_capacity(spec.publishers);
    let mut publishers = Vec::with_capacity(spec.publishers);
    let per_publisher_rate = spec.rate.map(|rate| rate / spec.publishers as f64);
    for index in 0..spec.publishers {
        let client_id = format!("ab-{tag}-p{index}");
        publisher_plans.push(SessionPlan {
            target: common.target.clone(),
            source: None,
            config: common.login.client_config(
                spec.first_device + spec.subscribers + index,
                &client_id,
                spec.inflight,
            )?,
            subscriptions: match posting {
                // The platform's reply, on the post topic + `_reply`.
                true => vec![(
                    topic_filter(&format!("{}_reply", publisher_topic(index)))?,
                    spec.qos,
                )],
                false => Vec::new(),
            },
            timeout: common.handshake_timeout,
        });
        let topic = topic_name(&publisher_topic(index))?;
        // Spread evenly over one period: a throttled run measures latency at its rate, not
        // how fast a broker drains every publisher's message arriving at once.
        let phase = index as f64 / spec.publishers as f64;
        publishers.push(match posting {
            true => Role::PropertyPoster(PropertyPoster {
                topics: Arc::from([topic]),
                qos: spec.qos,
                inflight: spec.inflight.max(1),
                rate: per_publisher_rate,
                phase,
            }),
            false => Role::Publisher(Publisher {
                topic,
                qos: spec.qos,
                payload_len: spec.payload_len,
                inflight: spec.inflight.max(1),
                rate: per_publisher_rate,
                phase,
                limit: None,
            }),
        });
    }

    let subscribers = open_every(subscriber_plans, common.connect_concurrency, clock).await?;
    let publisher_sessions = open_every(publisher_plans, common.connect_concurrency, clock).await?;

    let subscriber_members = subscribers
        .into_iter()
        .map(|session| (session, Role::Subscriber))
        .collect();
    let publisher_members = publisher_sessions.into_iter().zip(publishers).collect();
    let (outcome, cpu) = drive(
        common,
        spec,
        clock,
        spec.subscribers as u64,
        vec![subscriber_members, publisher_members],
    )
    .await?;
    if let Some(fault) = outcome.first_reply_fault {
        return Err(LoadError::Reply(fault));
    }
    // A property post expects one reply, to its poster.
    let receivers = if posting { 1 } else { spec.subscribers as u64 };
    Ok(throughput_report(
        common,
        spec,
        spec.topology.name(),
        (spec.publishers, spec.subscribers),
        receivers,
        &outcome,
        &cpu,
    ))
}

/// Drives open clients, each with its role, through the warm-up, the window and the drain of
/// `spec` (publishers stop at the end of the window), reading the CPU use over the window. Each
/// list of `teams` is split into groups of its own (subscribers and publishers apart), each
/// group on a task. `fanout` is what each published message is owed: the subscribers it
/// reaches. Returns what every group counted, added up.
///
/// # Errors
///
/// [`LoadError::Proc`] when the broker's pid is given and cannot be read.
pub(crate) async fn drive(
    common: &Common,
    spec: &ThroughputSpec,
    clock: RunClock,
    fanout: u64,
    teams: Vec<Vec<(Session, Role)>>,
) -> Result<(GroupOutcome, CpuUse), LoadError> {
    let shared = Arc::new(RunShared::new(
        clock,
        clock.now_ns(),
        spec.warmup,
        spec.duration,
        spec.drain,
        fanout,
    ));
    drive_shared(common, &shared, teams).await
}

/// [`drive`] with phases and counters made by the caller, who may share them with receivers
/// of its own (the AMQP consumer of [`super::amqp`]).
///
/// # Errors
///
/// [`LoadError::Proc`] when the broker's pid is given and cannot be read.
pub(crate) async fn drive_shared(
    common: &Common,
    shared: &Arc<RunShared>,
    teams: Vec<Vec<(Session, Role)>>,
) -> Result<(GroupOutcome, CpuUse), LoadError> {
    let mut groups = JoinSet::new();
    for members in teams {
        spawn_groups(&mut groups, members, common.conns_per_task, shared);
    }
    let cpu = measure_cpu(shared, common.broker_pid).await;
    // The groups are joined even when the CPU could not be read: they end by themselves.
    let outcome = join_groups(groups).await;
    Ok((outcome, cpu?))
}

/// The report of a throughput run of `spec` under the name `scenario`, by `clients`
/// (publishing, subscribing) whose messages are each owed to `receivers`, from what its groups
/// counted.
pub(crate) fn throughput_report(
    common: &Common,
    spec: &ThroughputSpec,
    scenario: &str,
    clients: (usize, usize),
    receivers: u64,
    outcome: &GroupOutcome,
    cpu: &CpuUse,
) -> ThroughputReport {
    let window_secs = spec.duration.as_secs_f64();
    let expected_deliveries = outcome.published.saturating_mul(receivers);
    ThroughputReport {
        scenario: scenario.to_owned(),
        broker: common.broker_label.clone(),
        qos: spec.qos as u8,
        publishers: clients.0,
        subscribers: clients.1,
        payload_bytes: spec.payload_len,
        inflight: spec.inflight,
        persistent_subscribers: spec.persistent_subscribers,
        target_publish_rate: spec.rate,
        window_secs,
        msgs_per_sec: outcome.delivered_in_window as f64 / window_secs,
        published_per_sec: outcome.published_in_window as f64 / window_secs,
        latency: Percentiles::of(&outcome.latency_ns),
        published: outcome.published,
        expected_deliveries,
        delivered: outcome.delivered,
        missing: expected_deliveries.saturating_sub(outcome.delivered),
        acked: outcome.acked,
        lost_connections: outcome.lost_connections,
        first_loss: outcome.first_loss.clone(),
        generator_cpu_percent: cpu.generator_percent,
        broker_cpu_percent: cpu.broker_percent,
    }
}

/// The idle connections scenario.
#[derive(Clone, Debug)]
pub struct ConnectionsSpec {
    /// Connections to open and hold.
    pub count: usize,
    /// The first loopback source address (then the next ones).
    pub first_source: Ipv4Addr,
    /// Connections per source address.
    pub per_source: usize,
    /// How long to hold every connection idle before reading the broker's memory.
    pub hold: Duration,
    /// Connect with cleanSession=0 (the broker keeps, and with a store writes, each session).
    pub persistent: bool,
}

impl Default for ConnectionsSpec {
    /// 20,000 clean connections from 127.0.0.2 on, 5,000 per source address, held 2 s.
    fn default() -> Self {
        ConnectionsSpec {
            count: 20_000,
            first_source: Ipv4Addr::new(127, 0, 0, 2),
            per_source: 5_000,
            hold: Duration::from_secs(2),
            persistent: false,
        }
    }
}

/// Opens `spec.count` connections (as fast as `common.connect_concurrency` attempts in flight
/// allow), holds them idle, and reads the broker's resident memory before and after.
///
/// # Errors
///
/// [`LoadError::FileLimit`] when this process may not open that many sockets,
/// [`LoadError::SourceAddresses`] when the source addresses would leave 127.0.0.0/8,
/// [`LoadError::Proc`] when the broker's pid is given and cannot be read, and the errors of
/// building credentials. Connections that fail are counted, not fatal.
pub async fn run_connections(
    common: &Common,
    spec: &ConnectionsSpec,
) -> Result<ConnectionsReport, LoadError> {
    let limit = procfs::open_files_limit()?;
    let needed = (spec.count as u64).saturating_add(SPARE_FILE_DESCRIPTORS);
    if needed > limit {
        return Err(LoadError::FileLimit {
            requested: spec.count,
            needed,
            limit,
        });
    }
    let sources = match common.target.addr() {
        SocketAddr::V4(_) => Some(SourceAddresses::new(
            spec.first_source,
            spec.per_source,
            spec.count,
        )?),
        SocketAddr::V6(_) => None,
    };
    let tag = run_tag("conn");
    let mut plans = Vec::with_capacity(spec.count);
    for index in 0..spec.count {
        let client_id = format!("ab-{tag}-c{index}");
        let mut config = common.login.client_config(index, &client_id, 1)?;
        config.clean_session = !spec.persistent;
        plans.push(SessionPlan {
            target: common.target.clone(),
            source: sources.map(|sources| sources.for_connection(index)),
            config,
            subscriptions: Vec::new(),
            timeout: common.handshake_timeout,
        });
    }

    let broker = common.broker_pid.map(Process::Pid);
    let rss_before_kib = broker.map(procfs::resident_kib).transpose()?;
    let generator_before = procfs::cpu_ticks(Process::Current)?;
    let broker_before = broker.map(procfs::cpu_ticks).transpose()?;
    let clock = RunClock::start();
    let results = open_all(plans, common.connect_concurrency, clock).await;
    let connect_ns = clock.now_ns();
    let generator_cpu_percent = procfs::cpu_percent(
        generator_before,
        procfs::cpu_ticks(Process::Current)?,
        connect_ns,
    );
    let broker_cpu_percent = match (broker, broker_before) {
        (Some(broker), Some(before)) => Some(procfs::cpu_percent(
            before,
            procfs::cpu_ticks(broker)?,
            connect_ns,
        )),
        _ => None,
    };

    let mut handshake = latency_histogram();
    let mut sessions = Vec::with_capacity(results.len());
    let mut failed = 0;
    let mut first_failure = None;
    for result in results {
        match result {
            Ok(session) => {
                handshake.saturating_record(duration_ns(session.handshake).max(1));
                sessions.push((session, Role::Idle));
            }
            Err(error) => {
                failed += 1;
                if first_failure.is_none() {
                    first_failure = Some(error.to_string());
                }
            }
        }
    }
    let connected = sessions.len();

    // Hold: every connection stays open, each group reading what the broker might send.
    let shared = Arc::new(RunShared::new(
        clock,
        clock.now_ns(),
        Duration::ZERO,
        Duration::ZERO,
        spec.hold + Duration::from_secs(60),
        0,
    ));
    let mut groups = JoinSet::new();
    spawn_groups(&mut groups, sessions, common.conns_per_task, &shared);
    tokio::time::sleep(spec.hold).await;
    let rss_after_kib = broker.map(procfs::resident_kib).transpose()?;
    shared.finish();
    let outcome = join_groups(groups).await;

    let connect_secs = connect_ns as f64 / 1e9;
    let bytes_per_connection = match (rss_before_kib, rss_after_kib) {
        (Some(before), Some(after)) if connected > 0 => {
            Some((after as f64 - before as f64) * 1024.0 / connected as f64)
        }
        _ => None,
    };
    Ok(ConnectionsReport {
        scenario: "connections".to_owned(),
        broker: common.broker_label.clone(),
        requested: spec.count,
        persistent_sessions: spec.persistent,
        connected,
        failed,
        first_failure,
        source_addresses: sources.map_or(1, |sources| sources.count()),
        concurrency: common.connect_concurrency,
        connect_secs,
        connects_per_sec: if connect_secs > 0.0 {
            connected as f64 / connect_secs
        } else {
            0.0
        },
        handshake: Percentiles::of(&handshake),
        rss_before_kib,
        rss_after_kib,
        bytes_per_connection,
        open_after_hold: outcome.open_at_end,
        hold_secs: spec.hold.as_secs_f64(),
        generator_cpu_percent,
        broker_cpu_percent,
    })
}

/// The RRPC scenario.
#[derive(Clone, Debug)]
pub struct RrpcSpec {
    /// Simulated devices answering.
    pub devices: usize,
    /// Concurrent callers, each calling the devices in turn, one call at a time.
    pub callers: usize,
    /// Payload bytes of each request (the devices echo it).
    pub payload_len: usize,
    /// Calling before the window opens.
    pub warmup: Duration,
    /// The measurement window.
    pub duration: Duration,
    /// Each call's timeout (the platform allows 1–8 s).
    pub call_timeout: Duration,
    /// Worker threads of the broker's runtime; 1 runs it on a current-thread runtime of its
    /// own thread.
    pub broker_threads: usize,
}

impl Default for RrpcSpec {
    /// 100 devices, 100 callers, 64-byte payloads, 1 s warm-up, 5 s window, 8 s timeout, one
    /// broker thread.
    fn default() -> Self {
        RrpcSpec {
            devices: 100,
            callers: 100,
            payload_len: 64,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(5),
            call_timeout: Duration::from_secs(8),
            broker_threads: 1,
        }
    }
}

/// What one RRPC caller counted.
struct CallerOutcome {
    latency_ns: hdrhistogram::Histogram<u64>,
    success_in_window: u64,
    success: u64,
    timeout: u64,
    other: u64,
}

/// Starts an aliot broker in this process (on its own thread and runtime), connects
/// `spec.devices` simulated devices that answer every RRPC request, and has `spec.callers`
/// callers call them through [`BrokerHandle::rrpc`] for the warm-up and the window.
///
/// `common` gives the generator settings (tasks, connect concurrency, handshake timeout); its
/// target and login are not used: the devices sign in to the in-process broker as platform
/// devices of a generated product.
///
/// # Errors
///
/// [`LoadError::Parameter`] for an impossible spec, [`LoadError::Broker`] when the broker does
/// not start, and any error opening a device.
pub async fn run_rrpc(common: &Common, spec: &RrpcSpec) -> Result<RrpcReport, LoadError> {
    if spec.devices == 0 || spec.callers == 0 || spec.duration.is_zero() {
        return Err(LoadError::Parameter(
            "the RRPC scenario needs devices, callers and a window longer than zero".to_owned(),
        ));
    }
    let devices = PlatformDevices {
        product_key: "rrpcBenchPK".to_owned(),
        seed: "aliot-bench-rrpc".to_owned(),
    };
    let mut registry = MemoryRegistry::new();
    registry.add_product(&devices.product_key, ProductCategories::defaults());
    for index in 0..spec.devices {
        registry
            .add_device(
                &devices.product_key,
                &PlatformDevices::device_name(index),
                devices.secret(index),
            )
            .map_err(|error| LoadError::Broker(error.to_string()))?;
    }
    let config = BrokerConfig {
        listeners: vec![ListenerConfig::tcp(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            0,
        ))],
        server: Default::default(),
        hub: Default::default(),
        authenticator: Arc::new(PlatformAuthenticator::new(registry)),
        max_connections: BrokerConfig::DEFAULT_MAX_CONNECTIONS,
        store: None,
        registry: None,
        cluster: None,
    };
    let broker = InProcessBroker::start(config, spec.broker_threads).await?;
    let result = rrpc_against(&broker, common, spec, &devices).await;
    broker.stop().await;
    result
}

async fn rrpc_against(
    broker: &InProcessBroker,
    common: &Common,
    spec: &RrpcSpec,
    devices: &PlatformDevices,
) -> Result<RrpcReport, LoadError> {
    let target = Target::from_addr(broker.addr)?;
    let login = Login::Platform(devices.clone());
    let mut plans = Vec::with_capacity(spec.devices);
    let mut identities = Vec::with_capacity(spec.devices);
    for index in 0..spec.devices {
        let identity = devices.identity(index);
        let request_filter = format!(
            "/sys/{}/{}/rrpc/request/+",
            identity.product_key, identity.device_name
        );
        plans.push(SessionPlan {
            target: target.clone(),
            source: None,
            config: login.client_config(index, "", 32)?,
            subscriptions: vec![(topic_filter(&request_filter)?, QoS::AtMostOnce)],
            timeout: common.handshake_timeout,
        });
        identities.push(identity);
    }
    let clock = RunClock::start();
    let sessions = open_every(plans, common.connect_concurrency, clock).await?;

    let shared = Arc::new(RunShared::new(
        clock,
        clock.now_ns(),
        spec.warmup,
        spec.duration,
        spec.call_timeout + Duration::from_secs(5),
        0,
    ));
    let mut groups = JoinSet::new();
    let members = sessions
        .into_iter()
        .map(|session| (session, Role::RrpcResponder))
        .collect();
    spawn_groups(&mut groups, members, common.conns_per_task, &shared);

    let identities: Arc<[DeviceIdentity]> = identities.into();
    let next_device = Arc::new(AtomicUsize::new(0));
    let payload = stamped_payload(spec.payload_len, 0);
    let mut callers = JoinSet::new();
    for _ in 0..spec.callers {
        callers.spawn(call_until_stop(
            broker.handle.clone(),
            Arc::clone(&shared),
            Arc::clone(&identities),
            Arc::clone(&next_device),
            payload.clone(),
            spec.call_timeout,
        ));
    }
    let cpu = measure_cpu(&shared, None).await?;
    let mut latency = latency_histogram();
    let (mut success_in_window, mut success, mut timeout, mut other) = (0, 0, 0, 0);
    while let Some(joined) = callers.join_next().await {
        if let Ok(caller) = joined {
            let _ = latency.add(&caller.latency_ns);
            success_in_window += caller.success_in_window;
            success += caller.success;
            timeout += caller.timeout;
            other += caller.other;
        }
    }
    shared.finish();
    join_groups(groups).await;

    let window_secs = spec.duration.as_secs_f64();
    Ok(RrpcReport {
        scenario: "rrpc".to_owned(),
        broker: "aliot (in-process)".to_owned(),
        devices: spec.devices,
        callers: spec.callers,
        payload_bytes: spec.payload_len,
        broker_threads: spec.broker_threads.max(1),
        window_secs,
        calls_per_sec: success_in_window as f64 / window_secs,
        latency: Percentiles::of(&latency),
        success,
        timeout,
        other,
        process_cpu_percent: cpu.generator_percent,
    })
}

/// One caller: calls the devices in turn until the window closes.
async fn call_until_stop(
    handle: BrokerHandle,
    shared: Arc<RunShared>,
    identities: Arc<[DeviceIdentity]>,
    next_device: Arc<AtomicUsize>,
    payload: Bytes,
    timeout: Duration,
) -> CallerOutcome {
    let mut outcome = CallerOutcome {
        latency_ns: latency_histogram(),
        success_in_window: 0,
        success: 0,
        timeout: 0,
        other: 0,
    };
    let window = shared.measure_from_ns..shared.stop_ns;
    while shared.clock.now_ns() < shared.stop_ns {
        let turn = next_device.fetch_add(1, Ordering::Relaxed);
        let Some(device) = identities.get(turn % identities.len().max(1)) else {
            break;
        };
        let called_ns = shared.clock.now_ns();
        let reply = handle.rrpc(device, payload.clone(), timeout).await;
        let answered_ns = shared.clock.now_ns();
        match reply.map(|reply| reply.outcome) {
            Ok(RrpcOutcome::Success(_)) => {
                outcome.success += 1;
                if window.contains(&answered_ns) {
                    outcome.success_in_window += 1;
                    outcome
                        .latency_ns
                        .saturating_record(answered_ns.saturating_sub(called_ns).max(1));
                }
            }
            Ok(RrpcOutcome::Timeout) => outcome.timeout += 1,
            Ok(_) | Err(_) => outcome.other += 1,
        }
    }
    outcome
}

/// An aliot broker on a thread and runtime of its own, so that it and the generator do not
/// share a scheduler.
struct InProcessBroker {
    handle: BrokerHandle,
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl InProcessBroker {
    async fn start(config: BrokerConfig, threads: usize) -> Result<InProcessBroker, LoadError> {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("aliot-broker".to_owned())
            .spawn(move || {
                let runtime = if threads <= 1 {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                } else {
                    tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(threads)
                        .enable_all()
                        .build()
                };
                let runtime = match runtime {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = ready_tx.send(Err(format!("cannot build its runtime: {error}")));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match Broker::start(config).await {
                        Ok(broker) => {
                            let addr = broker.listener_addrs().first().map(|(addr, _)| *addr);
                            let Some(addr) = addr else {
                                let _ = ready_tx.send(Err("no listener was bound".to_owned()));
                                broker.shutdown().await;
                                return;
                            };
                            let _ = ready_tx.send(Ok((broker.handle(), addr)));
                            let _ = stop_rx.await;
                            broker.shutdown().await;
                        }
                        Err(error) => {
                            let _ = ready_tx.send(Err(error.to_string()));
                        }
                    }
                });
            })
            .map_err(|error| LoadError::Broker(format!("cannot start its thread: {error}")))?;
        match ready_rx.await {
            Ok(Ok((handle, addr))) => Ok(InProcessBroker {
                handle,
                addr,
                stop,
                thread,
            }),
            Ok(Err(error)) => Err(LoadError::Broker(error)),
            Err(_) => Err(LoadError::Broker(
                "its thread ended before it was ready".to_owned(),
            )),
        }
    }

    /// Shuts the broker down gracefully and waits for its thread.
    async fn stop(self) {
        let _ = self.stop.send(());
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

/// CPU use over the measurement window.
pub(crate) struct CpuUse {
    /// The generator's, percent of one core.
    pub(crate) generator_percent: f64,
    /// The broker's (with its pid), percent of one core.
    pub(crate) broker_percent: Option<f64>,
}

/// Waits for the window to open, reads the CPU times, waits for it to close, reads again.
async fn measure_cpu(shared: &RunShared, broker_pid: Option<u32>) -> Result<CpuUse, LoadError> {
    let broker = broker_pid.map(Process::Pid);
    tokio::time::sleep_until(shared.clock.tokio_instant(shared.measure_from_ns)).await;
    let from_ns = shared.clock.now_ns();
    let generator_before = procfs::cpu_ticks(Process::Current)?;
    let broker_before = broker.map(procfs::cpu_ticks).transpose()?;
    tokio::time::sleep_until(shared.clock.tokio_instant(shared.stop_ns)).await;
    let wall_ns = shared.clock.now_ns().saturating_sub(from_ns);
    let generator_after = procfs::cpu_ticks(Process::Current)?;
    let broker_after = broker.map(procfs::cpu_ticks).transpose()?;
    Ok(CpuUse {
        generator_percent: procfs::cpu_percent(generator_before, generator_after, wall_ns),
        broker_percent: broker_before
            .zip(broker_after)
            .map(|(before, after)| procfs::cpu_percent(before, after, wall_ns)),
    })
}

/// Opens every plan, `concurrency` at a time; the results are in the order of the plans.
pub async fn open_all(
    plans: Vec<SessionPlan>,
    concurrency: usize,
    clock: RunClock,
) -> Vec<Result<Session, LoadError>> {
    let total = plans.len();
    let queue = Arc::new(Mutex::new(
        plans.into_iter().enumerate().collect::<VecDeque<_>>(),
    ));
    let mut workers = JoinSet::new();
    for _ in 0..concurrency.clamp(1, total.max(1)) {
        let queue = Arc::clone(&queue);
        workers.spawn(async move {
            let mut opened = Vec::new();
            loop {
                let next = queue
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .pop_front();
                let Some((index, plan)) = next else {
                    break;
                };
                opened.push((index, establish(plan, &clock).await));
            }
            opened
        });
    }
    let mut results: Vec<Option<Result<Session, LoadError>>> = (0..total).map(|_| None).collect();
    while let Some(joined) = workers.join_next().await {
        for (index, result) in joined.unwrap_or_default() {
            if let Some(slot) = results.get_mut(index) {
                *slot = Some(result);
            }
        }
    }
    results
        .into_iter()
        .map(|result| {
            result.unwrap_or_else(|| {
                Err(LoadError::Parameter(
                    "a connection attempt was lost with its task".to_owned(),
                ))
            })
        })
        .collect()
}

/// Opens every plan; the first failure fails them all (the others are closed).
pub(crate) async fn open_every(
    plans: Vec<SessionPlan>,
    concurrency: usize,
    clock: RunClock,
) -> Result<Vec<Session>, LoadError> {
    open_all(plans, concurrency, clock)
        .await
        .into_iter()
        .collect()
}

/// Splits `members` into groups of `per_task` and runs each on its own task.
pub(crate) fn spawn_groups(
    groups: &mut JoinSet<GroupOutcome>,
    members: Vec<(Session, Role)>,
    per_task: usize,
    shared: &Arc<RunShared>,
) {
    let per_task = per_task.max(1);
    let mut members = members.into_iter().peekable();
    while members.peek().is_some() {
        let chunk: Vec<_> = members.by_ref().take(per_task).collect();
        groups.spawn(Group::new(chunk, Arc::clone(shared)).run());
    }
}

/// Waits for every group and adds up what they counted.
pub(crate) async fn join_groups(mut groups: JoinSet<GroupOutcome>) -> GroupOutcome {
    let mut total = GroupOutcome::empty();
    while let Some(joined) = groups.join_next().await {
        if let Ok(outcome) = joined {
            total.merge(&outcome);
        }
    }
    total
}

/// A tag that keeps this run's client ids and topics apart from any other's: the scenario and
/// the process id.
pub(crate) fn run_tag(scenario: &str) -> String {
    format!("{scenario}-{:x}", std::process::id())
}

fn topic_limits() -> TopicLimits {
    // Clients accept any topic an MQTT string can hold; the broker applies its own limit.
    TopicLimits::with_max_len(usize::from(u16::MAX))
}

pub(crate) fn topic_name(topic: &str) -> Result<TopicName, LoadError> {
    TopicName::new(topic, &topic_limits()).map_err(|error| LoadError::Topic {
        topic: topic.to_owned(),
        error,
    })
}

fn topic_filter(filter: &str) -> Result<TopicFilter, LoadError> {
    TopicFilter::new(filter, &topic_limits()).map_err(|error| LoadError::Topic {
        topic: filter.to_owned(),
        error,
    })
}
