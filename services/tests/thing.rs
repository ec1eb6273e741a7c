//! The device's side (`thing`) against the platform's side (`DeviceState`): every request a
//! device builds is understood and answered by the platform, and every answer, call and push
//! of the platform is classified by the device.

use aliot_services::{
    AlinkMethod, DeviceDownlink, DeviceMessage, DeviceState, OtaJob, OtaSignMethod, ReplyKind,
    RrpcForm, ShadowRequest, ThingAnswer, ThingRequest, ThingRequests, UnixMillis,
    property_set_reply, service_call, service_reply,
};
use serde_json::{Value, json};

const PK: &str = "a1PK";
const DN: &str = "dev-1";
const NOW: UnixMillis = UnixMillis(1_700_000_000_000);

/// The platform handles `request`; the device classifies the reply.
fn round_trip(device: &mut DeviceState, request: &ThingRequest) -> Option<DeviceDownlink> {
    let message =
        DeviceMessage::parse(&request.topic, &request.payload, PK, DN).expect("a service request");
    let reply = device.handle(message, NOW).reply?;
    Some(DeviceDownlink::parse(&reply.topic, &reply.payload, PK, DN).expect("a downlink"))
}

fn answers(downlink: &DeviceDownlink) -> Option<(ReplyKind, String)> {
    downlink.answers().map(|(kind, id)| (kind, id.to_owned()))
}

fn json_of(payload: &[u8]) -> Value {
    serde_json::from_slice(payload).unwrap()
}

#[test]
fn a_property_post_is_answered_and_matched_by_its_id() {
    let mut requests = ThingRequests::new(PK, DN);
    let mut device = DeviceState::new(PK, DN);
    let first = requests.property_post(&json!({"Power":1}), true);
    let second = requests.property_post(&json!({"Power":2}), true);
    assert_eq!((first.id.as_str(), second.id.as_str()), ("1", "2"));
    let reply = round_trip(&mut device, &second).unwrap();
    assert_eq!(answers(&reply), second.expects);
    let DeviceDownlink::Reply(reply) = reply else {
        panic!("{reply:?}")
    };
    assert!(reply.is_success());
    assert_eq!(reply.method, AlinkMethod::PropertyPost);
    assert_eq!(reply.message, "success");
    assert_eq!(device.property("Power").unwrap().value, 2);
    // `ack` false: no reply is asked for, none comes.
    let silent = requests.property_post(&json!({"Power":3}), false);
    assert_eq!(silent.expects, None);
    assert_eq!(json_of(&silent.payload)["sys"]["ack"], 0);
    assert!(round_trip(&mut device, &silent).is_none());
}

#[test]
fn an_event_post_wraps_its_value_and_names_its_method() {
    let mut requests = ThingRequests::new(PK, DN);
    let mut device = DeviceState::new(PK, DN);
    let event = requests
        .event_post("alarm", &json!({"level":2}), true)
        .unwrap();
    assert_eq!(event.topic, "/sys/a1PK/dev-1/thing/event/alarm/post");
    let body = json_of(&event.payload);
    assert_eq!(body["params"], json!({"value":{"level":2}}));
    assert_eq!(body["method"], "thing.event.alarm.post");
    let DeviceDownlink::Reply(reply) = round_trip(&mut device, &event).unwrap() else {
        panic!()
    };
    assert_eq!(reply.method, AlinkMethod::EventPost("alarm".into()));
    assert_eq!(reply.id.as_deref(), Some("1"));
    assert!(requests.event_post("a/b", &json!({}), true).is_none());
}

