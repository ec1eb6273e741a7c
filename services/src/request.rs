//! Which service a device's PUBLISH is for, and its request parsed.

use crate::alink::{AlinkMethod, AlinkRequest, DeviceReply};
use crate::ntp::NtpRequest;
use crate::ota::{OtaProgress, OtaReport};
use crate::shadow::ShadowRequest;

/// A device's PUBLISH to one of the platform's services, parsed.
#[derive(Clone, Debug, PartialEq)]
pub enum DeviceMessage {
    /// A thing-model request (`/sys/{pk}/{dn}/thing/…`), answered on its `_reply` topic.
    Alink(AlinkRequest),
    /// The device's answer to a property set or an asynchronous service call.
    Reply(DeviceReply),
    /// `/ext/ntp/{pk}/{dn}/request`.
    Ntp(NtpRequest),
    /// `/shadow/update/{pk}/{dn}`.
    Shadow(ShadowRequest),
    /// `/ota/device/inform/{pk}/{dn}`: a module's version.
    OtaReport(OtaReport),
    /// `/ota/device/progress/{pk}/{dn}`: how an upgrade goes.
    OtaProgress(OtaProgress),
}

impl DeviceMessage {
    /// The request a PUBLISH of the device `product_key`/`device_name` on `topic` makes, if the
    /// topic is one of its service topics; `None` for any other topic (its user topics, the
    /// system topics no service here answers), which the broker routes as before.
    ///
    /// A malformed payload on a service topic is still a request: the reply carries the
    /// platform's code for it (6207 not JSON, 460 bad parameters, the shadow's 400–406).
    pub fn parse(
        topic: &str,
        payload: &[u8],
        product_key: &str,
        device_name: &str,
    ) -> Option<Self> {
        let rest = topic.strip_prefix('/')?;
        if let Some(sys) = rest.strip_prefix("sys/") {
            let own = own_rest(sys, product_key, device_name)?;
            if let Some(method) = AlinkMethod::from_topic_rest(own) {
                return Some(DeviceMessage::Alink(AlinkRequest::parse(
                    method, topic, payload,
                )));
            }
            let service = own.strip_prefix("thing/service/")?;
            let request = service.strip_suffix("_reply")?;
            let one_level = !request.is_empty() && !request.contains('/');
            if !(one_level || request == "property/set") {
                return None;
            }
            let request_topic = topic.strip_suffix("_reply")?;
            return Some(DeviceMessage::Reply(DeviceReply::parse(
                request_topic,
                payload,
            )));
        }
        if let Some(ntp) = rest.strip_prefix("ext/ntp/") {
            return (own_rest(ntp, product_key, device_name)? == "request")
                .then(|| DeviceMessage::Ntp(NtpRequest::parse(payload)));
        }
        if let Some(shadow) = rest.strip_prefix("shadow/update/") {
            return own_exactly(shadow, product_key, device_name)
                .then(|| DeviceMessage::Shadow(ShadowRequest::parse(payload)));
        }
        if let Some(inform) = rest.strip_prefix("ota/device/inform/") {
            return own_exactly(inform, product_key, device_name)
                .then(|| DeviceMessage::OtaReport(OtaReport::parse(payload)));
        }
        if let Some(progress) = rest.strip_prefix("ota/device/progress/") {
            return own_exactly(progress, product_key, device_name)
                .then(|| DeviceMessage::OtaProgress(OtaProgress::parse(payload)));
        }
        None
    }
}

/// What follows `{pk}/{dn}/` in `levels`, if they start with the device's identity.
pub(crate) fn own_rest<'a>(
    levels: &'a str,
    product_key: &str,
    device_name: &str,
) -> Option<&'a str> {
    levels
        .strip_prefix(product_key)?
        .strip_prefix('/')?
        .strip_prefix(device_name)?
        .strip_prefix('/')
}

/// Whether `levels` is exactly `{pk}/{dn}`.
pub(crate) fn own_exactly(levels: &str, product_key: &str, device_name: &str) -> bool {
    levels
        .strip_prefix(product_key)
        .and_then(|rest| rest.strip_prefix('/'))
        == Some(device_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(topic: &str) -> Option<DeviceMessage> {
        DeviceMessage::parse(topic, b"{}", "pk", "dn")
    }

    #[test]
    fn service_topics_are_told_apart_and_others_are_left_alone() {
        assert!(matches!(
            parse("/sys/pk/dn/thing/event/property/post"),
            Some(DeviceMessage::Alink(AlinkRequest {
                method: AlinkMethod::PropertyPost,
                ..
            }))
        ));
        assert!(matches!(
            parse("/sys/pk/dn/thing/event/alarm/post"),
            Some(DeviceMessage::Alink(AlinkRequest { method: AlinkMethod::EventPost(ref id), .. })) if id == "alarm"
        ));
        assert!(matches!(
            parse("/sys/pk/dn/thing/service/property/set_reply"),
            Some(DeviceMessage::Reply(DeviceReply { ref request_topic, .. }))
                if request_topic == "/sys/pk/dn/thing/service/property/set"
        ));
        assert!(matches!(
            parse("/sys/pk/dn/thing/service/reboot_reply"),
            Some(DeviceMessage::Reply(_))
        ));
        assert!(matches!(
            parse("/ext/ntp/pk/dn/request"),
            Some(DeviceMessage::Ntp(_))
        ));
        assert!(matches!(
            parse("/shadow/update/pk/dn"),
            Some(DeviceMessage::Shadow(_))
        ));
        assert!(matches!(
            parse("/ota/device/inform/pk/dn"),
            Some(DeviceMessage::OtaReport(_))
        ));
        assert!(matches!(
            parse("/ota/device/progress/pk/dn"),
            Some(DeviceMessage::OtaProgress(_))
        ));
        for other in [
            "/pk/dn/user/update",
            "/sys/pk/dn/thing/topo/add",
            "/sys/pk/dn/thing/event/property/post_reply",
            "/sys/pk/other/thing/event/property/post",
            "/sys/pk/dn/rrpc/response/1",
            "/sys/pk/dn/thing/service/a/b_reply",
            "/sys/pk/dn/thing/event//post",
            "/ext/ntp/pk/dn/response",
            "/shadow/update/pk/dn/x",
            "/shadow/get/pk/dn",
            "/ota/device/upgrade/pk/dn",
            "sys/pk/dn/thing/event/property/post",
        ] {
            assert_eq!(parse(other), None, "{other}");
        }
    }
}
