//! aliot on tokio.
//!
//! `aliot-tokio` drives the sans-IO state machines of `aliot-core` over tokio TCP and
//! tokio-rustls: the device client, the broker server and the `aliot` command. It holds no
//! protocol logic of its own; that lives in `aliot-core`.

pub mod api;
pub mod broker;
pub mod client;
pub mod config;
pub mod demo;

pub use broker::{
    ApiConfig, Broker, BrokerConfig, BrokerError, BrokerHandle, ListenerConfig, RrpcError,
    RrpcReply, Stats, TlsConfigError, load_tls_config,
};
pub use client::{Client, ClientOptions};
