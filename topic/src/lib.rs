//! Topics of the platform profile.
//!
//! `aliot-topic` holds the rules about topics that both ends of the wire share: validated MQTT
//! topic names and filters, the platform's topic categories and the per-device ACL built from
//! them, a subscription index for routing, and the RRPC topic forms. It is `no_std` + `alloc`
//! and sits below `aliot-auth` and `aliot-core`.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

mod acl;
mod category;
mod index;
mod name;
mod rrpc;

pub use acl::{Acl, IdentityError, check_identity};

pub use category::{
    CategoryError, CategoryKind, DEVICE_NAME_PLACEHOLDER, PRODUCT_KEY_PLACEHOLDER,
    ParsePermissionError, Permission, ProductCategories, TopicCategory,
};
pub use index::SubscriptionIndex;
pub use name::{DEFAULT_MAX_TOPIC_LEN, TopicError, TopicFilter, TopicLimits, TopicName};
pub use rrpc::{
    MessageId, ParseMessageIdError, RrpcTopic, rrpc_custom_filter, rrpc_custom_topic,
    rrpc_request_filter, rrpc_request_topic, rrpc_response_topic,
};
