//! Observe layer: one access-log line and one duration observation per app request,
//! a span carrying the correlation id around everything logged while serving it, and
//! the business outcome of create-transaction calls.
//!
//! It sits right inside correlation and outside the error responder, so it sees every
//! response the app gets, including the sidecar's own problem+json errors (their kind
//! rides in the response extensions), with the correlation id already assigned.

use std::{
    borrow::Cow,
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    task::{Context, Poll},
    time::{Instant, SystemTime},
};

use bytes::Bytes;
use fincode_audit::json::{push_plain, push_str};
use fincode_redact::Redactor;
use fincode_telemetry::{
    AccessLog, HttpLabels, HttpMetrics, KeyValue, SpanKind, SpanRecord, Traces, status_class,
};
use http::{Method, Request, Response, header};
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tracing::{Instrument, instrument::Instrumented};

use crate::{
    ErrorKind,
    correlation::{Correlated, RequestId, TraceContext},
    routes::{OTHER, RouteTable, outcome_counted},
    tap::{BodyCopy, Tap, TapBody},
};

/// Largest create-transaction response inspected for its business outcome.
const MAX_OUTCOME_BODY: usize = 64 * 1024;

/// Counts the tries of one app request towards FinCode: retries and the replay after a
/// 401 alike. The observe layer puts one on each request; the upstream client counts
/// each send, so the access log's `attempts`, `x-sidecar-attempts` and the CLIENT span's
/// `http.request.resend_count` agree however many layers sent the request again.
#[derive(Clone, Debug, Default)]
pub struct Tries(Arc<AtomicU32>);

/// What the observe layer puts on each request for the layers below, as one extension
/// (each extension is an allocation, and the retry layer copies them all for every try):
/// the route template the call is counted under, and its tries.
#[derive(Clone, Debug)]
pub struct Counted {
    /// The route template ([`OTHER`] when none matched).
    pub route: &'static str,
    /// The call's tries.
    pub tries: Tries,
}

// === impl Counted ===

impl Counted {
    /// The route the request with `extensions` is counted under ([`OTHER`] when the
    /// observe layer did not see it).
    pub fn route_of(extensions: &http::Extensions) -> &'static str {
        extensions
            .get::<Self>()
            .map_or(OTHER, |counted| counted.route)
    }
}

// === impl Tries ===

impl Tries {
    /// Counts one more try; returns how many were sent before it (its resend count).
    pub fn start(&self) -> u32 {
        self.0.fetch_add(1, Ordering::Relaxed)
    }

    /// Tries so far (0 if the request never left the sidecar).
    pub fn count(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Adds [`Observe`] to a stack.
#[derive(Clone, Debug)]
pub struct ObserveLayer {
    shared: Arc<Shared>,
}

/// Logs, measures and spans each request.
#[derive(Clone, Debug)]
pub struct Observe<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// What every request's telemetry uses; behind one `Arc` because the stack is cloned
/// per request.
#[derive(Debug)]
struct Shared {
    metrics: HttpMetrics,
    routes: RouteTable,
    traces: Traces,
    redactor: Redactor,
    /// Where access lines go when the logs are JSON (see [`AccessLine`]); `None` keeps
    /// the `tracing` event.
    access_log: Option<AccessLog>,
}

// === impl ObserveLayer ===

impl ObserveLayer {
    /// Records into `metrics`, naming requests by `routes`, and sends a SERVER span per
    /// request to `traces` with its path scrubbed by `redactor`.
    pub fn new(
        metrics: HttpMetrics,
        routes: RouteTable,
        traces: Traces,
        redactor: Redactor,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                metrics,
                routes,
                traces,
                redactor,
                access_log: AccessLog::global().cloned(),
            }),
        }
    }

    /// Writes access lines to `log` (instead of the process's), for tests.
    #[cfg(test)]
    pub(crate) fn with_access_log(mut self, log: Option<AccessLog>) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.access_log = log;
        }
        self
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            shared: self.shared.clone(),
        }
    }
}

// === impl Observe ===

