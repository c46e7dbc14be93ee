//! [`ResponseFuture`]: the refusal, or the admitted call that reports its outcome.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::Response;
use pin_project_lite::pin_project;

use super::state::{Outcome, Ticket};
use crate::{ErrorKind, SidecarError};

pin_project! {
    /// Either the refusal, ready at once, or the inner future with the ticket that
    /// reports its outcome to the breaker.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        pub(super) kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    pub(super) enum Kind<F> {
        Refused { error: Option<SidecarError> },
        Admitted {
            #[pin]
            future: F,
            // `None` when the breaker is disabled: nothing to report.
            ticket: Option<Ticket>,
        },
    }
}

// === impl ResponseFuture ===

impl<F, RB> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<RB>, SidecarError>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Refused { error } => Poll::Ready(Err(error.take().unwrap_or_else(|| {
                // Polling a finished future is the caller's bug; answer it without a panic.
                SidecarError::new(
                    ErrorKind::CircuitOpen,
                    "circuit breaker response polled after it completed",
                )
            }))),
            KindProj::Admitted { future, ticket } => {
                let result = std::task::ready!(future.poll(cx));
                if let Some(ticket) = ticket.take() {
                    ticket.settle(Outcome::of(&result));
                }
                Poll::Ready(result)
            }
        }
    }
}
