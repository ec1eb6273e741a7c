//! The server-side subscription of issue 16: devices publish over MQTT, one business server
//! receives their messages over AMQP 1.0.
//!
//! The consumer is a real AMQP 1.0 client (fe2o3-amqp, the client side of the crate the broker
//! serves with): TCP, SASL PLAIN with the platform's `aksign` user name and password
//! ([`ConsumerCredentials`]), one session, one receiver link with automatic credit
//! ([`CreditMode::Auto`]); it reads each message's `topic` and `generateTime` application
//! properties and accepts every message it receives, one disposition each, as the platform's
//! demos do. The devices are the generator's own MQTT publishers ([`Role::Publisher`]), signed
//! in as platform devices, publishing QoS 1 on their own `/{pk}/{dn}/user/update` (the custom
//! category [`USER_UPDATE_CATEGORY`] of the generated configuration) with stamped payloads:
//! the consumer, in the same process, turns each into a send-to-accept latency.
//!
//! Three measurements ([`AmqpMode`]):
//!
//! - **throughput**: publishers as fast as their QoS 1 window allows, for a warm-up and a
//!   window; the consumer's messages per second (received and accepted) in the window.
//! - **latency**: the same, publishers paced (`rate`); the latency percentiles are the point.
//! - **drain** ([`run_drain`]): with no consumer attached, `messages` are published and the
//!   group's backlog is watched on the broker's `GET /metrics` until it holds them all; then
//!   the consumer attaches and is timed until it has every one (each message id once). The
//!   broker's resident memory is read before and after the fill.
//!
//! [`USER_UPDATE_CATEGORY`]: super::aliot_config::USER_UPDATE_CATEGORY

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use aliot_auth::{SignMethod, consumer_password_digest};
use aliot_tokio::coalesced::CoalescedWrites;
use base64::Engine as _;
use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::delivery::Delivery;
use fe2o3_amqp::link::receiver::CreditMode;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::messaging::{Data, Source};
use fe2o3_amqp::types::primitives::SimpleValue;
use fe2o3_amqp::{Connection, Receiver, Session};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::LoadError;
use super::clock::RunClock;
use super::group::{GroupOutcome, Publisher, Role, RunShared};
use super::login::{Login, PlatformDevices};
use super::procfs::{self, Process};
use super::report::ThroughputReport;
use super::scenario::{
    Common, ThroughputSpec, Topology, drive_shared, join_groups, open_every, spawn_groups,
    throughput_report, topic_name,
};
use super::session::SessionPlan;
use super::stamp::{STAMP_LEN, read_stamp};
use super::target::Target;

/// The AccessKey ID `aliot-bench aliot-config` writes and the consumer signs with by default.
pub const DEFAULT_ACCESS_KEY_ID: &str = "LTAI5tAliotBenchKey";
/// Its secret.
pub const DEFAULT_ACCESS_KEY_SECRET: &str = "aliot-bench-access-key-secret";
/// The consumer group `aliot-bench aliot-config` writes and the consumer consumes by default.
pub const DEFAULT_GROUP: &str = "BENCH_GROUP";
/// The link credit the consumer keeps by default (refilled when half is used).
pub const DEFAULT_CREDIT: u32 = 200;
/// After the window, the consumer waits at least this long before deciding that every message
/// published has arrived (as the MQTT subscribers do).
const STOP_GRACE_NS: u64 = 20_000_000;
/// How often a waiting consumer looks at the clock and the shared counters.
const TICK: Duration = Duration::from_millis(5);
/// How often the drain's fill reads the broker's metrics.
const METRICS_POLL: Duration = Duration::from_millis(100);
/// The most one `GET /metrics` may take.
const METRICS_TIMEOUT: Duration = Duration::from_secs(10);
/// After the drain, the most the broker may take to settle the last acceptances (its backlog
/// back to zero) before the consumer closes.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// The login of a consumer: an AccessKey, a consumer group, a client id; the SASL PLAIN user
/// name and password are made from them with a timestamp (PLATFORM-PROTOCOLS §8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerCredentials {
    /// The consumer's client id (before the first `|` of the user name).
    pub client_id: String,
    /// The AccessKey ID (`authId`).
    pub access_key_id: String,
    /// The AccessKey's secret: the password is signed with it.
    pub access_key_secret: String,
    /// The consumer group (`consumerGroupId`).
    pub group: String,
}

