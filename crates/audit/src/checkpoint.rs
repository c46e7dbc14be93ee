//! Signed checkpoints: the chain's head (segment, seq, the hash of that line, the time),
//! signed with Ed25519, so that a consistent rewrite of the tail (every hash recomputed)
//! or a cut-off tail shows against a signature the attacker cannot make.
//!
//! The signed message is a fixed text, not JSON, so that any implementation can rebuild
//! it byte for byte: `fincode-audit-checkpoint v1\nsegment={segment}\nseq={seq}\nhead={head}\ntime_ms={time_ms}`.

use base64::Engine as _;
use ring::signature::{self, Ed25519KeyPair, KeyPair as _};

/// The head of the chain at a moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The segment holding the line.
    pub segment: u64,
    /// The seq of the line.
    pub seq: u64,
    /// The hex SHA-256 of that line's bytes.
    pub head: String,
    /// When, in milliseconds since the Unix epoch (UTC).
    pub time_ms: u64,
}

impl Checkpoint {
    /// The bytes that are signed.
    pub fn message(&self) -> Vec<u8> {
        format!(
            "fincode-audit-checkpoint v1\nsegment={}\nseq={}\nhead={}\ntime_ms={}",
            self.segment, self.seq, self.head, self.time_ms
        )
        .into_bytes()
    }
}

/// Why a signing key cannot be used. Never contains the key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Not Base64 of a 32-byte Ed25519 seed.
    #[error(
        "the audit signing key is not Base64 of a 32-byte Ed25519 seed; make one with `openssl rand -base64 32`"
    )]
    Malformed,
}

/// Signs checkpoints. The private key lives only here.
pub struct Signer {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("public_key", &self.public_key_base64())
            .finish_non_exhaustive()
    }
}

// === impl Signer ===

impl Signer {
    /// From Base64 of a 32-byte Ed25519 seed (the value of `audit.signing_key_env`).
    pub fn from_base64_seed(text: &str) -> Result<Self, KeyError> {
        let seed = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| KeyError::Malformed)?;
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed).map_err(|_| KeyError::Malformed)?;
        Ok(Self { pair })
    }

    /// Base64 of the Ed25519 signature of `checkpoint`'s message.
    pub fn sign(&self, checkpoint: &Checkpoint) -> String {
        base64::engine::general_purpose::STANDARD
            .encode(self.pair.sign(&checkpoint.message()).as_ref())
    }

    /// The raw 32-byte public key, Base64: what verifiers are given.
    pub fn public_key_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.pair.public_key().as_ref())
    }

    /// The public key as a PEM SubjectPublicKeyInfo, for openssl and other tools.
    pub fn public_key_pem(&self) -> String {
        public_key_pem(self.pair.public_key().as_ref())
    }
}

/// PEM SPKI of a raw Ed25519 public key (RFC 8410: the algorithm id, then the 32 bytes).
pub fn public_key_pem(raw: &[u8]) -> String {
    const SPKI_PREFIX: [u8; 12] = [
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    let mut der = SPKI_PREFIX.to_vec();
    der.extend_from_slice(raw);
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(der)
    )
}

/// Whether `signature_base64` is a valid signature of `checkpoint` by `public_key_base64`
/// (raw 32 bytes, Base64).
pub fn verify_signature(
    public_key_base64: &str,
    checkpoint: &Checkpoint,
    signature_base64: &str,
) -> bool {
    let engine = base64::engine::general_purpose::STANDARD;
    let (Ok(key), Ok(sig)) = (
        engine.decode(public_key_base64.trim()),
        engine.decode(signature_base64.trim()),
    ) else {
        return false;
    };
    signature::UnparsedPublicKey::new(&signature::ED25519, key)
        .verify(&checkpoint.message(), &sig)
        .is_ok()
}
