//! How the simulated clients log in: open (client id only), one user name and password for
//! every client, or platform devices that each sign their own CONNECT.

use aliot_auth::{DeviceIdentity, DeviceSecret, SecureMode, SignMethod, SignRequest, sign_content};
use aliot_core::client::{ClientConfig, Credentials};

use super::LoadError;

/// Keepalive every simulated client announces: 60 s, inside the platform's 30–1200 s and far
/// longer than a scenario's idle time, so that pings are rare.
pub const KEEP_ALIVE_SECS: u16 = 60;

/// The devices of a generated platform product: `dev000000`, `dev000001`, … with secrets
/// derived from a seed, so that the broker's configuration ([`super::aliot_config`]) and the
/// generator agree without sharing a file.
///
/// ```
/// use aliot_benches::loadgen::login::PlatformDevices;
///
/// let devices = PlatformDevices::parse("benchPK:s33d")?;
/// assert_eq!(devices.identity(7).device_name, "dev000007");
/// assert_eq!(devices.secret(7).expose().len(), 64);
/// # Ok::<(), aliot_benches::loadgen::LoadError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlatformDevices {
    /// The product every device belongs to.
    pub product_key: String,
    /// The secret from which every device secret is derived.
    pub seed: String,
}

impl PlatformDevices {
    /// Parses `PRODUCT_KEY:SEED`.
    ///
    /// # Errors
    ///
    /// [`LoadError::PlatformSpec`] when there is no `:` or either side is empty.
    pub fn parse(spec: &str) -> Result<PlatformDevices, LoadError> {
        match spec.split_once(':') {
            Some((product_key, seed)) if !product_key.is_empty() && !seed.is_empty() => {
                Ok(PlatformDevices {
                    product_key: product_key.to_owned(),
                    seed: seed.to_owned(),
                })
            }
            _ => Err(LoadError::PlatformSpec(spec.to_owned())),
        }
    }

    /// The name of device `index`.
    #[must_use]
    pub fn device_name(index: usize) -> String {
        format!("dev{index:06}")
    }

    /// The identity of device `index`.
    #[must_use]
    pub fn identity(&self, index: usize) -> DeviceIdentity {
        DeviceIdentity::new(self.product_key.as_str(), Self::device_name(index))
    }

    /// The secret of device `index`: hex HMAC-SHA256 of `productKey/deviceName` keyed by the
    /// seed.
    #[must_use]
    pub fn secret(&self, index: usize) -> DeviceSecret {
        self.secret_of(&self.identity(index))
    }

    /// The secret of `device`, derived from the seed as [`secret`](Self::secret) derives it.
    #[must_use]
    pub fn secret_of(&self, device: &DeviceIdentity) -> DeviceSecret {
        let name = format!("{}/{}", device.product_key, device.device_name);
        DeviceSecret::new(sign_content(
            SignMethod::HmacSha256,
            self.seed.as_bytes(),
            &name,
        ))
    }

    /// The signed CONNECT credentials of device `index` (client id `PK.DN`, hmacsha256,
    /// securemode 3, no timestamp).
    ///
    /// # Errors
    ///
    /// [`LoadError::Sign`] or [`LoadError::Credentials`] when the product key or device name
    /// cannot form a client id or user name.
    pub fn credentials(&self, index: usize) -> Result<Credentials, LoadError> {
        self.credentials_with(index, &[])
    }

