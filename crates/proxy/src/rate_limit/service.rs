//! [`RateLimit`]: waits for each request's turn before calling the inner service.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use arc_swap::ArcSwap;
use futures_util::future::Either;
use http::{Request, Response};
use tower::{Service, ServiceExt};

use super::limits::{Limits, Look};
use crate::{
    SidecarError,
    observe::Counted,
    svc::{BoxResponseFuture, take_ready},
};

/// Paces requests by the local buckets and FinCode's 429s.
#[derive(Clone, Debug)]
pub struct RateLimit<S> {
    pub(super) inner: S,
    pub(super) limits: Arc<ArcSwap<Limits>>,
}

// === impl RateLimit ===

impl<S, B, RB> Service<Request<B>> for RateLimit<S>
where
    S: Service<Request<B>, Response = Response<RB>, Error = SidecarError> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = Response<RB>;
    type Error = SidecarError;
    type Future = Either<S::Future, BoxResponseFuture<RB>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let route = Counted::route_of(req.extensions());
        let look = self.limits.load().look(route);
        if let Look::Go = look {
            // Its turn now (almost every request): straight to the inner service, which
            // `poll_ready` made ready, with nothing allocated.
            return Either::Left(self.inner.call(req));
        }
        let inner = take_ready(&mut self.inner);
        let limits = self.limits.load_full();
        Either::Right(Box::pin(async move {
            limits.admit_after(route, look).await?;
            inner.oneshot(req).await
        }))
    }
}
