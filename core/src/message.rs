//! An application message as it moves through the broker.

use aliot_topic::TopicName;
use bytes::Bytes;

use crate::codec::{MAX_STRING_LEN, PacketId, Publish, PublishQos, QoS, Utf8Bytes};

/// A message: a validated topic, its payload and the QoS it travels at (0 or 1 in this profile).
///
/// Cloning is cheap: topic and payload are reference-counted slices of the buffer they were
/// read from, so fanning one message out to many subscribers copies no bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Where it was published.
    pub topic: TopicName,
    /// The application payload, untouched.
    pub payload: Bytes,
    /// QoS 0 or 1; a message is delivered at the lower of this and the subscription's QoS.
    pub qos: QoS,
}

impl Message {
    /// A message with the given topic, payload and QoS (QoS 2 is lowered to 1: the profile has no
    /// QoS 2 and delivers at most at QoS 1).
    pub fn new(topic: TopicName, payload: impl Into<Bytes>, qos: QoS) -> Self {
        Message {
            topic,
            payload: payload.into(),
            qos: qos.min(QoS::AtLeastOnce),
        }
    }

    /// The PUBLISH packet that carries this message. `packet_id` is used when the message is
    /// QoS 1 and ignored for QoS 0; a QoS 1 message without one is sent at QoS 0.
    pub(crate) fn to_publish(&self, packet_id: Option<PacketId>, dup: bool) -> Option<Publish> {
        let topic = self.topic.clone().into_bytes();
        // A TopicName is valid UTF-8 without U+0000 (aliot-topic checked both when it was made);
        // only MQTT's string length limit is left to check, so no delivery re-scans the topic.
        if topic.len() > MAX_STRING_LEN {
            return None;
        }
        let topic = Utf8Bytes::from_checked(topic);
        let qos = match (self.qos, packet_id) {
            (QoS::AtMostOnce, _) | (_, None) => PublishQos::AtMostOnce,
            (_, Some(id)) => PublishQos::AtLeastOnce(id),
        };
        let dup = dup && matches!(qos, PublishQos::AtLeastOnce(_));
        Some(Publish {
            dup,
            qos,
            retain: false,
            topic,
            payload: self.payload.clone(),
        })
    }

    /// Size counted against queue limits: topic plus payload.
    pub fn weight(&self) -> usize {
        self.topic.as_bytes().len() + self.payload.len()
    }
}
