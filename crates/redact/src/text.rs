//! Free-text redaction: one linear pass over the bytes, copying lazily, so text with
//! nothing to hide is returned borrowed without an allocation.
//!
//! - Digit runs (optionally `+`-prefixed, optionally grouped by one kind of separator,
//!   spaces or dashes, as people write cards and phones): 13-19 digits passing Luhn are a
//!   card number, shown as first 6 / last 4; any other run of 10 or more digits (BVN and
//!   NIN are 11, NUBAN accounts 10, phones 10-15) keeps its last 4; a `+` prefix means a
//!   phone, never a card. Shorter runs (amounts, years, dates, short ids) stay, and so do
//!   non-card runs glued to letters (references such as `PCN17325325551235`).
//! - Emails: the first character of the local part and the domain stay.
//! - Control characters (C0, DEL, C1, U+2028/9) become visible escapes, so a value can
//!   never end a log line or start a forged one.

use std::borrow::Cow;

/// Longest digit run examined as one number; longer runs are masked as a whole anyway.
const CARD_DIGITS: std::ops::RangeInclusive<usize> = 13..=19;
/// Runs this long or longer are personal numbers until proven otherwise.
const MIN_MASKED_DIGITS: usize = 10;

pub(crate) fn redact(s: &str) -> Cow<'_, str> {
    let bytes = s.as_bytes();
    // `contains` on bytes is a memchr: most values have no `@` at all.
    let emails = if bytes.contains(&b'@') {
        find_emails(bytes)
    } else {
        Vec::new()
    };
    let mut emails = emails.iter().peekable();
    let mut out = Lazy::new(s);
    let mut i = 0;
    while i < bytes.len() {
        // Skip what can never need a change, up to the next email.
        let stop = emails.peek().map_or(bytes.len(), |email| email.start);
        while i < stop && !INTERESTING[usize::from(bytes[i])] {
            i += 1;
        }
        if i >= bytes.len() {
            break;
        }
        if let Some(email) = emails.peek()
            && email.start == i
        {
            out.replace(i, email.end, |o| {
                o.push(char::from(bytes[email.start]));
                o.push_str("***@");
                o.push_str(&s[email.at + 1..email.end]);
            });
            i = email.end;
            emails.next();
            continue;
        }
        let b = bytes[i];
        if b.is_ascii_digit() || (b == b'+' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            // A run never reaches into the next email: that one is redacted whole.
            let limit = emails.peek().map_or(bytes.len(), |email| email.start);
            let run = digit_run(&bytes[..limit], i);
            if let Some(masked) = mask_run(bytes, &run) {
                out.replace(i, run.end, |o| o.push_str(&masked));
            }
            i = run.end;
            continue;
        }
        if b < 0x20 || b == 0x7f {
            out.replace(i, i + 1, |o| escape(o, char::from(b)));
            i += 1;
            continue;
        }
        if b >= 0x80 {
            // A multi-byte character: only C1 controls and the Unicode line separators
            // matter. `i` is always on a character boundary here.
            let c = s[i..].chars().next().unwrap_or('\u{fffd}');
            let len = c.len_utf8();
            if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
                out.replace(i, i + len, |o| escape(o, c));
            }
            i += len;
            continue;
        }
        i += 1;
    }
    out.finish()
}

/// Bytes that may start a change: digits, `+`, control characters and the first byte of
/// any multi-byte character (which may be a C1 control or a line separator).
static INTERESTING: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b >= b'0' as usize && b <= b'9' as usize)
            || b == b'+' as usize
            || b < 0x20
            || b >= 0x7f;
        b += 1;
    }
    table
};

/// The output, allocated at the first change.
struct Lazy<'a> {
    src: &'a str,
    out: Option<String>,
    copied: usize,
}

impl<'a> Lazy<'a> {
    fn new(src: &'a str) -> Self {
        Self {
            src,
            out: None,
            copied: 0,
        }
    }

    /// Replaces `src[start..end]` with what `write` pushes.
    fn replace(&mut self, start: usize, end: usize, write: impl FnOnce(&mut String)) {
        let out = self
            .out
            .get_or_insert_with(|| String::with_capacity(self.src.len() + 16));
        out.push_str(&self.src[self.copied..start]);
        write(out);
        self.copied = end;
    }

    fn finish(self) -> Cow<'a, str> {
        match self.out {
            None => Cow::Borrowed(self.src),
            Some(mut out) => {
                out.push_str(&self.src[self.copied..]);
                Cow::Owned(out)
            }
        }
    }
}