    /// The signed CONNECT credentials of device `index` with more pairs in its client id's
    /// extension, after `securemode` and `signmethod`: `[("_ss", "1")]` gives
    /// `PK.DN|securemode=3,signmethod=hmacsha256,_ss=1|`, a device with the automatic
    /// subscription. The extension is not signed, so the password is the same.
    ///
    /// ```
    /// use aliot_benches::loadgen::login::PlatformDevices;
    ///
    /// let devices = PlatformDevices::parse("benchPK:s33d")?;
    /// let plain = devices.credentials(0)?;
    /// let auto = devices.credentials_with(0, &[("_ss", "1")])?;
    /// assert_eq!(auto.client_id(), "benchPK.dev000000|securemode=3,signmethod=hmacsha256,_ss=1|");
    /// assert_eq!(auto.username(), plain.username());
    /// # Ok::<(), aliot_benches::loadgen::LoadError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`credentials`](Self::credentials), and [`LoadError::Sign`] for a pair the client id
    /// cannot hold (a key given twice, `securemode`, `signmethod` or `timestamp`).
    pub fn credentials_with(
        &self,
        index: usize,
        extension: &[(&str, &str)],
    ) -> Result<Credentials, LoadError> {
        let identity = self.identity(index);
        let secret = self.secret(index);
        let request = extension.iter().fold(
            SignRequest::new(&identity, &secret, SecureMode::Tcp),
            |request, (key, value)| request.param(*key, *value),
        );
        let signed = request.sign().map_err(|error| LoadError::Sign {
            device: format!("{}/{}", identity.product_key, identity.device_name),
            error,
        })?;
        Ok(Credentials::try_from(signed)?)
    }

    /// The client configuration of device `index` signing in with `extension` in its client
    /// id (see [`credentials_with`](Self::credentials_with)), with the keepalive and window
    /// of every simulated client ([`Login::client_config`]).
    ///
    /// # Errors
    ///
    /// As [`credentials_with`](Self::credentials_with).
    pub fn client_config(
        &self,
        index: usize,
        extension: &[(&str, &str)],
        max_in_flight: usize,
    ) -> Result<ClientConfig, LoadError> {
        let config = ClientConfig::new(self.credentials_with(index, extension)?)
            .with_identity(self.identity(index));
        Ok(with_window(config, max_in_flight))
    }
}

/// How every simulated client logs in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Login {
    /// Only a client id (an open broker, or aliot in open mode).
    Open,
    /// The same user name and password for every client (a mosquitto password file, rumqttd's
    /// `auth` table).
    Password {
        /// The user name.
        username: String,
        /// The password.
        password: String,
    },
    /// Each client is a device of a generated product and signs its CONNECT (aliot).
    Platform(PlatformDevices),
}

impl Login {
    /// The client configuration of client `index` of a scenario: `client_id` for open and
    /// password logins, device `index` for platform logins (whose client id is its own).
    ///
    /// # Errors
    ///
    /// [`LoadError::Credentials`] when the client id, user name or password cannot go into a
    /// CONNECT; [`LoadError::Sign`] when a device's credentials cannot be signed.
    pub fn client_config(
        &self,
        index: usize,
        client_id: &str,
        max_in_flight: usize,
    ) -> Result<ClientConfig, LoadError> {
        let config = match self {
            Login::Open => ClientConfig::new(Credentials::anonymous(client_id)?),
            Login::Password { username, password } => ClientConfig::new(
                Credentials::with_password(client_id, username, password.clone().into_bytes())?,
            ),
            Login::Platform(devices) => return devices.client_config(index, &[], max_in_flight),
        };
        Ok(with_window(config, max_in_flight))
    }

    /// Where a scenario's topics live: `bench/{tag}` for open and password logins,
    /// `/broadcast/{productKey}/bench/{tag}` for platform devices (the one category where
    /// every device of a product may publish and subscribe).
    #[must_use]
    pub fn topic_root(&self, tag: &str) -> String {
        match self {
            Login::Open | Login::Password { .. } => format!("bench/{tag}"),
            Login::Platform(devices) => format!("/broadcast/{}/bench/{tag}", devices.product_key),
        }
    }
}

