//! A configuration file parses into the right broker pieces; the shipped examples parse.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aliot_auth::{DeviceRegistry, DeviceSecret};
use aliot_core::hub::HubConfig;
use aliot_core::server::ServerConfig;
use aliot_tokio::BrokerConfig;
use aliot_tokio::config::{ApiSettings, AuthSettings, Config, DEFAULT_API_BIND};
use aliot_tokio::demo::{DEMO_DEVICES, DEMO_PRODUCT_KEY, demo_config};
use aliot_topic::{CategoryKind, Permission, TopicLimits};

/// A folder of its own for one test's files.
fn test_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("config_parse-{name}"));
    std::fs::create_dir_all(&dir).expect("create the test folder");
    dir
}

/// Writes a self-signed certificate and its key as `server.pem` / `server.key` in `dir`.
fn write_certificate(dir: &Path) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("generate a certificate");
    std::fs::write(dir.join("server.pem"), certified.cert.pem()).expect("write the certificate");
    std::fs::write(
        dir.join("server.key"),
        certified.signing_key.serialize_pem(),
    )
    .expect("write the key");
}

const FULL: &str = r#"
[[listener]]
bind = "127.0.0.1:1883"

[[listener]]
bind = "[::1]:8883"
tls = { cert = "server.pem", key = "server.key" }

[api]
bind = "127.0.0.1:9090"
token = "s3cret-token"

[limits]
max_connections = 5000
max_packet_size = 65536
max_topic_len = 200
connect_timeout_secs = 5
max_pending_output = 2097152
inflight_window = 8
max_queued_messages = 50
max_queued_bytes = 100000
ack_hold_threshold = 20
max_ack_hold_ms = 250
max_message_age_secs = 3600
session_expiry_secs = "never"

[auth]
open = true
max_timestamp_skew_ms = 600000

[[product]]
key = "a1TestPK001"
categories = [
  { topic = "/${productKey}/${deviceName}/user/get", permission = "sub" },
  { topic = "/${productKey}/${deviceName}/user/update", permission = "pub" },
  { topic = "/${productKey}/${deviceName}/user/cmd/+", permission = "sub" },
]

[[product.device]]
name = "dev-001"
secret = "0123456789abcdef0123456789abcdef"

[[product.device]]
name = "dev-002"
secret = "another-secret"

[[product]]
key = "a1OtherPK02"

[[product.device]]
name = "sensor"
secret = "s"
"#;

#[test]
fn a_full_file_sets_every_piece() {
    let dir = test_dir("full");
    write_certificate(&dir);
    let config = Config::parse(FULL, "full.toml", &dir).expect("the full example is valid");

    assert_eq!(config.listeners.len(), 2);
    assert_eq!(config.listeners[0].bind, "127.0.0.1:1883".parse().unwrap());
    assert!(config.listeners[0].tls.is_none());
    assert_eq!(config.listeners[1].bind, "[::1]:8883".parse().unwrap());
    let tls = config.listeners[1]
        .tls
        .as_ref()
        .expect("the second listener has TLS");
    assert_eq!(tls.cert, dir.join("server.pem"));
    assert_eq!(tls.key, dir.join("server.key"));

    assert_eq!(
        config.api,
        Some(ApiSettings {
            bind: "127.0.0.1:9090".parse().unwrap(),
            token: Some("s3cret-token".to_owned()),
            console: true,
        })
    );
    assert_eq!(config.max_connections.get(), 5000);
    assert_eq!(
        config.server,
        ServerConfig {
            max_packet_size: 65536,
            topic_limits: TopicLimits::with_max_len(200),
            connect_timeout: Duration::from_secs(5),
            max_pending_output: 2 * 1024 * 1024,
        }
    );
    assert_eq!(
        config.hub,
        HubConfig {
            inflight_window: std::num::NonZeroU16::new(8).expect("a window"),
            max_queued_messages: 50,
            max_queued_bytes: 100_000,
            ack_hold_threshold: 20,
            max_ack_hold: Duration::from_millis(250),
            max_message_age: Some(Duration::from_secs(3600)),
            session_expiry: None,
            // The file has an [api], so the console and its trace.
            trace_capacity: aliot_tokio::config::CONSOLE_TRACE_CAPACITY,
            ..HubConfig::default()
        }
    );
    assert_eq!(
        config.auth,
        AuthSettings {
            open: true,
            max_timestamp_skew_ms: Some(600_000),
        }
    );

    assert_eq!(config.registry.device_count(), 3);
    let record = config
        .registry
        .lookup("a1TestPK001", "dev-001")
        .expect("dev-001 is registered");
    assert_eq!(
        record.secret,
        DeviceSecret::new("0123456789abcdef0123456789abcdef")
    );
    let custom: Vec<(&str, Permission)> = record
        .categories
        .iter()
        .filter(|category| category.kind() == CategoryKind::Custom)
        .map(|category| (category.template(), category.permission()))
        .collect();
    assert_eq!(
        custom,
        [
            ("/${productKey}/${deviceName}/user/get", Permission::Sub),
            ("/${productKey}/${deviceName}/user/update", Permission::Pub),
            ("/${productKey}/${deviceName}/user/cmd/+", Permission::Sub),
        ]
    );
    let other = config
        .registry
        .lookup("a1OtherPK02", "sensor")
        .expect("sensor is registered");
    assert!(
        other
            .categories
            .iter()
            .all(|category| category.kind() != CategoryKind::Custom),
        "a product without categories has only the defaults"
    );
    assert!(config.registry.lookup("a1OtherPK02", "dev-001").is_none());

    assert_eq!(config.products.len(), 2);
    assert_eq!(config.products[0].key, "a1TestPK001");
    assert_eq!(config.products[0].devices, ["dev-001", "dev-002"]);
    assert_eq!(config.products[0].custom_categories.len(), 3);
    assert_eq!(config.products[1].devices, ["sensor"]);
}

