//! The gateway scenario of issue 15: one gateway carrying sub-devices, against as many devices
//! connected directly, in the same run.
//!
//! The gateway is platform device 0 (`dev000000`), its sub-devices devices `1..=subs`, and the
//! direct devices `subs + 1..=2 × subs`, so that a direct device never takes a sub-device's
//! session. The gateway connects with `_ss=1` in its client id's extension (not signed, so the
//! signature holds): the platform's replies to it and to its sub-devices come without a
//! SUBSCRIBE. Then, over its one connection (PLATFORM-PROTOCOLS §4):
//!
//! 1. **topology**, not in the login time: `thing/topo/add` requests of at most
//!    [`MAX_TOPO_ADD`] sub-devices, each proved with the sub-device's own secret
//!    ([`aliot_auth::subdevice_sign`]), one at a time, each reply awaited;
//! 2. **logins**, timed: `combine/batch_login` requests of `batch` sub-devices (at most
//!    [`MAX_BATCH_LOGIN`]), one at a time as an SDK sends them, from the first request to the
//!    last reply; every request is built and signed before the clock starts;
//! 3. **posts through the gateway**: the gateway posts properties for its sub-devices in turn,
//!    with at most `inflight` posts waiting for their reply (the [`Role::PropertyPoster`] of
//!    `property-post`, with the sub-devices' topics);
//! 4. **posts by direct devices**: `subs` devices each posting their own properties, with
//!    `inflight / subs` posts each waiting at most: `property-post` itself
//!    ([`run_throughput`]), so the two sides post the same payloads with the same number of
//!    posts waiting in all.
//!
//! Phases 3 and 4 run in the order asked (the other order in alternate rounds tells whether
//! order matters), each with its own warm-up, window and drain. Every request and post is
//! answered with code 200 or the run fails with the code and message
//! ([`ReplyFault`]).

use std::sync::Arc;
use std::time::Duration;

use aliot_auth::{SignMethod, subdevice_sign};
use aliot_core::client::{ClientConfig, Event};
use aliot_core::codec::QoS;
use aliot_topic::TopicName;
use bytes::Bytes;
use serde_json::{Value, json};

use super::clock::RunClock;
use super::group::{PropertyPoster, Role, read_reply, reply_details, shown};
use super::login::{Login, PlatformDevices};
use super::report::{GatewayReport, Percentiles, ThroughputReport, latency_histogram};
use super::scenario::{
    Common, ThroughputSpec, Topology, drive, run_throughput, throughput_report, topic_name,
};
use super::session::{Session, SessionPlan, establish, exchange};
use super::{LoadError, ReplyFault};

/// Sub-devices one `thing/topo/add` may carry (PLATFORM-PROTOCOLS §4.1).
pub const MAX_TOPO_ADD: usize = 30;
/// Sub-devices one `combine/batch_login` may carry (§4.2).
pub const MAX_BATCH_LOGIN: usize = 50;
/// The platform device index of the gateway.
pub const GATEWAY_INDEX: usize = 0;
/// The sign method of every proof.
const SIGN_METHOD: SignMethod = SignMethod::HmacSha256;
/// Its name in the requests, as the C and Python SDKs spell it.
const SIGN_METHOD_NAME: &str = "hmacSha256";

/// The gateway scenario.
#[derive(Clone, Debug)]
pub struct GatewaySpec {
    /// Sub-devices of the gateway, and direct devices beside them.
    pub subs: usize,
    /// Sub-devices per `batch_login` (1 to [`MAX_BATCH_LOGIN`]).
    pub batch: usize,
    /// The posting phases: QoS, `inflight` (posts waiting for their reply, in all: the
    /// gateway's window, spread evenly over the direct devices, so a multiple of `subs`),
    /// rate (all posters together), warm-up, window and drain. Its topology, publishers and
    /// subscribers are the scenario's own.
    pub posts: ThroughputSpec,
    /// QoS 1 posts the gateway's connection keeps awaiting their PUBACK, at most (its MQTT
    /// window); the others wait in its client's queue, still counted as waiting for their
    /// reply. `None`: all of them (`posts.inflight`). The direct devices' MQTT windows are their
    /// share of `posts.inflight`.
    pub gateway_window: Option<usize>,
    /// The direct devices post first, then the gateway (default: the gateway first).
    pub direct_first: bool,
    /// The most one topology or login request waits for its reply.
    pub reply_timeout: Duration,
}

