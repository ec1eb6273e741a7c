//! The device's side of the platform's services (`aliot_services::DeviceDownlink`): whatever
//! a broker sends on whatever topic, classifying it never panics, and what a device answers
//! from it is well-formed.
//!
//! Checked for every input (a topic, a payload, a receive time):
//! - `DeviceDownlink::parse` returns, and only for a topic of the device's own
//!   (`/sys/pk/dn/…`, `/shadow/get/pk/dn`, `/ota/device/upgrade/pk/dn`, `/ext/ntp/pk/dn/response`
//!   or the `/ext/rrpc/{id}/sys/pk/dn/…` form);
//! - a service call's reply goes where its form says: `…_reply` for an asynchronous call, the
//!   same topic for the `ext` form, `/sys/pk/dn/rrpc/response/{id}` for the `sys` form; its
//!   payload, like a property set's reply, is a JSON object that echoes the call's id;
//! - `answers()` names a reply key only for what answers a request, and NTP's synced time is
//!   computed without overflow whatever the numbers.
#![no_main]

use aliot_services::{
    DeviceDownlink, RrpcForm, ThingAnswer, UnixMillis, property_set_reply, service_reply,
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const PK: &str = "pk";
const DN: &str = "dn";

/// Topics the device may get, and some it may not; the input picks one or brings its own.
const TOPICS: [&str; 12] = [
    "/sys/pk/dn/thing/event/property/post_reply",
    "/sys/pk/dn/thing/event/alarm/post_reply",
    "/sys/pk/dn/thing/service/property/set",
    "/sys/pk/dn/thing/service/reboot",
    "/sys/pk/dn/rrpc/request/123",
    "/ext/rrpc/77/sys/pk/dn/thing/service/add",
    "/shadow/get/pk/dn",
    "/ota/device/upgrade/pk/dn",
    "/ext/ntp/pk/dn/response",
    "/sys/pk/other/thing/service/property/set",
    "/pk/dn/user/get",
    "/ext/rrpc/x/sys/pk/dn/thing/service/add",
];

fn own_topic(topic: &str) -> bool {
    topic.starts_with("/sys/pk/dn/")
        || topic == "/shadow/get/pk/dn"
        || topic == "/ota/device/upgrade/pk/dn"
        || topic == "/ext/ntp/pk/dn/response"
        || (topic.starts_with("/ext/rrpc/") && topic.contains("/sys/pk/dn/"))
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let (recv, rest) = match rest.split_first_chunk::<8>() {
        Some((time, rest)) => (u64::from_le_bytes(*time), rest),
        None => (0, rest),
    };
    let (topic, payload) = match TOPICS.get(usize::from(pick) % (TOPICS.len() + 1)) {
        Some(topic) => ((*topic).to_owned(), rest),
        None => {
            // The input's own topic: up to the first NUL.
            let at = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
            (
                String::from_utf8_lossy(&rest[..at]).into_owned(),
                &rest[(at + 1).min(rest.len())..],
            )
        }
    };
    let Some(downlink) = DeviceDownlink::parse(&topic, payload, PK, DN) else {
        return;
    };
    assert!(own_topic(&topic), "{topic} classified as {downlink:?}");
    let answer = ThingAnswer::success(Value::Object(Default::default()));
    match &downlink {
        DeviceDownlink::Service(call) => {
            let reply = service_reply(call, &answer);
            assert_eq!(reply.topic, call.reply_topic);
            match &call.rrpc {
                None => assert_eq!(reply.topic, format!("{topic}_reply")),
                Some(rrpc) => match rrpc.form {
                    RrpcForm::Ext => assert_eq!(reply.topic, topic),
                    RrpcForm::Sys => assert_eq!(
                        reply.topic,
                        format!("/sys/pk/dn/rrpc/response/{}", rrpc.message_id)
                    ),
                },
            }
            let body: Value = serde_json::from_slice(&reply.payload).expect("reply is JSON");
            assert_eq!(body["id"].as_str(), Some(call.id.as_str()));
            assert!(downlink.answers().is_none());
        }
        DeviceDownlink::PropertySet(set) => {
            let reply = property_set_reply(set, &answer);
            assert_eq!(reply.topic, set.reply_topic);
            assert_eq!(reply.topic, format!("{topic}_reply"));
            let body: Value = serde_json::from_slice(&reply.payload).expect("reply is JSON");
            assert_eq!(body["id"].as_str(), Some(set.id.as_str()));
            assert!(downlink.answers().is_none());
        }
        DeviceDownlink::Ntp(ntp) => {
            let _ = ntp.synced_time(UnixMillis(recv));
            assert!(downlink.answers().is_some());
        }
        DeviceDownlink::Reply(reply) => {
            assert_eq!(downlink.answers().is_some(), reply.id.is_some());
        }
        DeviceDownlink::Shadow(_) | DeviceDownlink::Upgrade(_) => {}
    }
});
