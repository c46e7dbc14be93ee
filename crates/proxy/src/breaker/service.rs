//! [`CircuitBreaker`]: asks the [`Breaker`] before each call.

use super::{Breaker, future::Settle};
use crate::{
    ErrorKind, SidecarError,
    admit::{Admission, Admit},
};

/// Refuses requests while the [`Breaker`] is open and reports each outcome to it.
pub type CircuitBreaker<S> = Admit<S, Breaker>;

// === impl Breaker ===

impl Admission for Breaker {
    type Ticket = Settle;

    fn admit(&self) -> Result<Settle, SidecarError> {
        self.ticket().map(Settle)
    }

    fn refusal_polled_again() -> Option<SidecarError> {
        // Polling a finished future is the caller's bug; answer it without a panic.
        Some(SidecarError::new(
            ErrorKind::CircuitOpen,
            "circuit breaker response polled after it completed",
        ))
    }
}
