//! A configuration file for `aliot serve --config` with the generated devices of a
//! [`PlatformDevices`] product, so that the connections scenario can sign in as each of them.

use std::fmt::Write as _;
use std::net::SocketAddr;

use super::LoadError;
use super::login::PlatformDevices;
use super::target::Target;

/// The custom category the devices of `aliot-bench amqp` publish on: a device's own topic, so
/// what it publishes there is `upstream` for the consumer groups.
pub const USER_UPDATE_CATEGORY: &str = "/${productKey}/${deviceName}/user/update";

/// Writes the TOML of a broker listening on `bind` (a loopback address) with the product of
/// `devices` and its first `device_count` devices; `open` also admits plain MQTT clients
/// (open mode, for the scenarios that use no credentials). Every limit is left at aliot's
/// default: the benches measure the broker as it ships.
///
/// ```
/// use aliot_benches::loadgen::aliot_config::aliot_config_toml;
/// use aliot_benches::loadgen::login::PlatformDevices;
///
/// let devices = PlatformDevices::parse("benchPK:seed")?;
/// let toml = aliot_config_toml("127.0.0.1:1883".parse()?, &devices, 2, true)?;
/// assert!(toml.contains("bind = \"127.0.0.1:1883\""));
/// assert!(toml.contains("open = true"));
/// assert_eq!(toml.matches("[[product.device]]").count(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// [`LoadError::NotLoopback`] when `bind` is not a loopback address.
pub fn aliot_config_toml(
    bind: SocketAddr,
    devices: &PlatformDevices,
    device_count: usize,
    open: bool,
) -> Result<String, LoadError> {
    config_toml(bind, devices, device_count, open, None)
}

/// The server-side subscription a generated configuration serves (issue 16): an AMQP listener,
/// one AccessKey, one consumer group taking the upstream messages of the generated product,
/// the HTTP API (for `GET /metrics`), and the group's backlog limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionConfig {
    /// The AMQP listener (a loopback address; port 0: any free port, printed by `aliot serve`).
    pub amqp_bind: SocketAddr,
    /// The HTTP API (a loopback address; port 0: any free port, printed by `aliot serve`).
    pub api_bind: SocketAddr,
    /// The AccessKey ID consumers sign their login with.
    pub access_key_id: String,
    /// Its secret.
    pub access_key_secret: String,
    /// The consumer group's id.
    pub group: String,
    /// `[backlog] max_messages`.
    pub backlog_messages: u64,
    /// `[backlog] max_bytes`.
    pub backlog_bytes: u64,
}

/// As [`aliot_config_toml`], and the broker also serves `subscription`: the product gets the
/// custom category `/${productKey}/${deviceName}/user/update` (publish), where the devices of
/// `aliot-bench amqp` publish, and the file gets `[api]`, `[amqp]`, `[[access_key]]`,
/// `[[consumer_group]]` (only the product's `upstream` messages, so that device status and
/// the `/broadcast/…` topics of the other scenarios stay out of its backlog) and `[backlog]`.
///
/// ```
/// use aliot_benches::loadgen::aliot_config::{SubscriptionConfig, subscription_config_toml};
/// use aliot_benches::loadgen::login::PlatformDevices;
///
/// let devices = PlatformDevices::parse("benchPK:seed")?;
/// let subscription = SubscriptionConfig {
///     amqp_bind: "127.0.0.1:0".parse()?,
///     api_bind: "127.0.0.1:0".parse()?,
///     access_key_id: "benchKey".into(),
///     access_key_secret: "benchSecret".into(),
///     group: "G".into(),
///     backlog_messages: 2_000_000,
///     backlog_bytes: 1 << 30,
/// };
/// let toml = subscription_config_toml("127.0.0.1:1883".parse()?, &devices, 2, &subscription)?;
/// assert!(toml.contains("[[consumer_group]]\nid = \"G\""));
/// assert!(toml.contains("max_messages = 2000000"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// [`LoadError::NotLoopback`] when an address is not a loopback address.
pub fn subscription_config_toml(
    bind: SocketAddr,
    devices: &PlatformDevices,
    device_count: usize,
    subscription: &SubscriptionConfig,
) -> Result<String, LoadError> {
    config_toml(bind, devices, device_count, false, Some(subscription))
}

