//! The platform's device services on the wire, and what the platform keeps of each device.
//!
//! `aliot-services` speaks the JSON protocols the platform's device SDKs use beyond MQTT
//! (`PLATFORM-PROTOCOLS.md`): the Alink thing model (§1: property and event posts, tags,
//! desired values, property set, service calls), NTP (§3), the device shadow (§5) and OTA
//! (§6). It is `no_std` + `alloc` and sans-IO, like `aliot-core`, which sits on it:
//!
//! - [`DeviceMessage::parse`] turns a device's PUBLISH on one of its service topics into a
//!   typed request. The broker calls it in the device's connection task, so JSON is parsed on
//!   every core, not on the hub's serial stage.
//! - [`DeviceState`] is what the platform keeps of one device (latest properties with their
//!   times, tags, desired values, the shadow document, OTA modules and jobs). Its
//!   [`handle`](DeviceState::handle) answers a request with the reply to send back, if any,
//!   and the result of a downlink the device answered. The wall clock is passed in
//!   ([`UnixMillis`]); nothing here reads one.
//! - The server's side of the same services: [`property_set`], [`service_call`],
//!   [`DeviceState::update_shadow`], [`DeviceState::start_ota`].
//!
//! Every reply follows PLATFORM-PROTOCOLS §0.3, so that the SDKs' narrow parsers take it:
//! compact JSON; `id`, `code`, `message` first and `data` last; the request's `id` echoed
//! verbatim with its JSON type; `code` a number; the method taken from the topic.
//!
//! ```
//! use aliot_services::{DeviceMessage, DeviceState, UnixMillis};
//!
//! let topic = "/sys/a1PK/dev-1/thing/event/property/post";
//! let payload = br#"{"id":"7","version":"1.0","params":{"Power":1},"method":"thing.event.property.post"}"#;
//! let request = DeviceMessage::parse(topic, payload, "a1PK", "dev-1").unwrap();
//!
//! let mut device = DeviceState::new("a1PK", "dev-1");
//! let handled = device.handle(request, UnixMillis(1_700_000_000_000));
//! let reply = handled.reply.unwrap();
//! assert_eq!(reply.topic, "/sys/a1PK/dev-1/thing/event/property/post_reply");
//! assert_eq!(
//!     reply.payload,
//!     br#"{"id":"7","code":200,"message":"success","method":"thing.event.property.post","version":"1.0","data":{}}"#
//! );
//! assert_eq!(device.property("Power").unwrap().value, 1);
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

mod alink;
mod device;
pub mod forward;
pub mod gateway;
mod ntp;
mod ota;
mod request;
mod shadow;
mod thing;

