//! Topic categories: the templates a product grants its devices, with their permissions.

use alloc::borrow::ToOwned;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::str::FromStr;

use crate::acl::CompiledCategories;

/// The placeholder a template level uses for the device's product key.
pub const PRODUCT_KEY_PLACEHOLDER: &str = "${productKey}";
/// The placeholder a template level uses for the device's name.
pub const DEVICE_NAME_PLACEHOLDER: &str = "${deviceName}";

/// What every custom template starts with: the device's own part of the topic tree.
const DEVICE_PREFIX: &str = "/${productKey}/${deviceName}/";

/// First levels reserved for the platform's own topics; a custom template may not live there.
pub(crate) const RESERVED_FIRST_LEVELS: [&str; 5] = ["sys", "broadcast", "ext", "shadow", "ota"];

/// What a category lets a device do with the topics it covers.
///
/// ```
/// use aliot_topic::Permission;
/// let permission: Permission = "pub&sub".parse()?;
/// assert_eq!(permission, Permission::PubSub);
/// assert!(permission.allows_publish() && permission.allows_subscribe());
/// assert_eq!(Permission::Sub.to_string(), "sub");
/// # Ok::<(), aliot_topic::ParsePermissionError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Permission {
    /// The device may publish (`pub`).
    Pub,
    /// The device may subscribe (`sub`).
    Sub,
    /// The device may publish and subscribe (`pub&sub`).
    PubSub,
}

impl Permission {
    /// Whether the device may publish on the category's topics.
    pub const fn allows_publish(self) -> bool {
        matches!(self, Self::Pub | Self::PubSub)
    }

    /// Whether the device may subscribe to the category's topics.
    pub const fn allows_subscribe(self) -> bool {
        matches!(self, Self::Sub | Self::PubSub)
    }

    /// The platform's spelling: `pub`, `sub` or `pub&sub`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pub => "pub",
            Self::Sub => "sub",
            Self::PubSub => "pub&sub",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A permission string that is none of `pub`, `sub`, `pub&sub`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown topic permission {found:?}; expected \"pub\", \"sub\" or \"pub&sub\"")]
pub struct ParsePermissionError {
    /// The text that was not a permission.
    pub found: String,
}

impl FromStr for Permission {
    type Err = ParsePermissionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pub" => Ok(Self::Pub),
            "sub" => Ok(Self::Sub),
            "pub&sub" => Ok(Self::PubSub),
            other => Err(ParsePermissionError {
                found: other.to_owned(),
            }),
        }
    }
}

/// Where a category comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CategoryKind {
    /// One of the defaults every product has (SPEC §3 table).
    Default,
    /// A system category the platform's SDKs use (shadow, session, NTP).
    System,
    /// A category the product added.
    Custom,
    /// Custom-topic RRPC for one of the device's own topics: `/ext/rrpc/+` followed by the
    /// template of a category under `/${productKey}/${deviceName}/` that allows subscribing.
    /// Derived automatically; its permission is `pub&sub` since the request comes in and the
    /// response goes out on the same topic.
    CustomTopicRrpc,
}

/// Why a custom category template was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CategoryError {
    /// The template is under one of the platform's own namespaces, which cannot be customised.
    #[error(
        "the template is under /{namespace}/, which belongs to the platform and cannot be customised"
    )]
    ReservedNamespace {
        /// The reserved first level (`sys`, `broadcast`, `ext` or `shadow`).
        namespace: &'static str,
    },
    /// The template does not start with the device's own prefix.
    #[error("a custom template must start with `/${{productKey}}/${{deviceName}}/`")]
    MissingDevicePrefix,
    /// A level after the prefix is empty (`//` or a trailing `/`).
    #[error("a custom template must not have an empty level")]
    EmptyLevel,
    /// A level after the prefix has a character other than ASCII letters, digits and `_`.
    #[error("the level {level:?} of a custom template may only have ASCII letters, digits and `_`")]
    InvalidCharacter {
        /// The offending level.
        level: String,
    },
    /// A wildcard shares its level with other characters, or `#` is not the last level.
    #[error(
        "misplaced wildcard: `+` and `#` must each fill a whole level, and `#` must be the last level"
    )]
    MisplacedWildcard,
    /// A wildcard in a category that allows publishing.
    #[error(
        "wildcards are only allowed in categories with the permission `sub`, not `{permission}`"
    )]
    WildcardNotSubOnly {
        /// The permission the category asked for.
        permission: Permission,
    },
    /// The product already has a category with this template.
    #[error("the product already has a category with the template {template:?}")]
    Duplicate {
        /// The repeated template.
        template: String,
    },
}

