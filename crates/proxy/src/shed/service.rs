//! [`LoadShed`]: takes a permit for each request, or refuses it at once.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use arc_swap::ArcSwap;
use http::{Request, Response};
use prometheus_client::metrics::counter::Counter;
use tower::Service;

use super::{
    future::{ResponseFuture, State},
    layer::Cap,
};
use crate::{ErrorKind, SidecarError};

/// Refuses requests beyond the in-flight cap.
#[derive(Clone, Debug)]
pub struct LoadShed<S> {
    pub(super) inner: S,
    pub(super) cap: Arc<ArcSwap<Cap>>,
    pub(super) shed: Counter,
}

// === impl LoadShed ===

impl<S, B, RB> Service<Request<B>> for LoadShed<S>
where
    S: Service<Request<B>, Response = Response<RB>, Error = SidecarError>,
{
    type Response = Response<RB>;
    type Error = SidecarError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let cap = self.cap.load();
        if let Ok(permit) = cap.permits.clone().try_acquire_owned() {
            return ResponseFuture {
                state: State::Admitted {
                    inner: self.inner.call(req),
                    permit: Some(permit),
                },
            };
        }
        self.shed.inc();
        let error = SidecarError::new(
            ErrorKind::Overloaded,
            format!(
                "{} requests are already in flight (limits.max_concurrent_requests); retry with backoff, or raise the limit if FinCode keeps up",
                cap.max
            ),
        );
        ResponseFuture {
            state: State::Shed { error: Some(error) },
        }
    }
}
