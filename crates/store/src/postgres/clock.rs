//! The database's clock for leases and due times, read through the caller's `now`.
//!
//! Replicas share leases, so "has this lease run out?" must be answered by one clock:
//! the database's. A replica whose clock runs a minute fast would otherwise take over
//! every lease thirty seconds early and deliver events twice. The trait (and the
//! conformance suite) still pass a caller `now`, so tests can move time without
//! sleeping; the backend reads it as an offset from the present:
//!
//! ```text
//! database now = caller now + (database clock - replica clock)
//! ```
//!
//! In production callers pass `SystemTime::now()`, so this is the database's clock; a
//! test that passes `now + 1 h` moves the database's "now" an hour forward.
//!
//! The brief behind this backend wrote it as `now() + (caller now - replica clock)`
//! inside each statement. That is the same sum, except that the statement's `now()` is
//! read a round trip (and, under load, a queue) after the replica's clock, so every
//! comparison would be off by that latency: a retry due at `t + 60 s` would already be
//! due at `t + 59.999 s`, and millisecond-exact times (which the conformance suite
//! checks) would hold only on an idle machine. So the difference between the two
//! clocks is measured apart from the statements instead (the sample with the shortest
//! round trip of a few, at connect and every [`REFRESH_EVERY`]) and added on the
//! replica: each statement then gets one fixed `now`, exactly the caller's when the
//! clocks agree.
//!
//! Differences under [`IGNORED_BELOW_MS`] count as none: they are measurement noise
//! (half a round trip) or irrelevant next to leases of tens of seconds, and ignoring
//! them keeps times exact when replica and database share a clock (one machine).
//!
//! Times stored in the database clock: `next_attempt_at` and `lease_until` (what claims
//! compare). Times that are records of what happened stay in the caller's clock:
//! `received_at` and `pending_since`. Reads convert `next_attempt_at` back to the
//! caller's clock, so what a caller writes it reads back unchanged.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use crate::sqlite::codec::to_millis;

/// How often the clock difference is measured again (a clock stepped by NTP, a
/// database failed over to another host).
pub(super) const REFRESH_EVERY: Duration = Duration::from_secs(30);

/// Clock differences smaller than this (in milliseconds) count as none.
pub(super) const IGNORED_BELOW_MS: i64 = 100;

/// Samples per measurement; the one with the shortest round trip wins.
pub(super) const SAMPLES: usize = 3;

/// The database clock, in microseconds since the epoch, as it is when the statement
/// runs (not `now()`, the transaction's start).
pub(super) const DATABASE_CLOCK_SQL: &str =
    "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint";

/// One reading of the database clock between two readings of the replica's, all in
/// microseconds since the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Sample {
    pub(super) replica_before: i64,
    pub(super) database: i64,
    pub(super) replica_after: i64,
}

// === impl Sample ===

impl Sample {
    fn round_trip(&self) -> i64 {
        self.replica_after.saturating_sub(self.replica_before)
    }
}

/// The database clock minus the replica's, in whole milliseconds, from the sample with
/// the shortest round trip (assumed to have read the database halfway through it);
/// 0 below [`IGNORED_BELOW_MS`] or without samples.
pub(super) fn offset_from_samples(samples: &[Sample]) -> i64 {
    let Some(best) = samples.iter().min_by_key(|sample| sample.round_trip()) else {
        return 0;
    };
    let midpoint = best.replica_before + best.round_trip() / 2;
    let offset = best.database.saturating_sub(midpoint) / 1000;
    if offset.abs() < IGNORED_BELOW_MS {
        0
    } else {
        offset
    }
}

/// `caller_now` (a time in the caller's clock) in the database's clock, in unix
/// milliseconds.
pub(super) fn database_millis(caller_now: SystemTime, offset_ms: i64) -> i64 {
    to_millis(caller_now).saturating_add(offset_ms)
}

/// The replica's clock in microseconds since the epoch.
pub(super) fn replica_micros() -> i64 {
    match SystemTime::now().duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_micros()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

/// The last measured offset and when it was measured.
#[derive(Debug)]
pub(super) struct Clock {
    offset_ms: AtomicI64,
    measured_at: Mutex<Instant>,
    /// One caller measures at a time; the others use the previous offset meanwhile.
    measuring: AtomicBool,
}

// === impl Clock ===

impl Clock {
    pub(super) fn new(offset_ms: i64) -> Self {
        Self {
            offset_ms: AtomicI64::new(offset_ms),
            measured_at: Mutex::new(Instant::now()),
            measuring: AtomicBool::new(false),
        }
    }

    pub(super) fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }

    /// Whether the caller should measure now: the offset is stale and nobody else is
    /// measuring. A caller that gets true must call [`Clock::measured`] afterwards.
    pub(super) fn start_measuring(&self) -> bool {
        let stale = self
            .measured_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .elapsed()
            >= REFRESH_EVERY;
        stale
            && self
                .measuring
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }

    /// Ends a measurement started by [`Clock::start_measuring`]; `None` when it failed
    /// (the old offset stays, and the next call tries again).
    pub(super) fn measured(&self, offset_ms: Option<i64>) {
        if let Some(offset_ms) = offset_ms {
            let old = self.offset_ms.swap(offset_ms, Ordering::Relaxed);
            if old != offset_ms {
                tracing::info!(
                    offset_ms,
                    "the database clock differs from this replica's; leases and due times follow the database"
                );
            }
            *self
                .measured_at
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Instant::now();
        }
        self.measuring.store(false, Ordering::Release);
    }
}
