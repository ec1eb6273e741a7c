//! How the store's records are laid out in bytes.
//!
//! | record | key | value |
//! |---|---|---|
//! | session | [`client_key`] | JSON of [`SessionJson`] (written at connects and subscriptions: rare) |
//! | message | ([`client_key`], sequence) | version byte 1, arrival (u64 LE ms), topic length (u16 LE), topic, payload |
//! | device | (product key, device name) | JSON of `DeviceState` |
//! | product of the registry | product key | JSON of `ProductJson` |
//! | device of the registry | (product key, device name) | JSON of `RegisteredJson` |
//! | message of a consumer group's backlog | (group id, message id) | version byte 1, generate time (u64 LE ms), topic length (u16 LE), topic, payload |
//!
//! A client key: `d` product key NUL device name, or `c` client id (MQTT strings hold no NUL).
//! Every decoder refuses what it cannot read rather than guess.

use std::sync::Arc;
use std::time::Duration;

use aliot_auth::DeviceIdentity;
use aliot_core::ClientKey;
use aliot_core::authenticator::ClientFeatures;
use aliot_core::codec::QoS;
use aliot_core::hub::BacklogMessage;
use aliot_core::hub::durable::{ProductRecord, RegisteredDevice, SessionRecord, StoredMessage};
use aliot_services::UnixMillis;
use aliot_topic::{TopicFilter, TopicLimits, TopicName};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::StoreError;

/// The version byte of a message record.
const MESSAGE_V1: u8 = 1;

/// Topics and filters read back are checked against the longest MQTT allows, not the
/// configured limit (which may have been lowered since they were stored).
const STORED_TOPIC_LIMITS: TopicLimits = TopicLimits {
    max_len: u16::MAX as usize,
};

/// The bytes of a client key; `None` for an anonymous client (never stored).
pub(super) fn client_key(key: &ClientKey) -> Option<Vec<u8>> {
    match key {
        ClientKey::Device(device) => {
            let mut bytes =
                Vec::with_capacity(2 + device.product_key.len() + device.device_name.len());
            bytes.push(b'd');
            bytes.extend_from_slice(device.product_key.as_bytes());
            bytes.push(0);
            bytes.extend_from_slice(device.device_name.as_bytes());
            Some(bytes)
        }
        ClientKey::Client(id) => {
            let mut bytes = Vec::with_capacity(1 + id.len());
            bytes.push(b'c');
            bytes.extend_from_slice(id.as_bytes());
            Some(bytes)
        }
        ClientKey::Anonymous => None,
    }
}

/// A client key from its bytes.
pub(super) fn decode_client_key(bytes: &[u8]) -> Result<ClientKey, StoreError> {
    let corrupt =
        || StoreError::Corrupt(format!("client key {:?}", String::from_utf8_lossy(bytes)));
    let (tag, rest) = bytes.split_first().ok_or_else(corrupt)?;
    let text = std::str::from_utf8(rest).map_err(|_| corrupt())?;
    match tag {
        b'd' => {
            let (product_key, device_name) = text.split_once('\0').ok_or_else(corrupt)?;
            Ok(ClientKey::Device(DeviceIdentity::new(
                product_key,
                device_name,
            )))
        }
        b'c' => Ok(ClientKey::Client(text.to_owned())),
        _ => Err(corrupt()),
    }
}

/// The bytes of a backlog message (its id is in the key): a session's message record, its
/// generate time as the record's time.
pub(super) fn backlog_message(backlog: &BacklogMessage) -> Vec<u8> {
    message(&StoredMessage {
        topic: backlog.topic.clone(),
        payload: backlog.payload.clone(),
        at: backlog.generate_time,
    })
}

/// A backlog message from its id and bytes.
pub(super) fn decode_backlog_message(
    message_id: u64,
    bytes: &[u8],
) -> Result<BacklogMessage, StoreError> {
    let StoredMessage { topic, payload, at } = decode_message(bytes)?;
    Ok(BacklogMessage {
        message_id,
        topic,
        payload,
        generate_time: at,
    })
}

/// A session as stored.
#[derive(Serialize, Deserialize)]
pub(super) struct SessionJson {
    /// Filters with their granted QoS (0 or 1).
    subscriptions: Vec<(String, u8)>,
    #[serde(default)]
    auto_subscribe: bool,
    #[serde(default)]
    rrpc_ext: bool,
    #[serde(default)]
    suppressed: Vec<String>,
    keep_alive_s: u64,
    offline_since_ms: Option<u64>,
}

/// The value of a session record.
pub(super) fn session(record: &SessionRecord) -> Vec<u8> {
    let json = SessionJson {
        subscriptions: record
            .subscriptions
            .iter()
            .map(|(filter, qos)| (filter.as_str().to_owned(), *qos as u8))
            .collect(),
        auto_subscribe: record.features.auto_subscribe,
        rrpc_ext: record.features.rrpc_ext,
        suppressed: record
            .suppressed
            .iter()
            .map(|filter| filter.as_str().to_owned())
            .collect(),
        keep_alive_s: record.keep_alive.as_secs(),
        offline_since_ms: record.offline_since.map(|at| at.0),
    };
    // A struct of strings and numbers always serialises.
    serde_json::to_vec(&json).unwrap_or_default()
}

