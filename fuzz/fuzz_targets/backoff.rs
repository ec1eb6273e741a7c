//! `Backoff::delay` on arbitrary settings, attempts and random numbers: it never panics, the
//! ceiling never exceeds the cap nor shrinks with the attempt, and the jittered delay stays in
//! its range (the whole ceiling for none, up to it for full, its upper half for equal jitter).
#![no_main]

use core::time::Duration;

use aliot_core::client::{Backoff, Jitter};
use libfuzzer_sys::fuzz_target;

/// Reads fixed-size little-endian fields off the input, zero once it runs out.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut field = [0; N];
        let len = N.min(self.0.len());
        field[..len].copy_from_slice(&self.0[..len]);
        self.0 = &self.0[len..];
        field
    }

    fn duration(&mut self) -> Duration {
        let secs = u64::from_le_bytes(self.take());
        let nanos = u32::from_le_bytes(self.take()) % 1_000_000_000;
        Duration::new(secs, nanos)
    }
}

fuzz_target!(|data: &[u8]| {
    let mut fields = Fields(data);
    let initial = fields.duration();
    let max = fields.duration();
    let multiplier = u32::from_le_bytes(fields.take());
    let jitter = match fields.take::<1>()[0] % 3 {
        0 => Jitter::None,
        1 => Jitter::Full,
        _ => Jitter::Equal,
    };
    let attempt = u32::from_le_bytes(fields.take());
    let random = u32::from_le_bytes(fields.take());
    let backoff = Backoff {
        initial,
        max,
        multiplier,
        jitter,
    };

    let ceiling = backoff.ceiling(attempt);
    assert!(ceiling <= max, "{backoff:?} attempt {attempt}: {ceiling:?}");
    assert!(ceiling <= backoff.ceiling(attempt.saturating_add(1)));
    let delay = backoff.delay(attempt, random);
    match jitter {
        Jitter::None => assert_eq!(delay, ceiling),
        Jitter::Full => assert!(delay <= ceiling),
        Jitter::Equal => assert!(delay >= ceiling / 2 && delay <= ceiling),
    }
});
