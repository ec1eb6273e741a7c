//! Gateways and their sub-devices through the sans-IO broker (PLATFORM-PROTOCOLS §4): the
//! topology, logins and logouts with every code, what a logged-in sub-device gets on its
//! gateway's connection, and what happens when that connection goes. Whole conversations, a
//! manual clock, a directory in memory standing for the registry.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aliot_auth::{DeviceIdentity, SignMethod, subdevice_sign};
use aliot_core::codec::{Packet, QoS, SubAckReturnCode};
use aliot_core::hub::durable::{RegisteredDevice, StoreChange};
use aliot_core::hub::{
    ConnId, ConsumerGroupConfig, DeviceDelivery, HubConfig, MessageKinds, RrpcOutcome,
    SubDeviceDirectory, SubDeviceRecord,
};
use aliot_core::server::ServerConfig;
use aliot_services::gateway::{ProxiedRegistration, TopologyChange};
use aliot_services::{AlinkCode, UnixMillis};
use aliot_topic::ProductCategories;
use bytes::Bytes;
use serde_json::{Value, json};
use support::{Broker, PK, identity, puback, publish, publishes, secret, subscribe};

const GW: &str = "gw-1";

/// What the registry would know: each device's record, the topology in it.
#[derive(Default)]
struct Directory {
    devices: Mutex<BTreeMap<DeviceIdentity, SubDeviceRecord>>,
}

impl Directory {
    fn with(names: &[&str]) -> Arc<Directory> {
        let directory = Directory::default();
        for name in names {
            directory.devices.lock().unwrap().insert(
                identity(name),
                SubDeviceRecord {
                    secret: secret(name),
                    categories: Arc::new(ProductCategories::defaults()),
                    disabled: false,
                    gateway: None,
                    iot_id: Some(format!("iot-{name}")),
                },
            );
        }
        Arc::new(directory)
    }

    fn set(&self, name: &str, change: impl FnOnce(&mut SubDeviceRecord)) {
        change(
            self.devices
                .lock()
                .unwrap()
                .get_mut(&identity(name))
                .unwrap(),
        );
    }
}

impl SubDeviceDirectory for Directory {
    fn sub_device(&self, identity: &DeviceIdentity) -> Option<SubDeviceRecord> {
        self.devices.lock().unwrap().get(identity).cloned()
    }
    fn topology(&self, gateway: &DeviceIdentity) -> Vec<DeviceIdentity> {
        let devices = self.devices.lock().unwrap();
        devices
            .iter()
            .filter(|(_, record)| record.gateway.as_ref() == Some(gateway))
            .map(|(identity, _)| identity.clone())
            .collect()
    }
    fn add_to_topology(
        &self,
        gateway: &DeviceIdentity,
        sub: &DeviceIdentity,
    ) -> Result<Option<StoreChange>, AlinkCode> {
        let mut devices = self.devices.lock().unwrap();
        let record = devices.get_mut(sub).ok_or(AlinkCode::NO_DEVICE)?;
        record.gateway = Some(gateway.clone());
        Ok(None)
    }
    fn remove_from_topology(
        &self,
        gateway: &DeviceIdentity,
        sub: &DeviceIdentity,
    ) -> Result<Option<StoreChange>, AlinkCode> {
        let mut devices = self.devices.lock().unwrap();
        let record = devices.get_mut(sub).ok_or(AlinkCode::NO_DEVICE)?;
        if record.gateway.as_ref() == Some(gateway) {
            record.gateway = None;
        }
        Ok(None)
    }
    fn register(
        &self,
        sub: &DeviceIdentity,
        proof: Option<&ProxiedRegistration>,
        _: UnixMillis,
    ) -> Result<(String, Option<StoreChange>), AlinkCode> {
        if proof.is_some_and(|proof| proof.sign != "good") {
            return Err(AlinkCode::BAD_SIGN);
        }
        let mut devices = self.devices.lock().unwrap();
        if let Some(record) = devices.get(sub) {
            return Ok((record.secret.expose().to_owned(), None));
        }
        let record = SubDeviceRecord {
            secret: secret(&sub.device_name),
            categories: Arc::new(ProductCategories::defaults()),
            disabled: false,
            gateway: None,
            iot_id: Some(format!("iot-{}", sub.device_name)),
        };
        let registered = RegisteredDevice {
            identity: sub.clone(),
            secret: record.secret.expose().to_owned(),
            iot_id: format!("iot-{}", sub.device_name),
            nickname: None,
            created: UnixMillis(1),
            activated: None,
            disabled: false,
            token: None,
            gateway: None,
        };
        devices.insert(sub.clone(), record);
        let change = StoreChange::RegisteredDeviceSaved(Box::new(registered.clone()));
        Ok((registered.secret, Some(change)))
    }
    fn logged_in(&self, _: &DeviceIdentity, _: UnixMillis) -> Option<StoreChange> {
        None
    }
}

/// A broker knowing the gateway and `subs` (as directly connectable devices too), and a
/// directory of them.
fn broker_with(subs: &[&str], hub: HubConfig) -> (Broker, Arc<Directory>) {
    let mut names = vec![GW];
    names.extend_from_slice(subs);
    let mut broker = Broker::with(&names, false, hub, ServerConfig::default());
    let directory = Directory::with(&names);
    broker.directory = Some(directory.clone());
    (broker, directory)
}

fn gateway_topic(rest: &str) -> String {
    format!("/sys/{PK}/{GW}/{rest}")
}

fn session_topic(rest: &str) -> String {
    format!("/ext/session/{PK}/{GW}/combine/{rest}")
}

