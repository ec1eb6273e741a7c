//! Device authentication of the platform profile.
//!
//! `aliot-auth` knows who a device is and how it proves it: the device identity and secret,
//! the client-id extension (`id|securemode=3,signmethod=hmacsha1,timestamp=…|`), signing the
//! CONNECT fields on the device side and verifying them on the broker side, and the device
//! registry the broker looks devices up in. It is `no_std` + `alloc`, above `aliot-topic` and
//! below `aliot-core`.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
