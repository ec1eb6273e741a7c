//! The web console over real sockets: its pages, the token login and its cookie, forms from
//! another site refused, a device registered from the console connecting with the secret it
//! showed, search and paging, the live event stream following a connect, and the console off.

// The support module of the shared adapter suite, here on tokio only.
#[path = "../../io-common/tests/suite/support.rs"]
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use aliot_tokio::Tokio;
use aliot_tokio::broker::{ApiConfig, Broker, ServeHttpApi as _};
use aliot_tokio::config::Config;
use support::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const PK: &str = "a1Console001";
const SECRET: &str = "ConsoleDeviceSecret0001NotASecre";
const TOKEN: &str = "console-token";

fn config_text() -> String {
    format!(
        r#"
[[listener]]
bind = "127.0.0.1:0"

[api]

[[product]]
key = "{PK}"

[[product.device]]
name = "lamp-01"
secret = "{SECRET}"
"#
    )
}

async fn start(token: Option<&str>, console: bool) -> (Broker, SocketAddr, SocketAddr) {
    let config = Config::parse(&config_text(), "console.toml", std::path::Path::new("."))
        .expect("a valid configuration");
    let mut broker = Broker::start(config.broker_config()).await.expect("starts");
    let (mqtt, _) = broker.listener_addrs()[0];
    let api = ApiConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        token: token.map(str::to_owned),
        access_keys: Vec::new().into(),
        console,
    };
    let api = broker.serve_http_api(api).await.expect("the API starts");
    (broker, mqtt, api)
}

struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// One HTTP/1.1 request with these extra header lines and a form body.
async fn request(
    api: SocketAddr,
    method: &str,
    path: &str,
    headers: &[&str],
    form: &str,
) -> Answer {
    let mut stream = TcpStream::connect(api).await.expect("the API accepts");
    let mut text = format!(
        "{method} {path} HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\nContent-Length: {}\r\n",
        form.len()
    );
    if !form.is_empty() {
        text.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    for header in headers {
        text.push_str(header);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    text.push_str(form);
    stream.write_all(text.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    within::<Tokio, _>("the console's answer", stream.read_to_end(&mut raw))
        .await
        .unwrap();
    let raw = String::from_utf8(raw).expect("UTF-8");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Answer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

async fn get(api: SocketAddr, path: &str, headers: &[&str]) -> Answer {
    request(api, "GET", path, headers, "").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_the_pages_show_products_devices_and_a_device() {
    let (broker, mqtt, api) = start(None, true).await;
    let products = get(api, "/console", &[]).await;
    assert_eq!(products.status, 200);
    assert!(products.body.contains(PK), "{}", products.body);
    assert!(
        products.body.contains("<td class=\"num\">1</td>"),
        "one device"
    );

    let devices = get(api, &format!("/console/devices?product={PK}"), &[]).await;
    assert_eq!(devices.status, 200);
    assert!(devices.body.contains("lamp-01"));
    assert!(devices.body.contains(">UNACTIVE<"), "never connected");

    // Online, then seen: the device page shows the address it came from.
    let (client, _) =
        TestClient::<Tokio>::connect(mqtt, signed_connect(PK, "lamp-01", SECRET)).await;
    let page = get(api, &format!("/console/devices/{PK}/lamp-01"), &[]).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(">ONLINE<"), "{}", page.body);
    assert!(page.body.contains("127.0.0.1"));
    assert!(
        page.body.contains(&format!("/{PK}/lamp-01/get")),
        "its topics"
    );
    client.disconnect().await;

    let missing = get(api, &format!("/console/devices/{PK}/nobody"), &[]).await;
    assert_eq!(missing.status, 404);
    assert!(missing.body.contains("DeviceNotFound"));
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_asks_for_a_login_whose_cookie_opens_the_pages() {
    let (broker, mqtt, api) = start(Some(TOKEN), true).await;
    let anonymous = get(api, "/console/devices", &[]).await;
    assert_eq!(anonymous.status, 303);
    assert_eq!(anonymous.header("location"), Some("/console/login"));

    let wrong = request(api, "POST", "/console/login", &[], "token=nope").await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.body.contains("neither the token"));

    let login = request(
        api,
        "POST",
        "/console/login",
        &[],
        &format!("token={TOKEN}"),
    )
    .await;
    assert_eq!(login.status, 303);
    let cookie = login
        .header("set-cookie")
        .expect("a login cookie")
        .to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    let cookie = format!("Cookie: {}", cookie.split(';').next().unwrap());
    assert_eq!(get(api, "/console/devices", &[&cookie]).await.status, 200);
    let bearer = format!("Authorization: Bearer {TOKEN}");
    assert_eq!(get(api, "/console", &[&bearer]).await.status, 200);

    // A form posted from another site is refused, even with the cookie.
    let form = format!("product_key={PK}&device_name=lamp-02");
    let forged = request(
        api,
        "POST",
        "/console/devices",
        &[&cookie, "Origin: http://evil.example"],
        &form,
    )
    .await;
    assert_eq!(forged.status, 401, "{}", forged.body);
    // From the console's own page: registered, and the secret shown connects.
    let origin = format!("Origin: http://{api}");
    let registered = request(api, "POST", "/console/devices", &[&cookie, &origin], &form).await;
    assert_eq!(registered.status, 200, "{}", registered.body);
    assert_eq!(registered.header("cache-control"), Some("no-store"));
    let secret = registered
        .body
        .split("<code id=\"device-secret\">")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .expect("the secret is shown")
        .to_owned();
    assert_eq!(login_code::<Tokio>(mqtt, PK, "lamp-02", &secret).await, 0);

    // Disabled from the console: refused at CONNECT.
    let disable = format!("/console/devices/{PK}/lamp-02/disable");
    let disabled = request(api, "POST", &disable, &[&cookie, &origin], "").await;
    assert_eq!(disabled.status, 303);
    assert_ne!(login_code::<Tokio>(mqtt, PK, "lamp-02", &secret).await, 0);

    // Without an Origin, a browser's own word that the form is another site's is enough.
    let fetched = request(
        api,
        "POST",
        &disable,
        &[&cookie, "Sec-Fetch-Site: cross-site"],
        "",
    )
    .await;
    assert_eq!(fetched.status, 401, "{}", fetched.body);

    // A live stream opened with the login ends with it.
    let mut stream = open_stream(api, &format!("/console/events?product={PK}"), &[&cookie]).await;
    // Logged out: the cookie no longer opens anything.
    let out = request(api, "POST", "/console/logout", &[&cookie], "").await;
    assert_eq!(out.status, 303);
    assert_eq!(get(api, "/console/devices", &[&cookie]).await.status, 303);
    let mut rest = Vec::new();
    within::<Tokio, _>("the stream's end", stream.read_to_end(&mut rest))
        .await
        .expect("the stream ends");
    broker.shutdown().await;
}

/// Opens a request whose answer is a stream, and reads its head.
async fn open_stream(api: SocketAddr, path: &str, headers: &[&str]) -> TcpStream {
    let mut stream = TcpStream::connect(api).await.unwrap();
    let mut ask = format!(
        "GET {path} HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\nAccept: text/event-stream\r\n"
    );
    for header in headers {
        ask.push_str(header);
        ask.push_str("\r\n");
    }
    ask.push_str("\r\n");
    stream.write_all(ask.as_bytes()).await.unwrap();
    let mut head = String::new();
    let mut byte = [0u8; 1];
    while !head.ends_with("\r\n\r\n") {
        let n = within::<Tokio, _>("the stream's head", stream.read(&mut byte))
            .await
            .unwrap();
        assert_eq!(n, 1, "the stream closed: {head}");
        head.push(char::from(byte[0]));
    }
    assert!(
        head.contains("200 OK") && head.contains("text/event-stream"),
        "{head}"
    );
    stream
}

/// Reads the stream until `text` has come.
async fn read_until(stream: &mut TcpStream, text: &str) -> String {
    let mut seen = String::new();
    let mut buffer = [0u8; 4096];
    while !seen.contains(text) {
        let n = within::<Tokio, _>("an event", stream.read(&mut buffer))
            .await
            .unwrap();
        assert!(n > 0, "the stream ended before {text}: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_starts_where_its_page_was_rendered() {
    let (broker, mqtt, api) = start(None, true).await;
    // The page is rendered at some position of the trace...
    let page = get(api, "/console/live", &[]).await;
    let after: u64 = page
        .body
        .split("data-after=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|n| n.parse().ok())
        .expect("the page says where its stream starts");
    // ...a device comes and goes before the page's script opens the stream...
    assert_eq!(login_code::<Tokio>(mqtt, PK, "lamp-01", SECRET).await, 0);
    // ...and the stream still has it.
    let mut stream = open_stream(api, &format!("/console/events?after={after}"), &[]).await;
    let seen = read_until(&mut stream, "\"direction\":\"offline\"").await;
    assert!(seen.contains("\"direction\":\"online\""), "{seen}");
    assert!(
        seen.contains("\nid: "),
        "each event says where it is: {seen}"
    );
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_device_with_an_at_in_its_name_has_its_page() {
    let (broker, _, api) = start(None, true).await;
    // The platform's names: letters, digits and - _ @ . : only.
    let form = format!("product_key={PK}&device_name=lamp+03");
    let refused = request(api, "POST", "/console/devices", &[], &form).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body.contains("InvalidName"));
    let form = format!("product_key={PK}&device_name=lamp%4003");
    let registered = request(api, "POST", "/console/devices", &[], &form).await;
    assert_eq!(registered.status, 200, "{}", registered.body);
    let disable = format!("/console/devices/{PK}/lamp%4003/disable");
    let done = request(api, "POST", &disable, &[], "").await;
    assert_eq!(done.status, 303, "{}", done.body);
    let back = done.header("location").unwrap().to_owned();
    assert_eq!(
        back,
        format!("/console/devices/{PK}/lamp%4003?done=disable")
    );
    let page = get(api, &back, &[]).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains(">DISABLE<"));
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_devices_list_searches_and_pages() {
    let (broker, _, api) = start(None, true).await;
    for n in 0..60 {
        let form = format!("product_key={PK}&device_name=d-{n:02}");
        let answer = request(api, "POST", "/console/devices", &[], &form).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let page_2 = get(api, &format!("/console/devices?product={PK}&page=2"), &[]).await;
    assert!(
        page_2.body.contains("61 device(s), page 2 of 2"),
        "{}",
        page_2.body
    );
    assert!(page_2.body.contains(">d-50<") && page_2.body.contains(">lamp-01<"));
    assert!(!page_2.body.contains(">d-49<"));
    let found = get(api, &format!("/console/devices?product={PK}&q=d-0"), &[]).await;
    assert!(found.body.contains("10 device(s)"), "{}", found.body);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_follows_a_connect_and_ends_with_the_broker() {
    let (broker, mqtt, api) = start(None, true).await;
    let mut stream = TcpStream::connect(api).await.unwrap();
    let ask = format!(
        "GET /console/events?product={PK}&statuses=1 HTTP/1.1\r\nHost: {api}\r\nAccept: text/event-stream\r\n\r\n"
    );
    stream.write_all(ask.as_bytes()).await.unwrap();
    let mut seen = String::new();
    let mut buffer = [0u8; 4096];
    // The stream is open before the device connects.
    while !seen.contains("\r\n\r\n") {
        let n = within::<Tokio, _>("the stream's head", stream.read(&mut buffer))
            .await
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
    }
    assert!(seen.contains("text/event-stream"), "{seen}");
    assert_eq!(login_code::<Tokio>(mqtt, PK, "lamp-01", SECRET).await, 0);
    while !seen.contains("\"direction\":\"offline\"") {
        let n = within::<Tokio, _>("a status event", stream.read(&mut buffer))
            .await
            .unwrap();
        assert!(n > 0, "the stream ended early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buffer[..n]));
    }
    assert!(seen.contains("\"direction\":\"online\""), "{seen}");
    assert!(seen.contains("\"device_name\":\"lamp-01\""));
    // Shutting down ends the stream instead of waiting for it.
    let stopped = tokio::time::timeout(Duration::from_secs(10), broker.shutdown()).await;
    assert!(stopped.is_ok(), "the broker stops with a stream open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_turned_off_is_not_served() {
    let (broker, _, api) = start(None, false).await;
    let answer = get(api, "/console", &[]).await;
    assert_eq!(answer.status, 404);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_devices_page_shows_its_properties_shadow_and_firmware() {
    let (broker, mqtt, api) = start(None, true).await;
    let (mut device, _) =
        TestClient::<Tokio>::connect(mqtt, signed_connect(PK, "lamp-01", SECRET)).await;
    let post = format!("/sys/{PK}/lamp-01/thing/event/property/post");
    device
        .publish1(
            &post,
            br#"{"id":"1","version":"1.0","params":{"temperature":21.5},"method":"thing.event.property.post"}"#,
        )
        .await;
    let inform = format!("/ota/device/inform/{PK}/lamp-01");
    device
        .publish1(&inform, br#"{"id":2,"params":{"version":"1.0.3"}}"#)
        .await;
    let shadow = serde_json::json!({
        "ProductKey": PK,
        "DeviceName": "lamp-01",
        "ShadowMessage": r#"{"method":"update","state":{"desired":{"color":"green"}},"version":1}"#,
    });
    let updated = http::<Tokio>(
        api,
        "POST",
        "/UpdateDeviceShadow",
        None,
        Some(&shadow.to_string()),
    )
    .await;
    assert_eq!(updated.status, 200, "{}", updated.body);

    let page = get(api, &format!("/console/devices/{PK}/lamp-01"), &[]).await;
    assert_eq!(page.status, 200);
    let properties = page
        .body
        .split("id=\"properties\"")
        .nth(1)
        .expect("a properties table");
    assert!(
        properties.contains("temperature") && properties.contains("21.5"),
        "{}",
        page.body
    );
    let ota = page.body.split("id=\"ota\"").nth(1).expect("an OTA table");
    assert!(ota.contains("1.0.3"), "{}", page.body);
    let shadow = page.body.split("id=\"shadow\"").nth(1).expect("the shadow");
    assert!(
        shadow.contains("&#34;color&#34;: &#34;green&#34;"),
        "{}",
        page.body
    );
    // The device's own messages are among its recent ones, the post first of them.
    let messages = page.body.split("id=\"messages\"").nth(1).unwrap();
    assert!(messages.contains(&post) && messages.contains(&inform));
    device.disconnect().await;
    broker.shutdown().await;
}
