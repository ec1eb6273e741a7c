//! A configuration file for `aliot serve --config` with the generated devices of a
//! [`PlatformDevices`] product, so that the connections scenario can sign in as each of them.

use std::fmt::Write as _;
use std::net::SocketAddr;

use super::LoadError;
use super::login::PlatformDevices;
use super::target::Target;

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
    let bind = Target::from_addr(bind)?.addr();
    let mut toml = String::with_capacity(128 + device_count * 96);
    // Writing to a String cannot fail; the results are ignored for that reason only.
    let _ = writeln!(
        toml,
        "# Written by aliot-bench aliot-config: {device_count} generated devices of product \
         {}.\n# Every limit is aliot's default.\n",
        devices.product_key
    );
    let _ = writeln!(toml, "[[listener]]\nbind = {}\n", quoted(&bind.to_string()));
    let _ = writeln!(toml, "[auth]\nopen = {open}\n");
    let _ = writeln!(
        toml,
        "[[product]]\nkey = {}\n",
        quoted(&devices.product_key)
    );
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
