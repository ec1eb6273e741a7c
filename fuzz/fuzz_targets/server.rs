//! Arbitrary bytes, in arbitrary chunks and at arbitrary times, into one platform-side
//! connection: it must never panic, and what it keeps for the device stays bounded.
#![no_main]

use std::sync::Arc;
use std::time::Duration;

use aliot_auth::{DeviceIdentity, DeviceSecret, MemoryRegistry, RegistrationRefused};
use aliot_core::registration::RegistrationGrant;
use aliot_core::server::{Command, Connection, Delivery, Event, ServerConfig};
use aliot_core::{AuthContext, ClientKey, Instant, PlatformAuthenticator, Refusal};
use aliot_services::gateway::GatewayOp;
use aliot_topic::{Acl, ProductCategories};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

const MAX_PACKET: usize = 2048;
const MAX_PENDING: usize = 8192;

/// A valid MQTT 3.1.1 CONNECT (client id "fuzz", clean session, keepalive 60) for open mode,
/// so that the fuzzer spends its time past the handshake.
const OPEN_CONNECT: [u8; 18] = [
    0x10, 0x10, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x04, b'f', b'u',
    b'z', b'z',
];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut registry = MemoryRegistry::new();
    registry.add_product("a1Prod", ProductCategories::defaults());
    registry
        .add_device("a1Prod", "dev", DeviceSecret::new("secret"))
        .unwrap();
    let auth = Arc::new(PlatformAuthenticator::new(registry).with_open_mode(mode & 1 == 1));
    let config = ServerConfig {
        max_packet_size: MAX_PACKET,
        max_pending_output: MAX_PENDING,
        ..ServerConfig::default()
    };
    let mut now = Instant::ZERO;
    // Over TLS, so that a registration CONNECT is answered and its state reached; for a
    // third of the input lengths, TLS-PSK that proved the registered device, so that the
    // rule "the CONNECT is the handshake's device" is reached too.
    let psk_device = (rest.len() % 3 == 0).then(|| Arc::new(DeviceIdentity::new("a1Prod", "dev")));
    let context = AuthContext {
        wall_clock_ms: None,
        tls: true,
        client_ip: None,
        psk_device,
    };
    let mut conn = Connection::new(config, auth, context, now);

    let mut input = Vec::with_capacity(rest.len() + OPEN_CONNECT.len());
    if mode & 2 == 2 {
        input.extend_from_slice(&OPEN_CONNECT);
    }
    input.extend_from_slice(rest);
    let chunk = usize::from(mode >> 2) + 1;
    let mut written = BytesMut::new();
    let mut closed_events = 0;
    for piece in input.chunks(chunk) {
        now = now + Duration::from_millis(u64::from(piece[0]) * 50);
        conn.handle_timeout(now);
        if !conn.wants_input() {
            // The socket drained what was pending, as an adapter would wait for it to.
            conn.poll_transmit(&mut written);
            conn.handle_written(written.len());
            written.clear();
        }
        conn.handle_input(now, piece);
        while let Some(event) = conn.poll_event() {
            match event {
                // The session opens, and the connection carries two sub-devices, as a
                // gateway's would: every topic the device sends is also looked up among them.
                Event::SessionRequested(_) => {
                    conn.handle_command(
                        now,
                        Command::SessionOpened {
                            session_present: false,
                        },
                    );
                    for name in ["sub-1", "sub-2"] {
                        conn.handle_command(
                            now,
                            Command::SubDeviceOnline {
                                key: Arc::new(ClientKey::Device(DeviceIdentity::new(
                                    "a1Prod", name,
                                ))),
                                acl: Acl::for_device(
                                    "a1Prod",
                                    name,
                                    &ProductCategories::defaults(),
                                ),
                            },
                        );
                    }
                }
                // A gateway logs a sub-device out: the connection stops carrying it.
                Event::GatewayRequest { request, .. } => {
                    if let Ok(GatewayOp::Logout(sub)) = request.op {
                        conn.handle_command(
                            now,
                            Command::SubDeviceOffline(Arc::new(ClientKey::Device(sub))),
                        );
                    }
                }
                // Echo accepted messages back, to exercise the outbound path too, and let a
                // QoS 1 one's PUBACK go as the hub would.
                Event::Publish { message, packet_id } => {
                    conn.handle_command(
                        now,
                        Command::Deliver(Delivery {
                            message,
                            packet_id: None,
                            dup: false,
                        }),
                    );
                    if let Some(packet_id) = packet_id {
                        conn.handle_command(now, Command::AckPublish(packet_id));
                    }
                }
                // A registration is granted when its proof is the product secret's.
                Event::RegistrationRequested(request) => {
                    let command = match request.sign_matches(b"product-secret") {
                        true => Command::Registered(RegistrationGrant::secret(
                            &request.identity,
                            "granted",
                        )),
                        false => {
                            Command::Refuse(Refusal::registration(RegistrationRefused::BadSign))
                        }
                    };
                    conn.handle_command(now, command);
                }
                Event::Closed(_) => closed_events += 1,
                _ => {}
            }
        }
        // Output beyond the limit is only what this one chunk provoked.
        assert!(conn.pending_output() <= MAX_PENDING + 4 * piece.len() + MAX_PACKET + 64);
        assert!(closed_events <= 1, "a connection closes once");
        if conn.is_closed() {
            assert_eq!(closed_events, 1, "a close always comes with its reason");
            break;
        }
    }
});
