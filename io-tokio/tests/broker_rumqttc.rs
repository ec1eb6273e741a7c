//! A third-party client, `rumqttc`, against the broker: in open mode as a generic MQTT tool,
//! and with platform credentials as a device.

// The support module of the shared adapter suite, here on tokio only.
#[path = "../../io-common/tests/suite/support.rs"]
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use aliot_auth::SecureMode;
use aliot_core::codec::QoS as CoreQoS;
use aliot_core::hub::RrpcOutcome;
use aliot_tokio::Tokio;
use aliot_topic::{TopicLimits, TopicName};
use bytes::Bytes;
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Packet, QoS,
};
use support::*;
use tokio::sync::mpsc;

/// A rumqttc client whose event loop runs in its own task, its events on a channel.
struct Rumqttc {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Event, ConnectionError>>,
}

impl Rumqttc {
    fn start(options: MqttOptions) -> Self {
        let (client, eventloop) = AsyncClient::new(options, 16);
        let (events_tx, events) = mpsc::unbounded_channel();
        tokio::spawn(drive(eventloop, events_tx));
        Rumqttc { client, events }
    }

    /// Waits for the first event `pick` takes, failing the test on a connection error or after
    /// [`WAIT`].
    async fn wait_for<T>(&mut self, what: &str, mut pick: impl FnMut(&Packet) -> Option<T>) -> T {
        let found = tokio::time::timeout(WAIT, async {
            loop {
                match self.events.recv().await {
                    Some(Ok(Event::Incoming(packet))) => {
                        if let Some(found) = pick(&packet) {
                            return found;
                        }
                    }
                    Some(Ok(Event::Outgoing(_))) => {}
                    Some(Err(error)) => {
                        panic!("connection error while waiting for {what}: {error}")
                    }
                    None => panic!("the event loop ended while waiting for {what}"),
                }
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("no {what} within {WAIT:?}"))
    }

    /// The next connection error (the broker refused or closed).
    async fn wait_for_error(&mut self) -> ConnectionError {
        let found = tokio::time::timeout(WAIT, async {
            loop {
                match self.events.recv().await {
                    Some(Ok(_)) => {}
                    Some(Err(error)) => return error,
                    None => panic!("the event loop ended without an error"),
                }
            }
        })
        .await;
        found.expect("an error in time")
    }

    async fn publish_received(&mut self, topic: &str) -> Bytes {
        self.wait_for(&format!("a PUBLISH on {topic}"), |packet| match packet {
            Packet::Publish(publish) if publish.topic == topic => Some(publish.payload.clone()),
            _ => None,
        })
        .await
    }
}

/// Polls the event loop, forwarding every event; stops at the first error.
async fn drive(
    mut eventloop: EventLoop,
    events: mpsc::UnboundedSender<Result<Event, ConnectionError>>,
) {
    loop {
        let event = eventloop.poll().await;
        let failed = event.is_err();
        if events.send(event).is_err() || failed {
            return;
        }
    }
}

fn options(client_id: &str, addr: SocketAddr) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    options
}

#[tokio::test]
async fn rumqttc_in_open_mode() {
    let (broker, addr) = start::<Tokio>(config(true)).await;
    let mut client = Rumqttc::start(options("rumqttc-tool", addr));
    let code = client
        .wait_for("CONNACK", |packet| match packet {
            Packet::ConnAck(connack) => Some(connack.code),
            _ => None,
        })
        .await;
    assert_eq!(code, ConnectReturnCode::Success);
    client
        .client
        .subscribe("tools/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    let granted = client
        .wait_for("SUBACK", |packet| match packet {
            Packet::SubAck(suback) => Some(suback.return_codes.clone()),
            _ => None,
        })
        .await;
    assert_eq!(
        granted,
        [rumqttc::SubscribeReasonCode::Success(QoS::AtLeastOnce)]
    );

    // Its own message comes back at QoS 1.
    client
        .client
        .publish("tools/echo", QoS::AtLeastOnce, false, "echo")
        .await
        .unwrap();
    assert_eq!(&client.publish_received("tools/echo").await[..], b"echo");

    // And a server-side publish reaches it.
    let topic = TopicName::new("tools/server", &TopicLimits::default()).unwrap();
    let reached = broker
        .handle()
        .publish(
            topic,
            Bytes::from_static(b"from server"),
            CoreQoS::AtMostOnce,
        )
        .await
        .unwrap()
        .reached;
    assert_eq!(reached, 1);
    assert_eq!(
        &client.publish_received("tools/server").await[..],
        b"from server"
    );

    client.client.disconnect().await.unwrap();
    wait_for_stats::<Tokio>(&broker.handle(), "the DISCONNECT", |s| {
        s.counters.closed.client_disconnected == 1
    })
    .await;
    broker.shutdown().await;
}

/// On tokio's multi-thread scheduler the hub hands PUBACKs out before deliveries (the last
/// task woken runs first there): QoS 1 from one client to another still arrives whole and in
/// order, and every PUBLISH is acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_qos1_between_two_clients_on_the_multi_thread_scheduler() {
    const MESSAGES: usize = 200;
    let (broker, addr) = start::<Tokio>(config(true)).await;
    let mut subscriber = Rumqttc::start(options("rumqttc-sub", addr));
    subscriber
        .client
        .subscribe("flow/+", QoS::AtLeastOnce)
        .await
        .unwrap();
    subscriber
        .wait_for("SUBACK", |packet| match packet {
            Packet::SubAck(_) => Some(()),
            _ => None,
        })
        .await;
    let mut publisher = Rumqttc::start(options("rumqttc-pub", addr));
    for i in 0..MESSAGES {
        publisher
            .client
            .publish("flow/n", QoS::AtLeastOnce, false, i.to_string())
            .await
            .unwrap();
    }
    let mut received = Vec::with_capacity(MESSAGES);
    while received.len() < MESSAGES {
        let payload = subscriber.publish_received("flow/n").await;
        received.push(String::from_utf8(payload.to_vec()).unwrap());
    }
    let expected: Vec<String> = (0..MESSAGES).map(|i| i.to_string()).collect();
    assert_eq!(received, expected);
    let mut acked = 0;
    while acked < MESSAGES {
        publisher
            .wait_for("a PUBACK", |packet| match packet {
                Packet::PubAck(_) => Some(()),
                _ => None,
            })
            .await;
        acked += 1;
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn rumqttc_as_a_device_with_platform_credentials() {
    let (broker, addr) = start::<Tokio>(config(false)).await;
    let (client_id, username, password) = credentials(1, SecureMode::Tcp);
    let mut device_options = options(&client_id, addr);
    device_options.set_credentials(username, password);
    let mut client = Rumqttc::start(device_options);
    let code = client
        .wait_for("CONNACK", |packet| match packet {
            Packet::ConnAck(connack) => Some(connack.code),
            _ => None,
        })
        .await;
    assert_eq!(code, ConnectReturnCode::Success);
    client
        .client
        .subscribe("/sys/a1TestPK001/dev-001/rrpc/request/+", QoS::AtMostOnce)
        .await
        .unwrap();
    client
        .wait_for("SUBACK", |packet| {
            matches!(packet, Packet::SubAck(_)).then_some(())
        })
        .await;

    // The broker calls the device; rumqttc answers on the response topic.
    let handle = broker.handle();
    let (identity, _) = device(1);
    let call = tokio::spawn(async move {
        handle
            .rrpc(
                &identity,
                Bytes::from_static(b"status?"),
                Duration::from_secs(5),
            )
            .await
    });
    let (request_topic, request) = client
        .wait_for("the RRPC request", |packet| match packet {
            Packet::Publish(publish) => Some((publish.topic.clone(), publish.payload.clone())),
            _ => None,
        })
        .await;
    assert_eq!(&request[..], b"status?");
    let response_topic = request_topic.replacen("/rrpc/request/", "/rrpc/response/", 1);
    client
        .client
        .publish(response_topic, QoS::AtMostOnce, false, "ok")
        .await
        .unwrap();
    let reply = call.await.unwrap().unwrap();
    assert_eq!(
        reply.outcome,
        RrpcOutcome::Success(Bytes::from_static(b"ok"))
    );
    assert_eq!(
        request_topic,
        format!("/sys/a1TestPK001/dev-001/rrpc/request/{}", reply.message_id)
    );

    // Without credentials, the same tool is refused: this broker is not in open mode.
    let mut anonymous = Rumqttc::start(options("rumqttc-tool", addr));
    match anonymous.wait_for_error().await {
        ConnectionError::ConnectionRefused(code) => {
            assert_eq!(code, ConnectReturnCode::BadClientId)
        }
        other => panic!("expected a refusal, got {other}"),
    }

    // Shutdown reaches it as the end of the connection.
    let see_close = async move {
        let error = client.wait_for_error().await;
        assert!(
            matches!(
                error,
                ConnectionError::Io(_) | ConnectionError::MqttState(_)
            ),
            "{error}"
        );
    };
    tokio::join!(broker.shutdown(), see_close);
}
