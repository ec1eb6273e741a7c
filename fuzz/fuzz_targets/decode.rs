//! The streaming decoder on arbitrary bytes arriving in arbitrary reads: it never panics, a
//! buffer waiting for more stays under the size limit (so it never holds more than the maximum
//! packet size plus one read), `Ok(None)` leaves the buffer untouched, and every packet it
//! returns fits the limit and encodes back to a packet that decodes to itself.
//!
//! Input layout: 2 bytes of maximum packet size (`0xFFFF` = the default 256 KiB), 1 byte that
//! bounds and seeds the read sizes, then the stream.
#![no_main]

use aliot_core::codec::{DEFAULT_MAX_PACKET_SIZE, Decoder, MAX_FIXED_HEADER_LEN};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

/// Read sizes from 1 to `largest`, from a xorshift generator seeded by the input.
struct ReadSizes {
    state: u32,
    largest: usize,
}

impl ReadSizes {
    fn new(seed: u8) -> Self {
        Self {
            state: 0x9E37_79B9 ^ u32::from(seed),
            largest: usize::from(seed) + 1,
        }
    }

    fn next(&mut self) -> usize {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 17;
        self.state ^= self.state << 5;
        1 + usize::try_from(self.state).expect("u32 fits usize") % self.largest
    }
}

fuzz_target!(|data: &[u8]| {
    let [size_high, size_low, read_seed, stream @ ..] = data else {
        return;
    };
    let max_packet_size = match u16::from_be_bytes([*size_high, *size_low]) {
        u16::MAX => DEFAULT_MAX_PACKET_SIZE,
        size => usize::from(size),
    };
    // What a buffer waiting for more bytes may hold: less than a whole packet, or less than a
    // whole fixed header when the limit is below one.
    let waiting_limit = max_packet_size.max(MAX_FIXED_HEADER_LEN);
    let decoder = Decoder::new(max_packet_size);
    let mut reads = ReadSizes::new(*read_seed);
    let mut buf = BytesMut::new();
    let mut rest = stream;
    'stream: while !rest.is_empty() {
        let (read, tail) = rest.split_at(reads.next().min(rest.len()));
        rest = tail;
        buf.extend_from_slice(read);
        assert!(buf.len() < waiting_limit + read.len());
        loop {
            let before = buf.clone();
            match decoder.decode(&mut buf) {
                Ok(Some(packet)) => {
                    let consumed = before.len() - buf.len();
                    assert!(consumed <= max_packet_size);
                    let mut encoded = BytesMut::new();
                    packet
                        .encode(&mut encoded)
                        .expect("a decoded packet encodes");
                    assert!(encoded.len() <= consumed);
                    let again = Decoder::new(usize::MAX).decode(&mut encoded);
                    assert_eq!(again, Ok(Some(packet)));
                    assert!(encoded.is_empty());
                }
                Ok(None) => {
                    assert_eq!(buf, before, "Ok(None) leaves the buffer untouched");
                    assert!(buf.len() < waiting_limit);
                    break;
                }
                Err(_) => break 'stream,
            }
        }
    }
});
