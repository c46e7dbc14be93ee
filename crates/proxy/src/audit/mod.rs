//! The audit layer: one record per app call, written after the response with its outcome.
//!
//! It sits right below the error responder, so it sees every call the app makes, the
//! ones the sidecar refuses itself (a reserved route, an oversized body, an open breaker)
//! included, each with its error kind. The record names the call by method and route
//! template, and its resources (the path's id, the idempotency key, and the
//! `transactionId`, `reference` and customer code found in the request or response JSON)
//! only as the redactor's keyed pseudonyms; bodies are read for those ids and never
//! recorded.
//!
//! Two modes (`audit.fail_closed`):
//! - open (the default): the record is queued when the response body ends (or is
//!   dropped), without waiting; a record the trail cannot take is counted and becomes a
//!   gap record. The app's response streams as before.
//! - closed: a call is refused with 503 `audit_unavailable` before anything is sent to
//!   FinCode while the trail cannot be written; otherwise FinCode's response is read
//!   whole and held until its record is on disk, so every response the app received has
//!   its record (a crash cannot leave an answered call unrecorded). If the trail fails
//!   after FinCode answered, the app still gets the answer: hiding the outcome of a call
//!   FinCode may have acted on would be worse; the record is counted as lost.

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex, OnceLock},
    task::{Context, Poll},
    time::Instant,
};

use bytes::Bytes;
use fincode_audit::{Auditor, Record, trim_id};
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::Body;
use http_body_util::{BodyExt as _, Either, Full};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

pub mod ids;

use crate::{
    ErrorKind, SidecarError,
    correlation::{Correlated, RequestId, TraceContext},
    observe::{Counted, Tries, method_label},
    routes::outcome_counted,
    svc::BoxResponseFuture,
    tap::{BodyCopy, Tap, TapBody},
};

/// Ids a request body's tap found, handed to the record once that body ended.
type FoundIds = Arc<Mutex<FoundIdList>>;

/// Resource ids by name, clear.
type FoundIdList = Vec<(&'static str, String)>;

/// Bodies longer than this are not read for resource ids.
const MAX_ID_BODY: usize = 64 * 1024;

const IDEMPOTENCY_KEY: http::HeaderName = http::HeaderName::from_static("x-idempotency-key");

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The request body as the layers below see it: watched for resource ids.
pub type AuditedRequestBody<B> = TapBody<B, RequestIds>;

/// The response body as the app gets it: streamed and watched (open mode), or read whole
/// before its record was committed (closed mode).
pub type AuditedBody<B> = Either<TapBody<B, ResponseRecord>, Full<Bytes>>;

/// Adds [`Audit`] to a stack; without an auditor it only wraps the body types.
#[derive(Clone, Debug)]
pub struct AuditLayer {
    auditor: Option<Auditor>,
}

/// Records each call; see the module docs.
#[derive(Clone, Debug)]
pub struct Audit<S> {
    inner: S,
    auditor: Option<Auditor>,
}

// === impl AuditLayer ===

impl AuditLayer {
    /// Records into `auditor`; `None` records nothing and costs one branch per call.
    pub fn new(auditor: Option<Auditor>) -> Self {
        Self { auditor }
    }
}

impl<S> Layer<S> for AuditLayer {
    type Service = Audit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Audit {
            inner,
            auditor: self.auditor.clone(),
        }
    }
}

// === impl Audit ===

impl<S, B, RB> Service<Request<B>> for Audit<S>
where
    S: Service<Request<AuditedRequestBody<B>>, Response = Response<RB>, Error = SidecarError>,
    S::Future: Send + 'static,
    B: Body,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError> + Send,
{
    type Response = Response<AuditedBody<RB>>;
    type Error = SidecarError;
    type Future = ResponseFuture<S::Future, RB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let Some(auditor) = &self.auditor else {
            return ResponseFuture::Open {
                inner: self.inner.call(req.map(|body| TapBody::new(body, None))),
                pending: Unanswered(None),
            };
        };
        if auditor.fail_closed() && !auditor.is_available() {
            return ResponseFuture::Refused {
                error: Some(
                    SidecarError::new(
                        ErrorKind::AuditUnavailable,
                        "audit.fail_closed is set and the audit trail cannot be written (see \
                         the sidecar's log and fincode_audit_available); the call was not sent \
                         to FinCode, retry later",
                    )
                    .unsent(),
                ),
            };
        }
        let mut pending = Pending::new(auditor.clone(), &req);
        // A GET has no body to read ids from: no tap, no copy.
        let tap = (!req.body().is_end_stream()).then(|| {
            let found = Arc::new(Mutex::new(Vec::new()));
            pending.request_ids = Some(found.clone());
            RequestIds {
                kept: BodyCopy::default(),
                found,
            }
        });
        let inner = self.inner.call(req.map(|body| TapBody::new(body, tap)));
        if auditor.fail_closed() {
            ResponseFuture::Closed {
                inner: Box::pin(pending.commit_after(inner)),
            }
        } else {
            ResponseFuture::Open {
                inner,
                pending: Unanswered(Some(pending)),
            }
        }
    }
}

