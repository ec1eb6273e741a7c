//! The server-side subscription bench (`aliot-bench amqp`) against a real aliot broker, started
//! in this process from the configuration `aliot-config --amqp-bind …` writes, with its AMQP
//! listener and HTTP API: devices' messages reach the AMQP consumer, each once and measured, a
//! filled backlog drains whole, and a login the broker refuses fails the run.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use aliot_benches::loadgen::LoadError;
use aliot_benches::loadgen::aliot_config::{SubscriptionConfig, subscription_config_toml};
use aliot_benches::loadgen::amqp::{
    AmqpMode, AmqpSpec, ConsumerCredentials, ConsumerPlan, DEFAULT_ACCESS_KEY_ID,
    DEFAULT_ACCESS_KEY_SECRET, DEFAULT_GROUP, DrainSpec, default_publishers, group_metrics,
    run_amqp, run_drain,
};
use aliot_benches::loadgen::login::{Login, PlatformDevices};
use aliot_benches::loadgen::scenario::Common;
use aliot_benches::loadgen::target::Target;
use aliot_tokio::Broker;
use aliot_tokio::amqp::{AmqpConfig, ServeAmqp as _};
use aliot_tokio::api::AccessKeys;
use aliot_tokio::broker::{ApiConfig, ServeHttpApi as _};
use aliot_tokio::config::Config;

/// A broker of `aliot-config`'s subscription configuration with 4 devices: its MQTT, AMQP and
/// API addresses.
struct Served {
    broker: Broker,
    mqtt: SocketAddr,
    amqp: SocketAddr,
    api: SocketAddr,
}

fn platform() -> PlatformDevices {
    PlatformDevices::parse("amqpTestPK:seed").expect("valid")
}

async fn serve() -> Served {
    let any = "127.0.0.1:0".parse().expect("an address");
    let subscription = SubscriptionConfig {
        amqp_bind: any,
        api_bind: any,
        access_key_id: DEFAULT_ACCESS_KEY_ID.into(),
        access_key_secret: DEFAULT_ACCESS_KEY_SECRET.into(),
        group: DEFAULT_GROUP.into(),
        backlog_messages: 100_000,
        backlog_bytes: 1 << 30,
    };
    let toml = subscription_config_toml(any, &platform(), 4, &subscription).expect("loopback");
    let config = Config::parse(&toml, "generated.toml", Path::new(".")).expect("aliot reads it");
    let access_keys = AccessKeys::configured(&config.access_keys);
    let mut broker = Broker::start(config.broker_config())
        .await
        .expect("the broker starts");
    let api = broker
        .serve_http_api(ApiConfig {
            bind: any,
            token: None,
            access_keys: access_keys.clone(),
            console: true,
        })
        .await
        .expect("the API serves");
    let amqp = broker
        .serve_amqp(AmqpConfig {
            bind: any,
            tls: None,
            access_keys,
        })
        .await
        .expect("the AMQP listener serves");
    let (mqtt, _) = broker.listener_addrs()[0];
    Served {
        broker,
        mqtt,
        amqp,
        api,
    }
}

fn common(served: &Served) -> Common {
    Common {
        target: Target::from_addr(served.mqtt).expect("loopback"),
        login: Login::Platform(platform()),
        broker_label: "aliot".to_owned(),
        broker_pid: Some(std::process::id()),
        conns_per_task: 8,
        connect_concurrency: 8,
        handshake_timeout: Duration::from_secs(10),
    }
}

fn consumer(served: &Served, secret: &str) -> ConsumerPlan {
    ConsumerPlan {
        target: Target::from_addr(served.amqp).expect("loopback"),
        credentials: ConsumerCredentials {
            client_id: "amqp-test".into(),
            access_key_id: DEFAULT_ACCESS_KEY_ID.into(),
            access_key_secret: secret.into(),
            group: DEFAULT_GROUP.into(),
        },
        credit: 50,
        timeout: Duration::from_secs(10),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_messages_reach_the_consumer_once_each_and_a_full_backlog_drains() {
    let served = serve().await;
    let common = common(&served);

    let mut run = default_publishers();
    run.publishers = 2;
    run.rate = Some(1_000.0);
    run.warmup = Duration::from_millis(200);
    run.duration = Duration::from_millis(800);
    run.drain = Duration::from_secs(5);
    let spec = AmqpSpec {
        mode: AmqpMode::Latency,
        consumer: consumer(&served, DEFAULT_ACCESS_KEY_SECRET),
        run,
    };
    let report = run_amqp(&common, &spec).await.expect("runs");
    assert!(report.run.published > 0, "{report}");
    assert_eq!(report.run.delivered, report.run.published, "{report}");
    assert_eq!(report.run.missing, 0, "{report}");
    assert_eq!(
        (report.duplicates, report.other_messages),
        (0, 0),
        "{report}"
    );
    // 1,000/s over a 0.8 s window: about 800 measured, give or take the timer.
    assert!(
        (400..=1_100).contains(&report.run.latency.count),
        "{report}"
    );
    let api = Target::from_addr(served.api).expect("loopback");
    let metrics = group_metrics(&api, DEFAULT_GROUP).await.expect("readable");
    assert_eq!(metrics.dropped, 0);

    let mut run = default_publishers();
    run.publishers = 3;
    let spec = DrainSpec {
        consumer: consumer(&served, DEFAULT_ACCESS_KEY_SECRET),
        api,
        messages: 3_001,
        run,
        fill_timeout: Duration::from_secs(30),
        stall_timeout: Duration::from_secs(10),
    };
    let report = run_drain(&common, &spec).await.expect("drains");
    assert_eq!(report.backlog_full, 3_001, "{report}");
    assert_eq!(report.backlog_after, 0, "{report}");
    assert_eq!((report.duplicates, report.dropped), (0, 0), "{report}");
    assert!(
        report.drain_per_sec > 0.0 && report.rss_full_kib.is_some(),
        "{report}"
    );
    served.broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_login_the_broker_refuses_fails_the_run() {
    let served = serve().await;
    let spec = AmqpSpec {
        mode: AmqpMode::Throughput,
        consumer: consumer(&served, "not-the-secret"),
        run: default_publishers(),
    };
    let error = run_amqp(&common(&served), &spec)
        .await
        .expect_err("refused");
    assert!(matches!(error, LoadError::AmqpLogin { .. }), "{error}");
    assert!(error.to_string().contains(DEFAULT_GROUP), "{error}");
    served.broker.shutdown().await;
}
