//! Catch-panic: the outermost layer. A panic anywhere in the stack is a bug, but it must
//! not turn into a connection dropped without an answer: for a POST the app could not
//! tell whether FinCode received it, and over HTTP/2 every other request on the
//! connection would go too. The app gets a 500 problem+json (`x-sidecar-error:
//! internal`) instead, and the process keeps serving.
//!
//! Written here rather than taken from tower-http: its `CatchPanic` boxes every response
//! body, on every request, to handle the rare one that panics. This one keeps the body
//! type (`Either`) and costs one header lookup per request.
//!
//! The answer carries the app's `X-Request-ID` when it sent one; otherwise a fresh id,
//! logged with the panic, since the id the correlation layer minted was unwound with
//! the panic. The panic's message is not logged here (it could hold request data); the
//! default panic hook reports where it happened. The observe layer was unwound too, so
//! this layer counts the 500 itself (server duration with route `other`, and the
//! sidecar error `internal`): the error-rate alert sees panics.

use std::{
    convert::Infallible,
    future::Future,
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use bytes::Bytes;
use fincode_telemetry::{HttpLabels, HttpMetrics};
use futures_util::{FutureExt, future::CatchUnwind};
use http::{Request, Response};
use http_body_util::{Either, Full};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::{
    ErrorKind, SidecarError,
    correlation::{RequestId, X_REQUEST_ID},
    observe::method_label,
    routes::OTHER,
};

/// Adds [`CatchPanic`] to a stack.
#[derive(Clone, Debug)]
pub struct CatchPanicLayer {
    metrics: Arc<HttpMetrics>,
}

/// Answers 500 problem+json when the inner service panics.
#[derive(Clone, Debug)]
pub struct CatchPanic<S> {
    inner: S,
    /// Behind one `Arc`: every response future holds it, and `HttpMetrics` is a dozen
    /// shared counts to touch on each clone and drop.
    metrics: Arc<HttpMetrics>,
}

// === impl CatchPanicLayer ===

impl CatchPanicLayer {
    /// Counts the panics' 500s into `metrics`.
    pub fn new(metrics: HttpMetrics) -> Self {
        Self {
            metrics: Arc::new(metrics),
        }
    }
}

impl<S> Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CatchPanic {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

// === impl CatchPanic ===

impl<S, B, RB> Service<Request<B>> for CatchPanic<S>
where
    S: Service<Request<B>, Response = Response<RB>, Error = Infallible>,
{
    type Response = Response<Either<RB, Full<Bytes>>>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let id = RequestId::from_app(req.headers());
        let method = method_label(req.method());
        // The stack is cloned per request, so a service that panicked in `call` is not
        // used again.
        let inner = std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(req)))
            .ok()
            .map(|future| AssertUnwindSafe(future).catch_unwind());
        ResponseFuture {
            inner,
            id,
            method,
            started: Instant::now(),
            metrics: self.metrics.clone(),
        }
    }
}

pin_project! {
    /// The inner response, or the 500 if it panicked.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Option<CatchUnwind<AssertUnwindSafe<F>>>,
        id: Option<RequestId>,
        method: &'static str,
        started: Instant,
        metrics: Arc<HttpMetrics>,
    }
}

impl<F, RB> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<RB>, Infallible>>,
{
    type Output = Result<Response<Either<RB, Full<Bytes>>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(inner) = this.inner.as_pin_mut()
            && let Ok(Ok(response)) = std::task::ready!(inner.poll(cx))
        {
            return Poll::Ready(Ok(response.map(Either::Left)));
        }
        let id = this.id.take().unwrap_or_else(RequestId::mint);
        let labels = HttpLabels {
            method: this.method,
            route: OTHER,
            status_class: "5xx",
        };
        this.metrics
            .observe_server(&labels, this.started.elapsed().as_secs_f64());
        this.metrics.sidecar_error(ErrorKind::Internal.code());
        tracing::error!(
            correlation_id = id.as_str(),
            "a request handler panicked (a sidecar bug); answered 500 internal"
        );
        let error = SidecarError::new(
            ErrorKind::Internal,
            "the sidecar failed internally (a bug) while handling this request; FinCode may \
             or may not have received it, so check before sending it again without an \
             idempotency key, and report the correlation id",
        );
        let mut response = error.to_response::<Full<Bytes>>(id.as_str());
        response
            .headers_mut()
            .insert(&X_REQUEST_ID, id.header_value().clone());
        response.extensions_mut().insert(ErrorKind::Internal);
        Poll::Ready(Ok(response.map(Either::Right)))
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;

    /// Panics in the future for `/panic`, in `call` for `/panic-early`, else answers 200.
    #[derive(Clone)]
    struct Buggy;

    impl Service<Request<()>> for Buggy {
        type Response = Response<Full<Bytes>>;
        type Error = Infallible;
        type Future = futures_util::future::BoxFuture<'static, Result<Self::Response, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: Request<()>) -> Self::Future {
            assert_ne!(req.uri().path(), "/panic-early", "bug in call");
            Box::pin(async move {
                assert_ne!(req.uri().path(), "/panic", "bug in the future");
                Ok(Response::new(Full::from("ok")))
            })
        }
    }

    fn stack(metrics: &fincode_telemetry::Metrics) -> CatchPanic<Buggy> {
        CatchPanicLayer::new(metrics.http.clone()).layer(Buggy)
    }

    async fn body(response: Response<Either<Full<Bytes>, Full<Bytes>>>) -> Bytes {
        response.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn a_panicking_inner_service_gets_500_problem_json_and_serving_goes_on() {
        let metrics = fincode_telemetry::Metrics::new();
        let service = stack(&metrics);
        for path in ["/panic", "/panic-early"] {
            let req = Request::get(path)
                .header("x-request-id", "req-42")
                .body(())
                .unwrap();
            let response = service.clone().oneshot(req).await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::INTERNAL_SERVER_ERROR,
                "{path}"
            );
            assert_eq!(
                response.headers()["content-type"],
                "application/problem+json"
            );
            assert_eq!(response.headers()["x-sidecar-error"], "internal");
            assert_eq!(response.headers()["x-request-id"], "req-42");
            let problem: serde_json::Value = serde_json::from_slice(&body(response).await).unwrap();
            assert_eq!(problem["correlation_id"], "req-42");
            assert_eq!(problem["status"], 500);
            assert_eq!(problem["type"], "urn:fincode-sidecar:error:internal");
        }
        // Without an app id, a fresh one names the failure.
        let req = Request::get("/panic").body(()).unwrap();
        let response = service.clone().oneshot(req).await.unwrap();
        let id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let problem: serde_json::Value = serde_json::from_slice(&body(response).await).unwrap();
        assert_eq!(problem["correlation_id"], id.as_str());
        // The same service keeps answering.
        let req = Request::get("/fine").body(()).unwrap();
        let response = service.clone().oneshot(req).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(body(response).await, "ok");
        // The error-rate alert sees the three 500s.
        let text = metrics.render();
        assert!(text.contains(r#"kind="internal"} 3"#), "{text}");
        assert!(
            text.contains(
                r#"http_server_request_duration_seconds_count{method="GET",route="other",status_class="5xx"} 3"#
            ),
            "{text}"
        );
    }
}
