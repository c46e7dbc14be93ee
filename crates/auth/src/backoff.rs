//! Exponential backoff with jitter for login attempts.
//!
//! "Equal jitter": the n-th wait is uniform in `[d/2, d]` with `d = min(max, initial * 2^n)`.
//! Unlike full jitter it never waits less than half the nominal delay, which is what a
//! login endpoint that locks accounts needs: attempts are guaranteed to be spaced out,
//! and still spread so that many pods restarting together do not log in in lockstep.

use std::time::Duration;

use rand::Rng;

/// A backoff schedule; [`Backoff::next_delay`] advances it, [`Backoff::reset`] restarts it.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

// === impl Backoff ===

impl Backoff {
    /// A schedule starting at `initial` and never exceeding `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            failures: 0,
        }
    }

    /// The nominal (un-jittered) delay after the current number of failures.
    pub fn nominal(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.failures.min(31));
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// Records a failure and returns how long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let nominal = self.nominal();
        self.failures = self.failures.saturating_add(1);
        let half = nominal / 2;
        let spread = nominal.saturating_sub(half);
        let jitter =
            rand::thread_rng().gen_range(0..=spread.as_millis().min(u128::from(u64::MAX)) as u64);
        half + Duration::from_millis(jitter)
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_within_jitter_bounds_and_cap() {
        let mut backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(30));
        let mut nominal = Duration::from_secs(2);
        for _ in 0..10 {
            let delay = backoff.next_delay();
            assert!(
                delay >= nominal / 2 && delay <= nominal,
                "{delay:?} vs {nominal:?}"
            );
            nominal = (nominal * 2).min(Duration::from_secs(30));
        }
        backoff.reset();
        assert_eq!(backoff.nominal(), Duration::from_secs(2));
    }

    #[test]
    fn huge_failure_counts_saturate() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_mins(5));
        for _ in 0..200 {
            assert!(backoff.next_delay() <= Duration::from_mins(5));
        }
    }
}
