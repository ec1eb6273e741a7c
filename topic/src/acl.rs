//! The access decisions for one connected device.

use alloc::borrow::ToOwned;
use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use crate::category::{ProductCategories, RESERVED_FIRST_LEVELS};
use crate::name::{TopicFilter, TopicName, filter_matches_with_prefix, literal_prefix_len};

/// Why a device identity cannot be given any topic.
///
/// The identity fills whole levels of the category templates, so a character that MQTT gives
/// a meaning in topics would change what the filled category reaches: `/` would add levels
/// (product key `a`, device name `b/c` would land in another device's tree), `+` and `#`
/// would turn the device's categories into wildcards over other devices. Such an identity is
/// refused rather than escaped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The product key is empty.
    #[error("the product key is empty")]
    EmptyProductKey,
    /// The device name is empty.
    #[error("the device name is empty")]
    EmptyDeviceName,
    /// The product key has `/`, `+`, `#` or U+0000.
    #[error("the product key contains {character:?}, which would change the shape of its topics")]
    ProductKeyForbiddenCharacter {
        /// The first forbidden character found.
        character: char,
    },
    /// The device name has `/`, `+`, `#` or U+0000.
    #[error("the device name contains {character:?}, which would change the shape of its topics")]
    DeviceNameForbiddenCharacter {
        /// The first forbidden character found.
        character: char,
    },
    /// The product key is one of the platform's first levels (`sys`, `broadcast`, `ext`,
    /// `shadow`): its `/${productKey}/...` topics would land in the platform's namespaces,
    /// for instance a custom category of product `sys` in another product's `/sys/` topics.
    #[error("the product key {product_key:?} is a reserved first level of the platform's topics")]
    ReservedProductKey {
        /// The refused product key.
        product_key: String,
    },
}

/// The first character of `text` that MQTT gives a meaning in topics, if any.
fn forbidden_character(text: &str) -> Option<char> {
    text.chars().find(|c| matches!(c, '/' | '+' | '#' | '\0'))
}

/// Checks that an identity can fill category templates without changing their shape.
///
/// ```
/// use aliot_topic::{check_identity, IdentityError};
/// assert_eq!(check_identity("a1PK", "dev-1.x@y:z"), Ok(()));
/// assert_eq!(
///     check_identity("a1PK", "dev/1"),
///     Err(IdentityError::DeviceNameForbiddenCharacter { character: '/' })
/// );
/// ```
pub fn check_identity(product_key: &str, device_name: &str) -> Result<(), IdentityError> {
    if product_key.is_empty() {
        return Err(IdentityError::EmptyProductKey);
    }
    if device_name.is_empty() {
        return Err(IdentityError::EmptyDeviceName);
    }
    if let Some(character) = forbidden_character(product_key) {
        return Err(IdentityError::ProductKeyForbiddenCharacter { character });
    }
    if let Some(character) = forbidden_character(device_name) {
        return Err(IdentityError::DeviceNameForbiddenCharacter { character });
    }
    if RESERVED_FIRST_LEVELS.contains(&product_key) {
        return Err(IdentityError::ReservedProductKey {
            product_key: product_key.to_owned(),
        });
    }
    Ok(())
}

/// Whether every topic name that `filter` matches is also matched by `category`, both given
/// as bytes of valid topic filters.
///
/// Level by level, the filter must be at least as narrow as the category: a literal is covered
/// by the same literal or `+`; `+` only by `+`; a `#` in the category covers everything from
/// its level on (the parent level too); a `#` in the filter needs a `#` in the category at the
/// same level. A name starting with `$` is never matched by a category starting with a
/// wildcard, so such a category does not cover a filter whose first level starts with `$`.
#[cfg(test)]
pub(crate) fn filter_covers(category: &[u8], filter: &[u8]) -> bool {
    CategoryFilter::new(category.into()).covers(filter)
}

/// One filled category, with the length of its literal prefix (see [`literal_prefix_len`]) so
/// that most checks end after one comparison of that prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
struct CategoryFilter {
    bytes: Box<[u8]>,
    literal_prefix: usize,
}

impl CategoryFilter {
    fn new(bytes: Box<[u8]>) -> Self {
        Self {
            literal_prefix: literal_prefix_len(&bytes),
            bytes,
        }
    }