impl Default for GatewaySpec {
    /// The issue's run: 2,000 sub-devices logged in by 50, one post waiting per device (2,000
    /// in all), QoS 1, 1 s warm-up, 5 s windows; a reply waited for 10 s at most (the C SDK
    /// 3.x's timeout).
    fn default() -> Self {
        let subs = 2_000;
        GatewaySpec {
            subs,
            batch: MAX_BATCH_LOGIN,
            posts: ThroughputSpec {
                inflight: subs,
                ..ThroughputSpec::property_post()
            },
            gateway_window: None,
            direct_first: false,
            reply_timeout: Duration::from_secs(10),
        }
    }
}

impl GatewaySpec {
    fn check(&self) -> Result<(), LoadError> {
        let inflight = self.posts.inflight;
        let problem = if self.subs == 0 {
            "the gateway scenario needs at least one sub-device (--subs)".to_owned()
        } else if !(1..=MAX_BATCH_LOGIN).contains(&self.batch) {
            format!(
                "--batch {} is not 1 to {MAX_BATCH_LOGIN}: the platform takes at most \
                 {MAX_BATCH_LOGIN} sub-devices per batch_login",
                self.batch
            )
        } else if inflight < self.subs || !inflight.is_multiple_of(self.subs) {
            format!(
                "--inflight {inflight} is not a multiple of --subs {}: the same number of posts \
                 must wait on both sides, the gateway's window spread evenly over the direct \
                 devices (at least one each)",
                self.subs
            )
        } else if self.gateway_window == Some(0) {
            "--gateway-window must be at least 1".to_owned()
        } else if self.posts.duration.is_zero() {
            "the measurement window must be longer than zero".to_owned()
        } else if self.posts.qos == QoS::ExactlyOnce {
            "QoS 2 is not part of the profile; use QoS 0 or 1".to_owned()
        } else if self
            .posts
            .rate
            .is_some_and(|rate| !(rate > 0.0 && rate.is_finite()))
        {
            "the post rate must be a positive number of posts per second".to_owned()
        } else {
            return Ok(());
        };
        Err(LoadError::Parameter(problem))
    }

    /// The gateway's client: device [`GATEWAY_INDEX`] with `_ss=1` in its client id, its MQTT
    /// window `gateway_window` (default: every post), its queue long enough for every post.
    fn gateway_config(&self, devices: &PlatformDevices) -> Result<ClientConfig, LoadError> {
        let window = self.gateway_window.unwrap_or(self.posts.inflight);
        let mut config = devices.client_config(GATEWAY_INDEX, &[("_ss", "1")], window)?;
        config.max_queued = config.max_queued.max(self.posts.inflight);
        Ok(config)
    }

    /// The `property-post` run of the direct devices: `subs` devices after the gateway and its
    /// sub-devices, each with its share of the window and of the rate.
    fn direct(&self) -> ThroughputSpec {
        ThroughputSpec {
            topology: Topology::PropertyPost,
            publishers: self.subs,
            subscribers: 0,
            inflight: self.posts.inflight / self.subs,
            persistent_subscribers: false,
            first_device: self.subs + 1,
            ..self.posts.clone()
        }
    }
}

/// Runs the gateway scenario against `common.target` (an aliot broker whose registry has
/// devices `0..=2 × subs` of `common.login`'s product: `aliot-bench aliot-config --devices
/// 2×subs+1`).
///
/// # Errors
///
/// [`LoadError::Parameter`] for an impossible spec or a login that is not `--platform`; any
/// error opening a client; [`LoadError::Reply`] for a reply whose code is not 200, that does
/// not come within the timeout, or that does not match its request; [`LoadError::ConnectionLost`]
/// when a connection ends during a posting phase; [`LoadError::Proc`] when the broker's pid is
/// given and cannot be read.
pub async fn run_gateway(common: &Common, spec: &GatewaySpec) -> Result<GatewayReport, LoadError> {
    spec.check()?;
    let Login::Platform(devices) = &common.login else {
        return Err(LoadError::Parameter(
            "the gateway scenario needs platform devices (--platform PK:SEED)".to_owned(),
        ));
    };
    let clock = RunClock::start();
    let mut gateway = establish(
        SessionPlan {
            target: common.target.clone(),
            source: None,
            config: spec.gateway_config(devices)?,
            subscriptions: Vec::new(),
            timeout: common.handshake_timeout,
        },
        &clock,
    )
    .await?;
    let mut requests = Requests {
        clock,
        timeout: spec.reply_timeout,
        next_id: 1,
    };
    let subs: Vec<usize> = (1..=spec.subs).collect();

    let topology_from_ns = clock.now_ns();
    let topology_requests = add_topology(&mut gateway, &mut requests, devices, &subs).await?;
    let topology_secs = seconds_since(&clock, topology_from_ns);

    let (login_secs, login_latency) =
        log_in(&mut gateway, &mut requests, devices, &subs, spec.batch).await?;

    let (through_gateway, direct) = if spec.direct_first {
        let direct = posts_direct(common, spec).await?;
        (
            posts_through(common, spec, devices, gateway, clock).await?,
            direct,
        )
    } else {
        let through_gateway = posts_through(common, spec, devices, gateway, clock).await?;
        (through_gateway, posts_direct(common, spec).await?)
    };

    let logins = spec.subs;
    Ok(GatewayReport {
        scenario: "gateway".to_owned(),
        broker: common.broker_label.clone(),
        sub_devices: spec.subs,
        topology_requests,
        topology_secs,
        login_batch: spec.batch,
        login_batches: logins.div_ceil(spec.batch),
        login_secs,
        logins_per_sec: logins as f64 / login_secs.max(f64::MIN_POSITIVE),
        login_batch_latency: login_latency,
        inflight_total: spec.posts.inflight,
        gateway_window: spec.gateway_window.unwrap_or(spec.posts.inflight),
        order: if spec.direct_first {
            "direct-first"
        } else {
            "gateway-first"
        }
        .to_owned(),
        ratio: through_gateway.msgs_per_sec / direct.msgs_per_sec.max(f64::MIN_POSITIVE),
        through_gateway,
        direct,
    })
}

