//! Request size limits: the head must fit `limits.max_request_header_bytes` (431) and
//! the body `limits.max_request_body_bytes` (413).
//!
//! A declared `Content-Length` over the limit is refused before a byte goes to
//! FinCode. A chunked body is streamed through a counting wrapper
//! ([`http_body_util::Limited`]) that fails the upload the moment it crosses the
//! limit, so the sidecar never buffers an unbounded body and FinCode never receives a
//! complete oversized one.

use http::{Request, header};
use http_body_util::Limited;

use crate::{
    ErrorKind, SidecarError,
    check::{Check, CheckLayer, Checked},
};

/// Per-header overhead counted on top of name and value (": " and CRLF), so the limit
/// means the same as the bytes on the wire for HTTP/1.1.
const HEADER_OVERHEAD: usize = 4;

/// Adds [`RequestLimits`] to a stack.
pub type RequestLimitsLayer = CheckLayer<SizeLimits>;

/// Enforces head and body size limits.
pub type RequestLimits<S> = Checked<S, SizeLimits>;

/// The head and body size limits; built by [`RequestLimitsLayer::new`].
#[derive(Clone, Copy, Debug)]
pub struct SizeLimits {
    max_body: u64,
    max_head: usize,
}

// === impl RequestLimitsLayer ===

impl RequestLimitsLayer {
    /// Limits in bytes for the body and for the request head (line plus headers).
    pub fn new(max_body: u64, max_head: usize) -> Self {
        Self {
            check: SizeLimits { max_body, max_head },
        }
    }
}

// === impl SizeLimits ===

impl<B> Check<B> for SizeLimits {
    type Body = Limited<B>;

    fn check(&self, req: Request<B>) -> Result<Request<Limited<B>>, SidecarError> {
        let head = req.method().as_str().len()
            + req.uri().path_and_query().map_or(0, |p| p.as_str().len())
            + req
                .headers()
                .iter()
                .map(|(name, value)| name.as_str().len() + value.len() + HEADER_OVERHEAD)
                .sum::<usize>();
        if head > self.max_head {
            return Err(SidecarError::new(
                ErrorKind::HeadersTooLarge,
                format!(
                    "the request head is {head} bytes, over the limit of {} (limits.max_request_header_bytes); send fewer or smaller headers",
                    self.max_head
                ),
            ));
        }
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(len) = declared.filter(|len| *len > self.max_body) {
            return Err(body_too_large(len, self.max_body));
        }
        // `Limited` counts in usize; a limit beyond the address space is no limit.
        let max = usize::try_from(self.max_body).unwrap_or(usize::MAX);
        Ok(req.map(|body| Limited::new(body, max)))
    }
}

/// The error for a body over the limit; `len` is what was declared or seen.
pub(crate) fn body_too_large(len: u64, max: u64) -> SidecarError {
    SidecarError::new(
        ErrorKind::BodyTooLarge,
        format!(
            "the request body is {len} bytes or more, over the limit of {max} (limits.max_request_body_bytes)"
        ),
    )
}
