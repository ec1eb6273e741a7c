//! Topics of the platform profile.
//!
//! `aliot-topic` holds the rules about topics that both ends of the wire share: validated MQTT
//! topic names and filters, the platform's topic categories and the per-device ACL built from
//! them, a subscription index for routing, and the RRPC topic forms. It is `no_std` + `alloc`
//! and sits below `aliot-auth` and `aliot-core`.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

mod category;
mod name;

pub use category::{
    CategoryError, CategoryKind, DEVICE_NAME_PLACEHOLDER, PRODUCT_KEY_PLACEHOLDER,
    ParsePermissionError, Permission, ProductCategories, TopicCategory,
};
pub use name::{DEFAULT_MAX_TOPIC_LEN, TopicError, TopicFilter, TopicLimits, TopicName};
