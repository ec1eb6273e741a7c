//! TLS-PSK, the platform's "TCP plus symmetric encryption" level, between the device client
//! (`with_tls_psk`) and a broker listener through OpenSSL: the device connects with no
//! certificate, signs `securemode=2`, publishes, subscribes and answers RRPC; an unknown
//! device is refused in the handshake and counted; a wrong secret fails the handshake.

use std::net::SocketAddr;

use aliot_auth::{DeviceIdentity, DeviceSecret};
use aliot_io::Runtime;
use aliot_io::broker::{Broker, ListenerConfig, OpenSslTls};
use aliot_io::client::{Client, ClientOptions, ConnectError, Login};

use crate::support::*;

/// A broker with one TLS-PSK listener on a free loopback port.
async fn psk_broker<R: Runtime>() -> (Broker<R>, SocketAddr) {
    let mut config = config(false);
    config.listeners = vec![ListenerConfig {
        openssl: Some(OpenSslTls::Psk),
        ..ListenerConfig::tcp("127.0.0.1:0".parse().unwrap())
    }];
    let broker = Broker::<R>::start(config).await.unwrap();
    let bound = broker.listeners()[0].clone();
    assert!(bound.tls && bound.psk);
    (broker, bound.addr)
}

/// A device's options over TLS-PSK to `addr`.
fn psk_options(addr: SocketAddr, identity: DeviceIdentity, secret: DeviceSecret) -> ClientOptions {
    let mut options = ClientOptions::new(
        addr.ip().to_string(),
        addr.port(),
        Login::device(identity, secret),
    )
    .with_tls_psk();
    options.backoff = quick_backoff();
    options
}

pub async fn a_device_works_over_tls_psk<R: Runtime>() {
    let (broker, addr) = psk_broker::<R>().await;
    let (identity, secret) = device(1);
    let client = within::<R, _>(
        "the PSK handshake and CONNECT",
        Client::<R>::connect(psk_options(addr, identity, secret)),
    )
    .await
    .expect("the handshake and CONNECT succeed");
    device_round_trip(&broker, client, "psk", b"no certificate").await;
    assert_eq!(broker.handle().transport_stats().psk_identities_refused, 0);
    broker.shutdown().await;
}

pub async fn an_unknown_device_is_refused_in_the_handshake_and_counted<R: Runtime>() {
    let (broker, addr) = psk_broker::<R>().await;
    let stranger = DeviceIdentity::new(PRODUCT, "dev-999");
    let error = within::<R, _>(
        "the refusal",
        Client::<R>::connect(psk_options(addr, stranger, DeviceSecret::new("guess"))),
    )
    .await
    .expect_err("no such device");
    assert!(
        matches!(error, ConnectError::TlsHandshake { .. }),
        "{error:?}"
    );
    let stats = broker.handle().transport_stats();
    assert_eq!(stats.psk_identities_refused, 1);
    assert_eq!(
        broker.handle().stats().await.counters.connections_accepted,
        0
    );
    broker.shutdown().await;
}

pub async fn a_wrong_secret_fails_the_handshake<R: Runtime>() {
    let (broker, addr) = psk_broker::<R>().await;
    let (identity, _) = device(1);
    let error = within::<R, _>(
        "the refusal",
        Client::<R>::connect(psk_options(
            addr,
            identity,
            DeviceSecret::new("not-its-secret"),
        )),
    )
    .await
    .expect_err("the keys differ");
    assert!(
        matches!(error, ConnectError::TlsHandshake { .. }),
        "{error:?}"
    );
    // The identity was a registered device's: refused by its key, not its identity.
    assert_eq!(broker.handle().transport_stats().psk_identities_refused, 0);
    assert_eq!(
        broker.handle().stats().await.counters.connections_accepted,
        0
    );
    broker.shutdown().await;
}

pub async fn tls_psk_needs_a_device_login<R: Runtime>() {
    let options = ClientOptions::new(
        "127.0.0.1",
        1,
        Login::Credentials {
            credentials: aliot_core::client::Credentials::anonymous("id").unwrap(),
            identity: None,
        },
    )
    .with_tls_psk();
    let error = Client::<R>::connect(options).await.expect_err("no secret");
    assert!(
        matches!(error, ConnectError::PskUnavailable(_)),
        "{error:?}"
    );
}
