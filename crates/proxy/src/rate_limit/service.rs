//! [`RateLimit`]: waits for each request's turn before calling the inner service.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use arc_swap::ArcSwap;
use http::{Request, Response};
use tower::{Service, ServiceExt};

use super::limits::Limits;
use crate::{
    SidecarError,
    routes::{OTHER, Route},
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
    type Future = Pin<Box<dyn Future<Output = Result<Response<RB>, SidecarError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let limits = self.limits.load_full();
        let route = req.extensions().get::<Route>().map_or(OTHER, |r| r.0);
        Box::pin(async move {
            limits.admit(route).await?;
            inner.oneshot(req).await
        })
    }
}
