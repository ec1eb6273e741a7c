//! The device client on smol: [`aliot_io::client`] bound to [`Smol`].
//!
//! Everything but [`Client`] is re-exported from `aliot-io` as it is; `Client` is
//! `aliot_io::client::Client<Smol>`. See [`aliot_io::client`] for how the client works.

pub use aliot_io::client::*;

use crate::Smol;

/// The device client on smol (see [`aliot_io::client::Client`]).
pub type Client = aliot_io::client::Client<Smol>;
