//! The load generator against a real aliot broker over loopback: every scenario runs end to
//! end, briefly, and what it counts adds up.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use aliot_auth::MemoryRegistry;
use aliot_benches::loadgen::aliot_config::aliot_config_toml;
use aliot_benches::loadgen::gateway::{GatewaySpec, run_gateway};
use aliot_benches::loadgen::login::{Login, PlatformDevices};
use aliot_benches::loadgen::scenario::{
    Common, ConnectionsSpec, RrpcSpec, ThroughputSpec, run_connections, run_rrpc, run_throughput,
};
use aliot_benches::loadgen::target::Target;
use aliot_benches::loadgen::{LoadError, ReplyFault};
use aliot_core::PlatformAuthenticator;
use aliot_core::codec::QoS;
use aliot_tokio::{Broker, BrokerConfig, ListenerConfig};
use aliot_topic::ProductCategories;

/// The first `devices` devices of `platform`, registered.
fn registry(platform: &PlatformDevices, devices: usize) -> MemoryRegistry {
    let mut registry = MemoryRegistry::new();
    registry.add_product(&platform.product_key, ProductCategories::defaults());
    for index in 0..devices {
        registry
            .add_device(
                &platform.product_key,
                &PlatformDevices::device_name(index),
                platform.secret(index),
            )
            .expect("a new device");
    }
    registry
}

/// An aliot broker with these listeners and devices, in open mode or not.
async fn broker_with(
    listeners: Vec<ListenerConfig>,
    registry: MemoryRegistry,
    open: bool,
) -> Broker {
    Broker::start(BrokerConfig {
        listeners,
        server: Default::default(),
        hub: Default::default(),
        authenticator: Arc::new(PlatformAuthenticator::new(registry).with_open_mode(open)),
        max_connections: BrokerConfig::DEFAULT_MAX_CONNECTIONS,
        store: None,
        registry: None,
        cluster: None,
    })
    .await
    .expect("the broker starts")
}

/// A plain TCP listener on a free loopback port.
fn loopback() -> ListenerConfig {
    ListenerConfig::tcp(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0))
}

/// An aliot broker on a free loopback port: open mode, plus `devices` devices of `platform`.
async fn broker(platform: &PlatformDevices, devices: usize) -> Broker {
    broker_with(vec![loopback()], registry(platform, devices), true).await
}

fn common(broker: &Broker, login: Login) -> Common {
    let (addr, _) = broker.listener_addrs()[0];
    Common {
        target: Target::from_addr(addr).expect("loopback"),
        login,
        broker_label: "aliot".to_owned(),
        broker_pid: Some(std::process::id()),
        conns_per_task: 8,
        connect_concurrency: 8,
        handshake_timeout: Duration::from_secs(10),
    }
}

fn short(mut spec: ThroughputSpec) -> ThroughputSpec {
    spec.warmup = Duration::from_millis(200);
    spec.duration = Duration::from_millis(800);
    spec.drain = Duration::from_secs(5);
    spec
}

