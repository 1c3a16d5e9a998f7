//! When a failed attempt runs again: exponential backoff with jitter, as a pure function of the
//! attempt number and a random draw (nimbus-queue's [`Backoff`], which the queue layer uses for
//! its own retries, so both layers space retries the same way).

use std::time::Duration;

pub use nimbus_queue::Backoff;

/// The ledger's retry schedule for transient failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay growth and cap.
    pub backoff: Backoff,
}

impl Default for RetryPolicy {
    /// 2 s, 4 s, 8 s … capped at 5 min, with equal jitter.
    fn default() -> Self {
        RetryPolicy { backoff: Backoff { base: Duration::from_secs(2), max: Duration::from_secs(300), jitter: true } }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (1-based) with `unit` in `[0, 1)` as the random
    /// draw: `base · 2^(attempt-1)` capped at `max`, of which jitter keeps between half and all.
    pub fn retry_in(&self, attempt: u32, unit: f64) -> Duration {
        self.backoff.delay(attempt.max(1), unit)
    }

    /// [`RetryPolicy::retry_in`] with a fresh draw.
    pub fn next_retry_in(&self, attempt: u32) -> Duration {
        self.retry_in(attempt, rand::random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: bool) -> RetryPolicy {
        RetryPolicy { backoff: Backoff { base: Duration::from_millis(500), max: Duration::from_secs(10), jitter } }
    }

    #[test]
    fn doubles_per_attempt_up_to_the_cap() {
        let p = policy(false);
        let waits: Vec<u128> = (1..=7).map(|a| p.retry_in(a, 0.3).as_millis()).collect();
        assert_eq!(waits, vec![500, 1000, 2000, 4000, 8000, 10_000, 10_000]);
        assert_eq!(p.retry_in(0, 0.0), Duration::from_millis(500), "attempt 0 is treated as the first");
        assert_eq!(p.retry_in(u32::MAX, 0.0), Duration::from_secs(10));
    }

    #[test]
    fn jitter_keeps_between_half_and_all_of_the_delay() {
        let p = policy(true);
        assert_eq!(p.retry_in(3, 0.0), Duration::from_secs(1));
        assert_eq!(p.retry_in(3, 0.5), Duration::from_millis(1500));
        for _ in 0..200 {
            let d = p.next_retry_in(3);
            assert!(d >= Duration::from_secs(1) && d <= Duration::from_secs(2), "{d:?}");
        }
    }
}
