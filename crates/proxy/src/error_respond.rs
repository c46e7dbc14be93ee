//! Error responder: the layer that turns a [`SidecarError`] from any inner layer into
//! the problem+json response the app receives. The body itself is rendered by
//! [`SidecarError::to_response`], the one problem+json builder; this layer only decides
//! where errors stop being errors.
//!
//! It sits inside correlation so that every error carries the request's id, and inside
//! the observe layer so that the access log and metrics see the answer the app got;
//! everything outside it sees only responses (`Error = Infallible`), which is what the
//! HTTP server needs. An inner readiness error has no request to answer yet, so it is
//! kept and becomes the answer to the next request, as an error in `call` would.

use std::{
    convert::Infallible,
    task::{Context, Poll},
};

use bytes::Bytes;
use fincode_server::hook::{Finish, OnReady};
use futures_util::future;
use http::{HeaderValue, Request, Response};
use http_body_util::{Either, Full};
use tower::{Layer, Service};

use crate::{
    ATTEMPTS_HEADER, SidecarError,
    correlation::{Correlated, RequestId},
    observe::{Counted, Tries},
};

/// A response body: FinCode's streamed through, or one the sidecar wrote.
pub type ResponseBody<B> = Either<B, Full<Bytes>>;

/// Adds [`ErrorResponder`] to a stack.
#[derive(Clone, Copy, Debug, Default)]
pub struct ErrorResponderLayer(());

/// Turns inner [`SidecarError`]s into problem+json responses.
#[derive(Debug)]
pub struct ErrorResponder<S> {
    inner: S,
    /// The inner service's readiness error, answered on the next call.
    not_ready: Option<SidecarError>,
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
        ErrorResponder {
            inner,
            not_ready: None,
        }
    }
}

// === impl ErrorResponder ===

// Manual impl: a clone is a fresh service, without this one's pending readiness error.
impl<S: Clone> Clone for ErrorResponder<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            not_ready: None,
        }
    }
}

impl<S, B, RB> Service<Request<B>> for ErrorResponder<S>
where
    S: Service<Request<B>, Response = Response<RB>, Error = SidecarError>,
{
    type Response = Response<ResponseBody<RB>>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future, RB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.not_ready.is_some() {
            return Poll::Ready(Ok(()));
        }
        // A readiness error has no request to answer: it answers the next call.
        if let Err(error) = std::task::ready!(self.inner.poll_ready(cx)) {
            self.not_ready = Some(error);
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let id = req
            .extensions()
            .get::<Correlated>()
            .map_or_else(RequestId::mint, |c| c.id.clone());
        let tries = req
            .extensions()
            .get::<Counted>()
            .map(|counted| counted.tries.clone());
        // The inner service was not made ready: it must not be called.
        let inner = match self.not_ready.take() {
            Some(error) => future::Either::Right(future::ready(Err(error))),
            None => future::Either::Left(self.inner.call(req)),
        };
        OnReady::new(inner, Answer { id, tries })
    }
}

/// Maps the inner result to a response: the inner call, or the inner service's
/// readiness error, then the [`Answer`].
pub type ResponseFuture<F, RB> =
    OnReady<future::Either<F, future::Ready<Result<Response<RB>, SidecarError>>>, Answer>;

/// What the answer to a request needs: its correlation id, and its try count.
#[derive(Debug)]
pub struct Answer {
    id: RequestId,
    tries: Option<Tries>,
}

// === impl Answer ===

impl<RB> Finish<Result<Response<RB>, SidecarError>> for Answer {
    type Output = Result<Response<ResponseBody<RB>>, Infallible>;

    fn finish(&mut self, result: Result<Response<RB>, SidecarError>) -> Self::Output {
        let mut response = match result {
            Ok(response) => response.map(Either::Left),
            Err(error) => {
                tracing::debug!(
                    error.kind = error.kind().code(),
                    detail = error.detail(),
                    "sidecar error"
                );
                let mut response = error.to_response::<Full<Bytes>>(self.id.as_str());
                // The observe layer counts errors by kind from here.
                response.extensions_mut().insert(error.kind());
                response.map(Either::Right)
            }
        };
        // Every answer, FinCode's or ours, says how many tries it took.
        if let Some(tries) = &self.tries {
            response
                .headers_mut()
                .insert(ATTEMPTS_HEADER, count_value(tries.count()));
        }
        Ok(response)
    }
}

/// A count as a header value: the usual single digits from static text (no formatting,
/// nothing allocated on every answer), anything else formatted.
fn count_value(count: u32) -> HeaderValue {
    const DIGITS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    usize::try_from(count)
        .ok()
        .and_then(|n| DIGITS.get(n))
        .map_or_else(
            || HeaderValue::from(count),
            |digit| HeaderValue::from_static(digit),
        )
}

#[cfg(test)]
mod tests {
    use std::task::{Context, Poll};

    #[test]
    fn counts_read_as_their_decimal_text() {
        for count in [0, 1, 9, 10, 11, 123, u32::MAX] {
            assert_eq!(super::count_value(count), count.to_string().as_str());
        }
    }

    use http::{Request, Response, StatusCode};
    use http_body_util::Full;
    use tower::{Layer, Service, ServiceExt};

    use super::ErrorResponderLayer;
    use crate::{ErrorKind, SIDECAR_ERROR_HEADER, SidecarError};

    /// Fails readiness once, then answers 200; counts the calls it got.
    struct FailsReadinessOnce {
        failed: bool,
        calls: usize,
    }

    impl Service<Request<Full<bytes::Bytes>>> for FailsReadinessOnce {
        type Response = Response<Full<bytes::Bytes>>;
        type Error = SidecarError;
        type Future = std::future::Ready<Result<Self::Response, SidecarError>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), SidecarError>> {
            if self.failed {
                return Poll::Ready(Ok(()));
            }
            self.failed = true;
            Poll::Ready(Err(SidecarError::new(
                ErrorKind::Overloaded,
                "not ready in this test",
            )))
        }

        fn call(&mut self, _: Request<Full<bytes::Bytes>>) -> Self::Future {
            self.calls += 1;
            std::future::ready(Ok(Response::new(Full::default())))
        }
    }

    /// One request through `service`, once it is ready.
    async fn send<S>(service: &mut S) -> S::Response
    where
        S: Service<Request<Full<bytes::Bytes>>, Error: std::fmt::Debug>,
    {
        service
            .ready()
            .await
            .unwrap()
            .call(Request::new(Full::default()))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_readiness_error_answers_the_next_request_without_calling_the_inner_service() {
        let mut service = ErrorResponderLayer::new().layer(FailsReadinessOnce {
            failed: false,
            calls: 0,
        });
        let response = send(&mut service).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.headers()[SIDECAR_ERROR_HEADER],
            ErrorKind::Overloaded.code()
        );
        assert_eq!(response.extensions().get(), Some(&ErrorKind::Overloaded));
        assert_eq!(service.inner.calls, 0, "an unready service is never called");

        // The error was answered once; the service is ready again.
        let response = send(&mut service).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(service.inner.calls, 1);
    }
}
