//! The one place the sidecar turns its own failures into responses.
//!
//! Every error the sidecar itself makes is an RFC 9457 `application/problem+json`
//! body plus an `x-sidecar-error` header naming the cause, so that an app can tell a
//! sidecar failure from a FinCode answer (which passes through untouched) without
//! parsing bodies, and an operator can alert on the header.

use std::{error::Error as StdError, fmt, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};

/// The header naming the cause of an error the sidecar made.
pub const SIDECAR_ERROR_HEADER: &str = "x-sidecar-error";

/// The header telling the app how many tries to FinCode its request took.
pub const ATTEMPTS_HEADER: &str = "x-sidecar-attempts";

/// What went wrong, as far as the app needs to know. Each kind has one status,
/// one stable code (the `x-sidecar-error` value) and one title.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// FinCode could not be reached: connection refused, reset, DNS, closed early.
    UpstreamUnreachable,
    /// FinCode did not answer in time (connect or response head).
    UpstreamTimeout,
    /// The TLS handshake with FinCode failed (untrusted certificate, bad name...).
    /// The sidecar never falls back to plain HTTP.
    UpstreamTls,
    /// The request body is larger than `limits.max_request_body_bytes`.
    BodyTooLarge,
    /// The app did not finish sending the request body within `retry.deadline`. The
    /// app's slowness, not FinCode's: kept apart from [`UpstreamTimeout`](Self::UpstreamTimeout)
    /// so that stalled uploads neither open the circuit breaker for every payment nor
    /// count as FinCode errors in metrics and alerts.
    RequestBodyTimeout,
    /// The request head is larger than `limits.max_request_header_bytes`.
    HeadersTooLarge,
    /// The request cannot be forwarded as it is (unreadable body).
    BadRequest,
    /// The request path could be read differently by FinCode than by the sidecar
    /// (encoded dot segments or separators, path parameters, a backslash...).
    BadPath,
    /// The route is reserved for the sidecar (`/securitymanagement/*` while the sidecar
    /// owns the credentials).
    ForbiddenRoute,
    /// The sidecar failed internally (a panic: a bug).
    Internal,
    /// The sidecar holds no usable FinCode token (login failing, account locked...).
    AuthFailed,
    /// The circuit breaker is open after repeated FinCode failures: failing fast.
    CircuitOpen,
    /// The app is over the configured rate (or FinCode asked the sidecar to slow down).
    RateLimited,
    /// Too many requests are in flight (`limits.max_concurrent_requests`).
    Overloaded,
    /// `audit.fail_closed` is set and the audit trail cannot be written: the call was
    /// not sent to FinCode.
    AuditUnavailable,
}

// === impl ErrorKind ===

impl ErrorKind {
    /// The stable code sent in `x-sidecar-error` and used in the problem `type`.
    pub const fn code(self) -> &'static str {
        match self {
            Self::UpstreamUnreachable => "upstream_unreachable",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::UpstreamTls => "upstream_tls",
            Self::BodyTooLarge => "body_too_large",
            Self::RequestBodyTimeout => "body_timeout",
            Self::HeadersTooLarge => "headers_too_large",
            Self::BadRequest => "bad_request",
            Self::BadPath => "bad_path",
            Self::ForbiddenRoute => "forbidden_route",
            Self::Internal => "internal",
            Self::AuthFailed => "auth_failed",
            Self::CircuitOpen => "circuit_open",
            Self::RateLimited => "rate_limited",
            Self::Overloaded => "overloaded",
            Self::AuditUnavailable => "audit_unavailable",
        }
    }

    /// The HTTP status the app receives.
    pub const fn status(self) -> StatusCode {
        match self {
            Self::UpstreamUnreachable | Self::UpstreamTls => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestBodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::BadRequest | Self::BadPath => StatusCode::BAD_REQUEST,
            Self::ForbiddenRoute => StatusCode::FORBIDDEN,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::AuthFailed | Self::CircuitOpen | Self::Overloaded | Self::AuditUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    const fn title(self) -> &'static str {
        match self {
            Self::UpstreamUnreachable => "FinCode is unreachable",
            Self::UpstreamTimeout => "FinCode did not answer in time",
            Self::UpstreamTls => "TLS handshake with FinCode failed",
            Self::BodyTooLarge => "Request body too large",
            Self::RequestBodyTimeout => "Request body not received in time",
            Self::HeadersTooLarge => "Request headers too large",
            Self::BadRequest => "Request cannot be forwarded",
            Self::BadPath => "Ambiguous request path",
            Self::ForbiddenRoute => "Route reserved for the sidecar",
            Self::Internal => "Internal sidecar error",
            Self::AuthFailed => "Not authenticated with FinCode",
            Self::CircuitOpen => "FinCode is failing; the sidecar is failing fast",
            Self::RateLimited => "Too many requests",
            Self::Overloaded => "The sidecar is at its in-flight request limit",
            Self::AuditUnavailable => "The audit trail cannot be written; nothing was sent",
        }
    }
}

