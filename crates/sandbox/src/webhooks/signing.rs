//! The sandbox's own signer: every scheme written against the `hmac`, `sha2` and `base64`
//! crates directly, never the sidecar's code.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use http::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use sha2::{Sha256, Sha512};

const DEFAULT_HMAC_HEADER: &str = "x-fincode-signature";
const DEFAULT_STRIPE_HEADER: &str = "stripe-signature";
const DEFAULT_SHARED_SECRET_HEADER: &str = "x-webhook-secret";

/// How a webhook is signed; every scheme signs the raw body bytes that are sent.
///
/// As JSON: `{"kind": "hmac", "secret": "..", "algorithm": "sha256", "encoding": "hex"}`,
/// `{"kind": "standard-webhooks", "secret": "whsec_.."}`, `{"kind": "stripe", "secret": ".."}`,
/// `{"kind": "shared-secret", "secret": ".."}` or `{"kind": "none"}`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum WebhookSigning {
    /// An HMAC of the body in one header, with no timestamp.
    Hmac {
        /// The key, as its UTF-8 bytes.
        secret: String,
        /// `sha256` or `sha512`.
        algorithm: String,
        /// `hex` (lowercase) or `base64` (standard, padded).
        encoding: String,
        /// The header carrying the signature; default `x-fincode-signature`.
        header: Option<String>,
        /// Written before the encoded signature, such as `sha256=`.
        prefix: Option<String>,
    },
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp` and `webhook-signature:
    /// v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
    StandardWebhooks {
        /// `whsec_<base64 key>`; the key is the base64-decoded part after the prefix.
        secret: String,
    },
    /// Stripe-style `t=<timestamp>,v1=<hex HMAC-SHA256 of "{t}.{body}">`.
    Stripe {
        /// The key, as its UTF-8 bytes (a `whsec_` prefix is part of the key, as at Stripe).
        secret: String,
        /// The header; default `stripe-signature`.
        header: Option<String>,
    },
    /// A header whose value is the secret itself.
    SharedSecret {
        /// The value sent.
        secret: String,
        /// The header; default `x-webhook-secret`.
        header: Option<String>,
    },
    /// No signature at all (FinCode's documented behaviour).
    None,
}

// === impl WebhookSigning ===

impl fmt::Debug for WebhookSigning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const REDACTED: &str = "[REDACTED]";
        match self {
            Self::Hmac {
                algorithm,
                encoding,
                header,
                prefix,
                ..
            } => f
                .debug_struct("Hmac")
                .field("secret", &REDACTED)
                .field("algorithm", algorithm)
                .field("encoding", encoding)
                .field("header", header)
                .field("prefix", prefix)
                .finish(),
            Self::StandardWebhooks { .. } => f
                .debug_struct("StandardWebhooks")
                .field("secret", &REDACTED)
                .finish(),
            Self::Stripe { header, .. } => f
                .debug_struct("Stripe")
                .field("secret", &REDACTED)
                .field("header", header)
                .finish(),
            Self::SharedSecret { header, .. } => f
                .debug_struct("SharedSecret")
                .field("secret", &REDACTED)
                .field("header", header)
                .finish(),
            Self::None => f.write_str("None"),
        }
    }
}

/// The headers `signing` adds for `body` at Unix time `timestamp` with message id `id` (only
/// Standard Webhooks uses the id; only Standard Webhooks and Stripe use the time).
pub(super) fn sign_at(
    signing: &WebhookSigning,
    body: &[u8],
    timestamp: i64,
    id: &str,
) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    match signing {
        WebhookSigning::Hmac {
            secret,
            algorithm,
            encoding,
            header,
            prefix,
        } => {
            let tag = match algorithm.to_ascii_lowercase().as_str() {
                "sha256" => hmac_sha256(secret.as_bytes(), &[body])?,
                "sha512" => hmac_sha512(secret.as_bytes(), &[body])?,
                other => {
                    return Err(format!(
                        "hmac algorithm must be sha256 or sha512, not {other:?}"
                    ));
                }
            };
            let encoded = match encoding.to_ascii_lowercase().as_str() {
                "hex" => to_hex(&tag),
                "base64" => STANDARD.encode(&tag),
                other => {
                    return Err(format!(
                        "hmac encoding must be hex or base64, not {other:?}"
                    ));
                }
            };
            let prefix = prefix.as_deref().unwrap_or_default();
            Ok(vec![secret_header(
                header.as_deref().unwrap_or(DEFAULT_HMAC_HEADER),
                format!("{prefix}{encoded}"),
            )?])
        }
        WebhookSigning::StandardWebhooks { secret } => {
            let encoded_key = secret.strip_prefix("whsec_").unwrap_or(secret);
            let key = STANDARD
                .decode(encoded_key)
                .map_err(|e| format!("a standard-webhooks secret is whsec_<base64>: {e}"))?;
            let timestamp = timestamp.to_string();
            let tag = hmac_sha256(
                &key,
                &[id.as_bytes(), b".", timestamp.as_bytes(), b".", body],
            )?;
            Ok(vec![
                header_pair("webhook-id", id.to_owned())?,
                header_pair("webhook-timestamp", timestamp)?,
                secret_header("webhook-signature", format!("v1,{}", STANDARD.encode(tag)))?,
            ])
        }
        WebhookSigning::Stripe { secret, header } => {
            let timestamp = timestamp.to_string();
            let tag = hmac_sha256(secret.as_bytes(), &[timestamp.as_bytes(), b".", body])?;
            Ok(vec![secret_header(
                header.as_deref().unwrap_or(DEFAULT_STRIPE_HEADER),
                format!("t={timestamp},v1={}", to_hex(&tag)),
            )?])
        }
        WebhookSigning::SharedSecret { secret, header } => Ok(vec![secret_header(
            header.as_deref().unwrap_or(DEFAULT_SHARED_SECRET_HEADER),
            secret.clone(),
        )?]),
        WebhookSigning::None => Ok(Vec::new()),
    }
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Result<Vec<u8>, String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(|e| e.to_string())?;
    for part in parts {
        mac.update(part);
    }
    Ok(mac.finalize().into_bytes().to_vec())
}

fn hmac_sha512(key: &[u8], parts: &[&[u8]]) -> Result<Vec<u8>, String> {
    let mut mac = Hmac::<Sha512>::new_from_slice(key).map_err(|e| e.to_string())?;
    for part in parts {
        mac.update(part);
    }
    Ok(mac.finalize().into_bytes().to_vec())
}

fn to_hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

pub(super) fn header_pair(name: &str, value: String) -> Result<(HeaderName, HeaderValue), String> {
    let name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("invalid header name {name:?}"))?;
    let value =
        HeaderValue::try_from(value).map_err(|_| format!("invalid value for header {name}"))?;
    Ok((name, value))
}

/// A header that carries a secret or a signature: marked sensitive so nothing logs it.
fn secret_header(name: &str, value: String) -> Result<(HeaderName, HeaderValue), String> {
    let (name, mut value) = header_pair(name, value)?;
    value.set_sensitive(true);
    Ok((name, value))
}
