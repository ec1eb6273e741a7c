//! The HTTP API over real sockets: RRPC with each outcome, server-side publish, metrics, the
//! bearer token, and a JSON error for every bad request.

// The support module of the shared adapter suite, here on tokio only.
#[path = "../../io-common/tests/suite/support.rs"]
mod support;

use std::net::SocketAddr;

use aliot_core::codec::PublishQos;
use aliot_tokio::Tokio;
use aliot_tokio::broker::{ApiConfig, Broker, ServeHttpApi as _};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use support::*;

const TOKEN: &str = "s3cr3t-token";

/// A broker with the HTTP API on a free loopback port; the broker, its MQTT and API addresses.
async fn start_with_api(token: Option<&str>) -> (Broker, SocketAddr, SocketAddr) {
    let (mut broker, mqtt) = start::<Tokio>(config(false)).await;
    let api = ApiConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        token: token.map(str::to_owned),
        access_keys: Vec::new().into(),
        console: true,
    };
    let api = broker.serve_http_api(api).await.expect("the API starts");
    (broker, mqtt, api)
}

async fn post(api: SocketAddr, path: &str, body: &Value) -> HttpResponse {
    http::<Tokio>(api, "POST", path, Some(TOKEN), Some(&body.to_string())).await
}

fn rrpc_body(device: &str, payload: &[u8], timeout: u64) -> Value {
    json!({
        "ProductKey": PRODUCT,
        "DeviceName": device,
        "RequestBase64Byte": BASE64.encode(payload),
        "Timeout": timeout,
    })
}

/// Checks a failure: its status, and a JSON body with this code and a message.
fn assert_error(response: &HttpResponse, status: u16, code: &str) {
    assert_eq!(response.status, status, "{response:?}");
    let body = response.json();
    assert_eq!(body["Code"], code, "{response:?}");
    assert!(
        body["Message"].as_str().is_some_and(|m| !m.is_empty()),
        "{response:?}"
    );
}

#[tokio::test]
async fn rrpc_over_http_with_each_outcome() {
    let (broker, mqtt, api) = start_with_api(Some(TOKEN)).await;

    // SUCCESS: device 1 answers.
    let (mut answering, _) = TestClient::<Tokio>::device(mqtt, 1, true).await;
    answering
        .subscribe(&["/sys/a1TestPK001/dev-001/rrpc/request/+"])
        .await;
    let responder = answer_rrpc::<Tokio>(answering);
    let response = post(api, "/rrpc", &rrpc_body("dev-001", b"ping", 5000)).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert!(response.headers.contains("content-type: application/json"));
    let body = response.json();
    assert_eq!(body["Success"], true);
    assert_eq!(body["RrpcCode"], "SUCCESS");
    assert_eq!(body["PayloadBase64Byte"], BASE64.encode(b"pong:ping"));
    let message_id = body["MessageId"].as_str().expect("MessageId is a string");
    assert!(message_id.parse::<u64>().is_ok(), "{message_id}");

    // TIMEOUT: device 2 listens and stays silent.
    let (mut silent, _) = TestClient::<Tokio>::device(mqtt, 2, true).await;
    silent
        .subscribe(&["/sys/a1TestPK001/dev-002/rrpc/request/+"])
        .await;
    let response = post(api, "/rrpc", &rrpc_body("dev-002", b"?", 1000)).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.json()["RrpcCode"], "TIMEOUT");
    assert!(response.json().get("PayloadBase64Byte").is_none());
    let request = silent.recv_publish().await;
    assert_eq!(&request.payload[..], b"?");

    // OFFLINE: device 3 is registered and not connected.
    let response = post(api, "/rrpc", &rrpc_body("dev-003", b"", 1000)).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.json()["RrpcCode"], "OFFLINE");

    // HALFCONN: device 4 is connected and not subscribed.
    let (deaf, _) = TestClient::<Tokio>::device(mqtt, 4, true).await;
    let response = post(api, "/rrpc", &rrpc_body("dev-004", b"", 1000)).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.json()["RrpcCode"], "HALFCONN");

    // Custom-topic RRPC goes over /ext/rrpc/{id}{topic}.
    let mut custom = rrpc_body("dev-002", b"custom", 1000);
    custom["Topic"] = json!("/a1TestPK001/dev-002/user/get");
    silent
        .subscribe(&["/ext/rrpc/+/a1TestPK001/dev-002/user/get"])
        .await;
    let response = post(api, "/rrpc", &custom).await;
    assert_eq!(response.json()["RrpcCode"], "TIMEOUT");
    let request = silent.recv_publish().await;
    let id = response.json()["MessageId"].as_str().unwrap().to_owned();
    assert_eq!(
        request.topic.as_str(),
        format!("/ext/rrpc/{id}/a1TestPK001/dev-002/user/get")
    );

    silent.disconnect().await;
    deaf.disconnect().await;
    broker.shutdown().await;
    responder.await;
}