#[test]
fn the_broker_config_carries_the_file() {
    let dir = test_dir("broker");
    write_certificate(&dir);
    let config = Config::parse(FULL, "full.toml", &dir).expect("the full example is valid");
    let broker = config.broker_config();

    let listeners: Vec<_> = broker
        .listeners
        .iter()
        .map(|listener| (listener.bind, listener.tls.is_some()))
        .collect();
    assert_eq!(
        listeners,
        [
            ("127.0.0.1:1883".parse().unwrap(), false),
            ("[::1]:8883".parse().unwrap(), true)
        ]
    );
    assert_eq!(broker.server, config.server);
    assert_eq!(broker.hub, config.hub);
    assert_eq!(broker.max_connections.get(), 5000);
}

#[test]
fn what_is_left_out_takes_the_defaults() {
    let text = "[[listener]]\nbind = \"0.0.0.0:1883\"\n";
    let config = Config::parse(text, "minimal.toml", Path::new(".")).expect("valid");
    assert_eq!(config.server, ServerConfig::default());
    assert_eq!(config.hub, HubConfig::default());
    assert_eq!(config.max_connections.get(), 1_000_000);
    assert_eq!(
        config.broker_config().max_connections,
        BrokerConfig::DEFAULT_MAX_CONNECTIONS
    );
    assert_eq!(config.auth, AuthSettings::default());
    assert!(!config.auth.open, "open mode is off unless configured");
    assert_eq!(config.api, None, "no [api] table: no API");
    assert_eq!(config.registry.device_count(), 0);

    let with_api = Config::parse(&format!("{text}[api]\n"), "api.toml", Path::new("."))
        .expect("an empty [api] table is valid");
    assert_eq!(
        with_api.api,
        Some(ApiSettings {
            bind: DEFAULT_API_BIND,
            token: None,
            console: true,
        })
    );
    assert_eq!(
        with_api.hub.trace_capacity,
        aliot_tokio::config::CONSOLE_TRACE_CAPACITY,
        "the console's live views have the hub's trace"
    );
    let console_off = Config::parse(
        &format!("{text}[api]\nconsole = false\n"),
        "api.toml",
        Path::new("."),
    )
    .expect("console = false is valid");
    assert!(!console_off.api.as_ref().unwrap().console);
    assert_eq!(console_off.hub.trace_capacity, 0, "no console, no trace");
    assert_eq!(DEFAULT_API_BIND.to_string(), "127.0.0.1:8080");
}