/// An error the sidecar made, with an actionable detail that never holds a secret.
///
/// The detail is what the app reads, so it says in words what the cause said; the cause
/// itself (the client's error for a failed try) is kept as
/// [`source`](std::error::Error::source) for code that classifies by type.
#[derive(Debug, Clone)]
pub struct SidecarError {
    kind: ErrorKind,
    detail: String,
    /// Shared so the error stays `Clone` (the retry layer keeps the last one).
    source: Option<Arc<dyn StdError + Send + Sync + 'static>>,
    retry_after: Option<Duration>,
    unsent: bool,
    /// Headers the layer that failed wants the app to see (the minted idempotency key, why
    /// retries stopped); boxed so the common error stays small.
    headers: Option<Box<HeaderMap>>,
}

// === impl SidecarError ===

impl SidecarError {
    /// An error of `kind`; `detail` tells the app or operator what to do next.
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            source: None,
            retry_after: None,
            unsent: false,
            headers: None,
        }
    }

    /// Marks a failure that happened before any byte of the request left: the connection
    /// or the TLS handshake failed (a TLS error after the handshake is not one). Only such a request may be sent again whatever its
    /// method, since FinCode cannot have acted on it.
    #[must_use]
    pub(crate) fn unsent(mut self) -> Self {
        self.unsent = true;
        self
    }

    /// Whether FinCode may have received (part of) the request.
    pub fn may_have_been_sent(&self) -> bool {
        !self.unsent
    }

    /// Adds a header to the problem response.
    #[must_use]
    pub(crate) fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers
            .get_or_insert_with(Default::default)
            .insert(name, value);
        self
    }

    /// Keeps `cause` as this error's source.
    #[must_use]
    pub(crate) fn caused_by(mut self, cause: impl StdError + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(cause));
        self
    }

    /// Appends a clause to the detail (e.g. what the retry layer did).
    #[must_use]
    pub(crate) fn with_note(mut self, note: &str) -> Self {
        self.detail.push_str("; ");
        self.detail.push_str(note);
        self
    }

    /// Tells the app when trying again makes sense (`Retry-After` and `retry_after`).
    #[must_use]
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// Headers the failing layer wants the app to see (e.g. a minted idempotency key).
    pub fn headers(&self) -> Option<&HeaderMap> {
        self.headers.as_deref()
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The human-readable detail.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// Renders the RFC 9457 problem response for the request `correlation_id`.
    pub fn to_response<B: From<Bytes>>(&self, correlation_id: &str) -> Response<B> {
        let status = self.kind.status();
        let mut problem = serde_json::json!({
            "type": format!("urn:fincode-sidecar:error:{}", self.kind.code()),
            "title": self.kind.title(),
            "status": status.as_u16(),
            "detail": self.detail,
            "correlation_id": correlation_id,
        });
        if let Some(after) = self.retry_after {
            problem["retry_after"] = whole_seconds(after).into();
        }
        let body = Bytes::from(problem.to_string());
        let mut response = Response::new(B::from(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        headers.insert(
            SIDECAR_ERROR_HEADER,
            HeaderValue::from_static(self.kind.code()),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(after) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(whole_seconds(after)));
        }
        if let Some(extra) = &self.headers {
            for (name, value) in extra.iter() {
                headers.insert(name, value.clone());
            }
        }
        response
    }
}

impl fmt::Display for SidecarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.code(), self.detail)
    }
}

impl StdError for SidecarError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|cause| cause as &(dyn StdError + 'static))
    }
}

/// `Retry-After` counts whole seconds: round up, so an app that waits exactly that long is
/// not turned away again a moment too early.
pub(crate) fn whole_seconds(after: Duration) -> u64 {
    after.as_secs() + u64::from(after.subsec_nanos() > 0)
}
