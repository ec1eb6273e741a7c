//! The broker on tokio: [`aliot_io::broker`] bound to [`Tokio`], with the HTTP API of
//! [`crate::api`] (served on tokio only: [`ServeHttpApi`]).
//!
//! Everything but [`Broker`] and the API's types is re-exported from `aliot-io` as it is;
//! `Broker` is `aliot_io::broker::Broker<Tokio>`. See [`aliot_io::broker`] for how the broker
//! works.

pub use aliot_io::broker::*;

pub use crate::api::{ApiConfig, BindApiError, ServeHttpApi};

use crate::Tokio;

/// The broker on tokio (see [`aliot_io::broker::Broker`]).
pub type Broker = aliot_io::broker::Broker<Tokio>;