fn platform() -> PlatformDevices {
    PlatformDevices::parse("loadTestPK:seed").expect("valid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_to_one_qos1_at_a_modest_rate_delivers_every_message_and_measures_each() {
    let broker = broker(&platform(), 0).await;
    let common = common(&broker, Login::Open);
    let mut spec = short(ThroughputSpec::one_to_one(QoS::AtLeastOnce));
    spec.rate = Some(2_000.0);
    let report = run_throughput(&common, &spec).await.expect("runs");
    assert_eq!(report.lost_connections, 0, "{report}");
    assert!(report.published > 0, "{report}");
    assert_eq!(report.missing, 0, "{report}");
    assert_eq!(report.delivered, report.published, "{report}");
    assert_eq!(report.acked, report.published, "{report}");
    // 2,000/s over a 0.8 s window: about 1,600 measured, give or take the timer.
    assert!((1_000..=2_200).contains(&report.latency.count), "{report}");
    assert!(report.latency.p50_us > 0.0 && report.latency.p50_us <= report.latency.p99_us);
    assert!(report.broker_cpu_percent.is_some());
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_reaches_every_subscriber_and_fan_in_hears_every_publisher() {
    let broker = broker(&platform(), 0).await;
    let common = common(&broker, Login::Open);

    let mut fan_out = short(ThroughputSpec::fan_out());
    fan_out.subscribers = 10;
    fan_out.rate = Some(200.0);
    let report = run_throughput(&common, &fan_out).await.expect("runs");
    assert_eq!(
        report.expected_deliveries,
        report.published * 10,
        "{report}"
    );
    assert_eq!(report.missing, 0, "{report}");

    let mut fan_in = short(ThroughputSpec::fan_in());
    fan_in.publishers = 10;
    fan_in.rate = Some(1_000.0);
    let report = run_throughput(&common, &fan_in).await.expect("runs");
    assert_eq!(report.publishers, 10);
    assert_eq!(report.missing, 0, "{report}");
    assert_eq!(report.delivered, report.published, "{report}");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_devices_publish_on_their_broadcast_topics() {
    let platform = platform();
    let broker = broker(&platform, 4).await;
    let common = common(&broker, Login::Platform(platform));
    let mut spec = short(ThroughputSpec::one_to_one(QoS::AtLeastOnce));
    spec.rate = Some(500.0);
    let report = run_throughput(&common, &spec).await.expect("runs");
    assert!(report.delivered > 0, "{report}");
    assert_eq!(report.missing, 0, "{report}");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_signed_in_from_several_source_addresses_and_held() {
    let platform = platform();
    let broker = broker(&platform, 60).await;
    let common = common(&broker, Login::Platform(platform));
    let spec = ConnectionsSpec {
        count: 60,
        per_source: 25,
        hold: Duration::from_millis(300),
        ..ConnectionsSpec::default()
    };
    let report = run_connections(&common, &spec).await.expect("runs");
    assert_eq!(report.connected, 60, "{report}");
    assert_eq!(report.failed, 0, "{report}");
    assert_eq!(report.source_addresses, 3);
    assert_eq!(report.open_after_hold, 60, "{report}");
    assert_eq!(report.handshake.count, 60);
    assert!(report.rss_before_kib.is_some() && report.rss_after_kib.is_some());
    assert!(report.connects_per_sec > 0.0);
    // The scenario disconnects them all when it ends.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while broker.handle().stats().await.connections > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(broker.handle().stats().await.connections, 0);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_the_broker_does_not_know_is_a_counted_failure() {
    let platform = platform();
    // Devices 0..10 exist, the scenario asks for 12.
    let broker = broker(&platform, 10).await;
    let common = common(&broker, Login::Platform(platform));
    let spec = ConnectionsSpec {
        count: 12,
        hold: Duration::from_millis(100),
        ..ConnectionsSpec::default()
    };
    let report = run_connections(&common, &spec).await.expect("runs");
    assert_eq!(report.connected, 10, "{report}");
    assert_eq!(report.failed, 2, "{report}");
    let failure = report.first_failure.expect("a failure");
    assert!(failure.contains("CONNACK"), "{failure}");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rrpc_calls_are_answered_by_the_simulated_devices() {
    // The RRPC scenario starts its own broker; `common` only gives the generator settings.
    let broker = broker(&platform(), 0).await;
    let common = common(&broker, Login::Open);
    let spec = RrpcSpec {
        devices: 5,
        callers: 4,
        warmup: Duration::from_millis(200),
        duration: Duration::from_millis(500),
        ..RrpcSpec::default()
    };
    let report = run_rrpc(&common, &spec).await.expect("runs");
    assert!(report.success > 0, "{report}");
    assert_eq!(report.timeout + report.other, 0, "{report}");
    assert!(
        report.latency.count > 0 && report.calls_per_sec > 0.0,
        "{report}"
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_is_not_there_fails_the_run_with_the_address() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let addr = listener.local_addr().expect("bound");
    drop(listener);
    let common = Common {
        target: Target::from_addr(addr).expect("loopback"),
        login: Login::Open,
        broker_label: "nobody".to_owned(),
        broker_pid: None,
        conns_per_task: 1,
        connect_concurrency: 1,
        handshake_timeout: Duration::from_secs(2),
    };
    let error = run_throughput(&common, &short(ThroughputSpec::one_to_one(QoS::AtMostOnce)))
        .await
        .expect_err("nothing listens");
    assert!(matches!(error, LoadError::Connect { .. }), "{error}");
    assert!(error.to_string().contains(&addr.to_string()), "{error}");
}

/// A broker as `aliot serve` runs it from the file `aliot-bench aliot-config` writes (with its
/// registry, which gateways need), on a free loopback port.
async fn served_broker(platform: &PlatformDevices, devices: usize) -> Broker {
    let toml = aliot_config_toml(
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
        platform,
        devices,
        false,
    )
    .expect("loopback");
    let config =
        aliot_tokio::config::Config::parse(&toml, "generated.toml", std::path::Path::new("."))
            .expect("aliot reads it");
    Broker::start(config.broker_config())
        .await
        .expect("the broker starts")
}

fn short_gateway(subs: usize, batch: usize, inflight: usize) -> GatewaySpec {
    let mut spec = GatewaySpec {
        subs,
        batch,
        reply_timeout: Duration::from_secs(5),
        ..GatewaySpec::default()
    };
    spec.posts = short(spec.posts);
    spec.posts.inflight = inflight;
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_logs_its_sub_devices_in_and_posts_for_them_beside_direct_devices() {
    let platform = platform();
    // The gateway, 23 sub-devices, 23 direct devices.
    let broker = served_broker(&platform, 47).await;
    let common = common(&broker, Login::Platform(platform));
    let spec = short_gateway(23, 10, 46);
    let report = run_gateway(&common, &spec).await.expect("runs");
    assert_eq!(report.topology_requests, 1, "{report}");
    assert_eq!(report.login_batches, 3, "{report}");
    assert_eq!(report.login_batch_latency.count, 3, "{report}");
    assert!(
        report.login_secs > 0.0 && report.logins_per_sec > 0.0,
        "{report}"
    );
    for side in [&report.through_gateway, &report.direct] {
        assert!(side.delivered > 0 && side.msgs_per_sec > 0.0, "{side}");
        assert_eq!(side.missing, 0, "{side}");
        assert_eq!(side.lost_connections, 0, "{side}");
    }
    assert_eq!(report.through_gateway.publishers, 1);
    assert_eq!(report.through_gateway.inflight, 46);
    assert_eq!(report.direct.publishers, 23);
    assert_eq!(report.direct.inflight, 2);
    assert!(report.ratio > 0.0, "{report}");

    // The other order, on the same broker: a new gateway connection logs them in again.
    let mut spec = short_gateway(23, 50, 23);
    spec.direct_first = true;
    let report = run_gateway(&common, &spec).await.expect("runs");
    assert_eq!(report.order, "direct-first");
    assert_eq!(report.login_batches, 1, "{report}");
    assert_eq!(report.through_gateway.missing, 0, "{report}");
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_device_the_broker_does_not_know_fails_the_run_with_the_platforms_code() {
    let platform = platform();
    // The gateway and sub-devices 1..=4; sub-device 5 is not registered.
    let broker = served_broker(&platform, 5).await;
    let common = common(&broker, Login::Platform(platform));
    let error = run_gateway(&common, &short_gateway(5, 5, 5))
        .await
        .expect_err("a device is missing");
    let LoadError::Reply(ReplyFault::Refused {
        code, topic, data, ..
    }) = &error
    else {
        panic!("not a refusal: {error}");
    };
    assert_eq!(*code, 6100, "{error}");
    assert!(topic.ends_with("/thing/topo/add_reply"), "{error}");
    assert!(data.contains("dev000005"), "{error}");
    broker.shutdown().await;
}

/// Issue 17's transports: the same 1:1 run over TLS-PSK, WebSocket and WebSocket over TLS
/// (an rcgen certificate for `localhost`), and idle connections over TLS, against one broker
/// with a listener of each kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_to_one_and_connections_run_over_every_transport() {
    use aliot_benches::loadgen::transport::Transport;
    use aliot_tokio::broker::{OpenSslTls, WebSocketListener, tls_config};
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    let platform = platform();
    let devices = 4;
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let tls = tls_config(vec![certified.cert.der().clone()], key).unwrap();
    let listeners = vec![
        ListenerConfig {
            openssl: Some(OpenSslTls::Psk),
            ..loopback()
        },
        ListenerConfig {
            websocket: Some(WebSocketListener::default()),
            ..loopback()
        },
        ListenerConfig {
            websocket: Some(WebSocketListener::default()),
            tls: Some(Arc::clone(&tls)),
            ..loopback()
        },
        ListenerConfig {
            tls: Some(tls),
            ..loopback()
        },
    ];
    let broker = broker_with(listeners, registry(&platform, devices), false).await;
    let ca = std::env::temp_dir().join(format!("loadgen-ca-{}.pem", std::process::id()));
    std::fs::write(&ca, certified.cert.pem()).unwrap();
    let client_tls = Transport::tls_config(&ca).expect("a CA");
    let addrs: Vec<SocketAddr> = broker.listeners().iter().map(|l| l.addr).collect();
    let transports = [
        Transport::Psk(platform.clone()),
        Transport::WebSocket {
            path: "/mqtt".to_owned(),
            tls: None,
        },
        Transport::WebSocket {
            path: "/mqtt".to_owned(),
            tls: Some(Arc::clone(&client_tls)),
        },
        Transport::Tls(client_tls),
    ];
    for (addr, transport) in addrs.into_iter().zip(transports) {
        let name = transport.name();
        let mut common = common(&broker, Login::Platform(platform.clone()));
        common.target = Target::from_addr(addr).unwrap().with_transport(transport);
        let mut spec = short(ThroughputSpec::one_to_one(QoS::AtLeastOnce));
        spec.rate = Some(1_000.0);
        let report = run_throughput(&common, &spec).await.expect("runs");
        assert_eq!(report.lost_connections, 0, "{name}: {report}");
        assert!(report.published > 0, "{name}: {report}");
        assert_eq!(report.missing, 0, "{name}: {report}");
        assert_eq!(report.acked, report.published, "{name}: {report}");
        if name == "tls" {
            let spec = ConnectionsSpec {
                count: devices,
                hold: Duration::from_millis(100),
                ..ConnectionsSpec::default()
            };
            let report = run_connections(&common, &spec).await.expect("runs");
            assert_eq!(report.connected, devices, "{report}");
            assert_eq!(report.failed, 0, "{report}");
        }
    }
    let _ = std::fs::remove_file(&ca);
    broker.shutdown().await;
}
