//! Topics of the platform profile.
//!
//! `aliot-topic` holds the rules about topics that both ends of the wire share: validated MQTT
//! topic names and filters, the platform's topic categories and the per-device ACL built from
//! them, a subscription index for routing, and the RRPC topic forms. It is `no_std` + `alloc`
//! and sits below `aliot-auth` and `aliot-core`.
//!
//! - [`TopicName`] and [`TopicFilter`]: validated (non-empty, UTF-8 without U+0000, at most
//!   [`TopicLimits::max_len`] bytes, MQTT wildcard placement), backed by [`bytes::Bytes`] so a
//!   topic decoded from a packet is not copied. [`TopicFilter::matches`] follows MQTT: `+` is a
//!   whole level, `#` the rest including nothing (`a/#` matches `a`), empty levels are levels,
//!   and a `$` topic is not matched by a filter starting with a wildcard.
//! - [`ProductCategories`]: the SPEC §3 defaults and system categories, the product's custom
//!   ones, and for each of the device's own topics it may subscribe to, its custom-topic RRPC
//!   form `/ext/rrpc/+/<topic>` ([`CategoryKind::CustomTopicRrpc`]).
//! - [`Acl`]: what one device may do. PUBLISH: the topic matches a category with `pub`.
//!   SUBSCRIBE: every topic the filter can match is matched by one category with `sub`. Device
//!   topics all start with `/`, so `$` topics are never a device's. An identity whose product
//!   key or device name has `/`, `+`, `#` or U+0000, or whose product key is a reserved first
//!   level (`sys`, `broadcast`, `ext`, `shadow`, `ota`), would reach other devices' topics once filled
//!   into the templates, so it is refused ([`check_identity`]) and its ACL allows nothing.
//! - [`SubscriptionIndex`]: filters to subscribers for routing; a lookup costs the trie nodes the
//!   topic reaches, allocates nothing and does not recurse.
//! - [`RrpcTopic`], [`MessageId`] and the `rrpc_*` builders: the SPEC §4 topic forms.
//! - [`is_device_topic`], [`is_product_topic`] and [`system_downlink_owner`]: whose a topic is,
//!   one rule for every crate.
//!
//! ```
//! use aliot_topic::{Acl, Permission, ProductCategories, TopicFilter, TopicLimits, TopicName};
//!
//! let mut categories = ProductCategories::defaults();
//! categories.add_custom("/${productKey}/${deviceName}/user/get", Permission::Sub)?;
//! let acl = Acl::for_device("a1PK", "dev1", &categories);
//!
//! let limits = TopicLimits::default();
//! let get = TopicFilter::new("/ext/rrpc/+/a1PK/dev1/user/get", &limits)?;
//! assert!(acl.may_subscribe(&get));
//! let elsewhere = TopicName::new("/a1PK/dev2/update", &limits)?;
//! assert!(!acl.may_publish(&elsewhere));
//! # Ok::<(), Box<dyn core::error::Error>>(())
//! ```
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

mod acl;
mod category;
mod index;
mod name;
mod owner;
mod rrpc;

pub use acl::{Acl, IdentityError, check_identity};

pub use category::{
    CategoryError, CategoryKind, DEVICE_NAME_PLACEHOLDER, PRODUCT_KEY_PLACEHOLDER,
    ParsePermissionError, Permission, ProductCategories, TopicCategory,
};
pub use index::SubscriptionIndex;
pub use name::{DEFAULT_MAX_TOPIC_LEN, TopicError, TopicFilter, TopicLimits, TopicName};
pub use owner::{is_device_topic, is_product_topic, system_downlink_owner};
pub use rrpc::{
    MessageId, ParseMessageIdError, RrpcTopic, rrpc_custom_filter, rrpc_custom_topic,
    rrpc_request_filter, rrpc_request_topic, rrpc_response_topic,
};
