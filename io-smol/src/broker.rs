//! The broker on smol: [`aliot_io::broker`] bound to [`Smol`]. It has no HTTP API (see the
//! [crate docs](crate)).
//!
//! Everything but [`Broker`] is re-exported from `aliot-io` as it is; `Broker` is
//! `aliot_io::broker::Broker<Smol>`. See [`aliot_io::broker`] for how the broker works.

pub use aliot_io::broker::*;

use crate::Smol;

/// The broker on smol (see [`aliot_io::broker::Broker`]).
pub type Broker = aliot_io::broker::Broker<Smol>;
