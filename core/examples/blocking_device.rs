//! A platform device on a blocking `std::net::TcpStream`, no async runtime: the sans-IO
//! `client::Connection` driven by a hand-written loop, with the socket's read timeout as the
//! only timer. It subscribes, publishes at QoS 1 and answers RRPC calls.
//!
//! ```text
//! cargo run -p aliot-core --example blocking_device -- [ADDR] [PRODUCT_KEY] [DEVICE_NAME] [DEVICE_SECRET] [--check]
//! ```
//!
//! Defaults: `aliot serve`'s demo device `dev-001` on 127.0.0.1:1883. With `--check` it exits 0
//! once it has connected, seen its SUBACK, had its QoS 1 PUBLISH acknowledged and answered one
//! RRPC call; without it, it runs until the connection ends.
use std::io::ErrorKind::{Interrupted, TimedOut, WouldBlock};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime};

use aliot_auth::{DeviceIdentity, DeviceSecret, SecureMode, SignRequest};
use aliot_core::Instant;
use aliot_core::client::{ClientConfig, Connection, Credentials, Event};
use aliot_core::codec::{QoS, SubAckReturnCode};
use aliot_topic::{TopicFilter, TopicLimits, TopicName};
use bytes::BytesMut;

/// The demo's first device (public credentials of `aliot serve` without a configuration).
const DEMO: [&str; 4] = [
    "127.0.0.1:1883",
    "a1DemoProd01",
    "dev-001",
    "DemoSecret0001aliotNotForProduct",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let check = args.iter().any(|arg| arg == "--check");
    let mut positional = args.iter().filter(|arg| *arg != "--check");
    let [addr, product_key, device_name, secret] =
        DEMO.map(|default| positional.next().map_or(default, String::as_str));

    // Sign the CONNECT with the wall clock's milliseconds as the timestamp.
    let identity = DeviceIdentity::new(product_key, device_name);
    let unix_ms = SystemTime::UNIX_EPOCH.elapsed()?.as_millis();
    let signed = SignRequest::new(&identity, &DeviceSecret::new(secret), SecureMode::Tcp)
        .timestamp(unix_ms.to_string())
        .sign()?;
    let config = ClientConfig::new(Credentials::try_from(signed)?).with_identity(identity);
    let mut conn = Connection::new(config);

    // The connection's clock: milliseconds since the program started.
    let start = std::time::Instant::now();
    let now =
        || Instant::from_millis(u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX));

    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    conn.connect(now());
    println!("{device_name}: TCP to {addr} up, CONNECT sent");

    // Commands given before CONNACK wait for it, in order.
    let limits = TopicLimits::default();
    let own = format!("/{product_key}/{device_name}");
    let get = TopicFilter::new(&format!("{own}/user/get"), &limits)?;
    let rrpc = TopicFilter::new(&format!("/sys{own}/rrpc/request/+"), &limits)?;
    let filters = [(get, QoS::AtLeastOnce), (rrpc, QoS::AtMostOnce)];
    let subscribe_id = conn.subscribe(&filters, now())?;
    let update = TopicName::new(&format!("{own}/user/update"), &limits)?;
    let publish_id = conn.publish(update, r#"{"temperature":21.5}"#, QoS::AtLeastOnce, now())?;

    let (mut connected, mut subscribed, mut acknowledged, mut answered) =
        (false, false, false, false);
    let mut out = BytesMut::new();
    let mut chunk = [0_u8; 4096];
    loop {
        // Events first: taking an incoming QoS 1 message queues its PUBACK.
        while let Some(event) = conn.poll_event() {
            match event {
                Event::Connected { session_present } => {
                    connected = true;
                    println!("{device_name}: connected (session present: {session_present})");
                }
                Event::SubAck {
                    packet_id,
                    return_codes,
                } if packet_id == subscribe_id => {
                    if return_codes.contains(&SubAckReturnCode::Failure) {
                        return Err(format!("subscription refused: {return_codes:?}").into());
                    }
                    subscribed = true;
                    println!("{device_name}: SUBACK {return_codes:?}");
                }
                Event::PublishAcked(packet_id) if Some(packet_id) == publish_id.packet_id() => {
                    acknowledged = true;
                    println!("{device_name}: PUBACK for packet {}", packet_id.get());
                }
                Event::RrpcRequest {
                    message_id,
                    payload,
                    ..
                } => {
                    let response = [b"pong: ".as_slice(), &payload].concat();
                    conn.respond_rrpc(message_id, response, now())?;
                    answered = true;
                    println!("{device_name}: answered RRPC {message_id} ({payload:?})");
                }
                Event::Disconnected(reason) => return Err(format!("disconnected: {reason}").into()),
                other => println!("{device_name}: {other:?}"), // messages on user/get too
            }
        }
        let passed = check && connected && subscribed && acknowledged && answered;
        if passed {
            conn.disconnect(now()); // DISCONNECT goes out with the rest
        }
        // Then write everything the connection has for the broker.
        while conn.poll_transmit(&mut out) {
            stream.write_all(&out)?;
            out.clear();
        }
        if passed {
            println!("{device_name}: check passed: connected, SUBACK, PUBACK, RRPC answered");
            return Ok(());
        }
        // Then block on the socket until bytes arrive or the next deadline passes.
        let wait = conn.poll_timeout().map(|deadline| deadline - now());
        // A zero read timeout is refused by std: wait at least a millisecond.
        stream.set_read_timeout(wait.map(|wait| wait.max(Duration::from_millis(1))))?;
        match stream.read(&mut chunk) {
            Ok(0) => conn.handle_transport_closed(now()),
            Ok(read) => conn.handle_input(now(), chunk.get(..read).unwrap_or_default()),
            // The deadline passed (or a signal came): `handle_timeout` below.
            Err(error) if matches!(error.kind(), WouldBlock | TimedOut | Interrupted) => {}
            Err(error) => {
                eprintln!("{device_name}: read failed: {error}");
                conn.handle_transport_closed(now());
            }
        }
        conn.handle_timeout(now());
    }
}
