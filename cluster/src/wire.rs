//! What nodes send each other over NATS: calls to a device, their answers, a session's
//! hand-over, and server-side publishes.
//!
//! Every message is one frame: a 4-byte big-endian length, that many bytes of a JSON header,
//! then the raw bytes the header describes (a payload, or several one after the other). JSON
//! keeps the header readable with `nats sub`; payloads stay binary.

use std::time::Duration;

use aliot_auth::DeviceIdentity;
use aliot_core::Message;
use aliot_core::codec::QoS;
use aliot_core::hub::{DeviceDelivery, InvalidRrpcCall, RrpcOutcome, SessionHandOver};
use aliot_io::broker::RrpcReply;
use aliot_io::broker::cluster::{DeviceAnswer, DeviceCall};
use aliot_services::OtaJob;
use aliot_topic::{MessageId, TopicFilter, TopicLimits, TopicName};
use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A frame that is not one of ours.
#[derive(Debug, thiserror::Error)]
#[error("malformed cluster message: {0}")]
pub struct Malformed(pub String);

fn malformed(what: impl std::fmt::Display) -> Malformed {
    Malformed(what.to_string())
}

/// A request to a node: the device it is about, and what is asked.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Envelope {
    pub(crate) product_key: String,
    pub(crate) device_name: String,
    #[serde(flatten)]
    pub(crate) call: CallHeader,
}

/// What a request asks of the node that owns the device.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "call", rename_all = "snake_case")]
pub(crate) enum CallHeader {
    Publish {
        topic: String,
        qos: u8,
    },
    Rrpc {
        timeout_ms: u64,
        topic: Option<String>,
    },
    SetProperty {
        items: Value,
    },
    InvokeService {
        identifier: String,
        args: Value,
    },
    InvokeServiceSync {
        identifier: String,
        args: Value,
        timeout_ms: u64,
    },
    StartOta {
        job: OtaJob,
    },
    /// The claimer now owns the device: hand its session over (or discard it). The answer is
    /// the hand-over's first part; the rest, if any, waits for [`CallHeader::HandOverPart`].
    HandOver {
        claimer: String,
        discard: bool,
    },
    /// The claimer asks for the part of the hand-over from its message `from` on.
    HandOverPart {
        claimer: String,
        from: usize,
    },
    /// The claimer has every part: the node that handed over forgets them.
    HandOverDone {
        claimer: String,
    },
    /// Is the device's session here? (Asked by a node with a copy of it: back from a crash,
    /// or from a partition.)
    Holds,
    /// A node back from a crash gives the session it kept (a hand-over frame follows): add it
    /// to the one here. A session too large for one frame comes in several: the first adds
    /// the subscriptions, each next one (`part`) only messages.
    Adopt {
        from: String,
        #[serde(default)]
        part: bool,
    },
}

/// An answer on a request's reply subject.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub(crate) enum AnswerHeader {
    Delivery {
        delivery: String,
    },
    Downlink {
        message_id: u64,
        delivery: String,
    },
    /// The payload follows for `SUCCESS`.
    Rrpc {
        message_id: u64,
        outcome: String,
    },
    RrpcRefused {
        timeout_ms: Option<u64>,
        topic: Option<String>,
    },
    /// Subscriptions, then each message's topic and payload length (payloads follow in order);
    /// `more` messages follow in other parts.
    HandOver {
        subscriptions: Vec<(String, u8)>,
        messages: Vec<(String, usize)>,
        #[serde(default)]
        more: usize,
    },
    /// Done: this many sessions are here (`Holds`: 1 or 0), or this many messages were
    /// adopted (`Adopt`).
    Done {
        taken: usize,
    },
    /// The node does not hold the device's session (the caller's idea of its owner is old).
    NotHere,
    /// The node could not answer (its broker stopped, the call was malformed).
    Failed {
        reason: String,
    },
}

/// A server-side publish made on another node.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct PublishHeader {
    pub(crate) node: String,
    pub(crate) topic: String,
    pub(crate) qos: u8,
}

/// Writes a frame: the header, then `bodies` one after the other.
pub(crate) fn frame<H: Serialize>(header: &H, bodies: &[&[u8]]) -> Bytes {
    let json = serde_json::to_vec(header).unwrap_or_default();
    let len: usize = bodies.iter().map(|body| body.len()).sum();
    let mut out = BytesMut::with_capacity(4 + json.len() + len);
    out.put_u32(json.len() as u32);
    out.put_slice(&json);
    for body in bodies {
        out.put_slice(body);
    }
    out.freeze()
}

