//! The server-side subscription's consumer groups through the sans-IO broker: what each group
//! gets, how its consumers share it, credit, settlement and redelivery, the backlog's limits,
//! and the backlog across a restart. Whole conversations with a manual clock.

mod support;

use std::time::Duration;

use aliot_core::codec::QoS;
use aliot_core::hub::{BacklogLimits, ConsumerGroupConfig, ConsumerId, HubConfig, MessageKinds};
use aliot_core::server::ServerConfig;
use serde_json::Value;
use support::{Broker, PK, publish};

fn group(id: &str, products: &[&str], kinds: MessageKinds) -> ConsumerGroupConfig {
    ConsumerGroupConfig {
        id: id.into(),
        products: products.iter().map(|p| (*p).into()).collect(),
        kinds,
    }
}

fn broker_with(groups: Vec<ConsumerGroupConfig>, limits: BacklogLimits) -> Broker {
    let hub = HubConfig {
        consumer_groups: groups,
        backlog_limits: limits,
        ..HubConfig::default()
    };
    Broker::with(&["d1", "d2"], false, hub, ServerConfig::default())
}

/// The (topic, body) of what `consumer` got since the last look, settling each.
fn take(broker: &mut Broker, consumer: ConsumerId, settle: bool) -> Vec<(String, Vec<u8>)> {
    let (mine, others): (Vec<_>, Vec<_>) = std::mem::take(&mut broker.forwarded)
        .into_iter()
        .partition(|(c, _, _)| *c == consumer);
    broker.forwarded = others;
    mine.into_iter()
        .map(|(_, message, _)| {
            if settle {
                broker.hub.forward_settled(consumer, message.message_id);
            }
            (message.topic.to_string(), message.payload.to_vec())
        })
        .collect()
}

fn update(device: &str) -> String {
    format!("/{PK}/{device}/update")
}

#[test]
fn a_devices_messages_and_status_reach_a_consumer_and_leave_the_backlog_once_settled() {
    let mut broker = broker_with(
        vec![group("g1", &[], MessageKinds::ALL)],
        BacklogLimits::default(),
    );
    let consumer = broker.hub.attach_consumer("g1").unwrap();
    let (conn, _) = broker.connect_device("d1", true);
    broker.send(conn, publish(&update("d1"), "21.5", QoS::AtLeastOnce, 1));
    broker.output(conn);
    // Nothing without credit: it waits in the backlog.
    assert!(broker.forwarded.is_empty());
    let stats = &broker.hub.consumer_group_stats()[0];
    assert_eq!((stats.backlog, stats.in_flight), (2, 0));

    broker.hub.consumer_credit(consumer, 10);
    broker.pump();
    let got = take(&mut broker, consumer, true);
    assert_eq!(got.len(), 2);
    let (topic, status) = &got[0];
    assert_eq!(topic, &format!("/as/mqtt/status/{PK}/d1"));
    let status: Value = serde_json::from_slice(status).unwrap();
    assert_eq!(status["status"], "online");
    assert_eq!(status["deviceName"], "d1");
    assert_eq!(status["clientIp"], "");
    assert!(status["utcTime"].as_str().unwrap().ends_with('Z'));
    assert_eq!(got[1], (update("d1"), b"21.5".to_vec()));
    let stats = &broker.hub.consumer_group_stats()[0];
    assert_eq!((stats.backlog, stats.delivered, stats.settled), (0, 2, 2));

    broker.drop_transport(conn);
    let got = take(&mut broker, consumer, true);
    assert_eq!(got.len(), 1);
    let status: Value = serde_json::from_slice(&got[0].1).unwrap();
    assert_eq!(status["status"], "offline");
}

#[test]
fn consumers_of_a_group_share_and_every_group_gets_everything() {
    let mut broker = broker_with(
        vec![
            group("shared", &[], MessageKinds::UPSTREAM),
            group("audit", &[], MessageKinds::UPSTREAM),
            group("other-product", &["a1Other"], MessageKinds::ALL),
            group("status-only", &[], MessageKinds::STATUS),
        ],
        BacklogLimits::default(),
    );
    let a = broker.hub.attach_consumer("shared").unwrap();
    let b = broker.hub.attach_consumer("shared").unwrap();
    let audit = broker.hub.attach_consumer("audit").unwrap();
    let other = broker.hub.attach_consumer("other-product").unwrap();
    for consumer in [a, b, audit, other] {
        broker.hub.consumer_credit(consumer, 100);
    }
    assert!(broker.hub.attach_consumer("nobody").is_err());
    let (conn, _) = broker.connect_device("d1", true);
    for n in 0..10 {
        broker.send(
            conn,
            publish(&update("d1"), &n.to_string(), QoS::AtMostOnce, 0),
        );
    }
    let (got_a, got_b) = (take(&mut broker, a, true), take(&mut broker, b, true));
    assert_eq!((got_a.len(), got_b.len()), (5, 5), "shared in turn");
    assert_eq!(
        take(&mut broker, audit, true).len(),
        10,
        "each group gets everything"
    );
    assert!(
        take(&mut broker, other, true).is_empty(),
        "another product's group gets nothing"
    );
    let stats = broker.hub.consumer_group_stats();
    assert_eq!(
        stats[3].backlog, 1,
        "the status-only group holds the online status"
    );
}