pin_project! {
    /// The response, recorded as the mode says.
    // pin-project-lite takes no doc comments on variant fields.
    #[allow(missing_docs)]
    #[project = Projected]
    pub enum ResponseFuture<F, RB> {
        /// Open mode (or no auditor): the record rides on the response body.
        Open {
            #[pin]
            inner: F,
            pending: Unanswered,
        },
        /// Closed mode: read, record, commit, answer.
        Closed {
            inner: BoxResponseFuture<AuditedBody<RB>>,
        },
        /// Closed mode with the trail down: refused before anything was sent.
        Refused {
            error: Option<SidecarError>,
        },
    }
}

impl<F, RB> Future for ResponseFuture<F, RB>
where
    F: Future<Output = Result<Response<RB>, SidecarError>>,
{
    type Output = Result<Response<AuditedBody<RB>>, SidecarError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            Projected::Open { inner, pending } => {
                let result = std::task::ready!(inner.poll(cx));
                let pending = pending.take();
                Poll::Ready(match result {
                    Ok(mut response) => {
                        let tap = pending.map(|pending| pending.on_body(&mut response));
                        Ok(response.map(|body| Either::Left(TapBody::new(body, tap))))
                    }
                    Err(error) => {
                        if let Some(pending) = pending {
                            pending.on_error(&error).write();
                        }
                        Err(error)
                    }
                })
            }
            Projected::Closed { inner } => inner.as_mut().poll(cx),
            Projected::Refused { error } => Poll::Ready(Err(error.take().unwrap_or_else(|| {
                SidecarError::new(ErrorKind::Internal, "polled after completion")
            }))),
        }
    }
}

/// A call's [`Pending`] until its answer (or its error) is in. Dropped before that (the
/// app reset its HTTP/2 stream, or its connection was closed at the drain deadline), it
/// still writes the call's record, of unknown outcome: the call may be at FinCode
/// already, and the trail must not lose it. (An HTTP/1 app that hangs up does not drop
/// its call: the server lets it finish.)
#[derive(Debug)]
pub struct Unanswered(Option<Pending>);

// === impl Unanswered ===

impl Unanswered {
    fn take(&mut self) -> Option<Pending> {
        self.0.take()
    }

    /// Closed mode: the call ends in `error` (its record replaces the abandoned one) and
    /// the record is committed; logs `what` when it could not be.
    async fn commit_error(&mut self, error: &SidecarError, what: &str) {
        if let Some(pending) = self.take()
            && pending.on_error(error).commit().await.is_err()
        {
            tracing::error!("audit record of {what} could not be committed");
        }
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(pending) = self.0.take() {
            pending
                .record(None)
                .outcome("unknown")
                .detail("response", "abandoned")
                .write();
        }
    }
}

/// What is known about a call before its response.
#[derive(Debug)]
pub struct Pending {
    auditor: Auditor,
    started: Instant,
    method: &'static str,
    route: &'static str,
    path_id: Option<String>,
    correlation_id: Option<RequestId>,
    trace: Option<TraceContext>,
    peer: Option<SocketAddr>,
    idempotency_key: Option<HeaderValue>,
    tries: Option<Tries>,
    /// Ids the request body's tap found, once that body ended; `None` without a body.
    request_ids: Option<FoundIds>,
}

impl Pending {
    fn new<B>(auditor: Auditor, req: &Request<B>) -> Self {
        let extensions = req.extensions();
        let counted = extensions.get::<Counted>();
        let correlated = extensions.get::<Correlated>();
        let route = counted.map_or(crate::routes::OTHER, |c| c.route);
        Self {
            auditor,
            started: Instant::now(),
            method: method_label(req.method()),
            route,
            path_id: path_id(route, req.uri().path()),
            correlation_id: correlated.map(|c| c.id.clone()),
            trace: correlated.map(|c| c.trace),
            peer: extensions.get::<fincode_server::Peer>().map(|peer| peer.0),
            idempotency_key: req.headers().get(&IDEMPOTENCY_KEY).cloned(),
            tries: counted.map(|c| c.tries.clone()),
            request_ids: None,
        }
    }

    /// The record's common part.
    fn record(&self, headers: Option<&HeaderMap>) -> Record {
        self.record_with_ids(headers).0
    }

