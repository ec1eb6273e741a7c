//! Benchmarks of aliot's hot paths.
//!
//! `aliot-benches` holds the criterion benches (`benches/benches/`) that measure the codec, topic
//! matching, ACL checks, authentication and hub routing, each beside the same work done by another
//! crate in the same run, so the ratios in `benches/README.md` are measured, not remembered.
