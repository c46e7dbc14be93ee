#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]
//! The one exponential backoff policy of the sidecar, and the one `Retry-After` parser
//! ([`retry_after`]): when to try again, whoever is trying.
//!
//! The ceiling of the wait before retry `n` (0-based) is `min(cap, base * 2^n)`; the wait
//! itself is drawn below it with one of two jitters (from the AWS architecture blog's
//! comparison):
//!
//! - [`Jitter::Full`]: uniform in `[0, ceiling]`. It spreads a crowd of clients retrying
//!   the same outage the most for the least total wait: retries to FinCode, webhook
//!   deliveries to the app.
//! - [`Jitter::Equal`]: uniform in `[ceiling/2, ceiling]`. It never waits less than half
//!   the ceiling, which is what a login endpoint that locks accounts needs: attempts are
//!   guaranteed to be spaced out, and still spread so that pods restarting together do
//!   not log in in lockstep.
//!
//! ```
//! use std::time::Duration;
//! use fincode_backoff::Backoff;
//!
//! let backoff = Backoff::full_jitter(Duration::from_millis(50), Duration::from_secs(2));
//! assert_eq!(backoff.ceiling(3), Duration::from_millis(400));
//! assert!(backoff.delay(3) <= Duration::from_millis(400));
//! ```

pub mod retry_after;

use std::time::Duration;

use rand::Rng;

/// How the wait is drawn below the ceiling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jitter {
    /// Uniform in `[0, ceiling]`.
    Full,
    /// Uniform in `[ceiling / 2, ceiling]`.
    Equal,
}

/// An exponential backoff policy; stateless, so one is shared by every request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    jitter: Jitter,
}

// === impl Backoff ===

impl Backoff {
    /// Ceilings from `base` doubling up to `cap`, waits uniform below the ceiling.
    pub fn full_jitter(base: Duration, cap: Duration) -> Self {
        Self::new(base, cap, Jitter::Full)
    }

    /// Ceilings from `base` doubling up to `cap`, waits at least half the ceiling.
    pub fn equal_jitter(base: Duration, cap: Duration) -> Self {
        Self::new(base, cap, Jitter::Equal)
    }

    /// A cap below the base is taken as the base.
    pub fn new(base: Duration, cap: Duration, jitter: Jitter) -> Self {
        Self {
            base,
            cap: cap.max(base),
            jitter,
        }
    }

    /// The ceiling of the wait before retry `retry` (0 for the first retry).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.min(31));
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// A wait before retry `retry`, drawn with the policy's jitter.
    pub fn delay(&self, retry: u32) -> Duration {
        let ceiling = self.ceiling(retry);
        let floor = match self.jitter {
            Jitter::Full => Duration::ZERO,
            Jitter::Equal => ceiling / 2,
        };
        let spread = u64::try_from(ceiling.saturating_sub(floor).as_micros()).unwrap_or(u64::MAX);
        floor + Duration::from_micros(rand::thread_rng().gen_range(0..=spread))
    }

    /// A counter of consecutive failures using this policy, for one thing retried over
    /// time (a login, one webhook event).
    pub fn streak(self) -> Streak {
        Streak {
            backoff: self,
            failures: 0,
        }
    }
}

/// Consecutive failures of one thing, and the wait their number calls for.
#[derive(Clone, Debug)]
pub struct Streak {
    backoff: Backoff,
    failures: u32,
}

// === impl Streak ===

impl Streak {
    /// Records a failure and returns how long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.backoff.delay(self.failures);
        self.failures = self.failures.saturating_add(1);
        delay
    }

    /// The ceiling of the next wait (what [`Streak::next_delay`] would draw below).
    pub fn ceiling(&self) -> Duration {
        self.backoff.ceiling(self.failures)
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
    fn ceilings_double_up_to_the_cap() {
        let backoff = Backoff::full_jitter(Duration::from_millis(50), Duration::from_secs(1));
        let ceilings: Vec<_> = (0..7).map(|n| backoff.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [50, 100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff.ceiling(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn full_jitter_spreads_over_the_whole_range() {
        let backoff = Backoff::full_jitter(Duration::from_millis(100), Duration::from_secs(2));
        for retry in 0..6 {
            let ceiling = backoff.ceiling(retry);
            let delays: Vec<_> = (0..2000).map(|_| backoff.delay(retry)).collect();
            assert!(delays.iter().all(|d| *d <= ceiling), "retry {retry}");
            // Both halves are used (2000 draws; the chance of missing one is 2^-2000).
            assert!(delays.iter().any(|d| *d < ceiling / 2), "retry {retry}");
            assert!(delays.iter().any(|d| *d > ceiling / 2), "retry {retry}");
        }
    }

    #[test]
    fn equal_jitter_never_waits_less_than_half() {
        let backoff = Backoff::equal_jitter(Duration::from_secs(2), Duration::from_secs(30));
        for retry in 0..10 {
            let ceiling = backoff.ceiling(retry);
            for _ in 0..500 {
                let delay = backoff.delay(retry);
                assert!(
                    delay >= ceiling / 2 && delay <= ceiling,
                    "{delay:?} vs {ceiling:?}"
                );
            }
        }
    }

    #[test]
    fn a_streak_grows_and_resets() {
        let mut streak =
            Backoff::equal_jitter(Duration::from_secs(1), Duration::from_mins(5)).streak();
        assert_eq!(streak.ceiling(), Duration::from_secs(1));
        for _ in 0..200 {
            assert!(streak.next_delay() <= Duration::from_mins(5));
        }
        assert_eq!(streak.ceiling(), Duration::from_mins(5));
        streak.reset();
        assert_eq!(streak.ceiling(), Duration::from_secs(1));
    }

    #[test]
    fn a_cap_below_the_base_is_the_base() {
        let backoff = Backoff::full_jitter(Duration::from_secs(1), Duration::from_millis(10));
        assert_eq!(backoff.ceiling(5), Duration::from_secs(1));
    }
}
