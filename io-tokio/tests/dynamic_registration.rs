//! Dynamic registration over MQTT on real sockets (PLATFORM-PROTOCOLS §2): a pre-registered
//! device gets its secret on `/ext/register`, connects with it and is activated, after which
//! it may not register again; a device not registered beforehand is created by `regnwl`, gets
//! a token on `/ext/regnwl` and logs in with it (`connwl`); everything survives a restart, and
//! `/metrics` counts the attempts. Over TLS, as the platform requires; plain TCP is refused.

// The support module of the shared adapter suite, here on tokio only.
#[path = "../../io-common/tests/suite/support.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use aliot_auth::{DeviceIdentity, SignMethod, registration_sign};
use aliot_core::codec::Packet;
use aliot_io::Runtime as _;
use aliot_tokio::Tokio;
use aliot_tokio::broker::{ApiConfig, Broker, ServeHttpApi as _};
use aliot_tokio::config::Config;
use futures_rustls::TlsConnector;
use rustls::pki_types::{CertificateDer, ServerName};
use support::*;

const PK: &str = "a1DynReg0001";
const PRODUCT_SECRET: &str = "ProductSecretForDynamicRegist001";

fn config_text() -> String {
    format!(
        r#"
[[listener]]
bind = "127.0.0.1:0"

[[listener]]
bind = "127.0.0.1:0"
tls = {{ cert = "cert.pem", key = "key.pem" }}

[store]
path = "data"

[[product]]
key = "{PK}"
product_secret = "{PRODUCT_SECRET}"
dynamic_registration = true

[[product.device]]
name = "factory-0001"
secret = "SecretFromTheFileNeverPushed0001"
"#
    )
}

struct Running {
    broker: Broker,
    tcp: SocketAddr,
    tls: SocketAddr,
    api: SocketAddr,
}

async fn start(dir: &std::path::Path) -> Running {
    let config = Config::parse(&config_text(), "dynreg.toml", dir).expect("a valid configuration");
    let mut broker = Broker::start(config.broker_config()).await.expect("starts");
    let addrs = broker.listener_addrs();
    let api = ApiConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        token: None,
        access_keys: Vec::new().into(),
        console: true,
    };
    let api = broker.serve_http_api(api).await.expect("the API starts");
    Running {
        broker,
        tcp: addrs[0].0,
        tls: addrs[1].0,
        api,
    }
}

async fn tls_client(addr: SocketAddr, trusted: &CertificateDer<'static>) -> TestClient<Tokio> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = Tokio.connect("127.0.0.1", addr.port()).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let stream = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("the TLS handshake succeeds");
    TestClient::over(stream)
}

/// The registration CONNECT of the C SDK 4.x (`authType` and `random` in the client id, the
/// uppercase hex proof as password).
fn registration(device_name: &str, auth_type: &str, product_secret: &str) -> Packet {
    let random = "7c1f0e93";
    let sign = registration_sign(
        product_secret.as_bytes(),
        &DeviceIdentity::new(PK, device_name),
        random,
        SignMethod::HmacSha256,
    )
    .to_ascii_uppercase();
    Packet::from(connect_packet(
        &format!(
            "{device_name}.{PK}|random={random},authType={auth_type},securemode=2,signmethod=hmacsha256|"
        ),
        Some(&format!("{device_name}&{PK}")),
        Some(&sign),
    ))
}

/// Registers and returns the CONNACK code and, when accepted, the pushed topic and JSON.
async fn register(
    addr: SocketAddr,
    cert: &CertificateDer<'static>,
    device_name: &str,
    auth_type: &str,
    product_secret: &str,
) -> (u8, Option<(String, serde_json::Value)>) {
    let mut client = tls_client(addr, cert).await;
    client
        .send(&registration(device_name, auth_type, product_secret))
        .await;
    let Packet::ConnAck(connack) = client.recv().await else {
        panic!("expected CONNACK first");
    };
    if connack.code as u8 != 0 {
        assert!(
            client.expect_closed().await.is_empty(),
            "nothing after a refusal"
        );
        return (connack.code as u8, None);
    }
    let push = client.recv_publish().await;
    let json = serde_json::from_slice(&push.payload).unwrap();
    // As the SDKs do: disconnect on receipt.
    client.disconnect().await;
    (
        connack.code as u8,
        Some((push.topic.as_str().to_owned(), json)),
    )
}

/// A normal login with a device secret over plain TCP; the CONNACK code.
async fn login_with_secret(addr: SocketAddr, device_name: &str, secret: &str) -> u8 {
    login_code::<Tokio>(addr, PK, device_name, secret).await
}

