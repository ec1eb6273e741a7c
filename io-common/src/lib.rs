//! aliot's runtime-independent I/O layer.
//!
//! `aliot-io` holds everything the runtime adapters (`aliot-tokio`, `aliot-smol`) share: the
//! broker (listeners, the hub task, one task per connection, graceful shutdown, the
//! [`BrokerHandle`]), TLS configuration loading and the device [`Client`] (its driver, options,
//! reconnect and transport), all written once against the small [`Runtime`] trait; and the
//! runtime-independent parts of the `aliot` command: its TOML [`config`] (read into a
//! [`BrokerConfig`]) and the built-in [`demo`]. An adapter is an implementation of that trait
//! (spawn, timers, TCP connect / bind / accept) and a set of type aliases binding it; it holds no
//! protocol logic, which lives in `aliot-core`, and no driving logic, which lives here.
//!
//! Byte streams are futures-io streams and TLS is futures-rustls on every runtime. Channels are
//! tokio's `sync` module and `select!`, which need no tokio runtime: they run on any executor.
//!
//! ```
//! use std::sync::Arc;
//! use aliot_auth::MemoryRegistry;
//! use aliot_core::PlatformAuthenticator;
//! use aliot_io::broker::{Broker, BrokerConfig, ListenerConfig};
//! use aliot_smol::Smol;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! smol::block_on(async {
//!     let authenticator = PlatformAuthenticator::new(MemoryRegistry::new()).with_open_mode(true);
//!     let config = BrokerConfig {
//!         listeners: vec![ListenerConfig::tcp("127.0.0.1:0".parse()?)],
//!         server: Default::default(),
//!         hub: Default::default(),
//!         authenticator: Arc::new(authenticator),
//!         max_connections: BrokerConfig::DEFAULT_MAX_CONNECTIONS,
//!         store: None,
//!         registry: None,
//!         cluster: None,
//!     };
//!     // The runtime is a type parameter; `aliot_smol::Broker` is this type.
//!     let broker = Broker::<Smol>::start(config).await?;
//!     assert_eq!(broker.handle().stats().await.connections, 0);
//!     broker.shutdown().await;
//!     Ok(())
//! })
//! # }
//! ```

#![forbid(unsafe_code)]

pub mod broker;
pub mod client;
pub mod config;
pub mod demo;
pub mod registry;
pub mod runtime;
pub mod store;
pub mod tls_crypto;
#[cfg(feature = "openssl")]
pub mod tls_psk;
pub mod websocket;

pub use broker::{
    BoundListener, Broker, BrokerConfig, BrokerError, BrokerHandle, ListenerConfig, RrpcError,
    RrpcReply, Stats, TlsConfigError, WebSocketListener, load_tls_config,
};
pub use client::{Client, ClientOptions};
pub use runtime::Runtime;
pub use store::{
    Durability, MemoryStore, RedbStore, Store, StoreConfig, StoreError, StoreLocation,
};