impl<S, B, RB> Service<Request<B>> for Observe<S>
where
    S: Service<Request<B>, Response = Response<RB>, Error = Infallible>,
{
    type Response = Response<OutcomeBody<RB>>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let shared = &self.shared;
        let route = shared.routes.template(req.uri().path());
        let tries = Tries::default();
        req.extensions_mut().insert(Counted {
            route,
            tries: tries.clone(),
        });
        let method = method_label(req.method());
        let correlated = req.extensions().get::<Correlated>();
        let id = correlated.map(|c| LoggedId::new(&shared.redactor, &c.id));
        let trace = correlated.map(|c| c.trace);
        let server_span = trace
            .filter(|trace| trace.is_sampled() && shared.traces.is_enabled())
            .map(|trace| ServerSpan {
                trace,
                start: SystemTime::now(),
                path: shared.redactor.url(req.uri().path()),
                correlation_id: id
                    .as_ref()
                    .map(|id| id.as_str().to_owned())
                    .unwrap_or_default(),
                traces: shared.traces.clone(),
            });
        // The ids are given at creation, not recorded afterwards: the JSON formatter
        // re-parses and re-serializes a span's fields on every `record` (about 19 000
        // instructions a request for the two ids). Field values are evaluated only when
        // the span is on, so a disabled span still costs one filter check.
        let span = tracing::info_span!(
            "request",
            correlation_id = id.as_ref().map(LoggedId::as_str),
            trace_id = trace
                .as_ref()
                .map(TraceContext::trace_id_hex_digits)
                .as_ref()
                .and_then(|digits| std::str::from_utf8(digits).ok()),
            method,
            route
        );
        let request_bytes = content_length(req.headers());
        // What the access line's span list needs, kept only when the line is written
        // by hand and the span (whose fields it repeats) is on.
        let ids = (shared.access_log.is_some() && !span.is_disabled()).then(|| SpanIds {
            correlation_id: id,
            trace,
        });
        // Inner layers see the span as current while they set up the call, too.
        let inner = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        ResponseFuture {
            inner: inner.instrument(span.clone()),
            state: Some(Pending {
                started: Instant::now(),
                method,
                route,
                request_bytes,
                tries,
                span,
                ids,
                shared: self.shared.clone(),
                server_span,
            }),
        }
    }
}

struct Pending {
    started: Instant,
    method: &'static str,
    route: &'static str,
    request_bytes: Option<u64>,
    tries: Tries,
    span: tracing::Span,
    /// The request span's ids, for an access line written by hand.
    ids: Option<SpanIds>,
    shared: Arc<Shared>,
    server_span: Option<ServerSpan>,
}

/// The ids the request span records.
struct SpanIds {
    correlation_id: Option<LoggedId>,
    trace: Option<TraceContext>,
}

/// The correlation id as log lines and traces carry it. An id the app sent is the app's
/// free text, and the id's charset fits a card number or an email: it passes the
/// redactor's free-text rules first, as the audit trail's copy does. A minted id is a
/// UUID the sidecar made and goes as is (no redaction pass on the common path).
enum LoggedId {
    /// The id itself: minted, or the app's with nothing to redact (no copy).
    Clear(RequestId),
    /// The app's id with a card number, long digit run or email neutralised.
    Redacted(String),
}

// === impl LoggedId ===

impl LoggedId {
    fn new(redactor: &Redactor, id: &RequestId) -> Self {
        if id.is_minted() {
            return Self::Clear(id.clone());
        }
        match redactor.text(id.as_str()) {
            Cow::Borrowed(_) => Self::Clear(id.clone()),
            Cow::Owned(redacted) => Self::Redacted(redacted),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            Self::Clear(id) => id.as_str(),
            Self::Redacted(text) => text,
        }
    }
}

/// The app's call, recorded as a SERVER span once the response head is ready.
struct ServerSpan {
    trace: TraceContext,
    start: SystemTime,
    /// The request path, redacted.
    path: String,
    correlation_id: String,
    traces: Traces,
}