/// One topic category: a template with `${productKey}`/`${deviceName}` placeholders (each a
/// whole level) and a permission.
///
/// ```
/// use aliot_topic::{CategoryError, Permission, TopicCategory};
/// let category = TopicCategory::custom("/${productKey}/${deviceName}/user/get", Permission::Sub)?;
/// assert_eq!(category.fill("a1PK", "dev1"), "/a1PK/dev1/user/get");
/// assert_eq!(
///     TopicCategory::custom("/sys/${productKey}/${deviceName}/x", Permission::Pub),
///     Err(CategoryError::ReservedNamespace { namespace: "sys" }),
/// );
/// # Ok::<(), CategoryError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TopicCategory {
    template: String,
    permission: Permission,
    kind: CategoryKind,
}

impl TopicCategory {
    /// A category from a trusted template (the defaults and system categories).
    pub(crate) fn new(template: &str, permission: Permission, kind: CategoryKind) -> Self {
        Self {
            template: template.to_owned(),
            permission,
            kind,
        }
    }

    /// Validates a product's custom category.
    ///
    /// The template must start with `/${productKey}/${deviceName}/`; each further level is
    /// ASCII letters, digits and `_`, or, only when the permission is [`Permission::Sub`], a
    /// whole-level wildcard (`+`, or `#` as the last level).
    pub fn custom(template: &str, permission: Permission) -> Result<Self, CategoryError> {
        check_custom_template(template, permission)?;
        Ok(Self::new(template, permission, CategoryKind::Custom))
    }

    /// The template, with its placeholders.
    pub fn template(&self) -> &str {
        &self.template
    }

    /// What the category allows.
    pub fn permission(&self) -> Permission {
        self.permission
    }

    /// Where the category comes from.
    pub fn kind(&self) -> CategoryKind {
        self.kind
    }

    /// The template with its placeholder levels replaced by this identity.
    ///
    /// This does not check the identity: an identity containing `/`, `+` or `#` would change
    /// the shape of the result. [`crate::Acl::for_device`] checks the identity before filling.
    pub fn fill(&self, product_key: &str, device_name: &str) -> String {
        let mut filled = String::with_capacity(self.template.len() + 16);
        for (index, level) in self.template.split('/').enumerate() {
            if index > 0 {
                filled.push('/');
            }
            filled.push_str(match level {
                PRODUCT_KEY_PLACEHOLDER => product_key,
                DEVICE_NAME_PLACEHOLDER => device_name,
                literal => literal,
            });
        }
        filled
    }

    /// The custom-topic RRPC category of this one, when it is one of the device's own topics
    /// (under `/${productKey}/${deviceName}/`) that the device may subscribe to.
    fn custom_topic_rrpc(&self) -> Option<Self> {
        let own_topic = self.template.starts_with(DEVICE_PREFIX);
        (own_topic && self.permission.allows_subscribe()).then(|| {
            let mut template = String::from("/ext/rrpc/+");
            template.push_str(&self.template);
            Self::new(&template, Permission::PubSub, CategoryKind::CustomTopicRrpc)
        })
    }
}