impl ConsumerCredentials {
    /// The SASL PLAIN user name for a login at `timestamp_ms`.
    ///
    /// ```
    /// use aliot_benches::loadgen::amqp::ConsumerCredentials;
    ///
    /// let login = ConsumerCredentials {
    ///     client_id: "app-1".into(),
    ///     access_key_id: "LTAI4Fn".into(),
    ///     access_key_secret: "secret".into(),
    ///     group: "g1".into(),
    /// };
    /// assert_eq!(
    ///     login.username(1573489088171),
    ///     "app-1|authMode=aksign,signMethod=hmacsha1,timestamp=1573489088171,authId=LTAI4Fn,\
    ///      iotInstanceId=,consumerGroupId=g1|"
    /// );
    /// // The broker's own check of the password (aliot_auth::ConsumerLogin) agrees.
    /// assert_eq!(login.password(1573489088171), "XfuNXew9DjzgWjSaCDQnmHo96r8=");
    /// ```
    #[must_use]
    pub fn username(&self, timestamp_ms: u64) -> String {
        format!(
            "{}|authMode=aksign,signMethod=hmacsha1,timestamp={timestamp_ms},authId={},\
             iotInstanceId=,consumerGroupId={}|",
            self.client_id, self.access_key_id, self.group
        )
    }

    /// The SASL PLAIN password for a login at `timestamp_ms`: base64 of the HMAC-SHA1, keyed
    /// by the AccessKey's secret, of `authId=${accessKeyId}&timestamp=${timestamp}`.
    #[must_use]
    pub fn password(&self, timestamp_ms: u64) -> String {
        let digest = consumer_password_digest(
            SignMethod::HmacSha1,
            self.access_key_secret.as_bytes(),
            &self.access_key_id,
            &timestamp_ms.to_string(),
        );
        base64::engine::general_purpose::STANDARD.encode(digest)
    }
}

/// Where the consumer connects and how it logs in and gives credit.
#[derive(Clone, Debug)]
pub struct ConsumerPlan {
    /// The broker's AMQP listener (plain AMQP, loopback).
    pub target: Target,
    /// Its login.
    pub credentials: ConsumerCredentials,
    /// The link credit it keeps: [`CreditMode::Auto`] refills it when half is used.
    pub credit: u32,
    /// The most the TCP connect, SASL, open, begin and attach may take together.
    pub timeout: Duration,
}

/// What the consumer measures with the devices publishing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AmqpMode {
    /// As fast as the publishers' QoS 1 windows allow: messages per second.
    Throughput,
    /// Paced publishers: the latency percentiles.
    Latency,
}

impl AmqpMode {
    /// The mode's name in reports.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            AmqpMode::Throughput => "throughput",
            AmqpMode::Latency => "latency",
        }
    }
}

/// A run of devices publishing while the consumer receives.
#[derive(Clone, Debug)]
pub struct AmqpSpec {
    /// Throughput or latency (only the name in the report differs: pace with `run.rate`).
    pub mode: AmqpMode,
    /// The consumer.
    pub consumer: ConsumerPlan,
    /// The publishers: `run.publishers` platform devices from `run.first_device` on, QoS
    /// `run.qos`, `run.inflight` each, `run.rate` in all, warm-up, window and drain (the most
    /// the consumer waits after the window for messages still in the backlog). Topology and
    /// subscribers are not used.
    pub run: ThroughputSpec,
}

/// The report of an [`AmqpSpec`] run: the throughput report (subscribers: the one consumer;
/// `missing`: published and not received by the end of the drain, still in the backlog) and
/// what only the consumer counts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AmqpReport {
    /// `throughput` or `latency`.
    pub mode: String,
    /// The consumer's link credit.
    pub credit: u32,
    /// Messages the consumer received on other topics than the run's (none expected: the
    /// group takes only the product's upstream messages).
    pub other_messages: u64,
    /// Messages the consumer received more than once (by `messageId`).
    pub duplicates: u64,
    /// Seconds from the start of the TCP connect to the receiver link attached.
    pub consumer_attach_secs: f64,
    /// The run, as the MQTT scenarios report it.
    #[serde(flatten)]
    pub run: ThroughputReport,
}

impl fmt::Display for AmqpReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}, credit {}) other={} duplicates={}",
            self.run, self.mode, self.credit, self.other_messages, self.duplicates
        )
    }
}

/// The consumer's AMQP connection, session and receiver link.
struct Consumer {
    connection: ConnectionHandle<()>,
    session: SessionHandle<()>,
    receiver: Receiver,
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer").finish_non_exhaustive()
    }
}

