//! TLS listeners with a certificate generated in the test, and a rustls client.

mod broker_common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aliot_auth::SecureMode;
use aliot_core::codec::Connect;
use aliot_core::hub::RrpcOutcome;
use aliot_tokio::broker::{ListenerConfig, TlsConfigError, load_tls_config};
use broker_common::*;
use bytes::Bytes;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A directory of its own for one test's files, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("aliot-{name}-{}", std::process::id()));
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

async fn tls_client(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> TestClient {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let stream = tokio::time::timeout(WAIT, TlsConnector::from(config).connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("the handshake succeeds");
    TestClient::over(stream)
}

fn tls_connect(n: u8) -> Connect {
    let (client_id, username, password) = credentials(n, SecureMode::Tls);
    connect_packet(&client_id, Some(&username), Some(&password))
}

#[tokio::test]
async fn devices_connect_over_tls_1_3_and_1_2() {
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
    });
    let (broker, tcp_addr) = start(config).await;
    let addrs = broker.listener_addrs();
    assert_eq!(addrs.len(), 2);
    assert_eq!(addrs[0], (tcp_addr, false));
    let (tls_addr, is_tls) = addrs[1];
    assert!(is_tls);

    // TLS 1.3: a device that answers RRPC.
    let mut device_one = tls_client(
        tls_addr,
        client_config(cert_der.clone(), &[&rustls::version::TLS13]),
    )
    .await;
    assert_eq!(device_one.handshake(tls_connect(1)).await.code as u8, 0);
    device_one
        .subscribe(&["/sys/a1TestPK001/dev-001/rrpc/request/+"])
        .await;
    let responder = answer_rrpc(device_one);
    let (identity, _) = device(1);
    let reply = broker
        .handle()
        .rrpc(
            &identity,
            Bytes::from_static(b"over tls"),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(
        reply.outcome,
        RrpcOutcome::Success(Bytes::from_static(b"pong:over tls"))
    );

    // TLS 1.2, and messages between a TLS and a plain TCP device.
    let mut device_two = tls_client(
        tls_addr,
        client_config(cert_der, &[&rustls::version::TLS12]),
    )
    .await;
    assert_eq!(device_two.handshake(tls_connect(2)).await.code as u8, 0);
    device_two.subscribe(&["/broadcast/a1TestPK001/#"]).await;
    let (mut plain, _) = TestClient::device(tcp_addr, 3, true).await;
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
    tokio::join!(broker.shutdown(), see_close);
    responder.await.unwrap();
}

#[tokio::test]
async fn a_plain_client_on_a_tls_listener_gets_no_mqtt() {
    let dir = TempDir::new("tls-plain");
    let (cert_pem, key_pem, _) = certificate();
    let tls = load_tls_config(
        &dir.write("cert.pem", &cert_pem),
        &dir.write("key.pem", &key_pem),
    )
    .unwrap();
    let mut config = config(false);
    config.listeners[0].tls = Some(tls);
    let (broker, addr) = start(config).await;

    // A plain CONNECT where a ClientHello should be: the handshake fails and the connection
    // ends, with at most a TLS alert and never a CONNACK.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut connect = bytes::BytesMut::new();
    aliot_core::codec::Packet::from(device_connect(1, true))
        .encode(&mut connect)
        .unwrap();
    stream.write_all(&connect).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("the broker ends the connection");
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

#[tokio::test]
async fn loading_names_what_is_wrong_with_the_files() {
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
