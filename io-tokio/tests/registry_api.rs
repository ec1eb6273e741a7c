//! The registry through the HTTP API, on a broker with a store: what the API makes is there
//! after a restart (and the configuration's devices keep their ids), a registered device
//! connects with the secret it was given and is activated, a deleted one cannot.

// The support module of the shared adapter suite, here on tokio only.
#[path = "../../io-common/tests/suite/support.rs"]
mod support;

use std::net::SocketAddr;

use aliot_tokio::Tokio;
use aliot_tokio::broker::{ApiConfig, Broker, ServeHttpApi as _};
use aliot_tokio::config::Config;
use serde_json::{Value, json};
use support::*;

const CONFIG: &str = r#"
[[listener]]
bind = "127.0.0.1:0"

[store]
path = "data"

[[product]]
key = "a1FromFile01"

[[product.device]]
name = "file-dev-1"
secret = "FileDeviceSecret0001NotASecret00"
"#;

async fn start(dir: &std::path::Path) -> (Broker, SocketAddr, SocketAddr) {
    let config = Config::parse(CONFIG, "registry.toml", dir).expect("a valid configuration");
    let mut broker = Broker::start(config.broker_config()).await.expect("starts");
    let (mqtt, _) = broker.listener_addrs()[0];
    let api = ApiConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        token: None,
        access_keys: Vec::new().into(),
        console: true,
    };
    let api = broker.serve_http_api(api).await.expect("the API starts");
    (broker, mqtt, api)
}

async fn post(api: SocketAddr, action: &str, body: Value) -> Value {
    let answer = http::<Tokio>(
        api,
        "POST",
        &format!("/{action}"),
        None,
        Some(&body.to_string()),
    )
    .await;
    assert_eq!(answer.status, 200, "{action}: {}", answer.body);
    answer.json()
}

