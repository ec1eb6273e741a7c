//! What the platform forwards to business servers (PLATFORM-PROTOCOLS §9): the formats of the
//! server-side subscription's messages that the platform makes itself, rather than passing on a
//! device's payload.
//!
//! Each is a [`Forwarded`]: the topic a consumer sees in the AMQP message's `topic` property, and
//! the JSON body.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use aliot_auth::DeviceIdentity;
use serde::Serialize;

use crate::UnixMillis;

/// A message the platform makes for its server-side subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forwarded {
    /// Its topic (`/as/mqtt/status/{pk}/{dn}`, …).
    pub topic: String,
    /// Its JSON.
    pub payload: Vec<u8>,
}

/// A device's change of status (§9.1): `/as/mqtt/status/{pk}/{dn}` with
/// `{"status","productKey","deviceName","time","utcTime","lastTime","utcLastTime","clientIp"}`,
/// every value a string, `time` and `lastTime` in China Standard Time (UTC+8), as the platform
/// writes them.
///
/// ```
/// use aliot_auth::DeviceIdentity;
/// use aliot_services::UnixMillis;
/// use aliot_services::forward::device_status;
///
/// let device = DeviceIdentity::new("a1PK", "dev-1");
/// let at = UnixMillis(1_535_700_748_205); // 2018-08-31T07:32:28.205Z
/// let status = device_status(&device, true, at, UnixMillis(at.0 - 10), "10.0.0.7");
/// assert_eq!(status.topic, "/as/mqtt/status/a1PK/dev-1");
/// assert_eq!(
///     status.payload,
///     br#"{"status":"online","productKey":"a1PK","deviceName":"dev-1","time":"2018-08-31 15:32:28.205","utcTime":"2018-08-31T07:32:28.205Z","lastTime":"2018-08-31 15:32:28.195","utcLastTime":"2018-08-31T07:32:28.195Z","clientIp":"10.0.0.7"}"#
/// );
/// ```
pub fn device_status(
    device: &DeviceIdentity,
    online: bool,
    at: UnixMillis,
    last: UnixMillis,
    client_ip: &str,
) -> Forwarded {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Status<'a> {
        status: &'a str,
        product_key: &'a str,
        device_name: &'a str,
        time: String,
        utc_time: String,
        last_time: String,
        utc_last_time: String,
        client_ip: &'a str,
    }
    let payload = serde_json::to_vec(&Status {
        status: if online { "online" } else { "offline" },
        product_key: &device.product_key,
        device_name: &device.device_name,
        time: at.china_text(),
        utc_time: at.utc_text(),
        last_time: last.china_text(),
        utc_last_time: last.utc_text(),
        client_ip,
    })
    .unwrap_or_default();
    Forwarded {
        topic: format!(
            "/as/mqtt/status/{}/{}",
            device.product_key, device.device_name
        ),
        payload,
    }
}
