//! TLS listeners with a certificate generated in the test, and a rustls client.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use aliot_auth::SecureMode;
use aliot_core::codec::Connect;
use aliot_io::Runtime;
use aliot_io::broker::{ListenerConfig, TlsConfigError, load_tls_config};

use crate::support::*;
use futures_rustls::TlsConnector;
use futures_util::future::join;
use futures_util::io::{AsyncReadExt as _, AsyncWriteExt as _};
use rustls::pki_types::ServerName;

/// A directory of its own for one test's files, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        // Tests run in parallel, the same test on two runtimes among them.
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("aliot-{name}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, file: &str, contents: &str) -> PathBuf {
        let path = self.0.join(file);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A self-signed certificate for `localhost`: (certificate PEM, key PEM, certificate DER).
fn certificate() -> (String, String, rustls::pki_types::CertificateDer<'static>) {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    (
        generated.cert.pem(),
        generated.signing_key.serialize_pem(),
        generated.cert.der().clone(),
    )
}

fn client_config(
    trusted: rustls::pki_types::CertificateDer<'static>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

async fn tls_client<R: Runtime>(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> TestClient<R> {
    let tcp = R::default()
        .connect("127.0.0.1", addr.port())
        .await
        .unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let handshake = TlsConnector::from(config).connect(name, tcp);
    let stream = within::<R, _>("the TLS handshake", handshake)
        .await
        .expect("the handshake succeeds");
    TestClient::<R>::over(stream)
}

fn tls_connect(n: u8) -> Connect {
    let (client_id, username, password) = credentials(n, SecureMode::Tls);
    connect_packet(&client_id, Some(&username), Some(&password))
}

pub async fn devices_connect_over_tls_1_3_and_1_2<R: Runtime>() {
    let dir = TempDir::new("tls");
    let (cert_pem, key_pem, cert_der) = certificate();
    let tls = load_tls_config(
        &dir.write("cert.pem", &cert_pem),
        &dir.write("key.pem", &key_pem),
    )
    .unwrap();
    let mut config = config(false);
    config.listeners.push(ListenerConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        tls: Some(tls),
        websocket: None,
        openssl: None,
    });
    let (broker, tcp_addr) = start::<R>(config).await;
    let addrs = broker.listener_addrs();
    assert_eq!(addrs.len(), 2);
    assert_eq!(addrs[0], (tcp_addr, false));
    let (tls_addr, is_tls) = addrs[1];
    assert!(is_tls);

    // TLS 1.3: a device that answers RRPC.
    let mut device_one = tls_client::<R>(
        tls_addr,
        client_config(cert_der.clone(), &[&rustls::version::TLS13]),
    )
    .await;
    assert_eq!(device_one.handshake(tls_connect(1)).await.code as u8, 0);
    device_one.subscribe(&[&rrpc_requests(1)]).await;
    let responder = answer_rrpc::<R>(device_one);
    rrpc_answered::<R>(&broker.handle(), 1, "over tls", "pong:over tls").await;

    // TLS 1.2, and messages between a TLS and a plain TCP device.
    let mut device_two = tls_client::<R>(
        tls_addr,
        client_config(cert_der, &[&rustls::version::TLS12]),
    )
    .await;
    assert_eq!(device_two.handshake(tls_connect(2)).await.code as u8, 0);
    device_two.subscribe(&["/broadcast/a1TestPK001/#"]).await;
    let (mut plain, _) = TestClient::<R>::device(tcp_addr, 3, true).await;
    plain
        .publish1("/broadcast/a1TestPK001/x", b"from tcp")
        .await;
    let got = device_two.recv_publish().await;
    assert_eq!(&got.payload[..], b"from tcp");
    device_two.puback(&got).await;

    plain.disconnect().await;

    // Shutdown reaches TLS clients as a clean close (close_notify, then the end of stream).
    let see_close = async move {
        assert!(device_two.expect_closed().await.is_empty());
    };
    join(broker.shutdown(), see_close).await;
    responder.await;
}

pub async fn a_plain_client_on_a_tls_listener_gets_no_mqtt<R: Runtime>() {
    let dir = TempDir::new("tls-plain");
    let (cert_pem, key_pem, _) = certificate();
    let tls = load_tls_config(
        &dir.write("cert.pem", &cert_pem),
        &dir.write("key.pem", &key_pem),
    )
    .unwrap();
    let mut config = config(false);
    config.listeners[0].tls = Some(tls);
    let (broker, addr) = start::<R>(config).await;

    // A plain CONNECT where a ClientHello should be: the handshake fails and the connection
    // ends, with at most a TLS alert and never a CONNACK.
    let mut stream = R::default()
        .connect("127.0.0.1", addr.port())
        .await
        .unwrap();
    let mut connect = bytes::BytesMut::new();
    aliot_core::codec::Packet::from(device_connect(1, true))
        .encode(&mut connect)
        .unwrap();
    stream.write_all(&connect).await.unwrap();
    let mut answer = Vec::new();
    let _ = within::<R, _>(
        "the broker ends the connection",
        stream.read_to_end(&mut answer),
    )
    .await;
    assert!(
        answer.is_empty() || answer[0] == 0x15,
        "expected nothing or a TLS alert, got {answer:?}"
    );
    assert_eq!(
        broker.handle().stats().await.counters.connections_accepted,
        0
    );
    broker.shutdown().await;
}

/// Runtime-independent: it runs once, not once per runtime.
#[test]
fn loading_names_what_is_wrong_with_the_files() {
    let dir = TempDir::new("tls-errors");
    let (cert_pem, key_pem, _) = certificate();
    let cert = dir.write("cert.pem", &cert_pem);
    let key = dir.write("key.pem", &key_pem);
    let empty = dir.write("empty.pem", "");
    let missing = dir.0.join("missing.pem");

    assert!(matches!(
        load_tls_config(&missing, &key),
        Err(TlsConfigError::Read { path, .. }) if path == missing
    ));
    assert!(matches!(
        load_tls_config(&empty, &key),
        Err(TlsConfigError::NoCertificate(path)) if path == empty
    ));
    // A certificate where the key should be.
    assert!(matches!(
        load_tls_config(&cert, &cert),
        Err(TlsConfigError::NoPrivateKey(path)) if path == cert
    ));
    let error = load_tls_config(&cert, &empty).unwrap_err();
    assert!(error.to_string().contains("empty.pem"), "{error}");
    assert!(load_tls_config(&cert, &key).is_ok());
}
