//! Webhook signature schemes (DESIGN.md 5.3), verified over the raw body bytes.
//!
//! FinCode's public documentation shows IP allow-listing and no signature header, so the scheme is
//! configuration, not code: [`Scheme`] covers a plain HMAC of the body (any header, hex or base64,
//! optional prefix), [Standard Webhooks](https://www.standardwebhooks.com), the Stripe-style
//! `t=...,v1=...` header, a shared secret sent as a header, and none. The same module signs, because
//! the sandbox emulates FinCode with these schemes and the dispatcher signs what it forwards to the
//! app with the sidecar's own Standard Webhooks secret: one implementation, so signer and verifier
//! cannot drift apart.
//!
//! Why it reads the way it does:
//!
//! - **Raw bytes only.** A re-serialised JSON body differs from the signed one in whitespace and
//!   key order, so the verifier takes `&[u8]` exactly as received and never parses it.
//! - **Constant time.** Received signatures are decoded first (public data, so an early exit on a
//!   malformed one leaks nothing), then compared with [`subtle::ConstantTimeEq`] against every
//!   secret and every candidate signature, with no early exit. Secret rotation means several
//!   secrets and, during the overlap, several `v1` entries; the result never depends on which
//!   one matched, so neither timing nor the error tells an attacker that.
//! - **Order of checks.** Presence and syntax first ([`Rejection::MissingSignature`],
//!   [`Rejection::MissingTimestamp`], [`Rejection::MalformedSignature`]), then the MAC
//!   ([`Rejection::BadSignature`]), and only then the timestamp tolerance
//!   ([`Rejection::StaleTimestamp`]). Checking the tolerance last means a stale rejection is always
//!   an authentic delivery that arrived late or was replayed (clock skew, a stuck queue), a signal
//!   worth alerting on, rather than noise from forged requests.
//! - **Timestamps** are unix seconds, compared in whole seconds both ways: a timestamp exactly
//!   `tolerance` away from `now` passes, one second more does not, in the past or the future.
//! - **Headers are strict.** A signature, timestamp or id header that is repeated, empty, or not
//!   visible ASCII is [`Rejection::MalformedSignature`]: ambiguity is refused, never guessed at.
//!
//! The listener answers every rejection with the same bare 401; [`Rejection::as_str`] is only a
//! metric and audit label.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use fincode_webhooks::verify::{sign, Scheme, Verifier};
//! use http::HeaderMap;
//! use secrecy::SecretString;
//!
//! let secret = SecretString::from("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
//! let now = SystemTime::now();
//! let body = br#"{"eventType":"TRANSACTION_STATUS","Status":"PAID"}"#;
//!
//! let mut headers = HeaderMap::new();
//! for (name, value) in sign(&Scheme::StandardWebhooks, &secret, body, now, "msg_1")? {
//!     headers.insert(name, value);
//! }
//! let verifier = Verifier::new(Scheme::StandardWebhooks, vec![secret], Duration::from_secs(300))?;
//! assert_eq!(verifier.verify(&headers, body, now), Ok(()));
//! # Ok::<(), fincode_webhooks::verify::VerifierError>(())
//! ```

mod error;
mod hmac;
mod mac;
pub(crate) use self::mac::encode_hex;
mod shared_secret;
mod standard_webhooks;
mod stripe;

use std::fmt;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretSlice, SecretString};

pub use self::error::{Rejection, VerifierError};
pub use self::standard_webhooks::{WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP};
pub use self::stripe::DEFAULT_STRIPE_HEADER;

/// The hash function of an HMAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// HMAC-SHA-256 (32-byte tags).
    Sha256,
    /// HMAC-SHA-512 (64-byte tags).
    Sha512,
}

/// How an HMAC tag is written in a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// Hexadecimal; either case is accepted, lower case is produced.
    Hex,
    /// Standard base64 alphabet with padding (RFC 4648 section 4).
    Base64,
}

/// A webhook signature scheme, as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// HMAC of the raw body, in header `header`, optional value prefix such as "sha256=".
    ///
    /// The prefix is matched exactly (case-sensitive); an empty prefix means none.
    Hmac {
        /// The hash function.
        algorithm: Algorithm,
        /// How the tag is written.
        encoding: Encoding,
        /// The header that carries the tag.
        header: HeaderName,
        /// Text before the encoded tag, such as `sha256=`; may be empty.
        prefix: String,
    },
    /// <https://www.standardwebhooks.com>: headers `webhook-id`, `webhook-timestamp`,
    /// `webhook-signature` (space-separated `v1,<base64>` entries); signed content
    /// `{id}.{timestamp}.{body}`; HMAC-SHA256; secrets `whsec_<base64>` (the decoded bytes are the
    /// key).
    StandardWebhooks,
    /// Stripe-style: header (default [`DEFAULT_STRIPE_HEADER`]) `t=<unix>,v1=<hex>[,v1=<hex>...]`
    /// (other keys such as `v0` ignored); HMAC-SHA256 of `{t}.{body}`; secret used as raw bytes.
    Stripe {
        /// The header that carries `t=...,v1=...`.
        header: HeaderName,
    },
    /// A header equals one of the secrets (constant-time compare).
    SharedSecret {
        /// The header that carries the secret.
        header: HeaderName,
    },
    /// No signature (the listener requires an IP allow-list for this).
    None,
}