    fn matches(&self, name: &[u8]) -> bool {
        filter_matches_with_prefix(&self.bytes, self.literal_prefix, name)
    }

    /// See [`filter_covers`].
    fn covers(&self, filter: &[u8]) -> bool {
        let Some((prefix, wildcard_part)) = self.bytes.split_at_checked(self.literal_prefix) else {
            return false;
        };
        if wildcard_part.is_empty() {
            // A category without wildcards matches one name: only that name covers it.
            return *self.bytes == *filter;
        }
        if prefix.is_empty() && filter.first() == Some(&b'$') {
            return false;
        }
        if !filter.starts_with(prefix) {
            // `a/#` also covers its parent `a`.
            return wildcard_part == b"#"
                && prefix
                    .split_last()
                    .is_some_and(|(_, parent)| parent == filter);
        }
        let rest = filter.get(prefix.len()..).unwrap_or_default();
        let mut category_levels = wildcard_part.split(|&b| b == b'/');
        let mut filter_levels = rest.split(|&b| b == b'/');
        loop {
            match (category_levels.next(), filter_levels.next()) {
                (Some(b"#"), _) | (None, None) => return true,
                (Some(_), Some(b"#")) | (Some(_), None) | (None, Some(_)) => return false,
                (Some(b"+"), Some(_)) => {}
                (Some(category_level), Some(filter_level)) => {
                    if category_level != filter_level {
                        return false;
                    }
                }
            }
        }
    }
}

/// The filled categories of one device, split by what they allow.
#[derive(Clone, Debug, PartialEq, Eq)]
struct DeviceRules {
    /// The categories that allow publishing.
    publish: Vec<CategoryFilter>,
    /// The categories that allow subscribing.
    subscribe: Vec<CategoryFilter>,
}

/// Shared: the connection and the broker's session of one device hold the same rules, and a
/// clone is a reference count, not a copy of every filled category.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Rules {
    Open,
    Device(Arc<DeviceRules>),
}

/// What one connected device may do.
///
/// Built once per connection from the device's identity and its product's categories; the
/// checks allocate nothing. A PUBLISH is allowed when its topic matches a category that allows
/// publishing. A SUBSCRIBE filter is allowed only when every topic it can match is matched by
/// one single category that allows subscribing (SPEC §3): so `/sys/pk/dn/thing/#` is allowed,
/// `/sys/pk/#` and `/pk/+/get` are not.
///
/// Custom-topic RRPC follows from the same rule: its categories are
/// `/ext/rrpc/+/<own topic category>` (see [`crate::CategoryKind::CustomTopicRrpc`]), so
/// `/ext/rrpc/+/pk/dn/user/#` is allowed exactly when `/pk/dn/user/#` would be, which needs a
/// sub category `/${productKey}/${deviceName}/user/#`.
///
/// Topics starting with `$` are outside every device category (they all start with `/`).
///
/// ```
/// use aliot_topic::{Acl, ProductCategories, TopicFilter, TopicName};
/// let acl = Acl::for_device("pk", "dn", &ProductCategories::defaults());
/// assert!(acl.may_publish(&TopicName::from_static("/sys/pk/dn/thing/event/property/post")));
/// assert!(!acl.may_publish(&TopicName::from_static("/sys/pk/other/thing/event/property/post")));
/// assert!(acl.may_subscribe(&TopicFilter::from_static("/sys/pk/dn/rrpc/request/+")));
/// assert!(!acl.may_subscribe(&TopicFilter::from_static("/sys/pk/#")));
/// assert!(!acl.may_subscribe(&TopicFilter::from_static("/pk/+/get")));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acl {
    rules: Rules,
}

impl Acl {
    /// The ACL of the device `product_key`/`device_name` under its product's categories.
    ///
    /// An identity refused by [`check_identity`] gets an ACL that allows nothing; use
    /// [`Acl::try_for_device`] to learn why.
    pub fn for_device(
        product_key: &str,
        device_name: &str,
        categories: &ProductCategories,
    ) -> Self {
        Self::try_for_device(product_key, device_name, categories)
            .unwrap_or_else(|_| Self::deny_all())
    }

