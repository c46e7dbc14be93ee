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