/// Checks webhook signatures for one configured [`Scheme`] and its secrets.
///
/// Built once at start-up (and on reload): secrets are decoded here, so a bad secret is a
/// start-up error and the hot path does no decoding of them. `Debug` prints `[REDACTED]` in place
/// of every secret.
pub struct Verifier {
    scheme: Scheme,
    /// The MAC keys (or, for [`Scheme::SharedSecret`], the expected header bytes), in the order
    /// configured. Empty only for [`Scheme::None`].
    keys: Vec<SecretSlice<u8>>,
    tolerance: Duration,
}

// === impl Scheme ===

impl Scheme {
    /// The scheme's configuration name: `hmac`, `standard-webhooks`, `stripe-style`,
    /// `shared-secret` or `none`.
    pub const fn name(&self) -> &'static str {
        match self {
            Self::Hmac { .. } => "hmac",
            Self::StandardWebhooks => "standard-webhooks",
            Self::Stripe { .. } => "stripe-style",
            Self::SharedSecret { .. } => "shared-secret",
            Self::None => "none",
        }
    }

    /// Whether this scheme signs a timestamp, and so whether the tolerance applies.
    pub const fn has_timestamp(&self) -> bool {
        matches!(self, Self::StandardWebhooks | Self::Stripe { .. })
    }
}

// === impl Verifier ===

impl Verifier {
    /// A verifier for `scheme` that accepts a signature made with any one of `secrets`.
    ///
    /// Several secrets allow rotation: configure old and new, move the sender over, drop the old.
    /// For [`Scheme::StandardWebhooks`] each must be `whsec_` followed by standard base64 (the
    /// decoded bytes are the key); for the others the secret's UTF-8 bytes are the key. An empty
    /// list is an error except for [`Scheme::None`], which ignores secrets. Errors name a secret
    /// by its 1-based position, never by its value. `tolerance` is read in whole seconds and
    /// applies to the schemes with a timestamp.
    pub fn new(
        scheme: Scheme,
        secrets: Vec<SecretString>,
        tolerance: Duration,
    ) -> Result<Self, VerifierError> {
        if scheme == Scheme::None {
            return Ok(Self {
                scheme,
                keys: Vec::new(),
                tolerance,
            });
        }
        if let Scheme::Hmac { prefix, .. } = &scheme {
            hmac::check_prefix(prefix)?;
        }
        if secrets.is_empty() {
            return Err(VerifierError::NoSecrets {
                scheme: scheme.name(),
            });
        }
        // Consumed so each configured copy is zeroized as soon as its key is derived.
        let keys = secrets
            .into_iter()
            .enumerate()
            .map(|(index, secret)| key_from_secret(&scheme, &secret, index + 1))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            scheme,
            keys,
            tolerance,
        })
    }

    /// Checks `headers` and the raw `body` at `now`.
    ///
    /// The timestamp tolerance applies to [`Scheme::StandardWebhooks`] and [`Scheme::Stripe`],
    /// both ways (too old and too far in the future).
    pub fn verify(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), Rejection> {
        match &self.scheme {
            Scheme::Hmac {
                algorithm,
                encoding,
                header,
                prefix,
            } => hmac::verify(
                &self.keys, *algorithm, *encoding, header, prefix, headers, body,
            ),
            Scheme::StandardWebhooks => {
                standard_webhooks::verify(&self.keys, self.tolerance, headers, body, now)
            }
            Scheme::Stripe { header } => {
                stripe::verify(&self.keys, self.tolerance, header, headers, body, now)
            }
            Scheme::SharedSecret { header } => shared_secret::verify(&self.keys, header, headers),
            Scheme::None => Ok(()),
        }
    }

    /// The configured scheme.
    pub fn scheme(&self) -> &Scheme {
        &self.scheme
    }

    /// The configured timestamp tolerance.
    pub fn tolerance(&self) -> Duration {
        self.tolerance
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        #[derive(Clone, Copy)]
        struct Redacted;
        impl fmt::Debug for Redacted {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("[REDACTED]")
            }
        }
        f.debug_struct("Verifier")
            .field("scheme", &self.scheme)
            .field(
                "secrets",
                &std::iter::repeat_n(Redacted, self.keys.len()).collect::<Vec<_>>(),
            )
            .field("tolerance", &self.tolerance)
            .finish()
    }
}

