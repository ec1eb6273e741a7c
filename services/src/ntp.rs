//! NTP over MQTT (PLATFORM-PROTOCOLS §3): the device sends its clock, the platform answers at
//! once with its own, every time a JSON string.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;

use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::{Downlink, UnixMillis, alink::to_bytes};

/// A device's NTP request: `{"deviceSendTime":"1571724098000"}` (a string or a number).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NtpRequest {
    /// `deviceSendTime` as the device sent it, as text (echoed as a JSON string); `None` when
    /// the request has none, or is not JSON: no answer can be computed from it, so none goes.
    pub device_send_time: Option<String>,
}

impl NtpRequest {
    pub(crate) fn parse(payload: &[u8]) -> Self {
        /// The request's one field, its text kept as sent (a number echoed as written).
        #[derive(serde::Deserialize)]
        struct Request<'a> {
            #[serde(borrow, rename = "deviceSendTime")]
            device_send_time: Option<&'a RawValue>,
        }
        let raw = serde_json::from_slice::<Request<'_>>(payload)
            .ok()
            .filter(|_| payload.trim_ascii_start().first() == Some(&b'{'))
            .and_then(|request| request.device_send_time);
        let device_send_time = raw.and_then(|raw| {
            let text = raw.get();
            match serde_json::from_str::<Value>(text).ok()? {
                Value::String(time) if time.len() <= 32 => Some(time),
                Value::Number(_) if text.len() <= 32 => Some(text.to_owned()),
                _ => None,
            }
        });
        NtpRequest { device_send_time }
    }

    /// The answer on `/ext/ntp/{pk}/{dn}/response`, the platform's receive and send times both
    /// `now` (it answers at once).
    pub(crate) fn response(
        &self,
        product_key: &str,
        device_name: &str,
        now: UnixMillis,
    ) -> Option<Downlink> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Response<'a> {
            device_send_time: &'a str,
            server_recv_time: String,
            server_send_time: String,
        }
        let device_send_time = self.device_send_time.as_deref()?;
        let time = format!("{}", now.0);
        Some(Downlink {
            topic: format!("/ext/ntp/{product_key}/{device_name}/response"),
            payload: to_bytes(&Response {
                device_send_time,
                server_recv_time: time.clone(),
                server_send_time: time,
            }),
        })
    }
}