impl ServerSpan {
    fn finish(
        self,
        method: &'static str,
        route: &'static str,
        status: u16,
        error: Option<&'static str>,
    ) {
        let error: Option<Cow<'static, str>> = error
            .map(Cow::Borrowed)
            .or_else(|| (status >= 500).then(|| Cow::Owned(status.to_string())));
        let mut attributes = vec![
            KeyValue::new("http.request.method", method),
            KeyValue::new("http.route", route),
            KeyValue::new("url.scheme", "http"),
            KeyValue::new("url.path", self.path),
            KeyValue::new("http.response.status_code", i64::from(status)),
            KeyValue::new("fincode_sidecar.correlation_id", self.correlation_id),
        ];
        if let Some(kind) = &error {
            attributes.push(KeyValue::new("error.type", kind.clone()));
        }
        self.traces.record(SpanRecord {
            trace_id: self.trace.trace_id,
            span_id: self.trace.span_id,
            parent_span_id: self.trace.parent_span_id,
            parent_is_remote: self.trace.parent_span_id.is_some(),
            kind: SpanKind::Server,
            // Semconv: `{method} {http.route}`, or the method alone without a route.
            name: if route == OTHER {
                method.into()
            } else {
                format!("{method} {route}").into()
            },
            start: self.start,
            end: SystemTime::now(),
            attributes,
            error,
        });
    }
}

pin_project! {
    /// Records the request once the response head is ready.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Instrumented<F>,
        state: Option<Pending>,
    }
}

impl<F, RB> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<RB>, Infallible>>,
{
    type Output = Result<Response<OutcomeBody<RB>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(response) = std::task::ready!(this.inner.poll(cx));
        let Some(pending) = this.state.take() else {
            // Polled after completion: the response was already returned once.
            return Poll::Pending;
        };
        Poll::Ready(Ok(pending.finish(response)))
    }
}

impl Pending {
    fn finish<RB>(self, response: Response<RB>) -> Response<OutcomeBody<RB>> {
        let elapsed = self.started.elapsed();
        let status = response.status().as_u16();
        let error = response
            .extensions()
            .get::<ErrorKind>()
            .map(|kind| kind.code());
        let attempts = self.tries.count();
        let labels = HttpLabels {
            method: self.method,
            route: self.route,
            status_class: status_class(status),
        };
        let metrics = &self.shared.metrics;
        metrics.observe_server(&labels, elapsed.as_secs_f64());
        if let Some(kind) = error {
            metrics.sidecar_error(kind);
        }
        if let Some(span) = self.server_span {
            span.finish(self.method, self.route, status, error);
        }
        // Entered for the filter too: a directive may select on the span.
        let _entered = self.span.enter();
        let line = AccessLine {
            status,
            upstream_status: if error.is_none() { status } else { 0 },
            latency_ms: elapsed.as_secs_f64() * 1000.0,
            attempts,
            request_bytes: self.request_bytes,
            response_bytes: content_length(response.headers()),
            error: error.unwrap_or(""),
        };
        match &self.shared.access_log {
            // Asked per request: the filter can be reloaded at any time.
            Some(log) if tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO) => {
                let span = self.ids.as_ref().map(|ids| (ids, self.method, self.route));
                log.log(|out| line.write_json(span, out));
            }
            Some(_) => {}
            None => line.emit(),
        }
        let watch = outcome_counted(self.route) && error.is_none();
        let envelope = response
            .extensions()
            .get::<crate::audit::Envelope>()
            .cloned();
        response.map(|body| {
            TapBody::new(
                body,
                watch.then(|| Outcome {
                    kept: BodyCopy::default(),
                    envelope,
                    metrics: metrics.clone(),
                }),
            )
        })
    }
}

/// The `tracing` target of access lines, whichever way they are written.
const ACCESS_TARGET: &str = "fincode_sidecar::access";

/// One access line's own fields. Every field is bounded and secret-free by
/// construction: method and route are templates, the id was validated, the rest are
/// numbers and error codes.
struct AccessLine {
    status: u16,
    upstream_status: u16,
    latency_ms: f64,
    attempts: u32,
    request_bytes: Option<u64>,
    response_bytes: Option<u64>,
    error: &'static str,
}

// === impl AccessLine ===

impl AccessLine {
    /// As a `tracing` event (the text log format).
    fn emit(&self) {
        tracing::info!(
            target: ACCESS_TARGET,
            status = self.status,
            upstream_status = self.upstream_status,
            latency_ms = self.latency_ms,
            attempts = self.attempts,
            request_bytes = self.request_bytes,
            response_bytes = self.response_bytes,
            error = self.error,
            "access"
        );
    }

