//! Writing a JSON string into a line being built, without an intermediate value.

use std::fmt::Write as _;

/// Appends `text` as a JSON string (quoted, with `"`, `\` and control characters
/// escaped as RFC 8259 requires). Text that needs no escaping is copied in one go.
pub(crate) fn push_str(out: &mut String, text: &str) {
    out.push('"');
    let mut clean = 0;
    for (at, byte) in text.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        // `byte` is ASCII, so `at` is a char boundary.
        out.push_str(&text[clean..at]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{byte:04x}");
        } else {
            out.push_str(escape);
        }
        clean = at + 1;
    }
    out.push_str(&text[clean..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::push_str;

    #[test]
    fn strings_round_trip_through_serde_json() {
        for text in [
            "",
            "plain",
            "quote \" backslash \\ slash /",
            "line\nfeed\r\ttab\u{1}\u{1f}\u{7f}",
            "ünïcødé ✓ 𝄞",
        ] {
            let mut out = String::new();
            push_str(&mut out, text);
            let back: String = serde_json::from_str(&out).unwrap();
            assert_eq!(back, text, "{out}");
            assert_eq!(out, serde_json::to_string(text).unwrap());
        }
    }
}
