//! The rule tables: built-in defaults covering every sensitive FinCode field (DESIGN.md 2),
//! plus the operator's additions.

use std::{
    collections::{HashMap, HashSet},
    hash::{BuildHasherDefault, Hasher},
};

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

// Normalised JSON keys containing "password", "secret", "token", "apikey" or
// "privatekey" are secrets whatever else they say (`newTransactionPassword`,
// `webhookSecret`, `sessionToken`): see `contains_word`.

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
    /// Keyed by the normalised key's bytes (always ASCII-lowercased), hashed with FNV:
    /// this is looked up for every key of every logged body.
    fields: HashMap<Vec<u8>, Action, BuildHasherDefault<Fnv>>,
    query_params: HashSet<String>,
    pub(crate) hash_key: Option<SecretSlice<u8>>,
    /// The HMAC keyed once with `hash_key` (set by [`Rules::key_hmac`]): cloning the
    /// keyed state saves hashing the key again for every pseudonym (the audit trail
    /// makes several per call).
    keyed: Option<Hmac<Sha256>>,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            headers: HEADERS.iter().map(|h| (*h).to_owned()).collect(),
            fields: FIELDS
                .iter()
                .map(|(k, a)| (k.as_bytes().to_vec(), *a))
                .collect(),
            query_params: QUERY_PARAMS.iter().map(|p| (*p).to_owned()).collect(),
            hash_key: None,
            keyed: None,
        }
    }
}

impl Rules {
    pub(crate) fn add_header(&mut self, name: &str) {
        self.headers.insert(name.to_ascii_lowercase());
    }

    pub(crate) fn add_field(&mut self, key: &str, action: Action) {
        self.fields.insert(normalise(key).into_bytes(), action);
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
        self.query_params.contains(&name) || contains_word(normalise(&name).as_bytes())
    }

    /// The rule for a JSON key, if any. Called for every key of every logged body, so
    /// short ASCII keys are normalised on the stack.
    pub(crate) fn field(&self, key: &str) -> Option<Action> {
        let mut buf = [0u8; 48];
        let mut len = 0;
        let mut short_ascii = key.len() <= buf.len();
        if short_ascii {
            for &b in key.as_bytes() {
                if !b.is_ascii() {
                    short_ascii = false;
                    break;
                }
                if b != b'_' && b != b'-' {
                    buf[len] = b.to_ascii_lowercase();
                    len += 1;
                }
            }
        }
        let owned;
        let key: &[u8] = if short_ascii {
            &buf[..len]
        } else {
            owned = normalise(key);
            owned.as_bytes()
        };
        if let Some(action) = self.fields.get(key) {
            return Some(*action);
        }
        contains_word(key).then_some(Action::Drop)
    }

    /// Keys the HMAC once, after `hash_key` is set.
    pub(crate) fn key_hmac(&mut self) {
        self.keyed = self
            .hash_key
            .as_ref()
            .and_then(|key| Hmac::<Sha256>::new_from_slice(key.expose_secret()).ok());
    }

    /// The pseudonym for `value`, or `[REDACTED]` without a key.
    pub(crate) fn pseudonym(&self, value: &str) -> String {
        let mut out = String::with_capacity(5 + 16);
        self.push_pseudonym(&mut out, value);
        out
    }

    /// Appends the pseudonym for `value` (or `[REDACTED]` without a key) to `out`.
    pub(crate) fn push_pseudonym(&self, out: &mut String, value: &str) {
        // HMAC takes keys of any length, so `keyed` is set whenever a key is; without
        // one, never leak.
        let Some(keyed) = &self.keyed else {
            out.push_str(REDACTED);
            return;
        };
        let mut mac = keyed.clone();
        mac.update(value.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut digits = [0_u8; 16];
        // 8 bytes fill 16 digits exactly; hex digits are ASCII.
        let _ = hex::encode_to_slice(&digest[..8], &mut digits);
        out.push_str("hmac:");
        out.push_str(std::str::from_utf8(&digits).unwrap_or_default());
    }
}

/// Whether a normalised key contains a secret word. A byte loop: keys are
/// short, and a substring searcher's set-up would cost more than the search.
fn contains_word(key: &[u8]) -> bool {
    (0..key.len()).any(|i| {
        let rest = &key[i..];
        match key[i] {
            b'p' => rest.starts_with(b"password") || rest.starts_with(b"privatekey"),
            b's' => rest.starts_with(b"secret"),
            b't' => rest.starts_with(b"token"),
            b'a' => rest.starts_with(b"apikey"),
            _ => false,
        }
    })
}

/// FNV-1a: fast for the short keys of the field table, and the table is fixed at start-up
/// (no attacker chooses what is stored in it).
#[derive(Default)]
pub(crate) struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut hash = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = hash;
    }
}

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
