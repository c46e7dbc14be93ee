//! The layers around the pooled upstream client ([`crate::upstream::Upstream`]), one job
//! each, outermost first:
//!
//! 1. [`RewriteLayer`]: the app's path placed under `upstream.base_url`
//!    ([`Target::rewrite`]); an ambiguous path is refused here (400 `bad_path`).
//! 2. [`HopByHopLayer`]: the fixed hop-by-hop list and `Host` leave the request (the
//!    client derives `Host` / `:authority` from the URI), the version is the pooled
//!    connection's to choose; FinCode's response loses its hop-by-hop headers and its
//!    `Set-Cookie` is marked sensitive.
//! 3. [`ClientSpanLayer`]: each try is a span of its own and FinCode's parent: a fresh
//!    span id in `traceparent`, and the CLIENT span it names recorded when the try ends
//!    (sampled, with traces on). The header and the span share the id, so they are one
//!    layer; the try counter ([`Tries`]) is advanced here too.
//! 4. [`ClientMetricsLayer`]: the client duration per try, by method, route and status
//!    class (`error` when no response came).
//!
//! They are generic layers (no boxing): the egress stack puts them inside retry, so each
//! try is rewritten, traced and measured on its own. The auth transport and the
//! preflight probe use the same layers (see [`client`]) without spans or metrics.
//!
//! Request extensions they read (none writes one): [`TraceContext`] (written by
//! correlation), [`Tries`] (written by observe), [`Route`] (written by observe).

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Instant, SystemTime},
};

use fincode_telemetry::{HttpLabels, status_class};
use futures_util::future::{self, Either};
use http::{Request, Response, Version, header};
use pin_project_lite::pin_project;
use tower::{Layer, Service, ServiceBuilder, layer::util::Stack};

use crate::{
    SidecarError,
    correlation::{TRACEPARENT, TraceContext},
    headers::{mark_sensitive, strip_fixed, strip_hop_by_hop},
    observe::{Tries, method_label},
    routes::{OTHER, Route},
    upstream::{ClientSpan, Spans, Target},
};

/// The client layers in their order, for the egress stack (inside retry) and for the
/// sidecar's own calls.
pub(crate) type ClientLayers = ServiceBuilder<
    Stack<
        ClientMetricsLayer,
        Stack<
            ClientSpanLayer,
            Stack<HopByHopLayer, Stack<RewriteLayer, tower::layer::util::Identity>>,
        >,
    >,
>;

/// The client layers towards `target`, recording through `spans`.
pub(crate) fn client(target: Target, spans: Spans) -> ClientLayers {
    // Shared: a try holds a reference until it ends, not a copy of every metric family.
    let spans = Arc::new(spans);
    ServiceBuilder::new()
        .layer(RewriteLayer { target })
        .layer(HopByHopLayer)
        .layer(ClientSpanLayer {
            spans: spans.clone(),
        })
        .layer(ClientMetricsLayer { spans })
}

// === RewriteLayer ===

/// Places the app's path under `upstream.base_url`.
#[derive(Clone, Debug)]
pub(crate) struct RewriteLayer {
    target: Target,
}

/// See [`RewriteLayer`].
#[derive(Clone, Debug)]
pub(crate) struct Rewrite<S> {
    inner: S,
    target: Target,
}

impl<S> Layer<S> for RewriteLayer {
    type Service = Rewrite<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Rewrite {
            inner,
            target: self.target.clone(),
        }
    }
}

impl<S, B, RB> Service<Request<B>> for Rewrite<S>
where
    S: Service<Request<B>, Response = Response<RB>, Error = SidecarError>,
{
    type Response = Response<RB>;
    type Error = SidecarError;
    type Future = Either<future::Ready<Result<Response<RB>, SidecarError>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        match self.target.rewrite(req.uri()) {
            Ok(uri) => {
                *req.uri_mut() = uri;
                Either::Right(self.inner.call(req))
            }
            Err(error) => Either::Left(future::ready(Err(error))),
        }
    }
}

// === HopByHopLayer ===

/// Hop-by-hop hygiene towards FinCode and back.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HopByHopLayer;

/// See [`HopByHopLayer`].
#[derive(Clone, Debug)]
pub(crate) struct HopByHop<S> {
    inner: S,
}

impl<S> Layer<S> for HopByHopLayer {
    type Service = HopByHop<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HopByHop { inner }
    }
}

impl<S, B, RB> Service<Request<B>> for HopByHop<S>
where
    S: Service<Request<B>, Response = Response<RB>, Error = SidecarError>,
{
    type Response = Response<RB>;
    type Error = SidecarError;
    type Future = HopByHopFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        strip_fixed(req.headers_mut());
        // The client derives Host / :authority from the URI.
        req.headers_mut().remove(header::HOST);
        // The pooled connection decides the wire version; the app's h2c must not
        // force HTTP/2 on an HTTP/1.1 connection.
        *req.version_mut() = Version::HTTP_11;
        HopByHopFuture {
            inner: self.inner.call(req),
        }
    }
}

pin_project! {
    /// FinCode's response without its hop-by-hop headers.
    #[derive(Debug)]
    pub(crate) struct HopByHopFuture<F> {
        #[pin]
        inner: F,
    }
}