/// A sub-device's proof, as the Node SDK sends it (`hmacsha1`, client id `pk&dn`).
fn proof(name: &str) -> Value {
    let client_id = format!("{PK}&{name}");
    let sign = subdevice_sign(
        secret(name).as_bytes(),
        &identity(name),
        &client_id,
        "1581417203000",
        SignMethod::HmacSha1,
    );
    json!({"productKey": PK, "deviceName": name, "clientId": client_id,
        "timestamp": "1581417203000", "signMethod": "hmacsha1", "sign": sign})
}

/// Sends a gateway request and returns the reply it got: (topic, JSON). What else came is
/// left unread.
fn request(broker: &mut Broker, gw: ConnId, topic: &str, body: Value) -> (String, Value) {
    broker.send(gw, publish(topic, &body.to_string(), QoS::AtMostOnce, 0));
    let packets = broker.output(gw);
    let (replies, others): (Vec<Packet>, Vec<Packet>) = packets.into_iter().partition(
        |packet| matches!(packet, Packet::Publish(p) if p.topic.as_str() == format!("{topic}_reply")),
    );
    broker.unread.insert(gw, others);
    let replies: Vec<(String, Value)> = publishes(&replies)
        .into_iter()
        .map(|p| {
            (
                p.topic.to_string(),
                serde_json::from_slice(&p.payload).unwrap(),
            )
        })
        .collect();
    assert_eq!(replies.len(), 1, "one reply on {topic}_reply: {replies:?}");
    replies.into_iter().next().unwrap()
}

fn received(broker: &mut Broker, conn: ConnId) -> Vec<(String, Value)> {
    let packets = broker.output(conn);
    publishes(&packets)
        .into_iter()
        .map(|p| {
            let payload = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
            (p.topic.to_string(), payload)
        })
        .collect()
}

fn add_topology(broker: &mut Broker, gw: ConnId, names: &[&str]) {
    let params: Vec<Value> = names.iter().map(|name| proof(name)).collect();
    let (_, reply) = request(
        broker,
        gw,
        &gateway_topic("thing/topo/add"),
        json!({"id": "1", "params": params}),
    );
    assert_eq!(reply["code"], 200, "{reply}");
}

fn login(broker: &mut Broker, gw: ConnId, name: &str, clean: &str) -> Value {
    let mut params = proof(name);
    params["cleanSession"] = Value::String(clean.into());
    request(
        broker,
        gw,
        &session_topic("login"),
        json!({"id": "7", "params": params}),
    )
    .1
}

/// A gateway connected with `_ss=1` (as the C SDK 4.x and Python do), its sub-devices added.
fn gateway_with_topology(subs: &[&str]) -> (Broker, Arc<Directory>, ConnId) {
    let (mut broker, directory) = broker_with(subs, HubConfig::default());
    let (gw, _) = broker.connect_device_with(GW, true, "_ss=1");
    add_topology(&mut broker, gw, subs);
    (broker, directory, gw)
}

#[test]
fn topology_is_added_with_each_sub_devices_proof_listed_and_deleted() {
    let (mut broker, directory) = broker_with(&["s-1", "s-2"], HubConfig::default());
    let (gw, _) = broker.connect_device_with(GW, true, "_ss=1");
    let add = gateway_topic("thing/topo/add");

    let mut forged = proof("s-2");
    forged["sign"] = Value::String("00".repeat(20));
    let (_, reply) = request(
        &mut broker,
        gw,
        &add,
        json!({"id": "1", "params": [proof("s-1"), forged]}),
    );
    assert_eq!(reply["code"], 6287);
    assert_eq!(
        reply["data"],
        json!([{"productKey": PK, "deviceName": "s-2"}])
    );
    assert!(
        directory.topology(&identity(GW)).is_empty(),
        "all or nothing"
    );

    let mut unknown = proof("s-1");
    unknown["deviceName"] = Value::String("nobody".into());
    let (_, reply) = request(
        &mut broker,
        gw,
        &add,
        json!({"id": "2", "params": [unknown]}),
    );
    assert_eq!(reply["code"], 6100);

    let (_, reply) = request(
        &mut broker,
        gw,
        &add,
        json!({"id": 3, "params": [proof("s-1"), proof("s-2")]}),
    );
    assert_eq!(reply["id"], 3, "the id echoed with its type");
    assert_eq!(reply["code"], 200);
    assert_eq!(reply["message"], "success");
    assert_eq!(
        directory.topology(&identity(GW)),
        [identity("s-1"), identity("s-2")]
    );

    // C 4.x sends topo/get's params as a string.
    let (_, reply) = request(
        &mut broker,
        gw,
        &gateway_topic("thing/topo/get"),
        json!({"id": "4", "params": "{}"}),
    );
    assert_eq!(
        reply["data"],
        json!([{"productKey": PK, "deviceName": "s-1"}, {"productKey": PK, "deviceName": "s-2"}])
    );

    let (_, reply) = request(
        &mut broker,
        gw,
        &gateway_topic("thing/topo/delete"),
        json!({"id": "5", "params": [{"productKey": PK, "deviceName": "s-1"}]}),
    );
    assert_eq!(reply["code"], 200);
    assert_eq!(directory.topology(&identity(GW)), [identity("s-2")]);
    assert_eq!(broker.hub.counters().gateway.refused, 2);
}

