//! The platform's device services on the [`Client`]: the thing model (property and event
//! posts, property sets, services), NTP, the device shadow and OTA.
//!
//! The requests are built and the downlinks classified by the sans-IO layer of
//! `aliot-services` ([`ThingRequests`], [`DeviceDownlink`]); the driver only publishes them,
//! matches each reply to its caller ([`DeviceDownlink::answers`]) and hands calls and pushes to
//! the handlers set here. What no caller and no handler takes goes to
//! [`Client::messages`](super::Client::messages) as before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aliot_core::codec::QoS;
use aliot_services::{
    AlinkReply, DeviceDownlink, OtaUpgrade, PropertySet, ServiceCall, ShadowMessage, ThingAnswer,
    ThingRequest, ThingRequests, UnixMillis, Uplink, property_set_reply, service_reply,
};
use aliot_topic::{TopicLimits, TopicName};
use serde_json::Value;
use tokio_sync::sync::oneshot;

use super::driver::Command;
use super::{Client, RequestError};
use crate::runtime::{Runtime, timeout_at};

/// How long a request waits for the platform's reply by default: 10 s, as the C SDK 3.x and
/// the Python SDK wait.
pub const DEFAULT_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a service request of a [`Client`] failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ThingError {
    /// The client's login names no device ([`Login::Credentials`](super::Login) without an
    /// identity): it has no service topics.
    #[error("the client's login names no device")]
    NoDevice,
    /// Not a thing-model identifier (1–50 ASCII letters, digits and `_`).
    #[error("{0:?} is not a thing-model identifier")]
    InvalidIdentifier(String),
    /// The request's topic is not a valid topic name (a product key or device name the topic
    /// rules refuse).
    #[error("{0:?} is not a valid topic")]
    InvalidTopic(String),
    /// The request could not be sent.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// No reply came within the reply timeout
    /// ([`ClientOptions::reply_timeout`](super::ClientOptions::reply_timeout)): the platform
    /// did not answer, or the device receives no replies (no `_ss=1` and no SUBSCRIBE to them).
    #[error("no reply from the platform within {0:?}")]
    Timeout(Duration),
    /// The reply cannot be used (an NTP response without a numeric `deviceSendTime`).
    #[error("the platform's reply cannot be used")]
    InvalidReply,
}

/// A handler, locked on its own while it runs: the driver takes it out of [`ThingHandlers`]
/// (whose lock it then lets go) before calling it, so that a handler may set handlers.
type Shared<F> = Arc<Mutex<F>>;
/// Answers property sets (called in the client's task).
type PropertySetHandler = Shared<dyn FnMut(&PropertySet) -> ThingAnswer + Send>;
/// Answers service calls (called in the client's task).
type ServiceHandler = Shared<dyn FnMut(&ServiceCall) -> ThingAnswer + Send>;
/// Takes shadow `control` pushes.
type ShadowHandler = Shared<dyn FnMut(&ShadowMessage) + Send>;
/// Takes OTA upgrade pushes.
type UpgradeHandler = Shared<dyn FnMut(&OtaUpgrade) + Send>;

/// The handlers of the downlinks the platform starts.
#[derive(Default)]
pub(crate) struct ThingHandlers {
    property_set: Option<PropertySetHandler>,
    services: HashMap<String, ServiceHandler>,
    any_service: Option<ServiceHandler>,
    shadow_control: Option<ShadowHandler>,
    upgrade: Option<UpgradeHandler>,
}

/// What a handler made of a downlink.
pub(crate) enum Handled {
    /// No handler takes it: it goes to the application's messages.
    No,
    /// Taken; nothing to send.
    Taken,
    /// Taken; this answer goes out.
    Answer(Uplink),
}

/// The handler a downlink goes to, taken out of the table.
pub(crate) enum HandlerFor {
    PropertySet(PropertySetHandler),
    Service(ServiceHandler),
    ShadowControl(ShadowHandler),
    Upgrade(UpgradeHandler),
}