impl<F, RB> Future for HopByHopFuture<F>
where
    F: Future<Output = Result<Response<RB>, SidecarError>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut response = std::task::ready!(self.project().inner.poll(cx))?;
        strip_hop_by_hop(response.headers_mut());
        // Never indexed by HPACK on the app's h2c connection.
        mark_sensitive(response.headers_mut(), &[header::SET_COOKIE]);
        Poll::Ready(Ok(response))
    }
}

// === ClientSpanLayer ===

/// A `traceparent` and a CLIENT span per try.
#[derive(Clone, Debug)]
pub(crate) struct ClientSpanLayer {
    spans: Arc<Spans>,
}

/// See [`ClientSpanLayer`].
#[derive(Clone, Debug)]
pub(crate) struct ClientSpans<S> {
    inner: S,
    spans: Arc<Spans>,
}

impl<S> Layer<S> for ClientSpanLayer {
    type Service = ClientSpans<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientSpans {
            inner,
            spans: self.spans.clone(),
        }
    }
}

impl<S, B, RB> Service<Request<B>> for ClientSpans<S>
where
    S: Service<Request<B>, Response = Response<RB>, Error = SidecarError>,
{
    type Response = Response<RB>;
    type Error = SidecarError;
    type Future = ClientSpanFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let resend = req.extensions().get::<Tries>().map_or(0, Tries::start);
        // Each try is a span of its own, and FinCode's parent.
        let span = req
            .extensions()
            .get::<TraceContext>()
            .copied()
            .map(|trace| {
                let span_id = TraceContext::new_span_id();
                req.headers_mut()
                    .insert(&TRACEPARENT, trace.traceparent_for(span_id));
                (trace, span_id)
            });
        let span = span
            .filter(|(trace, _)| trace.is_sampled() && self.spans.traces.is_enabled())
            .map(|(trace, span_id)| ClientSpan {
                trace,
                span_id,
                start: SystemTime::now(),
                method: req.method().clone(),
                url: self.spans.redactor.url(&req.uri().to_string()),
                resend,
                authority: req.uri().authority().cloned(),
            });
        ClientSpanFuture {
            inner: self.inner.call(req),
            span: span.map(|span| (span, Arc::clone(&self.spans))),
        }
    }
}

pin_project! {
    /// Records the try's span when it ends.
    pub(crate) struct ClientSpanFuture<F> {
        #[pin]
        inner: F,
        span: Option<(ClientSpan, Arc<Spans>)>,
    }
}

impl<F, RB> Future for ClientSpanFuture<F>
where
    F: Future<Output = Result<Response<RB>, SidecarError>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        if let Some((span, spans)) = this.span.take() {
            spans.traces.record(span.finish(&result));
        }
        Poll::Ready(result)
    }
}

// === ClientMetricsLayer ===

/// The client duration per try.
#[derive(Clone, Debug)]
pub(crate) struct ClientMetricsLayer {
    spans: Arc<Spans>,
}

/// See [`ClientMetricsLayer`].
#[derive(Clone, Debug)]
pub(crate) struct ClientMetrics<S> {
    inner: S,
    spans: Arc<Spans>,
}

impl<S> Layer<S> for ClientMetricsLayer {
    type Service = ClientMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientMetrics {
            inner,
            spans: self.spans.clone(),
        }
    }
}

impl<S, B, RB> Service<Request<B>> for ClientMetrics<S>
where
    S: Service<Request<B>, Response = Response<RB>, Error = SidecarError>,
{
    type Response = Response<RB>;
    type Error = SidecarError;
    type Future = ClientMetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let observed = self.spans.metrics.is_some().then(|| Observed {
            spans: Arc::clone(&self.spans),
            method: method_label(req.method()),
            route: req.extensions().get::<Route>().map_or(OTHER, |r| r.0),
            started: Instant::now(),
        });
        ClientMetricsFuture {
            inner: self.inner.call(req),
            observed,
        }
    }
}

/// What the metrics layer remembers of a try until it ends.
struct Observed {
    /// Holds the metrics (`spans.metrics` is set).
    spans: Arc<Spans>,
    method: &'static str,
    route: &'static str,
    started: Instant,
}

pin_project! {
    /// Observes the try's duration when it ends.
    pub(crate) struct ClientMetricsFuture<F> {
        #[pin]
        inner: F,
        observed: Option<Observed>,
    }
}

impl<F, RB> Future for ClientMetricsFuture<F>
where
    F: Future<Output = Result<Response<RB>, SidecarError>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        if let Some(observed) = this.observed.take() {
            let status_class = match &result {
                Ok(response) => status_class(response.status().as_u16()),
                // No answer at all: its own class, so it is not mistaken for a 5xx.
                Err(_) => "error",
            };
            let labels = HttpLabels {
                method: observed.method,
                route: observed.route,
                status_class,
            };
            if let Some(metrics) = &observed.spans.metrics {
                metrics.observe_client(&labels, observed.started.elapsed().as_secs_f64());
            }
        }
        Poll::Ready(result)
    }
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
