//! Error responder: the layer that turns a [`SidecarError`] from any inner layer into
//! the problem+json response the app receives. The body itself is rendered by
//! [`SidecarError::to_response`], the one problem+json builder; this layer only decides
//! where errors stop being errors.
//!
//! It sits inside correlation so that every error carries the request's id, and inside
//! the observe layer so that the access log and metrics see the answer the app got;
//! everything outside it sees only responses (`Error = Infallible`), which is what the
//! HTTP server needs.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::{Either, Full};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::{ATTEMPTS_HEADER, SidecarError, correlation::RequestId, observe::Tries};

/// A response body: FinCode's streamed through, or one the sidecar wrote.
pub type ResponseBody<B> = Either<B, Full<Bytes>>;

/// Adds [`ErrorResponder`] to a stack.
#[derive(Clone, Copy, Debug, Default)]
pub struct ErrorResponderLayer(());

/// Turns inner [`SidecarError`]s into problem+json responses.
#[derive(Clone, Debug)]
pub struct ErrorResponder<S> {
    inner: S,
}

// === impl ErrorResponderLayer ===

impl ErrorResponderLayer {
    /// The layer; it has no configuration.
    pub fn new() -> Self {
        Self(())
    }
}

impl<S> Layer<S> for ErrorResponderLayer {
    type Service = ErrorResponder<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ErrorResponder { inner }
    }
}

// === impl ErrorResponder ===

impl<S, B, RB> Service<Request<B>> for ErrorResponder<S>
where
    S: Service<Request<B>, Response = Response<RB>, Error = SidecarError>,
{
    type Response = Response<ResponseBody<RB>>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Inner layers of this proxy are always ready; a readiness error would have
        // no request to answer, so it is surfaced on the next call instead.
        match self.inner.poll_ready(cx) {
            Poll::Ready(_) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let id = req
            .extensions()
            .get::<RequestId>()
            .cloned()
            .unwrap_or_else(RequestId::mint);
        let tries = req.extensions().get::<Tries>().cloned();
        ResponseFuture {
            inner: self.inner.call(req),
            id,
            tries,
        }
    }
}

pin_project! {
    /// Maps the inner result to a response.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        id: RequestId,
        tries: Option<Tries>,
    }
}

impl<F, RB> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<RB>, SidecarError>>,
{
    type Output = Result<Response<ResponseBody<RB>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = match std::task::ready!(this.inner.poll(cx)) {
            Ok(response) => response.map(Either::Left),
            Err(error) => {
                tracing::debug!(
                    error.kind = error.kind().code(),
                    detail = error.detail(),
                    "sidecar error"
                );
                let mut response = error.to_response::<Full<Bytes>>(this.id.as_str());
                // The observe layer counts errors by kind from here.
                response.extensions_mut().insert(error.kind());
                response.map(Either::Right)
            }
        };
        // Every answer, FinCode's or ours, says how many tries it took.
        if let Some(tries) = this.tries {
            response
                .headers_mut()
                .insert(ATTEMPTS_HEADER, HeaderValue::from(tries.count()));
        }
        Poll::Ready(Ok(response))
    }
}
