//! Time as a value: the state machines never read a clock, the caller passes `now` in.

use core::ops::{Add, Sub};
use core::time::Duration;

/// A point in time: milliseconds since an epoch the caller picks (for an adapter, the moment it
/// started; for a test, zero).
///
/// Only differences between two `Instant`s of the same caller mean anything. Arithmetic
/// saturates instead of overflowing, so no input can make it panic.
///
/// ```
/// use aliot_core::Instant;
/// use core::time::Duration;
///
/// let start = Instant::from_millis(1_000);
/// let later = start + Duration::from_secs(45);
/// assert_eq!(later.as_millis(), 46_000);
/// assert_eq!(later - start, Duration::from_secs(45));
/// assert_eq!(start - later, Duration::ZERO);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

impl Instant {
    /// The epoch itself.
    pub const ZERO: Instant = Instant(0);

    /// The instant `ms` milliseconds after the epoch.
    pub const fn from_millis(ms: u64) -> Self {
        Instant(ms)
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// How long after `earlier` this instant is, or zero if it is not after it.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;

    fn add(self, rhs: Duration) -> Instant {
        let ms = u64::try_from(rhs.as_millis()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_add(ms))
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;

    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_duration_since(rhs)
    }
}
