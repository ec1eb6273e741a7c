//! How long to wait before the next reconnect: capped exponential backoff with jitter.
//!
//! The computation is pure: the caller passes the attempt number and a random number in, so
//! the same code serves every adapter (tokio, smol, a bare-metal loop) and tests give exact
//! values.

use core::time::Duration;

/// The delay before the first retry, before jitter: 1 s.
pub const DEFAULT_INITIAL_DELAY: Duration = Duration::from_secs(1);

/// The longest delay, before jitter: 60 s.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(60);

/// How much the delay grows per failed attempt: ×2.
pub const DEFAULT_MULTIPLIER: u32 = 2;

/// How much of the delay is drawn at random.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Jitter {
    /// No randomness: exactly the capped exponential delay.
    None,
    /// Anywhere from zero to the capped exponential delay. Spreads a crowd of clients the
    /// most, but some of them retry almost at once.
    Full,
    /// At least half the capped exponential delay, the other half drawn at random. The
    /// default: a client that keeps failing (refused credentials, a broker that is down)
    /// always waits at least half its delay, so it never hammers the broker, while a crowd of
    /// clients cut off together (a broker restart) is still spread over the other half.
    #[default]
    Equal,
}

/// Capped exponential backoff with jitter: `min(initial × multiplier^attempt, max)`, then
/// [`jitter`](Self::jitter) applied.
///
/// It holds no clock and no random number generator: [`delay`](Self::delay) takes the attempt
/// number and a uniformly random `u32` from the caller. Every computation saturates, so no
/// input can make it panic or overflow.
///
/// ```
/// use aliot_core::client::{Backoff, Jitter};
/// use core::time::Duration;
///
/// let backoff = Backoff::default();
/// // 1 s, 2 s, 4 s, ... capped at 60 s.
/// assert_eq!(backoff.ceiling(0), Duration::from_secs(1));
/// assert_eq!(backoff.ceiling(3), Duration::from_secs(8));
/// assert_eq!(backoff.ceiling(40), Duration::from_secs(60));
/// // Equal jitter: from half the ceiling (random = 0) to just under all of it.
/// assert_eq!(backoff.delay(3, 0), Duration::from_secs(4));
/// assert_eq!(backoff.delay(3, u32::MAX / 2 + 1), Duration::from_secs(6));
/// assert!(backoff.delay(3, u32::MAX) < Duration::from_secs(8));
///
/// let exact = Backoff { jitter: Jitter::None, ..Backoff::default() };
/// assert_eq!(exact.delay(2, 12_345), Duration::from_secs(4));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Backoff {
    /// The delay of attempt 0, before jitter. Default [`DEFAULT_INITIAL_DELAY`].
    pub initial: Duration,
    /// The cap on the delay, before jitter. Default [`DEFAULT_MAX_DELAY`].
    pub max: Duration,
    /// The factor applied per attempt; 0 and 1 keep the delay at `initial`. Default
    /// [`DEFAULT_MULTIPLIER`].
    pub multiplier: u32,
    /// How much of the delay is random. Default [`Jitter::Equal`].
    pub jitter: Jitter,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

impl Backoff {
    /// The defaults: 1 s doubling up to 60 s, equal jitter.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            initial: DEFAULT_INITIAL_DELAY,
            max: DEFAULT_MAX_DELAY,
            multiplier: DEFAULT_MULTIPLIER,
            jitter: Jitter::Equal,
        }
    }

    /// The delay of `attempt` (0 for the first retry) before jitter:
    /// `min(initial × multiplier^attempt, max)`.
    #[must_use]
    pub fn ceiling(&self, attempt: u32) -> Duration {
        // Exponentiation by squaring: a few multiplications whatever the attempt number.
        let factor = u128::from(self.multiplier.max(1)).saturating_pow(attempt);
        let nanos = self.initial.as_nanos().saturating_mul(factor);
        duration_from_nanos(nanos.min(self.max.as_nanos()))
    }

    /// The delay before retry number `attempt` (0 for the first retry after a failure),
    /// with `random` a uniformly distributed `u32` choosing where in the jitter range it falls
    /// (0 the shortest, `u32::MAX` just under the longest).
    #[must_use]
    pub fn delay(&self, attempt: u32, random: u32) -> Duration {
        let ceiling = self.ceiling(attempt).as_nanos();
        let nanos = match self.jitter {
            Jitter::None => ceiling,
            Jitter::Full => scale(ceiling, random),
            Jitter::Equal => {
                let floor = ceiling / 2;
                floor + scale(ceiling - floor, random)
            }
        };
        duration_from_nanos(nanos)
    }
}

/// `span × random / 2³²`: a point of `[0, span)` picked by `random` (0 when `span` is 0).
fn scale(span: u128, random: u32) -> u128 {
    span.saturating_mul(u128::from(random)) >> 32
}

