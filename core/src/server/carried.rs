//! The sub-devices a gateway's connection carries, and what each may do on it.
//!
//! A gateway logs its sub-devices in over its own connection (PLATFORM-PROTOCOLS §4.2); from
//! then on it publishes and subscribes on their topics as each of them could on a connection of
//! its own (§4.6). The hub says which sub-devices are logged in
//! ([`Command::SubDeviceOnline`](super::Command::SubDeviceOnline) and
//! [`Command::SubDeviceOffline`](super::Command::SubDeviceOffline)); the connection keeps them
//! here, with each one's ACL, and asks [`CarriedDevices::publisher`] and
//! [`CarriedDevices::subscriber`] for a topic or filter the gateway's own ACL refuses.
//!
//! A sub-device's topics carry its identity as two adjacent levels (`/{pk}/{dn}/…`,
//! `/sys/{pk}/{dn}/…`, `/shadow/update/{pk}/{dn}`, `/ext/rrpc/{id}/sys/{pk}/{dn}/…`), so the
//! owner is found by looking up each pair of levels near the front, a few hash lookups at most,
//! whatever the number of sub-devices; its ACL then decides, as it would for the device itself.
//! A product's broadcast topics name no device: any carried sub-device of the product whose ACL
//! allows the filter takes the subscription.

use alloc::sync::Arc;

use aliot_auth::DeviceIdentity;
use aliot_topic::{Acl, TopicFilter, TopicName};
use hashbrown::{Equivalent, HashMap};

use crate::authenticator::ClientKey;

/// How many levels from the front a sub-device's identity may start at: `/ext/rrpc/{id}/sys/
/// {pk}/{dn}/…` puts the product key fifth.
const IDENTITY_LEVELS: usize = 6;

/// One logged-in sub-device.
#[derive(Debug)]
pub(super) struct Carried {
    /// Its key, as the hub keeps its session.
    pub(super) key: Arc<ClientKey>,
    /// What it may publish and subscribe to.
    pub(super) acl: Acl,
}

/// The sub-devices logged in through this connection, by identity.
#[derive(Debug, Default)]
pub(super) struct CarriedDevices {
    by_identity: HashMap<DeviceIdentity, Carried>,
}

/// An identity borrowed from a topic's levels: hashes as [`DeviceIdentity`] does (its fields,
/// in order, as strings), so that the map is searched without building one.
#[derive(Hash)]
struct IdentityRef<'a> {
    product_key: &'a str,
    device_name: &'a str,
}

impl Equivalent<DeviceIdentity> for IdentityRef<'_> {
    fn equivalent(&self, key: &DeviceIdentity) -> bool {
        key.product_key == self.product_key && key.device_name == self.device_name
    }
}

impl CarriedDevices {
    /// A sub-device logged in (again: its ACL is the one given last).
    pub(super) fn insert(&mut self, key: Arc<ClientKey>, acl: Acl) {
        if let Some(identity) = key.device() {
            let identity = identity.clone();
            self.by_identity.insert(identity, Carried { key, acl });
        }
    }

    /// A sub-device logged out.
    pub(super) fn remove(&mut self, key: &ClientKey) {
        if let Some(identity) = key.device() {
            self.by_identity.remove(identity);
        }
    }

    /// The sub-device that may publish on `topic`, if one is carried.
    pub(super) fn publisher(&self, topic: &TopicName) -> Option<&Carried> {
        self.named_in(topic.as_str())
            .find(|carried| carried.acl.may_publish(topic))
    }

    /// The sub-device that may subscribe to `filter`, if one is carried.
    pub(super) fn subscriber(&self, filter: &TopicFilter) -> Option<&Carried> {
        let may = |carried: &&Carried| carried.acl.may_subscribe(filter);
        if let Some(carried) = self.named_in(filter.as_str()).find(may) {
            return Some(carried);
        }
        let product_key = filter
            .as_str()
            .strip_prefix("/broadcast/")?
            .split('/')
            .next()?;
        self.by_identity
            .iter()
            .filter(|(identity, _)| identity.product_key == product_key)
            .map(|(_, carried)| carried)
            .find(may)
    }

