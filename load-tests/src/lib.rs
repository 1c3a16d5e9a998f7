//! Shared pieces of the benchmarks: a bounded closed-loop HTTP load generator and latency summaries.
//!
//! Every benchmark prints its figures next to an anchor measured in the same run, because these
//! machines are shared and noisy: ratios are comparable between runs, absolute numbers are not.

pub mod services;
pub mod stack;

use std::future::Future;
use std::time::{Duration, Instant};

/// Latency samples of one scenario, summarised as throughput and percentiles.
#[derive(Debug, Clone)]
pub struct Summary {
    pub requests: usize,
    pub errors: usize,
    pub elapsed: Duration,
    sorted_micros: Vec<u64>,
}

impl Summary {
    pub fn from_samples(mut micros: Vec<u64>, errors: usize, elapsed: Duration) -> Self {
        micros.sort_unstable();
        Self { requests: micros.len() + errors, errors, elapsed, sorted_micros: micros }
    }

    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// The latency at quantile `q` (0..=1) in milliseconds, over successful requests.
    pub fn percentile_ms(&self, q: f64) -> f64 {
        if self.sorted_micros.is_empty() {
            return f64::NAN;
        }
        let rank = ((self.sorted_micros.len() - 1) as f64 * q).round() as usize;
        self.sorted_micros[rank] as f64 / 1000.0
    }
}

/// Runs `concurrency` closed loops calling `request(i)` until `total` requests were sent or `max_time`
/// passed, whichever comes first (both bounds keep a benchmark from running away).
pub async fn closed_loop<F, Fut>(concurrency: usize, total: usize, max_time: Duration, request: F) -> Summary
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + max_time;
    let mut loops = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let next = next.clone();
        let request = request.clone();
        loops.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut errors = 0usize;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total || Instant::now() >= deadline {
                    break;
                }
                let t = Instant::now();
                match request(i).await {
                    Ok(()) => samples.push(t.elapsed().as_micros() as u64),
                    Err(_) => errors += 1,
                }
            }
            (samples, errors)
        }));
    }
    let mut samples = Vec::new();
    let mut errors = 0;
    for handle in loops {
        let (s, e) = handle.await.expect("load loop panicked");
        samples.extend(s);
        errors += e;
    }
    Summary::from_samples(samples, errors, started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_ranked_samples() {
        let s = Summary::from_samples((1..=100).map(|ms| ms * 1000).collect(), 0, Duration::from_secs(2));
        assert_eq!(s.percentile_ms(0.5), 51.0);
        assert_eq!(s.percentile_ms(0.99), 99.0);
        assert_eq!(s.per_second(), 50.0);
    }

    #[tokio::test]
    async fn closed_loop_stops_at_the_request_bound_and_counts_errors() {
        let s = closed_loop(4, 40, Duration::from_secs(10), |i| async move {
            if i % 10 == 0 { anyhow::bail!("fail") } else { Ok(()) }
        })
        .await;
        assert_eq!(s.requests, 40);
        assert_eq!(s.errors, 4);
    }
}