impl Consumer {
    /// Connects, logs in, begins a session and attaches the receiver link, within the plan's
    /// timeout.
    async fn open(plan: &ConsumerPlan) -> Result<Consumer, LoadError> {
        let addr = plan.target.addr();
        let open = async {
            let stream = TcpStream::connect(addr)
                .await
                .map_err(|error| amqp_error(addr, "TCP connect", &error))?;
            stream
                .set_nodelay(true)
                .map_err(|error| amqp_error(addr, "TCP_NODELAY", &error))?;
            let timestamp = wall_clock_ms();
            let credentials = &plan.credentials;
            let mut connection = Connection::builder()
                .container_id(credentials.client_id.clone())
                .sasl_profile(SaslProfile::Plain {
                    username: credentials.username(timestamp),
                    password: credentials.password(timestamp),
                })
                // fe2o3-amqp writes each frame on its own; gathered, the consumer's
                // dispositions cost the generator's CPU (which the publisher shares) a
                // system call per burst rather than per message.
                .open_with_stream(CoalescedWrites::new(stream))
                .await
                .map_err(|error| LoadError::AmqpLogin {
                    addr,
                    access_key_id: credentials.access_key_id.clone(),
                    group: credentials.group.clone(),
                    detail: error.to_string(),
                })?;
            let mut session = Session::begin(&mut connection)
                .await
                .map_err(|error| amqp_error(addr, "session begin", &error))?;
            let receiver = Receiver::builder()
                .name(format!("{}-receiver", credentials.client_id))
                .source(Source::builder().build())
                .credit_mode(CreditMode::Auto(plan.credit.max(1)))
                .attach(&mut session)
                .await
                .map_err(|error| amqp_error(addr, "receiver link attach", &error))?;
            Ok(Consumer {
                connection,
                session,
                receiver,
            })
        };
        tokio::time::timeout(plan.timeout, open)
            .await
            .map_err(|_| LoadError::Amqp {
                step: format!("login and attach at {addr}"),
                detail: format!(
                    "no attached receiver link within {} ms",
                    plan.timeout.as_millis()
                ),
            })?
    }

    /// Closes the link, the session and the connection; what fails here no longer matters.
    async fn close(mut self) {
        let _ = self.receiver.close().await;
        let _ = self.session.end().await;
        let _ = self.connection.close().await;
    }
}

/// A failure of the consumer's connection after the login.
fn amqp_error(addr: SocketAddr, step: &str, error: &dyn fmt::Display) -> LoadError {
    LoadError::Amqp {
        step: format!("{step} ({addr})"),
        detail: error.to_string(),
    }
}

/// What one delivery was, once accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Received {
    /// Its `messageId` (the broker's are decimal numbers).
    message_id: u64,
    /// Whether its topic is one the run's devices publish on.
    ours: bool,
    /// The payload's stamp (send time on the run clock), when it is one of ours.
    stamp_ns: Option<u64>,
}

/// Reads a delivery's application properties and body, and accepts it.
async fn accept(
    consumer: &Consumer,
    delivery: &Delivery<Data>,
    topic_prefix: &str,
) -> Result<Received, LoadError> {
    let message = delivery.message();
    let properties = message.application_properties.as_ref();
    let property = |key: &str| properties.and_then(|properties| properties.0.get(key));
    let topic = match property("topic") {
        Some(SimpleValue::String(topic)) => topic.as_str(),
        _ => "",
    };
    let message_id = match property("messageId") {
        Some(SimpleValue::String(id)) => id.parse::<u64>().ok(),
        _ => None,
    };
    let generate_time = matches!(property("generateTime"), Some(SimpleValue::Long(_)));
    let (Some(message_id), true, false) = (message_id, generate_time, topic.is_empty()) else {
        return Err(LoadError::Amqp {
            step: "a received message".to_owned(),
            detail: format!(
                "it lacks the application properties topic, messageId (a number) or \
                 generateTime (a long): {:?}",
                message.application_properties
            ),
        });
    };
    let ours = topic.starts_with(topic_prefix) && topic.ends_with("/user/update");
    let body = delivery.body().0.as_slice();
    let stamp_ns = if ours && body.len() >= STAMP_LEN {
        read_stamp(body)
    } else {
        None
    };
    consumer
        .receiver
        .accept(delivery)
        .await
        .map_err(|error| LoadError::Amqp {
            step: "accept".to_owned(),
            detail: error.to_string(),
        })?;
    Ok(Received {
        message_id,
        ours,
        stamp_ns,
    })
}

/// What the consumer counted during a run.
#[derive(Debug)]
struct ConsumerCounts {
    /// Deliveries of the run's topics, latency in the window, as the MQTT subscribers count.
    outcome: GroupOutcome,
    other: u64,
    duplicates: u64,
}

