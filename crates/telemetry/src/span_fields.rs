//! A span's fields as the JSON object the log lines' span list shows, written straight
//! from the field visitor.
//!
//! Why not `tracing_subscriber`'s `JsonFields`: it builds a `serde_json` map of the fields
//! and serialises it, when each span is created. The proxy creates a `request` span for
//! every call (its correlation id rides on every line logged while the call is served),
//! and that map cost about 5 000 instructions a request whether or not anything was
//! logged. This writes the same object (the same members, keys and values as
//! `JsonFields` gives them) in one pass; the JSON event format reads it back with
//! `serde_json` as it reads `JsonFields`' output, so log lines are unchanged.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing_subscriber::{
    field::RecordFields,
    fmt::{FormatFields, FormattedFields, format::Writer},
};

/// Formats span fields as a JSON object (see the module docs); set with
/// `SubscriberBuilder::fmt_fields` after `.json()`.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonSpanFields;

impl<'writer> FormatFields<'writer> for JsonSpanFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        // Room for the request span's four fields (about 130 bytes) at once: growing
        // from empty took four reallocations per span.
        let mut members = Members {
            out: String::with_capacity(192),
        };
        fields.record(&mut members);
        writer.write_char('{')?;
        writer.write_str(members.text())?;
        writer.write_char('}')
    }

    /// Fields recorded after the span was created join its object; a key recorded again
    /// appears twice, and the later one wins when the object is read (as `JsonFields`'
    /// merge has it). Unlike that merge, a span with a field name that needs escaping
    /// keeps what is recorded into it (`JsonFields` cannot read such a name back, and
    /// drops the record).
    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut members = Members::default();
        fields.record(&mut members);
        if members.is_empty() {
            return Ok(());
        }
        let object = &mut current.fields;
        if let Some(open) = object.strip_suffix('}') {
            let empty = open == "{";
            object.pop();
            if !empty {
                object.push(',');
            }
        } else {
            object.clear();
            object.push('{');
        }
        object.push_str(members.text());
        object.push('}');
        Ok(())
    }
}

/// Whether JSON needs any byte of `text` escaped (`"`, `\` and control characters, as
/// RFC 8259 and `serde_json` have it): one pass without branches per byte.
fn needs_escape(text: &str) -> bool {
    text.bytes().fold(0_u8, |dirty, b| {
        dirty | u8::from(b < 0x20) | u8::from(b == b'"') | u8::from(b == b'\\')
    }) != 0
}

/// The members of the object, `"key":value` joined by commas. A `String` written with
/// `push_str` only, so the text needs no UTF-8 check afterwards.
#[derive(Default)]
struct Members {
    out: String,
}

impl Members {
    fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    /// What was written.
    fn text(&self) -> &str {
        &self.out
    }

    /// Writes `"name":"value"` for a string with nothing to escape.
    fn member_raw(&mut self, name: &str, value: &str) {
        self.name(name);
        self.out.reserve(value.len() + 2);
        self.out.push('"');
        self.out.push_str(value);
        self.out.push('"');
    }

    /// Writes `"name":value`.
    fn member(&mut self, name: &str, value: &(impl serde::Serialize + ?Sized)) {
        self.name(name);
        // These values always serialise; the request span has none of them.
        self.out
            .push_str(&serde_json::to_string(value).unwrap_or_default());
    }

    /// Writes `"name":`, after a comma unless it is the first member.
    fn name(&mut self, name: &str) {
        // Room for the name, its quotes, the colon and the comma before it.
        self.out.reserve(name.len() + 4);
        if !self.out.is_empty() {
            self.out.push(',');
        }
        // A field's name is nearly always an identifier, with nothing to escape.
        if needs_escape(name) {
            self.out
                .push_str(&serde_json::to_string(name).unwrap_or_default());
        } else {
            self.out.push('"');
            self.out.push_str(name);
            self.out.push('"');
        }
        self.out.push(':');
    }
}

impl Visit for Members {
    fn record_str(&mut self, field: &Field, value: &str) {
        // The request span's strings (ids, a method, a route) never need escaping: then
        // they are copied as they are, which is what `serde_json` writes for them, in a
        // tenth of its per-byte work.
        if needs_escape(value) {
            self.member(field.name(), value);
        } else {
            self.member_raw(field.name(), value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field.name(), &value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field.name(), &value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field.name(), &value);
    }

    /// A non-finite float is `null`, as in `JsonFields`.
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.member(field.name(), &serde_json::Value::from(value));
    }