    /// The record's common part, and the request's own ids it holds (`found`), so the
    /// response's copies of them are not recorded twice.
    fn record_with_ids(&self, headers: Option<&HeaderMap>) -> (Record, FoundIdList) {
        let mut record = self
            .auditor
            .record_call(self.method, self.route)
            .latency(self.started.elapsed());
        if let Some(id) = &self.correlation_id {
            record = if id.is_minted() {
                record.minted_correlation_id(id.as_str())
            } else {
                record.correlation_id(id.as_str())
            };
        }
        if let Some(trace) = &self.trace {
            // Hex digits are ASCII; the array spares an allocation per record.
            let digits = trace.trace_id_hex_digits();
            record = record.trace_id(std::str::from_utf8(&digits).unwrap_or_default());
        }
        if let Some(peer) = self.peer {
            record = record.peer(peer);
        }
        if let Some(tries) = &self.tries {
            record = record.attempts(tries.count());
        }
        if let Some(id) = &self.path_id {
            record = record.resource("path_id", id);
        }
        // A key the sidecar minted comes back on the response.
        let key = headers
            .and_then(|h| h.get(&IDEMPOTENCY_KEY))
            .or(self.idempotency_key.as_ref());
        if let Some(key) = key.and_then(|k| k.to_str().ok()) {
            record = record.resource("idempotency_key", key);
        }
        let found = self
            .request_ids
            .as_ref()
            .and_then(|ids| ids.lock().ok().map(|mut ids| std::mem::take(&mut *ids)))
            .unwrap_or_default();
        for (name, value) in &found {
            record = record.resource(name, value);
        }
        (record, found)
    }

    fn on_error(&self, error: &SidecarError) -> Record {
        let kind = error.kind();
        self.record(error.headers())
            .status(kind.status().as_u16())
            .outcome("error")
            .error(kind.code())
    }

    /// The response's record, to be completed by its body; a create-transaction
    /// response carries the [`Envelope`] the scan of that body will fill in.
    fn on_body<RB>(self, response: &mut Response<RB>) -> ResponseRecord {
        // Only the observe layer's outcome count reads the verdict: other routes spare
        // the allocation and the extension map.
        let envelope = outcome_counted(self.route).then(|| {
            let envelope = Envelope::default();
            response.extensions_mut().insert(envelope.clone());
            envelope
        });
        let status = response.status().as_u16();
        let error = response.extensions().get::<ErrorKind>().copied();
        let (record, request_ids) = self.record_with_ids(Some(response.headers()));
        ResponseRecord {
            record: Some(record.status(status)),
            request_ids,
            path_id: self.path_id,
            envelope,
            status,
            error,
            kept: BodyCopy::default(),
        }
    }

    /// Closed mode: waits for the response, reads it whole, commits its record, answers.
    async fn commit_after<F, RB>(self, inner: F) -> Result<Response<AuditedBody<RB>>, SidecarError>
    where
        F: Future<Output = Result<Response<RB>, SidecarError>>,
        RB: Body<Data = Bytes>,
        RB::Error: Into<BoxError>,
    {
        let mut unanswered = Unanswered(Some(self));
        let response = match inner.await {
            Ok(response) => response,
            Err(error) => {
                unanswered.commit_error(&error, "a refused call").await;
                return Err(error);
            }
        };
        let (parts, body) = response.into_parts();
        let collected = body
            .collect()
            .await
            .map(http_body_util::Collected::to_bytes);
        let Ok(body) = collected else {
            let error = SidecarError::new(
                ErrorKind::UpstreamUnreachable,
                "FinCode's response broke off before it was complete; FinCode may have \
                 acted on the call, so check its status before sending it again",
            );
            unanswered.commit_error(&error, "a broken response").await;
            return Err(error);
        };
        let mut response = Response::from_parts(parts, ());
        let Some(pending) = unanswered.take() else {
            return Err(SidecarError::new(
                ErrorKind::Internal,
                "a call answered twice",
            ));
        };
        let mut tap = pending.on_body(&mut response);
        tap.data(&body);
        if let Some(record) = tap.finish()
            && record.commit().await.is_err()
        {
            // FinCode answered: the app gets the answer (see the module docs); the
            // writer counted the record as lost and a gap record will say so.
            tracing::error!(
                "audit record of a completed call could not be committed; the response \
                     is passed on"
            );
        }
        Ok(response.map(|()| Either::Right(Full::new(body))))
    }
}

/// FinCode's business verdict on one response (`"status": "SUCCESS"` in a whole, valid
/// body), filled in when the audit layer's scan of the body ran, and carried in the
/// response's extensions: the observe layer above counts create-transaction outcomes
/// from it instead of copying and scanning the same bytes a second time. Empty when the
/// body was too large to scan (the observe layer does not count those either).
#[derive(Clone, Debug, Default)]
pub struct Envelope(Arc<OnceLock<bool>>);

