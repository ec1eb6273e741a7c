//! MQTT over WebSocket: a broker listener with `websocket` set, and the device client with
//! `with_websocket`, over plain TCP (`ws://`) and TLS (`wss://`). The device publishes,
//! subscribes and answers RRPC as over TCP; what is not a WebSocket upgrade gets an HTTP error
//! saying why, at once; a connection that never upgrades is closed at the connect deadline.

use std::net::SocketAddr;
use std::time::Duration;

use aliot_core::codec::Packet;
use aliot_io::Runtime;
use aliot_io::broker::{Broker, ListenerConfig, WebSocketListener, tls_config};
use aliot_io::client::{Client, ClientOptions, ConnectError, TlsOptions};
use bytes::BytesMut;
use futures_util::io::{AsyncReadExt as _, AsyncWriteExt as _};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::support::*;

/// A broker with one WebSocket listener at `/mqtt` on a free loopback port, over TLS with a
/// self-signed certificate for `localhost` when `tls`; the certificate's PEM.
async fn websocket_broker<R: Runtime>(
    tls: bool,
    connect_timeout: Duration,
) -> (Broker<R>, SocketAddr, String) {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        generated.signing_key.serialize_der(),
    ));
    let mut config = config(false);
    config.server.connect_timeout = connect_timeout;
    config.listeners = vec![ListenerConfig {
        tls: tls.then(|| tls_config(vec![generated.cert.der().clone()], key).unwrap()),
        websocket: Some(WebSocketListener::default()),
        ..ListenerConfig::tcp("127.0.0.1:0".parse().unwrap())
    }];
    let broker = Broker::<R>::start(config).await.unwrap();
    let bound = broker.listeners()[0].clone();
    assert_eq!(bound.tls, tls);
    assert_eq!(bound.websocket_path.as_deref(), Some("/mqtt"));
    let scheme = if tls { "wss" } else { "ws" };
    assert_eq!(bound.url(), format!("{scheme}://{}/mqtt", bound.addr));
    (broker, bound.addr, generated.cert.pem())
}

/// Device `n` over WebSocket at `path` to `addr`, over TLS trusting `ca_pem` when given.
fn websocket_options(addr: SocketAddr, n: u8, path: &str, ca_pem: Option<&str>) -> ClientOptions {
    let options = device_options(addr, n).with_websocket(path);
    match ca_pem {
        None => options,
        Some(ca_pem) => options.with_tls(
            TlsOptions::only_ca_pem(ca_pem.as_bytes())
                .unwrap()
                .with_server_name("localhost"),
        ),
    }
}

pub async fn a_device_works_over_websocket<R: Runtime>() {
    let (broker, addr, _) = websocket_broker::<R>(false, Duration::from_secs(10)).await;
    let client = within::<R, _>(
        "the upgrade and CONNECT",
        Client::<R>::connect(websocket_options(addr, 1, "/mqtt", None)),
    )
    .await
    .expect("the upgrade and CONNECT succeed");
    // Longer than a WebSocket message (64 KiB): the packet spans two, both ways.
    device_round_trip(&broker, client, "ws", &[7u8; 100_000]).await;
    broker.shutdown().await;
}

pub async fn a_device_works_over_websocket_with_tls<R: Runtime>() {
    let (broker, addr, ca_pem) = websocket_broker::<R>(true, Duration::from_secs(10)).await;
    let client = within::<R, _>(
        "the handshake, upgrade and CONNECT",
        Client::<R>::connect(websocket_options(addr, 1, "/mqtt", Some(&ca_pem))),
    )
    .await
    .expect("the handshake, upgrade and CONNECT succeed");
    device_round_trip(&broker, client, "wss", b"sealed").await;
    broker.shutdown().await;
}

pub async fn what_is_not_a_websocket_upgrade_gets_an_http_error<R: Runtime>() {
    let (broker, addr, _) = websocket_broker::<R>(false, Duration::from_secs(10)).await;

    // A plain HTTP request, as a browser or curl makes it.
    let plain = http::<R>(addr, "GET", "/mqtt", None, None).await;
    assert_eq!(plain.status, 400);
    assert!(plain.body.contains("not a WebSocket upgrade"), "{plain:?}");

    // MQTT itself: a CONNECT on the WebSocket port is answered, not left hanging.
    let mut stream = R::default()
        .connect("127.0.0.1", addr.port())
        .await
        .unwrap();
    let mut connect = BytesMut::new();
    Packet::from(device_connect(1, true))
        .encode(&mut connect)
        .unwrap();
    stream.write_all(&connect).await.unwrap();
    let mut answer = Vec::new();
    within::<R, _>("the answer to a CONNECT", stream.read_to_end(&mut answer))
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );

    // The device client at another path learns the status and why.
    let error = within::<R, _>(
        "the refusal",
        Client::<R>::connect(websocket_options(addr, 1, "/ws", None)),
    )
    .await
    .expect_err("no WebSocket at /ws");
    match &error {
        ConnectError::WebSocketUpgrade { url, reason } => {
            assert_eq!(url, &format!("ws://{addr}/ws"));
            assert!(
                reason.contains("404") && reason.contains("/mqtt"),
                "{reason}"
            );
        }
        other => panic!("expected a WebSocket upgrade error, got {other:?}"),
    }
    assert_eq!(
        broker.handle().stats().await.counters.connections_accepted,
        0,
        "no MQTT connection was made"
    );
    broker.shutdown().await;
}

pub async fn a_connection_that_never_upgrades_is_closed_at_the_connect_deadline<R: Runtime>() {
    let (broker, addr, _) = websocket_broker::<R>(false, Duration::from_millis(300)).await;
    let mut stream = R::default()
        .connect("127.0.0.1", addr.port())
        .await
        .unwrap();
    // Half a request head, then nothing.
    stream.write_all(b"GET /mqtt HTTP/1.1\r\n").await.unwrap();
    let mut rest = Vec::new();
    within::<R, _>("the close", stream.read_to_end(&mut rest))
        .await
        .unwrap();
    assert!(rest.is_empty(), "nothing is answered to half a request");
    broker.shutdown().await;
}
