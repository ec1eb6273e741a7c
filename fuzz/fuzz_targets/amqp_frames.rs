//! aliot-amqp's readers on arbitrary bytes: frames split from a stream, performatives and
//! SASL frames read from their bodies, every value inside walked to the bottom. Nothing
//! panics, and a performative read from the wire, written again, reads back the same.
#![no_main]

use aliot_amqp::codec::{Encoder, Value, decode};
use aliot_amqp::frame::{FrameKind, split_frame};
use aliot_amqp::performative::{Performative, Sasl};
use libfuzzer_sys::fuzz_target;

/// Decodes every value inside `value`, as deep as it goes.
fn walk(value: Value<'_>) {
    match value {
        Value::List(items) | Value::Map(items) => {
            for item in items.iter() {
                match item {
                    Ok(item) => walk(item),
                    Err(_) => return,
                }
            }
        }
        Value::Array(array) => {
            for element in array.iter() {
                match element {
                    Ok(element) => walk(element),
                    Err(_) => return,
                }
            }
        }
        Value::Described(described) => {
            if let Ok(inner) = described.value() {
                walk(inner);
            }
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    // The stream as a peer's frames; the limit is the smallest a peer may declare, then 64 KiB.
    for limit in [512, 65_536] {
        let mut rest = data;
        while let Ok(Some((frame, used))) = split_frame(rest, limit) {
            assert!(used >= 8 && used <= rest.len() && used as u64 <= u64::from(limit));
            rest = &rest[used..];
            let mut values = frame.body;
            while let Ok((value, after)) = decode(values) {
                walk(value);
                values = after;
            }
            match frame.kind {
                FrameKind::Amqp => {
                    if let Ok((performative, _payload)) = Performative::read(frame.body) {
                        let mut again = Vec::new();
                        performative.write(&mut Encoder::new(&mut again));
                        let (read_again, payload) =
                            Performative::read(&again).expect("a written performative reads back");
                        assert_eq!(read_again, performative);
                        assert!(payload.is_empty());
                    }
                }
                FrameKind::Sasl => {
                    if let Ok(sasl) = Sasl::read(frame.body) {
                        let mut again = Vec::new();
                        sasl.write(&mut Encoder::new(&mut again));
                        assert_eq!(Sasl::read(&again), Ok(sasl));
                    }
                }
            }
        }
    }
    // And the bytes as one value.
    if let Ok((value, _)) = decode(data) {
        walk(value);
    }
});