#[test]
fn the_authenticator_follows_the_auth_table() {
    use aliot_auth::{DeviceIdentity, SecureMode, SignRequest};
    use aliot_core::codec::{Connect, ProtocolVersion, Utf8Bytes};
    use aliot_core::{AuthContext, Authenticator, ClientKey};

    let text = r#"
[[listener]]
bind = "127.0.0.1:1883"
[auth]
open = true
[[product]]
key = "pk"
[[product.device]]
name = "dn"
secret = "secret"
"#;
    let config = Config::parse(text, "auth.toml", Path::new(".")).expect("valid");
    let authenticator = config.authenticator();
    let connect = |client_id: &str, username: Option<&str>, password: Option<&str>| Connect {
        protocol: ProtocolVersion::V3_1_1,
        client_id: Utf8Bytes::try_from(client_id).unwrap(),
        clean_session: true,
        keep_alive: 60,
        username: username.map(|u| Utf8Bytes::try_from(u).unwrap()),
        password: password.map(|p| bytes::Bytes::copy_from_slice(p.as_bytes())),
        will: None,
    };
    let context = AuthContext::default();

    // Open mode admits a plain MQTT client…
    let plain = authenticator
        .authenticate(&connect("mosquitto", None, None), &context)
        .expect("open mode admits a plain client");
    assert_eq!(plain.key, ClientKey::Client("mosquitto".to_owned()));

    // …and still verifies the platform's devices.
    let identity = DeviceIdentity::new("pk", "dn");
    let secret = DeviceSecret::new("secret");
    let credentials = SignRequest::new(&identity, &secret, SecureMode::Tcp)
        .sign()
        .unwrap();
    let device = authenticator
        .authenticate(
            &connect(
                &credentials.client_id,
                Some(&credentials.username),
                Some(&credentials.password),
            ),
            &context,
        )
        .expect("the device's credentials verify");
    assert_eq!(device.key, ClientKey::Device(identity));
}

/// The repository's root, where README.md and the examples are.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("io-tokio is in the repository")
        .to_owned()
}

#[test]
fn the_shipped_examples_parse() {
    let examples = repo_root().join("io-tokio/examples");
    let mut shipped = vec![repo_root().join("io-common/src/demo.toml")];
    for entry in std::fs::read_dir(&examples).expect("io-tokio/examples exists") {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_some_and(|ext| ext == "toml") {
            shipped.push(path);
        }
    }
    assert!(shipped.len() >= 2, "demo.toml and aliot.toml at least");
    for path in &shipped {
        Config::from_file(path)
            .unwrap_or_else(|error| panic!("{} is refused: {error}", path.display()));
    }
}

#[test]
fn the_demo_is_the_documented_product() {
    let config = demo_config(None, None, None).expect("the built-in demo is valid");
    assert_eq!(config.listeners.len(), 1);
    assert_eq!(config.listeners[0].bind.to_string(), "127.0.0.1:1883");
    assert_eq!(
        config.api.as_ref().map(|api| api.bind.to_string()),
        Some("127.0.0.1:8080".to_owned())
    );
    assert!(!config.auth.open);
    for (name, secret) in DEMO_DEVICES {
        let record = config
            .registry
            .lookup(DEMO_PRODUCT_KEY, name)
            .unwrap_or_else(|| panic!("{name} is in the demo"));
        assert_eq!(record.secret, DeviceSecret::new(secret));
    }
    assert_eq!(
        config.products[0].custom_categories,
        [
            (
                "/${productKey}/${deviceName}/user/get".to_owned(),
                Permission::Sub
            ),
            (
                "/${productKey}/${deviceName}/user/update".to_owned(),
                Permission::Pub
            ),
        ]
    );

    let moved = demo_config(
        Some("127.0.0.1:0".parse().unwrap()),
        Some("127.0.0.1:0".parse().unwrap()),
        Some("127.0.0.1:0".parse().unwrap()),
    )
    .expect("valid");
    assert_eq!(moved.listeners[0].bind.port(), 0);
    assert_eq!(moved.api.map(|api| api.bind.port()), Some(0));
    assert_eq!(moved.amqp.map(|amqp| amqp.bind.port()), Some(0));
}

#[test]
fn the_summary_names_what_runs() {
    let dir = test_dir("summary");
    write_certificate(&dir);
    let config = Config::parse(FULL, "full.toml", &dir).expect("valid");
    let summary = config.summary();
    assert!(
        summary.contains("MQTT listener 127.0.0.1:1883 (TCP)"),
        "{summary}"
    );
    assert!(
        summary.contains("MQTT listener [::1]:8883 (TLS"),
        "{summary}"
    );
    assert!(
        summary.contains("HTTP API 127.0.0.1:9090 (bearer token required)"),
        "{summary}"
    );
    assert!(summary.contains("open mode on"), "{summary}");
    assert!(summary.contains("2 product(s), 3 device(s)"), "{summary}");
    assert!(
        summary.contains("product a1TestPK001: 2 device(s), 3 custom categories"),
        "{summary}"
    );
    assert!(!summary.contains("s3cret-token"), "the token is not shown");
}