/// Reads a frame: its header and what follows it.
pub(crate) fn unframe<H: for<'de> Deserialize<'de>>(
    bytes: &Bytes,
) -> Result<(H, Bytes), Malformed> {
    let len_bytes: [u8; 4] = bytes
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| malformed("shorter than its length"))?;
    let len = u32::from_be_bytes(len_bytes) as usize;
    let json = bytes
        .get(4..4 + len)
        .ok_or_else(|| malformed("header longer than the message"))?;
    let header = serde_json::from_slice(json).map_err(malformed)?;
    Ok((header, bytes.slice(4 + len..)))
}

pub(crate) fn qos_byte(qos: QoS) -> u8 {
    qos as u8
}

pub(crate) fn qos_from(byte: u8) -> Result<QoS, Malformed> {
    match byte {
        0 => Ok(QoS::AtMostOnce),
        1 => Ok(QoS::AtLeastOnce),
        other => Err(malformed(format_args!("QoS {other}"))),
    }
}

/// Topics between nodes were checked where they came in; only MQTT's own limit applies here.
const WIRE_LIMITS: TopicLimits = TopicLimits {
    max_len: u16::MAX as usize,
};

pub(crate) fn topic(name: &str) -> Result<TopicName, Malformed> {
    TopicName::new(name, &WIRE_LIMITS).map_err(|e| malformed(format_args!("topic {name:?}: {e}")))
}

fn delivery_name(delivery: DeviceDelivery) -> &'static str {
    match delivery {
        DeviceDelivery::Sent => "sent",
        DeviceDelivery::Queued => "queued",
        DeviceDelivery::Offline => "offline",
        DeviceDelivery::NotSubscribed => "not_subscribed",
        DeviceDelivery::Denied => "denied",
    }
}

