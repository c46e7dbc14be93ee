//! [`BreakerLayer`]: puts a [`CircuitBreaker`] in front of a service.

use tower::Layer;

use super::{Breaker, CircuitBreaker};

/// Adds [`CircuitBreaker`] to a stack.
#[derive(Clone, Debug)]
pub struct BreakerLayer {
    breaker: Breaker,
}

// === impl BreakerLayer ===

impl BreakerLayer {
    /// Guards the inner service with `breaker`; clones of it share its state.
    pub fn new(breaker: Breaker) -> Self {
        Self { breaker }
    }
}

impl<S> Layer<S> for BreakerLayer {
    type Service = CircuitBreaker<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker {
            inner,
            breaker: self.breaker.clone(),
        }
    }
}