/// Receives and accepts until every message published has arrived after the window, or the
/// drain time ends; counts into `shared.delivered` as an MQTT subscriber does.
async fn consume(
    consumer: &mut Consumer,
    shared: Arc<RunShared>,
    topic_prefix: String,
) -> Result<ConsumerCounts, LoadError> {
    let mut counts = ConsumerCounts {
        outcome: GroupOutcome::empty(),
        other: 0,
        duplicates: 0,
    };
    let mut seen: HashSet<u64> = HashSet::new();
    let tick = tokio::time::sleep(TICK);
    tokio::pin!(tick);
    loop {
        tokio::select! {
            delivery = consumer.receiver.recv::<Data>() => {
                let delivery = delivery.map_err(|error| LoadError::Amqp {
                            step: "receive".to_owned(),
                    detail: error.to_string(),
                })?;
                let received = accept(consumer, &delivery, &topic_prefix).await?;
                let now_ns = shared.clock.now_ns();
                if !seen.insert(received.message_id) {
                    counts.duplicates += 1;
                    continue;
                }
                if !received.ours {
                    counts.other += 1;
                    continue;
                }
                let outcome = &mut counts.outcome;
                outcome.delivered += 1;
                shared.delivered.fetch_add(1, Ordering::AcqRel);
                if (shared.measure_from_ns..shared.stop_ns).contains(&now_ns)
                    && let Some(sent_ns) = received.stamp_ns
                {
                    outcome.delivered_in_window += 1;
                    outcome
                        .latency_ns
                        .saturating_record(now_ns.saturating_sub(sent_ns).max(1));
                }
            }
            () = &mut tick => {
                let now_ns = shared.clock.now_ns();
                let published = shared.published.load(Ordering::Acquire);
                let delivered = shared.delivered.load(Ordering::Acquire);
                let after_window = now_ns >= shared.stop_ns.saturating_add(STOP_GRACE_NS);
                if (after_window && delivered >= published) || now_ns >= shared.drain_until_ns {
                    return Ok(counts);
                }
                tick.as_mut().reset(tokio::time::Instant::now() + TICK);
            }
        }
    }
}

/// Checks what the publishers of an AMQP run need.
fn check(run: &ThroughputSpec, login: &Login) -> Result<PlatformDevices, LoadError> {
    let Login::Platform(devices) = login else {
        return Err(LoadError::Parameter(
            "the amqp scenario needs platform devices (--platform PK:SEED): only devices' \
             messages reach the consumer groups"
                .to_owned(),
        ));
    };
    let problem = if run.publishers == 0 {
        "the amqp scenario needs at least one publisher"
    } else if run.payload_len < STAMP_LEN {
        "payloads need at least 8 bytes for the send time"
    } else if run.duration.is_zero() {
        "the measurement window must be longer than zero"
    } else if run
        .rate
        .is_some_and(|rate| !(rate > 0.0 && rate.is_finite()))
    {
        "the publish rate must be a positive number of messages per second"
    } else {
        return Ok(devices.clone());
    };
    Err(LoadError::Parameter(problem.to_owned()))
}

/// The plans and roles of `count` publishers: devices `first..first + count` of `devices`,
/// each on its own `/{pk}/{dn}/user/update`, each with its share of `rate` and, with
/// `total`, of the messages to send.
fn publishers(
    common: &Common,
    devices: &PlatformDevices,
    run: &ThroughputSpec,
    total: Option<u64>,
) -> Result<(Vec<SessionPlan>, Vec<Role>), LoadError> {
    let count = run.publishers;
    let login = Login::Platform(devices.clone());
    let per_publisher_rate = run.rate.map(|rate| rate / count as f64);
    let mut plans = Vec::with_capacity(count);
    let mut roles = Vec::with_capacity(count);
    for index in 0..count {
        let device = run.first_device + index;
        let identity = devices.identity(device);
        plans.push(SessionPlan {
            target: common.target.clone(),
            source: None,
            config: login.client_config(device, "", run.inflight)?,
            subscriptions: Vec::new(),
            timeout: common.handshake_timeout,
        });
        let limit = total.map(|total| {
            let count = count as u64;
            let index = index as u64;
            total / count + u64::from(index < total % count)
        });
        roles.push(Role::Publisher(Publisher {
            topic: topic_name(&format!(
                "/{}/{}/user/update",
                identity.product_key, identity.device_name
            ))?,
            qos: run.qos,
            payload_len: run.payload_len,
            inflight: run.inflight.max(1),
            rate: per_publisher_rate,
            phase: index as f64 / count as f64,
            limit,
        }));
    }
    Ok((plans, roles))
}

