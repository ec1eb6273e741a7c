//! The identities a device sends before it is authenticated, on arbitrary bytes:
//! `ClientId::parse` (decoded lossily as UTF-8) and `PskIdentity::parse` (the TLS-PSK identity
//! of the handshake, raw). Neither panics, and what each accepts formats to text that parses
//! back to the same value.
#![no_main]

use aliot_auth::{ClientId, PskIdentity};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // An MQTT client id is UTF-8 by the time it is parsed; lossy decoding keeps every input.
    let text = String::from_utf8_lossy(data);
    if let Ok(parsed) = ClientId::parse(&text) {
        let formatted = parsed.to_string();
        assert_eq!(
            ClientId::parse(&formatted).as_ref(),
            Ok(&parsed),
            "{text:?} formatted as {formatted:?}"
        );
    }
    // A PSK identity comes as bytes from the TLS handshake.
    if let Ok(identity) = PskIdentity::parse(data) {
        let formatted = identity.to_string();
        assert_eq!(
            formatted.as_bytes(),
            data,
            "a PSK identity formats back to its bytes"
        );
        assert_eq!(
            PskIdentity::parse(formatted.as_bytes()).as_ref(),
            Ok(&identity)
        );
    }
});
