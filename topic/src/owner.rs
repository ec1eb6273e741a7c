//! Whose a topic is: one device's own topics, and the topics of a product.
//!
//! One rule for every place that asks: the broker's hub when it checks a custom-topic RRPC
//! call, the connection when it tells a device's RRPC answer from a message to route, the
//! device client when it tells a call from a message, and the HTTP API when it checks a
//! server-side publish.

/// Whether `topic` is one of the device's own topics: `/{productKey}/{deviceName}/…` or
/// `/sys/{productKey}/{deviceName}/…`, with at least one character after the device name's
/// level. These are the topics a custom-topic RRPC call may wrap (`/ext/rrpc/{id}{topic}`):
/// the device's user topics and, in the platform's synchronous service calls, its thing-model
/// topics.
///
/// ```
/// use aliot_topic::is_device_topic;
/// assert!(is_device_topic("/a1PK/dev-1/user/get", "a1PK", "dev-1"));
/// assert!(is_device_topic("/sys/a1PK/dev-1/thing/service/reboot", "a1PK", "dev-1"));
/// assert!(!is_device_topic("/a1PK/dev-2/user/get", "a1PK", "dev-1"));
/// assert!(!is_device_topic("/shadow/get/a1PK/dev-1", "a1PK", "dev-1"));
/// assert!(!is_device_topic("/a1PK/dev-1/", "a1PK", "dev-1"));
/// ```
pub fn is_device_topic(topic: &str, product_key: &str, device_name: &str) -> bool {
    let Some(rest) = topic.strip_prefix('/') else {
        return false;
    };
    let rest = rest.strip_prefix("sys/").unwrap_or(rest);
    below_level(rest, product_key)
        .and_then(|rest| below_level(rest, device_name))
        .is_some_and(|rest| !rest.is_empty())
}

/// Whether `topic` belongs to the product: `/{productKey}/…`, `/sys/{productKey}/…` or
/// `/broadcast/{productKey}/…`, with at least one character after the product key's level.
/// These are the topics the server side may publish to for a product.
///
/// ```
/// use aliot_topic::is_product_topic;
/// assert!(is_product_topic("/a1PK/dev-1/user/get", "a1PK"));
/// assert!(is_product_topic("/broadcast/a1PK/news", "a1PK"));
/// assert!(!is_product_topic("/a1PKX/dev-1/user/get", "a1PK"));
/// assert!(!is_product_topic("/ext/rrpc/1/a1PK/dev-1/user/get", "a1PK"));
/// ```
pub fn is_product_topic(topic: &str, product_key: &str) -> bool {
    let Some(rest) = topic.strip_prefix('/') else {
        return false;
    };
    let rest = rest
        .strip_prefix("sys/")
        .or_else(|| rest.strip_prefix("broadcast/"))
        .unwrap_or(rest);
    below_level(rest, product_key).is_some_and(|rest| !rest.is_empty())
}

/// What follows `level/` at the start of `topic`, if `topic` starts with that whole level.
fn below_level<'a>(topic: &'a str, level: &str) -> Option<&'a str> {
    if level.is_empty() {
        return None;
    }
    topic.strip_prefix(level)?.strip_prefix('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_topic_has_the_identity_as_its_first_two_levels_or_after_sys() {
        for own in [
            "/pk/dn/user/get",
            "/pk/dn/x",
            "/sys/pk/dn/thing/event/property/post",
            "/sys/pk/dn/rrpc/request/1",
        ] {
            assert!(is_device_topic(own, "pk", "dn"), "{own}");
        }
        for other in [
            "/pk/other/user/get",
            "/dn/pk/user",
            "/pk/x/dn",
            "/pkdn/user",
            "/pk/dnx/user",
            "/pk",
            "/pk/dn",
            "/pk/dn/",
            "pk/dn/user",
            "/sys/pk/dn",
            "/shadow/get/pk/dn",
            "/ext/rrpc/7/pk/dn/user/get",
            "/broadcast/pk/dn/x",
        ] {
            assert!(!is_device_topic(other, "pk", "dn"), "{other}");
        }
        assert!(!is_device_topic("//x", "", ""));
    }

    #[test]
    fn a_product_topic_is_its_own_sys_or_broadcast() {
        for own in ["/pk/dn/get", "/sys/pk/dn/thing/x", "/broadcast/pk/news"] {
            assert!(is_product_topic(own, "pk"), "{own}");
        }
        for other in [
            "/pk",
            "/pk/",
            "/pkx/dev/get",
            "/other/dev/get",
            "/ext/rrpc/1/pk/dev/get",
            "pk/dev/get",
        ] {
            assert!(!is_product_topic(other, "pk"), "{other}");
        }
        assert!(!is_product_topic("//x", ""));
    }

    #[test]
    fn every_device_topic_is_a_topic_of_its_product() {
        for topic in ["/pk/dn/user/get", "/sys/pk/dn/thing/x"] {
            assert!(is_device_topic(topic, "pk", "dn") && is_product_topic(topic, "pk"));
        }
    }
}