    /// The rest of the JSON line `tracing_subscriber`'s JSON format would write for
    /// [`Self::emit`] in the request span (after its `timestamp`): its members in its
    /// order (`level`, `message`, the event's fields as declared, `target`, then the
    /// span list with the span's fields sorted by name and its `name` last), absent
    /// options left out as it does, numbers formatted by the crates `serde_json` uses.
    /// Member names are written as literals, `"name":` whole.
    fn write_json(&self, span: Option<(&SpanIds, &str, &str)>, out: &mut String) {
        let mut int = itoa::Buffer::new();
        out.push_str("\"level\":\"INFO\",\"message\":\"access\",");
        out.push_str("\"status\":");
        out.push_str(int.format(self.status));
        out.push(',');
        out.push_str("\"upstream_status\":");
        out.push_str(int.format(self.upstream_status));
        out.push(',');
        out.push_str("\"latency_ms\":");
        if self.latency_ms.is_finite() {
            out.push_str(zmij::Buffer::new().format_finite(self.latency_ms));
        } else {
            out.push_str("null");
        }
        out.push(',');
        out.push_str("\"attempts\":");
        out.push_str(int.format(self.attempts));
        out.push(',');
        if let Some(bytes) = self.request_bytes {
            out.push_str("\"request_bytes\":");
            out.push_str(int.format(bytes));
            out.push(',');
        }
        if let Some(bytes) = self.response_bytes {
            out.push_str("\"response_bytes\":");
            out.push_str(int.format(bytes));
            out.push(',');
        }
        out.push_str("\"error\":");
        push_str(out, self.error);
        out.push(',');
        out.push_str("\"target\":");
        push_plain(out, ACCESS_TARGET);
        if let Some((ids, method, route)) = span {
            out.push_str(",\"spans\":[{");
            if let Some(id) = &ids.correlation_id {
                out.push_str("\"correlation_id\":");
                push_str(out, id.as_str());
                out.push(',');
            }
            // The sidecar's own labels and hex digits: nothing to escape.
            out.push_str("\"method\":");
            push_plain(out, method);
            out.push(',');
            out.push_str("\"route\":");
            push_plain(out, route);
            out.push(',');
            if let Some(trace) = &ids.trace {
                out.push_str("\"trace_id\":");
                let digits = trace.trace_id_hex_digits();
                push_plain(out, std::str::from_utf8(&digits).unwrap_or_default());
                out.push(',');
            }
            out.push_str("\"name\":\"request\"}]");
        }
        out.push('}');
    }
}

/// The method as a bounded label: unknown methods share one value.
pub(crate) fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "_OTHER",
    }
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The response as the app gets it: for create-transaction, watched for FinCode's
/// business outcome.
pub type OutcomeBody<B> = TapBody<B, Outcome>;

/// Keeps a bounded copy of a create-transaction response and counts FinCode's business
/// outcome (`"status": "SUCCESS"`) when it ends.
#[derive(Debug)]
pub struct Outcome {
    kept: BodyCopy,
    /// The audit layer's verdict on this body, when that layer scans it: then no copy.
    envelope: Option<crate::audit::Envelope>,
    metrics: HttpMetrics,
}

impl Tap for Outcome {
    fn data(&mut self, data: &Bytes) -> bool {
        if self.envelope.is_some() {
            return true;
        }
        // Too large to be FinCode's answer to a create: not counted.
        self.kept.push(data, MAX_OUTCOME_BODY)
    }

    fn end(self) {
        match &self.envelope {
            // The audit layer below saw the body end first and has scanned it, unless
            // it was too large to scan: not counted, as here.
            Some(envelope) => {
                if let Some(succeeded) = envelope.succeeded() {
                    self.metrics.transaction(succeeded);
                }
            }
            None => self
                .metrics
                .transaction(is_business_success(self.kept.bytes())),
        }
    }

    fn abandoned(self) {}
}

/// FinCode's success shape: `{"status": "SUCCESS", ...}`, read by the same scan the
/// audit layer uses for FinCode's envelope (no parse tree).
fn is_business_success(body: &[u8]) -> bool {
    crate::audit::ids::scan(body, true).succeeded
}

#[cfg(test)]
mod tests;
