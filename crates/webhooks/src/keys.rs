//! Event keys. The templates themselves ([`KeyTemplate`]) are parsed with the config;
//! this is what the ack path does with them.
//!
//! FinCode moves one `Reference` through several `Status` values, so the default dedupe
//! key holds the status: each transition is delivered once, a redelivery of the same one
//! never.

use fincode_config::KeyTemplate;
use http::HeaderMap;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The dedupe key for an event: the template's unambiguous rendering
/// ([`KeyTemplate::render_key`]: escaped, typed, an empty value counted as missing), or,
/// when the event lacks a value the template names, a digest of the raw body, so exact
/// redeliveries still collapse and distinct events never do.
pub fn dedupe_key(
    template: &KeyTemplate,
    event: &Value,
    headers: &HeaderMap,
    body: &[u8],
) -> String {
    template.render_key(event, headers).unwrap_or_else(|| {
        let mut key = String::from("sha256:");
        key.push_str(&hex(&Sha256::digest(body)));
        key
    })
}

/// The ordering key for an event, rendered as dedupe keys are; `None` (unordered) when the
/// event lacks a value the template names.
pub fn order_key(template: &KeyTemplate, event: &Value, headers: &HeaderMap) -> Option<String> {
    template.render_key(event, headers)
}

pub(crate) use crate::verify::encode_hex as hex;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn missing_fields_fall_back_to_a_body_digest() {
        let t = KeyTemplate::parse("{Reference}").unwrap();
        let a = dedupe_key(&t, &json!({}), &HeaderMap::new(), b"{}");
        let b = dedupe_key(&t, &json!({}), &HeaderMap::new(), b"{ }");
        assert!(a.starts_with("sha256:") && a.len() == 7 + 64);
        assert_eq!(
            a,
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_ne!(a, b, "distinct bodies never collapse");
        let present = dedupe_key(&t, &json!({"Reference": "PCN1"}), &HeaderMap::new(), b"{}");
        assert_eq!(present, "PCN1");
    }

    #[test]
    fn an_empty_field_is_missing_not_a_key() {
        let t = KeyTemplate::parse("{eventType}:{Reference}:{Status}").unwrap();
        let event = |body: &[u8]| {
            let v: Value = serde_json::from_slice(body).unwrap();
            dedupe_key(&t, &v, &HeaderMap::new(), body)
        };
        let a = event(br#"{"eventType":"T","Reference":"","Status":"PAID","n":1}"#);
        let b = event(br#"{"eventType":"T","Reference":"","Status":"PAID","n":2}"#);
        assert!(a.starts_with("sha256:"), "{a}");
        assert_ne!(
            a, b,
            "two events with an empty Reference are not duplicates"
        );
    }

    #[test]
    fn parts_cannot_run_into_each_other() {
        let t = KeyTemplate::parse("{a}:{b}").unwrap();
        let h = HeaderMap::new();
        let one = dedupe_key(&t, &json!({"a": "x:y", "b": "z"}), &h, b"1");
        let two = dedupe_key(&t, &json!({"a": "x", "b": "y:z"}), &h, b"2");
        assert_ne!(one, two);
        let adjacent = KeyTemplate::parse("{a}{b}").unwrap();
        assert_ne!(
            dedupe_key(&adjacent, &json!({"a": "ab", "b": "c"}), &h, b"1"),
            dedupe_key(&adjacent, &json!({"a": "a", "b": "bc"}), &h, b"2"),
        );
    }

    #[test]
    fn a_number_and_a_string_differ() {
        let t = KeyTemplate::parse("{Reference}").unwrap();
        let h = HeaderMap::new();
        assert_ne!(
            dedupe_key(&t, &json!({"Reference": 1}), &h, b"1"),
            dedupe_key(&t, &json!({"Reference": "1"}), &h, b"2"),
        );
        assert_eq!(
            dedupe_key(&t, &json!({"Reference": "PCN1"}), &h, b"1"),
            "PCN1",
            "plain strings keep the readable key they always had"
        );
    }
}
