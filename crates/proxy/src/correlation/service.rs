use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use http::{HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tower::Service;

use super::{RequestId, TRACEPARENT, TRACESTATE, TraceContext, X_REQUEST_ID};

/// Stamps the correlation id on the request and echoes it on the response.
#[derive(Clone, Debug)]
pub struct Correlation<S> {
    pub(super) inner: S,
    pub(super) sample_ratio: f64,
}

impl<S, B, RB> Service<Request<B>> for Correlation<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let id = RequestId::from_headers(req.headers());
        let value = id.header_value().clone();
        req.headers_mut().insert(&X_REQUEST_ID, value.clone());
        req.extensions_mut().insert(id);
        let trace = TraceContext::from_headers(req.headers(), self.sample_ratio);
        if trace.parent_span_id.is_none() {
            // tracestate only means something alongside the traceparent it came with.
            req.headers_mut().remove(&TRACESTATE);
        }
        req.headers_mut().insert(&TRACEPARENT, trace.traceparent());
        req.extensions_mut().insert(trace);
        ResponseFuture {
            inner: self.inner.call(req),
            id: Some(value),
        }
    }
}

pin_project! {
    /// Echoes the id on the response once it is ready.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        id: Option<HeaderValue>,
    }
}

impl<F, RB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = Result<Response<RB>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = std::task::ready!(this.inner.poll(cx))?;
        if let Some(id) = this.id.take() {
            response.headers_mut().insert(&X_REQUEST_ID, id);
        }
        Poll::Ready(Ok(response))
    }
}