#[test]
fn the_store_table_gives_the_directory_and_durability() {
    use aliot_tokio::store::{Durability, StoreLocation};
    use std::time::Duration;

    let base = Path::new("/etc/aliot");
    let text = "[[listener]]\nbind = \"127.0.0.1:1883\"\n[store]\npath = \"data\"\n";
    let config = Config::parse(text, "store.toml", base).expect("valid");
    let store = config.store.clone().expect("a store");
    assert!(
        matches!(&store.location, StoreLocation::Directory(dir) if dir == &base.join("data")),
        "relative to the file's folder: {store:?}"
    );
    assert_eq!(store.durability, Durability::Immediate, "the default");
    assert!(config.broker_config().store.is_some());
    assert!(
        config
            .summary()
            .contains("store /etc/aliot/data (durability immediate)")
    );

    for (table, durability) in [
        ("durability = \"none\"\n", Durability::None),
        (
            "durability = \"periodic\"\nflush_ms = 250\n",
            Durability::Periodic(Duration::from_millis(250)),
        ),
    ] {
        let config = Config::parse(&format!("{text}{table}"), "store.toml", base).expect("valid");
        assert_eq!(config.store.unwrap().durability, durability);
    }

    let without =
        Config::parse("[[listener]]\nbind = \"127.0.0.1:1883\"\n", "m.toml", base).expect("valid");
    assert!(without.store.is_none(), "no [store]: in memory");
    assert!(without.summary().contains("store off"));
}

#[test]
fn psk_and_legacy_tls_listeners_go_to_openssl() {
    use aliot_tokio::broker::{LegacyTlsVersion, OpenSslTls};
    let dir = test_dir("openssl");
    write_certificate(&dir);
    let text = r#"
[[listener]]
bind = "127.0.0.1:1884"
psk = true

[[listener]]
bind = "127.0.0.1:8884"
tls = { cert = "server.pem", key = "server.key", min_version = "1.1" }

[[listener]]
bind = "127.0.0.1:8885"
tls = { cert = "server.pem", key = "server.key", min_version = "1.2" }
"#;
    let config = Config::parse(text, "tls.toml", &dir).expect("valid");
    let listeners = config.broker_config().listeners;
    assert_eq!(listeners[0].openssl, Some(OpenSslTls::Psk));
    assert!(listeners[0].tls.is_none() && listeners[0].is_tls());
    assert_eq!(
        listeners[1].openssl,
        Some(OpenSslTls::Legacy {
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
            min_version: LegacyTlsVersion::Tls1_1,
        })
    );
    assert!(listeners[1].tls.is_none());
    // 1.2, the default, stays with rustls.
    assert!(listeners[2].openssl.is_none() && listeners[2].tls.is_some());
    let summary = config.summary();
    assert!(
        summary.contains(
            "MQTT listener 127.0.0.1:1884 (TLS-PSK, TLS_PSK_WITH_AES_128_CBC_SHA with device keys)"
        ),
        "{summary}"
    );
    assert!(
        summary.contains("MQTT listener 127.0.0.1:8884 (TLS 1.1 to 1.3 (OpenSSL)"),
        "{summary}"
    );
    assert!(
        summary.contains("MQTT listener 127.0.0.1:8885 (TLS 1.2 and 1.3"),
        "{summary}"
    );
}

#[test]
fn psk_beside_a_certificate_an_unknown_tls_version_and_legacy_amqp_are_refused() {
    let dir = test_dir("openssl-refusals");
    write_certificate(&dir);
    let refuse = |text: &str| match Config::parse(text, "bad.toml", &dir) {
        Ok(_) => panic!("accepted: {text}"),
        Err(error) => error.to_string(),
    };
    let both = refuse(
        "[[listener]]\nbind = \"127.0.0.1:1884\"\npsk = true\ntls = { cert = \"server.pem\", key = \"server.key\" }\n",
    );
    assert!(
        both.contains("line 3") && both.contains("has no certificate"),
        "{both}"
    );
    let version = refuse(
        "[[listener]]\nbind = \"127.0.0.1:8884\"\ntls = { cert = \"server.pem\", key = \"server.key\", min_version = \"0.9\" }\n",
    );
    assert!(
        version.contains("line 3") && version.contains("\"0.9\""),
        "{version}"
    );
    let amqp = refuse(
        "[[listener]]\nbind = \"127.0.0.1:1883\"\n[amqp]\ntls = { cert = \"server.pem\", key = \"server.key\", min_version = \"1.0\" }\n",
    );
    assert!(
        amqp.contains("line 4") && amqp.contains("MQTT listeners only"),
        "{amqp}"
    );
}