/// The rules of a custom template (see [`TopicCategory::custom`]).
fn check_custom_template(template: &str, permission: Permission) -> Result<(), CategoryError> {
    let first_level = template
        .strip_prefix('/')
        .and_then(|rest| rest.split('/').next());
    if let Some(namespace) = RESERVED_FIRST_LEVELS
        .iter()
        .find(|reserved| Some(**reserved) == first_level)
    {
        return Err(CategoryError::ReservedNamespace { namespace });
    }
    let Some(rest) = template.strip_prefix(DEVICE_PREFIX) else {
        return Err(CategoryError::MissingDevicePrefix);
    };
    let mut levels = rest.split('/').peekable();
    while let Some(level) = levels.next() {
        let is_last = levels.peek().is_none();
        match level {
            "" => return Err(CategoryError::EmptyLevel),
            "+" | "#" if permission != Permission::Sub => {
                return Err(CategoryError::WildcardNotSubOnly { permission });
            }
            "+" => {}
            "#" if is_last => {}
            "#" => return Err(CategoryError::MisplacedWildcard),
            _ if level.contains(['+', '#']) => return Err(CategoryError::MisplacedWildcard),
            _ if !level
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
            {
                return Err(CategoryError::InvalidCharacter {
                    level: level.to_owned(),
                });
            }
            _ => {}
        }
    }
    Ok(())
}

/// The default categories of SPEC §3.
const DEFAULT_CATEGORIES: [(&str, Permission); 6] = [
    ("/${productKey}/${deviceName}/update", Permission::Pub),
    ("/${productKey}/${deviceName}/update/error", Permission::Pub),
    ("/${productKey}/${deviceName}/get", Permission::Sub),
    (
        "/sys/${productKey}/${deviceName}/thing/#",
        Permission::PubSub,
    ),
    (
        "/sys/${productKey}/${deviceName}/rrpc/#",
        Permission::PubSub,
    ),
    ("/broadcast/${productKey}/#", Permission::PubSub),
];

/// The system categories the platform's SDKs use (SPEC §3, PLATFORM-PROTOCOLS §0.5): shadow,
/// gateway sessions, NTP, OTA, the platform's error notices, and synchronous service calls in
/// the `ext` form (`/ext/rrpc/{id}/sys/…/thing/service/{identifier}`, PLATFORM-PROTOCOLS §1.5).
const SYSTEM_CATEGORIES: [(&str, Permission); 10] = [
    (
        "/shadow/update/${productKey}/${deviceName}",
        Permission::Pub,
    ),
    ("/shadow/get/${productKey}/${deviceName}", Permission::Sub),
    (
        "/ext/session/${productKey}/${deviceName}/#",
        Permission::PubSub,
    ),
    ("/ext/ntp/${productKey}/${deviceName}/#", Permission::PubSub),
    (
        "/ota/device/inform/${productKey}/${deviceName}",
        Permission::Pub,
    ),
    (
        "/ota/device/progress/${productKey}/${deviceName}",
        Permission::Pub,
    ),
    (
        "/ota/device/upgrade/${productKey}/${deviceName}",
        Permission::Sub,
    ),
    (
        "/ota/device/request/${productKey}/${deviceName}",
        Permission::PubSub,
    ),
    ("/ext/error/${productKey}/${deviceName}", Permission::Sub),
    (
        "/ext/rrpc/+/sys/${productKey}/${deviceName}/thing/#",
        Permission::PubSub,
    ),
];

/// The categories of one product: the defaults and system categories every product has, the
/// custom ones it added, and for each of the device's own topics that it may subscribe to, the
/// matching custom-topic RRPC category (see [`CategoryKind::CustomTopicRrpc`]).
///
/// ```
/// use aliot_topic::{CategoryKind, Permission, ProductCategories};
/// let mut categories = ProductCategories::defaults();
/// categories.add_custom("/${productKey}/${deviceName}/user/get", Permission::Sub)?;
/// let rrpc: Vec<&str> = categories
///     .iter()
///     .filter(|category| category.kind() == CategoryKind::CustomTopicRrpc)
///     .map(|category| category.template())
///     .collect();
/// assert_eq!(
///     rrpc,
///     [
///         "/ext/rrpc/+/${productKey}/${deviceName}/get",
///         "/ext/rrpc/+/${productKey}/${deviceName}/user/get",
///     ]
/// );
/// # Ok::<(), aliot_topic::CategoryError>(())
/// ```
///
/// The templates are compiled for the ACL checks when the categories change, once per product:
/// the [`crate::Acl`] of each of its devices shares them.
#[derive(Clone, PartialEq, Eq)]
pub struct ProductCategories {
    categories: Vec<TopicCategory>,
    /// `categories` compiled for the ACL; compiled anew whenever a category is added.
    compiled: Arc<CompiledCategories>,
}

