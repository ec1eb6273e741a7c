//! The platform's device services through the sans-IO broker: automatic subscription, the
//! thing model, NTP, the shadow and OTA, each a whole conversation with a manual clock.

mod support;

use std::time::Duration;

use aliot_core::codec::{Packet, QoS, Unsubscribe, Utf8Bytes};
use aliot_core::hub::{ConnId, DeviceDelivery, RrpcOutcome};
use aliot_services::{OtaJob, OtaSignMethod, ShadowRequest, UnixMillis};
use serde_json::{Value, json};
use support::{Broker, WALL_AT_START, identity, pid, publish, publishes, subscribe};

/// The client id pairs of the C SDK 4.x.
const C_SDK: &str = "_ss=1,ext=3";

fn topic_of(device: &str, rest: &str) -> String {
    format!("/sys/{}/{device}/{rest}", support::PK)
}

/// The PUBLISHes the device got since the last look, as (topic, JSON payload).
fn received(broker: &mut Broker, conn: ConnId) -> Vec<(String, Value)> {
    let packets = broker.output(conn);
    publishes(&packets)
        .into_iter()
        .map(|p| {
            let payload = serde_json::from_slice(&p.payload).unwrap_or_else(|_| {
                Value::String(String::from_utf8_lossy(&p.payload).into_owned())
            });
            (p.topic.to_string(), payload)
        })
        .collect()
}

/// The raw payloads the device got since the last look.
fn received_raw(broker: &mut Broker, conn: ConnId) -> Vec<(String, String)> {
    let packets = broker.output(conn);
    publishes(&packets)
        .into_iter()
        .map(|p| {
            (
                p.topic.to_string(),
                String::from_utf8(p.payload.to_vec()).unwrap(),
            )
        })
        .collect()
}

/// A broker with the device `name` connected, asking for the automatic subscription.
fn auto_subscribed(name: &str) -> (Broker, ConnId) {
    let mut broker = Broker::new(&[name]);
    let (conn, _) = broker.connect_device_with(name, true, "_ss=1");
    (broker, conn)
}

fn post(broker: &mut Broker, conn: ConnId, device: &str, rest: &str, payload: &str) {
    broker.send(
        conn,
        publish(&topic_of(device, rest), payload, QoS::AtMostOnce, 0),
    );
}

fn unsubscribe(id: u16, filters: &[&str]) -> Packet {
    Packet::Unsubscribe(Unsubscribe {
        packet_id: pid(id),
        filters: filters
            .iter()
            .map(|f| Utf8Bytes::try_from(*f).unwrap())
            .collect(),
    })
}

#[test]
fn an_auto_subscribed_device_gets_its_reply_without_subscribing() {
    let mut broker = Broker::new(&["c4"]);
    let (conn, _) = broker.connect_device_with("c4", true, C_SDK);
    // The C SDK 4.x: no `method`, `sys.ack` 1.
    post(
        &mut broker,
        conn,
        "c4",
        "thing/event/property/post",
        r#"{"id":"1","version":"1.0","params":{"Temp":21.5},"sys":{"ack":1}}"#,
    );
    let got = received_raw(&mut broker, conn);
    assert_eq!(
        got,
        [(
            topic_of("c4", "thing/event/property/post_reply"),
            r#"{"id":"1","code":200,"message":"success","method":"thing.event.property.post","version":"1.0","data":{}}"#.to_owned()
        )]
    );
    let kept = broker
        .hub
        .device_state(&identity("c4"))
        .unwrap()
        .property("Temp")
        .unwrap()
        .clone();
    assert_eq!(kept.value, json!(21.5));
    assert_eq!(kept.time, UnixMillis(WALL_AT_START + 1_000_000));
}

#[test]
fn a_device_without_ss_gets_replies_only_on_what_it_subscribed_to() {
    let mut broker = Broker::new(&["node"]);
    let (conn, _) = broker.connect_device("node", true);
    post(
        &mut broker,
        conn,
        "node",
        "thing/event/property/post",
        r#"{"id":"1","params":{"a":1}}"#,
    );
    assert!(received(&mut broker, conn).is_empty());
    assert_eq!(broker.hub.counters().services.not_subscribed, 1);
    // The Node SDK subscribes to the reply topic at QoS 1.
    broker.send(
        conn,
        subscribe(
            1,
            &[(
                &topic_of("node", "thing/event/property/post_reply"),
                QoS::AtLeastOnce,
            )],
        ),
    );
    broker.output(conn);
    post(
        &mut broker,
        conn,
        "node",
        "thing/event/property/post",
        r#"{"id":"2","params":{"a":2}}"#,
    );
    let got = received(&mut broker, conn);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1["id"], "2");
    // Its state was kept either way.
    assert_eq!(
        broker
            .hub
            .device_state(&identity("node"))
            .unwrap()
            .property("a")
            .unwrap()
            .value,
        2
    );
}

