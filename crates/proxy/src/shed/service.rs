//! [`LoadShed`]: takes a permit for each request, or refuses it at once.

use super::{future::Permit, layer::Shedder};
use crate::{
    ErrorKind, SidecarError,
    admit::{Admission, Admit},
};

/// Refuses requests beyond the in-flight cap.
pub type LoadShed<S> = Admit<S, Shedder>;

// === impl Shedder ===

impl Admission for Shedder {
    type Ticket = Permit;

    fn admit(&self) -> Result<Permit, SidecarError> {
        let cap = self.cap.load();
        if let Ok(permit) = cap.permits.clone().try_acquire_owned() {
            return Ok(Permit(Some(permit)));
        }
        self.shed.inc();
        Err(SidecarError::new(
            ErrorKind::Overloaded,
            format!(
                "{} requests are already in flight (limits.max_concurrent_requests); retry with backoff, or raise the limit if FinCode keeps up",
                cap.max
            ),
        ))
    }

    fn refusal_polled_again() -> Option<SidecarError> {
        // Polled again after completion.
        None
    }
}
