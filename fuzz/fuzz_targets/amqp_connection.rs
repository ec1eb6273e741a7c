//! aliot-amqp's consumer connection driven by arbitrary bytes, reads, time, verdicts and sends:
//! it never panics; whatever it writes splits into protocol headers and frames whose
//! performatives read back; `Closed` is its last event, and nothing follows it; it never
//! sends when it reports no credit, and each send uses some; and once closed it has no
//! deadline left.
//!
//! Input layout: one byte (the number of steps, below 64; its top bit gives the client's SASL
//! header first, the next one a whole valid opening up to an attached link with credit, so
//! that runs reach the later states often), a script of two-byte steps (an opcode and its operand),
//! then the bytes the client sends, taken by the read steps.
#![no_main]

use aliot_amqp::connection::{Event, ServerConfig, ServerConnection};
use aliot_amqp::frame::{AMQP_HEADER, FrameKind, SASL_HEADER, split_frame, write_frame};
use aliot_amqp::message::{Message, PropertyValue};
use aliot_amqp::performative::{Attach, Begin, Flow, Open, Performative, Role, Sasl, Terminus};
use aliot_core::Instant;
use libfuzzer_sys::fuzz_target;

/// Checks the server's output: headers and frames, each frame's body readable.
fn check_output(server: &mut ServerConnection) {
    let bytes = server.output().to_vec();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        if rest.starts_with(&SASL_HEADER) || rest.starts_with(&AMQP_HEADER) {
            rest = &rest[8..];
            continue;
        }
        let (frame, used) = split_frame(rest, u32::MAX)
            .expect("the server writes valid frames")
            .expect("the server writes whole frames");
        if !frame.body.is_empty() {
            match frame.kind {
                FrameKind::Amqp => {
                    Performative::read(frame.body).expect("its performatives read back");
                }
                FrameKind::Sasl => {
                    // sasl-mechanisms is the one SASL frame a server writes that `read` skips.
                    let _ = Sasl::read(frame.body);
                }
            }
        }
        rest = &rest[used..];
    }
    // The adapter writes it in pieces.
    let half = bytes.len() / 2;
    server.consume_output(half);
    server.consume_output(bytes.len() - half);
    assert!(server.output().is_empty());
}

/// A client's `sasl-init` (PLAIN).
fn valid_opening_before_verdict() -> Vec<u8> {
    let mut out = Vec::new();
    write_frame(&mut out, FrameKind::Sasl, 0, |e| {
        Sasl::Init {
            mechanism: "PLAIN",
            initial_response: Some(b"\0user\0pass"),
            hostname: None,
        }
        .write(e)
    });
    out
}

/// What a client sends after its login: the AMQP header, `open`, `begin`, a receiver's
/// `attach`, and credit.
fn valid_opening_after_verdict() -> Vec<u8> {
    let mut out = AMQP_HEADER.to_vec();
    let performatives = [
        Performative::Open(Open {
            container_id: "fuzz",
            hostname: None,
            max_frame_size: 512,
            channel_max: 0,
            idle_time_out: Some(10_000),
        }),
        Performative::Begin(Begin {
            remote_channel: None,
            next_outgoing_id: 0,
            incoming_window: 16,
            outgoing_window: 16,
            handle_max: 4,
        }),
        Performative::Attach(Attach {
            name: "r",
            handle: 0,
            role: Role::Receiver,
            snd_settle_mode: 0,
            rcv_settle_mode: 1,
            source: Some(Terminus {
                address: Some("default"),
            }),
            target: None,
            initial_delivery_count: None,
            max_message_size: None,
        }),
        Performative::Flow(Flow {
            next_incoming_id: Some(0),
            incoming_window: 16,
            next_outgoing_id: 0,
            outgoing_window: 16,
            handle: Some(0),
            delivery_count: Some(0),
            link_credit: Some(4),
            available: None,
            drain: false,
            echo: true,
        }),
    ];
    for performative in performatives {
        write_frame(&mut out, FrameKind::Amqp, 0, |e| performative.write(e));
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let steps = usize::from(first % 64);
    let opening = first & 0x40 != 0;
    let Some((script, mut wire)) = rest.split_at_checked(steps * 2) else {
        return;
    };
    let mut now = Instant::ZERO;
    let mut server = ServerConnection::new(ServerConfig::default(), now);
    let mut closed = false;
    let mut tag = 0u64;
    if first >= 128 || opening {
        server.handle_input(now, &SASL_HEADER);
    }
    if opening {
        server.handle_input(now, &valid_opening_before_verdict());
        while server.poll_event().is_some() {}
        server.login_verdict(now, true);
        server.handle_input(now, &valid_opening_after_verdict());
        while server.poll_event().is_some() {}
        check_output(&mut server);
    }
    for step in script.chunks(2) {
        let (op, arg) = (step[0] % 8, step[1]);
        match op {
            0 | 1 => {
                // Reads of 1 to 256 bytes, or of 64 to 16,384.
                let size = if op == 0 {
                    usize::from(arg) + 1
                } else {
                    (usize::from(arg) + 1) * 64
                };
                let (chunk, after) = wire.split_at(size.min(wire.len()));
                wire = after;
                server.handle_input(now, chunk);
            }
            2 => {
                now = now + core::time::Duration::from_millis(u64::from(arg) * 1000);
                server.handle_timeout(now);
            }
            3 => server.login_verdict(now, arg % 2 == 0),
            4 => {
                let before = server.sendable();
                let body = vec![arg; usize::from(arg) * 32];
                let properties = [("topic", PropertyValue::String("/pk/dn/user/update"))];
                let message = Message {
                    message_id: Some("1"),
                    application_properties: &properties,
                    body: &body,
                };
                let sent = server.send(now, tag, &message);
                if before == 0 {
                    assert!(sent.is_err(), "sent without credit");
                }
                if sent.is_ok() {
                    // One credit, and a window slot per frame (more for a large message).
                    assert!(server.sendable() < before);
                }
                tag += 1;
            }
            5 => server.nothing_to_send(now),
            6 => server.refuse_link(now, "amqp:not-found", "no such group"),
            _ => {
                if arg % 4 == 0 {
                    server.handle_eof();
                } else {
                    server.close(now, None);
                }
            }
        }
        while let Some(event) = server.poll_event() {
            assert!(!closed, "an event after Closed: {event:?}");
            if let Event::Closed(_) = event {
                closed = true;
            }
        }
        check_output(&mut server);
        if server.is_closed() {
            assert!(closed, "closed without a Closed event");
            assert_eq!(server.poll_timeout(), None);
        }
        if let Some(at) = server.poll_timeout() {
            assert!(at >= now || !closed);
        }
    }
});
