//! Connecting the device client to the broker over loopback: platform credentials, refusals
//! with a clear error, ready credentials in open mode, and a clean DISCONNECT when the client
//! goes away.

use std::time::{Duration, Instant};

use aliot_auth::DeviceSecret;
use aliot_core::client::Credentials;
use aliot_core::codec::{ConnectReturnCode, Packet, QoS};
use aliot_io::Runtime;
use aliot_io::client::{Client, ClientOptions, ConnectError, Login, RequestError, TlsOptions};
use aliot_io::runtime::timeout_at;
use futures_util::future::{Either, select};

use crate::support::*;

pub async fn a_device_connects_with_its_signed_credentials<R: Runtime>() {
    let (broker, addr) = start::<R>(config(false)).await;
    let client = within::<R, _>("connect", Client::<R>::connect(device_options(addr, 1)))
        .await
        .expect("the broker accepts the device");
    let stats = wait_for_stats::<R>(&broker.handle(), "the session", |stats| {
        stats.connections == 1
    })
    .await;
    assert_eq!(stats.counters.connections_accepted, 1);

    let update = topic(&user_update(1));
    let id = within::<R, _>("PUBACK", client.publish(update, "{}", QoS::AtLeastOnce))
        .await
        .unwrap();
    assert!(id.is_some(), "a QoS 1 publish returns its packet id");
    client.disconnect().await;
    broker.shutdown().await;
}

pub async fn a_wrong_secret_is_refused_as_not_authorized<R: Runtime>() {
    let (broker, addr) = start::<R>(config(false)).await;
    let (identity, _) = device(1);
    let mut options = device_options(addr, 1);
    options.login = Login::device(identity, DeviceSecret::new("not-the-secret"));
    let error = within::<R, _>("refusal", Client::<R>::connect(options))
        .await
        .expect_err("a wrong signature is refused");
    assert!(
        matches!(
            error,
            ConnectError::Refused(ConnectReturnCode::NotAuthorized)
        ),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .starts_with("the broker refused the connection: "),
        "{error}"
    );
    let stats = broker.handle().stats().await;
    assert_eq!(stats.counters.connections_refused[5], 1);
    assert_eq!(stats.connections, 0);
    broker.shutdown().await;
}

pub async fn an_unknown_device_is_refused<R: Runtime>() {
    let (broker, addr) = start::<R>(config(false)).await;
    let error = Client::<R>::connect(device_options(addr, 9))
        .await
        .expect_err("device 9 is not registered");
    assert!(
        matches!(
            error,
            ConnectError::Refused(ConnectReturnCode::NotAuthorized)
        ),
        "{error:?}"
    );
    broker.shutdown().await;
}

pub async fn ready_credentials_connect_to_a_broker_in_open_mode<R: Runtime>() {
    let (broker, addr) = start::<R>(config(true)).await;
    let credentials = Credentials::anonymous("generic-tool").unwrap();
    let options = ClientOptions::new("127.0.0.1", addr.port(), Login::credentials(credentials));
    let client = within::<R, _>("connect", Client::<R>::connect(options))
        .await
        .unwrap();
    let codes = client
        .subscribe(&[(filter("anything/#"), QoS::AtMostOnce)])
        .await
        .unwrap();
    assert_eq!(codes.len(), 1);
    drop(client);
    broker.shutdown().await;
}

pub async fn ready_credentials_without_open_mode_are_refused<R: Runtime>() {
    let (broker, addr) = start::<R>(config(false)).await;
    let credentials = Credentials::anonymous("generic-tool").unwrap();
    let options = ClientOptions::new("127.0.0.1", addr.port(), Login::credentials(credentials));
    let error = Client::<R>::connect(options)
        .await
        .expect_err("no credentials");
    assert!(matches!(error, ConnectError::Refused(_)), "{error:?}");
    broker.shutdown().await;
}

pub async fn nothing_listening_is_an_io_error_naming_the_address<R: Runtime>() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let error = Client::<R>::connect(device_options(addr, 1))
        .await
        .expect_err("nothing listens there");
    match &error {
        ConnectError::Io { address, .. } => assert_eq!(address, &addr.to_string()),
        other => panic!("expected an I/O error, got {other:?}"),
    }
    assert!(error.to_string().contains(&addr.to_string()), "{error}");
}