#[test]
fn property_sets_and_async_services_are_classified_and_answered_on_their_reply_topics() {
    let set = aliot_services::property_set(PK, DN, 42, &json!({"Light":1}));
    let Some(DeviceDownlink::PropertySet(set)) =
        DeviceDownlink::parse(&set.topic, &set.payload, PK, DN)
    else {
        panic!()
    };
    assert_eq!((set.id.as_str(), &set.params), ("42", &json!({"Light":1})));
    let reply = property_set_reply(&set, &ThingAnswer::done());
    assert_eq!(reply.payload, br#"{"id":"42","code":200,"data":{}}"#);
    // The platform takes the answer as the downlink's result.
    let mut device = DeviceState::new(PK, DN);
    let message = DeviceMessage::parse(&reply.topic, &reply.payload, PK, DN).unwrap();
    let result = device.handle(message, NOW).result.unwrap();
    assert_eq!((result.request_id, result.code), (Some(42), 200));

    let call = service_call(PK, DN, 7, "add", &json!({"a":1,"b":2}));
    let Some(DeviceDownlink::Service(call)) =
        DeviceDownlink::parse(&call.topic, &call.payload, PK, DN)
    else {
        panic!()
    };
    assert_eq!(call.identifier, "add");
    assert_eq!(call.rrpc, None);
    let reply = service_reply(&call, &ThingAnswer::success(json!({"sum":3})));
    assert_eq!(reply.topic, "/sys/a1PK/dev-1/thing/service/add_reply");
    let message = DeviceMessage::parse(&reply.topic, &reply.payload, PK, DN).unwrap();
    let result = device.handle(message, NOW).result.unwrap();
    assert_eq!(
        (result.request_id, result.data),
        (Some(7), json!({"sum":3}))
    );
}

#[test]
fn synchronous_services_come_in_both_rrpc_forms_and_are_answered_on_theirs() {
    let body = br#"{"id":"9","version":"1.0","params":{"x":1},"method":"thing.service.reboot"}"#;
    let ext = "/ext/rrpc/123/sys/a1PK/dev-1/thing/service/reboot";
    let Some(DeviceDownlink::Service(call)) = DeviceDownlink::parse(ext, body, PK, DN) else {
        panic!()
    };
    assert_eq!(call.rrpc.as_ref().unwrap().form, RrpcForm::Ext);
    assert_eq!(call.rrpc.as_ref().unwrap().message_id, "123");
    assert_eq!(
        (call.identifier.as_str(), call.id.as_str()),
        ("reboot", "9")
    );
    let reply = service_reply(&call, &ThingAnswer::error(100001, json!({})));
    assert_eq!(reply.topic, ext);
    assert_eq!(reply.payload, br#"{"id":"9","code":100001,"data":{}}"#);

    let sys = "/sys/a1PK/dev-1/rrpc/request/456";
    let Some(DeviceDownlink::Service(call)) = DeviceDownlink::parse(sys, body, PK, DN) else {
        panic!()
    };
    assert_eq!(call.rrpc.as_ref().unwrap().form, RrpcForm::Sys);
    assert_eq!(call.identifier, "reboot");
    assert_eq!(call.reply_topic, "/sys/a1PK/dev-1/rrpc/response/456");
    // A plain RRPC call (no service method), another device's call, a bad id: not services.
    assert_eq!(DeviceDownlink::parse(sys, b"hello", PK, DN), None);
    assert_eq!(DeviceDownlink::parse(sys, br#"{"id":"1"}"#, PK, DN), None);
    let other = "/ext/rrpc/1/sys/a1PK/dev-2/thing/service/reboot";
    assert_eq!(DeviceDownlink::parse(other, body, PK, DN), None);
    let bad = "/ext/rrpc/x1/sys/a1PK/dev-1/thing/service/reboot";
    assert_eq!(DeviceDownlink::parse(bad, body, PK, DN), None);
}

#[test]
fn ntp_is_matched_by_its_send_time_and_gives_the_synced_time() {
    let mut requests = ThingRequests::new(PK, DN);
    let mut device = DeviceState::new(PK, DN);
    let request = requests.ntp_request(UnixMillis(1000));
    assert_eq!(request.payload, br#"{"deviceSendTime":"1000"}"#);
    let response = round_trip(&mut device, &request).unwrap();
    assert_eq!(answers(&response), request.expects);
    let DeviceDownlink::Ntp(response) = response else {
        panic!()
    };
    assert_eq!(response.server_recv_time, NOW.0);
    // Sent at 1000, received at 1100 on the device's clock: 50 ms on the way back.
    assert_eq!(
        response.synced_time(UnixMillis(1100)),
        Some(UnixMillis(NOW.0 + 50))
    );
}

#[test]
fn shadow_replies_are_matched_by_client_token_and_control_is_told_apart() {
    let mut requests = ThingRequests::new(PK, DN);
    let mut device = DeviceState::new(PK, DN);
    let update = requests.shadow_update(&json!({"color":"red"}), 1);
    let reply = round_trip(&mut device, &update).unwrap();
    assert_eq!(answers(&reply), update.expects);
    let DeviceDownlink::Shadow(reply) = reply else {
        panic!()
    };
    assert!(reply.is_success() && !reply.is_control());
    assert_eq!(reply.version, Some(1));
    // A stale version is refused with its code.
    let stale = requests.shadow_update(&json!({"color":"blue"}), 1);
    let Some(DeviceDownlink::Shadow(refused)) = round_trip(&mut device, &stale) else {
        panic!()
    };
    assert_eq!(
        (refused.status.as_str(), refused.error_code),
        ("error", Some(403))
    );
    let get = requests.shadow_get();
    let Some(DeviceDownlink::Shadow(doc)) = round_trip(&mut device, &get) else {
        panic!()
    };
    assert_eq!(doc.reported().unwrap()["color"], "red");
    assert_eq!(doc.version, Some(1));
    // An application's update becomes a control push, which answers no request.
    let app = ShadowRequest::parse(
        br#"{"method":"update","state":{"desired":{"color":"green"}},"version":2}"#,
    );
    let control = device.update_shadow(&app, NOW).unwrap();
    let control = DeviceDownlink::parse(&control.topic, &control.payload, PK, DN).unwrap();
    assert_eq!(control.answers(), None);
    let DeviceDownlink::Shadow(control) = control else {
        panic!()
    };
    assert!(control.is_control());
    assert_eq!(control.desired().unwrap()["color"], "green");
    assert_eq!(control.version, Some(2));
    let clear = requests.shadow_clear_desired(3);
    let Some(DeviceDownlink::Shadow(cleared)) = round_trip(&mut device, &clear) else {
        panic!()
    };
    assert!(cleared.is_success());
}

#[test]
fn ota_reports_reach_the_platform_and_its_push_is_classified() {
    let mut requests = ThingRequests::new(PK, DN);
    let mut device = DeviceState::new(PK, DN);
    let report = requests.ota_version("MCU", "1.0.0");
    assert_eq!(report.topic, "/ota/device/inform/a1PK/dev-1");
    assert_eq!(report.expects, None);
    assert!(round_trip(&mut device, &report).is_none());
    let modules: Vec<_> = device
        .ota_modules()
        .map(|(name, module)| (name.to_owned(), module.clone()))
        .collect();
    assert_eq!(modules.len(), 1);
    assert_eq!(modules[0].0, "MCU");
    let job = OtaJob {
        id: 77,
        module: "MCU".into(),
        version: "2.0.0".into(),
        url: "https://example.com/fw.bin".into(),
        size: 1024,
        sign_method: OtaSignMethod::Sha256,
        sign: "ab".repeat(32),
    }
    .validated()
    .unwrap();
    let push = device.start_ota(job);
    let Some(DeviceDownlink::Upgrade(upgrade)) =
        DeviceDownlink::parse(&push.topic, &push.payload, PK, DN)
    else {
        panic!()
    };
    assert_eq!(upgrade.id.as_deref(), Some("77"));
    assert_eq!(
        (
            upgrade.module.as_str(),
            upgrade.version.as_str(),
            upgrade.size
        ),
        ("MCU", "2.0.0", 1024)
    );
    assert_eq!(upgrade.sign_method, Some(OtaSignMethod::Sha256));
    assert_eq!(upgrade.sign, "ab".repeat(32));
    let progress = requests.ota_progress("MCU", 45, "downloading");
    assert_eq!(
        json_of(&progress.payload)["params"],
        json!({"step":"45","desc":"downloading","module":"MCU"})
    );
    assert!(DeviceMessage::parse(&progress.topic, &progress.payload, PK, DN).is_some());
}

#[test]
fn other_topics_and_other_devices_are_not_downlinks() {
    for topic in [
        "/a1PK/dev-1/user/get",
        "/sys/a1PK/dev-2/thing/service/property/set",
        "/sys/a1PK/dev-1/thing/service/a/b",
        "/sys/a1PK/dev-1/thing/topo/add_reply",
        "/shadow/get/a1PK/dev-2",
        "/ota/device/upgrade/a1PK/dev-1/x",
        "/ext/ntp/a1PK/dev-1/request",
    ] {
        let payload =
            br#"{"id":"1","method":"reply","params":{},"data":{"url":"u","version":"v"}}"#;
        assert_eq!(
            DeviceDownlink::parse(topic, payload, PK, DN),
            None,
            "{topic}"
        );
    }
    // Not the JSON the topic carries: left to the application.
    assert_eq!(
        DeviceDownlink::parse("/sys/a1PK/dev-1/thing/service/reboot", b"[1]", PK, DN),
        None
    );
}

#[test]
fn a_service_named_like_a_reply_is_a_call() {
    let call = DeviceDownlink::parse(
        "/sys/pk/dn/thing/service/get_reply",
        br#"{"id":"5","version":"1.0","params":{},"method":"thing.service.get_reply"}"#,
        "pk",
        "dn",
    );
    let Some(DeviceDownlink::Service(call)) = call else {
        panic!("not a service call: {call:?}");
    };
    assert_eq!(call.identifier, "get_reply");
    assert_eq!(call.reply_topic, "/sys/pk/dn/thing/service/get_reply_reply");
}
