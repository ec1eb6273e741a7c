//! The device against a fake broker on an in-memory transport, scripted with aliot-core's codec.

use alloc::vec;
use alloc::vec::Vec;
use core::cell::Cell;
use core::convert::Infallible;
use core::ops::ControlFlow;

use aliot_auth::{ConnectFields, DeviceSecret, MemoryRegistry, VerifyOptions, verify};
use aliot_core::Instant;
use aliot_core::client::{Connection, DisconnectReason, Event};
use aliot_core::codec::{
    ConnAck, ConnectReturnCode, Decoder, Packet, PubAck, Publish, PublishQos, QoS, SubAck,
    SubAckReturnCode, Utf8Bytes,
};
use aliot_topic::{MessageId, ProductCategories, TopicFilter, TopicLimits, TopicName};
use bytes::{Bytes, BytesMut};
use embedded_io::{ErrorType, Read, ReadReady, Write};

use crate::{Device, DeviceError, platform_config, run};

const PRODUCT_KEY: &str = "a1TestPK001";
const DEVICE_NAME: &str = "dev-001";
const DEVICE_SECRET: &str = "0123456789abcdef0123456789abcdef";
const RRPC_REQUEST: &str = "/sys/a1TestPK001/dev-001/rrpc/request/42";

/// The broker end of an in-memory transport: it decodes what the device writes and answers at
/// once. CONNECT: CONNACK after checking the signature with `aliot_auth::verify`. SUBSCRIBE:
/// SUBACK granting every QoS asked, then an RRPC request (message id 42, "ping"). QoS 1
/// PUBLISH: PUBACK. PINGREQ: PINGRESP, if `answers_pings`.
struct FakeBroker {
    registry: MemoryRegistry,
    answers_pings: bool,
    decoder: Decoder,
    from_device: BytesMut,
    to_device: BytesMut,
    /// Every packet the device sent, in order.
    received: Vec<Packet>,
}

impl FakeBroker {
    fn new(answers_pings: bool) -> Self {
        let mut registry = MemoryRegistry::new();
        registry.add_product(PRODUCT_KEY, ProductCategories::defaults());
        registry
            .add_device(PRODUCT_KEY, DEVICE_NAME, DeviceSecret::new(DEVICE_SECRET))
            .expect("a valid device");
        Self {
            registry,
            answers_pings,
            decoder: Decoder::default(),
            from_device: BytesMut::new(),
            to_device: BytesMut::new(),
            received: Vec::new(),
        }
    }

    fn answer(&mut self, packet: &Packet) {
        let replies: Vec<Packet> = match packet {
            Packet::Connect(connect) => {
                let fields = ConnectFields {
                    client_id: connect.client_id.as_str(),
                    username: connect.username.as_ref().map(Utf8Bytes::as_str),
                    password: connect.password.as_deref(),
                };
                let code = match verify(&fields, &self.registry, &VerifyOptions::default()) {
                    Ok(_) => ConnectReturnCode::Accepted,
                    Err(_) => ConnectReturnCode::NotAuthorized,
                };
                let session_present = false;
                vec![
                    ConnAck {
                        session_present,
                        code,
                    }
                    .into(),
                ]
            }
            Packet::Subscribe(subscribe) => {
                let granted = subscribe.filters.iter();
                let return_codes = granted.map(|(_, qos)| SubAckReturnCode::Success(*qos));
                let packet_id = subscribe.packet_id;
                let return_codes = return_codes.collect();
                let request = Publish {
                    dup: false,
                    qos: PublishQos::AtMostOnce,
                    retain: false,
                    topic: Utf8Bytes::try_from(RRPC_REQUEST).expect("an MQTT string"),
                    payload: Bytes::from_static(b"ping"),
                };
                vec![
                    SubAck {
                        packet_id,
                        return_codes,
                    }
                    .into(),
                    request.into(),
                ]
            }
            Packet::Publish(Publish {
                qos: PublishQos::AtLeastOnce(packet_id),
                ..
            }) => vec![
                PubAck {
                    packet_id: *packet_id,
                }
                .into(),
            ],
            Packet::PingReq if self.answers_pings => vec![Packet::PingResp],
            _ => Vec::new(),
        };
        for reply in replies {
            reply
                .encode(&mut self.to_device)
                .expect("the broker's packets encode");
        }
    }
}

impl ErrorType for FakeBroker {
    type Error = Infallible;
}

impl ReadReady for FakeBroker {
    fn read_ready(&mut self) -> Result<bool, Infallible> {
        Ok(!self.to_device.is_empty())
    }
}

impl Read for FakeBroker {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        let count = buf.len().min(self.to_device.len());
        buf[..count].copy_from_slice(&self.to_device.split_to(count));
        Ok(count)
    }
}