/// Runs devices publishing to their `user/update` topics while one AMQP consumer receives
/// their messages, against `common.target` (MQTT) and `spec.consumer.target` (AMQP) of an
/// aliot broker configured by `aliot-bench aliot-config --amqp-bind …`.
///
/// # Errors
///
/// [`LoadError::Parameter`] for an impossible spec or a login that is not `--platform`;
/// [`LoadError::AmqpLogin`] when the consumer's login is refused; [`LoadError::Amqp`] when
/// its connection fails or a message lacks its properties; any error opening a publisher;
/// [`LoadError::Proc`] when the broker's pid is given and cannot be read.
pub async fn run_amqp(common: &Common, spec: &AmqpSpec) -> Result<AmqpReport, LoadError> {
    let devices = check(&spec.run, &common.login)?;
    let (plans, roles) = publishers(common, &devices, &spec.run, None)?;
    let clock = RunClock::start();
    let attach_from_ns = clock.now_ns();
    let mut consumer = Consumer::open(&spec.consumer).await?;
    let consumer_attach_secs = clock.now_ns().saturating_sub(attach_from_ns) as f64 / 1e9;
    let sessions = open_every(plans, common.connect_concurrency, clock).await?;

    let shared = Arc::new(RunShared::new(
        clock,
        clock.now_ns(),
        spec.run.warmup,
        spec.run.duration,
        spec.run.drain,
        1,
    ));
    let topic_prefix = format!("/{}/", devices.product_key);
    let consuming = {
        let shared = Arc::clone(&shared);
        async move {
            let counts = consume(&mut consumer, shared, topic_prefix).await;
            consumer.close().await;
            counts
        }
    };
    let members = sessions.into_iter().zip(roles).collect();
    let (driven, counts) = tokio::join!(drive_shared(common, &shared, vec![members]), consuming);
    let (mut outcome, cpu) = driven?;
    let counts = counts?;
    outcome.merge(&counts.outcome);
    let scenario = format!("amqp-{}", spec.mode.name());
    let run = throughput_report(
        common,
        &spec.run,
        &scenario,
        (spec.run.publishers, 1),
        1,
        &outcome,
        &cpu,
    );
    Ok(AmqpReport {
        mode: spec.mode.name().to_owned(),
        credit: spec.consumer.credit,
        other_messages: counts.other,
        duplicates: counts.duplicates,
        consumer_attach_secs,
        run,
    })
}

/// The drain of a full backlog.
#[derive(Clone, Debug)]
pub struct DrainSpec {
    /// The consumer (attached only once the backlog is full).
    pub consumer: ConsumerPlan,
    /// The broker's HTTP API, for `GET /metrics`.
    pub api: Target,
    /// Messages to publish into the backlog, and to drain.
    pub messages: u64,
    /// The publishers: `run.publishers` devices from `run.first_device` on, QoS `run.qos`,
    /// `run.inflight` each, `run.payload_len` bytes, as fast as they can; the other fields
    /// are not used.
    pub run: ThroughputSpec,
    /// The most the fill may take.
    pub fill_timeout: Duration,
    /// The drain fails when no new message comes for this long.
    pub stall_timeout: Duration,
}

/// The report of a drain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DrainReport {
    /// Always `amqp-drain`.
    pub scenario: String,
    /// The broker's label.
    pub broker: String,
    /// Messages published, and drained.
    pub messages: u64,
    /// Publishing devices.
    pub publishers: usize,
    /// QoS 1 window of each.
    pub inflight: usize,
    /// Payload bytes per message.
    pub payload_bytes: usize,
    /// The consumer's link credit.
    pub credit: u32,
    /// The group's backlog before the fill (from `/metrics`).
    pub backlog_before: u64,
    /// From the first publish to the backlog holding every message, seconds (read every
    /// 100 ms).
    pub fill_secs: f64,
    /// Messages per second into the backlog over that time.
    pub fill_per_sec: f64,
    /// The group's backlog once full.
    pub backlog_full: u64,
    /// Messages the group dropped (`outcome="dropped"`) by the end of the drain: none
    /// expected.
    pub dropped: u64,
    /// Broker resident memory before the fill, KiB.
    pub rss_before_kib: Option<u64>,
    /// With the backlog full, KiB.
    pub rss_full_kib: Option<u64>,
    /// After the drain, KiB.
    pub rss_drained_kib: Option<u64>,
    /// `(full − before) / messages`, bytes.
    pub bytes_per_message: Option<f64>,
    /// From the start of the consumer's TCP connect to its link attached, seconds.
    pub attach_secs: f64,
    /// From the link attached to the first message, seconds.
    pub first_message_secs: f64,
    /// From the link attached to the last message accepted, seconds.
    pub drain_secs: f64,
    /// `messages / drain_secs`: the drain rate.
    pub drain_per_sec: f64,
    /// Messages received more than once (by `messageId`).
    pub duplicates: u64,
    /// Messages on other topics than the run's.
    pub other_messages: u64,
    /// The group's backlog after the drain (every acceptance settled: 0).
    pub backlog_after: u64,
    /// Generator CPU over the drain, percent of one core.
    pub generator_cpu_percent: f64,
    /// Broker CPU over the drain, percent of one core (with `--broker-pid`).
    pub broker_cpu_percent: Option<f64>,
}

