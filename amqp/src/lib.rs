//! AMQP 1.0 on the wire, for the broker's server-side subscription.
//!
//! `aliot-amqp` is the protocol side of the AMQP 1.0 endpoint that business servers consume
//! device messages from (`PLATFORM-PROTOCOLS.md` §8): the type system ([`codec`]), framing
//! ([`frame`]), the performatives of the transport and SASL layers ([`performative`]), the
//! messages a consumer receives ([`message`]), and one consumer's connection as a state
//! machine ([`connection::ServerConnection`]: SASL PLAIN, one session, one link on which the
//! server sends, credit, dispositions, deadlines). `aliot-tokio`'s AMQP listener drives it.
//! Like `aliot-core`, it is `no_std` + `alloc` and sans-IO: bytes and time go in, bytes and
//! events come out, and it never reads a socket or a clock. Reading never panics, whatever
//! the bytes; the readers and the state machine are fuzzed (`fuzz/fuzz_targets/amqp_*.rs`).
//!
//! ```
//! use aliot_amqp::codec::Encoder;
//! use aliot_amqp::frame::{split_frame, write_frame, FrameKind};
//! use aliot_amqp::performative::{Performative, Role, Disposition, DeliveryState};
//!
//! // A consumer accepts deliveries 0 to 9 at once, in one frame on channel 0.
//! let accepted = Performative::Disposition(Disposition {
//!     role: Role::Receiver,
//!     first: 0,
//!     last: Some(9),
//!     settled: true,
//!     state: Some(DeliveryState::Accepted),
//! });
//! let mut wire = Vec::new();
//! write_frame(&mut wire, FrameKind::Amqp, 0, |encoder| accepted.write(encoder));
//!
//! let (frame, used) = split_frame(&wire, 65_536).unwrap().unwrap();
//! assert_eq!(used, wire.len());
//! assert_eq!(Performative::read(frame.body).unwrap().0, accepted);
//! ```

#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod codec;
pub mod connection;
pub mod frame;
pub mod message;
pub mod performative;
