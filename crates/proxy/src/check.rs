//! A layer that looks at each request and either passes it on or refuses it at once
//! (the guard, the size limits, the rewrite under `upstream.base_url`): [`CheckLayer`] /
//! [`Checked`] around a [`Check`].
//!
//! The service struct, `Layer` impl, `poll_ready` and the refuse-or-call future are the
//! same for each; here they are written once and a layer keeps only its check. Generic,
//! not boxed: nothing is added on the hot path.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use futures_util::future::{Either, Ready, ready};
use http::Request;
use tower::{Layer, Service};

use crate::SidecarError;

/// Whether a request goes on, and as what.
pub trait Check<B> {
    /// The request body the inner service gets.
    type Body;

    /// The request to pass on, or the error that answers it without calling the inner
    /// service.
    fn check(&self, req: Request<B>) -> Result<Request<Self::Body>, SidecarError>;
}

/// Adds [`Checked`] with the check `C` to a stack.
#[derive(Clone, Copy, Debug)]
pub struct CheckLayer<C> {
    pub(crate) check: C,
}

/// Runs `C` on each request: refused ones are answered at once.
#[derive(Clone, Copy, Debug)]
pub struct Checked<S, C> {
    inner: S,
    check: C,
}

// === impl Check ===

impl<B, C: Check<B>> Check<B> for Arc<C> {
    type Body = C::Body;

    fn check(&self, req: Request<B>) -> Result<Request<Self::Body>, SidecarError> {
        C::check(self, req)
    }
}

// === impl CheckLayer ===

impl<S, C: Clone> Layer<S> for CheckLayer<C> {
    type Service = Checked<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Checked {
            inner,
            check: self.check.clone(),
        }
    }
}

// === impl Checked ===

impl<S, C, B> Service<Request<B>> for Checked<S, C>
where
    C: Check<B>,
    S: Service<Request<C::Body>, Error = SidecarError>,
{
    type Response = S::Response;
    type Error = SidecarError;
    type Future = Either<Ready<Result<S::Response, SidecarError>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        match self.check.check(req) {
            Ok(req) => Either::Right(self.inner.call(req)),
            Err(error) => Either::Left(ready(Err(error))),
        }
    }
}
