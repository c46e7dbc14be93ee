//! [`CircuitBreaker`]: asks the [`Breaker`] before each call.

use std::task::{Context, Poll};

use http::{Request, Response};
use tower::Service;

use super::{
    Breaker,
    future::{Kind, ResponseFuture},
};
use crate::SidecarError;

/// Refuses requests while the [`Breaker`] is open and reports each outcome to it.
#[derive(Clone, Debug)]
pub struct CircuitBreaker<S> {
    pub(super) inner: S,
    pub(super) breaker: Breaker,
}

// === impl CircuitBreaker ===

impl<S, B, RB> Service<Request<B>> for CircuitBreaker<S>
where
    S: Service<Request<B>, Response = Response<RB>, Error = SidecarError>,
{
    type Response = Response<RB>;
    type Error = SidecarError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Admission is decided per request in `call`, where the refusal can be answered;
        // readiness is the inner service's.
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let kind = match self.breaker.admit() {
            Ok(ticket) => Kind::Admitted {
                future: self.inner.call(req),
                ticket,
            },
            Err(error) => Kind::Refused { error: Some(error) },
        };
        ResponseFuture { kind }
    }
}
