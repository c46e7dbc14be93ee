//! URL redaction: the path and every query value through the free-text rules after
//! percent-decoding (an encoded `%40` or `%20`-grouped card number is still found), and
//! sensitive parameters' values replaced outright. The fragment is dropped: it never
//! reaches a server and has no place in a record.

use crate::{REDACTED, rules::Rules, text};

pub(crate) fn redact(rules: &Rules, uri: &str) -> String {
    let uri = uri.split('#').next().unwrap_or_default();
    let (path, query) = match uri.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (uri, None),
    };
    let mut out = String::with_capacity(uri.len() + 16);
    out.push_str(&text::redact(&decode(path)));
    if let Some(query) = query {
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(name);
            out.push_str(&text::redact(&name));
            if pair.contains('=') {
                out.push('=');
                if rules.is_sensitive_query_param(&name) {
                    out.push_str(REDACTED);
                } else {
                    out.push_str(&text::redact(&decode(value)));
                }
            }
        }
    }
    out
}

/// Percent-decoding (and `+` as space in queries is left alone: it is also a phone
/// prefix). Invalid escapes stay as written; invalid UTF-8 becomes U+FFFD.
fn decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).and_then(|b| char::from(*b).to_digit(16)),
                bytes.get(i + 2).and_then(|b| char::from(*b).to_digit(16)),
            )
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