impl fmt::Display for DrainReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "amqp-drain   broker={} messages={} pubs={} fill={:.2}s ({:.0}/s) drain={:.2}s \
             drain/s={:.0} first-message={:.1}ms backlog full={} after={} dropped={} \
             duplicates={} gen-cpu={:.0}%",
            self.broker,
            self.messages,
            self.publishers,
            self.fill_secs,
            self.fill_per_sec,
            self.drain_secs,
            self.drain_per_sec,
            self.first_message_secs * 1e3,
            self.backlog_full,
            self.backlog_after,
            self.dropped,
            self.duplicates,
            self.generator_cpu_percent,
        )?;
        if let Some(cpu) = self.broker_cpu_percent {
            write!(f, " broker-cpu={cpu:.0}%")?;
        }
        if let (Some(before), Some(full), Some(drained)) =
            (self.rss_before_kib, self.rss_full_kib, self.rss_drained_kib)
        {
            write!(
                f,
                " rss before={before}KiB full={full}KiB drained={drained}KiB"
            )?;
        }
        Ok(())
    }
}

/// Fills the consumer group's backlog with `spec.messages` messages of devices, no consumer
/// attached, then attaches the consumer and times it until it has received every one.
///
/// # Errors
///
/// As [`run_amqp`]; [`LoadError::Metrics`] when `/metrics` cannot be read or has no backlog
/// for the group; [`LoadError::Fill`] when the backlog does not hold every message within the
/// fill timeout (or was not empty before); [`LoadError::Drain`] when the consumer stalls
/// before it has every message, with the counts.
pub async fn run_drain(common: &Common, spec: &DrainSpec) -> Result<DrainReport, LoadError> {
    let devices = check(&spec.run, &common.login)?;
    if spec.messages == 0 {
        return Err(LoadError::Parameter(
            "the drain needs at least one message".to_owned(),
        ));
    }
    let group = spec.consumer.credentials.group.as_str();
    let broker = common.broker_pid.map(Process::Pid);
    let backlog_before = group_metrics(&spec.api, group).await?.backlog;
    if backlog_before != 0 {
        return Err(LoadError::Fill {
            expected: spec.messages,
            published: 0,
            backlog: backlog_before,
            dropped: 0,
            detail: "the group's backlog was not empty before the fill (start a fresh broker)"
                .to_owned(),
        });
    }
    let rss_before_kib = broker.map(procfs::resident_kib).transpose()?;

    // The fill: every publisher sends its share, as fast as its window allows, until the
    // backlog holds them all.
    let (plans, roles) = publishers(common, &devices, &spec.run, Some(spec.messages))?;
    let clock = RunClock::start();
    let sessions = open_every(plans, common.connect_concurrency, clock).await?;
    let shared = Arc::new(RunShared::new(
        clock,
        clock.now_ns(),
        Duration::ZERO,
        spec.fill_timeout,
        Duration::ZERO,
        0,
    ));
    let mut groups = JoinSet::new();
    spawn_groups(
        &mut groups,
        sessions.into_iter().zip(roles).collect(),
        common.conns_per_task,
        &shared,
    );
    let fill_from_ns = shared.start_ns;
    let fill_deadline = clock.tokio_instant(shared.stop_ns);
    let mut backlog_full;
    loop {
        tokio::time::sleep(METRICS_POLL).await;
        let metrics = group_metrics(&spec.api, group).await?;
        backlog_full = metrics.backlog;
        if backlog_full >= spec.messages || metrics.dropped > 0 {
            break;
        }
        if tokio::time::Instant::now() >= fill_deadline {
            break;
        }
    }
    let fill_secs = clock.now_ns().saturating_sub(fill_from_ns) as f64 / 1e9;
    shared.finish();
    let filled = join_groups(groups).await;
    let metrics = group_metrics(&spec.api, group).await?;
    if backlog_full < spec.messages || metrics.dropped > 0 || filled.publish_failed > 0 {
        return Err(LoadError::Fill {
            expected: spec.messages,
            published: filled.published,
            backlog: metrics.backlog,
            dropped: metrics.dropped,
            detail: format!(
                "after {fill_secs:.1} s (timeout {} s; {} publishes refused by the client, {} \
                 connections lost{})",
                spec.fill_timeout.as_secs_f64(),
                filled.publish_failed,
                filled.lost_connections,
                filled
                    .first_loss
                    .as_deref()
                    .map(|loss| format!(", the first: {loss}"))
                    .unwrap_or_default(),
            ),
        });
    }
    let rss_full_kib = broker.map(procfs::resident_kib).transpose()?;

    // The drain.
    let generator_before = procfs::cpu_ticks(Process::Current)?;
    let broker_before = broker.map(procfs::cpu_ticks).transpose()?;
    let attach_from_ns = clock.now_ns();
    let mut consumer = Consumer::open(&spec.consumer).await?;
    let attached_ns = clock.now_ns();
    let topic_prefix = format!("/{}/", devices.product_key);
    let capacity = usize::try_from(spec.messages).unwrap_or(usize::MAX);
    let mut seen: HashSet<u64> = HashSet::with_capacity(capacity);
    let (mut received, mut duplicates, mut other) = (0_u64, 0_u64, 0_u64);
    let mut first_message_ns = None;
    let mut last_ns = attached_ns;
    while received < spec.messages {
        let next = tokio::time::timeout(spec.stall_timeout, consumer.receiver.recv::<Data>()).await;
        let delivery = match next {
            Ok(Ok(delivery)) => delivery,
            Ok(Err(error)) => {
                let detail = format!("the receiver failed: {error}");
                consumer.close().await;
                return Err(drain_error(spec, received, duplicates, other, detail));
            }
            Err(_) => {
                let backlog = group_metrics(&spec.api, group).await.ok();
                let detail = format!(
                    "no message for {} s (the group's backlog: {})",
                    spec.stall_timeout.as_secs_f64(),
                    backlog.map_or_else(|| "unreadable".to_owned(), |m| m.backlog.to_string())
                );
                consumer.close().await;
                return Err(drain_error(spec, received, duplicates, other, detail));
            }
        };
        let message = accept(&consumer, &delivery, &topic_prefix).await?;
        last_ns = clock.now_ns();
        first_message_ns.get_or_insert(last_ns);
        if !seen.insert(message.message_id) {
            duplicates += 1;
        } else if message.ours {
            received += 1;
        } else {
            other += 1;
        }
    }
    let drain_secs = last_ns.saturating_sub(attached_ns) as f64 / 1e9;
    let generator_cpu_percent = procfs::cpu_percent(
        generator_before,
        procfs::cpu_ticks(Process::Current)?,
        last_ns.saturating_sub(attach_from_ns),
    );
    let broker_cpu_percent = match (broker, broker_before) {
        (Some(broker), Some(before)) => Some(procfs::cpu_percent(
            before,
            procfs::cpu_ticks(broker)?,
            last_ns.saturating_sub(attach_from_ns),
        )),
        _ => None,
    };
    // The last acceptances reach the broker after the last receipt: wait for them to be
    // settled before the link closes (closing would give back what is unsettled).
    let settle_deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    let mut after = group_metrics(&spec.api, group).await?;
    while after.backlog > 0 && tokio::time::Instant::now() < settle_deadline {
        tokio::time::sleep(METRICS_POLL).await;
        after = group_metrics(&spec.api, group).await?;
    }
    consumer.close().await;
    let rss_drained_kib = broker.map(procfs::resident_kib).transpose()?;
    let bytes_per_message = rss_before_kib
        .zip(rss_full_kib)
        .map(|(before, full)| (full as f64 - before as f64) * 1024.0 / spec.messages as f64);
    Ok(DrainReport {
        scenario: "amqp-drain".to_owned(),
        broker: common.broker_label.clone(),
        messages: spec.messages,
        publishers: spec.run.publishers,
        inflight: spec.run.inflight,
        payload_bytes: spec.run.payload_len,
        credit: spec.consumer.credit,
        backlog_before,
        fill_secs,
        fill_per_sec: spec.messages as f64 / fill_secs.max(f64::MIN_POSITIVE),
        backlog_full,
        dropped: after.dropped,
        rss_before_kib,
        rss_full_kib,
        rss_drained_kib,
        bytes_per_message,
        attach_secs: attached_ns.saturating_sub(attach_from_ns) as f64 / 1e9,
        first_message_secs: first_message_ns
            .unwrap_or(attached_ns)
            .saturating_sub(attached_ns) as f64
            / 1e9,
        drain_secs,
        drain_per_sec: spec.messages as f64 / drain_secs.max(f64::MIN_POSITIVE),
        duplicates,
        other_messages: other,
        backlog_after: after.backlog,
        generator_cpu_percent,
        broker_cpu_percent,
    })
}