/// The TOML of [`aliot_config_toml`], with the server-side subscription when one is given.
fn config_toml(
    bind: SocketAddr,
    devices: &PlatformDevices,
    device_count: usize,
    open: bool,
    subscription: Option<&SubscriptionConfig>,
) -> Result<String, LoadError> {
    let bind = Target::from_addr(bind)?.addr();
    let mut toml = String::with_capacity(128 + device_count * 96);
    // Writing to a String cannot fail; the results are ignored for that reason only.
    let _ = writeln!(
        toml,
        "# Written by aliot-bench aliot-config: {device_count} generated devices of product \
         {}.\n# Every limit is aliot's default{}.\n",
        devices.product_key,
        match subscription {
            Some(_) => " but the consumer group's backlog limits",
            None => "",
        }
    );
    let _ = writeln!(toml, "[[listener]]\nbind = {}\n", quoted(&bind.to_string()));
    let _ = writeln!(toml, "[auth]\nopen = {open}\n");
    if let Some(subscription) = subscription {
        let amqp = Target::from_addr(subscription.amqp_bind)?.addr();
        let api = Target::from_addr(subscription.api_bind)?.addr();
        let _ = writeln!(toml, "[api]\nbind = {}\n", quoted(&api.to_string()));
        let _ = writeln!(toml, "[amqp]\nbind = {}\n", quoted(&amqp.to_string()));
        let _ = writeln!(
            toml,
            "[[access_key]]\nid = {}\nsecret = {}\n",
            quoted(&subscription.access_key_id),
            quoted(&subscription.access_key_secret),
        );
        let _ = writeln!(
            toml,
            "[[consumer_group]]\nid = {}\nproducts = [{}]\nkinds = [\"upstream\"]\n",
            quoted(&subscription.group),
            quoted(&devices.product_key),
        );
        let _ = writeln!(
            toml,
            "[backlog]\nmax_messages = {}\nmax_bytes = {}\n",
            subscription.backlog_messages, subscription.backlog_bytes,
        );
    }
    let _ = writeln!(toml, "[[product]]\nkey = {}", quoted(&devices.product_key));
    if subscription.is_some() {
        let _ = writeln!(
            toml,
            "categories = [\n  {{ topic = \"{USER_UPDATE_CATEGORY}\", permission = \"pub\" }},\n]"
        );
    }
    let _ = writeln!(toml);
    for index in 0..device_count {
        let _ = writeln!(
            toml,
            "[[product.device]]\nname = {}\nsecret = {}\n",
            quoted(&PlatformDevices::device_name(index)),
            quoted(devices.secret(index).expose()),
        );
    }
    Ok(toml)
}

/// A TOML basic string: JSON's escaping is a subset TOML reads the same way.
fn quoted(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aliot_auth::{ConnectFields, DeviceRegistry, VerifyOptions, verify};
    use aliot_tokio::config::Config;
    use std::path::Path;

    #[test]
    fn aliot_reads_the_file_and_accepts_the_generated_credentials() {
        let devices = PlatformDevices::parse("benchPK:s3ed").expect("valid");
        let toml = aliot_config_toml(
            "127.0.0.1:0".parse().expect("an address"),
            &devices,
            5,
            false,
        )
        .expect("loopback");
        let config =
            Config::parse(&toml, "generated.toml", Path::new(".")).expect("aliot reads it");
        assert!(!config.auth.open);
        let registry = &config.registry;
        for index in 0..5 {
            let identity = devices.identity(index);
            assert!(
                registry
                    .lookup(&identity.product_key, &identity.device_name)
                    .is_some(),
                "{identity:?}"
            );
            let signed = aliot_auth::SignRequest::new(
                &identity,
                &devices.secret(index),
                aliot_auth::SecureMode::Tcp,
            )
            .sign()
            .expect("signs");
            let fields = ConnectFields {
                client_id: &signed.client_id,
                username: Some(&signed.username),
                password: Some(signed.password.as_bytes()),
            };
            verify(&fields, registry, &VerifyOptions::default()).expect("accepted");
        }
    }

    #[test]
    fn aliot_reads_the_subscription_and_the_user_category() {
        let devices = PlatformDevices::parse("benchPK:s3ed").expect("valid");
        let subscription = SubscriptionConfig {
            amqp_bind: "127.0.0.1:0".parse().expect("an address"),
            api_bind: "127.0.0.1:0".parse().expect("an address"),
            access_key_id: "benchKey".into(),
            access_key_secret: "benchSecret".into(),
            group: "G".into(),
            backlog_messages: 2_000_000,
            backlog_bytes: 1 << 30,
        };
        let toml = subscription_config_toml(
            "127.0.0.1:0".parse().expect("an address"),
            &devices,
            3,
            &subscription,
        )
        .expect("loopback");
        let config =
            Config::parse(&toml, "generated.toml", Path::new(".")).expect("aliot reads it");
        assert!(config.amqp.is_some());
        assert_eq!(config.access_keys.len(), 1);
        let groups = &config.hub.consumer_groups;
        assert_eq!(groups.len(), 1, "{groups:?}");
        assert_eq!(config.hub.backlog_limits.max_messages, 2_000_000);
        assert_eq!(config.registry.device_count(), 3);
    }

    #[test]
    fn only_loopback_binds_are_written() {
        let devices = PlatformDevices::parse("pk:seed").expect("valid");
        assert!(matches!(
            aliot_config_toml(
                "0.0.0.0:1883".parse().expect("an address"),
                &devices,
                1,
                true
            ),
            Err(LoadError::NotLoopback(_))
        ));
    }

    #[test]
    fn quoting_escapes_what_toml_needs_escaped() {
        assert_eq!(quoted("a\"b\\c"), r#""a\"b\\c""#);
    }
}
