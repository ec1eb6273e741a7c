//! The sans-IO protocol core of aliot.
//!
//! `aliot-core` speaks the MQTT 3.1/3.1.1 subset of the platform profile with no sockets,
//! no clock and no threads: bytes, commands and the current time go in; bytes, events and the
//! next deadline come out. It sits between the rule crates ([`aliot_topic`], [`aliot_auth`])
//! and the runtime adapters (`aliot-tokio`, `aliot-smol`, or a hand-written loop on bare metal).
//!
//! - [`client`]: the device side of one connection ([`client::Connection`]).
//! - [`codec`]: streaming, zero-copy decoding and encoding of every packet of the subset.
//! - [`time`]: [`Instant`], time as a value passed in by the caller.
//! - [`authenticator`]: who a CONNECT is ([`PlatformAuthenticator`], open mode).
//! - [`server`]: the platform side of one device connection.
//! - [`hub`]: the broker's shared state: sessions, routing, takeover, offline queues, RRPC.
//! - [`message`]: [`Message`], an application message on its way through the broker.
#![no_std]
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

extern crate alloc;

pub mod authenticator;
pub mod client;
pub mod codec;
pub mod hub;
pub mod message;
pub mod registration;
pub mod server;
pub mod time;

pub use authenticator::{
    AuthContext, Authenticated, Authenticator, ClientFeatures, ClientKey, PlatformAuthenticator,
    Refusal, RefusalReason,
};
pub use message::Message;
pub use time::Instant;
