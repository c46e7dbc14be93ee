//! Key templates: how a webhook event's deduplication and ordering keys (and the
//! confirm-by-query path) are built from the event.
//!
//! `{eventType}:{Reference}:{Status}` (the default dedupe key) names top-level JSON
//! fields; `{/data/id}` is a JSON pointer; `{header:webhook-id}` a request header.
//! Parsed once when the config is loaded, so a typo fails `check`, not every event.

use std::fmt;

use http::{HeaderMap, HeaderName};
use serde::{Serialize, Serializer};
use serde_json::Value;

/// A parsed template. Displays (and serialises) as the text it was parsed from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyTemplate {
    text: String,
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    /// A JSON pointer (`{name}` is kept as `/name`).
    Pointer(String),
    Header(HeaderName),
}

/// Why a template does not parse: what is wrong (with a 1-based character position, as
/// an editor's column) and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub fix: String,
}

const PLACEHOLDER_FORMS: &str = "placeholders are {field} (a top-level JSON field), \
                                 {/json/pointer} or {header:name}, and braces cannot appear \
                                 outside them";

// === impl KeyTemplate ===

impl KeyTemplate {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        // The byte offset and character position of the '{' being read.
        let mut open: Option<(usize, usize)> = None;
        for (index, (at, c)) in text.char_indices().enumerate() {
            let position = index + 1;
            match (c, open) {
                ('{', None) => open = Some((at, position)),
                ('{', Some((_, opened))) => {
                    return Err(error(
                        format!(
                            "'{{' at character {position} is inside the placeholder opened at \
                             character {opened}"
                        ),
                        format!("close the placeholder first; {PLACEHOLDER_FORMS}"),
                    ));
                }
                ('}', None) => {
                    return Err(error(
                        format!("'}}' at character {position} closes no placeholder"),
                        format!("remove it or add the '{{' it closes; {PLACEHOLDER_FORMS}"),
                    ));
                }
                ('}', Some((start, opened))) => {
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(placeholder(&text[start + 1..at], opened)?);
                    open = None;
                }
                (c, None) => literal.push(c),
                (_, Some(_)) => {}
            }
        }
        if let Some((_, opened)) = open {
            return Err(error(
                format!("the '{{' at character {opened} is never closed"),
                format!("add the closing '}}'; {PLACEHOLDER_FORMS}"),
            ));
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Self {
            text: text.to_owned(),
            parts,
        })
    }

    /// Whether any part comes from the event (a template without one gives every event
    /// the same key).
    pub fn has_placeholder(&self) -> bool {
        self.parts.iter().any(|p| !matches!(p, Part::Literal(_)))
    }

    /// The text with every placeholder replaced by `with` (to check the shape of a path).
    pub fn fill(&self, with: &str) -> String {
        self.parts
            .iter()
            .map(|part| match part {
                Part::Literal(text) => text.as_str(),
                _ => with,
            })
            .collect()
    }

    /// The key for an event, or `None` when a placeholder has no value in it (a field
    /// absent or null, a header missing or not text).
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

    /// The event's key (dedupe or ordering), unambiguous: two events get the same key
    /// only if every placeholder has the same value, of the same JSON type. `None` when a
    /// placeholder has no value: a field absent, null or an empty string, a header missing,
    /// empty or not text (an empty `Reference` names no transaction, so it must not make
    /// every later event of its type and status a "duplicate").
    ///
    /// Plain strings are written as they are, so the usual keys read (and match what was
    /// stored) as before: `TRANSACTION_STATUS:PCN1:PAID`. Inside a value, `\`, `#`, `|`
    /// and every character of the template's literals are escaped with `\`, so a value's
    /// `:` cannot pass for the template's (`"a:b"+"c"` is `a\:b:c`, `"a"+"b:c"` is
    /// `a:b\:c`); a value that is not a string is written as `#` and its JSON (`1` is
    /// `#1`, `"1"` is `1`); two placeholders with nothing between them are parted by `|`.
    /// (Literals cannot hold `\`: [`KeyTemplate::has_backslash_literal`].)
    pub fn render_key(&self, event: &Value, headers: &HeaderMap) -> Option<String> {
        let special = |c: char| {
            matches!(c, '\\' | '#' | '|')
                || self
                    .parts
                    .iter()
                    .any(|part| matches!(part, Part::Literal(text) if text.contains(c)))
        };
        let escape = |out: &mut String, text: &str| {
            for c in text.chars() {
                if special(c) {
                    out.push('\\');
                }
                out.push(c);
            }
        };
        let mut out = String::new();
        let mut after_value = false;
        for part in &self.parts {
            if matches!(part, Part::Literal(_)) {
                after_value = false;
            } else if std::mem::replace(&mut after_value, true) {
                out.push('|');
            }
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Pointer(pointer) => match event.pointer(pointer)? {
                    Value::Null => return None,
                    Value::String(text) if text.is_empty() => return None,
                    Value::String(text) => escape(&mut out, text),
                    other => {
                        out.push('#');
                        escape(&mut out, &other.to_string());
                    }
                },
                Part::Header(name) => match headers.get(name)?.to_str().ok()? {
                    "" => return None,
                    text => escape(&mut out, text),
                },
            }
        }
        Some(out)
    }

    /// Whether a literal holds `\`, which [`KeyTemplate::render_key`] keeps for escapes.
    pub fn has_backslash_literal(&self) -> bool {
        self.parts
            .iter()
            .any(|part| matches!(part, Part::Literal(text) if text.contains('\\')))
    }

    /// FinCode's default dedupe key, `{eventType}:{Reference}:{Status}`.
    pub(crate) fn default_dedupe() -> Self {
        let field = |name: &str| Part::Pointer(format!("/{name}"));
        let colon = || Part::Literal(":".to_owned());
        Self {
            text: "{eventType}:{Reference}:{Status}".to_owned(),
            parts: vec![
                field("eventType"),
                colon(),
                field("Reference"),
                colon(),
                field("Status"),
            ],
        }
    }

    /// FinCode's transaction lookup, `/transactionmanagement/transactions/{Reference}`.
    pub(crate) fn default_confirm_path() -> Self {
        Self {
            text: "/transactionmanagement/transactions/{Reference}".to_owned(),
            parts: vec![
                Part::Literal("/transactionmanagement/transactions/".to_owned()),
                Part::Pointer("/Reference".to_owned()),
            ],
        }
    }
}

