//! aliot on smol.
//!
//! `aliot-smol` runs the broker and the device client of `aliot-io` on smol / async-io, with TLS through
//! futures-rustls, and exports the same names as `aliot-tokio`: switching runtime is switching
//! the import. It holds no logic of its own: the protocol is `aliot-core`'s, the loops that
//! drive it are `aliot-io`'s, and this crate is [`Smol`], their [`Runtime`](aliot_io::Runtime).
//!
//! The broker's HTTP API is an extension of the tokio broker (`aliot_tokio::ServeHttpApi`);
//! a smol [`Broker`] has no HTTP API. Other services can run beside it, stopping with it
//! ([`Broker::spawn_service`](aliot_io::broker::Broker::spawn_service)).
//!
//! ```
//! use std::sync::Arc;
//! use aliot_auth::MemoryRegistry;
//! use aliot_core::PlatformAuthenticator;
//! use aliot_smol::{Broker, BrokerConfig, ListenerConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! smol::block_on(async {
//!     let authenticator = PlatformAuthenticator::new(MemoryRegistry::new()).with_open_mode(true);
//!     let broker = Broker::start(BrokerConfig {
//!         listeners: vec![ListenerConfig::tcp("127.0.0.1:0".parse()?)],
//!         server: Default::default(),
//!         hub: Default::default(),
//!         authenticator: Arc::new(authenticator),
//!         max_connections: BrokerConfig::DEFAULT_MAX_CONNECTIONS,
//!         store: None,
//!         registry: None,
//!         cluster: None,
//!     })
//!     .await?;
//!     let (addr, tls) = broker.listener_addrs()[0];
//!     assert!(addr.port() != 0 && !tls);
//!     broker.shutdown().await;
//!     Ok(())
//! })
//! # }
//! ```

#![forbid(unsafe_code)]

pub mod broker;
pub mod client;
mod runtime;

pub use broker::{
    Broker, BrokerConfig, BrokerError, BrokerHandle, ListenerConfig, RrpcError, RrpcReply, Stats,
    TlsConfigError, load_tls_config,
};
pub use client::{Client, ClientOptions};
pub use runtime::{Smol, SmolTask};

/// The broker's TOML configuration (see [`aliot_io::config`]).
pub use aliot_io::config;
/// The demo product and its instructions (see [`aliot_io::demo`]).
pub use aliot_io::demo;
