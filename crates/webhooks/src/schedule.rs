//! When a delivery is tried again (DESIGN §11): at once, then after 5 s, 5 min, 30 min, 2 h,
//! 5 h, 10 h, 14 h, 20 h and 24 h, each with up to a tenth of jitter either way so that
//! endpoints failing together are not retried together; a `Retry-After` longer than the
//! schedule's wait is honoured (up to a day). After the last wait the delivery has failed.

use std::time::Duration;

use rand::Rng;

/// The waits before the second, third, … attempt.
pub const RETRY_WAITS: [Duration; 9] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(14 * 3600),
    Duration::from_secs(20 * 3600),
    Duration::from_secs(24 * 3600),
];

/// The most attempts a delivery gets.
pub const MAX_ATTEMPTS: i32 = RETRY_WAITS.len() as i32 + 1;

/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// What an attempt's answer means for the delivery and its endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx.
    Delivered,
    /// 410 Gone: the receiver asks for no more; the endpoint is disabled.
    Gone,
    /// Anything else (3xx included: redirects are never followed), or no answer.
    Failed,
}

impl Outcome {
    /// The outcome of an HTTP status (`None`: no answer).
    pub fn of(status: Option<u16>) -> Outcome {
        match status {
            Some(200..=299) => Outcome::Delivered,
            Some(410) => Outcome::Gone,
            _ => Outcome::Failed,
        }
    }
}

/// How long after failed attempt number `attempts` (1-based) to try again; `None` when that was
/// the last. `jitter` is in [-1, 1] (a tenth of the wait at most); `retry_after` is the
/// receiver's `Retry-After`, if any.
pub fn next_attempt_delay(attempts: i32, jitter: f64, retry_after: Option<Duration>) -> Option<Duration> {
    let wait = *RETRY_WAITS.get(usize::try_from(attempts).ok()?.checked_sub(1)?)?;
    let jittered = wait.mul_f64(1.0 + jitter.clamp(-1.0, 1.0) / 10.0);
    Some(match retry_after {
        Some(asked) => jittered.max(asked.min(MAX_RETRY_AFTER)),
        None => jittered,
    })
}

/// A random jitter for [`next_attempt_delay`].
pub fn random_jitter() -> f64 {
    rand::rng().random_range(-1.0..=1.0)
}

/// `Retry-After` in seconds (its HTTP-date form is read as no hint).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_of_design_11_with_at_most_a_tenth_of_jitter() {
        let minutes = |m: u64| Duration::from_secs(m * 60);
        assert_eq!(next_attempt_delay(1, 0.0, None), Some(Duration::from_secs(5)));
        assert_eq!(next_attempt_delay(2, 0.0, None), Some(minutes(5)));
        assert_eq!(next_attempt_delay(3, 0.0, None), Some(minutes(30)));
        assert_eq!(next_attempt_delay(9, 0.0, None), Some(minutes(24 * 60)));
        assert_eq!(next_attempt_delay(10, 0.0, None), None, "ten attempts in all");
        assert_eq!(next_attempt_delay(0, 0.0, None), None);
        assert_eq!(next_attempt_delay(2, 1.0, None), Some(Duration::from_secs(330)));
        assert_eq!(next_attempt_delay(2, -1.0, None), Some(Duration::from_secs(270)));
        for _ in 0..100 {
            let d = next_attempt_delay(3, random_jitter(), None).unwrap();
            assert!(d >= minutes(27) && d <= minutes(33), "{d:?}");
        }
    }

    #[test]
    fn retry_after_lengthens_the_wait_never_shortens_it() {
        assert_eq!(next_attempt_delay(1, 0.0, Some(Duration::from_secs(120))), Some(Duration::from_secs(120)));
        assert_eq!(next_attempt_delay(2, 0.0, Some(Duration::from_secs(1))), Some(Duration::from_secs(300)));
        assert_eq!(next_attempt_delay(1, 0.0, Some(Duration::from_secs(9_999_999))), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after(" 30 "), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn what_answers_mean() {
        assert_eq!(Outcome::of(Some(204)), Outcome::Delivered);
        assert_eq!(Outcome::of(Some(302)), Outcome::Failed, "redirects are failures");
        assert_eq!(Outcome::of(Some(410)), Outcome::Gone);
        assert_eq!(Outcome::of(Some(500)), Outcome::Failed);
        assert_eq!(Outcome::of(None), Outcome::Failed);
    }
}
