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
//!    (sampled, with traces on), also when it is dropped unanswered (`error.type`
//!    `cancelled`: the retry layer's per-try bound ran out, or the app went away). The header and the span share the id, so they are one
//!    layer; the try counter ([`Tries`]) is advanced here too.
//! 4. [`ClientMetricsLayer`]: the client duration per try, by method, route and status
//!    class (`error` when no response came, the try dropped unanswered included).
//!
//! They are generic layers (no boxing): the egress stack puts them inside retry, so each
//! try is rewritten, traced and measured on its own. The auth transport and the
//! preflight probe use the same layers (see [`client`]) without spans or metrics.
//!
//! Request extensions they read (none writes one): [`Correlated`] (written by
//! correlation: the trace context) and [`Counted`] (written by observe: the tries, which
//! the span layer advances, and the route).

use std::{
    sync::Arc,
    time::{Instant, SystemTime},
};

use fincode_server::hook::{Finish, HookLayer, OnRequest};
use fincode_telemetry::{HttpLabels, status_class};
use http::{Request, Response, Version, header};
use tower::{ServiceBuilder, layer::util::Stack};

use crate::{
    SidecarError,
    check::{Check, CheckLayer},
    correlation::{Correlated, TRACEPARENT, TraceContext},
    headers::{mark_sensitive, strip_fixed, strip_hop_by_hop},
    observe::{Counted, method_label},
    upstream::{CANCELLED, ClientSpan, Spans, Target, TryEnd},
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
        // Shared: the stack below retry is cloned for every call, and a `Target` holds a
        // `String` and an authority to copy.
        .layer(CheckLayer {
            check: Arc::new(target),
        })
        .layer(HookLayer::new(HopByHop))
        .layer(HookLayer::new(ClientSpans {
            spans: spans.clone(),
        }))
        .layer(HookLayer::new(ClientMetrics { spans }))
}

// === RewriteLayer ===

/// Places the app's path under `upstream.base_url`: the check of a [`CheckLayer`] over a
/// [`Target`].
pub(crate) type RewriteLayer = CheckLayer<Arc<Target>>;

impl<B> Check<B> for Target {
    type Body = B;

    fn check(&self, mut req: Request<B>) -> Result<Request<B>, SidecarError> {
        *req.uri_mut() = self.rewrite(req.uri())?;
        Ok(req)
    }
}

// === HopByHopLayer ===

/// Hop-by-hop hygiene towards FinCode and back.
pub(crate) type HopByHopLayer = HookLayer<HopByHop>;

/// The steps of [`HopByHopLayer`], on the request and on the response.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HopByHop;

impl<B> OnRequest<B> for HopByHop {
    type Body = B;
    type Finish = HopByHop;

    fn on_request(&self, mut req: Request<B>) -> (Request<B>, HopByHop) {
        strip_fixed(req.headers_mut());
        // The client derives Host / :authority from the URI.
        req.headers_mut().remove(header::HOST);
        // The pooled connection decides the wire version; the app's h2c must not
        // force HTTP/2 on an HTTP/1.1 connection.
        *req.version_mut() = Version::HTTP_11;
        (req, HopByHop)
    }
}

/// FinCode's response without its hop-by-hop headers.
impl<RB> Finish<Result<Response<RB>, SidecarError>> for HopByHop {
    type Output = Result<Response<RB>, SidecarError>;

    fn finish(&mut self, result: Self::Output) -> Self::Output {
        let mut response = result?;
        strip_hop_by_hop(response.headers_mut());
        // Never indexed by HPACK on the app's h2c connection.
        mark_sensitive(response.headers_mut(), &[header::SET_COOKIE]);
        Ok(response)
    }
}

// === ClientSpanLayer ===

/// A `traceparent` and a CLIENT span per try.
pub(crate) type ClientSpanLayer = HookLayer<ClientSpans>;