/// Adds every sub-device to the gateway's topology, [`MAX_TOPO_ADD`] per request; returns the
/// number of requests.
async fn add_topology(
    gateway: &mut Session,
    requests: &mut Requests,
    devices: &PlatformDevices,
    subs: &[usize],
) -> Result<usize, LoadError> {
    let topic = gateway_topic(devices, "/sys", "thing/topo/add")?;
    let timestamp = wall_clock_ms();
    let mut count = 0;
    for chunk in subs.chunks(MAX_TOPO_ADD) {
        let entries: Vec<Value> = chunk
            .iter()
            .map(|&index| {
                let mut entry = proof(devices, index, &timestamp);
                entry.insert("signMethod".to_owned(), json!(SIGN_METHOD_NAME));
                Value::Object(entry)
            })
            .collect();
        let id = requests.next_id();
        let payload = json!({
            "id": id.to_string(),
            "version": "1.0",
            "params": entries,
            "method": "thing.topo.add",
        });
        requests
            .send(gateway, &topic, id, payload.to_string(), chunk.len())
            .await?;
        count += 1;
    }
    Ok(count)
}

/// Logs every sub-device in through the gateway, `batch` per `combine/batch_login`, one
/// request at a time; returns the seconds from the first request to the last reply and the
/// percentiles of each request's round trip. Every request is built and signed first.
async fn log_in(
    gateway: &mut Session,
    requests: &mut Requests,
    devices: &PlatformDevices,
    subs: &[usize],
    batch: usize,
) -> Result<(f64, Percentiles), LoadError> {
    let topic = gateway_topic(devices, "/ext/session", "combine/batch_login")?;
    let timestamp = wall_clock_ms();
    let batches: Vec<(u64, String, usize)> = subs
        .chunks(batch)
        .map(|chunk| {
            let entries: Vec<Value> = chunk
                .iter()
                .map(|&index| {
                    let mut entry = proof(devices, index, &timestamp);
                    entry.insert("cleanSession".to_owned(), json!("true"));
                    Value::Object(entry)
                })
                .collect();
            let id = requests.next_id();
            let payload = json!({
                "id": id.to_string(),
                "version": "1.0",
                "params": {"signMethod": SIGN_METHOD_NAME, "deviceList": entries},
            });
            (id, payload.to_string(), chunk.len())
        })
        .collect();
    let clock = requests.clock;
    let mut latency = latency_histogram();
    let from_ns = clock.now_ns();
    for (id, payload, count) in batches {
        let sent_ns = clock.now_ns();
        requests.send(gateway, &topic, id, payload, count).await?;
        latency.saturating_record(clock.now_ns().saturating_sub(sent_ns).max(1));
    }
    Ok((seconds_since(&clock, from_ns), Percentiles::of(&latency)))
}