#[test]
fn a_login_needs_the_topology_an_enabled_device_and_its_secrets_sign() {
    let (mut broker, directory) = broker_with(&["s-1"], HubConfig::default());
    let (gw, _) = broker.connect_device_with(GW, true, "_ss=1");
    // Not in the topology yet.
    let reply = login(&mut broker, gw, "s-1", "true");
    assert_eq!(reply["code"], 6401);
    assert_eq!(
        reply["data"],
        json!({"productKey": PK, "deviceName": "s-1"})
    );

    add_topology(&mut broker, gw, &["s-1"]);
    let mut params = proof("s-1");
    params["sign"] = Value::String("ab".repeat(20));
    let (_, reply) = request(
        &mut broker,
        gw,
        &session_topic("login"),
        json!({"id": "8", "params": params}),
    );
    assert_eq!(reply["code"], 6287);
    assert!(!broker.hub.is_online(&identity("s-1")));

    directory.set("s-1", |record| record.disabled = true);
    assert_eq!(login(&mut broker, gw, "s-1", "true")["code"], 522);
    directory.set("s-1", |record| record.disabled = false);

    let reply = login(&mut broker, gw, "s-1", "true");
    assert_eq!(reply["code"], 200);
    assert_eq!(reply["id"], "7");
    assert_eq!(
        reply["data"],
        json!({"productKey": PK, "deviceName": "s-1"})
    );
    assert!(broker.hub.is_online(&identity("s-1")));
    assert_eq!(broker.hub.counters().gateway.logins, 1);

    // Unknown: 6100; malformed: 460.
    let mut unknown = proof("s-1");
    unknown["deviceName"] = Value::String("nobody".into());
    let (_, reply) = request(
        &mut broker,
        gw,
        &session_topic("login"),
        json!({"id": "9", "params": unknown}),
    );
    assert_eq!(reply["code"], 6100);
    let (_, reply) = request(
        &mut broker,
        gw,
        &session_topic("login"),
        json!({"id": "10", "params": {"productKey": PK}}),
    );
    assert_eq!(reply["code"], 460);
}

#[test]
fn a_logged_in_sub_device_publishes_subscribes_and_is_reached_through_its_gateway() {
    let (mut broker, _, gw) = gateway_with_topology(&["s-1", "s-2"]);
    assert_eq!(login(&mut broker, gw, "s-1", "true")["code"], 200);
    assert_eq!(login(&mut broker, gw, "s-2", "false")["code"], 200);

    // Its own thing model, answered on its reply topic through the gateway (automatic
    // subscription: the gateway's `_ss=1`).
    let post = format!("/sys/{PK}/s-1/thing/event/property/post");
    broker.send(
        gw,
        publish(
            &post,
            r#"{"id":"11","params":{"Temp":20}}"#,
            QoS::AtMostOnce,
            0,
        ),
    );
    let got = received(&mut broker, gw);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, format!("{post}_reply"));
    assert_eq!(got[0].1["code"], 200);
    let kept = broker.hub.device_state(&identity("s-1")).unwrap();
    assert_eq!(kept.property("Temp").unwrap().value, json!(20));

    // Its custom topics, as its ACL allows: `/update` is taken, `/get` (subscribe
    // only) refused, as are the topics of a sub-device not logged in.
    let denied = broker.hub.counters().publish_denied;
    for (topic, allowed) in [
        (format!("/{PK}/s-1/update"), true),
        (format!("/{PK}/s-1/get"), false),
        (format!("/{PK}/s-9/update"), false),
    ] {
        broker.send(gw, publish(&topic, "x", QoS::AtLeastOnce, 21));
        let acked = broker.output(gw);
        assert!(
            matches!(&acked[..], [Packet::PubAck(_)]),
            "{topic}: {acked:?}"
        );
        let refused = broker.hub.counters().publish_denied - denied;
        assert_eq!(refused > 0, !allowed, "{topic}");
    }

    // The gateway subscribes for s-2 to its `/get`, as the Node SDK does after a login.
    let get = format!("/{PK}/s-2/get");
    broker.send(gw, subscribe(1, &[(&get, QoS::AtLeastOnce)]));
    let packets = broker.output(gw);
    assert!(
        matches!(&packets[..], [Packet::SubAck(ack)] if matches!(ack.return_codes[0], SubAckReturnCode::Success(_)))
    );
    assert_eq!(broker.publish(&get, "for s-2", QoS::AtLeastOnce), 1);

    // A QoS 1 downlink for the gateway itself and one for each sub-device: one connection,
    // three packet ids, each PUBACK ending its own session's delivery.
    let (_, delivery) =
        broker
            .hub
            .set_device_property(&identity("s-1"), &json!({"Power": 1}), broker.now);
    assert_eq!(delivery, DeviceDelivery::Sent);
    broker
        .hub
        .set_device_property(&identity(GW), &json!({"Power": 2}), broker.now);
    broker.pump();
    let packets = broker.output(gw);
    let delivered = publishes(&packets);
    let topics: Vec<&str> = delivered.iter().map(|p| p.topic.as_str()).collect();
    assert_eq!(
        topics,
        [
            get.as_str(),
            &format!("/sys/{PK}/s-1/thing/service/property/set"),
            &format!("/sys/{PK}/{GW}/thing/service/property/set"),
        ]
    );
    let ids: Vec<_> = delivered
        .iter()
        .map(|p| p.qos.packet_id().unwrap())
        .collect();
    assert_eq!(
        ids.iter().collect::<std::collections::BTreeSet<_>>().len(),
        3,
        "distinct packet ids on one connection: {ids:?}"
    );
    for id in &ids {
        broker.send(gw, puback(*id));
    }
    for name in ["s-1", "s-2", GW] {
        let key = aliot_core::ClientKey::Device(identity(name));
        assert_eq!(
            broker.hub.session_stats(&key).unwrap().inflight,
            0,
            "{name}"
        );
    }

    // RRPC to s-2: the request comes on the gateway's connection, the gateway answers for it.
    let call = broker
        .hub
        .rrpc_call(
            &identity("s-2"),
            Bytes::from_static(b"ping"),
            Duration::from_secs(5),
            None,
            broker.now,
        )
        .unwrap();
    broker.pump();
    // The gateway's `_ss=1` reaches its sub-devices: the request arrives unsubscribed.
    let got = received(&mut broker, gw);
    let request_topic = format!("/sys/{PK}/s-2/rrpc/request/{}", call.0);
    assert_eq!(
        got.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
        [request_topic.as_str()]
    );
    broker.send(
        gw,
        publish(
            &format!("/sys/{PK}/s-2/rrpc/response/{}", call.0),
            "pong",
            QoS::AtMostOnce,
            0,
        ),
    );
    assert_eq!(
        broker.outcome(call),
        Some(&RrpcOutcome::Success(Bytes::from_static(b"pong")))
    );
}

