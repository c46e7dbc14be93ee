//! [Standard Webhooks](https://www.standardwebhooks.com) (the Svix format): the scheme the
//! dispatcher signs with, so an app can verify the sidecar's deliveries with any of that
//! specification's libraries.
//!
//! `webhook-signature` holds space-separated `<version>,<base64>` entries; only `v1`
//! (HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}`) is defined, other versions are
//! skipped so a sender can add a future one alongside. A sender rotating secrets sends one `v1`
//! entry per secret; any entry matching any configured secret passes.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};
use secrecy::SecretSlice;

use super::{
    Algorithm, Rejection, VerifierError, mac, parse_timestamp, sensitive_value, single_header,
    within_tolerance,
};

/// `webhook-id`: the message id, unique per event and stable across redeliveries.
pub const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
/// `webhook-timestamp`: unix seconds at signing.
pub const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
/// `webhook-signature`: space-separated `v1,<base64>` entries.
pub const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

const SECRET_PREFIX: &str = "whsec_";

pub(super) fn verify(
    keys: &[SecretSlice<u8>],
    tolerance: Duration,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Result<(), Rejection> {
    let signature =
        single_header(headers, &WEBHOOK_SIGNATURE)?.ok_or(Rejection::MissingSignature)?;
    let timestamp_text =
        single_header(headers, &WEBHOOK_TIMESTAMP)?.ok_or(Rejection::MissingTimestamp)?;
    let timestamp = parse_timestamp(timestamp_text)?;
    let id = single_header(headers, &WEBHOOK_ID)?.ok_or(Rejection::MalformedSignature)?;
    let candidates = parse_signatures(signature)?;

    let parts: [&[u8]; 5] = [id.as_bytes(), b".", timestamp_text.as_bytes(), b".", body];
    if !mac::any_matches(Algorithm::Sha256, keys, &parts, &candidates) {
        return Err(Rejection::BadSignature);
    }
    if !within_tolerance(timestamp, now, tolerance) {
        return Err(Rejection::StaleTimestamp);
    }
    Ok(())
}

/// The decoded `v1` tags. Every entry must be `<version>,<signature>`; `v1` ones must be 32 bytes
/// of standard base64; there must be at least one `v1`.
fn parse_signatures(header: &str) -> Result<Vec<Vec<u8>>, Rejection> {
    let mut candidates = Vec::new();
    for entry in header.split_ascii_whitespace() {
        let (version, encoded) = entry.split_once(',').ok_or(Rejection::MalformedSignature)?;
        if version != "v1" {
            continue;
        }
        let tag = mac::decode_tag(Algorithm::Sha256, super::Encoding::Base64, encoded)
            .ok_or(Rejection::MalformedSignature)?;
        candidates.push(tag);
    }
    if candidates.is_empty() {
        return Err(Rejection::MalformedSignature);
    }
    Ok(candidates)
}

pub(super) fn sign(
    key: &[u8],
    body: &[u8],
    timestamp: u64,
    message_id: &str,
) -> Result<Vec<(HeaderName, HeaderValue)>, VerifierError> {
    if message_id.is_empty() || !message_id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(VerifierError::InvalidMessageId);
    }
    let id = HeaderValue::try_from(message_id).map_err(|_| VerifierError::InvalidMessageId)?;
    let timestamp_value = timestamp;
    let timestamp = timestamp.to_string();
    let tag = mac::tag(
        Algorithm::Sha256,
        key,
        &[
            message_id.as_bytes(),
            b".",
            timestamp.as_bytes(),
            b".",
            body,
        ],
    );
    let signature = format!("v1,{}", mac::encode_base64(&tag));
    Ok(vec![
        (WEBHOOK_ID, id),
        (WEBHOOK_TIMESTAMP, HeaderValue::from(timestamp_value)),
        sensitive_value(WEBHOOK_SIGNATURE, signature)?,
    ])
}

/// The key of a `whsec_<base64>` secret at 1-based `position`.
pub(super) fn decode_secret(text: &str, position: usize) -> Result<SecretSlice<u8>, VerifierError> {
    let not_whsec = VerifierError::NotStandardWebhooksSecret { position };
    let encoded = text.strip_prefix(SECRET_PREFIX).ok_or(not_whsec)?;
    match mac::decode_base64(encoded) {
        Some(key) if !key.is_empty() => Ok(SecretSlice::from(key)),
        _ => Err(VerifierError::NotStandardWebhooksSecret { position }),
    }
}