#[test]
fn what_a_consumer_held_goes_to_the_next_when_it_goes_away_or_gives_it_back() {
    let mut broker = broker_with(
        vec![group("g", &[], MessageKinds::UPSTREAM)],
        BacklogLimits::default(),
    );
    let first = broker.hub.attach_consumer("g").unwrap();
    broker.hub.consumer_credit(first, 3);
    let (conn, _) = broker.connect_device("d1", true);
    for n in 0..5 {
        broker.send(
            conn,
            publish(&update("d1"), &format!("m{n}"), QoS::AtMostOnce, 0),
        );
    }
    // Three in flight to the first consumer (its credit), two waiting.
    let held: Vec<_> = std::mem::take(&mut broker.forwarded);
    assert_eq!(held.len(), 3);
    broker.hub.forward_settled(first, held[0].1.message_id);
    broker.hub.forward_released(first, held[1].1.message_id);
    let second = broker.hub.attach_consumer("g").unwrap();
    broker.hub.detach_consumer(first);
    broker.hub.consumer_credit(second, 10);
    broker.pump();
    let got: Vec<_> = std::mem::take(&mut broker.forwarded);
    let bodies: Vec<String> = got
        .iter()
        .map(|(_, m, _)| String::from_utf8(m.payload.to_vec()).unwrap())
        .collect();
    // The released and the held one again (marked as redeliveries), then the two waiting.
    assert_eq!(bodies, ["m2", "m1", "m3", "m4"]);
    let redelivered: Vec<bool> = got.iter().map(|(_, _, again)| *again).collect();
    assert_eq!(redelivered, [true, true, false, false]);
    let stats = &broker.hub.consumer_group_stats()[0];
    assert_eq!((stats.redelivered, stats.backlog), (2, 4));
}

#[test]
fn a_full_or_old_backlog_drops_its_oldest_waiting_messages_and_counts_them() {
    let limits = BacklogLimits {
        max_messages: 3,
        max_bytes: 1 << 20,
        max_age: Some(Duration::from_secs(60)),
    };
    let mut broker = broker_with(vec![group("g", &[], MessageKinds::UPSTREAM)], limits);
    let consumer = broker.hub.attach_consumer("g").unwrap();
    let (conn, _) = broker.connect_device("d1", true);
    for n in 0..5 {
        broker.send(
            conn,
            publish(&update("d1"), &format!("m{n}"), QoS::AtMostOnce, 0),
        );
    }
    let stats = &broker.hub.consumer_group_stats()[0];
    assert_eq!((stats.backlog, stats.dropped), (3, 2));
    broker.advance(Duration::from_secs(30));
    broker.send(conn, publish(&update("d1"), "late", QoS::AtMostOnce, 0));
    broker.advance(Duration::from_secs(31));
    // The three from before are a minute old: gone; the late one waits.
    let stats = &broker.hub.consumer_group_stats()[0];
    assert_eq!((stats.backlog, stats.dropped), (1, 5));
    broker.hub.consumer_credit(consumer, 10);
    broker.pump();
    assert_eq!(
        take(&mut broker, consumer, true),
        [(update("d1"), b"late".to_vec())]
    );
}

#[test]
fn the_backlog_survives_a_restart_and_leaves_the_store_when_settled() {
    let hub = HubConfig {
        consumer_groups: vec![
            group("kept", &[], MessageKinds::UPSTREAM),
            group("idle", &[], MessageKinds::UPSTREAM),
        ],
        ..HubConfig::default()
    };
    let mut broker = Broker::durable(&["d1"], hub);
    let (device, _) = broker.connect_device("d1", true);
    broker.send(
        device,
        publish(&update("d1"), "before", QoS::AtLeastOnce, 1),
    );
    broker.output(device);
    let consumer = broker.hub.attach_consumer("kept").unwrap();
    broker.hub.consumer_credit(consumer, 1);
    broker.pump();
    // Handed out, not settled: still in the backlog, in the store too.
    assert_eq!(broker.forwarded.len(), 1);
    let id = broker.forwarded[0].1.message_id;
    assert_eq!(broker.store.as_ref().unwrap().backlogs.len(), 2);

    broker.restart(Duration::from_secs(5));
    let stats = broker.hub.consumer_group_stats();
    assert_eq!(stats[0].backlog, 1);
    let consumer = broker.hub.attach_consumer("kept").unwrap();
    broker.hub.consumer_credit(consumer, 1);
    broker.pump();
    let again = broker.forwarded.last().unwrap();
    assert_eq!(
        (again.1.message_id, again.1.topic.as_str()),
        (id, &update("d1")[..])
    );
    broker.hub.forward_settled(consumer, id);
    broker.pump();
    let kept: Vec<_> = broker
        .store
        .as_ref()
        .unwrap()
        .backlogs
        .keys()
        .cloned()
        .collect();
    // The idle group's copy waits for its consumers.
    assert_eq!(kept, [("idle".to_owned(), id)]);
}

