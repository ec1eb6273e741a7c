//! Device authentication of the platform profile.
//!
//! `aliot-auth` knows who a device is and how it proves it: the device identity and secret,
//! the client-id extension (`id|securemode=3,signmethod=hmacsha1,timestamp=…|`), signing the
//! CONNECT fields on the device side and verifying them on the broker side, and the device
//! registry the broker looks devices up in. It is `no_std` + `alloc`, above `aliot-topic` and
//! below `aliot-core`.
//!
//! ```
//! use aliot_auth::{
//!     ConnectFields, DeviceIdentity, DeviceSecret, MemoryRegistry, SecureMode, SignRequest,
//!     VerifyOptions, verify,
//! };
//! use aliot_topic::ProductCategories;
//!
//! // The broker knows the device…
//! let mut registry = MemoryRegistry::new();
//! registry.add_product("a1TestPK001", ProductCategories::defaults());
//! registry.add_device("a1TestPK001", "dev-001", DeviceSecret::new("s3cr3t"))?;
//!
//! // …the device signs its CONNECT…
//! let identity = DeviceIdentity::new("a1TestPK001", "dev-001");
//! let secret = DeviceSecret::new("s3cr3t");
//! let credentials = SignRequest::new(&identity, &secret, SecureMode::Tcp)
//!     .timestamp("1700000000000")
//!     .sign()?;
//!
//! // …and the broker verifies it.
//! let fields = ConnectFields {
//!     client_id: &credentials.client_id,
//!     username: Some(&credentials.username),
//!     password: Some(credentials.password.as_bytes()),
//! };
//! let verified = verify(&fields, &registry, &VerifyOptions::default())?;
//! assert_eq!(verified.identity, identity);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Choices where the platform says nothing (SPEC §2)
//!
//! - A client id with no `|` at all is a plain MQTT client id:
//!   [`ClientIdError::MissingExtension`], distinct from the other malformations, so a broker
//!   in open mode can tell it apart.
//! - No `signmethod` means `hmacmd5`, the platform's default; no `securemode` is accepted (the
//!   transport in use is the adapter's to check against [`ClientId::secure_mode`]).
//! - `signmethod` values are matched exactly in lowercase, as every SDK sends them; only
//!   `securemode`, `signmethod` and `timestamp` may not repeat, unknown keys may.
//! - A password whose length is not the method's digest length, or that is not hex, is
//!   malformed (CONNACK 4); an unknown device or a wrong digest is not authorized (CONNACK 5).
//! - The timestamp is not checked unless [`VerifyOptions::max_timestamp_skew_ms`] is set; then a
//!   missing or distant timestamp is not authorized (5), a non-decimal one malformed (2), and
//!   the check without a clock reading is the broker's fault (3). Timestamps below
//!   [`SECONDS_TIMESTAMP_BELOW`] are seconds (the Python SDK), others milliseconds.
#![no_std]
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

extern crate alloc;

mod client_id;
mod consumer;
mod identity;
mod psk;
mod registration;
mod registry;
mod sign;
mod subdevice;
mod verify;

pub use client_id::{
    ClientId, ClientIdError, MAX_ID_CHARS, SECURE_MODE_KEY, SIGN_METHOD_KEY, SecureMode,
    SignMethod, TIMESTAMP_KEY,
};
pub use consumer::{
    ConsumerLogin, ConsumerLoginError, MAX_CONSUMER_CLIENT_ID, consumer_password_digest,
};
pub use identity::{DeviceIdentity, DeviceSecret};
pub use psk::{PskIdentity, PskIdentityError, PskKey};
pub use registration::{
    AUTH_TYPE_KEY, AuthType, RANDOM_KEY, RegistrationKind, RegistrationRefused,
    RegistrationRequest, registration_sign,
};
pub use registry::{DeviceRecord, DeviceRegistry, MemoryRegistry, RegistryError};
pub use sign::{ConnectCredentials, SignRequest, content, sign, sign_content};
pub use subdevice::{SubDeviceProof, SubDeviceProofError, subdevice_sign};
pub use verify::{
    AuthError, ConnectFields, RefusalCode, SECONDS_TIMESTAMP_BELOW, Verified, VerifyOptions, verify,
};
