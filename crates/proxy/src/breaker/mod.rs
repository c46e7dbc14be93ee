//! Circuit breaker: after repeated FinCode failures the sidecar answers at once with 503
//! `circuit_open` instead of piling more requests onto an upstream that is down.
//!
//! A failing payment API usually fails slowly (connect and response timeouts), so every
//! request the app keeps sending would hold a connection, a task and an app thread for
//! the full timeout, and add load to an upstream that is trying to recover. Failing fast
//! gives the app an immediate answer it can act on (`Retry-After` says when to come back)
//! and gives FinCode room to recover.
//!
//! The three states, with the `[breaker]` keys that drive them:
//!
//! - **closed**: requests pass and their outcomes are counted. The breaker opens after
//!   `consecutive_failures` failures in a row, or when at least `failure_ratio` of the
//!   requests in the last `window` failed and that window holds at least `min_requests`
//!   (so three unlucky requests at night do not open it).
//! - **open**: every request is refused at once for `open_for`. The move to half-open
//!   happens on the first request (or [`Breaker::state`] call) after that.
//! - **half-open**: up to `half_open_probes` requests at a time go through as probes.
//!   That many successes close the breaker; a single failure opens it again.
//!
//! What counts: a *failure* is FinCode being unreachable, timing out, failing TLS, or
//! answering 500, 502, 503 or 504. Any other answer, 4xx and 429 included, is a *success*:
//! FinCode is up and deciding. Errors the sidecar made itself (body too large, no token,
//! rate limited...) say nothing about FinCode's health and are not counted at all.
//!
//! The state is exported as the gauge `fincode_circuit_breaker_state` (0 closed,
//! 1 half-open, 2 open) and the counter `fincode_circuit_breaker_transitions_total`.

mod future;
mod layer;
mod metrics;
mod service;
mod state;
mod window;

#[cfg(test)]
mod tests;

pub use self::{
    future::ResponseFuture,
    layer::BreakerLayer,
    service::CircuitBreaker,
    state::{Breaker, State},
};