    /// The carried sub-device whose identity `filter` names, if any (for an UNSUBSCRIBE, which
    /// the ACL does not check).
    pub(super) fn named(&self, filter: &TopicFilter) -> Option<&Carried> {
        self.named_in(filter.as_str()).next()
    }

    /// The carried sub-devices whose identity appears as two adjacent levels near the front
    /// of `topic`, front first.
    fn named_in<'a, 't>(&'a self, topic: &'t str) -> impl Iterator<Item = &'a Carried> + 't
    where
        'a: 't,
    {
        let mut levels = topic.split('/').take(IDENTITY_LEVELS + 1);
        let mut previous = levels.next();
        levels.filter_map(move |level| {
            let product_key = previous.replace(level)?;
            if self.by_identity.is_empty() || product_key.is_empty() || level.is_empty() {
                return None;
            }
            self.by_identity.get(&IdentityRef {
                product_key,
                device_name: level,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aliot_topic::ProductCategories;

    fn carrying(names: &[&str]) -> CarriedDevices {
        let mut carried = CarriedDevices::default();
        for name in names {
            let key = Arc::new(ClientKey::Device(DeviceIdentity::new("a1Sub", *name)));
            let acl = Acl::for_device("a1Sub", name, &ProductCategories::defaults());
            carried.insert(key, acl);
        }
        carried
    }

    fn name_of(carried: Option<&Carried>) -> Option<&str> {
        carried
            .and_then(|carried| carried.key.device())
            .map(|device| device.device_name.as_str())
    }

    #[test]
    fn a_topic_is_the_sub_device_it_names_if_its_acl_allows_it() {
        let carried = carrying(&["s-1", "s-2"]);
        let topic = |text: &str| TopicName::new(text, &Default::default()).unwrap();
        for (text, owner) in [
            ("/sys/a1Sub/s-1/thing/event/property/post", Some("s-1")),
            ("/a1Sub/s-2/update", Some("s-2")),
            ("/shadow/update/a1Sub/s-1", Some("s-1")),
            ("/ext/ntp/a1Sub/s-2/request", Some("s-2")),
            (
                "/ext/rrpc/42/sys/a1Sub/s-1/thing/service/reboot_reply",
                Some("s-1"),
            ),
            ("/sys/a1Sub/s-1/rrpc/response/42", Some("s-1")),
            // Not its own to publish on, or not carried.
            ("/a1Sub/s-1/get", None),
            ("/sys/a1Sub/s-3/thing/event/property/post", None),
            ("/a1Sub/s-1", None),
        ] {
            assert_eq!(name_of(carried.publisher(&topic(text))), owner, "{text}");
        }
    }

    #[test]
    fn a_filter_is_the_sub_device_it_names_or_a_broadcast_of_its_product() {
        let carried = carrying(&["s-1"]);
        let filter = |text: &str| TopicFilter::new(text, &Default::default()).unwrap();
        assert_eq!(
            name_of(carried.subscriber(&filter("/a1Sub/s-1/get"))),
            Some("s-1")
        );
        assert_eq!(
            name_of(carried.subscriber(&filter("/sys/a1Sub/s-1/rrpc/request/+"))),
            Some("s-1")
        );
        assert_eq!(
            name_of(carried.subscriber(&filter("/broadcast/a1Sub/+"))),
            Some("s-1")
        );
        assert_eq!(
            name_of(carried.subscriber(&filter("/sys/a1Sub/+/thing/#"))),
            None
        );
        assert_eq!(
            name_of(carried.subscriber(&filter("/broadcast/a1Other/+"))),
            None
        );
        assert_eq!(
            name_of(carried.named(&filter("/a1Sub/s-1/update"))),
            Some("s-1")
        );
    }

    #[test]
    fn a_sub_device_logged_out_is_no_longer_found() {
        let mut carried = carrying(&["s-1"]);
        carried.remove(&ClientKey::Device(DeviceIdentity::new("a1Sub", "s-1")));
        assert!(carried.by_identity.is_empty());
        let topic = TopicName::new("/a1Sub/s-1/update", &Default::default()).unwrap();
        assert!(carried.publisher(&topic).is_none());
    }
}
