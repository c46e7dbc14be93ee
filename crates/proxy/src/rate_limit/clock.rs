//! The token buckets read tokio's clock, not governor's default (the wall/monotonic one).
//!
//! Everything else that waits in this layer (the sleep until a token is due, FinCode's
//! pauses in [`Throttle`](super::Throttle), `max_wait`) already runs on
//! [`tokio::time::Instant`]; a bucket on another clock would disagree with them the
//! moment tokio's time is paused, and the unit tests could only wait for a token by
//! sleeping on the wall clock. Outside a paused test runtime `tokio::time::Instant::now()`
//! is the monotonic clock, so production behaviour is what governor's default gives.

use std::{ops::Add, time::Duration};

use governor::{
    RateLimiter,
    clock::{Clock, Reference},
    middleware::NoOpMiddleware,
    nanos::Nanos,
    state::{InMemoryState, NotKeyed},
};
use tokio::time::Instant;

/// A token bucket on tokio's clock.
pub(super) type Bucket =
    RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<TokioInstant>>;

/// governor's [`Clock`] reading [`tokio::time::Instant::now`].
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct TokioClock;

/// A [`tokio::time::Instant`] as governor's [`Reference`] point in time. A newtype because
/// neither the trait nor `Add<Nanos>` can be implemented on tokio's type here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct TokioInstant(Instant);

// === impl TokioClock ===

impl Clock for TokioClock {
    type Instant = TokioInstant;

    fn now(&self) -> Self::Instant {
        TokioInstant(Instant::now())
    }
}

// === impl TokioInstant ===

impl Add<Nanos> for TokioInstant {
    type Output = Self;

    fn add(self, other: Nanos) -> Self {
        Self(self.0 + Duration::from(other))
    }
}

impl Reference for TokioInstant {
    fn duration_since(&self, earlier: Self) -> Nanos {
        self.0.saturating_duration_since(earlier.0).into()
    }

    fn saturating_sub(&self, duration: Nanos) -> Self {
        self.0.checked_sub(duration.into()).map_or(*self, Self)
    }
}
