//! Correlation: every request gets an `X-Request-ID`, kept if the app sent a valid
//! one (or an `X-Correlation-ID`), otherwise minted as a UUIDv7 (time-ordered, so ids
//! sort like the logs they appear in). The id is forwarded to FinCode, stored in the
//! request extensions for inner layers, and echoed on the response, including on
//! errors the sidecar makes.
//!
//! It also continues (or starts) the W3C trace context; the client layers send FinCode a
//! `traceparent` naming each try's span, a child of the sidecar's.
//!
//! This is the outermost layer so that nothing below it ever runs without an id.

mod layer;
mod service;
mod trace;

pub use self::layer::CorrelationLayer;
pub use self::service::{Correlation, ResponseFuture};
pub use self::trace::{TRACEPARENT, TRACESTATE, TraceContext};

use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderMap, HeaderValue, header::HeaderName};

/// `X-Request-ID`: the id the sidecar echoes and forwards.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `X-Correlation-ID`: accepted from the app as an alternative spelling.
pub static X_CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");

/// Longest id accepted from the app; longer ones are replaced, not truncated,
/// so that two different ids can never collapse into one.
const MAX_ID_LEN: usize = 128;

/// The last (unix milliseconds << 12 | counter) handed out, so ids minted in the same
/// millisecond still sort in minting order (RFC 9562 6.2, method 1).
static LAST_V7: AtomicU64 = AtomicU64::new(0);

/// A UUIDv7 whose random bits come from the thread-local CSPRNG: `Uuid::now_v7` reads
/// the OS RNG, one `getrandom` syscall per request.
fn uuid_v7() -> uuid::Uuid {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
    let mut last = LAST_V7.load(Ordering::Relaxed);
    let stamp = loop {
        let next = (now << 12).max(last + 1);
        match LAST_V7.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break next,
            Err(seen) => last = seen,
        }
    };
    let mut random: [u8; 10] = rand::random();
    // rand_a: the 12-bit counter (the builder sets the version nibble above it).
    random[0] = ((stamp >> 8) & 0x0f) as u8;
    random[1] = (stamp & 0xff) as u8;
    uuid::Builder::from_unix_timestamp_millis(stamp >> 12, &random).into_uuid()
}

/// What the correlation layer puts on each request for the layers below, as one
/// extension: each extension is an allocation, and the retry layer copies them all for
/// every try.
#[derive(Clone, Debug)]
pub struct Correlated {
    /// The correlation id.
    pub id: RequestId,
    /// The trace the call belongs to, with the sidecar's span in it.
    pub trace: TraceContext,
}

/// The request's correlation id (in [`Correlated`]).
#[derive(Clone, Debug)]
pub struct RequestId {
    value: HeaderValue,
    /// Minted by the sidecar (a UUID), not taken from the app.
    minted: bool,
}

// === impl RequestId ===

impl RequestId {
    /// Takes the app's id when it is well formed, else mints a UUIDv7.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        Self::from_app(headers).unwrap_or_else(Self::mint)
    }

    /// The app's id, when it sent a well-formed one; never mints.
    pub fn from_app(headers: &HeaderMap) -> Option<Self> {
        [&X_REQUEST_ID, &X_CORRELATION_ID]
            .into_iter()
            .filter_map(|name| headers.get(name))
            .find(|value| is_well_formed(value.as_bytes()))
            .map(|value| Self {
                value: value.clone(),
                minted: false,
            })
    }

    /// A fresh UUIDv7 id.
    pub fn mint() -> Self {
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let text = uuid_v7().hyphenated().encode_lower(&mut buf);
        Self {
            value: HeaderValue::from_str(text)
                .unwrap_or_else(|_| HeaderValue::from_static("invalid")),
            minted: true,
        }
    }

    /// The id as a header value.
    pub fn header_value(&self) -> &HeaderValue {
        &self.value
    }

    /// Whether the sidecar minted it (a UUID it made: nothing of the app's in it), rather
    /// than taking the app's.
    pub fn is_minted(&self) -> bool {
        self.minted
    }

    /// The id as text (always ASCII: see [`is_well_formed`]).
    pub fn as_str(&self) -> &str {
        self.value.to_str().unwrap_or_default()
    }
}

/// Bounded length and a conservative charset, so an id can be logged, used as a
/// metric exemplar or a file name without escaping and cannot forge a log line.
fn is_well_formed(id: &[u8]) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=@".contains(b))
}

#[cfg(test)]
mod tests;
