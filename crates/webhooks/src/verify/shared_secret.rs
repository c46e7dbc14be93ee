//! `shared-secret`: the sender puts the secret itself in a header. Weak (the secret travels with
//! every request, and nothing binds the body), but some senders offer nothing else.
//!
//! Both sides are hashed with SHA-256 before the constant-time comparison, so that neither the
//! comparison's time nor its early length check reveals the secret's length.

use http::{HeaderMap, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use super::{Rejection, VerifierError, sensitive_value, single_header};

pub(super) fn verify(
    keys: &[SecretSlice<u8>],
    header: &HeaderName,
    headers: &HeaderMap,
) -> Result<(), Rejection> {
    let value = single_header(headers, header)?.ok_or(Rejection::MissingSignature)?;
    let received = Sha256::digest(value.as_bytes());
    let mut matched = Choice::from(0);
    for key in keys {
        let expected = Sha256::digest(key.expose_secret());
        matched |= expected.as_slice().ct_eq(received.as_slice());
    }
    if bool::from(matched) {
        Ok(())
    } else {
        Err(Rejection::BadSignature)
    }
}

pub(super) fn sign(
    key: &[u8],
    header: &HeaderName,
) -> Result<Vec<(HeaderName, HeaderValue)>, VerifierError> {
    let text = String::from_utf8_lossy(key).into_owned();
    Ok(vec![sensitive_value(header.clone(), text)?])
}

/// A shared secret must be able to arrive as a header value as the verifier reads it (visible
/// ASCII, trimmed), or it could never match.
pub(super) fn check_secret(text: &str, position: usize) -> Result<SecretSlice<u8>, VerifierError> {
    if text.is_empty() {
        return Err(VerifierError::EmptySecret { position });
    }
    let visible = text
        .bytes()
        .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic());
    let trimmed = text.trim_matches(|c: char| c == ' ' || c == '\t').len() == text.len();
    if visible && trimmed {
        Ok(SecretSlice::from(text.as_bytes().to_vec()))
    } else {
        Err(VerifierError::SecretNotHeaderValue { position })
    }
}
