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

/// The device a system downlink is for: the `(productKey, deviceName)` of a topic the platform
/// publishes to one device on its own (PLATFORM-PROTOCOLS §0.2). A client that connects with
/// `_ss=1` in its client id gets these without a SUBSCRIBE (automatic subscription):
///
/// - `/sys/{pk}/{dn}/…` but the device's own uplinks there: the thing model's replies to
///   the device (`…_reply`) and its downlinks (`thing/service/…` calls, `…/push`, `…/notify`,
///   `thing/topo/change`, `thing/gateway/permit`, `thing/model/down_raw`), RRPC requests;
/// - `/shadow/get/{pk}/{dn}`, `/ota/device/upgrade/{pk}/{dn}`, `/ota/device/request/{pk}/{dn}`;
/// - `/ext/ntp/{pk}/{dn}/response`, `/ext/session/{pk}/{dn}/…`, `/ext/error/{pk}/{dn}`;
/// - `/ext/rrpc/{id}/sys/{pk}/{dn}/…`: a synchronous service call in the `ext` form.
///
/// ```
/// use aliot_topic::system_downlink_owner;
/// assert_eq!(system_downlink_owner("/sys/a1PK/dev-1/thing/service/property/set"), Some(("a1PK", "dev-1")));
/// assert_eq!(system_downlink_owner("/shadow/get/a1PK/dev-1"), Some(("a1PK", "dev-1")));
/// assert_eq!(system_downlink_owner("/ext/rrpc/7/sys/a1PK/dev-1/thing/service/reboot"), Some(("a1PK", "dev-1")));
/// assert_eq!(system_downlink_owner("/a1PK/dev-1/user/get"), None);
/// assert_eq!(system_downlink_owner("/shadow/update/a1PK/dev-1"), None);
/// ```
pub fn system_downlink_owner(topic: &str) -> Option<(&str, &str)> {
    let rest = topic.strip_prefix('/')?;
    // The levels from the product key on, and what may follow the device name.
    let (identity, tail) = if let Some(sys) = rest.strip_prefix("sys/") {
        (sys, Tail::SysDownlink)
    } else if let Some(shadow) = rest.strip_prefix("shadow/get/") {
        (shadow, Tail::None)
    } else if let Some(ota) = rest
        .strip_prefix("ota/device/upgrade/")
        .or_else(|| rest.strip_prefix("ota/device/request/"))
    {
        (ota, Tail::None)
    } else if let Some(ntp) = rest.strip_prefix("ext/ntp/") {
        (ntp, Tail::Exactly("response"))
    } else if let Some(session) = rest.strip_prefix("ext/session/") {
        (session, Tail::Some)
    } else if let Some(error) = rest.strip_prefix("ext/error/") {
        (error, Tail::None)
    } else {
        let call = rest.strip_prefix("ext/rrpc/")?;
        let (id, wrapped) = call.split_once('/')?;
        if id.is_empty() {
            return None;
        }
        (wrapped.strip_prefix("sys/")?, Tail::SysDownlink)
    };
    let (product_key, rest) = identity.split_once('/')?;
    let (device_name, after) = match rest.split_once('/') {
        Some((device_name, after)) => (device_name, Some(after)),
        None => (rest, None),
    };
    if product_key.is_empty() || device_name.is_empty() {
        return None;
    }
    let fits = match (tail, after) {
        (Tail::None, None) => true,
        (Tail::Some, Some(after)) => !after.is_empty(),
        (Tail::SysDownlink, Some(after)) => is_sys_downlink(after),
        (Tail::Exactly(expected), Some(after)) => after == expected,
        _ => false,
    };
    fits.then_some((product_key, device_name))
}

