//! The one place the sidecar turns its own failures into responses.
//!
//! Every error the sidecar itself makes is an RFC 9457 `application/problem+json`
//! body plus an `x-sidecar-error` header naming the cause, so that an app can tell a
//! sidecar failure from a FinCode answer (which passes through untouched) without
//! parsing bodies, and an operator can alert on the header.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

/// The header naming the cause of an error the sidecar made.
pub const SIDECAR_ERROR_HEADER: &str = "x-sidecar-error";

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
    /// The request head is larger than `limits.max_request_header_bytes`.
    HeadersTooLarge,
    /// The request cannot be forwarded as it is (bad path, unreadable body).
    BadRequest,
    /// The sidecar holds no usable FinCode token (login failing, account locked...).
    AuthFailed,
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
            Self::HeadersTooLarge => "headers_too_large",
            Self::BadRequest => "bad_request",
            Self::AuthFailed => "auth_failed",
        }
    }

    /// The HTTP status the app receives.
    pub const fn status(self) -> StatusCode {
        match self {
            Self::UpstreamUnreachable | Self::UpstreamTls => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::AuthFailed => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    const fn title(self) -> &'static str {
        match self {
            Self::UpstreamUnreachable => "FinCode is unreachable",
            Self::UpstreamTimeout => "FinCode did not answer in time",
            Self::UpstreamTls => "TLS handshake with FinCode failed",
            Self::BodyTooLarge => "Request body too large",
            Self::HeadersTooLarge => "Request headers too large",
            Self::BadRequest => "Request cannot be forwarded",
            Self::AuthFailed => "Not authenticated with FinCode",
        }
    }
}

/// An error the sidecar made, with an actionable detail that never holds a secret.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {detail}", kind.code())]
pub struct SidecarError {
    kind: ErrorKind,
    detail: String,
    retry_after: Option<Duration>,
}

// === impl SidecarError ===

impl SidecarError {
    /// An error of `kind`; `detail` tells the app or operator what to do next.
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// Tells the app when trying again makes sense (`Retry-After` and `retry_after`).
    #[must_use]
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
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
            problem["retry_after"] = after.as_secs().into();
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
            headers.insert(header::RETRY_AFTER, HeaderValue::from(after.as_secs()));
        }
        response
    }
}