impl fmt::Display for KeyTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for KeyTemplate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

fn error(message: String, fix: String) -> TemplateError {
    TemplateError { message, fix }
}

/// One placeholder's inside: `name`, `/json/pointer` or `header:name`.
fn placeholder(inner: &str, opened: usize) -> Result<Part, TemplateError> {
    let refuse = |what: &str, fix: &str| {
        Err(error(
            format!("the placeholder at character {opened} {what}"),
            format!("{fix}{PLACEHOLDER_FORMS}"),
        ))
    };
    if inner.is_empty() {
        return refuse("is empty", "");
    }
    if let Some(name) = inner.strip_prefix("header:") {
        return match HeaderName::from_bytes(name.as_bytes()) {
            Ok(name) => Ok(Part::Header(name)),
            Err(_) => refuse("does not name a valid header", ""),
        };
    }
    if inner.starts_with('/') {
        if !is_json_pointer(inner) {
            return refuse("is not a valid JSON pointer", "follow each '~' by 0 or 1; ");
        }
        return Ok(Part::Pointer(inner.to_owned()));
    }
    if inner.contains('.') {
        return refuse(
            "names a nested field with '.'",
            "reach nested fields with a JSON pointer such as {/data/id}; ",
        );
    }
    if !inner
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
    {
        return refuse("is not a field name, JSON pointer or header", "");
    }
    Ok(Part::Pointer(format!("/{inner}")))
}

/// RFC 6901: empty (the whole document) or starting with '/', each '~' followed by 0 or 1.
pub(crate) fn is_json_pointer(text: &str) -> bool {
    (text.is_empty() || text.starts_with('/'))
        && text
            .split('~')
            .skip(1)
            .all(|after| after.starts_with(['0', '1']))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

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
        let parsed = KeyTemplate::parse("{eventType}:{Reference}:{Status}").unwrap();
        assert_eq!(parsed, KeyTemplate::default_dedupe());
        let event =
            json!({"eventType": "TRANSACTION_STATUS", "Reference": "PCN1", "Status": "PAID"});
        assert_eq!(
            parsed.render(&event, &HeaderMap::new()).as_deref(),
            Some("TRANSACTION_STATUS:PCN1:PAID")
        );
        assert_eq!(
            KeyTemplate::parse("/transactionmanagement/transactions/{Reference}").unwrap(),
            KeyTemplate::default_confirm_path()
        );
    }

    #[test]
    fn pointers_headers_and_non_string_values() {
        let t = KeyTemplate::parse("{/data/id}-{header:webhook-id}-{amount}").unwrap();
        let event = json!({"data": {"id": 42}, "amount": 12.5});
        let h = headers(&[("webhook-id", "msg_1")]);
        assert_eq!(t.render(&event, &h).as_deref(), Some("42-msg_1-12.5"));
        // A missing header or field, or a null, renders nothing.
        assert_eq!(t.render(&event, &HeaderMap::new()), None);
        assert_eq!(
            t.render(&json!({"data": {"id": null}, "amount": 1}), &h),
            None
        );
        assert_eq!(t.fill("x"), "x-x-x");
        assert_eq!(
            t.render_key(&event, &h).as_deref(),
            Some("#42-msg_1-#12.5"),
            "typed"
        );
        let h = headers(&[("webhook-id", "m-1#")]);
        assert_eq!(
            t.render_key(&event, &h).as_deref(),
            Some("#42-m\\-1\\#-#12.5"),
            "escaped"
        );
        assert_eq!(t.to_string(), "{/data/id}-{header:webhook-id}-{amount}");
    }

    #[test]
    fn malformed_templates_say_where() {
        let cases = [
            ("{a", "the '{' at character 1 is never closed"),
            ("a}", "'}' at character 2 closes no placeholder"),
            (
                "x{a{b}}",
                "'{' at character 4 is inside the placeholder opened at character 2",
            ),
            ("{}", "the placeholder at character 1 is empty"),
            ("{header:bad name}", "does not name a valid header"),
            ("{a b}", "is not a field name"),
            ("{data.id}", "names a nested field with '.'"),
            ("{/a~2}", "is not a valid JSON pointer"),
        ];
        for (text, want) in cases {
            let err = KeyTemplate::parse(text).unwrap_err();
            assert!(err.message.contains(want), "{text}: {}", err.message);
        }
        assert!(!KeyTemplate::parse("constant").unwrap().has_placeholder());
    }
}