/// A PUBLISH of a device on one of its system topics.
fn post_sys(broker: &mut Broker, conn: aliot_core::hub::ConnId, topic: &str, payload: &str) {
    broker.send(conn, publish(topic, payload, QoS::AtMostOnce, 0));
    broker.output(conn);
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap()
}

#[test]
fn thing_model_data_downlink_results_and_ota_come_in_the_platforms_forms() {
    let mut broker = broker_with(
        vec![
            group("thing", &[], MessageKinds::THING_MODEL),
            group("results", &[], MessageKinds::DOWNLINK_RESULT),
            group("ota", &[], MessageKinds::OTA),
            group("raw", &[], MessageKinds::UPSTREAM),
        ],
        BacklogLimits::default(),
    );
    let consumers: Vec<ConsumerId> = ["thing", "results", "ota", "raw"]
        .iter()
        .map(|group| broker.hub.attach_consumer(group).unwrap())
        .collect();
    for consumer in &consumers {
        broker.hub.consumer_credit(*consumer, 100);
    }
    let (thing, results, ota, raw) = (consumers[0], consumers[1], consumers[2], consumers[3]);
    let (conn, _) = broker.connect_device_with("d1", true, "_ss=1");
    broker.output(conn);
    let sys = |rest: &str| format!("/sys/{PK}/d1/{rest}");

    // Properties: with a time of their own, or the platform's.
    post_sys(
        &mut broker,
        conn,
        &sys("thing/event/property/post"),
        r#"{"id":"7","version":"1.0","params":{"Power":"on","Temp":{"value":21.5,"time":1700000000123}},"method":"thing.event.property.post"}"#,
    );
    let got = take(&mut broker, thing, true);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, format!("/{PK}/d1/thing/event/property/post"));
    let posted = json_of(&got[0].1);
    let wall = posted["gmtCreate"].as_u64().unwrap();
    assert!(wall > 1_700_000_000_000);
    assert_eq!(posted["iotId"], "iot-d1");
    assert_eq!(posted["requestId"], "7");
    assert_eq!(posted["productKey"], PK);
    assert_eq!(posted["deviceName"], "d1");
    assert_eq!(posted["checkFailedData"], serde_json::json!({}));
    assert_eq!(
        posted["items"],
        serde_json::json!({
            "Power": {"value": "on", "time": wall},
            "Temp": {"value": 21.5, "time": 1_700_000_000_123u64},
        })
    );
    // An event, its output under `value`.
    post_sys(
        &mut broker,
        conn,
        &sys("thing/event/Overheat/post"),
        r#"{"id":8,"params":{"value":{"level":3},"time":1700000000456},"method":"thing.event.Overheat.post"}"#,
    );
    let got = take(&mut broker, thing, true);
    assert_eq!(got[0].0, format!("/{PK}/d1/thing/event/Overheat/post"));
    let event = json_of(&got[0].1);
    assert_eq!(
        (&event["identifier"], &event["requestId"], &event["time"]),
        (
            &Value::from("Overheat"),
            &Value::from("8"),
            &Value::from(1_700_000_000_456u64)
        )
    );
    assert_eq!(event["value"], serde_json::json!({"level": 3}));
    assert_eq!(event["iotId"], "iot-d1");
    // A post the platform refuses is not forwarded.
    post_sys(
        &mut broker,
        conn,
        &sys("thing/event/property/post"),
        r#"{"id":"9","params":[1,2]}"#,
    );
    assert!(take(&mut broker, thing, true).is_empty());
    // The raw system topics are no upstream messages.
    assert!(take(&mut broker, raw, true).is_empty());

    // A property set answered: the downlink result.
    let now = broker.now;
    let (id, _) = broker.hub.set_device_property(
        &support::identity("d1"),
        &serde_json::json!({"Power":"off"}),
        now,
    );
    broker.pump();
    broker.output(conn);
    post_sys(
        &mut broker,
        conn,
        &sys("thing/service/property/set_reply"),
        &format!(r#"{{"id":"{}","code":200,"data":{{}}}}"#, id.0),
    );
    let got = take(&mut broker, results, true);
    assert_eq!(got[0].0, format!("/{PK}/d1/thing/downlink/reply/message"));
    let result = json_of(&got[0].1);
    assert_eq!(result["requestId"], id.0);
    assert_eq!(result["code"], 200);
    assert_eq!(result["iotId"], "iot-d1");
    assert_eq!(result["topic"], sys("thing/service/property/set"));
    assert!(
        take(&mut broker, thing, true).is_empty(),
        "results are their own kind"
    );

    // OTA: a version reported, a job, its success.
    let inform = format!("/ota/device/inform/{PK}/d1");
    post_sys(
        &mut broker,
        conn,
        &inform,
        r#"{"id":"1","params":{"version":"1.0.0","module":"MCU"}}"#,
    );
    // The same version again is no change: not forwarded.
    post_sys(
        &mut broker,
        conn,
        &inform,
        r#"{"id":"2","params":{"version":"1.0.0","module":"MCU"}}"#,
    );
    let got = take(&mut broker, ota, true);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, format!("/{PK}/d1/ota/version/post"));
    let version = json_of(&got[0].1);
    assert_eq!(
        (&version["moduleName"], &version["moduleVersion"]),
        (&Value::from("MCU"), &Value::from("1.0.0"))
    );
    let job = aliot_services::OtaJob {
        id: 42,
        module: "MCU".into(),
        version: "2.0.0".into(),
        url: "https://example.com/fw.bin".into(),
        size: 1,
        sign_method: aliot_services::OtaSignMethod::Md5,
        sign: "93230c3bde425a9d7984a594ac55ea1e".into(),
    }
    .validated()
    .unwrap();
    let now = broker.now;
    broker.hub.start_ota(&support::identity("d1"), job, now);
    broker.pump();
    broker.output(conn);
    post_sys(
        &mut broker,
        conn,
        &inform,
        r#"{"id":"3","params":{"version":"2.0.0","module":"MCU"}}"#,
    );
    let got = take(&mut broker, ota, true);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, format!("/{PK}/d1/ota/upgrade"));
    let upgrade = json_of(&got[0].1);
    assert_eq!(upgrade["status"], "SUCCEEDED");
    assert_eq!(upgrade["srcVersion"], "1.0.0");
    assert_eq!(upgrade["destVersion"], "2.0.0");
    assert_eq!(upgrade["jobId"], "42");
    assert_eq!(upgrade["moduleName"], "MCU");
}

