//! The failure-ratio window: a fixed ring of per-slice outcome counts.

use std::time::Duration;

use tokio::time::Instant;

/// How many slices the failure-ratio window is cut into. A fixed ring, so a flood of
/// requests costs counter increments, never memory. The window in effect is between
/// nine and ten tenths of `window` long (the oldest slice leaves whole).
const SLICES: usize = 10;

/// A ring of per-slice outcome counts covering `window`.
#[derive(Debug)]
pub(super) struct Window {
    origin: Instant,
    slice_nanos: u128,
    slices: [Slice; SLICES],
}

#[derive(Clone, Copy, Debug, Default)]
struct Slice {
    /// Which slice since `origin` these counts belong to; a stale index means empty.
    index: u64,
    requests: u32,
    failures: u32,
}

// === impl Window ===

impl Window {
    pub(super) fn new(window: Duration, origin: Instant) -> Self {
        Self {
            origin,
            // At least 1ns so the division below is defined; a zero window then holds
            // (almost) nothing and the ratio check stays quiet.
            slice_nanos: (window.as_nanos() / SLICES as u128).max(1),
            slices: [Slice::default(); SLICES],
        }
    }

    fn index(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(elapsed / self.slice_nanos).unwrap_or(u64::MAX)
    }

    pub(super) fn record(&mut self, now: Instant, failed: bool) {
        let index = self.index(now);
        let slice = &mut self.slices[(index % SLICES as u64) as usize];
        if slice.index != index {
            *slice = Slice {
                index,
                ..Slice::default()
            };
        }
        slice.requests = slice.requests.saturating_add(1);
        slice.failures = slice.failures.saturating_add(u32::from(failed));
    }

    /// `(requests, failures)` over the slices still inside the window.
    pub(super) fn totals(&self, now: Instant) -> (u32, u32) {
        let current = self.index(now);
        self.slices
            .iter()
            .filter(|slice| current - slice.index.min(current) < SLICES as u64)
            .fold((0u32, 0u32), |(requests, failures), slice| {
                (
                    requests.saturating_add(slice.requests),
                    failures.saturating_add(slice.failures),
                )
            })
    }

    pub(super) fn reset(&mut self) {
        self.slices = [Slice::default(); SLICES];
    }
}