/// `config` with the keepalive of every simulated client and a window of `max_in_flight`
/// (at least 1).
fn with_window(mut config: ClientConfig, max_in_flight: usize) -> ClientConfig {
    config.keep_alive_secs = KEEP_ALIVE_SECS;
    config.max_in_flight = max_in_flight.max(1);
    // A publisher never lets commands queue past its window, but a subscriber's SUBSCRIBE
    // and the rare burst must not fail.
    config.max_queued = config.max_queued.max(max_in_flight);
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_specs_need_both_halves() {
        for bad in ["", "pk", "pk:", ":seed"] {
            assert!(
                matches!(PlatformDevices::parse(bad), Err(LoadError::PlatformSpec(_))),
                "{bad}"
            );
        }
        let devices = PlatformDevices::parse("pk:a:b").expect("the seed may hold ':'");
        assert_eq!(devices.seed, "a:b");
    }

    #[test]
    fn device_secrets_differ_per_device_and_seed() {
        let one = PlatformDevices::parse("pk:one").expect("valid");
        let two = PlatformDevices::parse("pk:two").expect("valid");
        assert_ne!(one.secret(0).expose(), one.secret(1).expose());
        assert_ne!(one.secret(0).expose(), two.secret(0).expose());
    }

    #[test]
    fn platform_credentials_verify_against_a_registry_of_the_derived_secrets() {
        use aliot_auth::{ConnectFields, MemoryRegistry, VerifyOptions, verify};
        use aliot_topic::ProductCategories;

        let devices = PlatformDevices::parse("benchPK:seed").expect("valid");
        let mut registry = MemoryRegistry::new();
        registry.add_product("benchPK", ProductCategories::defaults());
        registry
            .add_device("benchPK", "dev000042", devices.secret(42))
            .expect("a new device");
        let identity = devices.identity(42);
        let secret = devices.secret(42);
        let signed = SignRequest::new(&identity, &secret, SecureMode::Tcp)
            .sign()
            .expect("signs");
        let fields = ConnectFields {
            client_id: &signed.client_id,
            username: Some(&signed.username),
            password: Some(signed.password.as_bytes()),
        };
        let verified =
            verify(&fields, &registry, &VerifyOptions::default()).expect("the broker accepts");
        assert_eq!(verified.identity, identity);
    }

    #[test]
    fn pairs_added_to_the_extension_keep_the_signature_valid() {
        use aliot_auth::{ConnectFields, MemoryRegistry, VerifyOptions, verify};
        use aliot_topic::ProductCategories;

        let devices = PlatformDevices::parse("benchPK:seed").expect("valid");
        let mut registry = MemoryRegistry::new();
        registry.add_product("benchPK", ProductCategories::defaults());
        registry
            .add_device("benchPK", "dev000000", devices.secret(0))
            .expect("a new device");
        let credentials = devices.credentials_with(0, &[("_ss", "1")]).expect("signs");
        let password = credentials.password().expect("a password");
        let fields = ConnectFields {
            client_id: credentials.client_id(),
            username: credentials.username(),
            password: Some(password),
        };
        verify(&fields, &registry, &VerifyOptions::default()).expect("the broker accepts");
        assert!(matches!(
            devices.credentials_with(0, &[("_ss", "1"), ("_ss", "0")]),
            Err(LoadError::Sign { .. })
        ));
    }

    #[test]
    fn client_configs_carry_the_window_and_keepalive() {
        let config = Login::Open
            .client_config(0, "c-0", 0)
            .expect("a valid client id");
        assert_eq!(config.max_in_flight, 1);
        assert_eq!(config.keep_alive_secs, KEEP_ALIVE_SECS);
        let devices = PlatformDevices::parse("pk:seed").expect("valid");
        let config = Login::Platform(devices.clone())
            .client_config(3, "ignored", 64)
            .expect("signs");
        assert_eq!(config.identity, Some(devices.identity(3)));
        assert_eq!(config.credentials.username(), Some("dev000003&pk"));
    }

    #[test]
    fn platform_topics_live_under_the_product_broadcast_category() {
        let devices = PlatformDevices::parse("pk:seed").expect("valid");
        assert_eq!(
            Login::Platform(devices).topic_root("t"),
            "/broadcast/pk/bench/t"
        );
        assert_eq!(Login::Open.topic_root("t"), "bench/t");
    }
}