/// The error of a drain that stopped short.
fn drain_error(
    spec: &DrainSpec,
    received: u64,
    duplicates: u64,
    other: u64,
    detail: String,
) -> LoadError {
    LoadError::Drain {
        expected: spec.messages,
        received,
        duplicates,
        other,
        detail,
    }
}

/// A consumer group's numbers on `GET /metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupMetrics {
    /// `aliot_consumer_group_backlog`.
    pub backlog: u64,
    /// `aliot_consumer_group_messages_total{outcome="dropped"}`.
    pub dropped: u64,
}

/// Reads `group`'s backlog and drops from the Prometheus text of `/metrics`, or `None` when it
/// has no backlog line for the group.
///
/// ```
/// use aliot_benches::loadgen::amqp::{GroupMetrics, parse_group_metrics};
///
/// let text = "# TYPE aliot_consumer_group_backlog gauge\n\
///             aliot_consumer_group_backlog{group=\"G\"} 42\n\
///             aliot_consumer_group_messages_total{group=\"G\",outcome=\"dropped\"} 3\n";
/// assert_eq!(parse_group_metrics(text, "G"), Some(GroupMetrics { backlog: 42, dropped: 3 }));
/// assert_eq!(parse_group_metrics(text, "H"), None);
/// ```
#[must_use]
pub fn parse_group_metrics(text: &str, group: &str) -> Option<GroupMetrics> {
    let value = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().parse::<f64>().ok())
            .map(|value| value as u64)
    };
    Some(GroupMetrics {
        backlog: value(&format!(
            "aliot_consumer_group_backlog{{group=\"{group}\"}} "
        ))?,
        dropped: value(&format!(
            "aliot_consumer_group_messages_total{{group=\"{group}\",outcome=\"dropped\"}} "
        ))
        .unwrap_or(0),
    })
}

