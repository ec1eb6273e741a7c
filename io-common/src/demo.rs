//! The built-in demo of `aliot serve`: one product, three devices, public secrets.
//!
//! The demo is the configuration file `io-common/src/demo.toml`, compiled in: product
//! [`DEMO_PRODUCT_KEY`] with the custom categories `/${productKey}/${deviceName}/user/get`
//! (sub) and `/${productKey}/${deviceName}/user/update` (pub), and devices `dev-001`, `dev-002`
//! and `dev-003` with the fixed secrets of [`DEMO_DEVICES`], MQTT on 127.0.0.1:1883 and the
//! HTTP API on 127.0.0.1:8080. [`instructions`] prints, for each device, its signed credentials
//! and ready `mosquitto_sub`/`mosquitto_pub` command lines, and an RRPC call with curl.
//!
//! ```
//! use aliot_io::demo::{DEMO_DEVICES, DEMO_PRODUCT_KEY, demo_config};
//!
//! let config = demo_config(None, None, None)?;
//! assert_eq!(config.listeners[0].bind.to_string(), "127.0.0.1:1883");
//! assert_eq!(config.registry.device_count(), DEMO_DEVICES.len());
//! assert_eq!(config.products[0].key, DEMO_PRODUCT_KEY);
//! # Ok::<(), aliot_io::config::ConfigError>(())
//! ```

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use aliot_auth::{SecureMode, SignRequest};
use aliot_topic::{CategoryKind, Permission};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::config::{Config, ConfigError};

/// The demo configuration, `io-common/src/demo.toml`.
pub const DEMO_CONFIG_TOML: &str = include_str!("demo.toml");

/// The demo's product key.
pub const DEMO_PRODUCT_KEY: &str = "a1DemoProd01";

/// The demo's devices and their secrets (public: for trying aliot locally, never for real use).
pub const DEMO_DEVICES: [(&str, &str); 3] = [
    ("dev-001", "DemoSecret0001aliotNotForProduct"),
    ("dev-002", "DemoSecret0002aliotNotForProduct"),
    ("dev-003", "DemoSecret0003aliotNotForProduct"),
];

/// The keepalive, in seconds, the printed commands ask for (the profile accepts 30 to 1200).
pub const DEMO_KEEPALIVE_SECS: u16 = 60;

/// The demo configuration, with the MQTT listener and the HTTP API moved where asked.
pub fn demo_config(
    mqtt_bind: Option<SocketAddr>,
    api_bind: Option<SocketAddr>,
    amqp_bind: Option<SocketAddr>,
) -> Result<Config, ConfigError> {
    let mut config = Config::parse(DEMO_CONFIG_TOML, "the built-in demo", Path::new("."))?;
    if let (Some(bind), Some(listener)) = (mqtt_bind, config.listeners.first_mut()) {
        listener.bind = bind;
    }
    if let (Some(bind), Some(api)) = (api_bind, config.api.as_mut()) {
        api.bind = bind;
    }
    if let (Some(bind), Some(amqp)) = (amqp_bind, config.amqp.as_mut()) {
        amqp.bind = bind;
    }
    Ok(config)
}