// === impl Envelope ===

impl Envelope {
    /// The verdict, once the body was scanned.
    pub fn succeeded(&self) -> Option<bool> {
        self.0.get().copied()
    }
}

/// Watches the request body for resource ids.
#[derive(Debug)]
pub struct RequestIds {
    kept: BodyCopy,
    found: FoundIds,
}

impl Tap for RequestIds {
    fn data(&mut self, data: &Bytes) -> bool {
        self.kept.push(data, MAX_ID_BODY);
        true
    }

    fn end(self) {
        if self.kept.is_empty() {
            return;
        }
        let ids = ids::scan(self.kept.bytes(), false).ids;
        if let Ok(mut found) = self.found.lock() {
            found.extend(ids);
        }
    }

    fn abandoned(self) {}
}

/// Watches the response body and writes the call's record when it ends or goes away:
/// never dropped without writing it.
#[derive(Debug)]
pub struct ResponseRecord {
    record: Option<Record>,
    /// Where the scan's verdict on FinCode's envelope goes, for the observe layer
    /// (create-transaction only).
    envelope: Option<Envelope>,
    /// Ids the request carried, already in the record.
    request_ids: FoundIdList,
    /// The path's id, clear, already in the record as `path_id`.
    path_id: Option<String>,
    status: u16,
    error: Option<ErrorKind>,
    kept: BodyCopy,
}

impl ResponseRecord {
    /// The record, completed with what the body said.
    fn finish(&mut self) -> Option<Record> {
        let mut record = self.record.take()?;
        let mut business_failure = false;
        if !self.kept.too_large() {
            // An empty body is no success either (the scan of nothing says so).
            let found = ids::scan(self.kept.bytes(), true);
            business_failure = found.failed;
            if let Some(envelope) = &self.envelope {
                envelope.0.get_or_init(|| found.succeeded);
            }
            // FinCode's error code, for `support-bundle`'s "error response": the scan
            // keeps it only from a failed answer, and only as a short upper-case word.
            if let Some(code) = found.code {
                record = record.detail("fincode_code", code);
            }
            // A create's answer repeats the request's reference and customer code:
            // one member each (a JSON object with a name twice is read as the last).
            for (name, value) in found.ids {
                if !self
                    .request_ids
                    .iter()
                    .any(|(n, v)| *n == name && *v == value)
                {
                    // A transaction fetched by its id is named by that id in the answer
                    // too: one HMAC for both.
                    record = if self.path_id.as_deref().map(trim_id) == Some(trim_id(&value)) {
                        record.resource_as(name, "path_id")
                    } else {
                        record.resource(name, &value)
                    };
                }
            }
        }
        Some(match self.error {
            Some(kind) => record.outcome("error").error(kind.code()),
            None if self.status >= 400 || business_failure => record.outcome("failure"),
            None => record.outcome("success"),
        })
    }
}

impl Tap for ResponseRecord {
    fn data(&mut self, data: &Bytes) -> bool {
        // Never stop watching: the record is written at the end whatever the size.
        self.kept.push(data, MAX_ID_BODY);
        true
    }

    fn end(mut self) {
        if let Some(record) = self.finish() {
            record.write();
        }
    }

    fn abandoned(mut self) {
        if let Some(record) = self.finish() {
            record.detail("response", "incomplete").write();
        }
    }

    fn failed(mut self) {
        if let Some(record) = self.finish() {
            record.detail("response", "broken").write();
        }
    }
}

impl Drop for ResponseRecord {
    fn drop(&mut self) {
        // A tap dropped without a verdict (it should not happen) still leaves its record.
        if let Some(record) = self.record.take() {
            record.detail("response", "unknown").write();
        }
    }
}

/// The `{id}` segment of a templated path, if the route has one.
fn path_id(route: &str, path: &str) -> Option<String> {
    // The template matched the path's tail (after the base path), segment for segment,
    // so both are counted from the end.
    let from_end = route.rsplit('/').position(|segment| segment == "{id}")?;
    path.trim_end_matches('/')
        .rsplit('/')
        .nth(from_end)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_id_is_the_segment_under_the_template_placeholder() {
        let route = "/transactionmanagement/transactions/{id}";
        assert_eq!(
            path_id(
                route,
                "/api/v6/services/transactionmanagement/transactions/TXN-7"
            ),
            Some("TXN-7".to_owned())
        );
        assert_eq!(
            path_id(route, "/transactionmanagement/transactions/PCN1/"),
            Some("PCN1".to_owned())
        );
        assert_eq!(path_id("/transactionmanagement/transactions", "/x"), None);
    }
}
