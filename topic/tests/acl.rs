//! The per-device ACL on the examples of SPEC §3 and §4.

use aliot_topic::{
    Acl, IdentityError, Permission, ProductCategories, TopicFilter, TopicLimits, TopicName,
};

fn name(s: &str) -> TopicName {
    TopicName::new(s, &TopicLimits::default()).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

fn filter(s: &str) -> TopicFilter {
    TopicFilter::new(s, &TopicLimits::default()).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

/// The defaults plus two custom categories, as a product of the platform's current docs has.
fn product() -> ProductCategories {
    let mut categories = ProductCategories::defaults();
    for (template, permission) in [
        ("/${productKey}/${deviceName}/user/get", Permission::Sub),
        ("/${productKey}/${deviceName}/user/update", Permission::Pub),
    ] {
        categories
            .add_custom(template, permission)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    categories
}

fn device_acl() -> Acl {
    Acl::for_device("a1PK", "dev1", &product())
}

#[test]
fn every_default_category_works_for_its_own_device() {
    let acl = device_acl();
    // pub
    for topic in [
        "/a1PK/dev1/update",
        "/a1PK/dev1/update/error",
        "/sys/a1PK/dev1/thing/event/property/post",
        "/sys/a1PK/dev1/thing",
        "/sys/a1PK/dev1/rrpc/response/1539421321846",
        "/broadcast/a1PK/anything/below",
        "/shadow/update/a1PK/dev1",
        "/ext/session/a1PK/dev1/combine/login",
        "/ext/ntp/a1PK/dev1/request",
        "/a1PK/dev1/user/update",
    ] {
        assert!(acl.may_publish(&name(topic)), "publish {topic}");
    }
    // sub
    for topic in [
        "/a1PK/dev1/get",
        "/sys/a1PK/dev1/thing/#",
        "/sys/a1PK/dev1/thing/service/property/set",
        "/sys/a1PK/dev1/rrpc/#",
        "/broadcast/a1PK/#",
        "/broadcast/a1PK/+",
        "/shadow/get/a1PK/dev1",
        "/ext/session/a1PK/dev1/#",
        "/ext/ntp/a1PK/dev1/response",
        "/a1PK/dev1/user/get",
    ] {
        assert!(acl.may_subscribe(&filter(topic)), "subscribe {topic}");
    }
}

#[test]
fn permissions_are_one_way_where_the_category_says_so() {
    let acl = device_acl();
    for topic in [
        "/a1PK/dev1/get",
        "/shadow/get/a1PK/dev1",
        "/a1PK/dev1/user/get",
    ] {
        assert!(
            !acl.may_publish(&name(topic)),
            "publish on sub-only {topic}"
        );
    }
    for topic in [
        "/a1PK/dev1/update",
        "/a1PK/dev1/update/error",
        "/shadow/update/a1PK/dev1",
        "/a1PK/dev1/user/update",
    ] {
        assert!(
            !acl.may_subscribe(&filter(topic)),
            "subscribe to pub-only {topic}"
        );
    }
}

/// What the platform's Node SDK subscribes to on every connect (SPEC §3), plus a service topic.
#[test]
fn the_node_sdk_subscriptions_are_all_allowed() {
    let acl = device_acl();
    let thing = [
        "event/property/post_reply",
        "event/+/post_reply",
        "deviceinfo/update_reply",
        "deviceinfo/delete_reply",
        "config/get_reply",
        "config/push",
        "config/push_reply",
        "topo/add_reply",
        "topo/delete_reply",
        "topo/get_reply",
        "sub/register_reply",
        "service/property/set",
    ];
    for suffix in thing {
        let topic = format!("/sys/a1PK/dev1/thing/{suffix}");
        assert!(acl.may_subscribe(&filter(&topic)), "{topic}");
    }
    for topic in [
        "/sys/a1PK/dev1/rrpc/request/+",
        "/shadow/get/a1PK/dev1",
        "/ext/session/a1PK/dev1/combine/login_reply",
        "/ext/session/a1PK/dev1/combine/logout_reply",
    ] {
        assert!(acl.may_subscribe(&filter(topic)), "{topic}");
    }
}

#[test]
fn filters_reaching_other_devices_or_categories_are_refused() {
    let acl = device_acl();
    for topic in [
        "/a1PK/+/get",
        "/sys/a1PK/#",
        "/sys/a1PK/+/thing/#",
        "/sys/+/dev1/thing/#",
        "/sys/a1PK/dev1/#",
        "/sys/a1PK/dev1/+/request/+",
        "/a1PK/dev1/#",
        "/a1PK/dev1/+",
        "/broadcast/#",
        "/broadcast/+/x",
        "/shadow/get/+/dev1",
        "/ext/rrpc/#",
        "/ext/rrpc/+/#",
        "#",
        "+/#",
        "/#",
        "/+/dev1/get",
        "/a1PK/dev2/get",
        "/b1PK/dev1/get",
        "/sys/a1PK/dev2/thing/event/property/post_reply",
        "$SYS/#",
    ] {
        assert!(!acl.may_subscribe(&filter(topic)), "subscribe {topic}");
    }
    for topic in [
        "/a1PK/dev2/update",
        "/b1PK/dev1/update",
        "/sys/a1PK/dev2/thing/event/property/post",
        "/broadcast/b1PK/x",
        "/a1PK/dev1/somewhere/else",
        "$SYS/x",
        "/ext/rrpc/5/a1PK/dev2/user/get",
    ] {
        assert!(!acl.may_publish(&name(topic)), "publish {topic}");
    }
}

#[test]
fn rrpc_topics() {
    let acl = device_acl();
    assert!(acl.may_subscribe(&filter("/sys/a1PK/dev1/rrpc/request/+")));
    assert!(acl.may_publish(&name("/sys/a1PK/dev1/rrpc/response/42")));
    // Custom-topic RRPC on the device's own subscribable topics: request in, response out.
    assert!(acl.may_subscribe(&filter("/ext/rrpc/+/a1PK/dev1/user/get")));
    assert!(acl.may_subscribe(&filter("/ext/rrpc/+/a1PK/dev1/get")));
    assert!(acl.may_subscribe(&filter("/ext/rrpc/7/a1PK/dev1/user/get")));
    assert!(acl.may_publish(&name("/ext/rrpc/7/a1PK/dev1/user/get")));
    // Not on a topic the device cannot subscribe to, nor on another device's.
    assert!(!acl.may_subscribe(&filter("/ext/rrpc/+/a1PK/dev1/user/update")));
    assert!(!acl.may_publish(&name("/ext/rrpc/7/a1PK/dev1/user/update")));
    assert!(!acl.may_subscribe(&filter("/ext/rrpc/+/a1PK/dev2/user/get")));
    // The inner filter follows the coverage rule: `/a1PK/dev1/user/#` is not covered by the
    // `user/get` category, so its RRPC form is not either.
    assert!(!acl.may_subscribe(&filter("/ext/rrpc/+/a1PK/dev1/user/#")));
}

#[test]
fn a_wildcard_custom_category_covers_its_rrpc_form() {
    let mut categories = ProductCategories::defaults();
    categories
        .add_custom("/${productKey}/${deviceName}/user/#", Permission::Sub)
        .unwrap_or_else(|e| panic!("{e}"));
    let acl = Acl::for_device("pk", "dn", &categories);
    assert!(acl.may_subscribe(&filter("/ext/rrpc/+/pk/dn/user/#")));
    assert!(acl.may_subscribe(&filter("/ext/rrpc/+/pk/dn/user/a/+")));
    assert!(acl.may_subscribe(&filter("/pk/dn/user/#")));
    assert!(!acl.may_subscribe(&filter("/ext/rrpc/+/pk/dn/#")));
    assert!(acl.may_publish(&name("/ext/rrpc/1/pk/dn/user/a/b")));
    assert!(!acl.may_publish(&name("/pk/dn/user/a/b")));
}

#[test]
fn open_mode_allows_everything() {
    let acl = Acl::open();
    assert!(acl.is_open());
    assert!(acl.may_publish(&name("$SYS/anything")));
    assert!(acl.may_subscribe(&filter("#")));
    assert_eq!(acl.publish_filters().count(), 0);
}

#[test]
fn identities_that_would_reshape_topics_get_nothing() {
    let categories = product();
    let cases: &[(&str, &str, IdentityError)] = &[
        ("", "dn", IdentityError::EmptyProductKey),
        ("pk", "", IdentityError::EmptyDeviceName),
        (
            "pk",
            "+",
            IdentityError::DeviceNameForbiddenCharacter { character: '+' },
        ),
        (
            "pk",
            "a#",
            IdentityError::DeviceNameForbiddenCharacter { character: '#' },
        ),
        (
            "pk",
            "dn/get",
            IdentityError::DeviceNameForbiddenCharacter { character: '/' },
        ),
        (
            "pk/x",
            "dn",
            IdentityError::ProductKeyForbiddenCharacter { character: '/' },
        ),
        (
            "+",
            "dn",
            IdentityError::ProductKeyForbiddenCharacter { character: '+' },
        ),
        (
            "pk",
            "a\0",
            IdentityError::DeviceNameForbiddenCharacter { character: '\0' },
        ),
        (
            "sys",
            "dn",
            IdentityError::ReservedProductKey {
                product_key: "sys".into(),
            },
        ),
        (
            "ext",
            "rrpc",
            IdentityError::ReservedProductKey {
                product_key: "ext".into(),
            },
        ),
    ];
    for (product_key, device_name, expected) in cases {
        assert_eq!(
            Acl::try_for_device(product_key, device_name, &categories),
            Err(expected.clone()),
            "{product_key:?} {device_name:?}"
        );
        let acl = Acl::for_device(product_key, device_name, &categories);
        assert_eq!(acl, Acl::deny_all());
        assert!(!acl.may_subscribe(&filter("#")));
        assert!(!acl.may_subscribe(&filter("/pk/+/get")));
        assert!(!acl.may_publish(&name("/pk/dn/update")));
    }
    // Without the check, device name `+` would have been granted `/pk/+/get`, and product key
    // `ext` with device name `rrpc` the custom-topic RRPC of every device.
}

#[test]
fn dollar_and_other_characters_are_plain_text_in_an_identity() {
    let acl = Acl::for_device("$pk", "dev-1.x@y:z", &ProductCategories::defaults());
    assert!(acl.may_publish(&name("/$pk/dev-1.x@y:z/update")));
    assert!(acl.may_subscribe(&filter("/sys/$pk/dev-1.x@y:z/thing/#")));
    assert!(!acl.may_subscribe(&filter("/sys/$pk/+/thing/#")));
}

#[test]
fn filled_filters_are_listed() {
    let acl = Acl::for_device("pk", "dn", &ProductCategories::defaults());
    let publish: Vec<String> = acl.publish_filters().collect();
    assert_eq!(
        publish,
        [
            "/pk/dn/update",
            "/pk/dn/update/error",
            "/ext/rrpc/+/pk/dn/get",
            "/sys/pk/dn/thing/#",
            "/sys/pk/dn/rrpc/#",
            "/broadcast/pk/#",
            "/shadow/update/pk/dn",
            "/ext/session/pk/dn/#",
            "/ext/ntp/pk/dn/#",
            "/ota/device/inform/pk/dn",
            "/ota/device/progress/pk/dn",
            "/ota/device/request/pk/dn",
            "/ext/rrpc/+/sys/pk/dn/thing/#",
        ]
    );
    let subscribe: Vec<String> = acl.subscribe_filters().collect();
    assert_eq!(
        subscribe,
        [
            "/pk/dn/get",
            "/ext/rrpc/+/pk/dn/get",
            "/sys/pk/dn/thing/#",
            "/sys/pk/dn/rrpc/#",
            "/broadcast/pk/#",
            "/shadow/get/pk/dn",
            "/ext/session/pk/dn/#",
            "/ext/ntp/pk/dn/#",
            "/ota/device/upgrade/pk/dn",
            "/ota/device/request/pk/dn",
            "/ext/error/pk/dn",
            "/ext/rrpc/+/sys/pk/dn/thing/#",
        ]
    );
}