#[test]
fn a_logged_out_sub_device_is_refused_and_told_520() {
    let (mut broker, _, gw) = gateway_with_topology(&["s-1"]);
    assert_eq!(login(&mut broker, gw, "s-1", "true")["code"], 200);
    let (_, reply) = request(
        &mut broker,
        gw,
        &session_topic("logout"),
        json!({"id": 12, "params": {"productKey": PK, "deviceName": "s-1"}}),
    );
    assert_eq!(reply["code"], 200);
    assert_eq!(
        reply["data"],
        json!({"productKey": PK, "deviceName": "s-1"})
    );
    assert!(!broker.hub.is_online(&identity("s-1")));

    // Its thing model refused, with a 520 on the reply topic; the ACL's refusal counted.
    let denied = broker.hub.counters().publish_denied;
    let post = format!("/sys/{PK}/s-1/thing/event/property/post");
    broker.send(
        gw,
        publish(&post, r#"{"id":"13","params":{"a":1}}"#, QoS::AtMostOnce, 0),
    );
    let got = received(&mut broker, gw);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, format!("{post}_reply"));
    assert_eq!(got[0].1["id"], "13");
    assert_eq!(got[0].1["code"], 520);
    assert_eq!(broker.hub.counters().publish_denied, denied + 1);
    assert!(broker.hub.device_state(&identity("s-1")).is_none());

    // A second logout: nobody to log out.
    let (_, reply) = request(
        &mut broker,
        gw,
        &session_topic("logout"),
        json!({"id": 14, "params": {"productKey": PK, "deviceName": "s-1"}}),
    );
    assert_eq!(reply["code"], 520);
    assert_eq!(reply["message"], "device no session");
}

