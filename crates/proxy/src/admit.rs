//! A layer that admits each request or refuses it at once, and holds what admission
//! handed out until the response head is ready (the circuit breaker's ticket, load
//! shedding's permit): [`AdmitLayer`] / [`Admit`] around an [`Admission`].
//!
//! The service struct, `Layer` impl, `poll_ready` and the refusal-or-admitted future are
//! the same for each; here they are written once and a layer keeps only its decision and
//! what its ticket does when the call ends. Generic, not boxed: nothing is added on the
//! hot path.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use fincode_server::hook::{Finish, OnReady};
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::SidecarError;

/// Whether the next request may go on.
pub trait Admission {
    /// What an admitted request holds until its response head is ready; its
    /// [`Finish`] sees the outcome.
    type Ticket;

    /// A ticket for the next request, or the error that answers it at once.
    fn admit(&self) -> Result<Self::Ticket, SidecarError>;

    /// What a refusal answers if polled again after it completed (the caller's bug):
    /// an error, or `None` to stay pending.
    fn refusal_polled_again() -> Option<SidecarError>;
}

/// Adds [`Admit`] with the admission `A` to a stack.
#[derive(Clone, Debug)]
pub struct AdmitLayer<A> {
    pub(crate) admission: A,
}

/// Asks `A` before each call; refused requests are answered at once.
#[derive(Clone, Debug)]
pub struct Admit<S, A> {
    inner: S,
    admission: A,
}

pin_project! {
    /// Either the refusal, ready at once, or the inner future with its ticket.
    // pin-project-lite takes no doc comments on variant fields.
    #[allow(missing_docs)]
    #[project = AdmitProj]
    pub enum AdmitFuture<F, A: Admission> {
        /// Admitted: the call, then the ticket's [`Finish`].
        Admitted {
            #[pin]
            inner: OnReady<F, A::Ticket>,
        },
        /// Refused before anything was sent.
        Refused {
            error: Option<SidecarError>,
        },
    }
}

// === impl AdmitLayer ===

impl<S, A: Clone> Layer<S> for AdmitLayer<A> {
    type Service = Admit<S, A>;

    fn layer(&self, inner: S) -> Self::Service {
        Admit {
            inner,
            admission: self.admission.clone(),
        }
    }
}

// === impl Admit ===

impl<S, A, B, RB> Service<Request<B>> for Admit<S, A>
where
    S: Service<Request<B>, Response = Response<RB>, Error = SidecarError>,
    A: Admission,
    A::Ticket:
        Finish<Result<Response<RB>, SidecarError>, Output = Result<Response<RB>, SidecarError>>,
{
    type Response = Response<RB>;
    type Error = SidecarError;
    type Future = AdmitFuture<S::Future, A>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Admission is decided per request in `call`, where the refusal can be answered;
        // readiness is the inner service's.
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        match self.admission.admit() {
            Ok(ticket) => AdmitFuture::Admitted {
                inner: OnReady::new(self.inner.call(req), ticket),
            },
            Err(error) => AdmitFuture::Refused { error: Some(error) },
        }
    }
}

// === impl AdmitFuture ===

impl<F, A, RB> Future for AdmitFuture<F, A>
where
    F: Future<Output = Result<Response<RB>, SidecarError>>,
    A: Admission,
    A::Ticket:
        Finish<Result<Response<RB>, SidecarError>, Output = Result<Response<RB>, SidecarError>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AdmitProj::Admitted { inner } => inner.poll(cx),
            AdmitProj::Refused { error } => match error.take().or_else(A::refusal_polled_again) {
                Some(error) => Poll::Ready(Err(error)),
                None => Poll::Pending,
            },
        }
    }
}
