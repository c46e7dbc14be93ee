//! The ingress `Connection` handling never panics; headers the sidecar manages survive
//! whatever `Connection` names; no other header it names survives, nor any fixed
//! hop-by-hop or `Proxy-*` header.
//!
//! Input: the first line is a `Connection` value, every further line a `name: value`
//! header (lines that are not valid headers are skipped).
#![no_main]

use fincode_proxy::headers::HeaderPolicy;
use http::{HeaderMap, HeaderName, HeaderValue, header};
use libfuzzer_sys::fuzz_target;

const FIXED: [&str; 8] = [
    "connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
    "keep-alive",
];

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let mut headers = HeaderMap::new();
    if let Some(Ok(value)) = lines.next().map(HeaderValue::from_str) {
        headers.append(header::CONNECTION, value);
    }
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value.trim()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    let policy = HeaderPolicy::new(
        [
            HeaderName::from_static("platform"),
            HeaderName::from_static("uuid"),
        ],
        &HeaderName::from_static("x-fincode-token"),
    );
    // What `Connection` names, restated independently of the code under test.
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    let before = headers.clone();

    policy.apply(&mut headers);

    for managed in [
        "x-idempotency-key",
        "x-auth-token",
        "authorization",
        "x-request-id",
        "x-correlation-id",
        "traceparent",
        "tracestate",
        "platform",
        "uuid",
        "x-fincode-token",
    ] {
        let kept: Vec<&[u8]> = headers.get_all(managed).iter().map(HeaderValue::as_bytes).collect();
        let sent: Vec<&[u8]> = before.get_all(managed).iter().map(HeaderValue::as_bytes).collect();
        assert_eq!(kept, sent, "managed header {managed} changed");
    }
    for name in &listed {
        if !policy.is_managed(name) {
            assert!(!headers.contains_key(name), "{name} named in Connection survived");
        }
    }
    for name in FIXED {
        assert!(!headers.contains_key(name), "{name} survived");
    }
    assert!(!headers.keys().any(|k| k.as_str().starts_with("proxy-")));
    // Nothing else was touched.
    for (name, value) in &before {
        let hop = listed.contains(name)
            || FIXED.contains(&name.as_str())
            || name.as_str().starts_with("proxy-");
        if !hop || policy.is_managed(name) {
            assert!(headers.get_all(name).iter().any(|v| v == value), "{name} lost");
        }
    }
});
