//! JSON redaction in one pass over the bytes: a validating scanner copies structure,
//! numbers and literals straight to the output and stops only at strings and at keys
//! with a rule. Building a `serde_json::Value` tree first costs more than the redaction
//! itself (see `benches/README.md`), and logging bodies is on the request path.
//!
//! Field rules apply by key; every other string goes through the free-text rules, and an
//! integer that is a card number is masked. The output is compact and always valid JSON.
//! Anything that is not valid JSON (bad UTF-8, trailing garbage, nesting deeper than
//! [`MAX_DEPTH`]) is redacted as free text instead.

use std::borrow::Cow;
use std::fmt::Write as _;

use crate::{
    Action, REDACTED,
    rules::{Rules, mask_last4},
    text,
};

/// Deeper documents are treated as text (serde_json's own limit).
const MAX_DEPTH: usize = 128;

pub(crate) fn redact(rules: &Rules, body: &[u8]) -> String {
    let Ok(src) = std::str::from_utf8(body) else {
        return text::redact(&String::from_utf8_lossy(body)).into_owned();
    };
    let mut scanner = Scanner {
        rules,
        src,
        bytes: body,
        pos: 0,
        out: String::with_capacity(body.len() + body.len() / 8),
    };
    match scanner.document() {
        Ok(()) => scanner.out,
        Err(Invalid) => text::redact(src).into_owned(),
    }
}

/// The input is not (supported) JSON.
struct Invalid;

type Result<T> = std::result::Result<T, Invalid>;

struct Scanner<'a> {
    rules: &'a Rules,
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
    out: String,
}

impl<'a> Scanner<'a> {
    fn document(&mut self) -> Result<()> {
        self.value(0)?;
        self.skip_ws();
        if self.pos == self.bytes.len() {
            Ok(())
        } else {
            Err(Invalid)
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.pos += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Result<()> {
        self.skip_ws();
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(Invalid)
        }
    }

    /// Copies one value, applying the rules inside it.
    fn value(&mut self, depth: usize) -> Result<()> {
        self.skip_ws();
        match self.peek().ok_or(Invalid)? {
            b'{' => self.object(depth + 1),
            b'[' => self.array(depth + 1),
            b'"' => {
                let s = self.string()?;
                write_string(&mut self.out, &text::redact(&s));
                Ok(())
            }
            b't' | b'f' | b'n' => {
                let literal = self.literal()?;
                self.out.push_str(literal);
                Ok(())
            }
            _ => {
                let number = self.number()?;
                // A card number written as a number. Other long integers are left
                // alone outside keyed fields: mostly timestamps and minor-unit amounts.
                match number.parse().ok().and_then(text::mask_card_number) {
                    Some(masked) => write_string(&mut self.out, &masked),
                    None => self.out.push_str(number),
                }
                Ok(())
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<()> {
        self.container(depth, [b'{', b'}'], |scanner| {
            scanner.skip_ws();
            if scanner.peek() != Some(b'"') {
                return Err(Invalid);
            }
            let key = scanner.string()?;
            write_string(&mut scanner.out, &text::redact(&key));
            scanner.expect(b':')?;
            scanner.out.push(':');
            match scanner.rules.field(&key) {
                None => scanner.value(depth),
                Some(action) => scanner.apply(action, depth),
            }
        })
    }

    fn array(&mut self, depth: usize) -> Result<()> {
        self.container(depth, [b'[', b']'], |scanner| scanner.value(depth))
    }

    /// An object or an array, from its `open` byte at `pos` to its `close`: `item` copies
    /// each member or element, and the punctuation around them is copied here.
    fn container(
        &mut self,
        depth: usize,
        [open, close]: [u8; 2],
        mut item: impl FnMut(&mut Self) -> Result<()>,
    ) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(Invalid);
        }
        self.pos += 1;
        self.out.push(char::from(open));
        self.skip_ws();
        if self.peek() == Some(close) {
            self.pos += 1;
            self.out.push(char::from(close));
            return Ok(());
        }
        loop {
            item(self)?;
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    self.out.push(',');
                }
                Some(byte) if byte == close => {
                    self.pos += 1;
                    self.out.push(char::from(close));
                    return Ok(());
                }
                _ => return Err(Invalid),
            }
        }
    }

