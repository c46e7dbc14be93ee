//! Exponential backoff with full jitter for retries to FinCode.
//!
//! The wait before retry `n` (0-based) is uniform in `[0, min(cap, base * 2^n)]`: "full
//! jitter" from the AWS architecture blog's comparison, which spreads a crowd of clients
//! retrying the same outage the most for the least total wait. (Logins use equal jitter
//! instead, in `fincode_auth`, because there a minimum spacing matters more.)

use std::time::Duration;

use rand::Rng;

/// A full-jitter schedule; stateless, so one is shared by every request.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
}

// === impl Backoff ===

impl Backoff {
    /// Ceilings start at `base` and double up to `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap: cap.max(base),
        }
    }

    /// The ceiling of the wait before retry `retry` (0 for the first retry).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.min(31));
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// A wait before retry `retry`, uniform in `[0, ceiling]`.
    pub fn delay(&self, retry: u32) -> Duration {
        let ceiling = self.ceiling(retry);
        let micros = u64::try_from(ceiling.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(rand::thread_rng().gen_range(0..=micros))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_up_to_the_cap() {
        let backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
        let ceilings: Vec<_> = (0..7).map(|n| backoff.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [50, 100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff.ceiling(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn delays_stay_within_zero_and_the_ceiling_and_spread_over_it() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        for retry in 0..6 {
            let ceiling = backoff.ceiling(retry);
            let delays: Vec<_> = (0..2000).map(|_| backoff.delay(retry)).collect();
            assert!(delays.iter().all(|d| *d <= ceiling), "retry {retry}");
            // Full jitter: both halves of the range are used (2000 draws; the chance of
            // missing a half is 2^-2000).
            assert!(delays.iter().any(|d| *d < ceiling / 2), "retry {retry}");
            assert!(delays.iter().any(|d| *d > ceiling / 2), "retry {retry}");
        }
    }

    #[test]
    fn a_cap_below_the_base_is_the_base() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_millis(10));
        assert_eq!(backoff.ceiling(5), Duration::from_secs(1));
    }
}
