//! Optional body logging (`log.bodies`): one line for the request and one for the
//! response, with headers and body passed through the redactor.
//!
//! Bodies stream through untouched; a bounded copy is kept and logged, redacted, when the
//! body ends. A body over `log.max_body_bytes` is not logged at all (a line says so):
//! redaction needs the whole document, and a truncated one could cut a card number in
//! half and leave its middle digits in clear.
//!
//! The layer is always in the stack so the body types do not depend on configuration;
//! when off, each frame costs one branch.

use std::sync::Arc;

use bytes::Bytes;
use fincode_config::{BodyLevel, LogConfig};
use fincode_redact::Redactor;
use fincode_server::hook::{Finish, Hooked, OnReady, OnRequest};
use http::{HeaderMap, Request, Response};
use tower::Layer;

use crate::tap::{BodyCopy, Tap, TapBody};

/// What body logging needs, shared by every request.
#[derive(Debug)]
struct Settings {
    redactor: Redactor,
    level: BodyLevel,
    max_bytes: usize,
}

/// Adds [`BodyLog`] to a stack.
#[derive(Clone, Debug)]
pub struct BodyLogLayer {
    settings: Option<Arc<Settings>>,
}

/// Logs request and response bodies, redacted, when enabled.
pub type BodyLog<S> = Hooked<S, BodyLogLayer>;

/// Wraps the response body once the head is ready.
pub type ResponseFuture<F> = OnReady<F, LogResponse>;

/// What the response needs to be logged: the settings, when on.
pub struct LogResponse(Option<Arc<Settings>>);

// === impl BodyLogLayer ===

impl BodyLogLayer {
    /// On when `log.bodies` is set.
    pub fn new(config: &LogConfig, redactor: Redactor) -> Self {
        Self {
            settings: config.bodies.then(|| {
                Arc::new(Settings {
                    redactor,
                    level: config.body_level,
                    max_bytes: config.max_body_bytes,
                })
            }),
        }
    }
}

impl<S> Layer<S> for BodyLogLayer {
    type Service = BodyLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Hooked::new(inner, self.clone())
    }
}

impl<B> OnRequest<B> for BodyLogLayer {
    type Body = LoggedBody<B>;
    type Finish = LogResponse;

    fn on_request(&self, req: Request<B>) -> (Request<LoggedBody<B>>, LogResponse) {
        let capture = self
            .settings
            .as_ref()
            .map(|settings| Capture::new(settings.clone(), "request", req.headers()));
        let req = req.map(|inner| TapBody::new(inner, capture));
        (req, LogResponse(self.settings.clone()))
    }
}

// === impl LogResponse ===

impl<RB, E> Finish<Result<Response<RB>, E>> for LogResponse {
    type Output = Result<Response<LoggedBody<RB>>, E>;

    fn finish(&mut self, result: Result<Response<RB>, E>) -> Self::Output {
        let response = result?;
        let capture = self
            .0
            .take()
            .map(|settings| Capture::new(settings, "response", response.headers()));
        Ok(response.map(|inner| TapBody::new(inner, capture)))
    }
}

/// A bounded copy of one body, logged when it ends.
pub struct Capture {
    settings: Arc<Settings>,
    direction: &'static str,
    /// The redacted headers, as a JSON object.
    headers: String,
    kept: BodyCopy,
    /// The request's span: response bodies are polled after the request future is done.
    span: tracing::Span,
}

impl Capture {
    fn new(settings: Arc<Settings>, direction: &'static str, headers: &HeaderMap) -> Self {
        let headers = redacted_headers(&settings.redactor, headers);
        Self {
            settings,
            direction,
            headers,
            kept: BodyCopy::default(),
            span: tracing::Span::current(),
        }
    }

    fn log(self) {
        let _entered = self.span.enter();
        let body = if self.kept.too_large() {
            format!(
                "[not logged: larger than log.max_body_bytes = {}]",
                self.settings.max_bytes
            )
        } else {
            self.settings.redactor.json(self.kept.bytes())
        };
        let (direction, headers) = (self.direction, self.headers.as_str());
        // tracing needs the level at compile time.
        match self.settings.level {
            BodyLevel::Trace => {
                tracing::trace!(target: "fincode_sidecar::body", direction, headers, body, "body");
            }
            BodyLevel::Debug => {
                tracing::debug!(target: "fincode_sidecar::body", direction, headers, body, "body");
            }
            BodyLevel::Info => {
                tracing::info!(target: "fincode_sidecar::body", direction, headers, body, "body");
            }
        }
    }
}

/// Header names and redacted values as one JSON object (a repeated name keeps the last).
fn redacted_headers(redactor: &Redactor, headers: &HeaderMap) -> String {
    let map: serde_json::Map<String, serde_json::Value> = headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                redactor
                    .header_value(name.as_str(), value.as_bytes())
                    .into(),
            )
        })
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// A body passed through unchanged, copied (bounded) for the log when enabled.
pub type LoggedBody<B> = TapBody<B, Capture>;

impl Tap for Capture {
    fn data(&mut self, data: &Bytes) -> bool {
        // Past the limit, the end still logs that it was too large.
        self.kept.push(data, self.settings.max_bytes);
        true
    }

    fn end(self) {
        self.log();
    }

    fn abandoned(self) {
        // An empty body may never be polled: log it when it goes away. A partly read one
        // is incomplete and not logged.
        if self.kept.is_empty() && !self.kept.too_large() {
            self.log();
        }
    }
}