pub async fn an_invalid_tls_server_name_is_reported_before_dialling<R: Runtime>() {
    let addr = "127.0.0.1:9".parse().unwrap();
    let options =
        device_options(addr, 1).with_tls(TlsOptions::new().with_server_name("not a host name!"));
    let error = Client::<R>::connect(options).await.expect_err("bad name");
    assert!(
        matches!(&error, ConnectError::InvalidServerName { name } if name == "not a host name!"),
        "{error:?}"
    );
}

pub async fn an_invalid_client_id_is_reported_before_dialling<R: Runtime>() {
    let addr = "127.0.0.1:9".parse().unwrap();
    let (identity, secret) = device(1);
    let mut options = device_options(addr, 1);
    options.login = Login::Device {
        identity,
        secret,
        sign_method: aliot_auth::SignMethod::HmacSha1,
        client_id: Some("has|a bar".to_owned()),
    };
    let error = Client::<R>::connect(options)
        .await
        .expect_err("bad client id");
    assert!(matches!(error, ConnectError::Sign(_)), "{error:?}");
}

pub async fn dropping_the_client_sends_disconnect<R: Runtime>() {
    let (broker, addr) = start::<R>(config(false)).await;
    let handle = broker.handle();
    let client = Client::<R>::connect(device_options(addr, 1)).await.unwrap();
    let clone = client.clone();
    drop(client);
    // A clone keeps the connection.
    clone
        .subscribe(&[(filter(&user_get(1)), QoS::AtLeastOnce)])
        .await
        .unwrap();
    drop(clone);
    let stats = wait_for_stats::<R>(&handle, "the close", |stats| stats.connections == 0).await;
    assert_eq!(stats.counters.closed.client_disconnected, 1);
    assert_eq!(stats.counters.closed.transport_closed, 0);
    broker.shutdown().await;
}

pub async fn disconnect_stops_every_clone<R: Runtime>() {
    let (broker, addr) = start::<R>(config(false)).await;
    let handle = broker.handle();
    let client = Client::<R>::connect(device_options(addr, 2)).await.unwrap();
    let clone = client.clone();
    let messages = clone.messages();
    client.disconnect().await;
    assert!(clone.is_closed());
    let update = topic(&user_update(2));
    assert_eq!(
        clone.publish(update, "late", QoS::AtMostOnce).await,
        Err(RequestError::Closed)
    );
    assert_eq!(messages.recv().await, None, "no more messages once stopped");
    let stats = wait_for_stats::<R>(&handle, "the close", |stats| stats.connections == 0).await;
    assert_eq!(stats.counters.closed.client_disconnected, 1);
    broker.shutdown().await;
}

pub async fn a_connect_dropped_before_its_connack_stops_its_driver<R: Runtime>() {
    // A stand-in broker that reads the CONNECT and never answers keeps the connect pending
    // for as long as the test needs: no race with a real broker's CONNACK.
    let runtime = R::default();
    let listener = runtime.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = runtime.local_addr(&listener).unwrap();
    let mut options = device_options(addr, 3);
    // Only the driver stopping can close the socket within the test's wait.
    options.connect_timeout = WAIT * 6;
    let connecting = Box::pin(Client::<R>::connect(options));
    let broker_side = Box::pin(async {
        let (stream, _) = runtime.accept(&listener).await.expect("the client dials");
        let mut peer = TestClient::<R>::over(stream);
        let packet = peer.next_packet().await;
        assert!(matches!(packet, Some(Packet::Connect(_))), "{packet:?}");
        peer
    });
    let mut peer = match within::<R, _>("the CONNECT", select(connecting, broker_side)).await {
        Either::Left((result, _)) => {
            panic!(
                "the connect ended without a CONNACK: ok = {}",
                result.is_ok()
            )
        }
        Either::Right((peer, connecting)) => {
            // The caller gives up while the driver waits for the CONNACK.
            drop(connecting);
            peer
        }
    };
    // The driver says goodbye and closes rather than wait for the CONNACK: a broker that did
    // accept the CONNECT ends the session cleanly.
    let before_close = peer.expect_closed().await;
    assert!(
        matches!(before_close[..], [Packet::Disconnect]),
        "{before_close:?}"
    );
    // A driver that lived on would dial again (the test backoff retries within milliseconds).
    let redial = timeout_at(
        &runtime,
        Instant::now() + Duration::from_millis(500),
        runtime.accept(&listener),
    )
    .await;
    assert!(redial.is_none(), "no dial after the caller is gone");
}