#[tokio::test]
async fn rrpc_requests_that_are_wrong_get_a_json_error() {
    let (broker, _, api) = start_with_api(Some(TOKEN)).await;
    let not_json = http::<Tokio>(api, "POST", "/rrpc", Some(TOKEN), Some("{not json")).await;
    assert_error(&not_json, 400, "InvalidJson");
    let incomplete = r#"{"ProductKey":"a1TestPK001"}"#;
    let incomplete = http::<Tokio>(api, "POST", "/rrpc", Some(TOKEN), Some(incomplete)).await;
    assert_error(&incomplete, 400, "InvalidJson");
    let mut wrong_type = rrpc_body("dev-001", b"", 1000);
    wrong_type["Timeout"] = json!("soon");
    assert_error(&post(api, "/rrpc", &wrong_type).await, 400, "InvalidJson");

    let mut not_base64 = rrpc_body("dev-001", b"", 1000);
    not_base64["RequestBase64Byte"] = json!("***");
    assert_error(&post(api, "/rrpc", &not_base64).await, 400, "InvalidBase64");

    for timeout in [0, 999, 8001] {
        let response = post(api, "/rrpc", &rrpc_body("dev-001", b"", timeout)).await;
        assert_error(&response, 400, "InvalidTimeout");
    }

    let unknown = post(api, "/rrpc", &rrpc_body("nobody", b"", 1000)).await;
    assert_error(&unknown, 404, "DeviceNotFound");
    let malformed = post(api, "/rrpc", &rrpc_body("dev/1", b"", 1000)).await;
    assert_error(&malformed, 400, "InvalidDevice");

    let mut foreign_topic = rrpc_body("dev-001", b"", 1000);
    foreign_topic["Topic"] = json!("/a1TestPK001/dev-002/user/get");
    assert_error(
        &post(api, "/rrpc", &foreign_topic).await,
        400,
        "InvalidTopic",
    );
    let mut invalid_topic = rrpc_body("dev-001", b"", 1000);
    invalid_topic["Topic"] = json!("/a1TestPK001/dev-001/#");
    assert_error(
        &post(api, "/rrpc", &invalid_topic).await,
        400,
        "InvalidTopic",
    );

    // Nothing of this reached the hub.
    let stats = broker.handle().stats().await;
    assert_eq!(stats.counters.rrpc, Default::default());
    broker.shutdown().await;
}

#[tokio::test]
async fn the_bearer_token_is_required_when_configured() {
    let (broker, _, api) = start_with_api(Some(TOKEN)).await;
    let body = rrpc_body("dev-003", b"", 1000).to_string();

    let missing = http::<Tokio>(api, "POST", "/rrpc", None, Some(&body)).await;
    assert_error(&missing, 401, "Unauthorized");
    assert!(missing.headers.contains("www-authenticate: bearer"));
    let wrong = http::<Tokio>(api, "POST", "/rrpc", Some("s3cr3t-tokeN"), Some(&body)).await;
    assert_error(&wrong, 401, "Unauthorized");
    let shorter = http::<Tokio>(api, "GET", "/metrics", Some("s3cr3t"), None).await;
    assert_error(&shorter, 401, "Unauthorized");
    let publish = http::<Tokio>(api, "POST", "/pub", None, Some("{}")).await;
    assert_error(&publish, 401, "Unauthorized");

    let right = http::<Tokio>(api, "POST", "/rrpc", Some(TOKEN), Some(&body)).await;
    assert_eq!(right.status, 200, "{right:?}");
    broker.shutdown().await;

    // Without a token configured, no header is needed.
    let (broker, _, api) = start_with_api(None).await;
    let open = http::<Tokio>(api, "POST", "/rrpc", None, Some(&body)).await;
    assert_eq!(open.status, 200, "{open:?}");
    assert_eq!(open.json()["RrpcCode"], "OFFLINE");
    broker.shutdown().await;
}

