//! Benchmarks of aliot's hot paths.
//!
//! `aliot-benches` holds the criterion benches (`benches/benches/`) that measure the codec, topic
//! matching, ACL checks, authentication and hub routing, each beside the same work done by another
//! crate in the same run, so the ratios in `benches/README.md` are measured, not remembered.
//!
//! It also holds [`loadgen`], the broker load generator of the `aliot-bench` binary: whole
//! brokers (aliot, mosquitto, rumqttd) measured over loopback sockets, driven by `compare.sh`.

pub mod loadgen;