impl ProductCategories {
    /// The defaults and the system categories, with their custom-topic RRPC categories.
    pub fn defaults() -> Self {
        let mut categories =
            Vec::with_capacity(DEFAULT_CATEGORIES.len() + SYSTEM_CATEGORIES.len() + 1);
        let defaults = DEFAULT_CATEGORIES
            .iter()
            .map(|&(template, permission)| (template, permission, CategoryKind::Default));
        let system = SYSTEM_CATEGORIES
            .iter()
            .map(|&(template, permission)| (template, permission, CategoryKind::System));
        for (template, permission, kind) in defaults.chain(system) {
            push_with_rrpc(
                &mut categories,
                TopicCategory::new(template, permission, kind),
            );
        }
        Self {
            compiled: Arc::new(CompiledCategories::compile(&categories)),
            categories,
        }
    }

    /// Adds a custom category (see [`TopicCategory::custom`] for the rules); refuses a template
    /// the product already has.
    pub fn add_custom(
        &mut self,
        template: &str,
        permission: Permission,
    ) -> Result<(), CategoryError> {
        let category = TopicCategory::custom(template, permission)?;
        if self
            .categories
            .iter()
            .any(|existing| existing.template == template)
        {
            return Err(CategoryError::Duplicate {
                template: template.to_owned(),
            });
        }
        push_with_rrpc(&mut self.categories, category);
        // ACLs built before keep the templates they were built with.
        self.compiled = Arc::new(CompiledCategories::compile(&self.categories));
        Ok(())
    }

    /// Every category: defaults, system, custom and custom-topic RRPC, in the order they were
    /// added.
    pub fn iter(&self) -> impl Iterator<Item = &TopicCategory> {
        self.categories.iter()
    }

    /// How many categories there are, derived ones included.
    pub fn len(&self) -> usize {
        self.categories.len()
    }

    /// Always `false`: a product has at least the defaults.
    pub fn is_empty(&self) -> bool {
        self.categories.is_empty()
    }

    /// The compiled templates every device's [`crate::Acl`] of this product shares.
    pub(crate) fn compiled(&self) -> &Arc<CompiledCategories> {
        &self.compiled
    }
}

/// Adds a category and, when it has one, its custom-topic RRPC category.
fn push_with_rrpc(categories: &mut Vec<TopicCategory>, category: TopicCategory) {
    let rrpc = category.custom_topic_rrpc();
    categories.push(category);
    categories.extend(rrpc);
}

impl fmt::Debug for ProductCategories {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The compiled form repeats the categories; leave it out.
        f.debug_struct("ProductCategories")
            .field("categories", &self.categories)
            .finish_non_exhaustive()
    }
}

impl Default for ProductCategories {
    fn default() -> Self {
        Self::defaults()
    }
}

impl<'a> IntoIterator for &'a ProductCategories {
    type Item = &'a TopicCategory;
    type IntoIter = core::slice::Iter<'a, TopicCategory>;

    fn into_iter(self) -> Self::IntoIter {
        self.categories.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_round_trips() {
        for permission in [Permission::Pub, Permission::Sub, Permission::PubSub] {
            assert_eq!(permission.as_str().parse::<Permission>(), Ok(permission));
        }
        assert_eq!(
            "sub&pub".parse::<Permission>(),
            Err(ParsePermissionError {
                found: "sub&pub".into()
            })
        );
    }

    #[test]
    fn fill_replaces_whole_placeholder_levels() {
        let category = TopicCategory::new(
            "/sys/${productKey}/${deviceName}/thing/#",
            Permission::PubSub,
            CategoryKind::Default,
        );
        assert_eq!(category.fill("pk", "dn"), "/sys/pk/dn/thing/#");
    }
}
