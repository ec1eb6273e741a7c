//! The product's topic categories: defaults, system categories, custom ones.

use aliot_topic::{CategoryError, CategoryKind, Permission, ProductCategories, TopicCategory};

fn templates_of(categories: &ProductCategories, kind: CategoryKind) -> Vec<(&str, Permission)> {
    categories
        .iter()
        .filter(|category| category.kind() == kind)
        .map(|category| (category.template(), category.permission()))
        .collect()
}

#[test]
fn defaults_are_the_spec_table() {
    let categories = ProductCategories::defaults();
    assert_eq!(
        templates_of(&categories, CategoryKind::Default),
        [
            ("/${productKey}/${deviceName}/update", Permission::Pub),
            ("/${productKey}/${deviceName}/update/error", Permission::Pub),
            ("/${productKey}/${deviceName}/get", Permission::Sub),
            (
                "/sys/${productKey}/${deviceName}/thing/#",
                Permission::PubSub
            ),
            (
                "/sys/${productKey}/${deviceName}/rrpc/#",
                Permission::PubSub
            ),
            ("/broadcast/${productKey}/#", Permission::PubSub),
        ]
    );
    assert_eq!(
        templates_of(&categories, CategoryKind::System),
        [
            (
                "/shadow/update/${productKey}/${deviceName}",
                Permission::Pub
            ),
            ("/shadow/get/${productKey}/${deviceName}", Permission::Sub),
            (
                "/ext/session/${productKey}/${deviceName}/#",
                Permission::PubSub
            ),
            ("/ext/ntp/${productKey}/${deviceName}/#", Permission::PubSub),
            (
                "/ota/device/inform/${productKey}/${deviceName}",
                Permission::Pub
            ),
            (
                "/ota/device/progress/${productKey}/${deviceName}",
                Permission::Pub
            ),
            (
                "/ota/device/upgrade/${productKey}/${deviceName}",
                Permission::Sub
            ),
            (
                "/ota/device/request/${productKey}/${deviceName}",
                Permission::PubSub
            ),
            ("/ext/error/${productKey}/${deviceName}", Permission::Sub),
            (
                "/ext/rrpc/+/sys/${productKey}/${deviceName}/thing/#",
                Permission::PubSub
            ),
        ]
    );
    // Of the device's own topics, only `get` can be subscribed to, so only it gets RRPC.
    assert_eq!(
        templates_of(&categories, CategoryKind::CustomTopicRrpc),
        [(
            "/ext/rrpc/+/${productKey}/${deviceName}/get",
            Permission::PubSub
        )]
    );
    assert_eq!(categories.len(), 17);
    assert!(!categories.is_empty());
    assert_eq!(ProductCategories::default(), categories);
}

#[test]
fn custom_categories_are_added_with_their_rrpc_form() {
    let mut categories = ProductCategories::defaults();
    categories
        .add_custom("/${productKey}/${deviceName}/user/get", Permission::Sub)
        .unwrap_or_else(|e| panic!("{e}"));
    categories
        .add_custom("/${productKey}/${deviceName}/user/update", Permission::Pub)
        .unwrap_or_else(|e| panic!("{e}"));
    categories
        .add_custom("/${productKey}/${deviceName}/user/cmd/+", Permission::Sub)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        templates_of(&categories, CategoryKind::Custom),
        [
            ("/${productKey}/${deviceName}/user/get", Permission::Sub),
            ("/${productKey}/${deviceName}/user/update", Permission::Pub),
            ("/${productKey}/${deviceName}/user/cmd/+", Permission::Sub),
        ]
    );
    assert_eq!(
        templates_of(&categories, CategoryKind::CustomTopicRrpc),
        [
            (
                "/ext/rrpc/+/${productKey}/${deviceName}/get",
                Permission::PubSub
            ),
            (
                "/ext/rrpc/+/${productKey}/${deviceName}/user/get",
                Permission::PubSub
            ),
            (
                "/ext/rrpc/+/${productKey}/${deviceName}/user/cmd/+",
                Permission::PubSub
            ),
        ]
    );
}