/// Connects `pk`/`dn` with `secret`; the CONNACK's code.
async fn connect(mqtt: SocketAddr, pk: &str, dn: &str, secret: &str) -> u8 {
    login_code::<Tokio>(mqtt, pk, dn, secret).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_api_registers_survives_a_restart_and_connects() {
    let dir = std::env::temp_dir().join(format!("aliot-registry-api-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    let (broker, mqtt, api) = start(&dir).await;
    let made = post(api, "CreateProduct", json!({"ProductName": "lamp"})).await;
    let pk = made["ProductKey"].as_str().unwrap().to_owned();
    let device = post(
        api,
        "RegisterDevice",
        json!({"ProductKey": pk, "DeviceName": "lamp-01"}),
    )
    .await;
    let secret = device["Data"]["DeviceSecret"].as_str().unwrap().to_owned();
    let iot_id = device["Data"]["IotId"].as_str().unwrap().to_owned();
    let file_device = json!({"ProductKey": "a1FromFile01", "DeviceName": "file-dev-1"});
    let file_id =
        post(api, "QueryDeviceDetail", file_device.clone()).await["Data"]["IotId"].clone();
    assert_eq!(connect(mqtt, &pk, "lamp-01", &secret).await, 0);
    let detail = post(api, "QueryDeviceDetail", json!({"IotId": iot_id})).await;
    assert_eq!(
        detail["Data"]["Status"], "OFFLINE",
        "activated by its connect: {detail}"
    );
    broker.shutdown().await;

    let (broker, mqtt, api) = start(&dir).await;
    let detail = post(
        api,
        "QueryDeviceDetail",
        json!({"ProductKey": pk, "DeviceName": "lamp-01"}),
    )
    .await;
    assert_eq!(detail["Success"], true, "{detail}");
    assert_eq!(detail["Data"]["IotId"], iot_id.as_str());
    assert_eq!(
        detail["Data"]["Status"], "OFFLINE",
        "still activated: {detail}"
    );
    assert!(detail["Data"]["UtcActive"].is_string());
    let again = post(api, "QueryDeviceDetail", file_device).await;
    assert_eq!(
        again["Data"]["IotId"], file_id,
        "the file's device keeps its id"
    );
    assert_eq!(
        connect(mqtt, &pk, "lamp-01", &secret).await,
        0,
        "its secret still works"
    );

    let deleted = post(api, "DeleteDevice", json!({"IotId": iot_id})).await;
    assert_eq!(deleted["Success"], true);
    assert_eq!(
        connect(mqtt, &pk, "lamp-01", &secret).await,
        5,
        "a deleted device is refused"
    );
    let list = post(api, "QueryProductList", json!({})).await;
    assert_eq!(list["Data"]["Total"], 2, "{list}");
    broker.shutdown().await;

    let (broker, _, api) = start(&dir).await;
    let gone = http::<Tokio>(
        api,
        "POST",
        "/QueryDeviceDetail",
        None,
        Some(&json!({"ProductKey": pk, "DeviceName": "lamp-01"}).to_string()),
    )
    .await;
    assert_eq!(gone.status, 404, "deleted stays deleted: {}", gone.body);
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_batches_and_broadcasts_through_the_api() {
    let dir = std::env::temp_dir().join(format!("aliot-registry-batch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (broker, mqtt, api) = start(&dir).await;
    let made = post(api, "CreateProduct", json!({"ProductName": "fleet"})).await;
    let pk = made["ProductKey"].as_str().unwrap().to_owned();
    let topic = post(
        api,
        "CreateProductTopic",
        json!({"ProductKey": pk, "TopicShortName": "cmd", "Operation": "SUB"}),
    )
    .await;
    assert_eq!(
        topic["Topic"], "/${productKey}/${deviceName}/user/cmd",
        "{topic}"
    );

    let batch = post(
        api,
        "BatchRegisterDevice",
        json!({"ProductKey": pk, "Count": 3}),
    )
    .await;
    let apply_id = batch["Data"]["ApplyId"].as_u64().unwrap();
    let status = post(
        api,
        "QueryBatchRegisterDeviceStatus",
        json!({"ApplyId": apply_id}),
    )
    .await;
    assert_eq!(status["Data"]["Status"], "CREATE_SUCCESS");
    let page = post(
        api,
        "QueryPageByApplyId",
        json!({"ApplyId": apply_id, "PageSize": 10}),
    )
    .await;
    let devices = page["ApplyDeviceList"]["ApplyDeviceInfo"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(devices.len(), 3, "{page}");

    // A device of the batch connects with its secret and subscribes to the new category and a
    // broadcast topic; both reach it.
    let dn = devices[0]["DeviceName"].as_str().unwrap();
    let secret = devices[0]["DeviceSecret"].as_str().unwrap();
    let connect = signed_connect(&pk, dn, secret);
    let (mut client, connack) = TestClient::<Tokio>::connect(mqtt, connect).await;
    assert_eq!(connack.code as u8, 0);
    let cmd = format!("/{pk}/{dn}/user/cmd");
    let news = format!("/broadcast/{pk}/news");
    assert_eq!(client.subscribe(&[&cmd, &news]).await, [1, 1]);
    let sent = post(
        api,
        "PubBroadcast",
        json!({"ProductKey": pk, "TopicFullName": news, "MessageContent": "aGk="}),
    )
    .await;
    assert_eq!(sent["Subscribers"], 1, "{sent}");
    assert_eq!(&client.recv_publish().await.payload[..], b"hi");
    client.disconnect().await;
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A sub-device's proof for `AddThingTopo`'s `TopoInfo`, made with `secret`.
fn topo_entry(pk: &str, dn: &str, secret: &str) -> Value {
    let sub = aliot_auth::DeviceIdentity::new(pk, dn);
    let client_id = format!("{pk}&{dn}");
    let sign = aliot_auth::subdevice_sign(
        secret.as_bytes(),
        &sub,
        &client_id,
        "1581417203000",
        aliot_auth::SignMethod::HmacSha1,
    );
    json!({"ProductKey": pk, "DeviceName": dn, "ClientId": client_id,
        "Timestamp": "1581417203000", "SignMethod": "hmacsha1", "Sign": sign})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateways_topology_is_managed_through_the_api_and_survives_a_restart() {
    let dir = std::env::temp_dir().join(format!("aliot-registry-topo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    let (broker, _, api) = start(&dir).await;
    let pk = post(api, "CreateProduct", json!({"ProductName": "hub"})).await["ProductKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut secrets = Vec::new();
    for dn in ["gateway-1", "sensor-1", "sensor-2"] {
        let made = post(
            api,
            "RegisterDevice",
            json!({"ProductKey": pk, "DeviceName": dn}),
        )
        .await;
        secrets.push(made["Data"]["DeviceSecret"].as_str().unwrap().to_owned());
    }
    let gateway = json!({"GwProductKey": pk, "GwDeviceName": "gateway-1"});
    let topo = |entries: Vec<Value>| {
        let mut body = gateway.clone();
        body["TopoInfo"] = Value::String(Value::Array(entries).to_string());
        body
    };

    // A proof made with another device's secret is refused, and nothing is added.
    let forged = topo(vec![topo_entry(&pk, "sensor-1", &secrets[2])]);
    let refused = http::<Tokio>(
        api,
        "POST",
        "/AddThingTopo",
        None,
        Some(&forged.to_string()),
    )
    .await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    let page = json!({"ProductKey": pk, "DeviceName": "gateway-1", "PageNo": 1, "PageSize": 10});
    let listed = post(api, "GetThingTopo", page.clone()).await;
    assert_eq!(listed["Data"]["Total"], 0, "{listed}");

    let added = topo(vec![
        topo_entry(&pk, "sensor-1", &secrets[1]),
        topo_entry(&pk, "sensor-2", &secrets[2]),
    ]);
    assert_eq!(post(api, "AddThingTopo", added).await["Success"], true);
    let listed = post(api, "GetThingTopo", page.clone()).await;
    assert_eq!(listed["Data"]["Total"], 2, "{listed}");
    let names: Vec<&str> = listed["Data"]["List"]["deviceInfo"]
        .as_array()
        .unwrap()
        .iter()
        .map(|sub| sub["DeviceName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["sensor-1", "sensor-2"]);
    let removed = post(
        api,
        "RemoveThingTopo",
        json!({"ProductKey": pk, "DeviceName": "sensor-2"}),
    )
    .await;
    assert_eq!(removed["Data"], true, "{removed}");
    broker.shutdown().await;

    // The topology is in the store.
    let (broker, _, api) = start(&dir).await;
    let listed = post(api, "GetThingTopo", page).await;
    assert_eq!(listed["Data"]["Total"], 1, "{listed}");
    assert_eq!(
        listed["Data"]["List"]["deviceInfo"][0]["DeviceName"],
        "sensor-1"
    );
    let not_in = http::<Tokio>(
        api,
        "POST",
        "/RemoveThingTopo",
        None,
        Some(&json!({"ProductKey": pk, "DeviceName": "sensor-2"}).to_string()),
    )
    .await;
    assert_eq!(not_in.status, 404, "{}", not_in.body);
    broker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