/// `GET /metrics` of the broker's HTTP API at `api`, read for `group`.
///
/// # Errors
///
/// [`LoadError::Metrics`] when the request fails, the answer is not 200, or it has no backlog
/// for the group.
pub async fn group_metrics(api: &Target, group: &str) -> Result<GroupMetrics, LoadError> {
    let addr = api.addr();
    let failed = |detail: String| LoadError::Metrics { addr, detail };
    let request = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(
                format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(METRICS_TIMEOUT, request)
        .await
        .map_err(|_| failed(format!("no answer within {} s", METRICS_TIMEOUT.as_secs())))?
        .map_err(|error| failed(error.to_string()))?;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.lines().next().unwrap_or_default();
    if !status.contains(" 200 ") {
        return Err(failed(format!("the answer is {status:?}")));
    }
    parse_group_metrics(&answer, group).ok_or_else(|| {
        failed(format!(
            "no aliot_consumer_group_backlog line for group {group:?} (is it configured?)"
        ))
    })
}

/// A consumer login's timestamp: milliseconds since the Unix epoch (the broker's clock).
fn wall_clock_ms() -> u64 {
    aliot_tokio::broker::wall_clock_ms().unwrap_or(0)
}

/// The publishers of [`run_amqp`] and [`run_drain`] by default: one device, QoS 1, the window
/// and payload of the 1:1 scenario.
#[must_use]
pub fn default_publishers() -> ThroughputSpec {
    ThroughputSpec {
        topology: Topology::OneToOne,
        subscribers: 0,
        ..ThroughputSpec::one_to_one(aliot_core::codec::QoS::AtLeastOnce)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_broker_accepts_the_password_it_is_given() {
        let credentials = ConsumerCredentials {
            client_id: "bench".into(),
            access_key_id: "AK".into(),
            access_key_secret: "secret".into(),
            group: "G".into(),
        };
        let username = credentials.username(1_700_000_000_000);
        let login = aliot_auth::ConsumerLogin::parse(&username).expect("the broker reads it");
        assert_eq!(login.consumer_group_id, "G");
        assert!(login.password_matches(b"secret", &credentials.password(1_700_000_000_000)));
        assert!(!login.password_matches(b"other", &credentials.password(1_700_000_000_000)));
    }

    #[test]
    fn the_metrics_of_another_group_are_not_read() {
        let text = "aliot_consumer_group_backlog{group=\"GG\"} 7\n";
        assert_eq!(parse_group_metrics(text, "G"), None);
        assert_eq!(
            parse_group_metrics(text, "GG"),
            Some(GroupMetrics {
                backlog: 7,
                dropped: 0
            })
        );
    }
}