/// The request step of [`ClientSpanLayer`].
#[derive(Clone, Debug)]
pub(crate) struct ClientSpans {
    spans: Arc<Spans>,
}

/// Records the try's span when it ends.
pub(crate) struct RecordSpan(Option<(ClientSpan, Arc<Spans>)>);

impl<B> OnRequest<B> for ClientSpans {
    type Body = B;
    type Finish = RecordSpan;

    fn on_request(&self, mut req: Request<B>) -> (Request<B>, RecordSpan) {
        let resend = req
            .extensions()
            .get::<Counted>()
            .map_or(0, |counted| counted.tries.start());
        // Each try is a span of its own, and FinCode's parent.
        let span = req
            .extensions()
            .get::<Correlated>()
            .map(|correlated| correlated.trace)
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
        let record = RecordSpan(span.map(|span| (span, Arc::clone(&self.spans))));
        (req, record)
    }
}

impl<RB> Finish<Result<Response<RB>, SidecarError>> for RecordSpan {
    type Output = Result<Response<RB>, SidecarError>;

    fn finish(&mut self, result: Self::Output) -> Self::Output {
        if let Some((span, spans)) = self.0.take() {
            spans.traces.record(span.finish(&result));
        }
        result
    }
}

impl Drop for RecordSpan {
    /// A try dropped before it ended (the retry layer's per-try bound ran out, or the
    /// app's call went away) is still a span: the slowest tries are the ones a trace
    /// must not lose.
    fn drop(&mut self) {
        if let Some((span, spans)) = self.0.take() {
            spans.traces.record(span.end(TryEnd::Failed(CANCELLED)));
        }
    }
}

// === ClientMetricsLayer ===

/// The client duration per try.
pub(crate) type ClientMetricsLayer = HookLayer<ClientMetrics>;

/// The request step of [`ClientMetricsLayer`].
#[derive(Clone, Debug)]
pub(crate) struct ClientMetrics {
    spans: Arc<Spans>,
}

/// What the metrics layer remembers of a try until it ends; observes the try's
/// duration then.
pub(crate) struct Observed(Option<Try>);

/// A try being measured.
struct Try {
    /// Holds the metrics (`spans.metrics` is set).
    spans: Arc<Spans>,
    method: &'static str,
    route: &'static str,
    started: Instant,
}

impl<B> OnRequest<B> for ClientMetrics {
    type Body = B;
    type Finish = Observed;

    fn on_request(&self, req: Request<B>) -> (Request<B>, Observed) {
        let observed = self.spans.metrics.is_some().then(|| Try {
            spans: Arc::clone(&self.spans),
            method: method_label(req.method()),
            route: Counted::route_of(req.extensions()),
            started: Instant::now(),
        });
        (req, Observed(observed))
    }
}

/// The client duration's class of a try that got no answer at all: its own, so it is
/// not mistaken for a 5xx.
const NO_ANSWER: &str = "error";

impl<RB> Finish<Result<Response<RB>, SidecarError>> for Observed {
    type Output = Result<Response<RB>, SidecarError>;

    fn finish(&mut self, result: Self::Output) -> Self::Output {
        if let Some(observed) = self.0.take() {
            observed.observe(match &result {
                Ok(response) => status_class(response.status().as_u16()),
                Err(_) => NO_ANSWER,
            });
        }
        result
    }
}

impl Drop for Observed {
    /// A try dropped before it ended (the retry layer's per-try bound ran out, or the
    /// app's call went away) is observed too, as no answer: leaving it out would hide
    /// exactly the slowest tries from the client duration.
    fn drop(&mut self) {
        if let Some(observed) = self.0.take() {
            observed.observe(NO_ANSWER);
        }
    }
}

impl Try {
    fn observe(self, status_class: &'static str) {
        let labels = HttpLabels {
            method: self.method,
            route: self.route,
            status_class,
        };
        if let Some(metrics) = &self.spans.metrics {
            metrics.observe_client(&labels, self.started.elapsed().as_secs_f64());
        }
    }
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
