//! [`BreakerLayer`]: puts a [`CircuitBreaker`](super::CircuitBreaker) in front of a service.

use super::Breaker;
use crate::admit::AdmitLayer;

/// Adds [`CircuitBreaker`](super::CircuitBreaker) to a stack.
pub type BreakerLayer = AdmitLayer<Breaker>;

// === impl BreakerLayer ===

impl BreakerLayer {
    /// Guards the inner service with `breaker`; clones of it share its state.
    pub fn new(breaker: Breaker) -> Self {
        Self { admission: breaker }
    }
}
