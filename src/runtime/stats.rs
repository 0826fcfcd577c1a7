//! Job statistics: counters and a log-bucketed latency histogram, cheap enough to
//! update on every response and to read for a progress update several times a second.

use std::time::Duration;

/// Latency histogram with ~5 % wide buckets from 10 µs to ~30 min: constant memory,
/// percentiles within one bucket's width.
#[derive(Debug, Clone)]
pub struct Histogram {
    buckets: Vec<u64>,
    count: u64,
}

const MIN_US: f64 = 10.0;
const RATIO: f64 = 1.05;
const BUCKETS: usize = 400;

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: vec![0; BUCKETS],
            count: 0,
        }
    }
}

impl Histogram {
    pub fn record(&mut self, d: Duration) {
        let us = d.as_secs_f64() * 1e6;
        let i = if us <= MIN_US {
            0
        } else {
            ((us / MIN_US).ln() / RATIO.ln()).ceil() as usize
        };
        self.buckets[i.min(BUCKETS - 1)] += 1;
        self.count += 1;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The `q` quantile (0..=1) in milliseconds; 0 when empty.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let rank = ((self.count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return MIN_US * RATIO.powi(i as i32) / 1000.0;
            }
        }
        MIN_US * RATIO.powi(BUCKETS as i32 - 1) / 1000.0
    }
}

/// A job's numbers, as progress updates and the CLI summary report them.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct JobStats {
    /// Events in the job (after a resume: the ones still to deliver).
    pub events: u64,
    pub skipped: u64,
    /// Events that could not be rendered.
    pub render_errors: u64,
    /// Requests whose first attempt has started.
    pub sent: u64,
    /// Requests delivered (2xx).
    pub delivered: u64,
    /// Requests failed for good.
    pub failed: u64,
    /// Requests waiting to retry right now.
    pub retrying: u64,
    /// Attempts made, retries included.
    pub attempts: u64,
    pub delivered_events: u64,
    pub failed_events: u64,
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub elapsed_ms: u64,
}

/// The update feed's own numbers (see `runtime::feed`): what it queued, what it left
/// out because the consumer did not drain, and how often it woke the consumer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct FeedStats {
    /// Updates put in the channel.
    pub updates: u64,
    /// Waker calls.
    pub wakes: u64,
    /// Outcomes left out of the feed (all jobs).
    pub dropped_outcomes: u64,
    /// Retries and render errors left out of the feed (all jobs).
    pub dropped_other: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_land_within_a_bucket() {
        let mut h = Histogram::default();
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        let p50 = h.quantile_ms(0.5);
        let p95 = h.quantile_ms(0.95);
        assert!((47.0..=53.0).contains(&p50), "{p50}");
        assert!((90.0..=100.0).contains(&p95), "{p95}");
        assert!(Histogram::default().quantile_ms(0.5).abs() < f64::EPSILON);
    }
}
