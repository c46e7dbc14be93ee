use http::{HeaderMap, HeaderValue};

use super::*;

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                http::header::HeaderName::from_static(k),
                HeaderValue::from_static(v),
            )
        })
        .collect()
}

#[test]
fn keeps_a_well_formed_request_id() {
    let id = RequestId::from_headers(&headers(&[("x-request-id", "order-42:retry.1")]));
    assert_eq!(id.as_str(), "order-42:retry.1");
}

#[test]
fn accepts_correlation_id_when_request_id_is_absent() {
    let id = RequestId::from_headers(&headers(&[("x-correlation-id", "abc-123")]));
    assert_eq!(id.as_str(), "abc-123");
}

#[test]
fn replaces_malformed_or_oversized_ids_with_uuid_v7() {
    let long = "a".repeat(MAX_ID_LEN + 1);
    for bad in ["", "has space", "semi;colon", "quote\"", long.as_str()] {
        let mut map = HeaderMap::new();
        map.insert("x-request-id", HeaderValue::from_str(bad).unwrap());
        let id = RequestId::from_headers(&map);
        let parsed = uuid::Uuid::parse_str(id.as_str()).expect("a minted uuid");
        assert_eq!(parsed.get_version_num(), 7, "{bad:?} should be replaced");
    }
}

#[test]
fn minted_ids_are_unique_and_time_ordered() {
    let a = RequestId::mint();
    let b = RequestId::mint();
    assert_ne!(a.as_str(), b.as_str());
    assert!(a.as_str() < b.as_str());
}

#[test]
fn minted_ids_are_rfc_9562_v7_in_strict_order_even_within_a_millisecond() {
    let ids: Vec<String> = (0..10_000)
        .map(|_| RequestId::mint().as_str().to_owned())
        .collect();
    for pair in ids.windows(2) {
        assert!(pair[0] < pair[1], "{} !< {}", pair[0], pair[1]);
    }
    let parsed = uuid::Uuid::parse_str(&ids[0]).unwrap();
    assert_eq!(parsed.get_version_num(), 7);
    assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122);
    let (secs, _) = parsed.get_timestamp().unwrap().to_unix();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now.abs_diff(secs) < 5, "the timestamp is now");
}

#[test]
fn traceparent_is_written_byte_exact() {
    let headers = [(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )];
    let mut map = http::HeaderMap::new();
    for (k, v) in headers {
        map.insert(k, http::HeaderValue::from_static(v));
    }
    let trace = TraceContext::from_headers(&map, 1.0);
    assert_eq!(
        trace.traceparent_for([0xab, 0xcd, 0, 1, 2, 3, 4, 0xff]),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-abcd0001020304ff-01"
    );
    assert_eq!(trace.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
}
