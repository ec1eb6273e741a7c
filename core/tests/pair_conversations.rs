//! Both ends of the wire in memory: real device clients (`client::Connection`) talking to the
//! broker core (server connections and the hub) through byte pipes, one manual clock for all.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use aliot_auth::{SecureMode, SignMethod};
use aliot_core::Instant;
use aliot_core::client::{self, ClientConfig, Credentials, DisconnectReason};
use aliot_core::codec::{QoS, SubAckReturnCode};
use aliot_core::hub::{ConnId, RrpcOutcome};
use aliot_topic::{TopicFilter, TopicName};
use bytes::{Bytes, BytesMut};
use support::*;

/// One device: its client state machine and the broker connection its transport reaches.
struct Device {
    client: client::Connection,
    link: Option<ConnId>,
    /// Whether bytes move on the link (false: the network silently drops everything).
    reachable: bool,
    events: Vec<client::Event>,
}

struct Pair {
    broker: Broker,
    devices: BTreeMap<&'static str, Device>,
}

fn topic(s: &str) -> TopicName {
    TopicName::new(s, &Default::default()).unwrap()
}

fn filter(s: &str) -> TopicFilter {
    TopicFilter::new(s, &Default::default()).unwrap()
}

impl Pair {
    fn new(devices: &[&'static str]) -> Self {
        Pair {
            broker: Broker::new(devices),
            devices: BTreeMap::new(),
        }
    }

    /// A device client with platform credentials, not yet connected.
    fn device(&mut self, name: &'static str, clean_session: bool) {
        let credentials = aliot_auth::sign(
            &identity(name),
            &secret(name),
            SignMethod::HmacSha1,
            &format!("{PK}&{name}"),
            Some("1700000000000"),
            SecureMode::Tcp,
        );
        let mut config = ClientConfig::new(Credentials::try_from(credentials).unwrap())
            .with_identity(identity(name));
        config.clean_session = clean_session;
        config.keep_alive_secs = 60;
        let device = Device {
            client: client::Connection::new(config),
            link: None,
            reachable: true,
            events: Vec::new(),
        };
        self.devices.insert(name, device);
    }

    /// Opens a transport for the device and runs the handshake.
    fn dial(&mut self, name: &str) {
        let conn = self.broker.accept();
        let now = self.broker.now;
        let device = self.devices.get_mut(name).unwrap();
        device.link = Some(conn);
        device.reachable = true;
        device.client.connect(now);
        self.shuttle();
    }

    /// The transport breaks; both ends notice.
    fn cut(&mut self, name: &str) {
        let now = self.broker.now;
        let device = self.devices.get_mut(name).unwrap();
        if let Some(conn) = device.link.take() {
            device.client.handle_transport_closed(now);
            self.broker.drop_transport(conn);
        }
        self.shuttle();
    }

    /// Moves bytes both ways and takes events until nothing moves.
    fn shuttle(&mut self) {
        loop {
            let mut moved = false;
            let now = self.broker.now;
            for device in self.devices.values_mut() {
                let Some(conn) = device.link else { continue };
                let mut up = BytesMut::new();
                device.client.poll_transmit(&mut up);
                if !up.is_empty() {
                    moved = true;
                    if device.reachable {
                        self.broker.input(conn, &up);
                    }
                }
                let mut down = BytesMut::new();
                if let Some(server) = self.broker.conns.get_mut(&conn) {
                    server.poll_transmit(&mut down);
                }
                if !down.is_empty() {
                    moved = true;
                    if device.reachable {
                        device.client.handle_input(now, &down);
                    }
                }
                if self.broker.is_closed(conn) && device.reachable && down.is_empty() {
                    // The broker closed the transport: the device sees the end of the stream.
                    device.client.handle_transport_closed(now);
                    device.link = None;
                    moved = true;
                }
                while let Some(event) = device.client.poll_event() {
                    moved = true;
                    device.events.push(event);
                }
            }
            self.broker.pump();
            if !moved {
                break;
            }
        }
    }

    /// Moves the clock, firing every deadline of both ends in order.
    fn advance(&mut self, by: Duration) {
        let until = self.broker.now + by;
        loop {
            let next = self
                .devices
                .values()
                .filter_map(|d| d.client.poll_timeout())
                .chain(self.broker.conns.values().filter_map(|c| c.poll_timeout()))
                .chain(self.broker.hub.poll_timeout())
                .filter(|t| *t <= until)
                .min();
            let Some(at) = next else { break };
            let step = at.saturating_duration_since(self.broker.now);
            self.broker.advance(step);
            let now = self.broker.now;
            for device in self.devices.values_mut() {
                device.client.handle_timeout(now);
            }
            self.shuttle();
        }
        let rest = until.saturating_duration_since(self.broker.now);
        self.broker.advance(rest);
        self.shuttle();
    }

    fn client(&mut self, name: &str) -> &mut client::Connection {
        &mut self.devices.get_mut(name).unwrap().client
    }

    fn now(&self) -> Instant {
        self.broker.now
    }

    fn take_events(&mut self, name: &str) -> Vec<client::Event> {
        std::mem::take(&mut self.devices.get_mut(name).unwrap().events)
    }

    fn messages(&mut self, name: &str) -> Vec<(String, Bytes, bool)> {
        self.take_events(name)
            .into_iter()
            .filter_map(|e| match e {
                client::Event::Message { message, dup } => {
                    Some((message.topic.as_str().to_string(), message.payload, dup))
                }
                _ => None,
            })
            .collect()
    }
}

fn connected(events: &[client::Event]) -> Option<bool> {
    events.iter().find_map(|e| match e {
        client::Event::Connected { session_present } => Some(*session_present),
        _ => None,
    })
}

#[test]
fn a_device_publishes_qos_1_and_another_receives_it_with_puback_on_both_legs() {
    let mut pair = Pair::new(&["sensor", "display"]);
    pair.device("sensor", true);
    pair.device("display", true);
    pair.dial("sensor");
    pair.dial("display");
    assert_eq!(connected(&pair.take_events("sensor")), Some(false));
    assert_eq!(connected(&pair.take_events("display")), Some(false));

    let now = pair.now();
    let sub = pair
        .client("display")
        .subscribe(
            &[(filter("/broadcast/a1TestProd/#"), QoS::AtLeastOnce)],
            now,
        )
        .unwrap();
    pair.shuttle();
    assert!(
        pair.take_events("display")
            .contains(&client::Event::SubAck {
                packet_id: sub,
                return_codes: vec![SubAckReturnCode::Success(QoS::AtLeastOnce)],
            })
    );

    let now = pair.now();
    let id = pair
        .client("sensor")
        .publish(
            topic("/broadcast/a1TestProd/temp"),
            "21.5",
            QoS::AtLeastOnce,
            now,
        )
        .unwrap()
        .packet_id()
        .unwrap();
    pair.shuttle();
    assert!(
        pair.take_events("sensor")
            .contains(&client::Event::PublishAcked(id))
    );
    assert_eq!(
        pair.messages("display"),
        [(
            "/broadcast/a1TestProd/temp".to_string(),
            Bytes::from("21.5"),
            false
        )]
    );
    // The display's PUBACK went back to the broker: nothing is left in flight there.
    let stats = pair
        .broker
        .hub
        .session_stats(&aliot_core::ClientKey::Device(identity("display")))
        .unwrap();
    assert_eq!(stats.inflight, 0);
}

#[test]
fn rrpc_reaches_the_device_client_and_its_answer_comes_back() {
    let mut pair = Pair::new(&["lamp"]);
    pair.device("lamp", true);
    pair.dial("lamp");
    let now = pair.now();
    pair.client("lamp")
        .subscribe(
            &[(
                filter("/sys/a1TestProd/lamp/rrpc/request/+"),
                QoS::AtMostOnce,
            )],
            now,
        )
        .unwrap();
    pair.shuttle();
    pair.take_events("lamp");

    let call = pair
        .broker
        .hub
        .rrpc_call(
            &identity("lamp"),
            Bytes::from("on"),
            Duration::from_secs(3),
            None,
            pair.now(),
        )
        .unwrap();
    pair.broker.pump();
    pair.shuttle();
    let request = pair.take_events("lamp").into_iter().find_map(|e| match e {
        client::Event::RrpcRequest {
            message_id,
            payload,
            ..
        } => Some((message_id, payload)),
        _ => None,
    });
    let (message_id, payload) = request.expect("the device got the call");
    assert_eq!(message_id, call);
    assert_eq!(payload, Bytes::from("on"));
    let now = pair.now();
    pair.client("lamp")
        .respond_rrpc(message_id, Bytes::from("light is on"), now)
        .unwrap();
    pair.shuttle();
    assert_eq!(
        pair.broker.outcome(call),
        Some(&RrpcOutcome::Success(Bytes::from("light is on")))
    );
}

#[test]
fn keepalive_holds_for_twenty_minutes_and_a_silent_network_is_noticed_by_both_ends() {
    let mut pair = Pair::new(&["meter"]);
    pair.device("meter", true);
    pair.dial("meter");
    pair.take_events("meter");
    let conn = pair.devices["meter"].link.unwrap();
    // Twenty idle minutes: the client pings on its own, the broker answers, nobody closes.
    pair.advance(Duration::from_secs(20 * 60));
    assert!(pair.take_events("meter").is_empty());
    assert!(!pair.broker.is_closed(conn));

    // The network goes silent: the client's ping goes unanswered, the broker hears nothing.
    pair.devices.get_mut("meter").unwrap().reachable = false;
    pair.advance(Duration::from_secs(200));
    let events = pair.take_events("meter");
    assert!(
        events.contains(&client::Event::Disconnected(
            DisconnectReason::KeepaliveTimeout
        )),
        "{events:?}"
    );
    assert!(pair.broker.is_closed(conn));
    assert!(
        pair.broker
            .close_reason(conn)
            .unwrap()
            .contains("keepalive")
    );
}

#[test]
fn a_lost_puback_is_resent_with_dup_after_reconnect_and_the_message_arrives() {
    let mut pair = Pair::new(&["tracker", "backend"]);
    pair.device("tracker", false);
    pair.device("backend", true);
    pair.dial("tracker");
    pair.dial("backend");
    let now = pair.now();
    pair.client("backend")
        .subscribe(
            &[(filter("/broadcast/a1TestProd/gps"), QoS::AtLeastOnce)],
            now,
        )
        .unwrap();
    pair.shuttle();
    pair.take_events("backend");
    pair.take_events("tracker");

    // The tracker publishes, the broker routes and acknowledges, but the PUBACK is lost.
    let now = pair.now();
    let id = pair
        .client("tracker")
        .publish(
            topic("/broadcast/a1TestProd/gps"),
            "31.2,121.5",
            QoS::AtLeastOnce,
            now,
        )
        .unwrap()
        .packet_id()
        .unwrap();
    let mut up = BytesMut::new();
    pair.client("tracker").poll_transmit(&mut up);
    let conn = pair.devices["tracker"].link.unwrap();
    pair.broker.input(conn, &up);
    let _lost_puback = pair.broker.output(conn);
    pair.cut("tracker");
    assert!(
        !pair
            .take_events("tracker")
            .contains(&client::Event::PublishAcked(id))
    );

    // It comes back: the session is resumed and the PUBLISH is sent again with DUP=1.
    pair.dial("tracker");
    let events = pair.take_events("tracker");
    assert_eq!(connected(&events), Some(true));
    assert!(
        events.contains(&client::Event::PublishAcked(id)),
        "{events:?}"
    );
    // At least once: the backend has the message (here twice, the second marked by the broker
    // as a new delivery of the re-sent PUBLISH).
    let received = pair.messages("backend");
    assert!(!received.is_empty());
    assert!(
        received
            .iter()
            .all(|(t, p, _)| t == "/broadcast/a1TestProd/gps" && p == "31.2,121.5")
    );
}

#[test]
fn messages_published_while_a_device_is_offline_arrive_when_it_returns() {
    let mut pair = Pair::new(&["valve"]);
    pair.device("valve", false);
    pair.dial("valve");
    let now = pair.now();
    pair.client("valve")
        .subscribe(
            &[(filter("/a1TestProd/valve/user/get"), QoS::AtLeastOnce)],
            now,
        )
        .unwrap();
    pair.shuttle();
    pair.take_events("valve");
    pair.cut("valve");
    for i in 0..3 {
        let message = aliot_core::Message::new(
            topic("/a1TestProd/valve/user/get"),
            format!("cmd-{i}"),
            QoS::AtLeastOnce,
        );
        let now = pair.now();
        pair.broker.hub.publish(message, now);
    }
    pair.broker.pump();
    pair.advance(Duration::from_secs(30));
    pair.dial("valve");
    let received = pair.messages("valve");
    let payloads: Vec<_> = received.iter().map(|(_, p, _)| p.clone()).collect();
    assert_eq!(payloads, ["cmd-0", "cmd-1", "cmd-2"].map(Bytes::from));
}

#[test]
fn a_second_client_of_the_same_device_takes_over_and_the_first_is_told() {
    let mut pair = Pair::new(&["gw"]);
    pair.device("gw", true);
    pair.dial("gw");
    pair.take_events("gw");
    let first = pair.devices.remove("gw").unwrap();
    let old = first.link.unwrap();
    // The first client stays on its transport; the second one dials in.
    pair.devices.insert("gw (first)", first);
    pair.device("gw", true);
    pair.dial("gw");
    assert_eq!(connected(&pair.take_events("gw")), Some(false));
    assert!(pair.broker.is_closed(old));
    assert!(
        pair.broker
            .close_reason(old)
            .unwrap()
            .contains("taken over")
    );
    // The first client sees its transport end.
    assert_eq!(
        pair.take_events("gw (first)"),
        [client::Event::Disconnected(
            DisconnectReason::TransportClosed
        )]
    );
}
