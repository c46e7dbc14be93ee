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

/// The dedupe key for an event: the template's rendering, or, when the event lacks a
/// field the template names, a digest of the raw body, so exact redeliveries still
/// collapse and distinct events never do.
pub fn dedupe_key(
    template: &KeyTemplate,
    event: &Value,
    headers: &HeaderMap,
    body: &[u8],
) -> String {
    template.render(event, headers).unwrap_or_else(|| {
        let mut key = String::from("sha256:");
        key.push_str(&hex(&Sha256::digest(body)));
        key
    })
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
}
