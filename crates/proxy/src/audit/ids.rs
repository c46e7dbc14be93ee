//! Finding resource ids in a JSON body without building it: one pass over the bytes reads
//! the top level and the `data` object, keeps the few ids it knows, and checks everything
//! else only for well-formedness on the way past.
//!
//! Why by hand: this runs on every audited call, over every FinCode answer. A serde
//! visitor over `serde_json` (the previous version) cost about 14 000 instructions for a
//! 533-byte transaction (UTF-8 checks of every key, the visitor machinery per value), more
//! than the rest of the audit record together; this scan is a byte loop over the same
//! JSON grammar (RFC 8259), and hands the rare escaped key or value to `serde_json` to
//! decode. `tests` cross-check it against a full `serde_json::Value` parse.
//!
//! The same pass reads FinCode's error `code` (`{"status":"FAILED","code":
//! "VALIDATION_ERROR","message":...}`), which support asks for as "the error response":
//! only the code, never `message` (it may echo the personal data that failed validation),
//! and only a short upper-case word, so a digit run (a card or phone number) or free
//! text in that member never reaches the trail.

/// What a body said: the ids found, and what FinCode's envelope reports.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Found {
    /// Each id found, by its record name (`transaction_id`, `reference`,
    /// `customer_code`), clear; once per name and value.
    pub ids: Vec<(&'static str, String)>,
    /// `"status"` present and not `"SUCCESS"`.
    pub failed: bool,
    /// `"status": "SUCCESS"` in a body that is whole, valid JSON: FinCode's business
    /// success, which the observe layer counts for create-transaction.
    pub succeeded: bool,
    /// FinCode's error `code` at the top of a response (`VALIDATION_ERROR`), when the
    /// body says it [`failed`](Self::failed) and the code [`is a code`](is_code); with
    /// the key repeated, the last one decides.
    pub code: Option<String>,
}

/// FinCode's codes are upper-case words (`RATE_LIMIT_EXCEEDED`, 19 bytes); anything
/// longer is not one.
const MAX_CODE_LEN: usize = 48;

/// Whether `text` looks like one of FinCode's error codes: 1 to [`MAX_CODE_LEN`] bytes
/// of `A-Z`, `0-9` and `_`, starting with a letter (so that no number, which could be a
/// card or an account, passes as a code).
pub fn is_code(text: &str) -> bool {
    text.len() <= MAX_CODE_LEN
        && text.as_bytes().first().is_some_and(u8::is_ascii_uppercase)
        && text
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// Objects and arrays nested deeper than this make a body malformed, as they do for
/// `serde_json` (whose limit this is): a body is not worth unbounded recursion.
const MAX_DEPTH: usize = 127;

/// Scans `body` (a request's when `response` is false). Anything that is not a JSON
/// object gives nothing; a body that breaks off keeps what was found before the break.
pub fn scan(body: &[u8], response: bool) -> Found {
    let mut found = Found::default();
    let mut scanner = Scanner {
        bytes: body,
        at: 0,
        non_ascii: false,
    };
    scanner.skip_whitespace();
    if scanner.peek() != Some(b'{') {
        return found;
    }
    let whole = scanner.object(&mut found, response, false).is_some()
        && {
            scanner.skip_whitespace();
            scanner.at == body.len()
        }
        // Outside strings the grammar allows ASCII only, so a body whose strings held
        // no byte above 0x7f is ASCII, hence UTF-8: only the others are checked whole.
        && (!scanner.non_ascii || std::str::from_utf8(body).is_ok());
    found.succeeded = whole && found.succeeded;
    // A code is an error's only when the envelope says it failed (`code` may come first).
    if !found.failed {
        found.code = None;
    }
    found
}

/// A key the scan cares about.
enum Key {
    Id(&'static str),
    /// `id` inside a response's `data`: the transaction's id.
    DataId,
    Status,
    /// FinCode's error `code`, at the top of a response.
    Code,
    Data,
    Other,
}

/// Keys compare case-insensitively with `_` and `-` ignored, as the redactor's do.
fn classify(key: &[u8]) -> Key {
    // FinCode's own spellings first, compared as they are.
    match key {
        b"id" => return Key::DataId,
        b"data" => return Key::Data,
        b"status" => return Key::Status,
        b"code" => return Key::Code,
        b"reference" => return Key::Id("reference"),
        b"customer_code" | b"customerCode" => return Key::Id("customer_code"),
        b"transactionId" | b"transaction_id" => return Key::Id("transaction_id"),
        _ => {}
    }
    // Every key of interest starts (separators aside) with one of these letters: most
    // keys of a FinCode answer stop here.
    let first = key.iter().find(|byte| **byte != b'_' && **byte != b'-');
    if !matches!(
        first.map(u8::to_ascii_lowercase),
        Some(b't' | b'r' | b'c' | b'i' | b's' | b'd')
    ) {
        return Key::Other;
    }
    // Without separators, none is longer than `transactionid`: any number of `_` and `-`
    // may surround the letters, so the length is checked after they are left out.
    let mut normal = [0_u8; 13];
    let mut len = 0;
    for &byte in key {
        if byte == b'_' || byte == b'-' {
            continue;
        }
        let Some(slot) = normal.get_mut(len) else {
            return Key::Other;
        };
        *slot = byte.to_ascii_lowercase();
        len += 1;
    }
    match &normal[..len] {
        b"transactionid" => Key::Id("transaction_id"),
        b"reference" => Key::Id("reference"),
        b"customercode" | b"customerid" => Key::Id("customer_code"),
        b"id" => Key::DataId,
        b"status" => Key::Status,
        b"code" => Key::Code,
        b"data" => Key::Data,
        _ => Key::Other,
    }
}

/// What the envelope's `status` says.
enum Verdict {
    /// `"SUCCESS"`.
    Success,
    /// Another string, or an integer.
    Other,
    /// `null`, a float, a boolean, an object or an array: nothing either way.
    Silent,
}

/// A value where an id or the status may be.
enum Scalar {
    /// A string (decoded) or an integer (as serde_json prints it).
    Text(String),
    /// A float, `true`, `false`, `null`, an object or an array: no id.
    Other,
}

/// A string token: the bytes between its quotes, and whether they hold escapes.
struct Text<'a> {
    /// With the quotes.
    quoted: &'a [u8],
    escaped: bool,
}

// === impl Text ===

impl Text<'_> {
    /// What the string means: its bytes when it has no escapes, else `serde_json`'s
    /// decoding (which also rejects lone surrogates). `None`: not valid UTF-8 / JSON.
    fn decode(&self) -> Option<String> {
        if self.escaped {
            serde_json::from_slice(self.quoted).ok()
        } else {
            let inner = &self.quoted[1..self.quoted.len() - 1];
            std::str::from_utf8(inner).ok().map(str::to_owned)
        }
    }
}