impl ThingHandlers {
    /// The handler of `downlink` (not a reply to one of the device's requests), if any.
    pub(crate) fn handler_for(&self, downlink: &DeviceDownlink) -> Option<HandlerFor> {
        match downlink {
            DeviceDownlink::PropertySet(_) => {
                self.property_set.clone().map(HandlerFor::PropertySet)
            }
            DeviceDownlink::Service(call) => self
                .services
                .get(&call.identifier)
                .or(self.any_service.as_ref())
                .cloned()
                .map(HandlerFor::Service),
            DeviceDownlink::Shadow(shadow) if shadow.is_control() => {
                self.shadow_control.clone().map(HandlerFor::ShadowControl)
            }
            DeviceDownlink::Upgrade(_) => self.upgrade.clone().map(HandlerFor::Upgrade),
            _ => None,
        }
    }
}

impl HandlerFor {
    /// Runs the handler on `downlink` (the one it was found for).
    pub(crate) fn call(self, downlink: &DeviceDownlink) -> Handled {
        fn run<F: ?Sized, T>(handler: &Shared<F>, call: impl FnOnce(&mut F) -> T) -> T {
            call(&mut *handler.lock().unwrap_or_else(PoisonError::into_inner))
        }
        match (self, downlink) {
            (HandlerFor::PropertySet(handler), DeviceDownlink::PropertySet(set)) => {
                Handled::Answer(property_set_reply(set, &run(&handler, |h| h(set))))
            }
            (HandlerFor::Service(handler), DeviceDownlink::Service(call)) => {
                Handled::Answer(service_reply(call, &run(&handler, |h| h(call))))
            }
            (HandlerFor::ShadowControl(handler), DeviceDownlink::Shadow(shadow)) => {
                run(&handler, |h| h(shadow));
                Handled::Taken
            }
            (HandlerFor::Upgrade(handler), DeviceDownlink::Upgrade(upgrade)) => {
                run(&handler, |h| h(upgrade));
                Handled::Taken
            }
            _ => Handled::No,
        }
    }
}

/// The handlers, shared by the client (which sets them) and the driver (which calls them).
pub(crate) type ThingSlot = Arc<Mutex<ThingHandlers>>;

/// What every clone of a client shares for the services.
pub(crate) struct Things {
    /// The device's requests (ids), `None` without a device identity.
    pub(crate) requests: Option<Mutex<ThingRequests>>,
    pub(crate) handlers: ThingSlot,
    pub(crate) reply_timeout: Duration,
}

/// Milliseconds since the Unix epoch now (0 before 1970).
fn unix_now() -> UnixMillis {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis());
    UnixMillis(u64::try_from(millis).unwrap_or(u64::MAX))
}

fn topic_name(topic: &str) -> Result<TopicName, ThingError> {
    TopicName::new(topic, &TopicLimits::default())
        .map_err(|_| ThingError::InvalidTopic(topic.to_owned()))
}

impl<R: Runtime> Client<R> {
    /// Builds a request with the device's [`ThingRequests`].
    fn build(
        &self,
        build: impl FnOnce(&mut ThingRequests) -> Option<ThingRequest>,
        identifier: &str,
    ) -> Result<ThingRequest, ThingError> {
        let requests = self.things.requests.as_ref().ok_or(ThingError::NoDevice)?;
        let mut requests = requests.lock().unwrap_or_else(PoisonError::into_inner);
        build(&mut requests).ok_or_else(|| ThingError::InvalidIdentifier(identifier.to_owned()))
    }

