//! The device client on tokio: [`aliot_io::client`] bound to [`Tokio`].
//!
//! Everything but [`Client`] is re-exported from `aliot-io` as it is; `Client` is
//! `aliot_io::client::Client<Tokio>`. See [`aliot_io::client`] for how the client works.

pub use aliot_io::client::*;

use crate::Tokio;

/// The device client on tokio (see [`aliot_io::client::Client`]).
pub type Client = aliot_io::client::Client<Tokio>;