/// Where a client connects to reach a listener bound to `addr`: the loopback address when the
/// listener binds every address.
pub fn connect_addr(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

/// Quotes a word for a POSIX shell when it has characters the shell would act on.
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The MQTT connection options of one device for mosquitto_sub/mosquitto_pub, signed for
/// plain TCP with hmacsha256, client id `${productKey}.${deviceName}` and no timestamp.
fn mosquitto_options(
    mqtt: SocketAddr,
    product_key: &str,
    device_name: &str,
    secret: &aliot_auth::DeviceSecret,
) -> Result<(String, aliot_auth::ConnectCredentials), aliot_auth::ClientIdError> {
    let identity = aliot_auth::DeviceIdentity::new(product_key, device_name);
    let credentials = SignRequest::new(&identity, secret, SecureMode::Tcp).sign()?;
    let mqtt = connect_addr(mqtt);
    let options = format!(
        "-h {} -p {} -V mqttv311 -k {DEMO_KEEPALIVE_SECS} -q 1 -i {} -u {} -P {}",
        mqtt.ip(),
        mqtt.port(),
        shell_quote(&credentials.client_id),
        shell_quote(&credentials.username),
        shell_quote(&credentials.password),
    );
    Ok((options, credentials))
}

/// What `aliot serve` prints for the demo: per device its credentials and ready
/// mosquitto_sub/mosquitto_pub lines; device-to-device messages over the product's broadcast
/// topics; an RRPC call with curl. The MQTT and API addresses are the bound ones.
///
/// Every line that is not a command starts with `#`, so the whole text can be pasted into a
/// shell a line at a time.
pub fn instructions(config: &Config, mqtt: SocketAddr, api: Option<SocketAddr>) -> String {
    let mut text = String::new();
    let mut devices = Vec::new();
    for (identity, secret) in config.registry.devices() {
        match mosquitto_options(mqtt, &identity.product_key, &identity.device_name, secret) {
            Ok((options, credentials)) => devices.push((identity, options, credentials)),
            Err(error) => {
                let _ = writeln!(text, "# {identity}: cannot sign its credentials: {error}");
            }
        }
    }

    for (identity, options, credentials) in &devices {
        let custom = |wanted: fn(Permission) -> bool| {
            custom_topic(config, &identity.product_key, &identity.device_name, wanted)
        };
        let _ = writeln!(text, "# {identity}");
        let _ = writeln!(text, "#   client id: {}", credentials.client_id);
        let _ = writeln!(text, "#   username:  {}", credentials.username);
        let _ = writeln!(text, "#   password:  {}", credentials.password);
        if let Some(topic) = custom(Permission::allows_subscribe) {
            let _ = writeln!(text, "# receive what is sent to {identity}:");
            let _ = writeln!(
                text,
                "mosquitto_sub {options} -t {} -v",
                shell_quote(&topic)
            );
        }
        if let Some(topic) = custom(Permission::allows_publish) {
            let _ = writeln!(
                text,
                "# report as {identity} (a second connection of one device takes over the first):"
            );
            let _ = writeln!(
                text,
                "mosquitto_pub {options} -t {} -m {}",
                shell_quote(&topic),
                shell_quote(r#"{"temperature":21.5}"#)
            );
        }
        let _ = writeln!(text);
    }

    // The last two devices, so the first stays free for the commands above and for RRPC.
    if let [
        ..,
        (listener, listener_options, _),
        (speaker, speaker_options, _),
    ] = &devices[..]
        && listener.product_key == speaker.product_key
    {
        let filter = format!("/broadcast/{}/#", listener.product_key);
        let topic = format!("/broadcast/{}/hello", speaker.product_key);
        let _ = writeln!(
            text,
            "# devices of one product meet on its broadcast topics: {} listens, {} speaks",
            listener.device_name, speaker.device_name
        );
        let _ = writeln!(
            text,
            "mosquitto_sub {listener_options} -t {} -v",
            shell_quote(&filter)
        );
        let _ = writeln!(
            text,
            "mosquitto_pub {speaker_options} -t {} -m {}",
            shell_quote(&topic),
            shell_quote(&format!("hello from {}", speaker.device_name))
        );
        let _ = writeln!(text);
    }

    if let (
        Some(api),
        [
            (poster, poster_options, poster_credentials),
            ..,
            (listener, listener_options, listener_credentials),
        ],
    ) = (api, &devices[..])
    {
        thing_instructions(
            &mut text,
            connect_addr(api),
            (
                poster,
                &with_auto_subscription(poster_options, &poster_credentials.client_id),
            ),
            (
                listener,
                &with_auto_subscription(listener_options, &listener_credentials.client_id),
            ),
            custom_topic(
                config,
                &listener.product_key,
                &listener.device_name,
                Permission::allows_subscribe,
            )
            .as_deref(),
        );
    }

    if let (Some(api), Some((identity, options, _))) = (api, devices.first()) {
        let sub_topic = custom_topic(
            config,
            &identity.product_key,
            &identity.device_name,
            Permission::allows_subscribe,
        );
        api_instructions(
            &mut text,
            connect_addr(api),
            identity,
            options,
            sub_topic.as_deref(),
        );
    }
    text
}

/// The first custom topic of a device's product whose permission `wanted` accepts, filled
/// with the device's identity.
fn custom_topic(
    config: &Config,
    product_key: &str,
    device_name: &str,
    wanted: fn(Permission) -> bool,
) -> Option<String> {
    config
        .registry
        .product_categories(product_key)?
        .iter()
        .find(|category| category.kind() == CategoryKind::Custom && wanted(category.permission()))
        .map(|category| category.fill(product_key, device_name))
}

/// A `curl` line posting a JSON object to `url`, its fields in the order given (the
/// platform's documentation order, easier to read than sorted).
fn curl_post(url: &str, fields: &[(&str, serde_json::Value)]) -> String {
    let body = fields
        .iter()
        .map(|(name, value)| format!("{}:{value}", serde_json::Value::from(*name)))
        .collect::<Vec<_>>()
        .join(",");
    format!(
        "curl -s -X POST {} -H 'content-type: application/json' -d {}",
        shell_quote(url),
        shell_quote(&format!("{{{body}}}"))
    )
}

/// `options` with `_ss=1` added to the client id's extension: the automatic subscription. The
/// extension's other pairs are not signed, so the password stays the same.
fn with_auto_subscription(options: &str, client_id: &str) -> String {
    let auto = match client_id.strip_suffix('|') {
        Some(open) => format!("{open},_ss=1|"),
        None => return options.to_owned(),
    };
    options.replace(&shell_quote(client_id), &shell_quote(&auto))
}

/// The thing model: `listener`, automatically subscribed, gets a property set, a service call
/// and a shadow `control` the server sends with curl; `poster` posts a property, which the
/// server then reads.
fn thing_instructions(
    text: &mut String,
    api: SocketAddr,
    (poster, poster_options): (&aliot_auth::DeviceIdentity, &str),
    (listener, listener_options): (&aliot_auth::DeviceIdentity, &str),
    listener_topic: Option<&str>,
) {
    let base = format!("http://{api}");
    let device = |identity: &aliot_auth::DeviceIdentity| {
        [
            ("ProductKey", identity.product_key.as_str().into()),
            ("DeviceName", identity.device_name.as_str().into()),
        ]
    };
    let with = |identity, extra: &[(&'static str, serde_json::Value)]| {
        let mut fields = device(identity).to_vec();
        fields.extend_from_slice(extra);
        fields
    };
    let Some(topic) = listener_topic else {
        return;
    };
    let dn = &listener.device_name;
    let _ = writeln!(
        text,
        "# the thing model: {dn} listens with _ss=1 (automatic subscription: system downlinks come without SUBSCRIBE)"
    );
    let _ = writeln!(
        text,
        "mosquitto_sub {listener_options} -t {} -v",
        shell_quote(topic)
    );
    let _ = writeln!(
        text,
        "# the server sets a property, calls a service and updates the shadow of {dn}:"
    );
    let calls: [(&str, Vec<(&str, serde_json::Value)>); 3] = [
        (
            "SetDeviceProperty",
            with(listener, &[("Items", r#"{"LightSwitch":1}"#.into())]),
        ),
        (
            "InvokeThingService",
            with(
                listener,
                &[
                    ("Identifier", "reboot".into()),
                    ("Args", r#"{"delay":5}"#.into()),
                ],
            ),
        ),
        (
            "UpdateDeviceShadow",
            with(
                listener,
                &[(
                    "ShadowMessage",
                    r#"{"method":"update","state":{"desired":{"color":"green"}},"version":1}"#
                        .into(),
                )],
            ),
        ),
    ];
    for (action, fields) in calls {
        let _ = writeln!(text, "{}", curl_post(&format!("{base}/{action}"), &fields));
    }
    let pk = &poster.product_key;
    let dn = &poster.device_name;
    let _ = writeln!(text, "# {dn} posts a property, and the server reads it:");
    let _ = writeln!(
        text,
        "mosquitto_pub {poster_options} -t {} -m {}",
        shell_quote(&format!("/sys/{pk}/{dn}/thing/event/property/post")),
        shell_quote(
            r#"{"id":"1","version":"1.0","params":{"Temperature":21.5},"method":"thing.event.property.post"}"#
        )
    );
    let _ = writeln!(
        text,
        "{}",
        curl_post(
            &format!("{base}/QueryDevicePropertyStatus"),
            &device(poster)
        )
    );
    let _ = writeln!(text);
}

/// The HTTP API part: a server-side publish to the device's `sub` topic, and an RRPC call,
/// with a mosquitto pipeline that answers it as the device.
fn api_instructions(
    text: &mut String,
    api: SocketAddr,
    identity: &aliot_auth::DeviceIdentity,
    options: &str,
    sub_topic: Option<&str>,
) {
    let base = format!("http://{api}");
    let pk = &identity.product_key;
    let dn = &identity.device_name;

    if let Some(topic) = sub_topic {
        let message = format!("hello {dn}");
        let _ = writeln!(
            text,
            "# the server publishes to {dn}'s {topic} (the mosquitto_sub of {dn} above prints it):"
        );
        let _ = writeln!(
            text,
            "{}",
            curl_post(
                &format!("{base}/pub"),
                &[
                    ("ProductKey", pk.as_str().into()),
                    ("TopicFullName", topic.into()),
                    ("MessageContent", BASE64.encode(&message).into()),
                    ("Qos", 1.into()),
                ],
            )
        );
        let _ = writeln!(text);
    }

    let request = format!("/sys/{pk}/{dn}/rrpc/request/+");
    let response = format!("/sys/{pk}/{dn}/rrpc/response/");
    let _ = writeln!(
        text,
        "# RRPC: {dn} answers one call with \"pong\" (mosquitto_sub takes one request and ends;"
    );
    let _ = writeln!(
        text,
        "# mosquitto_pub, connecting as {dn} again, sends the response on the same messageId):"
    );
    let _ = writeln!(
        text,
        "mosquitto_sub {options} -t {} -C 1 -v | while read -r topic payload; do mosquitto_pub {options} -t \"{response}${{topic##*/}}\" -m pong; done",
        shell_quote(&request),
    );
    let _ = writeln!(
        text,
        "# …and the server calls it: RrpcCode SUCCESS with PayloadBase64Byte \"cG9uZw==\" (pong), or"
    );
    let _ = writeln!(
        text,
        "# OFFLINE when {dn} is not connected, TIMEOUT when it does not answer within Timeout ms:"
    );
    let _ = writeln!(
        text,
        "{}",
        curl_post(
            &format!("{base}/rrpc"),
            &[
                ("ProductKey", pk.as_str().into()),
                ("DeviceName", dn.as_str().into()),
                ("RequestBase64Byte", BASE64.encode("ping").into()),
                ("Timeout", 5000.into()),
            ],
        )
    );
}