/// Signs `body` at `now` with one secret and returns the header(s) to send.
///
/// For the CLI, the sandbox that emulates FinCode, and the dispatcher that signs what it forwards
/// to the app. `message_id` is the `webhook-id` of [`Scheme::StandardWebhooks`] (non-empty visible
/// ASCII) and is ignored by the other schemes. [`Scheme::None`] returns no headers. The secret is
/// read as in [`Verifier::new`]. Values derived from the secret are marked sensitive so HTTP/2
/// never adds them to a compression table.
pub fn sign(
    scheme: &Scheme,
    secret: &SecretString,
    body: &[u8],
    now: SystemTime,
    message_id: &str,
) -> Result<Vec<(HeaderName, HeaderValue)>, VerifierError> {
    if *scheme == Scheme::None {
        return Ok(Vec::new());
    }
    if let Scheme::Hmac { prefix, .. } = scheme {
        hmac::check_prefix(prefix)?;
    }
    let key = key_from_secret(scheme, secret, 1)?;
    let key = key.expose_secret();
    match scheme {
        Scheme::Hmac {
            algorithm,
            encoding,
            header,
            prefix,
        } => hmac::sign(key, *algorithm, *encoding, header, prefix, body),
        Scheme::StandardWebhooks => {
            standard_webhooks::sign(key, body, unix_seconds(now)?, message_id)
        }
        Scheme::Stripe { header } => stripe::sign(key, header, body, unix_seconds(now)?),
        Scheme::SharedSecret { header } => shared_secret::sign(key, header),
        Scheme::None => Ok(Vec::new()),
    }
}

/// The key bytes of the secret at 1-based `position`, checked for `scheme`.
fn key_from_secret(
    scheme: &Scheme,
    secret: &SecretString,
    position: usize,
) -> Result<SecretSlice<u8>, VerifierError> {
    let text = secret.expose_secret();
    match scheme {
        Scheme::StandardWebhooks => standard_webhooks::decode_secret(text, position),
        Scheme::SharedSecret { .. } => shared_secret::check_secret(text, position),
        Scheme::Hmac { .. } | Scheme::Stripe { .. } | Scheme::None => {
            if text.is_empty() {
                return Err(VerifierError::EmptySecret { position });
            }
            Ok(SecretSlice::from(text.as_bytes().to_vec()))
        }
    }
}

/// A header carrying a signature or secret, marked sensitive so HTTP/2 never indexes it.
///
/// Signature values are built from digits, hex, base64 and the scheme's punctuation, plus an
/// already checked prefix or id, so this fails only on a bug; it still returns an error rather
/// than panic.
fn sensitive_value(
    name: HeaderName,
    text: String,
) -> Result<(HeaderName, HeaderValue), VerifierError> {
    let mut value = HeaderValue::try_from(text).map_err(|_| VerifierError::InvalidHeaderValue {
        header: name.as_str().to_owned(),
    })?;
    value.set_sensitive(true);
    Ok((name, value))
}

/// `now` in whole unix seconds, for signing.
fn unix_seconds(now: SystemTime) -> Result<u64, VerifierError> {
    now.duration_since(SystemTime::UNIX_EPOCH)
        .map(|since| since.as_secs())
        .map_err(|_| VerifierError::ClockBeforeEpoch)
}

/// The one value of header `name` as trimmed text: `Ok(None)` when absent; `MalformedSignature`
/// when repeated, empty, or not visible ASCII.
fn single_header<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'a str>, Rejection> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Rejection::MalformedSignature);
    }
    let text = value
        .to_str()
        .map_err(|_| Rejection::MalformedSignature)?
        .trim_matches(|c: char| c == ' ' || c == '\t');
    if text.is_empty() {
        return Err(Rejection::MalformedSignature);
    }
    Ok(Some(text))
}

/// Parses a unix-seconds timestamp: ASCII digits only (no sign, no spaces), fitting in a `u64`.
fn parse_timestamp(text: &str) -> Result<u64, Rejection> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Rejection::MalformedSignature);
    }
    text.parse().map_err(|_| Rejection::MalformedSignature)
}

/// Whether `timestamp` is within `tolerance` of `now`, both ways, in whole seconds.
fn within_tolerance(timestamp: u64, now: SystemTime, tolerance: Duration) -> bool {
    let now_secs = match now.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(since) => i128::from(since.as_secs()),
        Err(before) => -i128::from(before.duration().as_secs()),
    };
    (now_secs - i128::from(timestamp)).unsigned_abs() <= u128::from(tolerance.as_secs())
}

#[cfg(test)]
mod tests;
