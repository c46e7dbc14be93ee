//! `hmac`: a bare HMAC of the raw body in one header, as most webhook senders do it
//! (`X-Hub-Signature-256: sha256=<hex>`, `X-Shopify-Hmac-Sha256: <base64>`).
//!
//! There is no timestamp, so nothing here stops a replay: deduplication on `Reference` does that
//! for FinCode events.

use http::{HeaderMap, HeaderName, HeaderValue};
use secrecy::SecretSlice;

use super::{Algorithm, Encoding, Rejection, VerifierError, mac, sensitive_value, single_header};

pub(super) fn verify(
    keys: &[SecretSlice<u8>],
    algorithm: Algorithm,
    encoding: Encoding,
    header: &HeaderName,
    prefix: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), Rejection> {
    let value = single_header(headers, header)?.ok_or(Rejection::MissingSignature)?;
    let encoded = value
        .strip_prefix(prefix)
        .ok_or(Rejection::MalformedSignature)?;
    let candidate =
        mac::decode_tag(algorithm, encoding, encoded).ok_or(Rejection::MalformedSignature)?;
    if mac::any_matches(algorithm, keys, &[body], &[candidate]) {
        Ok(())
    } else {
        Err(Rejection::BadSignature)
    }
}

pub(super) fn sign(
    key: &[u8],
    algorithm: Algorithm,
    encoding: Encoding,
    header: &HeaderName,
    prefix: &str,
    body: &[u8],
) -> Result<Vec<(HeaderName, HeaderValue)>, VerifierError> {
    let tag = mac::tag(algorithm, key, &[body]);
    let text = format!("{prefix}{}", mac::encode_tag(encoding, &tag));
    Ok(vec![sensitive_value(header.clone(), text)?])
}

/// A prefix must be something a header can carry and that survives the verifier's trimming.
pub(super) fn check_prefix(prefix: &str) -> Result<(), VerifierError> {
    if prefix.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(VerifierError::InvalidPrefix)
    }
}
