#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! One redaction engine for everything fincode-sidecar writes down: log lines, logged
//! bodies, span attributes and (later) audit records.
//!
//! It is built once at start-up from the built-in rules plus the operator's `[redact]`
//! section, and is cheap to clone and share. Nothing it returns can hold, in clear:
//!
//! - a credential header (`X-Auth-Token`, `Authorization`, `password`, cookies, API keys);
//! - a JSON field FinCode documents as sensitive (passwords, PINs, tokens, CVV, ids, dates
//!   of birth, phones, emails, accounts, beneficiary names), by key, case- and
//!   separator-insensitively;
//! - a card number anywhere in free text or JSON values (digits + Luhn, shown as first 6
//!   and last 4), or a long digit run such as a BVN, NIN, account or phone number (last 4);
//! - an email address (first letter and domain only);
//! - a sensitive URL query parameter;
//! - a control character (CR, LF, escapes...), so no value can forge a log line.
//!
//! Every function is total: any input, including invalid UTF-8 or JSON, gets an answer.

mod json;
mod rules;
mod text;
mod url;

use std::{borrow::Cow, fmt, sync::Arc};

use secrecy::SecretSlice;

use self::rules::Rules;

/// What happens to the value of a sensitive JSON field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Replaced by `"[REDACTED]"`; the key stays, so the document keeps its shape.
    Drop,
    /// Everything but the last four characters replaced by `*`: enough to tell two
    /// accounts apart on a support call, not enough to use one.
    MaskLast4,
    /// A keyed HMAC-SHA256 pseudonym (`hmac:` and 16 hex digits): records about the same
    /// customer link up without naming them. Without a key it behaves as [`Action::Drop`],
    /// because an unkeyed hash of an email or a name is reversible by guessing.
    Hash,
}

/// The replacement for a dropped value.
pub const REDACTED: &str = "[REDACTED]";

/// Builds a [`Redactor`] from the built-in rules plus extra ones.
#[derive(Default)]
pub struct RedactorBuilder {
    rules: Rules,
}

/// The redaction engine. Cheap to clone; `Send + Sync`.
#[derive(Clone, Default)]
pub struct Redactor {
    rules: Arc<Rules>,
}

// === impl RedactorBuilder ===

impl RedactorBuilder {
    /// Never write down this header's value (names match case-insensitively).
    #[must_use]
    pub fn header(mut self, name: &str) -> Self {
        self.rules.add_header(name);
        self
    }

    /// Apply `action` to JSON fields named `key` (case-insensitive, `_` and `-` ignored),
    /// overriding a built-in rule for the same key.
    #[must_use]
    pub fn field(mut self, key: &str, action: Action) -> Self {
        self.rules.add_field(key, action);
        self
    }

    /// Never write down this URL query parameter's value.
    #[must_use]
    pub fn query_param(mut self, name: &str) -> Self {
        self.rules.add_query_param(name);
        self
    }

    /// The key for [`Action::Hash`] pseudonyms.
    #[must_use]
    pub fn hash_key(mut self, key: SecretSlice<u8>) -> Self {
        self.rules.hash_key = Some(key);
        self
    }

    /// The engine.
    pub fn build(mut self) -> Redactor {
        self.rules.key_hmac();
        Redactor {
            rules: Arc::new(self.rules),
        }
    }
}

// === impl Redactor ===

impl Redactor {
    /// A builder starting from the built-in rules.
    pub fn builder() -> RedactorBuilder {
        RedactorBuilder::default()
    }

    /// Whether a header's value must never be written down.
    pub fn is_sensitive_header(&self, name: &str) -> bool {
        self.rules.is_sensitive_header(name)
    }

    /// A header value fit to write down: `[REDACTED]` for a sensitive header, else the
    /// value with free-text redaction applied.
    pub fn header_value(&self, name: &str, value: &[u8]) -> String {
        if self.is_sensitive_header(name) {
            return REDACTED.to_owned();
        }
        self.text(&String::from_utf8_lossy(value)).into_owned()
    }

    /// Free text with card numbers, long digit runs, emails and control characters
    /// neutralised. Borrows when nothing had to change.
    pub fn text<'a>(&self, s: &'a str) -> Cow<'a, str> {
        text::redact(s)
    }

    /// A body: as JSON (field rules, then free-text rules on every string and long
    /// number), compact and still valid JSON; anything that does not parse as JSON is
    /// treated as free text.
    pub fn json(&self, body: &[u8]) -> String {
        json::redact(&self.rules, body)
    }

    /// The keyed pseudonym of `value` (`hmac:` and 16 hex digits), as [`Action::Hash`]
    /// writes it: the audit trail names resources this way, and `audit find` computes the
    /// same pseudonym from a clear id to look one up. `[REDACTED]` without a hash key.
    pub fn pseudonym(&self, value: &str) -> String {
        self.rules.pseudonym(value)
    }

    /// [`Self::pseudonym`] appended to `out`, without a `String` of its own (the audit
    /// trail writes several per record). Its text never needs JSON escaping.
    pub fn push_pseudonym(&self, out: &mut String, value: &str) {
        self.rules.push_pseudonym(out, value);
    }

    /// A URL or path with query: sensitive parameters' values replaced, everything else
    /// through the free-text rules (after percent-decoding, so an encoded `@` or digits
    /// are still found). The fragment is dropped.
    pub fn url(&self, uri: &str) -> String {
        url::redact(&self.rules, uri)
    }
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("hash_key", &self.rules.hash_key.as_ref().map(|_| "[set]"))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
