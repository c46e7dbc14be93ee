//! The rule tables: built-in defaults covering every sensitive FinCode field (DESIGN.md 2),
//! plus the operator's additions.

use std::collections::{HashMap, HashSet};

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::Sha256;

use crate::{Action, REDACTED};

/// Headers whose values are never written down.
const HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "x-auth-token",
    "password",
    "pin",
    "cookie",
    "set-cookie",
    "x-api-key",
    "x-refresh-token",
];

/// Header names containing one of these are treated as credentials too: a new vendor
/// header such as `X-Session-Token` is caught without a config change.
const HEADER_WORDS: &[&str] = &[
    "token",
    "secret",
    "password",
    "passwd",
    "authorization",
    "cookie",
    "api-key",
    "apikey",
    "signature",
    "credential",
];

/// JSON keys (normalised: lower case, no `_` or `-`) and what happens to their values.
const FIELDS: &[(&str, Action)] = &[
    // Secrets: nothing of them is ever useful in a record.
    ("password", Action::Drop),
    ("currentpassword", Action::Drop),
    ("newpassword", Action::Drop),
    ("oldpassword", Action::Drop),
    ("pin", Action::Drop),
    ("transactionpin", Action::Drop),
    ("otp", Action::Drop),
    ("cvv", Action::Drop),
    ("cvv2", Action::Drop),
    ("cvc", Action::Drop),
    ("refreshtoken", Action::Drop),
    ("accesstoken", Action::Drop),
    ("token", Action::Drop),
    ("authtoken", Action::Drop),
    ("xauthtoken", Action::Drop),
    ("secret", Action::Drop),
    ("clientsecret", Action::Drop),
    ("apikey", Action::Drop),
    ("privatekey", Action::Drop),
    ("dateofbirth", Action::Drop),
    ("dob", Action::Drop),
    // Numbers people read back on a support call: the last 4 tell them apart.
    ("pan", Action::MaskLast4),
    ("cardnumber", Action::MaskLast4),
    ("accountnumber", Action::MaskLast4),
    ("beneficiaryaccountnumber", Action::MaskLast4),
    ("bankaccount", Action::MaskLast4),
    ("iban", Action::MaskLast4),
    ("bvn", Action::MaskLast4),
    ("nin", Action::MaskLast4),
    ("idnumber", Action::MaskLast4),
    ("phone", Action::MaskLast4),
    ("phonenumber", Action::MaskLast4),
    ("msisdn", Action::MaskLast4),
    ("mobile", Action::MaskLast4),
    // Identities: pseudonymised so one customer's records still link up.
    ("email", Action::Hash),
    ("beneficiaryfullname", Action::Hash),
    ("fullname", Action::Hash),
    ("firstname", Action::Hash),
    ("lastname", Action::Hash),
    ("name", Action::Hash),
    ("customername", Action::Hash),
    ("address", Action::Hash),
];

/// Normalised JSON keys containing one of these are secrets whatever else they say
/// (`newTransactionPassword`, `webhookSecret`, `sessionToken`).
const FIELD_WORDS: &[&str] = &["password", "secret", "token", "apikey", "privatekey"];

/// Query parameters whose values are never written down.
const QUERY_PARAMS: &[&str] = &[
    "token",
    "access_token",
    "refresh_token",
    "password",
    "pin",
    "otp",
    "api_key",
    "apikey",
    "key",
    "signature",
    "sig",
    "secret",
    "email",
    "phone",
];

/// The rule tables.
pub(crate) struct Rules {
    headers: HashSet<String>,
    fields: HashMap<String, Action>,
    query_params: HashSet<String>,
    pub(crate) hash_key: Option<SecretSlice<u8>>,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            headers: HEADERS.iter().map(|h| (*h).to_owned()).collect(),
            fields: FIELDS.iter().map(|(k, a)| ((*k).to_owned(), *a)).collect(),
            query_params: QUERY_PARAMS.iter().map(|p| (*p).to_owned()).collect(),
            hash_key: None,
        }
    }
}

impl Rules {
    pub(crate) fn add_header(&mut self, name: &str) {
        self.headers.insert(name.to_ascii_lowercase());
    }

    pub(crate) fn add_field(&mut self, key: &str, action: Action) {
        self.fields.insert(normalise(key), action);
    }

    pub(crate) fn add_query_param(&mut self, name: &str) {
        self.query_params.insert(name.to_ascii_lowercase());
    }

    pub(crate) fn is_sensitive_header(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        self.headers.contains(&name) || HEADER_WORDS.iter().any(|w| name.contains(w))
    }

    pub(crate) fn is_sensitive_query_param(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        self.query_params.contains(&name)
            || FIELD_WORDS.iter().any(|w| normalise(&name).contains(w))
    }

    /// The rule for a JSON key, if any.
    pub(crate) fn field(&self, key: &str) -> Option<Action> {
        let key = normalise(key);
        if let Some(action) = self.fields.get(&key) {
            return Some(*action);
        }
        FIELD_WORDS
            .iter()
            .any(|w| key.contains(w))
            .then_some(Action::Drop)
    }

    /// The pseudonym for `value`, or `[REDACTED]` without a key.
    pub(crate) fn pseudonym(&self, value: &str) -> String {
        let Some(key) = &self.hash_key else {
            return REDACTED.to_owned();
        };
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key.expose_secret()) else {
            // HMAC takes keys of any length; this cannot happen, but never leak.
            return REDACTED.to_owned();
        };
        mac.update(value.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut out = String::with_capacity(5 + 16);
        out.push_str("hmac:");
        for byte in &digest[..8] {
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
        out
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Lower case without `_` and `-`: `refresh_token`, `refreshToken` and `Refresh-Token`
/// are one key.
pub(crate) fn normalise(key: &str) -> String {
    key.chars()
        .filter(|c| *c != '_' && *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// All but the last four characters as `*`; four or fewer become `****`.
pub(crate) fn mask_last4(value: &str) -> String {
    let count = value.chars().count();
    if count <= 4 {
        return "****".to_owned();
    }
    let mut out = "*".repeat(count - 4);
    out.extend(value.chars().skip(count - 4));
    // The kept tail goes through the text rules too: it could hold a control character.
    crate::text::redact(&out).into_owned()
}
