//! The HMAC primitives every scheme shares: computing a tag, comparing it in constant time against
//! every secret and candidate, and the hex and base64 codecs for tags.

use ::hmac::digest::KeyInit;
use ::hmac::{Hmac, Mac};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretSlice};
use sha2::{Sha256, Sha512};
use subtle::{Choice, ConstantTimeEq};

use super::Algorithm;

// === impl Algorithm ===

impl Algorithm {
    /// The tag length in bytes.
    pub(super) const fn tag_len(self) -> usize {
        match self {
            Self::Sha256 => 32,
            Self::Sha512 => 64,
        }
    }
}

/// The HMAC of the concatenation of `parts` under `key`.
pub(super) fn tag(algorithm: Algorithm, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    match algorithm {
        Algorithm::Sha256 => tag_with::<Hmac<Sha256>>(key, parts),
        Algorithm::Sha512 => tag_with::<Hmac<Sha512>>(key, parts),
    }
}

/// Whether any key's HMAC over `parts` equals any of `candidates`.
///
/// Every key and every candidate is compared, in constant time, whatever matched first: the time
/// taken depends on how many there are, never on which one matched. Candidates must already have
/// the algorithm's tag length (the parsers check), so the comparison itself has nothing to leak.
pub(super) fn any_matches(
    algorithm: Algorithm,
    keys: &[SecretSlice<u8>],
    parts: &[&[u8]],
    candidates: &[Vec<u8>],
) -> bool {
    let mut matched = Choice::from(0);
    for key in keys {
        let tag = tag(algorithm, key.expose_secret(), parts);
        for candidate in candidates {
            matched |= tag.as_slice().ct_eq(candidate.as_slice());
        }
    }
    matched.into()
}

fn tag_with<M: Mac + KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC takes keys of any length (long ones are hashed first), so this never fails. Should it
    // ever, an empty tag matches no candidate (they all have the full tag length).
    let Ok(mut mac) = <M as KeyInit>::new_from_slice(key) else {
        return Vec::new();
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Lower-case hex.
pub(crate) fn encode_hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// Hex of either case; `None` for an odd length or a non-hex character.
pub(super) fn decode_hex(text: &str) -> Option<Vec<u8>> {
    hex::decode(text).ok()
}

/// Standard base64 with padding.
pub(super) fn encode_base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Standard base64 with padding; `None` if it does not decode.
pub(super) fn decode_base64(text: &str) -> Option<Vec<u8>> {
    STANDARD.decode(text).ok()
}

/// Decodes a received tag, which must have exactly `algorithm`'s length.
pub(super) fn decode_tag(
    algorithm: Algorithm,
    encoding: super::Encoding,
    text: &str,
) -> Option<Vec<u8>> {
    let bytes = match encoding {
        super::Encoding::Hex => decode_hex(text)?,
        super::Encoding::Base64 => decode_base64(text)?,
    };
    (bytes.len() == algorithm.tag_len()).then_some(bytes)
}

/// Encodes a tag for a header.
pub(super) fn encode_tag(encoding: super::Encoding, tag: &[u8]) -> String {
    match encoding {
        super::Encoding::Hex => encode_hex(tag),
        super::Encoding::Base64 => encode_base64(tag),
    }
}