#[test]
fn a_gateway_without_ss_gets_replies_on_what_it_subscribed_to() {
    // The Node SDK: no `_ss`, subscribes to its reply topics itself.
    let (mut broker, _) = broker_with(&["s-1"], HubConfig::default());
    let (gw, _) = broker.connect_device(GW, true);
    let add = gateway_topic("thing/topo/add");
    broker.send(
        gw,
        publish(
            &add,
            &json!({"id": "1", "params": [proof("s-1")]}).to_string(),
            QoS::AtMostOnce,
            0,
        ),
    );
    assert!(
        received(&mut broker, gw).is_empty(),
        "not subscribed: no reply"
    );
    assert_eq!(broker.hub.counters().services.not_subscribed, 1);
    broker.send(
        gw,
        subscribe(
            1,
            &[
                (&format!("{add}_reply"), QoS::AtLeastOnce),
                (
                    &format!("{}_reply", session_topic("login")),
                    QoS::AtLeastOnce,
                ),
            ],
        ),
    );
    broker.output(gw);
    // The topology was kept all the same; the login's reply comes.
    assert_eq!(login(&mut broker, gw, "s-1", "false")["code"], 200);
    // A sub-device logged in through a gateway without `_ss` gets nothing unsubscribed.
    let post = format!("/sys/{PK}/s-1/thing/event/property/post");
    broker.send(
        gw,
        publish(&post, r#"{"id":"2","params":{}}"#, QoS::AtMostOnce, 0),
    );
    assert!(received(&mut broker, gw).is_empty());
    broker.send(
        gw,
        subscribe(2, &[(&format!("{post}_reply"), QoS::AtLeastOnce)]),
    );
    broker.output(gw);
    broker.send(
        gw,
        publish(&post, r#"{"id":"3","params":{}}"#, QoS::AtMostOnce, 0),
    );
    let got = received(&mut broker, gw);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1["id"], "3");
}

#[test]
fn the_gateways_disconnect_takes_its_sub_devices_offline_and_kept_sessions_wait() {
    let (mut broker, _, gw) = gateway_with_topology(&["s-1", "s-2"]);
    assert_eq!(login(&mut broker, gw, "s-1", "true")["code"], 200);
    assert_eq!(login(&mut broker, gw, "s-2", "false")["code"], 200);
    broker.drop_transport(gw);
    assert!(!broker.hub.is_online(&identity("s-1")));
    assert!(!broker.hub.is_online(&identity("s-2")));
    assert_eq!(broker.hub.counters().gateway.dropped_with_gateway, 2);
    let s1 = aliot_core::ClientKey::Device(identity("s-1"));
    let s2 = aliot_core::ClientKey::Device(identity("s-2"));
    assert!(
        broker.hub.session_stats(&s1).is_none(),
        "cleanSession true: gone"
    );
    assert!(
        broker.hub.session_stats(&s2).is_some(),
        "cleanSession false: kept"
    );

    // While away, s-2's set goes to its kept session.
    let delivery = broker.hub.publish_to_device(
        &identity("s-2"),
        aliot_core::Message::new(
            aliot_topic::TopicName::new(
                &format!("/sys/{PK}/s-2/thing/service/property/set"),
                &Default::default(),
            )
            .unwrap(),
            Bytes::from_static(b"{}"),
            QoS::AtLeastOnce,
        ),
        broker.now,
    );
    assert_eq!(delivery, DeviceDelivery::Queued);

    // The gateway comes back and logs s-2 in again: the queued message arrives.
    let (gw, _) = broker.connect_device_with(GW, true, "_ss=1");
    assert_eq!(login(&mut broker, gw, "s-2", "false")["code"], 200);
    broker.pump();
    let got = received(&mut broker, gw);
    assert!(
        got.iter()
            .any(|(topic, _)| topic == &format!("/sys/{PK}/s-2/thing/service/property/set")),
        "{got:?}"
    );
}

#[test]
fn takeovers_move_a_sub_device_and_a_gateways_new_connection_starts_with_none() {
    let (mut broker, _, gw) = gateway_with_topology(&["s-1", "s-2"]);
    // s-1 connected directly: the gateway's login takes it over.
    let (direct, _) = broker.connect_device("s-1", true);
    assert_eq!(login(&mut broker, gw, "s-1", "true")["code"], 200);
    assert!(broker.is_closed(direct));
    assert!(broker.close_reason(direct).unwrap().contains("taken over"));
    assert!(broker.hub.is_online(&identity("s-1")));

    // s-1 connects directly again: the gateway stays, only no longer carries s-1.
    let (direct, _) = broker.connect_device("s-1", true);
    assert!(!broker.is_closed(gw));
    let post = format!("/sys/{PK}/s-1/thing/event/property/post");
    broker.send(
        gw,
        publish(&post, r#"{"id":"1","params":{}}"#, QoS::AtMostOnce, 0),
    );
    let got = received(&mut broker, gw);
    assert_eq!(got[0].1["code"], 520, "the gateway no longer acts for s-1");
    broker.send(
        direct,
        publish(&post, r#"{"id":"2","params":{}}"#, QoS::AtMostOnce, 0),
    );
    assert!(broker.hub.is_online(&identity("s-1")));

    // Ours: a gateway's new connection takes over its session, and its sub-devices are logged
    // out with the old one; the new one logs them in again.
    assert_eq!(login(&mut broker, gw, "s-2", "true")["code"], 200);
    let (gw2, _) = broker.connect_device_with(GW, true, "_ss=1");
    assert!(broker.is_closed(gw));
    assert!(!broker.hub.is_online(&identity("s-2")));
    // (It acts as a gateway, so its refused requests for s-2 are answered.)
    let (_, topology) = request(
        &mut broker,
        gw2,
        &gateway_topic("thing/topo/get"),
        json!({"id": "4", "params": {}}),
    );
    assert_eq!(topology["data"].as_array().unwrap().len(), 2);
    let post2 = format!("/sys/{PK}/s-2/thing/event/property/post");
    broker.send(
        gw2,
        publish(&post2, r#"{"id":"3","params":{}}"#, QoS::AtMostOnce, 0),
    );
    assert_eq!(received(&mut broker, gw2)[0].1["code"], 520);
    assert_eq!(login(&mut broker, gw2, "s-2", "true")["code"], 200);
    assert!(broker.hub.is_online(&identity("s-2")));
}

#[test]
fn the_gateways_limits_answer_428_and_429() {
    let hub = HubConfig {
        max_sub_devices_per_gateway: 2,
        max_sub_device_logins_per_minute: 3,
        ..HubConfig::default()
    };
    let (mut broker, _) = broker_with(&["s-1", "s-2", "s-3"], hub);
    let (gw, _) = broker.connect_device_with(GW, true, "_ss=1");
    add_topology(&mut broker, gw, &["s-1", "s-2", "s-3"]);
    assert_eq!(login(&mut broker, gw, "s-1", "true")["code"], 200);
    assert_eq!(login(&mut broker, gw, "s-2", "true")["code"], 200);
    // A third online: 428.
    assert_eq!(login(&mut broker, gw, "s-3", "true")["code"], 428);
    // Logging out makes room (a refused login is not counted); the fourth login of the
    // minute is one too many: 429, until the minute is over.
    for (id, name) in [("1", "s-1"), ("2", "s-2")] {
        request(
            &mut broker,
            gw,
            &session_topic("logout"),
            json!({"id": id, "params": {"productKey": PK, "deviceName": name}}),
        );
    }
    assert_eq!(login(&mut broker, gw, "s-3", "true")["code"], 200);
    assert_eq!(login(&mut broker, gw, "s-1", "true")["code"], 429);
    broker.advance(Duration::from_secs(61));
    assert_eq!(login(&mut broker, gw, "s-1", "true")["code"], 200);
}

#[test]
fn a_batch_logs_in_all_or_none_and_logs_out_likewise() {
    let (mut broker, _, gw) = gateway_with_topology(&["s-1", "s-2", "s-3"]);
    let mut bad = proof("s-3");
    bad["sign"] = Value::String("cd".repeat(20));
    let entries =
        |list: Vec<Value>| json!({"id": "20", "version": "1.0", "params": {"deviceList": list}});
    let (_, reply) = request(
        &mut broker,
        gw,
        &session_topic("batch_login"),
        entries(vec![proof("s-1"), proof("s-2"), bad]),
    );
    assert_eq!(reply["code"], 6287);
    assert_eq!(
        reply["data"],
        json!([{"productKey": PK, "deviceName": "s-3"}])
    );
    assert!(!broker.hub.is_online(&identity("s-1")), "none logged in");

    let (_, reply) = request(
        &mut broker,
        gw,
        &session_topic("batch_login"),
        entries(vec![proof("s-1"), proof("s-2")]),
    );
    assert_eq!(reply["code"], 200);
    assert_eq!(
        reply["data"],
        json!([{"productKey": PK, "deviceName": "s-1"}, {"productKey": PK, "deviceName": "s-2"}])
    );
    assert!(broker.hub.is_online(&identity("s-2")));

    let pair = |name: &str| json!({"productKey": PK, "deviceName": name});
    let (_, reply) = request(
        &mut broker,
        gw,
        &session_topic("batch_logout"),
        json!({"id": "21", "params": [pair("s-1"), pair("s-3")]}),
    );
    assert_eq!(reply["code"], 520);
    assert_eq!(reply["data"], json!([pair("s-3")]));
    assert!(broker.hub.is_online(&identity("s-1")), "none logged out");
    let (_, reply) = request(
        &mut broker,
        gw,
        &session_topic("batch_logout"),
        json!({"id": "22", "params": [pair("s-1"), pair("s-2")]}),
    );
    assert_eq!(reply["code"], 200);
    assert!(!broker.hub.is_online(&identity("s-1")));
    assert!(!broker.hub.is_online(&identity("s-2")));
}

#[test]
fn a_server_side_topology_change_is_pushed_and_logs_a_removed_sub_device_out() {
    let (mut broker, _, gw) = gateway_with_topology(&["s-1"]);
    assert_eq!(login(&mut broker, gw, "s-1", "true")["code"], 200);
    let delivery = broker.hub.topology_changed(
        &identity(GW),
        TopologyChange::Removed,
        &[identity("s-1")],
        broker.now,
    );
    assert_eq!(delivery, DeviceDelivery::Sent);
    broker.pump();
    let got = received(&mut broker, gw);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, gateway_topic("thing/topo/change"));
    assert_eq!(got[0].1["method"], "thing.topo.change");
    assert_eq!(got[0].1["params"]["status"], 1);
    assert_eq!(
        got[0].1["params"]["subList"],
        json!([{"productKey": PK, "deviceName": "s-1"}])
    );
    assert!(!broker.hub.is_online(&identity("s-1")));
    // A disabled device is logged out of its gateway, not the gateway closed.
    assert_eq!(login(&mut broker, gw, "s-1", "true")["code"], 200);
    assert!(
        broker
            .hub
            .disconnect_device(&identity("s-1"), false, broker.now)
    );
    broker.pump();
    assert!(!broker.is_closed(gw));
    assert!(!broker.hub.is_online(&identity("s-1")));
}

#[test]
fn sub_devices_register_through_their_gateway() {
    let (mut broker, directory) = broker_with(&[], HubConfig::default());
    let (gw, _) = broker.connect_device_with(GW, true, "_ss=1");
    let (_, reply) = request(
        &mut broker,
        gw,
        &gateway_topic("thing/sub/register"),
        json!({"id": "30", "params": [{"productKey": PK, "deviceName": "new-1"}]}),
    );
    assert_eq!(reply["code"], 200);
    assert_eq!(reply["data"][0]["deviceName"], "new-1");
    assert_eq!(reply["data"][0]["deviceSecret"], secret("new-1").expose());
    assert!(directory.sub_device(&identity("new-1")).is_some());

    let proxied = |name: &str, sign: &str| json!({"productKey": PK, "deviceName": name, "random": "r1", "signMethod": "hmacSha256", "sign": sign});
    let (_, reply) = request(
        &mut broker,
        gw,
        &gateway_topic("thing/proxy/provisioning/product_register"),
        json!({"id": "31", "params": {"proxieds": [proxied("new-2", "good"), proxied("new-3", "bad")]}}),
    );
    assert_eq!(reply["code"], 200);
    assert_eq!(reply["data"]["successes"][0]["deviceName"], "new-2");
    assert_eq!(reply["data"]["failures"][0]["deviceName"], "new-3");
    assert_eq!(reply["data"]["failures"][0]["errorDetail"]["code"], 6287);
}

#[test]
fn without_a_registry_no_sub_device_is_known() {
    let mut broker = Broker::new(&[GW, "s-1"]);
    let (gw, _) = broker.connect_device_with(GW, true, "_ss=1");
    assert_eq!(login(&mut broker, gw, "s-1", "true")["code"], 6100);
    let (_, reply) = request(
        &mut broker,
        gw,
        &gateway_topic("thing/topo/get"),
        json!({"id": "1", "params": {}}),
    );
    assert_eq!(reply["data"], json!([]));
}

#[test]
fn a_gateways_connection_with_every_packet_id_in_use_queues_until_pubacks_free_some() {
    // Two sub-devices whose windows together want more than MQTT's 65,535 packet ids.
    let window = 40_000u16;
    let hub = HubConfig {
        inflight_window: std::num::NonZeroU16::new(window).unwrap(),
        max_queued_messages: 100_000,
        max_queued_bytes: 64 * 1024 * 1024,
        ..HubConfig::default()
    };
    let (mut broker, _) = broker_with(&["s-1", "s-2"], hub);
    let (gw, _) = broker.connect_device_with(GW, true, "_ss=1");
    add_topology(&mut broker, gw, &["s-1", "s-2"]);
    assert_eq!(login(&mut broker, gw, "s-1", "false")["code"], 200);
    assert_eq!(login(&mut broker, gw, "s-2", "false")["code"], 200);
    let sets = |name: &str| {
        aliot_topic::TopicName::new(
            &format!("/sys/{PK}/{name}/thing/service/property/set"),
            &Default::default(),
        )
        .unwrap()
    };
    let per_device = usize::from(window);
    for name in ["s-1", "s-2"] {
        for n in 0..per_device {
            let message =
                aliot_core::Message::new(sets(name), Bytes::from(n.to_string()), QoS::AtLeastOnce);
            broker
                .hub
                .publish_to_device(&identity(name), message, broker.now);
        }
    }
    broker.pump();
    let packets = broker.output(gw);
    let sent = publishes(&packets);
    assert_eq!(
        sent.len(),
        usize::from(u16::MAX),
        "every packet id in use, none twice"
    );
    let ids: std::collections::HashSet<_> =
        sent.iter().map(|p| p.qos.packet_id().unwrap()).collect();
    assert_eq!(ids.len(), usize::from(u16::MAX));
    let s2 = aliot_core::ClientKey::Device(identity("s-2"));
    let waiting = broker.hub.session_stats(&s2).unwrap().queued;
    assert_eq!(waiting, 2 * per_device - usize::from(u16::MAX));

    // Acknowledging some lets the rest go, on ids that are free again.
    let freed: Vec<_> = sent
        .iter()
        .take(waiting)
        .map(|p| p.qos.packet_id().unwrap())
        .collect();
    for id in freed {
        broker.send(gw, puback(id));
    }
    let packets = broker.output(gw);
    assert_eq!(publishes(&packets).len(), waiting);
    assert_eq!(broker.hub.session_stats(&s2).unwrap().queued, 0);
}

/// What a test gateway does next, in [`packet_ids_stay_unique_and_nothing_acknowledged_is_lost`].
#[derive(Clone, Debug)]
enum GatewayStep {
    /// Log sub-device `n % 3` in.
    Login(usize),
    /// Log it out.
    Logout(usize),
    /// The server sets a property of sub-device `n % 3` (QoS 1), or of the gateway for 3.
    Send(usize),
    /// The gateway acknowledges the `n`-th oldest delivery it has not acknowledged yet.
    Ack(usize),
    /// The gateway's transport breaks and it connects again.
    Reconnect,
}

fn gateway_step() -> impl proptest::strategy::Strategy<Value = GatewayStep> {
    use proptest::prelude::*;
    prop_oneof![
        2 => (0..3usize).prop_map(GatewayStep::Login),
        1 => (0..3usize).prop_map(GatewayStep::Logout),
        4 => (0..4usize).prop_map(GatewayStep::Send),
        4 => (0..8usize).prop_map(GatewayStep::Ack),
        1 => Just(GatewayStep::Reconnect),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

    /// Whatever the gateway does, a packet id is never given to a second delivery while the
    /// gateway has not acknowledged the first on that connection, and every message a session
    /// took is received at least once once the gateway logs everyone in and acknowledges all.
    #[test]
    fn packet_ids_stay_unique_and_nothing_acknowledged_is_lost(
        steps in proptest::collection::vec(gateway_step(), 1..60),
    ) {
        let names = ["s-0", "s-1", "s-2"];
        let hub = HubConfig {
            inflight_window: std::num::NonZeroU16::new(3).unwrap(),
            ..HubConfig::default()
        };
        let (mut broker, _) = broker_with(&names, hub);
        let (mut gw, _) = broker.connect_device_with(GW, false, "_ss=1");
        add_topology(&mut broker, gw, &names);
        // Deliveries the gateway has not acknowledged on its current connection, oldest first.
        let mut outstanding: Vec<aliot_core::codec::PacketId> = Vec::new();
        let mut received = std::collections::BTreeSet::new();
        let mut taken = std::collections::BTreeSet::new();
        let mut sent = 0u32;

        fn read(
            broker: &mut Broker,
            gw: ConnId,
            outstanding: &mut Vec<aliot_core::codec::PacketId>,
            received: &mut std::collections::BTreeSet<String>,
        ) {
            for packet in broker.output(gw) {
                if let Packet::Publish(publish) = packet
                    && let Some(id) = publish.qos.packet_id()
                {
                    assert!(!outstanding.contains(&id), "packet id {id:?} given twice");
                    outstanding.push(id);
                    received.insert(String::from_utf8(publish.payload.to_vec()).unwrap());
                }
            }
        }
        let login_body = |name: &str| {
            let mut params = proof(name);
            params["cleanSession"] = Value::String("false".into());
            json!({"id": "1", "params": params}).to_string()
        };

        for step in steps {
            match step {
                GatewayStep::Login(n) => broker.send(
                    gw,
                    publish(&session_topic("login"), &login_body(names[n]), QoS::AtMostOnce, 0),
                ),
                GatewayStep::Logout(n) => broker.send(
                    gw,
                    publish(
                        &session_topic("logout"),
                        &json!({"id": "2", "params": {"productKey": PK, "deviceName": names[n]}})
                            .to_string(),
                        QoS::AtMostOnce,
                        0,
                    ),
                ),
                GatewayStep::Send(n) => {
                    let device = names.get(n).copied().unwrap_or(GW);
                    let topic = aliot_topic::TopicName::new(
                        &format!("/sys/{PK}/{device}/thing/service/property/set"),
                        &Default::default(),
                    )
                    .unwrap();
                    sent += 1;
                    let payload = format!("m{sent}");
                    let message =
                        aliot_core::Message::new(topic, Bytes::from(payload.clone()), QoS::AtLeastOnce);
                    let delivery = broker.hub.publish_to_device(&identity(device), message, broker.now);
                    if matches!(delivery, DeviceDelivery::Sent | DeviceDelivery::Queued) {
                        taken.insert(payload);
                    }
                    broker.pump();
                }
                GatewayStep::Ack(n) => {
                    if !outstanding.is_empty() {
                        let id = outstanding.remove(n % outstanding.len());
                        broker.send(gw, puback(id));
                    }
                }
                GatewayStep::Reconnect => {
                    broker.drop_transport(gw);
                    outstanding.clear();
                    gw = broker.connect_device_with(GW, false, "_ss=1").0;
                }
            }
            read(&mut broker, gw, &mut outstanding, &mut received);
        }
        // Everyone back, everything acknowledged until nothing more comes.
        for name in names {
            broker.send(gw, publish(&session_topic("login"), &login_body(name), QoS::AtMostOnce, 0));
        }
        for _ in 0..100 {
            read(&mut broker, gw, &mut outstanding, &mut received);
            if outstanding.is_empty() {
                break;
            }
            for id in std::mem::take(&mut outstanding) {
                broker.send(gw, puback(id));
            }
        }
        let lost: Vec<_> = taken.difference(&received).collect();
        proptest::prop_assert!(lost.is_empty(), "taken and never received: {lost:?}");
    }
}

#[test]
fn a_sub_devices_shadow_and_pending_upgrade_come_through_its_gateway() {
    let (mut broker, _, gw) = gateway_with_topology(&["s-1"]);
    // An upgrade started while the sub-device is offline is pushed when it logs in.
    let job = aliot_services::OtaJob {
        id: 11,
        module: "default".into(),
        version: "2.0.0".into(),
        url: "https://example.com/fw.bin".into(),
        size: 1024,
        sign_method: aliot_services::OtaSignMethod::Md5,
        sign: "93230c3bde425a9d7984a594ac55ea1e".into(),
    }
    .validated()
    .unwrap();
    assert_eq!(
        broker.hub.start_ota(&identity("s-1"), job, broker.now),
        DeviceDelivery::Offline
    );
    assert_eq!(login(&mut broker, gw, "s-1", "true")["code"], 200);
    let got = received(&mut broker, gw);
    let upgrade = format!("/ota/device/upgrade/{PK}/s-1");
    assert!(
        got.iter()
            .any(|(topic, body)| topic == &upgrade && body["data"]["version"] == "2.0.0"),
        "{got:?}"
    );

    // Its shadow: the gateway reports for it on /shadow/update/{pk}/{sub}, the answer comes on
    // /shadow/get/{pk}/{sub}.
    broker.send(
        gw,
        publish(
            &format!("/shadow/update/{PK}/s-1"),
            r#"{"method":"update","state":{"reported":{"color":"red"}},"version":1}"#,
            QoS::AtMostOnce,
            0,
        ),
    );
    let got = received(&mut broker, gw);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, format!("/shadow/get/{PK}/s-1"));
    assert_eq!(got[0].1["payload"]["status"], "success");
    let shadow = broker.hub.device_state(&identity("s-1")).unwrap().shadow();
    assert_eq!(shadow.version(), 1);
}

#[test]
fn topology_changes_and_registrations_are_forwarded_to_consumer_groups() {
    let hub = HubConfig {
        consumer_groups: vec![ConsumerGroupConfig {
            id: "apps".into(),
            products: vec![],
            kinds: MessageKinds::TOPOLOGY.with(MessageKinds::LIFECYCLE),
        }],
        ..HubConfig::default()
    };
    let (mut broker, _) = broker_with(&["s1", "s2"], hub);
    let consumer = broker.hub.attach_consumer("apps").unwrap();
    broker.hub.consumer_credit(consumer, 10);
    let (gw, _) = broker.connect_device_with(GW, true, "_ss=1");
    add_topology(&mut broker, gw, &["s1", "s2"]);
    request(
        &mut broker,
        gw,
        &gateway_topic("thing/topo/delete"),
        json!({"id": "2", "params": [{"productKey": PK, "deviceName": "s2"}]}),
    );
    request(
        &mut broker,
        gw,
        &gateway_topic("thing/sub/register"),
        json!({"id": "3", "params": [{"productKey": PK, "deviceName": "new-1"}]}),
    );
    broker.pump();
    let got: Vec<(String, Value)> = std::mem::take(&mut broker.forwarded)
        .into_iter()
        .map(|(_, message, _)| {
            let body = serde_json::from_slice(&message.payload).unwrap();
            (message.topic.to_string(), body)
        })
        .collect();
    let topo = format!("/{PK}/{GW}/thing/topo/lifecycle");
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0].0, topo);
    assert_eq!(got[0].1["action"], "create");
    assert_eq!(got[0].1["gwIotId"], format!("iot-{GW}"));
    assert_eq!(got[0].1["gwDeviceName"], GW);
    assert_eq!(
        got[0].1["devices"],
        json!([
            {"iotId": "iot-s1", "productKey": PK, "deviceName": "s1"},
            {"iotId": "iot-s2", "productKey": PK, "deviceName": "s2"},
        ])
    );
    assert_eq!(got[1].0, topo);
    assert_eq!(got[1].1["action"], "delete");
    assert_eq!(got[1].1["devices"][0]["deviceName"], "s2");
    assert_eq!(got[2].0, format!("/{PK}/new-1/thing/lifecycle"));
    assert_eq!(got[2].1["action"], "create");
    assert_eq!(got[2].1["deviceSecret"], secret("new-1").expose());
    assert_eq!(got[2].1["iotId"], "iot-new-1");
    // Registering it again makes nothing new.
    request(
        &mut broker,
        gw,
        &gateway_topic("thing/sub/register"),
        json!({"id": "4", "params": [{"productKey": PK, "deviceName": "new-1"}]}),
    );
    broker.pump();
    assert!(broker.forwarded.is_empty());
    // Sub-devices found by the gateway, one known and one not: answered, and told as found.
    let (_, reply) = request(
        &mut broker,
        gw,
        &gateway_topic("thing/list/found"),
        json!({"id": "5", "version": "1.0", "method": "thing.list.found", "params": [
            {"productKey": PK, "deviceName": "s1"},
            {"productKey": PK, "deviceName": "stranger"},
        ]}),
    );
    assert_eq!((&reply["id"], &reply["code"]), (&json!("5"), &json!(200)));
    assert_eq!(reply["data"], json!({}));
    broker.pump();
    let found = std::mem::take(&mut broker.forwarded);
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].1.topic.as_str(),
        format!("/{PK}/{GW}/thing/list/found")
    );
    let body: Value = serde_json::from_slice(&found[0].1.payload).unwrap();
    assert_eq!(
        body,
        json!({"gwIotId": format!("iot-{GW}"), "gwProductKey": PK, "gwDeviceName": GW, "devices": [
            {"iotId": "iot-s1", "productKey": PK, "deviceName": "s1"},
            {"productKey": PK, "deviceName": "stranger"},
        ]})
    );
}