fn delivery_from(name: &str) -> Result<DeviceDelivery, Malformed> {
    Ok(match name {
        "sent" => DeviceDelivery::Sent,
        "queued" => DeviceDelivery::Queued,
        "offline" => DeviceDelivery::Offline,
        "not_subscribed" => DeviceDelivery::NotSubscribed,
        "denied" => DeviceDelivery::Denied,
        other => return Err(malformed(format_args!("delivery {other:?}"))),
    })
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A request frame to the node that owns `device`.
pub(crate) fn request(device: &DeviceIdentity, call: CallHeader, bodies: &[&[u8]]) -> Bytes {
    let envelope = Envelope {
        product_key: device.product_key.clone(),
        device_name: device.device_name.clone(),
        call,
    };
    frame(&envelope, bodies)
}

/// A call to `device`, as a request frame.
pub(crate) fn encode_call(device: &DeviceIdentity, call: &DeviceCall) -> Bytes {
    match call {
        DeviceCall::Publish {
            topic,
            payload,
            qos,
        } => request(
            device,
            CallHeader::Publish {
                topic: topic.as_str().to_owned(),
                qos: qos_byte(*qos),
            },
            &[payload],
        ),
        DeviceCall::Rrpc {
            payload,
            timeout,
            topic,
        } => request(
            device,
            CallHeader::Rrpc {
                timeout_ms: millis(*timeout),
                topic: topic.as_ref().map(|t| t.as_str().to_owned()),
            },
            &[payload],
        ),
        DeviceCall::SetProperty { items } => request(
            device,
            CallHeader::SetProperty {
                items: items.clone(),
            },
            &[],
        ),
        DeviceCall::InvokeService { identifier, args } => request(
            device,
            CallHeader::InvokeService {
                identifier: identifier.clone(),
                args: args.clone(),
            },
            &[],
        ),
        DeviceCall::InvokeServiceSync {
            identifier,
            args,
            timeout,
        } => request(
            device,
            CallHeader::InvokeServiceSync {
                identifier: identifier.clone(),
                args: args.clone(),
                timeout_ms: millis(*timeout),
            },
            &[],
        ),
        DeviceCall::StartOta { job } => {
            request(device, CallHeader::StartOta { job: job.clone() }, &[])
        }
    }
}

/// What a request frame is about.
pub(crate) struct Request {
    /// The device.
    pub(crate) device: DeviceIdentity,
    /// The call it carries, or a request about the session itself (`Err`, with its header and
    /// what follows it).
    pub(crate) call: Result<DeviceCall, (CallHeader, Bytes)>,
}

/// A request frame, as the device and call it carries.
pub(crate) fn decode_call(bytes: &Bytes) -> Result<Request, Malformed> {
    let (envelope, body): (Envelope, Bytes) = unframe(bytes)?;
    let device = DeviceIdentity::new(envelope.product_key, envelope.device_name);
    let call = match envelope.call {
        CallHeader::Publish { topic: name, qos } => DeviceCall::Publish {
            topic: topic(&name)?,
            payload: body,
            qos: qos_from(qos)?,
        },
        CallHeader::Rrpc {
            timeout_ms,
            topic: name,
        } => DeviceCall::Rrpc {
            payload: body,
            timeout: Duration::from_millis(timeout_ms),
            topic: name.as_deref().map(topic).transpose()?,
        },
        CallHeader::SetProperty { items } => DeviceCall::SetProperty { items },
        CallHeader::InvokeService { identifier, args } => {
            DeviceCall::InvokeService { identifier, args }
        }
        CallHeader::InvokeServiceSync {
            identifier,
            args,
            timeout_ms,
        } => DeviceCall::InvokeServiceSync {
            identifier,
            args,
            timeout: Duration::from_millis(timeout_ms),
        },
        CallHeader::StartOta { job } => DeviceCall::StartOta { job },
        about_session @ (CallHeader::HandOver { .. }
        | CallHeader::HandOverPart { .. }
        | CallHeader::HandOverDone { .. }
        | CallHeader::Holds
        | CallHeader::Adopt { .. }) => {
            return Ok(Request {
                device,
                call: Err((about_session, body)),
            });
        }
    };
    Ok(Request {
        device,
        call: Ok(call),
    })
}

/// An answer, as a reply frame.
pub(crate) fn encode_answer(answer: &DeviceAnswer) -> Bytes {
    match answer {
        DeviceAnswer::Delivery(delivery) => frame(
            &AnswerHeader::Delivery {
                delivery: delivery_name(*delivery).into(),
            },
            &[],
        ),
        DeviceAnswer::Downlink(id, delivery) => frame(
            &AnswerHeader::Downlink {
                message_id: id.0,
                delivery: delivery_name(*delivery).into(),
            },
            &[],
        ),
        DeviceAnswer::Rrpc(Ok(reply)) => {
            let payload: &[u8] = match &reply.outcome {
                RrpcOutcome::Success(payload) => payload,
                _ => &[],
            };
            frame(
                &AnswerHeader::Rrpc {
                    message_id: reply.message_id.0,
                    outcome: reply.outcome.code().into(),
                },
                &[payload],
            )
        }
        DeviceAnswer::Rrpc(Err(refused)) => {
            let (timeout_ms, topic) = match refused {
                InvalidRrpcCall::InvalidTimeout(ms) => (Some(*ms), None),
                InvalidRrpcCall::NotDeviceTopic(topic) => (None, Some(topic.clone())),
                InvalidRrpcCall::InvalidTopic => (None, None),
            };
            frame(&AnswerHeader::RrpcRefused { timeout_ms, topic }, &[])
        }
    }
}

/// A reply frame, as the answer it carries (`None`: the node does not hold the device).
pub(crate) fn decode_answer(bytes: &Bytes) -> Result<Option<DeviceAnswer>, Malformed> {
    let (header, body): (AnswerHeader, Bytes) = unframe(bytes)?;
    Ok(Some(match header {
        AnswerHeader::Delivery { delivery } => DeviceAnswer::Delivery(delivery_from(&delivery)?),
        AnswerHeader::Downlink {
            message_id,
            delivery,
        } => DeviceAnswer::Downlink(MessageId(message_id), delivery_from(&delivery)?),
        AnswerHeader::Rrpc {
            message_id,
            outcome,
        } => {
            let outcome = match outcome.as_str() {
                "SUCCESS" => RrpcOutcome::Success(body),
                "TIMEOUT" => RrpcOutcome::Timeout,
                "OFFLINE" => RrpcOutcome::Offline,
                "HALFCONN" => RrpcOutcome::HalfConn,
                "UNKNOWN" => RrpcOutcome::Unknown,
                other => return Err(malformed(format_args!("RRPC outcome {other:?}"))),
            };
            DeviceAnswer::Rrpc(Ok(RrpcReply {
                message_id: MessageId(message_id),
                outcome,
            }))
        }
        AnswerHeader::RrpcRefused { timeout_ms, topic } => {
            DeviceAnswer::Rrpc(Err(match (timeout_ms, topic) {
                (Some(ms), _) => InvalidRrpcCall::InvalidTimeout(ms),
                (None, Some(topic)) => InvalidRrpcCall::NotDeviceTopic(topic),
                (None, None) => InvalidRrpcCall::InvalidTopic,
            }))
        }
        AnswerHeader::Failed { reason } => return Err(Malformed(reason)),
        AnswerHeader::NotHere => return Ok(None),
        AnswerHeader::HandOver { .. } | AnswerHeader::Done { .. } => {
            return Err(malformed("not the answer to a call"));
        }
    }))
}

/// The most topic and payload bytes one part of a hand-over carries (but a single larger
/// message, which goes alone): well under NATS's default `max_payload` (1 MiB).
pub(crate) const HAND_OVER_PART_BYTES: usize = 256 * 1024;

/// How many of `messages`, from the first, go in one part of a hand-over: as many as fit in
/// [`HAND_OVER_PART_BYTES`], and at least one.
pub(crate) fn part_len(messages: &[Message]) -> usize {
    let mut bytes = 0;
    let fitting = messages
        .iter()
        .take_while(|message| {
            bytes += message.topic.len() + message.payload.len();
            bytes <= HAND_OVER_PART_BYTES
        })
        .count();
    fitting.max(1).min(messages.len())
}

/// A session's hand-over in one frame (nothing to hand over: no subscriptions, no messages).
#[cfg(test)]
pub(crate) fn encode_hand_over(handed: Option<&SessionHandOver>) -> Bytes {
    match handed {
        Some(handed) => encode_hand_over_part(&handed.subscriptions, &handed.messages, 0),
        None => encode_hand_over_part(&[], &[], 0),
    }
}

/// One part of a session's hand-over: subscriptions (the first part's), messages, and how
/// many messages follow in later parts.
pub(crate) fn encode_hand_over_part(
    subscriptions: &[(TopicFilter, QoS)],
    messages: &[Message],
    more: usize,
) -> Bytes {
    let header = AnswerHeader::HandOver {
        subscriptions: subscriptions
            .iter()
            .map(|(filter, qos)| (filter.as_str().to_owned(), qos_byte(*qos)))
            .collect(),
        messages: messages
            .iter()
            .map(|m| (m.topic.as_str().to_owned(), m.payload.len()))
            .collect(),
        more,
    };
    let bodies: Vec<&[u8]> = messages.iter().map(|m| &m.payload[..]).collect();
    frame(&header, &bodies)
}

/// A hand-over frame, as the part of the session it carries, and how many messages follow.
pub(crate) fn decode_hand_over(bytes: &Bytes) -> Result<(SessionHandOver, usize), Malformed> {
    let (header, mut body): (AnswerHeader, Bytes) = unframe(bytes)?;
    let AnswerHeader::HandOver {
        subscriptions,
        messages,
        more,
    } = header
    else {
        return Err(malformed("not a hand-over"));
    };
    let subscriptions = subscriptions
        .into_iter()
        .map(|(filter, qos)| {
            let filter = TopicFilter::new(&filter, &WIRE_LIMITS)
                .map_err(|e| malformed(format_args!("filter {filter:?}: {e}")))?;
            Ok((filter, qos_from(qos)?))
        })
        .collect::<Result<Vec<_>, Malformed>>()?;
    let mut moved = Vec::with_capacity(messages.len());
    for (name, len) in messages {
        if len > body.len() {
            return Err(malformed("payloads shorter than their lengths"));
        }
        let payload = body.split_to(len);
        moved.push(Message::new(topic(&name)?, payload, QoS::AtLeastOnce));
    }
    let handed = SessionHandOver {
        subscriptions,
        messages: moved,
    };
    Ok((handed, more))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_and_answers_survive_the_wire() {
        let calls = [
            DeviceCall::Publish {
                topic: topic("/a1/dev/user/get").unwrap(),
                payload: Bytes::from_static(b"\x00\xffbinary"),
                qos: QoS::AtLeastOnce,
            },
            DeviceCall::Rrpc {
                payload: Bytes::from_static(b"ping"),
                timeout: Duration::from_millis(5000),
                topic: None,
            },
            DeviceCall::InvokeServiceSync {
                identifier: "reboot".into(),
                args: serde_json::json!({"delay": 3}),
                timeout: Duration::from_secs(2),
            },
        ];
        let device = DeviceIdentity::new("a1", "dev.1@x");
        for call in calls {
            let request = decode_call(&encode_call(&device, &call)).unwrap();
            assert_eq!(request.device, device);
            assert_eq!(request.call.unwrap(), call);
        }
        let answers = [
            DeviceAnswer::Delivery(DeviceDelivery::NotSubscribed),
            DeviceAnswer::Downlink(MessageId(77), DeviceDelivery::Queued),
            DeviceAnswer::Rrpc(Ok(RrpcReply {
                message_id: MessageId(9),
                outcome: RrpcOutcome::Success(Bytes::from_static(b"pong")),
            })),
            DeviceAnswer::Rrpc(Ok(RrpcReply {
                message_id: MessageId(10),
                outcome: RrpcOutcome::Offline,
            })),
            DeviceAnswer::Rrpc(Err(InvalidRrpcCall::InvalidTimeout(9000))),
        ];
        for answer in answers {
            assert_eq!(
                decode_answer(&encode_answer(&answer)).unwrap(),
                Some(answer)
            );
        }
    }

    #[test]
    fn a_hand_over_keeps_its_messages_in_order() {
        let handed = SessionHandOver {
            subscriptions: vec![(
                TopicFilter::new("/a1/dev/user/#", &WIRE_LIMITS).unwrap(),
                QoS::AtLeastOnce,
            )],
            messages: vec![
                Message::new(
                    topic("/a1/dev/user/a").unwrap(),
                    Bytes::from_static(b"first"),
                    QoS::AtLeastOnce,
                ),
                Message::new(
                    topic("/a1/dev/user/b").unwrap(),
                    Bytes::new(),
                    QoS::AtLeastOnce,
                ),
                Message::new(
                    topic("/a1/dev/user/c").unwrap(),
                    Bytes::from_static(b"third"),
                    QoS::AtLeastOnce,
                ),
            ],
        };
        let decoded = decode_hand_over(&encode_hand_over(Some(&handed))).unwrap();
        assert_eq!(decoded, (handed.clone(), 0));
        assert_eq!(
            decode_hand_over(&encode_hand_over(None)).unwrap(),
            (SessionHandOver::default(), 0)
        );
        // A part without subscriptions, with more to come.
        let part = encode_hand_over_part(&[], &handed.messages[1..], 7);
        let (decoded, more) = decode_hand_over(&part).unwrap();
        assert_eq!((decoded.messages, more), (handed.messages[1..].to_vec(), 7));
    }

    #[test]
    fn a_large_hand_over_is_cut_in_parts_under_the_limit() {
        let big = |n: usize| {
            Message::new(
                topic("/a1/dev/user/get").unwrap(),
                Bytes::from(vec![b'x'; n]),
                QoS::AtLeastOnce,
            )
        };
        let messages: Vec<Message> = (0..10).map(|_| big(100 * 1024)).collect();
        // 100 KiB messages: two fit in 256 KiB.
        assert_eq!(part_len(&messages), 2);
        // A message larger than a part goes alone.
        assert_eq!(part_len(&[big(HAND_OVER_PART_BYTES * 2), big(1)]), 1);
        assert_eq!(part_len(&[]), 0);
        let small: Vec<Message> = (0..5).map(|_| big(10)).collect();
        assert_eq!(part_len(&small), 5);
    }

    #[test]
    fn garbage_is_refused_not_panicked_on() {
        for bytes in [
            &b""[..],
            b"\x00\x00",
            b"\x00\x00\x00\x09{}",
            b"\xff\xff\xff\xffx",
        ] {
            let bytes = Bytes::copy_from_slice(bytes);
            assert!(decode_call(&bytes).is_err());
            assert!(decode_answer(&bytes).is_err());
            assert!(decode_hand_over(&bytes).is_err());
        }
        // Lengths that promise more payload than there is.
        let lying = frame(
            &AnswerHeader::HandOver {
                subscriptions: Vec::new(),
                messages: vec![("/a/b".into(), 10)],
                more: 0,
            },
            &[b"short"],
        );
        assert!(decode_hand_over(&lying).is_err());
    }
}
