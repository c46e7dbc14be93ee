//! Catch-panic for every listener: a panic in a handler is a bug, but it must not turn
//! into a connection dropped with no answer (a kubelet probe reads that as a dead pod,
//! FinCode as a failed delivery, and over HTTP/2 every other stream on the connection
//! would go too). The client gets a bare 500 and the panic is counted in
//! `fincode_listener_panics_total{listener}`.
//!
//! The answer carries no part of the panic's message: it is formatted from request data
//! and would bypass redaction. The process's panic hook logs where it happened. The
//! egress stack has its own, richer catch-panic (problem+json with a correlation id) on
//! the outside, so the egress server turns this one off
//! (`Server::panics_answered_by_service`).

use std::{
    convert::Infallible,
    future::Future,
    panic::{AssertUnwindSafe, catch_unwind},
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{Either, Full};
use pin_project_lite::pin_project;
use tower::Service;

use crate::metrics::ListenerMetrics;

const BODY: &str = "internal error\n";

/// Answers 500 when the inner service panics, in `call` or in its future.
#[derive(Clone)]
pub(crate) struct CatchPanic<S> {
    inner: S,
    metrics: ListenerMetrics,
    /// Off when the service answers its own panics (the egress stack): no second
    /// `catch_unwind` per poll on the hot path.
    enabled: bool,
}

// === impl CatchPanic ===

impl<S> CatchPanic<S> {
    pub(crate) fn new(inner: S, metrics: ListenerMetrics, enabled: bool) -> Self {
        Self {
            inner,
            metrics,
            enabled,
        }
    }
}

impl<S, ReqB, B> Service<Request<ReqB>> for CatchPanic<S>
where
    S: Service<Request<ReqB>, Response = Response<B>, Error = Infallible>,
{
    type Response = Response<Either<B, Full<Bytes>>>;
    type Error = Infallible;
    type Future = CatchPanicFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        // The service is cloned per connection; one that panicked in `call` may be in a
        // bad state, but only this connection's later requests could meet it.
        let inner = if self.enabled {
            catch_unwind(AssertUnwindSafe(|| self.inner.call(req))).ok()
        } else {
            Some(self.inner.call(req))
        };
        CatchPanicFuture {
            inner,
            metrics: self.metrics.clone(),
            enabled: self.enabled,
        }
    }
}

pin_project! {
    /// The inner response, or the 500 if it panicked.
    pub(crate) struct CatchPanicFuture<F> {
        #[pin]
        inner: Option<F>,
        metrics: ListenerMetrics,
        enabled: bool,
    }
}

impl<F, B> Future for CatchPanicFuture<F>
where
    F: Future<Output = Result<Response<B>, Infallible>>,
{
    type Output = Result<Response<Either<B, Full<Bytes>>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(mut inner) = this.inner.as_mut().as_pin_mut() {
            if !*this.enabled {
                return inner.as_mut().poll(cx).map_ok(|r| r.map(Either::Left));
            }
            match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
                Ok(Poll::Pending) => return Poll::Pending,
                Ok(Poll::Ready(Ok(response))) => {
                    return Poll::Ready(Ok(response.map(Either::Left)));
                }
                // Never poll a future that panicked again.
                Err(_) => this.inner.set(None),
            }
        }
        this.metrics.panicked();
        tracing::error!(
            listener = this.metrics.listener(),
            "a request handler panicked (a bug); answered 500"
        );
        Poll::Ready(Ok(internal_error().map(Either::Right)))
    }
}

fn internal_error() -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(BODY.as_bytes())));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