/// The token login of the Python SDK after `regnwl`; the CONNACK code.
async fn login_with_token(
    addr: SocketAddr,
    cert: &CertificateDer<'static>,
    client_id: &str,
    device_name: &str,
    token: &str,
) -> u8 {
    let mut client = tls_client(addr, cert).await;
    let connect = connect_packet(
        &format!("{client_id}|authType=connwl,securemode=-2,_ss=1,ext=3,lan=Python,_v=1.2.13|"),
        Some(&format!("{device_name}&{PK}")),
        Some(token),
    );
    let connack = client.handshake(connect).await;
    if connack.code as u8 == 0 {
        // It is a device with its own topics.
        assert_eq!(
            client
                .subscribe(&[&format!("/sys/{PK}/{device_name}/rrpc/request/+")])
                .await,
            [1]
        );
        client.disconnect().await;
    }
    connack.code as u8
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_register_over_mqtt_and_keep_their_credentials_across_a_restart() {
    let dir = std::env::temp_dir().join(format!("aliot-dynreg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.join("cert.pem"), generated.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), generated.signing_key.serialize_pem()).unwrap();
    let cert = generated.cert.der().clone();

    let running = start(&dir).await;
    // Plain TCP is refused: the answer would be a secret in the clear.
    let mut plain = TestClient::<Tokio>::tcp(running.tcp).await;
    plain
        .send(&registration("factory-0001", "register", PRODUCT_SECRET))
        .await;
    match plain.expect_closed().await.as_slice() {
        [Packet::ConnAck(connack)] => assert_eq!(connack.code as u8, 5),
        other => panic!("expected CONNACK 5 over plain TCP, got {other:?}"),
    }
    // A wrong product secret is refused.
    let (code, _) = register(running.tls, &cert, "factory-0001", "register", "wrong").await;
    assert_eq!(code, 5);

    // `register`: the pre-registered device gets a new secret, twice while it is inactive (the
    // last one counts).
    let (code, first) = register(
        running.tls,
        &cert,
        "factory-0001",
        "register",
        PRODUCT_SECRET,
    )
    .await;
    assert_eq!(code, 0);
    let (topic, first) = first.unwrap();
    assert_eq!(topic, "/ext/register");
    assert_eq!(first["productKey"], PK);
    assert_eq!(first["deviceName"], "factory-0001");
    let (_, second) = register(
        running.tls,
        &cert,
        "factory-0001",
        "register",
        PRODUCT_SECRET,
    )
    .await;
    let secret = second.unwrap().1["deviceSecret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(first["deviceSecret"].as_str().unwrap(), secret);
    assert_eq!(
        login_with_secret(
            running.tcp,
            "factory-0001",
            "SecretFromTheFileNeverPushed0001"
        )
        .await,
        5
    );
    let first_secret = first["deviceSecret"].as_str().unwrap();
    assert_eq!(
        login_with_secret(running.tcp, "factory-0001", first_secret).await,
        5
    );
    assert_eq!(
        login_with_secret(running.tcp, "factory-0001", &secret).await,
        0
    );
    // Activated by that connect: no more registration until ResetThing.
    let (code, _) = register(
        running.tls,
        &cert,
        "factory-0001",
        "register",
        PRODUCT_SECRET,
    )
    .await;
    assert_eq!(code, 5);
    // `register` needs a device registered beforehand.
    let (code, _) = register(
        running.tls,
        &cert,
        "factory-9999",
        "register",
        PRODUCT_SECRET,
    )
    .await;
    assert_eq!(code, 5);

    // `regnwl`: a new device is created and gets a token; `connwl` logs in with it.
    let (code, granted) =
        register(running.tls, &cert, "factory-0002", "regnwl", PRODUCT_SECRET).await;
    assert_eq!(code, 0);
    let (topic, granted) = granted.unwrap();
    assert_eq!(topic, "/ext/regnwl");
    let client_id = granted["clientId"].as_str().unwrap().to_owned();
    let token = granted["deviceToken"].as_str().unwrap().to_owned();
    assert_eq!(granted["deviceName"], "factory-0002");
    assert_eq!(
        login_with_token(
            running.tls,
            &cert,
            &client_id,
            "factory-0002",
            "not the token"
        )
        .await,
        5
    );
    assert_eq!(
        login_with_token(running.tls, &cert, &client_id, "factory-0002", &token).await,
        0
    );

    let metrics = http::<Tokio>(running.api, "GET", "/metrics", None, None).await;
    assert!(
        metrics
            .body
            .contains("aliot_dynamic_registrations_total{outcome=\"registered\"} 3\n"),
        "{}",
        metrics.body
    );
    assert!(
        metrics
            .body
            .contains("aliot_dynamic_registrations_total{outcome=\"refused\"} 3\n")
    );
    running.broker.shutdown().await;

    // After a restart: the registered secret (not the file's) and the token still log in.
    let running = start(&dir).await;
    assert_eq!(
        login_with_secret(running.tcp, "factory-0001", &secret).await,
        0
    );
    assert_eq!(
        login_with_token(running.tls, &cert, &client_id, "factory-0002", &token).await,
        0
    );
    let (code, _) = register(running.tls, &cert, "factory-0002", "regnwl", PRODUCT_SECRET).await;
    assert_eq!(code, 5, "the token's device is activated");
    running.broker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
