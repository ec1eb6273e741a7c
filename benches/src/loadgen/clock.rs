//! The one clock of a run: nanoseconds since it started, shared by every task.

use std::time::{Duration, Instant};

/// The clock of a run: every timestamp of the run (payload stamps, receive times, the phases)
/// is nanoseconds since the same start, so a latency is one subtraction.
///
/// ```
/// use aliot_benches::loadgen::clock::RunClock;
///
/// let clock = RunClock::start();
/// let earlier = clock.now_ns();
/// assert!(clock.now_ns() >= earlier);
/// assert_eq!(clock.core_now().as_millis(), clock.now_ns() / 1_000_000);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct RunClock {
    start: Instant,
}

impl RunClock {
    /// A clock whose zero is now.
    #[must_use]
    pub fn start() -> Self {
        RunClock {
            start: Instant::now(),
        }
    }

    /// Nanoseconds since the start (saturating at `u64::MAX`, some 584 years).
    #[must_use]
    pub fn now_ns(&self) -> u64 {
        duration_ns(self.start.elapsed())
    }

    /// The current time as the sans-IO core takes it: milliseconds since the start.
    #[must_use]
    pub fn core_now(&self) -> aliot_core::Instant {
        aliot_core::Instant::from_millis(self.now_ns() / 1_000_000)
    }

    /// The tokio instant `ns` nanoseconds after the start, for timers.
    #[must_use]
    pub fn tokio_instant(&self, ns: u64) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.start) + Duration::from_nanos(ns)
    }
}

/// A duration in whole nanoseconds, saturating at `u64::MAX`.
#[must_use]
pub fn duration_ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_convert_to_nanoseconds_and_saturate() {
        assert_eq!(duration_ns(Duration::from_micros(3)), 3_000);
        assert_eq!(duration_ns(Duration::MAX), u64::MAX);
    }

    #[test]
    fn timer_instants_are_offsets_from_the_start() {
        let clock = RunClock::start();
        let one_second = clock.tokio_instant(1_000_000_000);
        let zero = clock.tokio_instant(0);
        assert_eq!(one_second - zero, Duration::from_secs(1));
    }
}
