//! Payloads that carry their send time.
//!
//! The first 8 bytes of every payload the generator publishes are the send time, nanoseconds
//! since the run started, little-endian; the rest is filler. The receiver subtracts it from its
//! own clock reading: publisher and subscriber are in the same process and share the clock.

use bytes::{BufMut, Bytes, BytesMut};

/// Bytes of the send time at the start of a payload.
pub const STAMP_LEN: usize = 8;

/// A payload of `len` bytes (at least [`STAMP_LEN`]) whose first 8 bytes say `sent_ns`.
///
/// ```
/// use aliot_benches::loadgen::stamp::{read_stamp, stamped_payload};
///
/// let payload = stamped_payload(64, 1_234_567);
/// assert_eq!(payload.len(), 64);
/// assert_eq!(read_stamp(&payload), Some(1_234_567));
/// ```
#[must_use]
pub fn stamped_payload(len: usize, sent_ns: u64) -> Bytes {
    let len = len.max(STAMP_LEN);
    let mut payload = BytesMut::with_capacity(len);
    payload.put_u64_le(sent_ns);
    payload.put_bytes(b'.', len - STAMP_LEN);
    payload.freeze()
}

/// The send time at the start of `payload`, or `None` when it is shorter than a stamp (a
/// message the generator did not send).
#[must_use]
pub fn read_stamp(payload: &[u8]) -> Option<u64> {
    let stamp: [u8; STAMP_LEN] = payload.get(..STAMP_LEN)?.try_into().ok()?;
    Some(u64::from_le_bytes(stamp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_shorter_than_the_stamp_is_widened_to_hold_it() {
        let payload = stamped_payload(3, u64::MAX);
        assert_eq!(payload.len(), STAMP_LEN);
        assert_eq!(read_stamp(&payload), Some(u64::MAX));
    }

    #[test]
    fn a_short_payload_has_no_stamp() {
        assert_eq!(read_stamp(b"1234567"), None);
        assert_eq!(read_stamp(b""), None);
    }

    #[test]
    fn the_filler_follows_the_stamp() {
        let payload = stamped_payload(10, 1);
        assert_eq!(&payload[STAMP_LEN..], b"..");
    }
}