    /// Publishes `request` and waits for the downlink that answers it.
    async fn call(&self, request: ThingRequest, qos: QoS) -> Result<DeviceDownlink, ThingError> {
        let timeout = self.things.reply_timeout;
        let deadline = Instant::now() + timeout;
        let topic = topic_name(&request.topic)?;
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Thing {
                topic,
                payload: request.payload.into(),
                qos,
                expects: request.expects,
                reply,
            })
            .await
            .map_err(|_| RequestError::Closed)?;
        match timeout_at(&R::default(), deadline, answer).await {
            None => Err(ThingError::Timeout(timeout)),
            Some(Err(_)) => Err(RequestError::Closed.into()),
            Some(Ok(result)) => Ok(result?),
        }
    }

    /// Publishes `request` (QoS 1) and waits for its PUBACK.
    async fn send(&self, request: ThingRequest) -> Result<(), ThingError> {
        let topic = topic_name(&request.topic)?;
        self.publish(topic, request.payload, QoS::AtLeastOnce)
            .await?;
        Ok(())
    }

    async fn alink_reply(&self, request: ThingRequest) -> Result<AlinkReply, ThingError> {
        match self.call(request, QoS::AtLeastOnce).await? {
            DeviceDownlink::Reply(reply) => Ok(reply),
            _ => Err(ThingError::InvalidReply),
        }
    }

    async fn shadow_reply(&self, request: ThingRequest) -> Result<ShadowMessage, ThingError> {
        match self.call(request, QoS::AtLeastOnce).await? {
            DeviceDownlink::Shadow(reply) => Ok(reply),
            _ => Err(ThingError::InvalidReply),
        }
    }

    /// Posts property values (`params`, e.g. `{"Power":1}` or
    /// `{"Power":{"value":1,"time":…}}`) on `/sys/{pk}/{dn}/thing/event/property/post` and
    /// resolves with the platform's reply (code 200 on success; the platform's error code
    /// else, which is no `Err`).
    ///
    /// # Errors
    ///
    /// [`ThingError::Timeout`] when no reply comes within the reply timeout,
    /// [`ThingError::NoDevice`], [`ThingError::Request`].
    pub async fn post_properties(&self, params: Value) -> Result<AlinkReply, ThingError> {
        let request = self.build(|r| Some(r.property_post(&params, true)), "")?;
        self.alink_reply(request).await
    }

    /// Posts an event: its output `value` on `/sys/{pk}/{dn}/thing/event/{identifier}/post`;
    /// resolves with the platform's reply.
    ///
    /// # Errors
    ///
    /// As [`post_properties`](Self::post_properties), and
    /// [`ThingError::InvalidIdentifier`].
    pub async fn post_event(
        &self,
        identifier: &str,
        value: Value,
    ) -> Result<AlinkReply, ThingError> {
        let request = self.build(|r| r.event_post(identifier, &value, true), identifier)?;
        self.alink_reply(request).await
    }

    /// The platform's time (NTP over MQTT, PLATFORM-PROTOCOLS §3): sends the local clock,
    /// and corrects the platform's answer by half the round trip.
    ///
    /// # Errors
    ///
    /// As [`post_properties`](Self::post_properties), and [`ThingError::InvalidReply`].
    pub async fn ntp_sync(&self) -> Result<SystemTime, ThingError> {
        let request = self.build(|r| Some(r.ntp_request(unix_now())), "")?;
        let DeviceDownlink::Ntp(response) = self.call(request, QoS::AtMostOnce).await? else {
            return Err(ThingError::InvalidReply);
        };
        let synced = response
            .synced_time(unix_now())
            .ok_or(ThingError::InvalidReply)?;
        Ok(UNIX_EPOCH + Duration::from_millis(synced.0))
    }

    /// The device shadow's document: the `reply` with `state` (`reported`, `desired`),
    /// `metadata` and `version`.
    ///
    /// # Errors
    ///
    /// As [`post_properties`](Self::post_properties).
    pub async fn get_shadow(&self) -> Result<ShadowMessage, ThingError> {
        let request = self.build(|r| Some(r.shadow_get()), "")?;
        self.shadow_reply(request).await
    }

    /// Updates the shadow's reported state; the shadow takes it only when `version` is above
    /// its own. Resolves with the `reply` (status `success` with the new version, or `error`
    /// with its code, 403 for a stale version).
    ///
    /// # Errors
    ///
    /// As [`post_properties`](Self::post_properties).
    pub async fn update_shadow(
        &self,
        reported: Value,
        version: u64,
    ) -> Result<ShadowMessage, ThingError> {
        let request = self.build(|r| Some(r.shadow_update(&reported, version)), "")?;
        self.shadow_reply(request).await
    }

    /// Clears the shadow's desired state (after applying a `control`), at `version`.
    ///
    /// # Errors
    ///
    /// As [`post_properties`](Self::post_properties).
    pub async fn clear_shadow_desired(&self, version: u64) -> Result<ShadowMessage, ThingError> {
        let request = self.build(|r| Some(r.shadow_clear_desired(version)), "")?;
        self.shadow_reply(request).await
    }

    /// Reports the firmware version of `module` (`""`: the default module) on
    /// `/ota/device/inform/{pk}/{dn}`; resolves when the broker acknowledged it (no reply
    /// comes). A pending upgrade to this version is then done.
    ///
    /// # Errors
    ///
    /// [`ThingError::NoDevice`], [`ThingError::Request`].
    pub async fn report_version(&self, module: &str, version: &str) -> Result<(), ThingError> {
        let request = self.build(|r| Some(r.ota_version(module, version)), "")?;
        self.send(request).await
    }

    /// Reports how an upgrade of `module` goes: `step` 1–100 a percentage, -1 upgrade
    /// failed, -2 download failed, -3 verify failed, -4 flash failed.
    ///
    /// # Errors
    ///
    /// As [`report_version`](Self::report_version).
    pub async fn report_progress(
        &self,
        module: &str,
        step: i32,
        desc: &str,
    ) -> Result<(), ThingError> {
        let request = self.build(|r| Some(r.ota_progress(module, step, desc)), "")?;
        self.send(request).await
    }

    fn handlers(&self) -> std::sync::MutexGuard<'_, ThingHandlers> {
        self.things
            .handlers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Answers the platform's property sets with `handler` (replacing any earlier one); its
    /// answer goes on `…/property/set_reply`.
    ///
    /// Like every handler here, it runs in the client's task: it must be quick, must not block
    /// and must not panic. Without a handler, property sets go to
    /// [`messages`](Self::messages).
    pub fn on_property_set<F>(&self, handler: F)
    where
        F: FnMut(&PropertySet) -> ThingAnswer + Send + 'static,
    {
        self.handlers().property_set = Some(Arc::new(Mutex::new(handler)));
    }

    /// Answers calls of the service `identifier` with `handler` (replacing any earlier one for
    /// it): an asynchronous call is answered on `…/{identifier}_reply`, a synchronous one
    /// (RRPC, [`ServiceCall::rrpc`]) on the RRPC response topic of its form. Calls of a
    /// service with no handler go to [`on_any_service`](Self::on_any_service)'s, then:
    /// asynchronous ones to [`messages`](Self::messages), synchronous ones to
    /// [`on_rrpc`](Self::on_rrpc)'s handler.
    pub fn on_service<F>(&self, identifier: &str, handler: F)
    where
        F: FnMut(&ServiceCall) -> ThingAnswer + Send + 'static,
    {
        self.handlers()
            .services
            .insert(identifier.to_owned(), Arc::new(Mutex::new(handler)));
    }

    /// Answers calls of every service without a handler of its own.
    pub fn on_any_service<F>(&self, handler: F)
    where
        F: FnMut(&ServiceCall) -> ThingAnswer + Send + 'static,
    {
        self.handlers().any_service = Some(Arc::new(Mutex::new(handler)));
    }

    /// Takes the shadow's `control` pushes (an application changed the desired state; apply
    /// it, then [`update_shadow`](Self::update_shadow) /
    /// [`clear_shadow_desired`](Self::clear_shadow_desired)).
    pub fn on_shadow_control<F>(&self, handler: F)
    where
        F: FnMut(&ShadowMessage) + Send + 'static,
    {
        self.handlers().shadow_control = Some(Arc::new(Mutex::new(handler)));
    }

    /// Takes OTA upgrade pushes (download the firmware, check its digest, report progress
    /// with [`report_progress`](Self::report_progress) and the new version with
    /// [`report_version`](Self::report_version)).
    pub fn on_upgrade<F>(&self, handler: F)
    where
        F: FnMut(&OtaUpgrade) + Send + 'static,
    {
        self.handlers().upgrade = Some(Arc::new(Mutex::new(handler)));
    }
}