/// A duration of `nanos` nanoseconds, saturating at the largest `Duration` of whole seconds a
/// `u64` holds.
fn duration_from_nanos(nanos: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    let secs = u64::try_from(nanos / NANOS_PER_SEC).unwrap_or(u64::MAX);
    let subsec = u32::try_from(nanos % NANOS_PER_SEC).unwrap_or(0);
    Duration::new(secs, subsec)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn the_ceiling_doubles_from_one_second_up_to_sixty() {
        let backoff = Backoff::default();
        let ceilings: [u64; 8] = [1, 2, 4, 8, 16, 32, 60, 60];
        for (attempt, secs) in (0..).zip(ceilings) {
            assert_eq!(
                backoff.ceiling(attempt),
                Duration::from_secs(secs),
                "{attempt}"
            );
        }
    }

    #[test]
    fn huge_attempts_and_durations_saturate_at_the_cap() {
        let backoff = Backoff {
            initial: Duration::MAX,
            max: Duration::MAX,
            multiplier: u32::MAX,
            jitter: Jitter::None,
        };
        assert_eq!(backoff.delay(u32::MAX, u32::MAX), Duration::MAX);
        let default = Backoff::default();
        assert_eq!(default.ceiling(u32::MAX), DEFAULT_MAX_DELAY);
        assert!(default.delay(u32::MAX, u32::MAX) <= DEFAULT_MAX_DELAY);
    }

    #[test]
    fn multipliers_zero_and_one_keep_the_initial_delay() {
        for multiplier in [0, 1] {
            let backoff = Backoff {
                multiplier,
                jitter: Jitter::None,
                ..Backoff::default()
            };
            assert_eq!(backoff.delay(0, 0), SECOND);
            assert_eq!(backoff.delay(50, u32::MAX), SECOND);
        }
    }

    #[test]
    fn an_initial_delay_over_the_cap_is_capped() {
        let backoff = Backoff {
            initial: Duration::from_secs(90),
            jitter: Jitter::None,
            ..Backoff::default()
        };
        assert_eq!(backoff.delay(0, 0), DEFAULT_MAX_DELAY);
    }

    #[test]
    fn a_zero_initial_delay_stays_zero_at_once_for_any_attempt() {
        let backoff = Backoff {
            initial: Duration::ZERO,
            ..Backoff::default()
        };
        assert_eq!(backoff.delay(u32::MAX, u32::MAX), Duration::ZERO);
    }

    #[test]
    fn a_zero_cap_means_no_delay() {
        let backoff = Backoff {
            max: Duration::ZERO,
            ..Backoff::default()
        };
        assert_eq!(backoff.delay(7, u32::MAX), Duration::ZERO);
    }

    #[test]
    fn full_jitter_spans_zero_to_the_ceiling() {
        let backoff = Backoff {
            jitter: Jitter::Full,
            ..Backoff::default()
        };
        assert_eq!(backoff.delay(2, 0), Duration::ZERO);
        assert_eq!(backoff.delay(2, 1 << 31), 2 * SECOND);
        assert_eq!(backoff.delay(2, 1 << 30), SECOND);
        let longest = backoff.delay(2, u32::MAX);
        assert!(longest < 4 * SECOND && longest > 4 * SECOND - Duration::from_nanos(2));
    }

    #[test]
    fn equal_jitter_spans_half_the_ceiling_to_the_ceiling() {
        let backoff = Backoff::default();
        assert_eq!(backoff.delay(1, 0), SECOND);
        assert_eq!(backoff.delay(1, 1 << 31), SECOND + SECOND / 2);
        let longest = backoff.delay(1, u32::MAX);
        assert!(longest < 2 * SECOND && longest > 2 * SECOND - Duration::from_nanos(2));
    }

    #[test]
    fn sub_second_parts_are_kept() {
        let backoff = Backoff {
            initial: Duration::from_millis(250),
            max: Duration::from_millis(1_500),
            multiplier: 3,
            jitter: Jitter::None,
        };
        let delays: [u64; 4] = [250, 750, 1_500, 1_500];
        for (attempt, millis) in (0..).zip(delays) {
            assert_eq!(backoff.delay(attempt, 0), Duration::from_millis(millis));
        }
    }

    proptest::proptest! {
        #[test]
        fn every_delay_lies_in_its_jitter_range(
            initial_ms in 0u64..100_000,
            max_ms in 0u64..1_000_000,
            multiplier in 0u32..10,
            attempt in 0u32..200,
            random: u32,
        ) {
            let mut backoff = Backoff {
                initial: Duration::from_millis(initial_ms),
                max: Duration::from_millis(max_ms),
                multiplier,
                jitter: Jitter::None,
            };
            let ceiling = backoff.ceiling(attempt);
            proptest::prop_assert!(ceiling <= backoff.max);
            proptest::prop_assert!(ceiling <= backoff.ceiling(attempt.saturating_add(1)));
            proptest::prop_assert_eq!(backoff.delay(attempt, random), ceiling);
            backoff.jitter = Jitter::Full;
            proptest::prop_assert!(backoff.delay(attempt, random) <= ceiling);
            backoff.jitter = Jitter::Equal;
            let equal = backoff.delay(attempt, random);
            proptest::prop_assert!(equal >= ceiling / 2 && equal <= ceiling);
        }
    }
}