#[test]
fn custom_templates_are_checked() {
    let cases: &[(&str, Permission, CategoryError)] = &[
        (
            "/sys/${productKey}/${deviceName}/thing/x",
            Permission::Pub,
            CategoryError::ReservedNamespace { namespace: "sys" },
        ),
        (
            "/broadcast/${productKey}/x",
            Permission::Sub,
            CategoryError::ReservedNamespace {
                namespace: "broadcast",
            },
        ),
        (
            "/ext/rrpc/+/${productKey}/${deviceName}/x",
            Permission::Sub,
            CategoryError::ReservedNamespace { namespace: "ext" },
        ),
        (
            "/shadow/get/${productKey}/${deviceName}",
            Permission::Sub,
            CategoryError::ReservedNamespace {
                namespace: "shadow",
            },
        ),
        (
            "/${deviceName}/${productKey}/user",
            Permission::Pub,
            CategoryError::MissingDevicePrefix,
        ),
        (
            "${productKey}/${deviceName}/user",
            Permission::Pub,
            CategoryError::MissingDevicePrefix,
        ),
        (
            "/${productKey}/+/user",
            Permission::Sub,
            CategoryError::MissingDevicePrefix,
        ),
        (
            "/${productKey}/${deviceName}",
            Permission::Pub,
            CategoryError::MissingDevicePrefix,
        ),
        (
            "/${productKey}/${deviceName}/",
            Permission::Pub,
            CategoryError::EmptyLevel,
        ),
        (
            "/${productKey}/${deviceName}/user//get",
            Permission::Pub,
            CategoryError::EmptyLevel,
        ),
        (
            "/${productKey}/${deviceName}/user/get-it",
            Permission::Pub,
            CategoryError::InvalidCharacter {
                level: "get-it".into(),
            },
        ),
        (
            "/${productKey}/${deviceName}/${deviceName}",
            Permission::Pub,
            CategoryError::InvalidCharacter {
                level: "${deviceName}".into(),
            },
        ),
        (
            "/${productKey}/${deviceName}/user/+",
            Permission::PubSub,
            CategoryError::WildcardNotSubOnly {
                permission: Permission::PubSub,
            },
        ),
        (
            "/${productKey}/${deviceName}/user/#",
            Permission::Pub,
            CategoryError::WildcardNotSubOnly {
                permission: Permission::Pub,
            },
        ),
        (
            "/${productKey}/${deviceName}/#/x",
            Permission::Sub,
            CategoryError::MisplacedWildcard,
        ),
        (
            "/${productKey}/${deviceName}/user+",
            Permission::Sub,
            CategoryError::MisplacedWildcard,
        ),
    ];
    for (template, permission, expected) in cases {
        assert_eq!(
            TopicCategory::custom(template, *permission),
            Err(expected.clone()),
            "{template}"
        );
    }
}

#[test]
fn wildcards_are_fine_in_sub_only_categories() {
    for template in [
        "/${productKey}/${deviceName}/user/+",
        "/${productKey}/${deviceName}/user/#",
        "/${productKey}/${deviceName}/+/x/#",
        "/${productKey}/${deviceName}/#",
    ] {
        let category =
            TopicCategory::custom(template, Permission::Sub).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(category.template(), template);
        assert_eq!(category.kind(), CategoryKind::Custom);
    }
}

#[test]
fn duplicates_are_refused() {
    let mut categories = ProductCategories::defaults();
    assert_eq!(
        categories.add_custom("/${productKey}/${deviceName}/get", Permission::Sub),
        Err(CategoryError::Duplicate {
            template: "/${productKey}/${deviceName}/get".into()
        })
    );
    let template = "/${productKey}/${deviceName}/user/get";
    assert_eq!(categories.add_custom(template, Permission::Sub), Ok(()));
    assert_eq!(
        categories.add_custom(template, Permission::Pub),
        Err(CategoryError::Duplicate {
            template: template.into()
        })
    );
}

#[test]
fn errors_say_what_was_wrong() {
    let error = CategoryError::InvalidCharacter {
        level: "a-b".into(),
    };
    assert_eq!(
        error.to_string(),
        "the level \"a-b\" of a custom template may only have ASCII letters, digits and `_`"
    );
    assert_eq!(
        CategoryError::MissingDevicePrefix.to_string(),
        "a custom template must start with `/${productKey}/${deviceName}/`"
    );
}