    /// The ACL of a device, or why its identity cannot be given any topic.
    pub fn try_for_device(
        product_key: &str,
        device_name: &str,
        categories: &ProductCategories,
    ) -> Result<Self, IdentityError> {
        check_identity(product_key, device_name)?;
        let mut rules = DeviceRules {
            publish: Vec::new(),
            subscribe: Vec::new(),
        };
        for category in categories {
            let filled = CategoryFilter::new(
                category
                    .fill(product_key, device_name)
                    .into_bytes()
                    .into_boxed_slice(),
            );
            let permission = category.permission();
            if permission.allows_publish() {
                rules.publish.push(filled.clone());
            }
            if permission.allows_subscribe() {
                rules.subscribe.push(filled);
            }
        }
        Ok(Self {
            rules: Rules::Device(Arc::new(rules)),
        })
    }

    /// Open mode: every topic allowed (SPEC §1, for development and generic MQTT tools).
    pub fn open() -> Self {
        Self { rules: Rules::Open }
    }

    /// An ACL that allows nothing.
    pub fn deny_all() -> Self {
        Self {
            rules: Rules::Device(Arc::new(DeviceRules {
                publish: Vec::new(),
                subscribe: Vec::new(),
            })),
        }
    }

    /// Whether this is open mode.
    pub fn is_open(&self) -> bool {
        matches!(self.rules, Rules::Open)
    }

    /// Whether the device may publish on `topic`.
    pub fn may_publish(&self, topic: &TopicName) -> bool {
        match &self.rules {
            Rules::Open => true,
            Rules::Device(rules) => rules
                .publish
                .iter()
                .any(|category| category.matches(topic.as_bytes())),
        }
    }

    /// Whether the device may subscribe to `filter`: every topic it can match must be matched
    /// by one category that allows subscribing.
    pub fn may_subscribe(&self, filter: &TopicFilter) -> bool {
        match &self.rules {
            Rules::Open => true,
            Rules::Device(rules) => rules
                .subscribe
                .iter()
                .any(|category| category.covers(filter.as_bytes())),
        }
    }

    /// The filled filters of the categories that allow publishing (empty in open mode).
    pub fn publish_filters(&self) -> impl Iterator<Item = &str> {
        self.device_filters(|rules| &rules.publish)
    }

    /// The filled filters of the categories that allow subscribing (empty in open mode).
    pub fn subscribe_filters(&self) -> impl Iterator<Item = &str> {
        self.device_filters(|rules| &rules.subscribe)
    }

    fn device_filters<'a>(
        &'a self,
        pick: impl FnOnce(&'a DeviceRules) -> &'a Vec<CategoryFilter>,
    ) -> impl Iterator<Item = &'a str> {
        let filters: &[CategoryFilter] = match &self.rules {
            Rules::Open => &[],
            Rules::Device(rules) => pick(rules),
        };
        // The filters were filled from `&str` templates and identities, so they are UTF-8.
        filters
            .iter()
            .filter_map(|filter| core::str::from_utf8(&filter.bytes).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_cases() {
        let cases: &[(&str, &str, bool)] = &[
            ("/sys/pk/dn/thing/#", "/sys/pk/dn/thing/#", true),
            ("/sys/pk/dn/thing/#", "/sys/pk/dn/thing", true),
            ("/sys/pk/dn/thing/#", "/sys/pk/dn/thing/+/x", true),
            ("/sys/pk/dn/thing/#", "/sys/pk/dn/#", false),
            ("/sys/pk/dn/thing/#", "/sys/pk/+/thing/#", false),
            ("/sys/pk/dn/rrpc/#", "/sys/pk/dn/rrpc/request/+", true),
            ("/pk/dn/get", "/pk/+/get", false),
            ("/pk/dn/get", "/pk/dn/get", true),
            ("/pk/dn/get", "/pk/dn/get/#", false),
            ("/pk/dn/user/+", "/pk/dn/user/x", true),
            ("/pk/dn/user/+", "/pk/dn/user/+", true),
            ("/pk/dn/user/+", "/pk/dn/user/#", false),
            ("/pk/dn/user/+", "/pk/dn/user", false),
            ("/pk/dn/user/+", "/pk/dn/user/x/y", false),
            ("+/#", "+", true),
            ("#", "$SYS/x", false),
            ("#", "#", true),
            ("+", "$x", false),
            ("$x/#", "$x", true),
        ];
        for &(category, filter, expected) in cases {
            assert_eq!(
                filter_covers(category.as_bytes(), filter.as_bytes()),
                expected,
                "{category} covers {filter}"
            );
        }
    }
}
