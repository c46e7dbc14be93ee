//! `stripe-style`: one header `t=<unix>,v1=<hex>[,v1=<hex>...]`, the v1 tags being HMAC-SHA256 of
//! `{t}.{body}` under the secret's raw bytes (Stripe's `whsec_...` string is used as-is, not
//! base64-decoded).
//!
//! Keys other than `t` and `v1` (Stripe's test-mode `v0`, or future ones) are ignored. During a
//! secret rotation the sender puts one `v1` per secret; any of them matching any configured secret
//! passes.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};
use secrecy::SecretSlice;

use super::{
    Algorithm, Encoding, Rejection, VerifierError, mac, parse_timestamp, sensitive_value,
    single_header, within_tolerance,
};

/// `stripe-signature`, the header Stripe uses and the default for this scheme.
pub const DEFAULT_STRIPE_HEADER: HeaderName = HeaderName::from_static("stripe-signature");

pub(super) fn verify(
    keys: &[SecretSlice<u8>],
    tolerance: Duration,
    header: &HeaderName,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Result<(), Rejection> {
    let value = single_header(headers, header)?.ok_or(Rejection::MissingSignature)?;
    let parsed = Parsed::parse(value)?;
    let timestamp_text = parsed.timestamp.ok_or(Rejection::MissingTimestamp)?;
    let timestamp = parse_timestamp(timestamp_text)?;
    if parsed.candidates.is_empty() {
        return Err(Rejection::MalformedSignature);
    }

    let parts: [&[u8]; 3] = [timestamp_text.as_bytes(), b".", body];
    if !mac::any_matches(Algorithm::Sha256, keys, &parts, &parsed.candidates) {
        return Err(Rejection::BadSignature);
    }
    if !within_tolerance(timestamp, now, tolerance) {
        return Err(Rejection::StaleTimestamp);
    }
    Ok(())
}

/// The header's `t` (as text: the signed content uses it verbatim) and decoded `v1` tags.
struct Parsed<'a> {
    timestamp: Option<&'a str>,
    candidates: Vec<Vec<u8>>,
}

impl<'a> Parsed<'a> {
    /// Every comma-separated item must be `key=value`; `t` at most once; each `v1` 32 bytes of
    /// hex.
    fn parse(header: &'a str) -> Result<Self, Rejection> {
        let mut parsed = Self {
            timestamp: None,
            candidates: Vec::new(),
        };
        for item in header.split(',') {
            let (key, value) = item
                .trim_matches(|c: char| c == ' ' || c == '\t')
                .split_once('=')
                .ok_or(Rejection::MalformedSignature)?;
            match key {
                "t" if parsed.timestamp.is_some() => return Err(Rejection::MalformedSignature),
                "t" => parsed.timestamp = Some(value),
                "v1" => parsed.candidates.push(
                    mac::decode_tag(Algorithm::Sha256, Encoding::Hex, value)
                        .ok_or(Rejection::MalformedSignature)?,
                ),
                _ => {}
            }
        }
        Ok(parsed)
    }
}

pub(super) fn sign(
    key: &[u8],
    header: &HeaderName,
    body: &[u8],
    timestamp: u64,
) -> Result<Vec<(HeaderName, HeaderValue)>, VerifierError> {
    let timestamp = timestamp.to_string();
    let tag = mac::tag(Algorithm::Sha256, key, &[timestamp.as_bytes(), b".", body]);
    let value = format!("t={timestamp},v1={}", mac::encode_hex(&tag));
    Ok(vec![sensitive_value(header.clone(), value)?])
}
