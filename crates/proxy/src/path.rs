//! The one path normaliser: every decision the sidecar takes on a path (route template,
//! rate limit, forbidden route, the upstream URI) is taken on its output, so what the
//! sidecar matched is exactly what FinCode receives.
//!
//! Servers and CDNs in front of an API disagree on paths: one decodes `%2e%2e` into
//! `..` and another does not, Java servers drop `;params` (Tomcat reads `..;/` as `../`,
//! Spring routes `/a;x/b` as `/a/b`), some treat `\` as `/`, some decode twice, and most
//! route `//a//b` like `/a/b`. A path that means one thing to the sidecar and another to
//! FinCode could escape the base URL, its route's rate limit, or a forbidden route. So
//! the normaliser:
//!
//! - refuses what only serves to be read differently: `.`/`..` segments, encoded dots
//!   (`%2e`), encoded separators (`%2f`, `%5c`), a raw `\`, path parameters (`;`),
//!   encoded `%` (`%25`: double encoding), encoded control characters, and a `%` not
//!   followed by two hex digits;
//! - collapses runs of `/` into one;
//! - decodes percent-encoded unreserved characters (letters, digits, `-`, `_`, `~`; RFC
//!   3986 section 6.2.2.2), so `/%73ecuritymanagement` is matched, and sent, as
//!   `/securitymanagement`.
//!
//! Every other escape (`%20`, `%40`...) is kept as written. Because `%` itself is never
//! produced by decoding and every `%` left is a well-formed escape, the output decodes
//! to the same thing however many times a server downstream decodes it.

use std::borrow::Cow;

/// Why a path was refused. The messages say what to fix; they never echo the path,
/// which can carry ids or personal data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/`.
    #[error("the request path must be absolute (start with '/')")]
    NotAbsolute,
    /// A `.` or `..` segment.
    #[error("the request path must be free of '.' and '..' segments")]
    DotSegment,
    /// `%2e`: an encoded dot only serves to hide a dot segment from one decoder.
    #[error("the request path must not percent-encode '.' (%2e)")]
    EncodedDot,
    /// `%2f` or `%5c`: a separator some servers decode and route on.
    #[error("the request path must not percent-encode '/' or '\\' (%2f, %5c)")]
    EncodedSeparator,
    /// A raw `\`, which some servers treat as `/`.
    #[error("the request path must not contain '\\'")]
    Backslash,
    /// `;` (or `%3b`): path parameters, which Java servers strip before routing.
    #[error("the request path must not contain ';' path parameters")]
    PathParameter,
    /// `%25`: an encoded `%` only serves double decoding.
    #[error("the request path must not percent-encode '%' (%25)")]
    EncodedPercent,
    /// `%00`-`%1f` or `%7f`.
    #[error("the request path must not percent-encode control characters")]
    EncodedControl,
    /// A `%` not followed by two hex digits.
    #[error("the request path has a '%' not followed by two hex digits")]
    MalformedEscape,
    /// The normalised path does not make a valid URI (not expected: normalising only
    /// removes slashes and decodes letters and digits).
    #[error("the request path is not a valid URI path")]
    Invalid,
}

/// Put on a request by the ingress layer when its path was refused; the guard layer,
/// inside the error responder, answers it with 400 `bad_path`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathRefused(pub PathError);

/// Normalises the path of an app's request (see the [module docs](self)); borrows when
/// the path is already normal, which is the common case, so the hot path does not
/// allocate.
///
/// ```
/// use fincode_proxy::path::{normalise, PathError};
/// assert_eq!(normalise("//transactionmanagement//create-transaction").unwrap(),
///            "/transactionmanagement/create-transaction");
/// assert_eq!(normalise("/a/..;/b"), Err(PathError::PathParameter));
/// ```
pub fn normalise(path: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    let (mut rewrite, mut dots) = (false, false);
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => return Err(PathError::Backslash),
            b';' => return Err(PathError::PathParameter),
            b'/' if bytes.get(i + 1) == Some(&b'/') => rewrite = true,
            // Encoded dots are refused (`check_escape`), so only plain dot segments are
            // left to find; `bytes[0]` is the `/` checked above.
            b'.' if i > 0 && bytes[i - 1] == b'/' => dots |= is_dot_segment(&bytes[i..]),
            b'%' => {
                let decoded = escape_at(bytes, i).ok_or(PathError::MalformedEscape)?;
                check_escape(decoded)?;
                rewrite |= is_unreserved(decoded);
                i += 2;
            }
            _ => {}
        }
        i += 1;
    }
    if dots {
        return Err(PathError::DotSegment);
    }
    if !rewrite {
        return Ok(Cow::Borrowed(path));
    }
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'/' && out.ends_with('/') {
            i += 1;
            continue;
        }
        if b == b'%'
            && let Some(decoded) = escape_at(bytes, i).filter(|d| is_unreserved(*d))
        {
            out.push(char::from(decoded));
            i += 3;
            continue;
        }
        // Everything else is ASCII or part of a UTF-8 sequence copied whole below.
        let len = utf8_len(b);
        out.push_str(path.get(i..i + len).unwrap_or_default());
        i += len;
    }
    Ok(Cow::Owned(out))
}

/// The rest of `path` below `base` (given without a trailing `/`), or `None` when `path`
/// is not under it. The base matches in any ASCII letter case and only up to a segment
/// boundary: under `/api/v6/services`, `/API/V6/Services/x` gives `/x` and
/// `/api/v6/servicesX` gives `None`. FinCode (like the guard) may not tell letter case
/// apart, so neither may the route or the upstream URI. Allocation-free: it runs on
/// every request.
pub(crate) fn strip_base<'a>(path: &'a str, base: &str) -> Option<&'a str> {
    // `get` refuses to cut inside a character; a cut the comparison accepts is after
    // ASCII (the base is ASCII wherever it matched) anyway.
    let head = path.get(..base.len())?;
    let rest = &path[base.len()..];
    (head.eq_ignore_ascii_case(base) && (rest.is_empty() || rest.starts_with('/'))).then_some(rest)
}

/// Whether `rest`, which starts with a `.` right after a `/`, is a whole `.` or `..`
/// segment (followed by `/` or the end).
fn is_dot_segment(rest: &[u8]) -> bool {
    matches!(
        rest,
        [b'.'] | [b'.', b'/', ..] | [b'.', b'.'] | [b'.', b'.', b'/', ..]
    )
}

/// The byte `%XY` at `at` stands for, if `X` and `Y` are hex digits.
fn escape_at(bytes: &[u8], at: usize) -> Option<u8> {
    let hi = hex(*bytes.get(at + 1)?)?;
    let lo = hex(*bytes.get(at + 2)?)?;
    Some(hi << 4 | lo)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn check_escape(decoded: u8) -> Result<(), PathError> {
    match decoded {
        b'.' => Err(PathError::EncodedDot),
        b'/' | b'\\' => Err(PathError::EncodedSeparator),
        b';' => Err(PathError::PathParameter),
        b'%' => Err(PathError::EncodedPercent),
        0x00..=0x1f | 0x7f => Err(PathError::EncodedControl),
        _ => Ok(()),
    }
}

/// RFC 3986 unreserved characters other than `.` (refused when encoded).
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~')
}

/// The length of the UTF-8 sequence a leading byte starts (1 for ASCII and, defensively,
/// for a continuation byte, which cannot start a sequence in a `&str`).
fn utf8_len(lead: u8) -> usize {
    match lead {
        0xf0..=0xff => 4,
        0xe0..=0xef => 3,
        0xc0..=0xdf => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests;