impl Write for FakeBroker {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        self.from_device.extend_from_slice(buf);
        while let Some(packet) = self
            .decoder
            .decode(&mut self.from_device)
            .expect("the device writes whole, well-formed packets")
        {
            self.answer(&packet);
            self.received.push(packet);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}

/// A clock standing at `now`, which fails the test once read more often than any of these
/// tests needs (a loop that never ends).
fn clock<'a>(now: &'a Cell<u64>, reads: &'a Cell<u32>) -> impl FnMut() -> u64 + 'a {
    || {
        reads.set(reads.get() + 1);
        assert!(reads.get() < 10_000, "the device loop does not finish");
        now.get()
    }
}

/// The test device, new, on a fake broker that answers pings, with the clock at `now`.
fn new_device<'a>(
    now: &'a Cell<u64>,
    reads: &'a Cell<u32>,
) -> Device<FakeBroker, impl FnMut() -> u64 + 'a> {
    let config = platform_config(PRODUCT_KEY, DEVICE_NAME, DEVICE_SECRET).expect("a config");
    Device::new(
        FakeBroker::new(true),
        clock(now, reads),
        Connection::new(config),
    )
}

#[test]
fn connects_subscribes_publishes_and_answers_rrpc_over_the_transport() {
    let (now, reads) = (Cell::new(5_000), Cell::new(0));
    let mut device = new_device(&now, &reads);
    let limits = TopicLimits::default();
    let rrpc =
        TopicFilter::new("/sys/a1TestPK001/dev-001/rrpc/request/+", &limits).expect("a filter");
    let subscribe_id = device
        .subscribe(&[(rrpc, QoS::AtMostOnce)])
        .expect("queued");
    let update = TopicName::from_static("/a1TestPK001/dev-001/user/update");
    let report_id = device
        .publish(update, r#"{"t":21}"#, QoS::AtLeastOnce)
        .expect("queued")
        .packet_id()
        .expect("a QoS 1 packet id");

    let mut events = Vec::new();
    run(&mut device, |device, event| {
        if let Event::RrpcRequest {
            message_id,
            payload,
            ..
        } = &event
        {
            let response = [b"pong: ".as_slice(), payload].concat();
            device
                .respond_rrpc(*message_id, response)
                .expect("the request awaits its answer");
        }
        let acknowledged = matches!(event, Event::PublishAcked(id) if id == report_id);
        events.push(event);
        if acknowledged {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .expect("an in-memory transport does not fail");

    assert_eq!(
        events,
        vec![
            Event::Connected {
                session_present: false
            },
            Event::SubAck {
                packet_id: subscribe_id,
                return_codes: vec![SubAckReturnCode::Success(QoS::AtMostOnce)],
            },
            Event::RrpcRequest {
                message_id: MessageId(42),
                payload: Bytes::from_static(b"ping"),
                topic: TopicName::from_static(RRPC_REQUEST),
            },
            Event::PublishAcked(report_id),
        ]
    );
    let (broker, _, connection) = device.into_parts();
    assert_eq!(connection.in_flight_len(), 0);
    let [
        Packet::Connect(connect),
        Packet::Subscribe(subscribe),
        Packet::Publish(report),
        Packet::Publish(response),
    ] = broker.received.as_slice()
    else {
        panic!("the device sent {:?}", broker.received);
    };
    assert_eq!(
        connect.client_id,
        "a1TestPK001.dev-001|securemode=3,signmethod=hmacsha256|"
    );
    assert_eq!(connect.keep_alive, 60);
    let filter = Utf8Bytes::try_from("/sys/a1TestPK001/dev-001/rrpc/request/+").expect("a string");
    assert_eq!(subscribe.filters, vec![(filter, QoS::AtMostOnce)]);
    assert_eq!(report.topic, "/a1TestPK001/dev-001/user/update");
    assert_eq!(report.qos, PublishQos::AtLeastOnce(report_id));
    assert_eq!(&report.payload[..], br#"{"t":21}"#);
    assert_eq!(response.topic, "/sys/a1TestPK001/dev-001/rrpc/response/42");
    assert_eq!(response.qos, PublishQos::AtMostOnce);
    assert_eq!(&response.payload[..], b"pong: ping");
}

#[test]
fn a_new_transport_without_the_session_gets_the_subscriptions_back() {
    let (now, reads) = (Cell::new(5_000), Cell::new(0));
    let mut device = new_device(&now, &reads);
    let rrpc = TopicFilter::new(
        "/sys/a1TestPK001/dev-001/rrpc/request/+",
        &Default::default(),
    )
    .expect("a filter");
    device
        .subscribe(&[(rrpc.clone(), QoS::AtMostOnce)])
        .expect("queued");
    run(&mut device, |_, event| match event {
        Event::SubAck { .. } => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    })
    .expect("an in-memory transport does not fail");

    // The link drops; the firmware opens a new transport to a broker that kept no session
    // (the fake one never does) and hands it the same connection.
    let (_, clock, mut connection) = device.into_parts();
    now.set(65_000);
    connection.handle_transport_closed(Instant::from_millis(now.get()));
    // What the old transport left: the call that came after the SUBACK, then its end.
    let mut left = Vec::new();
    while let Some(event) = connection.poll_event() {
        left.push(event);
    }
    assert!(
        matches!(
            left[..],
            [
                Event::RrpcRequest { .. },
                Event::Disconnected(DisconnectReason::TransportClosed)
            ]
        ),
        "{left:?}"
    );
    let mut device = Device::new(FakeBroker::new(true), clock, connection);
    let mut events = Vec::new();
    run(&mut device, |_, event| {
        let done = matches!(event, Event::RrpcRequest { .. });
        events.push(event);
        if done {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .expect("an in-memory transport does not fail");

    let (broker, _, _) = device.into_parts();
    let [Packet::Connect(_), Packet::Subscribe(subscribe)] = broker.received.as_slice() else {
        panic!("the device sent {:?}, events {events:?}", broker.received);
    };
    let filter = Utf8Bytes::try_from("/sys/a1TestPK001/dev-001/rrpc/request/+").expect("a string");
    assert_eq!(subscribe.filters, vec![(filter, QoS::AtMostOnce)]);
    // Calls reach the device again, and the application was told what was restored.
    assert_eq!(
        events,
        vec![
            Event::Connected {
                session_present: false
            },
            Event::Resubscribed {
                packet_id: subscribe.packet_id,
                results: vec![(rrpc, SubAckReturnCode::Success(QoS::AtMostOnce))],
            },
            Event::RrpcRequest {
                message_id: MessageId(42),
                payload: Bytes::from_static(b"ping"),
                topic: TopicName::from_static(RRPC_REQUEST),
            },
        ]
    );
}

#[test]
fn the_callers_clock_drives_keepalive_and_the_ping_timeout() {
    let (now, reads) = (Cell::new(0), Cell::new(0));
    let config = platform_config(PRODUCT_KEY, DEVICE_NAME, DEVICE_SECRET).expect("a config");
    let mut device = Device::new(
        FakeBroker::new(false),
        clock(&now, &reads),
        Connection::new(config),
    );
    while device.poll().expect("no transport error")
        != Some(Event::Connected {
            session_present: false,
        })
    {}

    now.set(59_999);
    assert_eq!(device.poll().expect("no transport error"), None);
    // Nothing but the CONNECT went out yet: the keepalive period has not passed.
    let sent = &device.transport().received;
    assert!(
        matches!(sent.as_slice(), [Packet::Connect(_)]),
        "sent {sent:?}"
    );
    assert_eq!(device.next_deadline(), Some(Instant::from_millis(60_000)));

    now.set(60_000);
    assert_eq!(device.poll().expect("no transport error"), None);
    assert_eq!(device.transport().received.last(), Some(&Packet::PingReq));

    // No answer within the 10 s ping timeout: the connection is over.
    now.set(70_000);
    assert_eq!(
        device.poll().expect("no transport error"),
        Some(Event::Disconnected(DisconnectReason::KeepaliveTimeout))
    );
}

/// A transport that takes no byte: `write` returns `Ok(0)`.
struct Stalled;

impl ErrorType for Stalled {
    type Error = Infallible;
}

impl ReadReady for Stalled {
    fn read_ready(&mut self) -> Result<bool, Infallible> {
        Ok(false)
    }
}

impl Read for Stalled {
    fn read(&mut self, _: &mut [u8]) -> Result<usize, Infallible> {
        Ok(0)
    }
}

impl Write for Stalled {
    fn write(&mut self, _: &[u8]) -> Result<usize, Infallible> {
        Ok(0)
    }

    fn flush(&mut self) -> Result<(), Infallible> {
        Ok(())
    }
}

#[test]
fn a_transport_that_takes_nothing_ends_the_connection_without_panicking() {
    let (now, reads) = (Cell::new(0), Cell::new(0));
    let config = platform_config(PRODUCT_KEY, DEVICE_NAME, DEVICE_SECRET).expect("a config");
    let mut device = Device::new(Stalled, clock(&now, &reads), Connection::new(config));
    match device.poll() {
        Err(DeviceError::WriteZero { pending }) => assert!(pending > 0, "the CONNECT was pending"),
        other => panic!("expected WriteZero, got {other:?}"),
    }
    assert_eq!(
        device.poll().expect("nothing left to write"),
        Some(Event::Disconnected(DisconnectReason::TransportClosed))
    );
}
