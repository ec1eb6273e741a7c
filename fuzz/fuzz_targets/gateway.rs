//! `GatewayRequest::parse` (`aliot-services`, gateway `gk`/`gw`) on an arbitrary topic and
//! payload: the first byte picks one of the gateway's topics, another device's, or raw text for
//! the topic; the rest is the payload. Checked:
//!
//! - it never panics, and gives `None` exactly when the topic is not one of the gateway's
//!   nine request topics;
//! - its reply goes to the topic + `_reply` and is one compact JSON object with the keys `id`,
//!   `code`, `message`, `data` in that order, `code` the number asked for;
//! - a request that is not a JSON object is answered 6207 with id `"0"`.
#![no_main]

use aliot_services::AlinkCode;
use aliot_services::gateway::GatewayRequest;
use libfuzzer_sys::fuzz_target;

const TOPICS: [&str; 9] = [
    "/sys/gk/gw/thing/topo/add",
    "/sys/gk/gw/thing/topo/delete",
    "/sys/gk/gw/thing/topo/get",
    "/sys/gk/gw/thing/sub/register",
    "/sys/gk/gw/thing/proxy/provisioning/product_register",
    "/ext/session/gk/gw/combine/login",
    "/ext/session/gk/gw/combine/batch_login",
    "/ext/session/gk/gw/combine/logout",
    "/ext/session/gk/gw/combine/batch_logout",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, payload)) = data.split_first() else {
        return;
    };
    let raw;
    let topic = match usize::from(pick) {
        at if at < TOPICS.len() => TOPICS[at],
        at if at < 2 * TOPICS.len() => {
            raw = TOPICS[at - TOPICS.len()].replace("/gw/", "/other/");
            &raw
        }
        _ => {
            raw = String::from_utf8_lossy(payload).into_owned();
            &raw
        }
    };
    let parsed = GatewayRequest::parse(topic, payload, "gk", "gw");
    assert_eq!(parsed.is_some(), TOPICS.contains(&topic), "{topic:?}");
    let Some(request) = parsed else {
        return;
    };
    let reply = request.reply(AlinkCode::BAD_PARAMS, &serde_json::Value::Null);
    assert_eq!(reply.topic, format!("{topic}_reply"));
    let text = std::str::from_utf8(&reply.payload).expect("UTF-8");
    let value: serde_json::Value = serde_json::from_str(text).expect("JSON");
    assert_eq!(
        serde_json::to_string(&value).unwrap().len(),
        text.len(),
        "compact: {text}"
    );
    let keys: Vec<&str> = value
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, ["code", "data", "id", "message"], "{text}");
    assert!(text.starts_with(r#"{"id":"#), "{text}");
    // Inside a JSON string a quote is escaped, so `,"key":` is only ever a key.
    let at = |key: &str| text.find(&format!(",\"{key}\":")).expect(key);
    assert!(
        at("code") < at("message") && at("message") < at("data"),
        "{text}"
    );
    assert_eq!(value["code"], 460);
    let is_object = payload.trim_ascii_start().first() == Some(&b'{');
    if !is_object {
        assert_eq!(request.op, Err(AlinkCode::NOT_JSON));
        assert_eq!(value["id"], "0");
    }
});
