//! Rate limiting: the sidecar paces the app's calls so FinCode never has to.
//!
//! Two sources of "slow down" are honoured in one place:
//! - local token buckets ([`governor`]'s GCRA): a global one and tighter ones per route
//!   template (create-transaction by default). A request over the rate waits its turn
//!   for up to `rate_limit.max_wait`, then gets 429 `rate_limited` with `Retry-After`;
//! - FinCode's own 429s: the retry layer reports each one to the shared [`Throttle`],
//!   and every request to that route then waits out FinCode's `Retry-After` (or
//!   `rate_limit.upstream_backoff`) here, instead of each request discovering the 429 on
//!   its own and adding to the pressure.

mod clock;
mod layer;
mod limits;
mod metrics;
mod service;
mod throttle;

#[cfg(test)]
mod tests;

pub use self::{
    layer::{PendingLimits, RateLimitLayer},
    service::RateLimit,
    throttle::Throttle,
};
