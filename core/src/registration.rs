//! What a device registering itself over MQTT is told (PLATFORM-PROTOCOLS §2.1–2.3).
//!
//! A [`Connection`](crate::server::Connection) whose CONNECT asks for dynamic registration
//! (`authType=register` or `regnwl`) emits
//! [`Event::RegistrationRequested`](crate::server::Event::RegistrationRequested) instead of
//! asking for a session. Whoever keeps the registry answers it, once the new credentials are
//! durable, with [`Command::Registered`](crate::server::Command::Registered) carrying a
//! [`RegistrationGrant`], or with [`Command::Refuse`](crate::server::Command::Refuse). The
//! connection then sends CONNACK 0 and the grant in one write (the C SDK 3.x reads for only
//! about 200 ms after CONNACK), answers nothing but PINGREQ and DISCONNECT, and closes
//! [`REGISTRATION_GRACE`] later if the device has not.

use alloc::string::String;
use core::time::Duration;

use aliot_auth::DeviceIdentity;
use bytes::Bytes;

/// The topic a pre-registered device's secret is pushed on.
pub const REGISTER_TOPIC: &str = "/ext/register";
/// The topic a device's token is pushed on when it was not registered beforehand.
pub const REGISTER_WITHOUT_PRE_REGISTRATION_TOPIC: &str = "/ext/regnwl";
/// How long a registration connection stays open after the grant, for the device to read it
/// and disconnect (ours: the platform does not say; its SDKs disconnect on receipt).
pub const REGISTRATION_GRACE: Duration = Duration::from_secs(2);

/// The credentials a registration gives a device: the topic and payload pushed to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistrationGrant {
    topic: &'static str,
    payload: Bytes,
}

impl RegistrationGrant {
    /// [`REGISTER_TOPIC`] or [`REGISTER_WITHOUT_PRE_REGISTRATION_TOPIC`].
    pub fn topic(&self) -> &'static str {
        self.topic
    }

    /// The JSON pushed.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// A pre-registered device's secret: `{"productKey","deviceName","deviceSecret"}` on
    /// `/ext/register`.
    ///
    /// ```
    /// use aliot_auth::DeviceIdentity;
    /// use aliot_core::registration::RegistrationGrant;
    ///
    /// let grant = RegistrationGrant::secret(&DeviceIdentity::new("a1PK", "dev"), "s3cr3t");
    /// assert_eq!(grant.topic(), "/ext/register");
    /// let pushed: serde_json::Value = serde_json::from_slice(grant.payload())?;
    /// assert_eq!(
    ///     pushed,
    ///     serde_json::json!({"productKey": "a1PK", "deviceName": "dev", "deviceSecret": "s3cr3t"})
    /// );
    /// # Ok::<(), serde_json::Error>(())
    /// ```
    pub fn secret(identity: &DeviceIdentity, secret: &str) -> Self {
        let payload = serde_json::json!({
            "productKey": identity.product_key,
            "deviceName": identity.device_name,
            "deviceSecret": secret,
        });
        RegistrationGrant {
            topic: REGISTER_TOPIC,
            payload: to_bytes(&payload),
        }
    }

    /// A device's token for the token login (`authType=connwl`, the token as password, the
    /// client id's id part `client_id`): `{"clientId","productKey","deviceName","deviceToken"}`
    /// on `/ext/regnwl`.
    pub fn token(identity: &DeviceIdentity, client_id: &str, token: &str) -> Self {
        let payload = serde_json::json!({
            "clientId": client_id,
            "productKey": identity.product_key,
            "deviceName": identity.device_name,
            "deviceToken": token,
        });
        RegistrationGrant {
            topic: REGISTER_WITHOUT_PRE_REGISTRATION_TOPIC,
            payload: to_bytes(&payload),
        }
    }
}

fn to_bytes(value: &serde_json::Value) -> Bytes {
    // A `Value` of strings always serializes.
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

/// The client id a device created by `regnwl` logs in with (before its `|...|` extension):
/// `${productKey}.${deviceName}` (ours: the platform's form is not documented).
pub fn token_client_id(identity: &DeviceIdentity) -> String {
    let mut id = String::with_capacity(identity.product_key.len() + identity.device_name.len() + 1);
    id.push_str(&identity.product_key);
    id.push('.');
    id.push_str(&identity.device_name);
    id
}