/// The posts through the gateway: it posts for its sub-devices in turn, with at most the
/// spec's `inflight` waiting, for the warm-up, the window and the drain; then it disconnects.
/// `clock` is the one its connection was opened and driven with.
async fn posts_through(
    common: &Common,
    spec: &GatewaySpec,
    devices: &PlatformDevices,
    gateway: Session,
    clock: RunClock,
) -> Result<ThroughputReport, LoadError> {
    let topics = (1..=spec.subs)
        .map(|index| {
            let sub = devices.identity(index);
            topic_name(&format!(
                "/sys/{}/{}/thing/event/property/post",
                sub.product_key, sub.device_name
            ))
        })
        .collect::<Result<Vec<TopicName>, LoadError>>()?;
    let poster = PropertyPoster {
        topics: Arc::from(topics),
        qos: spec.posts.qos,
        inflight: spec.posts.inflight,
        rate: spec.posts.rate,
        phase: 0.0,
    };
    let members = vec![(gateway, Role::PropertyPoster(poster))];
    let (outcome, cpu) = drive(common, &spec.posts, clock, 0, vec![members]).await?;
    if let Some(fault) = outcome.first_reply_fault {
        return Err(LoadError::Reply(fault));
    }
    let report = throughput_report(
        common,
        &spec.posts,
        "property-post through a gateway",
        (1, 0),
        1,
        &outcome,
        &cpu,
    );
    ensure_kept("posts through the gateway", &report)?;
    Ok(report)
}

/// The posts of the direct devices: `property-post` with the spec's share for each.
async fn posts_direct(common: &Common, spec: &GatewaySpec) -> Result<ThroughputReport, LoadError> {
    let report = run_throughput(common, &spec.direct()).await?;
    ensure_kept("posts by direct devices", &report)?;
    Ok(report)
}

/// Fails a phase in which a connection was lost: its rate would be of fewer posters.
fn ensure_kept(phase: &str, report: &ThroughputReport) -> Result<(), LoadError> {
    if report.lost_connections == 0 {
        return Ok(());
    }
    Err(LoadError::ConnectionLost {
        phase: phase.to_owned(),
        lost: report.lost_connections,
        first: report.first_loss.clone().unwrap_or_default(),
    })
}

/// The gateway's requests, one at a time: their ids and how long a reply is waited for.
struct Requests {
    clock: RunClock,
    timeout: Duration,
    next_id: u64,
}

impl Requests {
    /// The id of the next request.
    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Publishes a gateway request at QoS 0 (the platform's login requests are QoS 0 only)
    /// and waits for its reply on `topic` + `_reply`: it must echo `id`, have code 200 and list
    /// `count` devices in its `data`.
    async fn send(
        &self,
        gateway: &mut Session,
        topic: &TopicName,
        id: u64,
        payload: String,
        count: usize,
    ) -> Result<(), LoadError> {
        let reply_topic = format!("{topic}_reply");
        gateway.conn.publish(
            topic.clone(),
            Bytes::from(payload),
            QoS::AtMostOnce,
            self.clock.core_now(),
        )?;
        let mut reply = None;
        let awaited = exchange(
            &mut gateway.stream,
            &mut gateway.conn,
            &self.clock,
            &gateway.client_id,
            |event| match event {
                Event::Message { message, .. } if message.topic.as_str() == reply_topic => {
                    reply = Some(message.payload.clone());
                    Ok(true)
                }
                _ => Ok(false),
            },
        );
        match tokio::time::timeout(self.timeout, awaited).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(ReplyFault::Missing {
                    topic: reply_topic,
                    id: id.to_string(),
                    waited_ms: u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
                }
                .into());
            }
        }
        let payload = reply.unwrap_or_default();
        check_reply(&reply_topic, id, count, &payload).map_err(LoadError::from)
    }
}

/// Checks a gateway request's reply: it echoes `id`, has code 200 and lists `count` devices in
/// its `data`.
fn check_reply(topic: &str, id: u64, count: usize, payload: &[u8]) -> Result<(), ReplyFault> {
    let Some((echoed, code)) = read_reply(payload) else {
        return Err(ReplyFault::Unreadable {
            topic: topic.to_owned(),
            payload: shown(payload),
        });
    };
    if echoed != id {
        return Err(ReplyFault::Unexpected {
            topic: topic.to_owned(),
            id: echoed.to_string(),
        });
    }
    if code != 200 {
        let (message, data) = reply_details(payload);
        return Err(ReplyFault::Refused {
            topic: topic.to_owned(),
            id: id.to_string(),
            code,
            message,
            data,
        });
    }
    let listed = serde_json::from_slice::<Value>(payload)
        .ok()
        .and_then(|reply| reply.get("data")?.as_array().map(Vec::len));
    match listed {
        Some(listed) if listed == count => Ok(()),
        listed => Err(ReplyFault::WrongCount {
            topic: topic.to_owned(),
            id: id.to_string(),
            sent: count,
            listed: listed.unwrap_or(0),
        }),
    }
}

