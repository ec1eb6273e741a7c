//! `aliot`'s TOML configuration: any text is refused or accepted, never a panic, and a refusal
//! that names a line names one of the text's lines, in its message too.
#![no_main]

use std::path::Path;

use aliot_tokio::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A folder that does not exist: TLS files are refused, never read from the fuzzer's disk.
    match Config::parse(text, "fuzz.toml", Path::new("/nonexistent/aliot-fuzz")) {
        Ok(config) => {
            assert!(!config.listeners.is_empty(), "a config has a listener");
            let _ = config.summary();
            let broker = config.broker_config();
            assert_eq!(broker.listeners.len(), config.listeners.len());
        }
        Err(error) => {
            let message = error.to_string();
            if let Some(at) = error.location {
                // The offset may be the end of the text, one line after its last line break.
                let lines = text.split('\n').count();
                assert!(
                    (1..=lines).contains(&at.line),
                    "line {} of {lines}",
                    at.line
                );
                assert!(at.column >= 1);
                assert!(message.contains(&format!(", line {}, column {}: ", at.line, at.column)));
            }
        }
    }
});