    /// Bytes are an array of numbers, as in `JsonFields`.
    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        self.member(field.name(), value);
    }

    /// Named as `JsonFields` names a field it formats with `Debug`: `log.*` fields (the
    /// `log` crate's bridge puts them on its events) left out, a raw identifier's `r#`
    /// dropped.
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let name = field.name();
        if name.starts_with("log.") {
            return;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.member(name, &format!("{value:?}"));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::{MakeWriter, format::JsonFields};

    /// Lines written, shared with the test.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Lines {
        type Writer = Self;

        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    #[derive(Debug)]
    struct Shape {
        _side: u8,
    }

    /// Runs `log` under `subscriber` (writing to `lines`), and returns each line's span
    /// list.
    fn span_lists(
        subscriber: impl tracing::Subscriber + Send + Sync + 'static,
        lines: &Lines,
        log: impl Fn(),
    ) -> Vec<serde_json::Value> {
        tracing::subscriber::with_default(subscriber, log);
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["spans"].clone())
            .collect()
    }

    /// Against `serde_json`: a string is copied as it is exactly when `serde_json` would
    /// write it unchanged, for every ASCII character alone and inside text, and for
    /// characters beyond ASCII.
    #[test]
    fn a_string_needs_escaping_exactly_when_serde_json_escapes_it() {
        let mut texts: Vec<String> = (0_u8..0x80)
            .map(|b| char::from(b).to_string())
            .chain((0_u8..0x80).map(|b| format!("id-{}-tail", char::from(b))))
            .collect();
        texts.extend(["", "é", "✓ route", "\u{7f}", "𝄞"].map(str::to_owned));
        for text in texts {
            let serde = serde_json::to_string(&text).unwrap();
            assert_eq!(
                !super::needs_escape(&text),
                serde == format!("\"{text}\""),
                "{text:?}"
            );
        }
    }

    #[test]
    fn span_objects_are_the_ones_json_fields_writes() {
        let log = || {
            let outer = tracing::info_span!(
                "request",
                correlation_id = "id-\"quoted\"\\ \u{1}\u{e9}",
                method = "GET",
                route = "/transactionmanagement/transactions/{id}",
                count = 3_u64,
                delta = -4_i64,
                ok = true,
                ratio = 0.25_f64,
                nan = f64::NAN,
                shape = ?Shape { _side: 2 },
                r#type = ?"raw",
                bytes = &b"ab"[..],
                later = tracing::field::Empty,
            );
            let _outer = outer.enter();
            tracing::info!("inside one");
            // Recorded after creation: into an object that has members, and twice.
            outer.record("later", "then");
            outer.record("count", 9_u64);
            let empty = tracing::info_span!("inner", status = tracing::field::Empty);
            let _inner = empty.enter();
            tracing::warn!(answer = 42, "inside two");
            // Into a span created with no value yet.
            empty.record("status", 503_u64);
            // A name with something to escape (never recorded into afterwards:
            // `JsonFields` cannot read such a name back to merge, and drops the record).
            let named = tracing::info_span!("named", "a \"quoted\" name" = 1);
            let _named = named.enter();
            tracing::error!("inside three");
        };
        let lines = Lines::default();
        let ours = span_lists(
            crate::json_subscriber("trace", lines.clone()).finish(),
            &lines,
            log,
        );
        let lines = Lines::default();
        let reference = crate::json_subscriber("trace", lines.clone())
            .fmt_fields(JsonFields::new())
            .finish();
        assert_eq!(ours.len(), 3);
        assert_eq!(ours, span_lists(reference, &lines, log));
        // And they say what was logged (the reference could be wrong with us).
        assert_eq!(ours[2][0]["correlation_id"], "id-\"quoted\"\\ \u{1}\u{e9}");
        assert_eq!(ours[2][0]["count"], 9);
        assert_eq!(ours[2][0]["nan"], serde_json::Value::Null);
        assert_eq!(ours[2][0]["type"], "\"raw\"");
        assert_eq!(ours[2][1]["status"], 503);
        assert_eq!(ours[2][2]["a \"quoted\" name"], 1);
    }
}
