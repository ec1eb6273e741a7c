//! aliot on smol.
//!
//! `aliot-smol` drives the sans-IO state machines of `aliot-core` over smol / async-io and
//! futures-rustls, with the same public shape as `aliot-tokio`. It holds no protocol logic of
//! its own; that lives in `aliot-core`.
