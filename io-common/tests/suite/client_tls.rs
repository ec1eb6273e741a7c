//! The device client over TLS to a broker listener with an rcgen certificate: the device signs
//! with `securemode=2`, publishes, subscribes and answers RRPC; an untrusted certificate or a
//! name mismatch fails the handshake with a clear error.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aliot_core::PlatformAuthenticator;
use aliot_io::Runtime;
use aliot_io::broker::{Broker, BrokerConfig, ListenerConfig, tls_config};
use aliot_io::client::{Client, ClientOptions, ConnectError, TlsOptions};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::support::*;

/// A self-signed certificate for `localhost`: its PEM, and a broker with one TLS listener
/// serving it on a free loopback port.
async fn tls_broker<R: Runtime>() -> (Broker<R>, SocketAddr, String) {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        generated.signing_key.serialize_der(),
    ));
    let tls = tls_config(vec![generated.cert.der().clone()], key).unwrap();
    let authenticator = PlatformAuthenticator::new(registry());
    let broker = Broker::<R>::start(BrokerConfig {
        listeners: vec![ListenerConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            tls: Some(tls),
            websocket: None,
            openssl: None,
        }],
        server: Default::default(),
        hub: Default::default(),
        authenticator: Arc::new(authenticator),
        max_connections: BrokerConfig::DEFAULT_MAX_CONNECTIONS,
        store: None,
        registry: None,
        cluster: None,
    })
    .await
    .unwrap();
    let (addr, is_tls) = broker.listener_addrs()[0];
    assert!(is_tls);
    (broker, addr, generated.cert.pem())
}

/// Device `n` over TLS to `addr`, trusting only `ca_pem`, checking the name `localhost`.
fn tls_options(addr: SocketAddr, n: u8, ca_pem: &str) -> ClientOptions {
    let tls = TlsOptions::only_ca_pem(ca_pem.as_bytes())
        .unwrap()
        .with_server_name("localhost");
    device_options(addr, n).with_tls(tls)
}

pub async fn a_device_works_over_tls<R: Runtime>() {
    let (broker, addr, ca_pem) = tls_broker::<R>().await;
    let client = within::<R, _>(
        "the TLS connect",
        Client::<R>::connect(tls_options(addr, 1, &ca_pem)),
    )
    .await
    .expect("the handshake and CONNECT succeed");
    device_round_trip(&broker, client, "tls", b"sealed").await;
    broker.shutdown().await;
}

pub async fn an_untrusted_certificate_fails_the_handshake<R: Runtime>() {
    let (broker, addr, _) = tls_broker::<R>().await;
    let other_ca = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .unwrap()
        .cert
        .pem();
    let error = within::<R, _>(
        "the refusal",
        Client::<R>::connect(tls_options(addr, 1, &other_ca)),
    )
    .await
    .expect_err("the broker's certificate is not trusted");
    match &error {
        ConnectError::TlsHandshake { address, .. } => assert_eq!(address, &addr.to_string()),
        other => panic!("expected a handshake error, got {other:?}"),
    }
    assert_eq!(
        broker.handle().stats().await.counters.connections_accepted,
        0
    );
    broker.shutdown().await;
}

pub async fn a_name_mismatch_fails_the_handshake<R: Runtime>() {
    let (broker, addr, ca_pem) = tls_broker::<R>().await;
    let mut options = tls_options(addr, 1, &ca_pem);
    if let Some(tls) = options.tls.as_mut() {
        tls.server_name = Some("broker.example".to_owned());
    }
    let error = Client::<R>::connect(options).await.expect_err("wrong name");
    assert!(
        matches!(error, ConnectError::TlsHandshake { .. }),
        "{error:?}"
    );
    broker.shutdown().await;
}

pub async fn plain_tcp_to_a_tls_listener_gets_no_connack<R: Runtime>() {
    let (broker, addr, _) = tls_broker::<R>().await;
    let mut options = device_options(addr, 1);
    options.connect_timeout = Duration::from_secs(2);
    let error = within::<R, _>("the failure", Client::<R>::connect(options))
        .await
        .expect_err("a TLS listener does not speak plain MQTT");
    assert!(matches!(error, ConnectError::BeforeConnAck(_)), "{error:?}");
    broker.shutdown().await;
}