/// A session record from its key and value.
pub(super) fn decode_session(key: ClientKey, value: &[u8]) -> Result<SessionRecord, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("session of {key}: {what}"));
    let json: SessionJson =
        serde_json::from_slice(value).map_err(|error| corrupt(&error.to_string()))?;
    let filter = |text: &str| {
        TopicFilter::new(text, &STORED_TOPIC_LIMITS).map_err(|_| corrupt("a topic filter"))
    };
    let subscriptions = json
        .subscriptions
        .iter()
        .map(|(text, qos)| {
            let qos = QoS::try_from(*qos).map_err(|_| corrupt("a QoS"))?;
            Ok((filter(text)?, qos))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let suppressed = json
        .suppressed
        .iter()
        .map(|text| filter(text))
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(SessionRecord {
        key: Arc::new(key),
        subscriptions,
        features: ClientFeatures {
            auto_subscribe: json.auto_subscribe,
            rrpc_ext: json.rrpc_ext,
        },
        suppressed,
        keep_alive: Duration::from_secs(json.keep_alive_s),
        offline_since: json.offline_since_ms.map(UnixMillis),
    })
}

/// A product of the registry as stored.
#[derive(Serialize, Deserialize)]
struct ProductJson {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    #[serde(default)]
    dynamic_registration: bool,
    #[serde(default)]
    categories: Vec<(String, String)>,
    created_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
}

/// The value of a product record (its key is the product key).
pub(super) fn product(record: &ProductRecord) -> Vec<u8> {
    let json = ProductJson {
        name: record.name.clone(),
        secret: record.secret.clone(),
        dynamic_registration: record.dynamic_registration,
        categories: record.categories.clone(),
        created_ms: record.created.0,
        description: record.description.clone(),
    };
    serde_json::to_vec(&json).unwrap_or_default()
}

/// A product record from its key and value.
pub(super) fn decode_product(key: &str, value: &[u8]) -> Result<ProductRecord, StoreError> {
    let json: ProductJson = serde_json::from_slice(value)
        .map_err(|error| StoreError::Corrupt(format!("product {key}: {error}")))?;
    Ok(ProductRecord {
        key: key.to_owned(),
        name: json.name,
        secret: json.secret,
        dynamic_registration: json.dynamic_registration,
        categories: json.categories,
        created: UnixMillis(json.created_ms),
        description: json.description,
    })
}

/// A device of the registry as stored.
#[derive(Serialize, Deserialize)]
struct RegisteredJson {
    secret: String,
    iot_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nickname: Option<String>,
    created_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    activated_ms: Option<u64>,
    #[serde(default)]
    disabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token: Option<String>,
    /// The gateway's product key and device name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gateway: Option<[String; 2]>,
}

/// The value of a registered device's record (its key is the product key and device name).
pub(super) fn registered(device: &RegisteredDevice) -> Vec<u8> {
    let json = RegisteredJson {
        secret: device.secret.clone(),
        iot_id: device.iot_id.clone(),
        nickname: device.nickname.clone(),
        created_ms: device.created.0,
        activated_ms: device.activated.map(|at| at.0),
        disabled: device.disabled,
        token: device.token.clone(),
        gateway: device
            .gateway
            .as_ref()
            .map(|gateway| [gateway.product_key.clone(), gateway.device_name.clone()]),
    };
    serde_json::to_vec(&json).unwrap_or_default()
}

/// A registered device from its key and value.
pub(super) fn decode_registered(
    product_key: &str,
    device_name: &str,
    value: &[u8],
) -> Result<RegisteredDevice, StoreError> {
    let json: RegisteredJson = serde_json::from_slice(value).map_err(|error| {
        StoreError::Corrupt(format!(
            "registered device {product_key}/{device_name}: {error}"
        ))
    })?;
    Ok(RegisteredDevice {
        identity: DeviceIdentity::new(product_key, device_name),
        secret: json.secret,
        iot_id: json.iot_id,
        nickname: json.nickname,
        created: UnixMillis(json.created_ms),
        activated: json.activated_ms.map(UnixMillis),
        disabled: json.disabled,
        token: json.token,
        gateway: json
            .gateway
            .map(|[product_key, device_name]| DeviceIdentity::new(product_key, device_name)),
    })
}

/// The value of a message record.
pub(super) fn message(message: &StoredMessage) -> Vec<u8> {
    let topic = message.topic.as_str().as_bytes();
    let mut bytes = Vec::with_capacity(11 + topic.len() + message.payload.len());
    bytes.push(MESSAGE_V1);
    bytes.extend_from_slice(&message.at.0.to_le_bytes());
    // A topic name is at most 65,535 bytes (MQTT's string length).
    bytes.extend_from_slice(&(topic.len() as u16).to_le_bytes());
    bytes.extend_from_slice(topic);
    bytes.extend_from_slice(&message.payload);
    bytes
}

/// A message from its value.
pub(super) fn decode_message(value: &[u8]) -> Result<StoredMessage, StoreError> {
    let corrupt = || StoreError::Corrupt(format!("a message record of {} bytes", value.len()));
    let (&version, rest) = value.split_first().ok_or_else(corrupt)?;
    if version != MESSAGE_V1 || rest.len() < 10 {
        return Err(corrupt());
    }
    let (at, rest) = rest.split_at(8);
    let (len, rest) = rest.split_at(2);
    let at = u64::from_le_bytes(at.try_into().map_err(|_| corrupt())?);
    let len = usize::from(u16::from_le_bytes(len.try_into().map_err(|_| corrupt())?));
    if rest.len() < len {
        return Err(corrupt());
    }
    let (topic, payload) = rest.split_at(len);
    let topic = TopicName::from_bytes(Bytes::copy_from_slice(topic), &STORED_TOPIC_LIMITS)
        .map_err(|_| corrupt())?;
    Ok(StoredMessage {
        topic,
        payload: Bytes::copy_from_slice(payload),
        at: UnixMillis(at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlog_messages_read_back_as_written_and_truncated_ones_are_refused() {
        let message = BacklogMessage {
            message_id: 42,
            topic: TopicName::new("/as/mqtt/status/pk/dn", &STORED_TOPIC_LIMITS).unwrap(),
            payload: Bytes::from_static(b"\x00{\"status\":\"online\"}"),
            generate_time: UnixMillis(1_700_000_000_123),
        };
        let bytes = backlog_message(&message);
        assert_eq!(decode_backlog_message(42, &bytes).unwrap(), message);
        for cut in [0, 1, 9, 11, 12] {
            assert!(
                decode_backlog_message(42, &bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn records_read_back_as_written() {
        let record = SessionRecord {
            key: Arc::new(ClientKey::Device(DeviceIdentity::new("pk", "dn:1@x"))),
            subscriptions: vec![(
                TopicFilter::new("/pk/dn/user/#", &STORED_TOPIC_LIMITS).unwrap(),
                QoS::AtLeastOnce,
            )],
            features: ClientFeatures {
                auto_subscribe: true,
                rrpc_ext: false,
            },
            suppressed: vec![TopicFilter::new("/sys/#", &STORED_TOPIC_LIMITS).unwrap()],
            keep_alive: Duration::from_secs(60),
            offline_since: Some(UnixMillis(17)),
        };
        let key = client_key(&record.key).unwrap();
        let back = decode_session(decode_client_key(&key).unwrap(), &session(&record)).unwrap();
        assert_eq!(back, record);

        let stored = StoredMessage {
            topic: TopicName::new("/pk/dn/user/get", &STORED_TOPIC_LIMITS).unwrap(),
            payload: Bytes::from_static(b"\x00\xffbinary"),
            at: UnixMillis(1_700_000_000_123),
        };
        assert_eq!(decode_message(&message(&stored)).unwrap(), stored);
        let client = ClientKey::Client("mosquitto-sub".into());
        assert_eq!(
            decode_client_key(&client_key(&client).unwrap()).unwrap(),
            client
        );
    }

    #[test]
    fn a_registered_device_reads_back_with_its_gateway() {
        let device = RegisteredDevice {
            identity: DeviceIdentity::new("a1Sub", "sub-1"),
            secret: "s".into(),
            iot_id: "id".into(),
            nickname: None,
            created: UnixMillis(1),
            activated: Some(UnixMillis(2)),
            disabled: false,
            token: None,
            gateway: Some(DeviceIdentity::new("a1Gw", "gw-1")),
        };
        let back = decode_registered("a1Sub", "sub-1", &registered(&device)).unwrap();
        assert_eq!(back, device);
        // A record written before topologies existed has none.
        let old = br#"{"secret":"s","iot_id":"id","created_ms":1}"#;
        assert_eq!(
            decode_registered("a1Sub", "sub-1", old).unwrap().gateway,
            None
        );
    }

    #[test]
    fn what_cannot_be_read_is_refused_not_guessed() {
        for bad in [
            &b""[..],
            b"\x02",
            b"\x01short",
            b"\x01\0\0\0\0\0\0\0\0\xff\xff/a",
        ] {
            assert!(
                matches!(decode_message(bad), Err(StoreError::Corrupt(_))),
                "{bad:?}"
            );
        }
        for bad in [&b""[..], b"x", b"dno-nul", b"c\xff"] {
            assert!(decode_client_key(bad).is_err(), "{bad:?}");
        }
        assert!(decode_session(ClientKey::Anonymous, b"{}").is_err());
    }
}