#[tokio::test]
async fn pub_routes_a_server_side_message_within_its_product() {
    let (broker, mqtt, api) = start_with_api(Some(TOKEN)).await;
    let (mut subscriber, _) = TestClient::<Tokio>::device(mqtt, 2, true).await;
    subscriber.subscribe(&["/broadcast/a1TestPK001/#"]).await;

    let body = json!({
        "ProductKey": PRODUCT,
        "TopicFullName": "/broadcast/a1TestPK001/news",
        "MessageContent": BASE64.encode(b"{\"hello\":1}"),
        "Qos": 1,
    });
    let response = post(api, "/pub", &body).await;
    assert_eq!(response.status, 200, "{response:?}");
    let answer = response.json();
    let first_id: u64 = answer["MessageId"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        answer,
        json!({"Success": true, "MessageId": first_id.to_string(), "Subscribers": 1})
    );
    let got = subscriber.recv_publish().await;
    assert_eq!(got.topic.as_str(), "/broadcast/a1TestPK001/news");
    assert_eq!(&got.payload[..], b"{\"hello\":1}");
    assert!(matches!(got.qos, PublishQos::AtLeastOnce(_)));
    subscriber.puback(&got).await;

    // Qos defaults to 0; nobody listens on this device topic.
    let quiet = json!({
        "ProductKey": PRODUCT,
        "TopicFullName": "/a1TestPK001/dev-001/user/get",
        "MessageContent": "",
    });
    let response = post(api, "/pub", &quiet).await;
    let answer = response.json();
    let second_id: u64 = answer["MessageId"].as_str().unwrap().parse().unwrap();
    assert_ne!(second_id, first_id, "every message has its own id");
    assert_eq!(
        answer,
        json!({"Success": true, "MessageId": second_id.to_string(), "Subscribers": 0})
    );

    let mut other_product = body.clone();
    other_product["TopicFullName"] = json!("/broadcast/a1Other/news");
    assert_error(
        &post(api, "/pub", &other_product).await,
        400,
        "InvalidTopic",
    );
    let mut service_topic = body.clone();
    service_topic["TopicFullName"] = json!("/ext/rrpc/1/a1TestPK001/dev-001/user/get");
    assert_error(
        &post(api, "/pub", &service_topic).await,
        400,
        "InvalidTopic",
    );
    let mut wildcard = body.clone();
    wildcard["TopicFullName"] = json!("/broadcast/a1TestPK001/+");
    assert_error(&post(api, "/pub", &wildcard).await, 400, "InvalidTopic");
    let mut qos2 = body.clone();
    qos2["Qos"] = json!(2);
    assert_error(&post(api, "/pub", &qos2).await, 400, "InvalidQos");
    let mut not_base64 = body.clone();
    not_base64["MessageContent"] = json!("%%");
    assert_error(&post(api, "/pub", &not_base64).await, 400, "InvalidBase64");
    let not_json = http::<Tokio>(api, "POST", "/pub", Some(TOKEN), Some("[1,2")).await;
    assert_error(&not_json, 400, "InvalidJson");

    subscriber.disconnect().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn metrics_in_prometheus_text_format() {
    let (broker, mqtt, api) = start_with_api(Some(TOKEN)).await;
    let (client, _) = TestClient::<Tokio>::device(mqtt, 1, true).await;
    let offline = post(api, "/rrpc", &rrpc_body("dev-003", b"", 1000)).await;
    assert_eq!(offline.json()["RrpcCode"], "OFFLINE");

    let response = http::<Tokio>(api, "GET", "/metrics", Some(TOKEN), None).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert!(
        response
            .headers
            .contains("content-type: text/plain; version=0.0.4")
    );
    let text = &response.body;
    for expected in [
        "# HELP aliot_connections_accepted_total ",
        "# TYPE aliot_connections_accepted_total counter\naliot_connections_accepted_total 1\n",
        "aliot_rrpc_calls_total{outcome=\"OFFLINE\"} 1\n",
        "aliot_rrpc_calls_total{outcome=\"SUCCESS\"} 0\n",
        "aliot_connections_refused_total{code=\"5\"} 0\n",
        "aliot_connections_refused_at_cap_total 0\n",
        "aliot_connections_closed_total{reason=\"taken_over\"} 0\n",
        "aliot_messages_dropped_total{reason=\"queue_full\"} 0\n",
        "# TYPE aliot_connections gauge\naliot_connections 1\n",
        "# TYPE aliot_sessions gauge\naliot_sessions 1\n",
        "# TYPE aliot_rrpc_pending gauge\naliot_rrpc_pending 0\n",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    client.disconnect().await;
    broker.shutdown().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_get_a_json_error() {
    let (broker, _, api) = start_with_api(Some(TOKEN)).await;
    let missing = http::<Tokio>(api, "GET", "/nothing-here", Some(TOKEN), None).await;
    assert_error(&missing, 404, "NotFound");
    let wrong_method = http::<Tokio>(api, "GET", "/rrpc", Some(TOKEN), None).await;
    assert_error(&wrong_method, 405, "MethodNotAllowed");
    let wrong_method = http::<Tokio>(api, "POST", "/metrics", Some(TOKEN), Some("{}")).await;
    assert_error(&wrong_method, 405, "MethodNotAllowed");
    broker.shutdown().await;
}

#[tokio::test]
async fn a_call_after_shutdown_is_answered_broker_stopped() {
    // The API stops with the broker, so this is checked on the handle the API uses: a call
    // that was in flight when the broker stopped ends UNKNOWN over HTTP.
    let (broker, mqtt, api) = start_with_api(Some(TOKEN)).await;
    let (mut silent, _) = TestClient::<Tokio>::device(mqtt, 1, true).await;
    silent
        .subscribe(&["/sys/a1TestPK001/dev-001/rrpc/request/+"])
        .await;
    let call =
        tokio::spawn(async move { post(api, "/rrpc", &rrpc_body("dev-001", b"", 8000)).await });
    silent.recv_publish().await;
    let see_close = async move {
        assert!(silent.expect_closed().await.is_empty());
    };
    tokio::join!(broker.shutdown(), see_close);
    let response = call.await.unwrap();
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.json()["RrpcCode"], "UNKNOWN");
    assert!(
        tokio::net::TcpStream::connect(api).await.is_err(),
        "the API listener is closed"
    );
}