/// Whether `/sys/{pk}/{dn}/{after}` goes from the platform to the device. The device
/// publishes there too: its requests (`…/post`, `deviceinfo/update`, `desired/get`, …), its
/// answers to the platform's calls (`thing/service/…_reply`, `rrpc/response/…`,
/// `…/push_reply`, `thing/model/down_raw_reply`) and its raw uplinks (`thing/model/up_raw`).
fn is_sys_downlink(after: &str) -> bool {
    if after.starts_with("rrpc/request/") {
        return after.len() > "rrpc/request/".len();
    }
    if let Some(service) = after.strip_prefix("thing/service/") {
        return !service.is_empty() && !service.ends_with("_reply");
    }
    if after.ends_with("_reply") {
        return !after.ends_with("push_reply") && after != "thing/model/down_raw_reply";
    }
    after.ends_with("/push")
        || after.ends_with("/notify")
        || matches!(
            after,
            "thing/topo/change" | "thing/gateway/permit" | "thing/model/down_raw"
        )
}

/// What follows the device name in a system downlink.
#[derive(Clone, Copy)]
enum Tail {
    /// Nothing: the device name is the last level.
    None,
    /// At least one more character.
    Some,
    /// Exactly this.
    Exactly(&'static str),
    /// A downlink under `/sys/{pk}/{dn}/` ([`is_sys_downlink`]).
    SysDownlink,
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
    fn system_downlinks_name_their_device() {
        for (topic, owner) in [
            ("/sys/pk/dn/thing/event/property/post_reply", ("pk", "dn")),
            ("/sys/pk/dn/rrpc/request/12", ("pk", "dn")),
            ("/shadow/get/pk/dn", ("pk", "dn")),
            ("/ota/device/upgrade/pk/dn", ("pk", "dn")),
            ("/ota/device/request/pk/dn", ("pk", "dn")),
            ("/ext/ntp/pk/dn/response", ("pk", "dn")),
            ("/ext/session/pk/dn/combine/login_reply", ("pk", "dn")),
            ("/ext/error/pk/dn", ("pk", "dn")),
            ("/ext/rrpc/9/sys/pk/dn/thing/service/x", ("pk", "dn")),
            ("/sys/pk/dn/thing/service/property/set", ("pk", "dn")),
            ("/sys/pk/dn/thing/config/push", ("pk", "dn")),
            ("/sys/pk/dn/thing/model/down_raw", ("pk", "dn")),
            ("/sys/pk/dn/thing/model/up_raw_reply", ("pk", "dn")),
            ("/sys/pk/dn/_thing/event/notify", ("pk", "dn")),
        ] {
            assert_eq!(system_downlink_owner(topic), Some(owner), "{topic}");
        }
        for other in [
            "/pk/dn/user/get",
            "/sys/pk/dn",
            "/sys/pk/dn/",
            "/sys//dn/x",
            "/shadow/update/pk/dn",
            "/shadow/get/pk/dn/x",
            "/ota/device/inform/pk/dn",
            "/ext/ntp/pk/dn/request",
            "/ext/rrpc/9/pk/dn/user/get",
            "/ext/rrpc//sys/pk/dn/x",
            "/broadcast/pk/x",
            "sys/pk/dn/x",
            "/ext/error/pk/dn/x",
            // The device's own uplinks under /sys/.
            "/sys/pk/dn/thing/event/property/post",
            "/sys/pk/dn/thing/service/property/set_reply",
            "/sys/pk/dn/thing/service/reboot_reply",
            "/sys/pk/dn/rrpc/response/12",
            "/sys/pk/dn/rrpc/request/",
            "/sys/pk/dn/thing/config/push_reply",
            "/sys/pk/dn/thing/model/down_raw_reply",
            "/sys/pk/dn/thing/model/up_raw",
            "/sys/pk/dn/thing/deviceinfo/update",
            "/ext/rrpc/9/sys/pk/dn/thing/service/x_reply",
        ] {
            assert_eq!(system_downlink_owner(other), None, "{other}");
        }
    }

    #[test]
    fn every_device_topic_is_a_topic_of_its_product() {
        for topic in ["/pk/dn/user/get", "/sys/pk/dn/thing/x"] {
            assert!(is_device_topic(topic, "pk", "dn") && is_product_topic(topic, "pk"));
        }
    }
}