/// Sub-device `index`'s proof as a request entry: `productKey`, `deviceName`, `clientId`
/// (`PK.DN`), `timestamp` and `sign`, the hex HMAC-SHA256 with its own secret.
fn proof(
    devices: &PlatformDevices,
    index: usize,
    timestamp: &str,
) -> serde_json::Map<String, Value> {
    let identity = devices.identity(index);
    let client_id = format!("{}.{}", identity.product_key, identity.device_name);
    let sign = subdevice_sign(
        devices.secret(index).as_bytes(),
        &identity,
        &client_id,
        timestamp,
        SIGN_METHOD,
    );
    let mut entry = serde_json::Map::new();
    entry.insert("productKey".to_owned(), json!(identity.product_key));
    entry.insert("deviceName".to_owned(), json!(identity.device_name));
    entry.insert("clientId".to_owned(), json!(client_id));
    entry.insert("timestamp".to_owned(), json!(timestamp));
    entry.insert("sign".to_owned(), json!(sign));
    entry
}

/// The gateway's own topic `{root}/{pk}/{dn}/{rest}`.
fn gateway_topic(
    devices: &PlatformDevices,
    root: &str,
    rest: &str,
) -> Result<TopicName, LoadError> {
    let gateway = devices.identity(GATEWAY_INDEX);
    topic_name(&format!(
        "{root}/{}/{}/{rest}",
        gateway.product_key, gateway.device_name
    ))
}

/// Milliseconds since the Unix epoch, in decimal: a proof's `timestamp`.
fn wall_clock_ms() -> String {
    aliot_tokio::broker::wall_clock_ms()
        .unwrap_or(0)
        .to_string()
}

/// Seconds of `clock` since `from_ns`.
fn seconds_since(clock: &RunClock, from_ns: u64) -> f64 {
    clock.now_ns().saturating_sub(from_ns) as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;
    use aliot_auth::SubDeviceProof;

    #[test]
    fn a_proof_is_what_the_broker_checks_with_the_sub_devices_secret() {
        let devices = PlatformDevices::parse("benchPK:seed").expect("valid");
        let entry = proof(&devices, 7, "1700000000000");
        let text = |name: &str| entry[name].as_str().expect("a string").to_owned();
        assert_eq!(text("clientId"), "benchPK.dev000007");
        let proof = SubDeviceProof::new(
            devices.identity(7),
            text("clientId"),
            text("timestamp"),
            SIGN_METHOD_NAME,
            &text("sign"),
        )
        .expect("a sign in hex");
        assert!(proof.matches(devices.secret(7).as_bytes()));
        assert!(!proof.matches(devices.secret(8).as_bytes()));
    }

    #[test]
    fn a_reply_must_echo_the_id_say_200_and_list_the_batch() {
        let topic = "/ext/session/pk/dev000000/combine/batch_login_reply";
        let ok = br#"{"id":"3","code":200,"message":"success","data":[{"productKey":"pk","deviceName":"dev000001"}]}"#;
        assert_eq!(check_reply(topic, 3, 1, ok), Ok(()));
        assert!(matches!(
            check_reply(topic, 4, 1, ok),
            Err(ReplyFault::Unexpected { .. })
        ));
        assert!(matches!(
            check_reply(topic, 3, 2, ok),
            Err(ReplyFault::WrongCount {
                sent: 2,
                listed: 1,
                ..
            })
        ));
        let refused = br#"{"id":"3","code":6401,"message":"topo relation not exist","data":[{"productKey":"pk","deviceName":"dev000001"}]}"#;
        let Err(ReplyFault::Refused { code, message, .. }) = check_reply(topic, 3, 1, refused)
        else {
            panic!("a refusal");
        };
        assert_eq!((code, message.as_str()), (6401, "topo relation not exist"));
        assert!(matches!(
            check_reply(topic, 3, 1, b"not json"),
            Err(ReplyFault::Unreadable { .. })
        ));
    }

    #[test]
    fn the_window_must_spread_evenly_over_the_direct_devices() {
        let mut spec = GatewaySpec {
            subs: 10,
            ..GatewaySpec::default()
        };
        spec.posts.inflight = 25;
        assert!(matches!(spec.check(), Err(LoadError::Parameter(_))));
        spec.posts.inflight = 5;
        assert!(matches!(spec.check(), Err(LoadError::Parameter(_))));
        spec.posts.inflight = 30;
        spec.check().expect("three posts per direct device");
        let direct = spec.direct();
        assert_eq!(
            (direct.publishers, direct.inflight, direct.first_device),
            (10, 3, 11)
        );
        spec.batch = MAX_BATCH_LOGIN + 1;
        assert!(matches!(spec.check(), Err(LoadError::Parameter(_))));
    }
}
