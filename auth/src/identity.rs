//! Who a device is (`productKey` + `deviceName`) and the secret it proves it with.

use alloc::string::String;
use core::fmt;

use subtle::ConstantTimeEq;

use crate::AuthError;

/// The separator of the MQTT username `${deviceName}&${productKey}`.
const USERNAME_SEPARATOR: char = '&';

/// A device of the platform: the product it belongs to and its name within that product.
///
/// Displayed as `productKey/deviceName`.
///
/// ```
/// use aliot_auth::DeviceIdentity;
///
/// let identity = DeviceIdentity::new("a1TestPK001", "dev-001");
/// assert_eq!(identity.to_string(), "a1TestPK001/dev-001");
/// assert_eq!(identity.username(), "dev-001&a1TestPK001");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceIdentity {
    /// The key of the device's product (`${productKey}`).
    pub product_key: String,
    /// The device's name within its product (`${deviceName}`).
    pub device_name: String,
}

/// A copy of the identity, so that a map keyed by identities can be looked up by reference
/// and copy the key only when it inserts one.
impl From<&DeviceIdentity> for DeviceIdentity {
    fn from(identity: &DeviceIdentity) -> Self {
        identity.clone()
    }
}

impl DeviceIdentity {
    /// An identity from its product key and device name, taken as they are.
    pub fn new(product_key: impl Into<String>, device_name: impl Into<String>) -> Self {
        Self {
            product_key: product_key.into(),
            device_name: device_name.into(),
        }
    }

    /// Reads the MQTT username form `${deviceName}&${productKey}`.
    ///
    /// Exactly one `&` must separate a non-empty device name from a non-empty product key
    /// (neither may contain `&`, or the username would be ambiguous).
    ///
    /// ```
    /// use aliot_auth::{AuthError, DeviceIdentity};
    ///
    /// let identity = DeviceIdentity::from_username("dev-001&a1TestPK001")?;
    /// assert_eq!(identity, DeviceIdentity::new("a1TestPK001", "dev-001"));
    /// assert!(matches!(
    ///     DeviceIdentity::from_username("dev-001"),
    ///     Err(AuthError::UsernameWithoutSeparator(_))
    /// ));
    /// # Ok::<(), AuthError>(())
    /// ```
    pub fn from_username(username: &str) -> Result<Self, AuthError> {
        let Some((device_name, product_key)) = username.split_once(USERNAME_SEPARATOR) else {
            return Err(AuthError::UsernameWithoutSeparator(username.into()));
        };
        if product_key.contains(USERNAME_SEPARATOR) {
            return Err(AuthError::UsernameWithSeveralSeparators(username.into()));
        }
        if device_name.is_empty() {
            return Err(AuthError::EmptyDeviceName);
        }
        if product_key.is_empty() {
            return Err(AuthError::EmptyProductKey);
        }
        Ok(Self::new(product_key, device_name))
    }

    /// The MQTT username of this device: `${deviceName}&${productKey}`.
    pub fn username(&self) -> String {
        let mut username =
            String::with_capacity(self.device_name.len() + 1 + self.product_key.len());
        username.push_str(&self.device_name);
        username.push(USERNAME_SEPARATOR);
        username.push_str(&self.product_key);
        username
    }
}

impl fmt::Display for DeviceIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.product_key, self.device_name)
    }
}

/// The secret the platform issues to a device (`${deviceSecret}`), the HMAC key of its CONNECT.
///
/// Its `Debug` output never shows the secret, and two secrets compare in constant time.
///
/// ```
/// use aliot_auth::DeviceSecret;
///
/// let secret = DeviceSecret::new("0123456789abcdef0123456789abcdef");
/// assert_eq!(format!("{secret:?}"), "DeviceSecret(..)");
/// assert_eq!(secret.as_bytes().len(), 32);
/// ```
#[derive(Clone)]
pub struct DeviceSecret(String);

impl DeviceSecret {
    /// Wraps a device secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret's bytes, the HMAC key.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The secret as text, for a device that has to store or print its own credentials.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl PartialEq for DeviceSecret {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes().ct_eq(other.as_bytes()).into()
    }
}

impl Eq for DeviceSecret {}

impl fmt::Debug for DeviceSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceSecret(..)")
    }
}
