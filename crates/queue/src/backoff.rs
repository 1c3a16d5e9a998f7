//! Retry delays: exponential backoff with jitter, as a pure function.

use std::time::Duration;

/// Exponential backoff: attempt `n` (1-based, the attempt that just failed) waits
/// `base * 2^(n-1)`, capped at `max`, then "equal jitter" keeps between half and all of it so
/// retries of jobs that failed together spread out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay after the first failure.
    pub base: Duration,
    /// Upper bound of any delay.
    pub max: Duration,
    /// Whether to randomise the delay (off only in tests that need exact times).
    pub jitter: bool,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { base: Duration::from_secs(1), max: Duration::from_secs(300), jitter: true }
    }
}

impl Backoff {
    /// The delay before the retry that follows failed attempt `attempt`, with `unit` in `[0, 1)`
    /// as the random draw (passed in so the function stays pure and testable).
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let full = self.base.saturating_mul(1u32 << exp).min(self.max);
        if !self.jitter {
            return full;
        }
        let half = full / 2;
        half + full.saturating_sub(half).mul_f64(unit.clamp(0.0, 1.0))
    }

    /// [`Backoff::delay`] with a fresh random draw.
    pub fn next_delay(&self, attempt: u32) -> Duration {
        self.delay(attempt, rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact() -> Backoff {
        Backoff { base: Duration::from_millis(100), max: Duration::from_secs(1), jitter: false }
    }

    #[test]
    fn doubles_per_attempt_and_caps() {
        let b = exact();
        assert_eq!(b.delay(1, 0.0), Duration::from_millis(100));
        assert_eq!(b.delay(2, 0.0), Duration::from_millis(200));
        assert_eq!(b.delay(4, 0.0), Duration::from_millis(800));
        assert_eq!(b.delay(5, 0.0), Duration::from_secs(1));
        assert_eq!(b.delay(60, 0.0), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_between_half_and_full() {
        let b = Backoff { jitter: true, ..exact() };
        assert_eq!(b.delay(3, 0.0), Duration::from_millis(200));
        assert_eq!(b.delay(3, 0.5), Duration::from_millis(300));
        assert!(b.delay(3, 0.999) <= Duration::from_millis(400));
        for _ in 0..100 {
            let d = b.next_delay(3);
            assert!(d >= Duration::from_millis(200) && d <= Duration::from_millis(400), "{d:?}");
        }
    }
}
