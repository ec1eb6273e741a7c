//! The broker load generator behind the `aliot-bench` binary.
//!
//! Every simulated client is an [`aliot_core::client::Connection`], the sans-IO device state
//! machine, driven by a small tokio loop of this module: one task owns many connections and
//! polls their sockets itself ([`group`]), so the generator costs little per message and stays
//! out of the way of the broker it measures. Publishers pipeline QoS 1 up to a configurable
//! in-flight window; every payload starts with its send time ([`stamp`]), and subscribers turn
//! it into a latency on receipt, kept in an HDR histogram ([`report::Percentiles`]).
//!
//! The scenarios ([`scenario`]) are the five of issue 7: 1:1, fan-in, fan-out, idle
//! connections (connect rate and broker memory per connection) and RRPC through the Rust API
//! of an in-process aliot broker. Each runs for a fixed time or count and stops by itself, and
//! every address it targets is a loopback address ([`target::Target`]).
//!
//! [`gateway`] is issue 15's: one gateway logging in its sub-devices and posting for them,
//! against as many devices connected directly, in the same run.
//!
//! [`amqp`] is issue 16's: devices publishing while one AMQP 1.0 consumer of the
//! server-side subscription receives, and the drain of a full consumer-group backlog.
//!
//! [`transport`] is issue 17's: every scenario over TLS, TLS-PSK or WebSocket instead of TCP.
//!
//! [`cluster`] is issue 18's: RRPC calls and `Pub` through one node's API to devices on
//! another node of a cluster (or the same node, the baseline).
//!
//! [`recovery`] measures aliot's durable store from outside: it fills a store directly through
//! its public API and times a broker's start on it.

pub mod aliot_config;
pub mod amqp;
pub mod clock;
pub mod cluster;
pub mod compare;
pub mod error;
pub mod gateway;
pub mod group;
pub mod login;
pub mod procfs;
pub mod recovery;
pub mod report;
pub mod scenario;
pub mod session;
pub mod stamp;
pub mod target;
pub mod transport;

pub use error::{LoadError, ReplyFault};
