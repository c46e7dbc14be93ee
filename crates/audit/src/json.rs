//! Writing a JSON string into a line being built, without an intermediate value.

use std::fmt::Write as _;

/// Appends `text` as a JSON string (quoted, with `"`, `\` and control characters
/// escaped as RFC 8259 requires). Runs that need no escaping are copied in one go; a
/// table lookup per byte finds where they end (this runs for every member of every
/// record, so it is kept to a few instructions per byte).
pub fn push_str(out: &mut String, text: &str) {
    push_strs(out, &[text]);
}

/// Appends the concatenation of `parts` as one JSON string, exactly as [`push_str`]
/// writes them joined (escaping is per character), without joining them first.
pub fn push_strs(out: &mut String, parts: &[&str]) {
    out.reserve(parts.iter().map(|part| part.len()).sum::<usize>() + 2);
    out.push('"');
    for part in parts {
        push_escaped(out, part);
    }
    out.push('"');
}

/// Appends `text` quoted as it is, for the crate's and its callers' own words and labels
/// (a record kind, an outcome, an error code, a method, a route template, hex digits, a
/// UUID the sidecar minted): they hold nothing to escape, so the scan [`push_str`] runs
/// over every byte is skipped (about 130 instructions a value, on every record and every
/// access line). Never for text from outside: a quote in it would break the line (debug
/// builds check).
pub fn push_plain(out: &mut String, text: &str) {
    push_plains(out, &[text]);
}

/// [`push_plain`] for the concatenation of `parts`.
pub fn push_plains(out: &mut String, parts: &[&str]) {
    debug_assert!(
        parts
            .iter()
            .all(|part| part.bytes().all(|b| !NEEDS_ESCAPE[usize::from(b)])),
        "{parts:?} needs escaping"
    );
    out.reserve(parts.iter().map(|part| part.len()).sum::<usize>() + 2);
    out.push('"');
    for part in parts {
        out.push_str(part);
    }
    out.push('"');
}

/// Appends `text` escaped, without quotes.
fn push_escaped(out: &mut String, text: &str) {
    let bytes = text.as_bytes();
    // Almost every value needs no escaping: one branch-free pass (vectorised) says so.
    let dirty = bytes.iter().fold(0_u8, |dirty, &b| {
        dirty | u8::from(b < 0x20) | u8::from(b == b'"') | u8::from(b == b'\\')
    });
    if dirty == 0 {
        out.push_str(text);
        return;
    }
    let mut clean = 0;
    let mut at = 0;
    while at < bytes.len() {
        let byte = bytes[at];
        if !NEEDS_ESCAPE[usize::from(byte)] {
            at += 1;
            continue;
        }
        // `byte` is ASCII, so `at` is a char boundary.
        out.push_str(&text[clean..at]);
        match byte {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            _ => {
                let _ = write!(out, "\\u{byte:04x}");
            }
        }
        at += 1;
        clean = at;
    }
    out.push_str(&text[clean..]);
}

/// Appends a member name the crate itself chose (`kind`, `latency_ms`...): quoted, with
/// no escaping to do.
pub fn push_key(out: &mut String, key: &str) {
    debug_assert!(
        key.bytes().all(|b| !NEEDS_ESCAPE[usize::from(b)]),
        "{key} needs escaping"
    );
    out.reserve(key.len() + 3);
    out.push('"');
    out.push_str(key);
    out.push_str("\":");
}

/// The bytes a JSON string cannot hold as they are.
const NEEDS_ESCAPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = true;
        byte += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

#[cfg(test)]
mod tests {
    use super::{push_str, push_strs};

    #[test]
    fn parts_are_written_as_their_join() {
        for parts in [
            &["GET", " ", "/transactionmanagement/transactions/{id}"][..],
            &["a\"b", "", "c\\", "\n\u{1}", "ü✓"],
            &[],
        ] {
            let (mut joined, mut out) = (String::new(), String::new());
            push_str(&mut joined, &parts.concat());
            push_strs(&mut out, parts);
            assert_eq!(out, joined);
        }
    }

    #[test]
    fn plain_text_is_written_as_push_str_writes_it() {
        for parts in [
            &["GET", " ", "/transactionmanagement/transactions/{id}"][..],
            &["success"],
            &["0af7651916cd43dd8448eb211c80319c"],
            &[""],
            &[],
        ] {
            let (mut plain, mut escaped) = (String::new(), String::new());
            super::push_plains(&mut plain, parts);
            push_strs(&mut escaped, parts);
            assert_eq!(plain, escaped);
        }
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "needs escaping")]
    fn plain_text_with_a_quote_is_caught_in_debug_builds() {
        super::push_plain(&mut String::new(), "say \"hi\"");
    }

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