/// The bytes of `word` (little-endian) that are `"`, `\\` or a control character (below
/// 0x20), as the high bit of each such byte; the lowest set bit is exactly the first of
/// them (a borrow only runs upwards, so only bytes above the first can be flagged
/// wrongly). The classic "has a zero byte" test (`(v - 0x01..) & !v & 0x80..`) applied
/// to `word` xor each byte, and its "has a byte less than n" form.
fn run_enders(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let quote = has_zero(word ^ (ONES * u64::from(b'"')));
    let backslash = has_zero(word ^ (ONES * u64::from(b'\\')));
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    quote | backslash | control
}

/// A cursor over the body. Every method returns `None` on malformed or truncated JSON.
struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
    /// A byte above 0x7f was seen in a string (or next to one: the flag may be set
    /// needlessly, never missed), so the body's UTF-8 must be checked.
    non_ascii: bool,
}

// === impl Scanner ===

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then_some(())
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.at += 1;
        }
    }

    /// One object, reading ids at this level (and `data` below the top).
    fn object(&mut self, found: &mut Found, response: bool, data: bool) -> Option<()> {
        // The objects this one's values are inside: the top, and `data` in it.
        let depth = if data { 2 } else { 1 };
        self.members(b'{', b'}', |this| {
            match this.key()? {
                Key::Id(name) => this.id(found, name, depth)?,
                Key::DataId if data && response => this.id(found, "transaction_id", depth)?,
                Key::Status if !data && response => match this.status(depth)? {
                    Verdict::Success => (found.failed, found.succeeded) = (false, true),
                    Verdict::Other => (found.failed, found.succeeded) = (true, false),
                    Verdict::Silent => {}
                },
                Key::Code if !data && response => {
                    found.code = match this.scalar(depth)? {
                        Scalar::Text(code) if is_code(&code) => Some(code),
                        Scalar::Text(_) | Scalar::Other => None,
                    };
                }
                Key::Data if !data && this.peek()? == b'{' => {
                    this.object(found, response, true)?;
                }
                Key::DataId | Key::Status | Key::Code | Key::Data | Key::Other => {
                    this.skip_value(depth)?;
                }
            }
            Some(())
        })
    }

    /// An object member's key, classified, and the `:` after it.
    fn key(&mut self) -> Option<Key> {
        let key = self.string()?;
        let key = if key.escaped {
            classify(key.decode()?.as_bytes())
        } else {
            classify(&key.quoted[1..key.quoted.len() - 1])
        };
        self.colon()?;
        Some(key)
    }

    /// The `:` between a member's key and its value, with the whitespace around it.
    fn colon(&mut self) -> Option<()> {
        self.skip_whitespace();
        self.expect(b':')?;
        self.skip_whitespace();
        Some(())
    }

    /// The members of an object (`{`, `}`) or an array (`[`, `]`), each read by
    /// `member` (with the whitespace around it passed over), up to the closing byte.
    fn members(
        &mut self,
        open: u8,
        close: u8,
        mut member: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<()> {
        self.expect(open)?;
        self.skip_whitespace();
        if self.peek()? == close {
            self.at += 1;
            return Some(());
        }
        loop {
            self.skip_whitespace();
            member(self)?;
            self.skip_whitespace();
            match self.next()? {
                b',' => {}
                byte if byte == close => return Some(()),
                _ => return None,
            }
        }
    }

    /// An id's value: kept when it is a string or an integer, once per name and value.
    fn id(&mut self, found: &mut Found, name: &'static str, depth: usize) -> Option<()> {
        if let Scalar::Text(value) = self.scalar(depth)?
            && !found.ids.iter().any(|(n, v)| *n == name && *v == value)
        {
            found.ids.push((name, value));
        }
        Some(())
    }

    /// What the envelope's `status` says, read as [`Self::scalar`] reads it, without
    /// copying the usual unescaped ASCII word.
    fn status(&mut self, depth: usize) -> Option<Verdict> {
        if self.peek()? != b'"' {
            return Some(match self.scalar(depth)? {
                Scalar::Text(_) => Verdict::Other,
                Scalar::Other => Verdict::Silent,
            });
        }
        let text = self.string()?;
        let inner = &text.quoted[1..text.quoted.len() - 1];
        let success = if !text.escaped && inner.is_ascii() {
            inner == b"SUCCESS"
        } else {
            // What `scalar` does: an escape, or bytes that may not be UTF-8.
            text.decode()? == "SUCCESS"
        };
        Some(if success {
            Verdict::Success
        } else {
            Verdict::Other
        })
    }

    /// A string or an integer as text, or [`Scalar::Other`] for any other value
    /// (skipped; it is inside `depth` objects).
    fn scalar(&mut self, depth: usize) -> Option<Scalar> {
        match self.peek()? {
            b'"' => self.string()?.decode().map(Scalar::Text),
            b'-' | b'0'..=b'9' => {
                let (start, integer) = (self.at, self.number()?);
                let token = std::str::from_utf8(&self.bytes[start..self.at]).ok()?;
                // As serde_json reads it: an integer that fits i64 or u64 keeps its
                // value; anything else is a float, which is no id.
                let text = if !integer {
                    None
                } else if token.starts_with('-') {
                    token.parse::<i64>().ok().map(|n| n.to_string())
                } else {
                    token.parse::<u64>().ok().map(|n| n.to_string())
                };
                Some(text.map_or(Scalar::Other, Scalar::Text))
            }
            _ => {
                self.skip_value(depth)?;
                Some(Scalar::Other)
            }
        }
    }

    /// A string token, checked: closed, no raw control characters, valid escapes.
    fn string(&mut self) -> Option<Text<'a>> {
        let start = self.at;
        self.expect(b'"')?;
        let mut escaped = false;
        loop {
            // The run ends at the closing quote, an escape, or a control character (not
            // allowed unescaped). FinCode's strings are short: a plain loop on a local
            // index beats a vectorised search's set-up.
            let bytes = self.bytes;
            let mut at = self.at;
            // Eight bytes at a time; the word holding the end says where it is. Fewer
            // than eight left: byte by byte.
            while let Some(word) = bytes.get(at..at + 8)
                && let Ok(word) = <[u8; 8]>::try_from(word)
            {
                let word = u64::from_le_bytes(word);
                // The whole word, even past the run's end: a needless flag costs one
                // UTF-8 check, a missed one would pass invalid bytes.
                self.non_ascii |= word & 0x8080_8080_8080_8080 != 0;
                let enders = run_enders(word);
                if enders != 0 {
                    at += (enders.trailing_zeros() / 8) as usize;
                    break;
                }
                at += 8;
            }
            while let Some(&byte) = bytes.get(at)
                && byte != b'"'
                && byte != b'\\'
                && byte >= 0x20
            {
                self.non_ascii |= byte > 0x7f;
                at += 1;
            }
            self.at = at;
            match self.next()? {
                b'"' => {
                    return Some(Text {
                        quoted: &self.bytes[start..self.at],
                        escaped,
                    });
                }
                b'\\' => {
                    escaped = true;
                    match self.next()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        b'u' => match self.hex4()? {
                            // A surrogate pair's first half must be followed by its
                            // second; a second half alone is not a character (as
                            // serde_json, and RFC 8259's "valid JSON text", has it).
                            0xD800..=0xDBFF => {
                                self.expect(b'\\')?;
                                self.expect(b'u')?;
                                if !(0xDC00..=0xDFFF).contains(&self.hex4()?) {
                                    return None;
                                }
                            }
                            0xDC00..=0xDFFF => return None,
                            _ => {}
                        },
                        _ => return None,
                    }
                }
                _ => return None,
            }
        }
    }

    /// The four hex digits of a `\u` escape, as a number.
    fn hex4(&mut self) -> Option<u16> {
        let mut value = 0_u16;
        for _ in 0..4 {
            let digit = char::from(self.next()?).to_digit(16)?;
            value = value << 4 | digit as u16;
        }
        Some(value)
    }

    /// A number token; `true` when it is an integer (no fraction, no exponent).
    fn number(&mut self) -> Option<bool> {
        if self.peek()? == b'-' {
            self.at += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            self.at += 1;
            integer = false;
            self.peek().filter(u8::is_ascii_digit)?;
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            integer = false;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            self.peek().filter(u8::is_ascii_digit)?;
            self.digits();
        }
        // Inside an object a number is followed by something: at the end of the bytes it
        // may have been cut short (`10000` arriving as `1`), so it is not read.
        self.peek()?;
        Some(integer)
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
    }

    /// Any value, checked and passed over; `depth` counts the objects and arrays around
    /// it, and a value that would be the `MAX_DEPTH + 1`-th is refused.
    fn skip_value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'-' | b'0'..=b'9' => self.number().map(drop),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'{' if depth < MAX_DEPTH => self.members(b'{', b'}', |this| {
                this.string()?;
                this.colon()?;
                this.skip_value(depth + 1)
            }),
            b'[' if depth < MAX_DEPTH => {
                self.members(b'[', b']', |this| this.skip_value(depth + 1))
            }
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at + word.len();
        (self.bytes.get(self.at..end)? == word).then(|| self.at = end)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sorted(mut found: Found) -> Found {
        found.ids.sort();
        found
    }

    #[test]
    fn ids_come_from_the_top_level_and_data_and_the_envelope_says_failure() {
        let found = sorted(scan(
            br#"{"status":"SUCCESS","data":{"id":"TXN-1","reference":"PCN9","customer_code":42,"amount":5,"nested":{"reference":"no"}}}"#,
            true,
        ));
        assert_eq!(
            found,
            Found {
                ids: vec![
                    ("customer_code", "42".to_owned()),
                    ("reference", "PCN9".to_owned()),
                    ("transaction_id", "TXN-1".to_owned()),
                ],
                failed: false,
                succeeded: true,
                code: None,
            }
        );
        assert!(scan(br#"{"status":"FAILED","code":"X"}"#, true).failed);
        // A request's `id` is not a transaction id, and its `status` says nothing.
        let request = scan(br#"{"id":"1","Reference":"R","status":"NEW"}"#, false);
        assert_eq!(request.ids, [("reference", "R".to_owned())]);
        assert!(!request.failed);
        // Escaped keys and values are read as JSON means them.
        let escaped = scan(br#"{"r\u0065ference":"P\u0043N1","data":"pong"}"#, true);
        assert_eq!(escaped.ids, [("reference", "PCN1".to_owned())]);
    }

    #[test]
    fn separators_anywhere_in_a_key_are_ignored_as_the_redactor_ignores_them() {
        // Found by the fuzz target: a key that starts with a separator, and one whose
        // separators make it longer than any key of interest.
        assert!(scan(br#"{"-sTatus":"SUCCESS"}"#, true).succeeded);
        assert!(scan(br#"{"__s_t_a_t_u_s__-_-_-":"SUCCESS"}"#, true).succeeded);
        let found = scan(
            br#"{"_-reference":"PCN1","t_r_a_n_s_a_c_t_i_o_n_i_d":"T9"}"#,
            true,
        );
        assert_eq!(
            found.ids,
            [
                ("reference", "PCN1".to_owned()),
                ("transaction_id", "T9".to_owned())
            ]
        );
        // Thirteen letters is the longest key of interest; one more is something else.
        assert!(scan(br#"{"transactionidx":"T9"}"#, true).ids.is_empty());
    }

    #[test]
    fn a_failed_answer_gives_fincodes_code_and_nothing_of_its_message() {
        // FinCode's 422, as the sandbox answers it.
        let found = scan(
            br#"{"status":"FAILED","code":"VALIDATION_ERROR","message":"amount must be positive for jane@example.com"}"#,
            true,
        );
        assert!(found.failed);
        assert_eq!(found.code.as_deref(), Some("VALIDATION_ERROR"));
        // Whatever the order and spelling of the keys, pretty or escaped.
        for body in [
            &br#"{"code":"RATE_LIMIT_EXCEEDED","status":"FAILED"}"#[..],
            b"{\n  \"Code\": \"RATE_LIMIT_EXCEEDED\",\n  \"STATUS\": \"ERROR\"\n}",
            br#"{"c\u006fde":"RATE_LIMIT\u005fEXCEEDED","status":"FAILED"}"#,
        ] {
            let found = scan(body, true);
            assert_eq!(
                found.code.as_deref(),
                Some("RATE_LIMIT_EXCEEDED"),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // Not a failure, not a code, or not FinCode's: nothing.
        for body in [
            &br#"{"status":"SUCCESS","code":"VALIDATION_ERROR"}"#[..],
            br#"{"code":"VALIDATION_ERROR"}"#,
            br#"{"status":"FAILED","code":"amount must be positive"}"#,
            br#"{"status":"FAILED","code":"validation_error"}"#,
            br#"{"status":"FAILED","code":"4111111111111111"}"#,
            br#"{"status":"FAILED","code":"_X"}"#,
            br#"{"status":"FAILED","code":""}"#,
            br#"{"status":"FAILED","code":422}"#,
            br#"{"status":"FAILED","code":{"name":"VALIDATION_ERROR"}}"#,
            br#"{"status":"FAILED","data":{"code":"VALIDATION_ERROR"}}"#,
            br#"{"status":"FAILED","error_code":"VALIDATION_ERROR"}"#,
            // The last `code` decides, as a JSON object reads it.
            br#"{"status":"FAILED","code":"VALIDATION_ERROR","code":"no"}"#,
        ] {
            let found = scan(body, true);
            assert_eq!(found.code, None, "{}", String::from_utf8_lossy(body));
        }
        let long = format!(r#"{{"status":"FAILED","code":"{}"}}"#, "E".repeat(49));
        assert_eq!(scan(long.as_bytes(), true).code, None);
        let longest = format!(r#"{{"status":"FAILED","code":"{}"}}"#, "E".repeat(48));
        assert!(scan(longest.as_bytes(), true).code.is_some());
        // A request's `code` is the app's, not FinCode's answer.
        assert_eq!(
            scan(br#"{"status":"FAILED","code":"VALIDATION_ERROR"}"#, false).code,
            None
        );
    }

    #[test]
    fn success_needs_the_success_status_in_a_whole_valid_body() {
        assert!(scan(br#" {"status":"SUCCESS","data":{"id":"T"}} "#, true).succeeded);
        for body in [
            &br#"{"status":"FAILED"}"#[..],
            br#"{"data":{"status":"SUCCESS"}}"#,
            br#"{"status":"SUCCESS","data":"#,
            br#"{"status":"SUCCESS"} trailing"#,
            br#"{"message":"ok"}"#,
        ] {
            assert!(!scan(body, true).succeeded, "{body:?}");
        }
    }

    #[test]
    fn the_status_is_read_as_json_means_it_whatever_its_spelling() {
        // An escaped `SUCCESS` is still one; the plain word is compared as bytes.
        let escaped = scan(br#"{"status":"SUCC\u0045SS"}"#, true);
        assert!(escaped.succeeded && !escaped.failed);
        // A number or a non-ASCII word is a status that is not `SUCCESS`.
        for body in [
            &br#"{"status":200}"#[..],
            "{\"status\":\"S\u{00dc}CCESS\"}".as_bytes(),
        ] {
            let found = scan(body, true);
            assert!(found.failed && !found.succeeded, "{body:?}");
        }
        // `null` or an object says nothing either way.
        for body in [&br#"{"status":null}"#[..], br#"{"status":{"a":1}}"#] {
            let found = scan(body, true);
            assert!(!found.failed && !found.succeeded, "{body:?}");
        }
        // Invalid UTF-8 in the status makes the body malformed, as before.
        let invalid = scan(b"{\"status\":\"S\xffS\",\"data\":{\"id\":\"T\"}}", true);
        assert!(invalid.ids.is_empty() && !invalid.succeeded);
    }

    #[test]
    fn anything_else_gives_nothing_and_never_fails() {
        for body in [
            "not json",
            "[1,2]",
            "",
            "{",
            r#"{"reference":"#,
            r#"{"data":[{"id":1}],"reference":{"x":1}}"#,
            r#""text""#,
        ] {
            let found = scan(body.as_bytes(), true);
            assert!(found.ids.is_empty(), "{body:?}: {found:?}");
        }
        // What came before a break is kept.
        let cut = scan(br#"{"reference":"PCN1","data":{"id":"#, true);
        assert_eq!(cut.ids, [("reference", "PCN1".to_owned())]);
    }

    /// FinCode's error codes, as the oracle has them: `^[A-Z][A-Z0-9_]{0,47}$`.
    fn oracle_code(text: &str) -> bool {
        let mut chars = text.chars();
        chars.next().is_some_and(|c| c.is_ascii_uppercase())
            && chars.clone().count() < 48
            && chars.all(|c| matches!(c, 'A'..='Z' | '0'..='9' | '_'))
    }

    /// What a body must give: its ids, whether it succeeded, and FinCode's error code.
    type Expected = (Vec<(&'static str, String)>, bool, Option<String>);

    /// The oracle: what the scan must find, from a full parse (`serde_json::Value`).
    fn expected(value: &serde_json::Value, response: bool) -> Expected {
        fn scalar(value: &serde_json::Value) -> Option<String> {
            match value {
                serde_json::Value::String(text) => Some(text.clone()),
                serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
                _ => None,
            }
        }
        fn level(
            map: &serde_json::Map<String, serde_json::Value>,
            response: bool,
            data: bool,
            ids: &mut Vec<(&'static str, String)>,
            status: &mut Option<String>,
            code: &mut Option<String>,
        ) {
            for (key, value) in map {
                let normal: String = key
                    .chars()
                    .filter(|c| *c != '_' && *c != '-')
                    .map(|c| c.to_ascii_lowercase())
                    .collect();
                let name = match normal.as_str() {
                    "transactionid" => "transaction_id",
                    "reference" => "reference",
                    "customercode" | "customerid" => "customer_code",
                    "id" if data && response => "transaction_id",
                    "status" if !data && response => {
                        if let Some(text) = scalar(value) {
                            *status = Some(text);
                        }
                        continue;
                    }
                    "code" if !data && response => {
                        *code = value.as_str().filter(|c| oracle_code(c)).map(str::to_owned);
                        continue;
                    }
                    "data" if !data => {
                        if let Some(inner) = value.as_object() {
                            level(inner, response, true, ids, status, code);
                        }
                        continue;
                    }
                    _ => continue,
                };
                if let Some(text) = scalar(value)
                    && !ids.iter().any(|(n, v)| *n == name && *v == text)
                {
                    ids.push((name, text));
                }
            }
        }
        let mut ids = Vec::new();
        let (mut status, mut code) = (None, None);
        if let Some(map) = value.as_object() {
            level(map, response, false, &mut ids, &mut status, &mut code);
        }
        ids.sort();
        // The code of a failure only: a status present and not SUCCESS.
        let failed = status.as_deref().is_some_and(|s| s != "SUCCESS");
        (
            ids,
            status.as_deref() == Some("SUCCESS"),
            code.filter(|_| failed),
        )
    }

    /// JSON values shaped like FinCode's: the keys the scan looks for (in the spellings
    /// FinCode and apps use), others, and every kind of value, nested.
    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let key = prop::sample::select(vec![
            "id",
            "transactionId",
            "transaction_id",
            "reference",
            "Reference",
            "customer_code",
            "customerCode",
            "customer-id",
            "status",
            "code",
            "Code",
            "error_code",
            "data",
            "amount",
            "message",
            "card",
            "x\"y",
            "ünï",
            "",
        ])
        .prop_map(str::to_owned);
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            (-1e6..1e6_f64).prop_map(serde_json::Value::from),
            prop::sample::select(vec![
                "SUCCESS",
                "FAILED",
                "VALIDATION_ERROR",
                "RATE_LIMIT_EXCEEDED",
                "E_42",
                "4111111111111111",
                "Not_A_Code",
                "_X",
                "TXN-1",
                "PCN\"q\"",
                "a\nb\u{1}",
                "ü✓𝄞",
                ""
            ])
            .prop_map(serde_json::Value::from),
            "[ -~]{0,12}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
                prop::collection::btree_map(key.clone(), inner, 0..6)
                    .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
            ]
        })
    }

    /// What FinCode's `status` and `code` hold, and near misses, so that failures with
    /// codes (and codes that must be dropped) come up often at the top level.
    fn envelope_word() -> impl Strategy<Value = serde_json::Value> {
        prop::sample::select(vec![
            "SUCCESS".to_owned(),
            "FAILED".to_owned(),
            "VALIDATION_ERROR".to_owned(),
            "RATE_LIMIT_EXCEEDED".to_owned(),
            "E_42".to_owned(),
            "4111111111111111".to_owned(),
            "Not_A_Code".to_owned(),
            "_X".to_owned(),
            "E".repeat(48),
            "E".repeat(49),
        ])
        .prop_map(serde_json::Value::from)
    }

    proptest::proptest! {
        /// On any object, compact or pretty, the scan finds exactly what a full parse
        /// says, for a response and a request; every prefix of it breaks off cleanly,
        /// keeping only ids the whole body has, and is never a success.
        #[test]
        fn the_scan_agrees_with_a_full_parse(
            map in prop::collection::btree_map(
                prop::sample::select(vec!["status", "code", "data", "reference", "id", "message", "transactionId"])
                    .prop_map(str::to_owned),
                prop_oneof![3 => json_value(), 2 => envelope_word()],
                0..5,
            ),
            pretty in any::<bool>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let value = serde_json::Value::Object(map.into_iter().collect());
            let body = if pretty {
                serde_json::to_vec_pretty(&value).unwrap()
            } else {
                serde_json::to_vec(&value).unwrap()
            };
            for response in [true, false] {
                let (ids, success, code) = expected(&value, response);
                let found = sorted(scan(&body, response));
                prop_assert_eq!(&found.ids, &ids, "{}", String::from_utf8_lossy(&body));
                prop_assert_eq!(found.succeeded, success);
                prop_assert_eq!(&found.code, &code, "{}", String::from_utf8_lossy(&body));
                let prefix = &body[..cut.index(body.len())];
                let partial = scan(prefix, response);
                prop_assert!(!partial.succeeded);
                for id in &partial.ids {
                    prop_assert!(ids.contains(id), "{:?} not in {:?}", id, ids);
                }
                // A code read before the break is a code, of a failure.
                if let Some(code) = &partial.code {
                    prop_assert!(partial.failed && oracle_code(code), "{:?}", partial);
                }
            }
        }
    }

    proptest::proptest! {
        /// On FinCode's envelope (status, code, message, in any spelling and order), the
        /// code the scan keeps is the one a full parse says: a failure's, a code's shape.
        #[test]
        fn the_code_agrees_with_a_full_parse(
            map in prop::collection::btree_map(
                prop::sample::select(vec!["status", "code", "Code", "message", "data"])
                    .prop_map(str::to_owned),
                prop_oneof![3 => envelope_word(), 1 => json_value()],
                1..5,
            ),
        ) {
            let value = serde_json::Value::Object(map.into_iter().collect());
            let body = serde_json::to_vec(&value).unwrap();
            for response in [true, false] {
                let (_, _, code) = expected(&value, response);
                prop_assert_eq!(scan(&body, response).code, code, "{}", String::from_utf8_lossy(&body));
            }
        }
    }

    proptest::proptest! {
        /// The word test finds the same first byte as a byte-by-byte look at the same eight
        /// bytes, and none when there is none. Bytes drawn mostly from the interesting ones,
        /// so that words with several enders (and borrows between them) are common.
        #[test]
        fn a_word_finds_the_first_byte_that_ends_a_run(
            word in proptest::array::uniform8(prop_oneof![
                Just(b'"'), Just(b'\\'), Just(0x00_u8), Just(0x1f), Just(0x20), Just(0x21),
                Just(0x7f), Just(0x80), Just(0xff), Just(b'a'), any::<u8>(),
            ]),
        ) {
            let first = word.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
            let enders = run_enders(u64::from_le_bytes(word));
            let found = (enders != 0).then(|| (enders.trailing_zeros() / 8) as usize);
            prop_assert_eq!(found, first, "{:?}", word);
        }
    }

    #[test]
    fn malformed_json_is_never_whole() {
        for body in [
            &br#"{"status":"SUCCESS","a":01}"#[..],
            br#"{"status":"SUCCESS","a":1.}"#,
            br#"{"status":"SUCCESS","a":-}"#,
            br#"{"status":"SUCCESS","a":1e}"#,
            br#"{"status":"SUCCESS","a":"\x"}"#,
            br#"{"status":"SUCCESS","a":"\u12G4"}"#,
            b"{\"status\":\"SUCCESS\",\"a\":\"tab\there\"}",
            br#"{"status":"SUCCESS","a":tru}"#,
            br#"{"status":"SUCCESS","a":[1,]}"#,
            br#"{"status":"SUCCESS",}"#,
            br#"{"status":"SUCCESS" "a":1}"#,
            br#"{"status":"SUCCESS","a":{"b" 1}}"#,
            br#"{"status":"SUCCESS","a":[1}"#,
            b"{\"status\":\"SUCCESS\",\"a\":\"\xff\"}",
            b"{\"status\":\"SUCCESS\"}\x0c",
            br#"{"status":"SUCCESS","a":"\ud800"}"#,
            br#"{"status":"SUCCESS","a":"\udc00"}"#,
            br#"{"status":"SUCCESS","a":"\ud800\u0041"}"#,
        ] {
            assert!(
                !scan(body, true).succeeded,
                "{}",
                String::from_utf8_lossy(body)
            );
            assert!(
                serde_json::from_slice::<serde_json::Value>(body).is_err(),
                "the test's own body is valid: {}",
                String::from_utf8_lossy(body)
            );
        }
    }

    /// UTF-8 is checked only when a string held a byte above 0x7f: such a byte in an
    /// eight-byte word, in the bytes after the last whole word, in a key, or right after a
    /// string's end must still be caught, and valid multi-byte text must still pass.
    #[test]
    fn bytes_above_ascii_are_checked_wherever_they_sit() {
        for (body, valid) in [
            (
                &b"{\"status\":\"SUCCESS\",\"a\":\"abcdefgh\xffijklmnop\"}"[..],
                false,
            ),
            (b"{\"status\":\"SUCCESS\",\"a\":\"ab\xc3\"}", false),
            (b"{\"status\":\"SUCCESS\",\"a\xed\xa0\x80\":1}", false),
            (b"{\"status\":\"SUCCESS\",\"a\":\"\xf0\x9f\x98\"}", false),
            (
                b"{\"status\":\"SUCCESS\",\"a\":\"\xc3\xbc\xe2\x9c\x93 caf\xc3\xa9\"}",
                true,
            ),
            (b"{\"status\":\"SUCCESS\",\"\xc3\xbcn\":\"x\"}", true),
        ] {
            assert_eq!(
                scan(body, true).succeeded,
                valid,
                "{}",
                String::from_utf8_lossy(body)
            );
            assert_eq!(
                serde_json::from_slice::<serde_json::Value>(body).is_ok(),
                valid,
                "the test's own verdict: {}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn nesting_is_bounded_as_serde_json_bounds_it() {
        for depth in [126, 127, 128, 200] {
            let body = format!(
                r#"{{"status":"SUCCESS","a":{}{}}}"#,
                "[".repeat(depth - 1),
                "]".repeat(depth - 1)
            );
            let serde_ok = serde_json::from_str::<serde_json::Value>(&body).is_ok();
            assert_eq!(
                scan(body.as_bytes(), true).succeeded,
                serde_ok,
                "depth {depth}"
            );
        }
    }

    #[test]
    fn the_scan_agrees_with_a_full_parse_on_fincode_shaped_bodies() {
        let body = br#"{"status":"SUCCESS","message":"ok","data":{"id":"TXN-7","reference":"PCN0000000007","customerCode":"C-1","amount":2500,"card":{"first6":"411111"}}}"#;
        let value: serde_json::Value = serde_json::from_slice(body).unwrap();
        let found = scan(body, true);
        assert_eq!(found.ids.len(), 3);
        for (name, id) in &found.ids {
            let key = match *name {
                "transaction_id" => "id",
                "reference" => "reference",
                _ => "customerCode",
            };
            assert_eq!(value["data"][key].as_str(), Some(id.as_str()));
        }
    }
}
