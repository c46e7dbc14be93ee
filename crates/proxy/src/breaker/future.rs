//! [`ResponseFuture`]: the refusal, or the admitted call that reports its outcome.

use fincode_server::hook::Finish;
use http::Response;

use super::{
    Breaker,
    state::{Outcome, Ticket},
};
use crate::{SidecarError, admit::AdmitFuture};

/// Either the refusal, ready at once, or the inner future with the ticket that reports
/// its outcome to the breaker.
pub type ResponseFuture<F> = AdmitFuture<F, Breaker>;

/// Reports the call's outcome to the breaker when it ends; `None` when the breaker is
/// disabled: nothing to report.
#[derive(Debug)]
pub struct Settle(pub(super) Option<Ticket>);

// === impl Settle ===

impl<RB> Finish<Result<Response<RB>, SidecarError>> for Settle {
    type Output = Result<Response<RB>, SidecarError>;

    fn finish(&mut self, result: Self::Output) -> Self::Output {
        if let Some(ticket) = self.0.take() {
            ticket.settle(Outcome::of(&result));
        }
        result
    }
}