fn escape(out: &mut String, c: char) {
    match c {
        '\r' => out.push_str("\\r"),
        '\n' => out.push_str("\\n"),
        '\t' => out.push_str("\\t"),
        _ => {
            use std::fmt::Write as _;
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
    }
}

/// A run of digits from `start` to `end` (exclusive), as found in the bytes.
struct Run {
    start: usize,
    end: usize,
    digits: usize,
    phone: bool,
}

fn digit_run(bytes: &[u8], start: usize) -> Run {
    let phone = bytes[start] == b'+';
    let mut j = if phone { start + 1 } else { start };
    let mut separator = None;
    let mut digits = 0;
    while j < bytes.len() {
        let b = bytes[j];
        if b.is_ascii_digit() {
            digits += 1;
            j += 1;
            continue;
        }
        // One kind of separator per run, between two digits: "4111 1111 ..." and
        // "0803-123-4567" are one number; "2024-01-15 10:30" is not.
        let next_is_digit = bytes.get(j + 1).is_some_and(u8::is_ascii_digit);
        if (b == b' ' || b == b'-') && next_is_digit && separator.is_none_or(|s| s == b) {
            separator = Some(b);
            j += 1;
            continue;
        }
        break;
    }
    Run {
        start,
        end: j,
        digits,
        phone,
    }
}

/// The masked form of a run, or `None` when it may stay.
fn mask_run(bytes: &[u8], run: &Run) -> Option<String> {
    if run.digits < MIN_MASKED_DIGITS {
        return None;
    }
    let digits: Vec<u8> = bytes[run.start..run.end]
        .iter()
        .copied()
        .filter(u8::is_ascii_digit)
        .collect();
    let n = digits.len();
    if n < MIN_MASKED_DIGITS {
        return None;
    }
    let card = !run.phone && CARD_DIGITS.contains(&n) && luhn(&digits);
    // Digits glued to letters (`PCN17325325551235`, `TXN0123456789`) are references, not
    // personal numbers; a card number is masked wherever it appears.
    let glued = |b: Option<&u8>| b.is_some_and(u8::is_ascii_alphabetic);
    let before = run.start.checked_sub(1).and_then(|i| bytes.get(i));
    if !card && (glued(before) || glued(bytes.get(run.end))) {
        return None;
    }
    let mut out = String::with_capacity(n + 1);
    let last4 = std::str::from_utf8(&digits[n - 4..]).unwrap_or("");
    if card {
        out.push_str(std::str::from_utf8(&digits[..6]).unwrap_or(""));
        out.extend(std::iter::repeat_n('*', n - 10));
    } else {
        if run.phone {
            out.push('+');
        }
        out.extend(std::iter::repeat_n('*', n - 4));
    }
    out.push_str(last4);
    Some(out)
}

/// `number` as first 6 / last 4 when it is a card number (13-19 digits, Luhn).
pub(crate) fn mask_card_number(number: u64) -> Option<String> {
    let digits = number.to_string().into_bytes();
    let n = digits.len();
    if !CARD_DIGITS.contains(&n) || !luhn(&digits) {
        return None;
    }
    let mut out = String::with_capacity(n);
    out.push_str(std::str::from_utf8(&digits[..6]).unwrap_or(""));
    out.extend(std::iter::repeat_n('*', n - 10));
    out.push_str(std::str::from_utf8(&digits[n - 4..]).unwrap_or(""));
    Some(out)
}

/// The Luhn checksum of ASCII digits.
pub(crate) fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d - b'0');
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

/// An email address at `start..end` with its `@` at `at`.
#[derive(Debug)]
struct Email {
    start: usize,
    at: usize,
    end: usize,
}

fn is_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn is_domain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-')
}

/// Every `local@domain.tld` in order, not overlapping. Linear: the scan back from an `@`
/// stops at the previous `@` at the latest.
fn find_emails(bytes: &[u8]) -> Vec<Email> {
    let mut found: Vec<Email> = Vec::new();
    for at in (0..bytes.len()).filter(|&i| bytes[i] == b'@') {
        let mut start = at;
        while start > 0 && is_local(bytes[start - 1]) {
            start -= 1;
        }
        if start == at || found.last().is_some_and(|prev| start < prev.end) {
            continue;
        }
        let mut end = at + 1;
        while end < bytes.len() && is_domain(bytes[end]) {
            end += 1;
        }
        while end > at + 1 && matches!(bytes[end - 1], b'.' | b'-') {
            end -= 1;
        }
        let domain = &bytes[at + 1..end];
        let has_tld = domain
            .iter()
            .rposition(|&b| b == b'.')
            .is_some_and(|dot| dot > 0 && domain.len() - dot > 2);
        if has_tld {
            found.push(Email { start, at, end });
        }
    }
    found
}
