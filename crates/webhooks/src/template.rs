//! Key templates: how an event's deduplication and ordering keys are built.
//!
//! `{eventType}:{Reference}:{Status}` (the default dedupe key) names top-level JSON
//! fields; `{/data/id}` is a JSON pointer; `{header:webhook-id}` a request header.
//! FinCode moves one `Reference` through several `Status` values, so the status belongs
//! in the key: each transition is delivered once, a redelivery of the same one never.

use http::{HeaderMap, HeaderName};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    /// A JSON pointer (`{name}` is stored as `/name`).
    Pointer(String),
    Header(HeaderName),
}

/// Why a template is malformed (the config loader reports these against the key).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A `{` without its `}`, or a stray `}`.
    #[error("unbalanced brace at byte {0}")]
    Unbalanced(usize),
    /// `{}` or a placeholder that is not a field, pointer or header.
    #[error("bad placeholder {0:?}: use {{field}}, {{/json/pointer}} or {{header:name}}")]
    Placeholder(String),
    /// Only literal text: every event would get the same key.
    #[error("no placeholder: every event would get the same key")]
    NoPlaceholder,
}

// === impl Template ===

impl Template {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text.char_indices().peekable();
        while let Some((at, c)) = rest.next() {
            match c {
                '{' => {
                    let mut inner = String::new();
                    let mut closed = false;
                    for (_, c) in rest.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        if c == '{' {
                            return Err(TemplateError::Unbalanced(at));
                        }
                        inner.push(c);
                    }
                    if !closed {
                        return Err(TemplateError::Unbalanced(at));
                    }
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(placeholder(&inner)?);
                }
                '}' => return Err(TemplateError::Unbalanced(at)),
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        if !parts.iter().any(|p| !matches!(p, Part::Literal(_))) {
            return Err(TemplateError::NoPlaceholder);
        }
        Ok(Self { parts })
    }

    /// The key for an event, or `None` when a placeholder has no value in it (a field
    /// absent or null, a header missing).
    pub fn render(&self, event: &Value, headers: &HeaderMap) -> Option<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Pointer(pointer) => match event.pointer(pointer)? {
                    Value::Null => return None,
                    Value::String(text) => out.push_str(text),
                    other => out.push_str(&other.to_string()),
                },
                Part::Header(name) => out.push_str(headers.get(name)?.to_str().ok()?),
            }
        }
        Some(out)
    }
}

/// The dedupe key for an event: the template's rendering, or, when the event lacks a
/// field the template names, a digest of the raw body, so exact redeliveries still
/// collapse and distinct events never do.
pub fn dedupe_key(template: &Template, event: &Value, headers: &HeaderMap, body: &[u8]) -> String {
    template.render(event, headers).unwrap_or_else(|| {
        let mut key = String::from("sha256:");
        key.push_str(&hex(&Sha256::digest(body)));
        key
    })
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    out
}

fn placeholder(inner: &str) -> Result<Part, TemplateError> {
    let bad = || TemplateError::Placeholder(inner.to_owned());
    if let Some(name) = inner.strip_prefix("header:") {
        return HeaderName::try_from(name)
            .map(Part::Header)
            .map_err(|_| bad());
    }
    if inner.starts_with('/') {
        return Ok(Part::Pointer(inner.to_owned()));
    }
    if inner.is_empty() || inner.contains(['/', ':', ' ']) {
        return Err(bad());
    }
    // A plain name is a top-level field; escape it as a pointer segment.
    Ok(Part::Pointer(format!(
        "/{}",
        inner.replace('~', "~0").replace('/', "~1")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    HeaderName::try_from(*k).unwrap(),
                    http::HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn the_default_key_names_type_reference_and_status() {
        let t = Template::parse("{eventType}:{Reference}:{Status}").unwrap();
        let event = json!({"eventType": "TRANSACTION_STATUS", "Reference": "PCN1", "Status": "PAID", "msgCode": "00"});
        assert_eq!(
            t.render(&event, &HeaderMap::new()).as_deref(),
            Some("TRANSACTION_STATUS:PCN1:PAID")
        );
    }

    #[test]
    fn pointers_headers_and_non_string_values() {
        let t = Template::parse("{/data/id}-{header:webhook-id}-{amount}").unwrap();
        let event = json!({"data": {"id": 42}, "amount": 12.5});
        let h = headers(&[("webhook-id", "msg_1")]);
        assert_eq!(t.render(&event, &h).as_deref(), Some("42-msg_1-12.5"));
        // A missing header or field, or a null, renders nothing.
        assert_eq!(t.render(&event, &HeaderMap::new()), None);
        assert_eq!(
            t.render(&json!({"data": {"id": null}, "amount": 1}), &h),
            None
        );
    }

    #[test]
    fn missing_fields_fall_back_to_a_body_digest() {
        let t = Template::parse("{Reference}").unwrap();
        let a = dedupe_key(&t, &json!({}), &HeaderMap::new(), b"{}");
        let b = dedupe_key(&t, &json!({}), &HeaderMap::new(), b"{ }");
        assert!(a.starts_with("sha256:") && a.len() == 7 + 64);
        assert_ne!(a, b, "distinct bodies never collapse");
        assert_eq!(a, dedupe_key(&t, &json!({}), &HeaderMap::new(), b"{}"));
    }

    #[test]
    fn malformed_templates_are_refused() {
        let cases = [
            ("{a", TemplateError::Unbalanced(0)),
            ("a}", TemplateError::Unbalanced(1)),
            ("x{a{b}}", TemplateError::Unbalanced(1)),
            ("{}", TemplateError::Placeholder(String::new())),
            (
                "{header:bad name}",
                TemplateError::Placeholder("header:bad name".to_owned()),
            ),
            ("{a b}", TemplateError::Placeholder("a b".to_owned())),
            ("constant", TemplateError::NoPlaceholder),
        ];
        for (text, want) in cases {
            assert_eq!(Template::parse(text), Err(want), "{text}");
        }
    }
}