#[test]
fn ack_zero_turns_the_reply_off_and_the_id_keeps_its_type() {
    let (mut broker, conn) = auto_subscribed("d");
    post(
        &mut broker,
        conn,
        "d",
        "thing/event/property/post",
        r#"{"id":"5","params":{"x":1},"sys":{"ack":0}}"#,
    );
    assert!(received(&mut broker, conn).is_empty());
    post(
        &mut broker,
        conn,
        "d",
        "thing/event/property/post",
        r#"{"id":77,"params":{"x":2}}"#,
    );
    let got = received_raw(&mut broker, conn);
    assert!(
        got[0].1.starts_with(r#"{"id":77,"code":200,"#),
        "{}",
        got[0].1
    );
    // The Node SDK's ids carry the reply topic; echoed as they are.
    let node_id = format!(
        "3|exp-topic|{}",
        topic_of("d", "thing/event/alarm/post_reply")
    );
    post(
        &mut broker,
        conn,
        "d",
        "thing/event/alarm/post",
        &format!(
            r#"{{"id":"{node_id}","params":{{"value":{{"level":2}}}},"method":"thing.event.alarm.post"}}"#
        ),
    );
    let got = received(&mut broker, conn);
    assert_eq!(got[0].0, topic_of("d", "thing/event/alarm/post_reply"));
    assert_eq!(got[0].1["id"], node_id.as_str());
    assert_eq!(got[0].1["method"], "thing.event.alarm.post");
}

#[test]
fn malformed_requests_are_answered_with_the_platforms_codes() {
    let mut broker = Broker::new(&["d", "other"]);
    let (conn, _) = broker.connect_device_with("d", true, "_ss=1");
    let cases: [(&str, i64, Value); 6] = [
        ("not json", 6207, json!("0")),
        (r#"[1,2]"#, 6207, json!("0")),
        (r#"{"id":"1"}"#, 460, json!("1")),
        (r#"{"id":"2","params":[1]}"#, 460, json!("2")),
        (r#"{"id":{"x":1},"params":{}}"#, 460, json!("0")),
        (
            r#"{"id":"3","params":{"t":{"value":1,"time":"soon"}}}"#,
            460,
            json!("3"),
        ),
    ];
    for (payload, code, id) in cases {
        post(&mut broker, conn, "d", "thing/event/property/post", payload);
        let got = received(&mut broker, conn);
        assert_eq!(got.len(), 1, "{payload}");
        assert_eq!(got[0].1["code"], code, "{payload}");
        assert_eq!(got[0].1["id"], id, "{payload}");
        assert!(got[0].1.get("message").is_some() && got[0].1.get("data").is_some());
    }
    // A huge id is not echoed.
    let huge = "9".repeat(5000);
    post(
        &mut broker,
        conn,
        "d",
        "thing/event/property/post",
        &format!(r#"{{"id":"{huge}","params":{{}}}}"#),
    );
    let got = received(&mut broker, conn);
    assert_eq!(
        (got[0].1["code"].clone(), got[0].1["id"].clone()),
        (json!(460), json!("0"))
    );
    assert_eq!(broker.hub.counters().services.malformed, 7);
    // Nothing was kept, and the connection is still up.
    assert!(
        broker
            .hub
            .device_state(&identity("d"))
            .unwrap()
            .properties()
            .next()
            .is_none()
    );
    assert!(!broker.is_closed(conn));
    // Posting to another device's thing topic is refused by the ACL: no state, no reply.
    post(
        &mut broker,
        conn,
        "other",
        "thing/event/property/post",
        r#"{"id":"1","params":{"a":1}}"#,
    );
    assert!(received(&mut broker, conn).is_empty());
    assert_eq!(broker.hub.counters().publish_denied, 1);
    assert!(broker.hub.device_state(&identity("other")).is_none());
}

#[test]
fn the_latest_value_of_each_property_is_kept_by_its_time() {
    let (mut broker, conn) = auto_subscribed("d");
    post(
        &mut broker,
        conn,
        "d",
        "thing/event/property/post",
        r#"{"id":"1","params":{"Power":{"value":"on","time":2000},"Mode":1}}"#,
    );
    post(
        &mut broker,
        conn,
        "d",
        "thing/event/property/post",
        r#"{"id":"2","params":{"Power":{"value":"off","time":1000}}}"#,
    );
    // A batch: the newest sample of each property.
    post(
        &mut broker,
        conn,
        "d",
        "thing/event/property/batch/post",
        r#"{"id":"3","params":{"properties":{"Mode":[{"value":3,"time":1800000000005},{"value":4,"time":1800000000009}]},"events":{}}}"#,
    );
    // History: kept when not older.
    post(
        &mut broker,
        conn,
        "d",
        "thing/event/property/history/post",
        r#"{"id":"4","params":[{"identity":{},"properties":{"Power":{"value":"eco","time":3000}}}]}"#,
    );
    let replies = received(&mut broker, conn);
    assert_eq!(replies.len(), 4);
    assert!(
        replies.iter().all(|(_, reply)| reply["code"] == 200),
        "{replies:?}"
    );
    assert_eq!(
        replies[2].0,
        topic_of("d", "thing/event/property/batch/post_reply")
    );
    let state = broker.hub.device_state(&identity("d")).unwrap();
    let power = state.property("Power").unwrap();
    assert_eq!(
        (power.value.clone(), power.time),
        (json!("eco"), UnixMillis(3000))
    );
    assert_eq!(state.property("Mode").unwrap().value, 4);
}

#[test]
fn unsubscribing_an_auto_subscribed_filter_stops_it_until_subscribed_again() {
    let mut broker = Broker::new(&["c3"]);
    let (conn, _) = broker.connect_device_with("c3", true, "_ss=1,ext=0");
    // The C SDK 3.2 turns event replies off this way.
    let filter = topic_of("c3", "thing/event/+/post_reply");
    broker.send(conn, unsubscribe(1, &[&filter]));
    assert!(matches!(
        broker.output(conn).as_slice(),
        [Packet::UnsubAck(_)]
    ));
    post(
        &mut broker,
        conn,
        "c3",
        "thing/event/alarm/post",
        r#"{"id":"1","params":{}}"#,
    );
    assert!(received(&mut broker, conn).is_empty());
    // Other system downlinks still arrive.
    post(
        &mut broker,
        conn,
        "c3",
        "thing/deviceinfo/update",
        r#"{"id":"2","params":[{"attrKey":"room","attrValue":"3"}]}"#,
    );
    assert_eq!(received(&mut broker, conn).len(), 1);
    broker.send(conn, subscribe(2, &[(&filter, QoS::AtMostOnce)]));
    broker.output(conn);
    post(
        &mut broker,
        conn,
        "c3",
        "thing/event/alarm/post",
        r#"{"id":"3","params":{}}"#,
    );
    assert_eq!(received(&mut broker, conn).len(), 1);
}

#[test]
fn an_rrpc_call_reaches_an_auto_subscribed_device_and_not_a_silent_one() {
    let mut broker = Broker::new(&["c4", "plain"]);
    let (c4, _) = broker.connect_device_with("c4", true, C_SDK);
    let (plain, _) = broker.connect_device("plain", true);
    let now = broker.now;
    let call = broker
        .hub
        .rrpc_call(
            &identity("c4"),
            "ping".into(),
            Duration::from_secs(5),
            None,
            now,
        )
        .unwrap();
    let silent = broker
        .hub
        .rrpc_call(
            &identity("plain"),
            "ping".into(),
            Duration::from_secs(5),
            None,
            now,
        )
        .unwrap();
    broker.pump();
    let got = received_raw(&mut broker, c4);
    assert_eq!(
        got[0].0,
        format!("/sys/{}/c4/rrpc/request/{}", support::PK, call.0)
    );
    broker.send(
        c4,
        publish(
            &format!("/sys/{}/c4/rrpc/response/{}", support::PK, call.0),
            "pong",
            QoS::AtMostOnce,
            0,
        ),
    );
    assert_eq!(
        broker.outcome(call),
        Some(&RrpcOutcome::Success("pong".into()))
    );
    assert_eq!(broker.outcome(silent), Some(&RrpcOutcome::HalfConn));
    assert!(received(&mut broker, plain).is_empty());
}

#[test]
fn a_custom_topic_call_to_an_ext_device_comes_on_the_plain_topic_it_subscribed_to() {
    let mut broker = Broker::new(&["c4"]);
    let (c4, _) = broker.connect_device_with("c4", true, C_SDK);
    let user_get = format!("/{}/c4/user/get", support::PK);
    broker.send(c4, subscribe(1, &[(&user_get, QoS::AtMostOnce)]));
    broker.output(c4);
    let topic = aliot_topic::TopicName::new(&user_get, &Default::default()).unwrap();
    let now = broker.now;
    let call = broker
        .hub
        .rrpc_call(
            &identity("c4"),
            "q".into(),
            Duration::from_secs(5),
            Some(&topic),
            now,
        )
        .unwrap();
    broker.pump();
    let got = received_raw(&mut broker, c4);
    let wrapped = format!("/ext/rrpc/{}{user_get}", call.0);
    assert_eq!(got, [(wrapped.clone(), "q".to_owned())]);
    broker.send(c4, publish(&wrapped, "a", QoS::AtMostOnce, 0));
    assert_eq!(
        broker.outcome(call),
        Some(&RrpcOutcome::Success("a".into()))
    );
}

#[test]
fn property_set_and_async_services_become_downlink_results() {
    let mut broker = Broker::new(&["py"]);
    let (conn, _) = broker.connect_device_with("py", true, "_ss=1,ext=1");
    let now = broker.now;
    let (id, delivery) = broker
        .hub
        .set_device_property(&identity("py"), &json!({"Switch":1}), now);
    assert_eq!(delivery, DeviceDelivery::Sent);
    broker.pump();
    let got = received(&mut broker, conn);
    assert_eq!(got[0].0, topic_of("py", "thing/service/property/set"));
    assert_eq!(
        got[0].1,
        json!({"id": id.0.to_string(), "version":"1.0", "params":{"Switch":1}, "method":"thing.service.property.set"})
    );
    // The device answers (Python: QoS 1).
    broker.send(
        conn,
        publish(
            &topic_of("py", "thing/service/property/set_reply"),
            &format!(r#"{{"id":"{}","code":200,"data":{{}}}}"#, id.0),
            QoS::AtLeastOnce,
            9,
        ),
    );
    assert!(matches!(
        broker.output(conn).as_slice(),
        [Packet::PubAck(_)]
    ));
    let (call, _) = broker
        .hub
        .invoke_service(&identity("py"), "reboot", &json!({"delay":1}), now)
        .unwrap();
    broker.pump();
    let got = received(&mut broker, conn);
    assert_eq!(
        (got[0].0.as_str(), got[0].1["method"].as_str()),
        (
            topic_of("py", "thing/service/reboot").as_str(),
            Some("thing.service.reboot")
        )
    );
    broker.send(
        conn,
        publish(
            &topic_of("py", "thing/service/reboot_reply"),
            &format!(
                r#"{{"id":"{}","code":460,"data":{{"why":"busy"}}}}"#,
                call.0
            ),
            QoS::AtMostOnce,
            0,
        ),
    );
    let results: Vec<_> = broker.hub.downlink_results().cloned().collect();
    assert_eq!(results.len(), 2);
    assert_eq!(
        (
            results[0].1.request_id,
            results[0].1.code,
            results[0].1.message.as_str()
        ),
        (Some(id.0), 200, "success")
    );
    assert_eq!(results[1].1.topic, topic_of("py", "thing/service/reboot"));
    assert_eq!(
        (results[1].1.code, results[1].1.data.clone()),
        (460, json!({"why":"busy"}))
    );
    // Offline devices are not sent one; a bad identifier is refused.
    let (_, offline) = broker
        .hub
        .set_device_property(&identity("nobody"), &json!({}), now);
    assert_eq!(offline, DeviceDelivery::Offline);
    assert!(
        broker
            .hub
            .invoke_service(&identity("py"), "a/b", &json!({}), now)
            .is_err()
    );
}

#[test]
fn a_synchronous_service_goes_in_each_devices_wire_form() {
    let mut broker = Broker::new(&["c4", "node"]);
    let (c4, _) = broker.connect_device_with("c4", true, C_SDK);
    let (node, _) = broker.connect_device("node", true);
    broker.send(
        node,
        subscribe(
            1,
            &[(&topic_of("node", "rrpc/request/+"), QoS::AtLeastOnce)],
        ),
    );
    broker.output(node);
    let now = broker.now;
    let timeout = Duration::from_secs(8);
    let ext = broker
        .hub
        .invoke_service_sync(&identity("c4"), "add", &json!({"a":1,"b":2}), timeout, now)
        .unwrap();
    let sys = broker
        .hub
        .invoke_service_sync(&identity("node"), "add", &json!({"a":1}), timeout, now)
        .unwrap();
    broker.pump();
    let got = received(&mut broker, c4);
    let ext_topic = format!(
        "/ext/rrpc/{}/sys/{}/c4/thing/service/add",
        ext.0,
        support::PK
    );
    assert_eq!(got[0].0, ext_topic);
    assert_eq!(got[0].1["method"], "thing.service.add");
    assert_eq!(got[0].1["params"], json!({"a":1,"b":2}));
    // The C SDK answers on the same topic.
    let answer = format!(
        r#"{{"id":"{}","code":200,"data":{{"sum":3}}}}"#,
        got[0].1["id"].as_str().unwrap()
    );
    broker.send(c4, publish(&ext_topic, &answer, QoS::AtMostOnce, 0));
    assert_eq!(
        broker.outcome(ext),
        Some(&RrpcOutcome::Success(answer.into()))
    );
    let got = received(&mut broker, node);
    assert_eq!(
        got[0].0,
        format!("/sys/{}/node/rrpc/request/{}", support::PK, sys.0)
    );
    assert_eq!(got[0].1["method"], "thing.service.add");
    broker.advance(timeout);
    assert_eq!(broker.outcome(sys), Some(&RrpcOutcome::Timeout));
}

#[test]
fn ntp_is_answered_at_once_with_strings() {
    let (mut broker, conn) = auto_subscribed("d");
    broker.advance(Duration::from_millis(1234));
    let request = format!("/ext/ntp/{}/d/request", support::PK);
    broker.send(
        conn,
        publish(
            &request,
            r#"{"deviceSendTime":"1571724098000"}"#,
            QoS::AtMostOnce,
            0,
        ),
    );
    let now = (WALL_AT_START + broker.now.as_millis()).to_string();
    let got = received_raw(&mut broker, conn);
    assert_eq!(
        got,
        [(
            format!("/ext/ntp/{}/d/response", support::PK),
            format!(
                r#"{{"deviceSendTime":"1571724098000","serverRecvTime":"{now}","serverSendTime":"{now}"}}"#
            ),
        )]
    );
    // A number is echoed as a string; a request without its time gets nothing.
    broker.send(
        conn,
        publish(&request, r#"{"deviceSendTime":1234}"#, QoS::AtMostOnce, 0),
    );
    assert_eq!(received(&mut broker, conn)[0].1["deviceSendTime"], "1234");
    broker.send(conn, publish(&request, r#"{}"#, QoS::AtMostOnce, 0));
    assert!(received(&mut broker, conn).is_empty());
    assert_eq!(broker.hub.counters().services.malformed, 1);
}

#[test]
fn the_shadow_keeps_versions_and_pushes_control_when_an_application_changes_it() {
    let (mut broker, conn) = auto_subscribed("d");
    let update = format!("/shadow/update/{}/d", support::PK);
    let get = format!("/shadow/get/{}/d", support::PK);
    let send = |broker: &mut Broker, payload: &str| {
        broker.send(conn, publish(&update, payload, QoS::AtLeastOnce, 1));
        let got = received(broker, conn);
        assert_eq!(got.len(), 1, "{payload}");
        assert_eq!(got[0].0, get);
        got[0].1.clone()
    };
    let reply = send(
        &mut broker,
        r#"{"method":"update","state":{"reported":{"color":"red"}},"version":1,"clientToken":"pk.d-1"}"#,
    );
    assert_eq!(reply["method"], "reply");
    assert_eq!(reply["clientToken"], "pk.d-1");
    assert_eq!(reply["payload"], json!({"status":"success","version":1}));
    // A version not above the shadow's is refused, and changes nothing.
    let reply = send(
        &mut broker,
        r#"{"method":"update","state":{"reported":{"color":"blue"}},"version":1}"#,
    );
    assert_eq!(reply["payload"]["status"], "error");
    assert_eq!(reply["payload"]["content"]["errorcode"], "403");
    for (payload, code) in [
        ("nope", "400"),
        (r#"{"state":{}}"#, "401"),
        (r#"{"method":"update","version":9}"#, "402"),
        (r#"{"method":"patch"}"#, "406"),
    ] {
        assert_eq!(
            send(&mut broker, payload)["payload"]["content"]["errorcode"],
            code,
            "{payload}"
        );
    }
    // An application sets the desired state: the device gets `control` at once.
    let now = broker.now;
    let app = ShadowRequest::parse(
        br#"{"method":"update","state":{"desired":{"color":"green"}},"version":2}"#,
    );
    let (version, delivery) = broker
        .hub
        .update_device_shadow(&identity("d"), &app, now)
        .unwrap();
    assert_eq!((version, delivery), (2, DeviceDelivery::Sent));
    broker.pump();
    let got = received(&mut broker, conn);
    assert_eq!(got[0].1["method"], "control");
    assert_eq!(got[0].1["version"], 2);
    assert_eq!(
        got[0].1["payload"]["state"],
        json!({"reported":{"color":"red"},"desired":{"color":"green"}})
    );
    // The device applies it and clears desired; `get` shows the document.
    send(
        &mut broker,
        r#"{"method":"update","state":{"reported":{"color":"green"},"desired":"null"},"version":3}"#,
    );
    let doc = send(&mut broker, r#"{"method":"get","clientToken":"t"}"#);
    assert_eq!(doc["version"], 3);
    assert_eq!(
        doc["payload"]["state"],
        json!({"reported":{"color":"green"},"desired":{}})
    );
    let at = (WALL_AT_START + broker.now.as_millis()) / 1000;
    assert_eq!(
        doc["payload"]["metadata"]["reported"]["color"]["timestamp"],
        at
    );
    // The top-level version comes before the payload (the C SDK 4.x takes the first).
    let raw = broker
        .hub
        .device_state(&identity("d"))
        .unwrap()
        .shadow()
        .to_json();
    assert!(
        String::from_utf8(raw)
            .unwrap()
            .starts_with(r#"{"state":{"reported":{"color":"green"}"#)
    );
    // Delete an attribute, then clear with -1.
    let reply = send(
        &mut broker,
        r#"{"method":"delete","state":{"reported":{"color":"null"}},"version":4}"#,
    );
    assert_eq!(reply["payload"]["version"], 4);
    send(
        &mut broker,
        r#"{"method":"update","state":{"reported":{}},"version":-1}"#,
    );
    assert_eq!(
        broker
            .hub
            .device_state(&identity("d"))
            .unwrap()
            .shadow()
            .version(),
        0
    );
}

#[test]
fn an_ota_job_is_pushed_when_the_device_comes_online_until_it_reports_the_version() {
    let mut broker = Broker::new(&["d"]);
    let job = OtaJob {
        id: 1626969597470,
        module: "MCU".into(),
        version: "2.0.0".into(),
        url: "https://example.com/fw.bin".into(),
        size: 432945,
        sign_method: OtaSignMethod::Md5,
        sign: "93230c3bde425a9d7984a594ac55ea1e".into(),
    }
    .validated()
    .unwrap();
    let now = broker.now;
    assert_eq!(
        broker.hub.start_ota(&identity("d"), job, now),
        DeviceDelivery::Offline
    );
    let (conn, _) = broker.connect_device_with("d", true, "_ss=1");
    let got = received_raw(&mut broker, conn);
    assert_eq!(got, [(
        format!("/ota/device/upgrade/{}/d", support::PK),
        r#"{"code":"1000","data":{"md5":"93230c3bde425a9d7984a594ac55ea1e","module":"MCU","sign":"93230c3bde425a9d7984a594ac55ea1e","signMethod":"Md5","size":432945,"url":"https://example.com/fw.bin","version":"2.0.0"},"id":1626969597470,"message":"success"}"#.to_owned(),
    )]);
    // Pulled: the same data.
    post(
        &mut broker,
        conn,
        "d",
        "thing/ota/firmware/get",
        r#"{"id":"8","params":{"module":"MCU"}}"#,
    );
    let got = received(&mut broker, conn);
    assert_eq!(got[0].1["data"]["version"], "2.0.0");
    // Progress, then the new version: the job is done and not pushed again.
    let progress = format!("/ota/device/progress/{}/d", support::PK);
    broker.send(
        conn,
        publish(
            &progress,
            r#"{"id":1,"params":{"step":"45","desc":"","module":"MCU"}}"#,
            QoS::AtMostOnce,
            0,
        ),
    );
    let inform = format!("/ota/device/inform/{}/d", support::PK);
    broker.send(
        conn,
        publish(
            &inform,
            r#"{"id":"2","params":{"version":"2.0.0","module":"MCU"}}"#,
            QoS::AtLeastOnce,
            3,
        ),
    );
    broker.output(conn);
    broker.drop_transport(conn);
    let (conn, _) = broker.connect_device_with("d", true, "_ss=1");
    assert!(received(&mut broker, conn).is_empty());
    let state = broker.hub.device_state(&identity("d")).unwrap();
    let (_, module) = state
        .ota_modules()
        .find(|(name, _)| *name == "MCU")
        .unwrap();
    assert_eq!(
        (module.version.as_deref(), module.last_outcome),
        (Some("2.0.0"), Some(true))
    );
}

#[test]
fn tags_and_desired_values_are_kept_per_device() {
    let (mut broker, conn) = auto_subscribed("d");
    post(
        &mut broker,
        conn,
        "d",
        "thing/deviceinfo/update",
        r#"{"id":"1","params":[{"attrKey":"room","attrValue":"kitchen"},{"attrKey":"floor","attrValue":"2"}]}"#,
    );
    post(
        &mut broker,
        conn,
        "d",
        "thing/deviceinfo/delete",
        r#"{"id":"2","params":[{"attrKey":"floor"}]}"#,
    );
    assert_eq!(received(&mut broker, conn).len(), 2);
    let tags: Vec<_> = broker
        .hub
        .device_state(&identity("d"))
        .unwrap()
        .tags()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(tags, [("room".to_owned(), "kitchen".to_owned())]);
    let items = json!({"Power":"on"});
    broker
        .hub
        .set_desired_properties(&identity("d"), items.as_object().unwrap())
        .unwrap();
    post(
        &mut broker,
        conn,
        "d",
        "thing/property/desired/get",
        r#"{"id":"3","params":["Power","Missing"]}"#,
    );
    let got = received(&mut broker, conn);
    assert_eq!(
        got[0].1["data"],
        json!({"Power":{"value":"on","version":1}})
    );
    post(
        &mut broker,
        conn,
        "d",
        "thing/property/desired/delete",
        r#"{"id":"4","params":{"Power":{"version":1}}}"#,
    );
    received(&mut broker, conn);
    assert!(
        broker
            .hub
            .device_state(&identity("d"))
            .unwrap()
            .desired()
            .next()
            .is_none()
    );
}

#[test]
fn a_server_publish_on_a_system_topic_reaches_an_auto_subscribed_device() {
    let (mut broker, conn) = auto_subscribed("d");
    let reached = broker.publish(&topic_of("d", "thing/config/push"), "{}", QoS::AtLeastOnce);
    assert_eq!(reached, 1);
    assert_eq!(received(&mut broker, conn).len(), 1);
}

#[test]
fn a_flood_of_posts_from_one_device_leaves_others_answered() {
    let mut broker = Broker::new(&["noisy", "calm"]);
    let (noisy, _) = broker.connect_device_with("noisy", true, "_ss=1");
    let (calm, _) = broker.connect_device_with("calm", true, "_ss=1");
    for i in 0..2000 {
        post(
            &mut broker,
            noisy,
            "noisy",
            "thing/event/property/post",
            &format!(r#"{{"id":"{i}","params":{{"p{}":1}}}}"#, i % 1500),
        );
    }
    let replies = received(&mut broker, noisy);
    // Past 1,024 properties the posts are refused with 429, each answered.
    assert_eq!(replies.len(), 2000);
    assert!(replies.iter().any(|(_, r)| r["code"] == 429));
    post(
        &mut broker,
        calm,
        "calm",
        "thing/event/property/post",
        r#"{"id":"1","params":{"a":1}}"#,
    );
    assert_eq!(received(&mut broker, calm)[0].1["code"], 200);
}

#[test]
fn a_device_without_ss_gets_its_pending_upgrade_once_it_subscribes_to_it() {
    let mut broker = Broker::new(&["c3"]);
    let job = OtaJob {
        id: 7,
        module: String::new(),
        version: "2.0".into(),
        url: "https://example.com/fw".into(),
        size: 10,
        sign_method: OtaSignMethod::Sha256,
        sign: "a".repeat(64),
    }
    .validated()
    .unwrap();
    let now = broker.now;
    broker.hub.start_ota(&identity("c3"), job, now);
    // The C SDK 3.x without MQTT_AUTO_SUBSCRIBE: nothing at CONNACK, the push at SUBSCRIBE.
    let (conn, _) = broker.connect_device("c3", false);
    assert!(received(&mut broker, conn).is_empty());
    let upgrade = format!("/ota/device/upgrade/{}/c3", support::PK);
    broker.send(conn, subscribe(1, &[(&upgrade, QoS::AtLeastOnce)]));
    let got = received(&mut broker, conn);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, upgrade);
    assert_eq!(got[0].1["data"]["signMethod"], "SHA256");
    // Subscribing again, or coming back to the kept session, pushes no second copy while the
    // first is not acknowledged.
    broker.send(conn, subscribe(2, &[(&upgrade, QoS::AtLeastOnce)]));
    assert!(received(&mut broker, conn).is_empty());
    broker.drop_transport(conn);
    let (conn, present) = broker.connect_device("c3", false);
    assert!(present);
    let got = broker.output(conn);
    assert_eq!(
        publishes(&got).len(),
        1,
        "the kept copy, re-sent with DUP: {got:?}"
    );
    assert!(publishes(&got)[0].dup);
}

#[test]
fn one_device_cannot_crowd_out_the_others_or_grow_without_bound() {
    let mut broker = Broker::new(&["noisy", "calm"]);
    let (noisy, _) = broker.connect_device_with("noisy", true, "_ss=1");
    let (calm, _) = broker.connect_device_with("calm", true, "_ss=1");
    let now = broker.now;
    let (id, _) = broker
        .hub
        .set_device_property(&identity("calm"), &json!({"a":1}), now);
    broker.pump();
    received(&mut broker, calm);
    broker.send(
        calm,
        publish(
            &topic_of("calm", "thing/service/property/set_reply"),
            &format!(r#"{{"id":"{}","code":200,"data":{{}}}}"#, id.0),
            QoS::AtMostOnce,
            0,
        ),
    );
    // Replies nobody asked for, 2,000 of them: the noisy device drops its own oldest.
    for i in 0..2000 {
        post(
            &mut broker,
            noisy,
            "noisy",
            "thing/service/x_reply",
            &format!(r#"{{"id":"{i}","code":200,"data":{{}}}}"#),
        );
    }
    let results: Vec<_> = broker
        .hub
        .downlink_results()
        .map(|(device, _)| device.device_name.clone())
        .collect();
    assert_eq!(
        results.iter().filter(|d| *d == "noisy").count(),
        aliot_core::hub::MAX_DOWNLINK_RESULTS_PER_DEVICE
    );
    assert!(results.iter().any(|d| d == "calm"));
    // A value past 8 KiB is refused; values past the device's budget are too.
    let big = "x".repeat(9 * 1024);
    post(
        &mut broker,
        noisy,
        "noisy",
        "thing/event/property/post",
        &format!(r#"{{"id":"1","params":{{"big":"{big}"}}}}"#),
    );
    assert_eq!(received(&mut broker, noisy)[0].1["code"], 460);
    let seven = "x".repeat(7 * 1024);
    let mut codes = Vec::new();
    for i in 0..40 {
        post(
            &mut broker,
            noisy,
            "noisy",
            "thing/event/property/post",
            &format!(r#"{{"id":"1","params":{{"p{i}":"{seven}"}}}}"#),
        );
        codes.push(received(&mut broker, noisy)[0].1["code"].as_i64().unwrap());
    }
    assert!(
        codes.starts_with(&[200; 30]) && codes.ends_with(&[429; 4]),
        "{codes:?}"
    );
}

#[test]
fn the_server_does_not_send_a_device_its_own_uplinks_and_observers_see_the_posts() {
    let mut broker = Broker::open(&["d"]);
    let (device, _) = broker.connect_device_with("d", true, "_ss=1");
    // An uplink topic of the device is not one of its system downlinks.
    broker.publish(
        &topic_of("d", "thing/event/property/post"),
        "{}",
        QoS::AtLeastOnce,
    );
    assert!(received(&mut broker, device).is_empty());
    // A tool in open mode watching the device's topics sees its posts, as before the services.
    let tool = broker.accept();
    broker.send(tool, Packet::from(support::plain_connect("watcher", true)));
    broker.output(tool);
    broker.send(tool, subscribe(1, &[("/sys/#", QoS::AtMostOnce)]));
    broker.output(tool);
    post(
        &mut broker,
        device,
        "d",
        "thing/event/property/post",
        r#"{"id":"1","params":{"a":1}}"#,
    );
    let seen = received(&mut broker, tool);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, topic_of("d", "thing/event/property/post"));
    assert_eq!(
        received(&mut broker, device).len(),
        1,
        "and the device its reply"
    );
}
