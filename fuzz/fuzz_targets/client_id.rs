//! `ClientId::parse` on arbitrary bytes (decoded lossily as UTF-8): it never panics, and what
//! it accepts formats to text that parses back to the same value.
#![no_main]

use aliot_auth::ClientId;
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
});