    /// Replaces the value under a keyed rule. Objects and arrays are dropped whole, or
    /// hashed as their compact JSON text.
    fn apply(&mut self, action: Action, depth: usize) -> Result<()> {
        self.skip_ws();
        let scalar: Cow<'a, str> = match self.peek().ok_or(Invalid)? {
            b'"' => self.string()?,
            b'n' => {
                // An absent value hides nothing.
                let literal = self.literal()?;
                self.out.push_str(literal);
                return Ok(());
            }
            b't' | b'f' => Cow::Borrowed(self.literal()?),
            b'{' | b'[' => {
                let start = self.pos;
                let mut skipped = std::mem::take(&mut self.out);
                let scanned = self.value(depth);
                std::mem::swap(&mut self.out, &mut skipped);
                scanned?;
                let replaced = match action {
                    Action::Hash => {
                        let compact =
                            serde_json::from_str::<serde_json::Value>(&self.src[start..self.pos])
                                .map_or_else(|_| skipped, |v| v.to_string());
                        self.rules.pseudonym(&compact)
                    }
                    Action::Drop | Action::MaskLast4 => REDACTED.to_owned(),
                };
                write_string(&mut self.out, &replaced);
                return Ok(());
            }
            _ => Cow::Borrowed(self.number()?),
        };
        let replaced = match action {
            Action::Drop => REDACTED.to_owned(),
            Action::MaskLast4 => mask_last4(&scalar),
            Action::Hash => self.rules.pseudonym(&scalar),
        };
        write_string(&mut self.out, &replaced);
        Ok(())
    }

    /// A string literal at `pos` (on its `"`), decoded; borrowed when it has no escapes.
    fn string(&mut self) -> Result<Cow<'a, str>> {
        self.pos += 1; // '"'
        let start = self.pos;
        while let Some(b) = self.peek() {
            match b {
                b'"' => {
                    self.pos += 1;
                    return Ok(Cow::Borrowed(&self.src[start..self.pos - 1]));
                }
                b'\\' => return self.escaped_string(start).map(Cow::Owned),
                0x00..=0x1f => return Err(Invalid),
                _ => self.pos += 1,
            }
        }
        Err(Invalid)
    }

    fn escaped_string(&mut self, start: usize) -> Result<String> {
        let mut decoded = String::from(&self.src[start..self.pos]);
        loop {
            let b = self.peek().ok_or(Invalid)?;
            match b {
                b'"' => {
                    self.pos += 1;
                    return Ok(decoded);
                }
                b'\\' => {
                    self.pos += 1;
                    let escape = self.peek().ok_or(Invalid)?;
                    self.pos += 1;
                    decoded.push(match escape {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode_escape()?,
                        _ => return Err(Invalid),
                    });
                }
                0x00..=0x1f => return Err(Invalid),
                _ => {
                    // Copy up to the next special byte in one go.
                    let run = self.pos;
                    while self
                        .peek()
                        .is_some_and(|b| b != b'"' && b != b'\\' && b >= 0x20)
                    {
                        self.pos += 1;
                    }
                    decoded.push_str(&self.src[run..self.pos]);
                }
            }
        }
    }

    /// `XXXX` after `\u`, joining a surrogate pair. A lone surrogate is invalid.
    fn unicode_escape(&mut self) -> Result<char> {
        let high = self.hex4()?;
        if !(0xD800..0xE000).contains(&high) {
            return char::from_u32(high).ok_or(Invalid);
        }
        if high >= 0xDC00 || self.bytes.get(self.pos..self.pos + 2) != Some(b"\\u") {
            return Err(Invalid);
        }
        self.pos += 2;
        let low = self.hex4()?;
        if !(0xDC00..0xE000).contains(&low) {
            return Err(Invalid);
        }
        char::from_u32(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)).ok_or(Invalid)
    }

    fn hex4(&mut self) -> Result<u32> {
        let digits = self.src.get(self.pos..self.pos + 4).ok_or(Invalid)?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Invalid);
        }
        self.pos += 4;
        u32::from_str_radix(digits, 16).map_err(|_| Invalid)
    }

    fn literal(&mut self) -> Result<&'a str> {
        for literal in ["true", "false", "null"] {
            if self.bytes[self.pos..].starts_with(literal.as_bytes()) {
                self.pos += literal.len();
                return Ok(literal);
            }
        }
        Err(Invalid)
    }

    /// A number by the JSON grammar, as written.
    fn number(&mut self) -> Result<&'a str> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(Invalid),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
                return Err(Invalid);
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !self.peek().is_some_and(|b| b.is_ascii_digit()) {
                return Err(Invalid);
            }
            self.digits();
        }
        Ok(&self.src[start..self.pos])
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
    }
}

/// `s` as a JSON string literal. The text rules have already turned control characters
/// into visible escapes; the JSON escapes here are for `"`, `\` and anything left.
fn write_string(out: &mut String, s: &str) {
    out.push('"');
    let bytes = s.as_bytes();
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !NEEDS_ESCAPE[usize::from(b)] {
            i += 1;
            continue;
        }
        out.push_str(&s[copied..i]);
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            _ => {
                let _ = write!(out, "\\u{b:04x}");
            }
        }
        i += 1;
        copied = i;
    }
    out.push_str(&s[copied..]);
    out.push('"');
}

/// `"`, `\` and C0 controls.
static NEEDS_ESCAPE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = b < 0x20 || b == b'"' as usize || b == b'\\' as usize;
        b += 1;
    }
    table
};