#[test]
fn lifecycle_changes_reach_the_groups_that_take_them_with_the_secret_only_at_creation() {
    use aliot_core::hub::durable::RegisteredDevice;
    use aliot_services::UnixMillis;
    use aliot_services::forward::LifecycleAction;

    let mut broker = broker_with(
        vec![
            group("life", &[PK], MessageKinds::LIFECYCLE),
            group("status", &[], MessageKinds::STATUS),
        ],
        BacklogLimits::default(),
    );
    let life = broker.hub.attach_consumer("life").unwrap();
    let status = broker.hub.attach_consumer("status").unwrap();
    broker.hub.consumer_credit(life, 10);
    broker.hub.consumer_credit(status, 10);
    let device = RegisteredDevice {
        identity: support::identity("new-one"),
        secret: "s3cret".into(),
        iot_id: "IoT-new-one".into(),
        nickname: None,
        created: UnixMillis(1),
        activated: None,
        disabled: false,
        token: None,
        gateway: None,
    };
    let now = broker.now;
    broker
        .hub
        .forward_lifecycle(&device, LifecycleAction::Create, now);
    broker
        .hub
        .forward_lifecycle(&device, LifecycleAction::Disable, now);
    broker.pump();
    let got = take(&mut broker, life, true);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0, format!("/{PK}/new-one/thing/lifecycle"));
    let created = json_of(&got[0].1);
    assert_eq!(
        (
            &created["action"],
            &created["deviceSecret"],
            &created["iotId"]
        ),
        (
            &Value::from("create"),
            &Value::from("s3cret"),
            &Value::from("IoT-new-one")
        )
    );
    let disabled = json_of(&got[1].1);
    assert_eq!(
        (&disabled["action"], &disabled["deviceSecret"]),
        (&Value::from("disable"), &Value::from(""))
    );
    assert!(take(&mut broker, status, true).is_empty(), "not its kind");
    // The status carries the device's iotId too.
    broker.connect_device("d2", true);
    let got = take(&mut broker, status, true);
    assert_eq!(json_of(&got[0].1)["iotId"], "iot-d2");
}