pub use alink::{
    AlinkCode, AlinkMethod, AlinkRequest, DeviceReply, ReplyTo, property_set, service_call,
};
pub use device::{
    DesiredValue, DeviceState, DownlinkResult, Handled, MAX_OTA_MODULES, MAX_PROPERTIES,
    MAX_PROPERTY_BYTES, MAX_RESULT_DATA_BYTES, MAX_TAG_VALUE_LEN, MAX_TAGS, MAX_VALUE_BYTES,
    PropertyValue,
};
pub use ntp::NtpRequest;
pub use ota::{
    OtaJob, OtaJobError, OtaModule, OtaProgress, OtaReport, OtaSignMethod, ota_upgrade_topic,
};
pub use request::DeviceMessage;
pub use shadow::{
    MAX_SHADOW_ATTRIBUTES, MAX_SHADOW_BYTES, ShadowCode, ShadowDocument, ShadowRequest,
};
pub use thing::{
    AlinkReply, DeviceDownlink, NtpResponse, OtaUpgrade, PropertySet, ReplyKind, RrpcCall,
    RrpcForm, ServiceCall, ShadowMessage, ThingAnswer, ThingRequest, ThingRequests, Uplink,
    property_set_reply, service_reply,
};

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// Wall-clock time in milliseconds since the Unix epoch, as the caller's clock says.
///
/// Stored (serde) as the bare number of milliseconds.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    /// Whole seconds (the shadow's timestamps are in seconds).
    pub fn secs(self) -> u64 {
        self.0 / 1000
    }

    /// The time in UTC, ISO 8601 with milliseconds, as the platform's `utcTime` and the
    /// OpenAPI's `GmtCreate` show it.
    ///
    /// ```
    /// use aliot_services::UnixMillis;
    /// assert_eq!(UnixMillis(1_535_700_748_205).utc_text(), "2018-08-31T07:32:28.205Z");
    /// assert_eq!(UnixMillis(0).utc_text(), "1970-01-01T00:00:00.000Z");
    /// assert_eq!(UnixMillis(1_456_231_584_123).utc_text(), "2016-02-23T12:46:24.123Z");
    /// assert_eq!(UnixMillis(1_709_251_199_000).utc_text(), "2024-02-29T23:59:59.000Z");
    /// ```
    pub fn utc_text(self) -> String {
        let (year, month, day, ms) = civil(self.0);
        format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            ms / 3_600_000,
            ms / 60_000 % 60,
            ms / 1000 % 60,
            ms % 1000
        )
    }

    /// The time in China Standard Time (UTC+8, no daylight saving), as the platform's `time`
    /// fields show it.
    ///
    /// ```
    /// use aliot_services::UnixMillis;
    /// assert_eq!(UnixMillis(1_535_700_748_205).china_text(), "2018-08-31 15:32:28.205");
    /// // 20:00 UTC is the next day in Beijing.
    /// assert_eq!(UnixMillis(72_000_000).china_text(), "1970-01-02 04:00:00.000");
    /// ```
    pub fn china_text(self) -> String {
        let (year, month, day, ms) = civil(self.0.saturating_add(8 * 3_600_000));
        format!(
            "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}",
            ms / 3_600_000,
            ms / 60_000 % 60,
            ms / 1000 % 60,
            ms % 1000
        )
    }
}

/// The civil date (year, month, day) of milliseconds since the Unix epoch, and the
/// milliseconds into that day (Howard Hinnant's days-to-civil algorithm).
fn civil(ms: u64) -> (u64, u64, u64, u64) {
    let (days, rest) = (ms / 86_400_000, ms % 86_400_000);
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day, rest)
}

/// A message a service sends to one device: its topic and payload (JSON).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Downlink {
    /// The topic, one of the device's system downlinks.
    pub topic: String,
    /// The payload.
    pub payload: Vec<u8>,
}

/// Whether `text` is a thing-model identifier (of a service, event or property): 1–50 ASCII
/// letters, digits and `_`, as the platform's TSL allows.
///
/// ```
/// assert!(aliot_services::is_identifier("SetTemp_2"));
/// assert!(!aliot_services::is_identifier("a/b") && !aliot_services::is_identifier(""));
/// ```
pub fn is_identifier(text: &str) -> bool {
    (1..=50).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A JSON value's size, about as written compactly (strings count their bytes, numbers 8):
/// what the limits on kept values measure, without writing the value out.
pub(crate) fn json_size(value: &serde_json::Value) -> usize {
    use serde_json::Value;
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) => 8,
        Value::String(text) => text.len() + 2,
        Value::Array(items) => items.iter().map(|item| json_size(item) + 1).sum::<usize>() + 2,
        Value::Object(fields) => object_size(fields),
    }
}

/// [`json_size`] of an object.
pub(crate) fn object_size(fields: &serde_json::Map<String, serde_json::Value>) -> usize {
    fields
        .iter()
        .map(|(name, value)| name.len() + 4 + json_size(value))
        .sum::<usize>()
        + 2
}

/// Cuts `text` to at most `max` bytes, at a character's boundary.
pub(crate) fn truncate_to(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

/// The longest request `id` echoed, in bytes of its JSON text (ours). The SDKs send short
/// decimal ids; the Node SDK's carry the reply topic (`"3|exp-topic|/sys/…/post_reply"`),
/// under 200 bytes for the longest topics the profile allows. A longer one is answered with
/// code 460 and id `"0"`.
pub const MAX_ID_LEN: usize = 256;
