//! [`Throttle`]: the pauses FinCode's 429s ask for, per route.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;

/// Per-route pauses ordered by FinCode's 429s, shared by the retry layer (which hears
/// them) and the rate limiter (which enforces them). Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Throttle {
    until: Arc<Mutex<HashMap<&'static str, Instant>>>,
    /// Whether `until` may hold a pause: almost never, so a request's look at the pauses
    /// costs one shared read, not a lock both workers take and a clock read.
    any: Arc<AtomicBool>,
}

// === impl Throttle ===

impl Throttle {
    /// FinCode answered 429 on `route`: hold that route's requests for `pause`. A later
    /// pause never shortens an earlier, longer one.
    pub fn pause(&self, route: &'static str, pause: Duration) {
        let until = Instant::now() + pause;
        let mut map = self.until.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = map.entry(route).or_insert(until);
        *entry = (*entry).max(until);
        self.any.store(true, Ordering::Release);
    }

    /// When `route` may be called again, if FinCode asked for a pause that has not ended.
    pub(super) fn paused_until(&self, route: &'static str) -> Option<Instant> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let now = Instant::now();
        let mut map = self.until.lock().unwrap_or_else(PoisonError::into_inner);
        let paused = match map.get(route) {
            Some(until) if *until > now => Some(*until),
            Some(_) => {
                map.remove(route);
                None
            }
            None => None,
        };
        // Cleared under the lock that `pause` sets it under, so a pause is never hidden.
        if map.is_empty() {
            self.any.store(false, Ordering::Release);
        }
        paused
    }
}
