//! W3C Trace Context (`traceparent`/`tracestate`): continued when the app sent a valid
//! one, started otherwise, and sent to FinCode with the sidecar's span as the parent,
//! so a FinCode support ticket and the app's traces meet on one trace id.

use http::{HeaderMap, HeaderValue, header::HeaderName};

/// `traceparent`.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `tracestate`: forwarded untouched with a valid `traceparent`, dropped otherwise.
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The request's trace context, stored in request extensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace id (never all zeros).
    pub trace_id: [u8; 16],
    /// The app's span that called us, when the app sent a `traceparent`.
    pub parent_span_id: Option<[u8; 8]>,
    /// The sidecar's span for this request: FinCode's parent.
    pub span_id: [u8; 8],
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

// === impl TraceContext ===

impl TraceContext {
    /// Continues a valid incoming `traceparent` (keeping the app's sampling decision),
    /// else starts a new trace, sampled with probability `sample_ratio`.
    pub fn from_headers(headers: &HeaderMap, sample_ratio: f64) -> Self {
        let incoming = headers
            .get(&TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(parse);
        let span_id = random_span_id();
        if let Some((trace_id, parent, flags)) = incoming {
            return Self {
                trace_id,
                parent_span_id: Some(parent),
                span_id,
                flags,
            };
        }
        let mut trace_id: [u8; 16] = rand::random();
        trace_id[0] |= 1; // never the all-zero invalid id
        let sampled = sample_ratio >= 1.0 || rand::random::<f64>() < sample_ratio;
        Self {
            trace_id,
            parent_span_id: None,
            span_id,
            flags: u8::from(sampled),
        }
    }

    /// Whether this trace is recorded (the W3C `sampled` flag).
    pub fn is_sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// A fresh span id, for a child span such as one upstream try.
    pub fn new_span_id() -> [u8; 8] {
        random_span_id()
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// The trace id as 32 lowercase hex digits, without an allocation (the access log
    /// writes it on every request).
    pub fn trace_id_hex_digits(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        hex_into(&self.trace_id, &mut out);
        out
    }

    /// The `traceparent` naming our server span as the parent.
    pub fn traceparent(&self) -> HeaderValue {
        self.traceparent_for(self.span_id)
    }

    /// The `traceparent` naming `span_id` (a child of ours, such as one upstream try) as
    /// the parent.
    pub fn traceparent_for(&self, span_id: [u8; 8]) -> HeaderValue {
        // Once per try on the hot path: written into a stack buffer, no formatter.
        let mut value = [0u8; 55];
        value[..3].copy_from_slice(b"00-");
        hex_into(&self.trace_id, &mut value[3..35]);
        value[35] = b'-';
        hex_into(&span_id, &mut value[36..52]);
        value[52] = b'-';
        hex_into(&[self.flags], &mut value[53..55]);
        HeaderValue::from_bytes(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// `00-<32 hex>-<16 hex>-<2 hex>`, lowercase, ids not all zero (W3C Trace Context).
fn parse(value: &str) -> Option<([u8; 16], [u8; 8], u8)> {
    let mut parts = value.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    // Version 00 has exactly four fields; a future version may add more after flags.
    if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    let trace_id: [u8; 16] = unhex(trace)?;
    let parent: [u8; 8] = unhex(parent)?;
    let [flags] = unhex::<1>(flags)?;
    if trace_id == [0; 16] || parent == [0; 8] {
        return None;
    }
    Some((trace_id, parent, flags))
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// Lowercase hex of `bytes` into `out` (exactly twice as long).
fn hex_into(bytes: &[u8], out: &mut [u8]) {
    let _ = hex::encode_to_slice(bytes, out);
}

/// From the thread-local CSPRNG: no syscall per request (uuid v4 calls getrandom).
fn random_span_id() -> [u8; 8] {
    let mut id: [u8; 8] = rand::random();
    id[0] |= 1;
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continues_a_valid_traceparent_with_a_new_parent() {
        let mut headers = HeaderMap::new();
        headers.insert(
            &TRACEPARENT,
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let ctx = TraceContext::from_headers(&headers, 1.0);
        assert_eq!(ctx.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            ctx.parent_span_id,
            Some([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7])
        );
        let out = ctx.traceparent();
        let out = out.to_str().unwrap();
        assert!(
            out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{out}"
        );
        assert!(
            !out.contains("00f067aa0ba902b7"),
            "our span is the new parent: {out}"
        );
        assert!(out.ends_with("-01"));
    }

    #[test]
    fn starts_a_trace_for_missing_or_invalid_headers() {
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "garbage\r\nx",
        ] {
            let mut headers = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(bad) {
                headers.insert(&TRACEPARENT, v);
            }
            let ctx = TraceContext::from_headers(&headers, 1.0);
            assert_eq!(ctx.parent_span_id, None, "{bad:?}");
            assert_ne!(ctx.trace_id, [0; 16]);
            assert_eq!(ctx.flags, 1);
        }
    }

    #[test]
    fn new_traces_follow_the_ratio_and_continued_ones_keep_the_apps_decision() {
        let empty = HeaderMap::new();
        assert!(!TraceContext::from_headers(&empty, 0.0).is_sampled());
        assert!(TraceContext::from_headers(&empty, 1.0).is_sampled());
        let sampled = (0..2000)
            .filter(|_| TraceContext::from_headers(&empty, 0.25).is_sampled())
            .count();
        assert!((300..700).contains(&sampled), "{sampled} of 2000 at 0.25");

        let mut headers = HeaderMap::new();
        headers.insert(
            &TRACEPARENT,
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        assert!(TraceContext::from_headers(&headers, 0.0).is_sampled());
        headers.insert(
            &TRACEPARENT,
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
        );
        let ctx = TraceContext::from_headers(&headers, 1.0);
        assert!(!ctx.is_sampled());
        let child = TraceContext::new_span_id();
        let out = ctx.traceparent_for(child);
        assert_eq!(
            out.to_str().unwrap(),
            format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-00", hex(&child))
        );
    }
}
