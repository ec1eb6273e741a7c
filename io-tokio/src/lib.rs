//! aliot on tokio.
//!
//! `aliot-tokio` drives the sans-IO state machines of `aliot-core` over tokio: the device
//! client, the broker server (with its HTTP API) and the `aliot` command. It holds no protocol
//! logic of its own, which lives in `aliot-core`; the broker's loops are `aliot-io`'s, run on
//! [`Tokio`], its implementation of [`aliot_io::Runtime`]. `aliot-smol` exports the same
//! names, so switching runtime is switching the import.

pub mod amqp;
pub mod api;
pub mod broker;
pub mod client;
pub mod coalesced;
mod runtime;

pub use broker::{
    ApiConfig, BindApiError, Broker, BrokerConfig, BrokerError, BrokerHandle, ListenerConfig,
    RrpcError, RrpcReply, ServeHttpApi, Stats, TlsConfigError, load_tls_config,
};
pub use client::{Client, ClientOptions};
pub use runtime::{Tokio, TokioTask};

/// The `aliot` command's TOML configuration (see [`aliot_io::config`]).
pub use aliot_io::config;
/// The demo product and its instructions (see [`aliot_io::demo`]).
pub use aliot_io::demo;
/// The durable store (re-exported from `aliot-io`).
pub use aliot_io::store;
