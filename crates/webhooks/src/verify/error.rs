//! Why a delivery was rejected, and why a verifier could not be built.

/// Why a delivery failed verification.
///
/// The listener answers all of them with the same 401 and no detail; the variant is for metrics
/// ([`Rejection::as_str`]) and the audit record, and its `Display` is for an operator debugging a
/// signature with the CLI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The signature header is absent.
    #[error("missing signature: the signature header is absent")]
    MissingSignature,
    /// A signature, timestamp or id header is present but does not parse for this scheme.
    #[error(
        "malformed signature: a signature, timestamp or id header does not parse for this scheme"
    )]
    MalformedSignature,
    /// The signature parses but no configured secret produced it over this body.
    #[error("bad signature: no secret matches the signature over the body")]
    BadSignature,
    /// The scheme signs a timestamp and none was sent.
    #[error("missing timestamp: the scheme signs a timestamp and none was sent")]
    MissingTimestamp,
    /// The signature is valid but its timestamp is outside the tolerance (late, replayed, or a
    /// skewed clock).
    #[error("stale timestamp: the signed timestamp is outside the tolerance")]
    StaleTimestamp,
}

// === impl Rejection ===

impl Rejection {
    /// Every rejection, so metrics can register each label up front.
    pub const ALL: [Self; 5] = [
        Self::MissingSignature,
        Self::MalformedSignature,
        Self::BadSignature,
        Self::MissingTimestamp,
        Self::StaleTimestamp,
    ];

    /// A stable metric label: `missing_signature`, `malformed_signature`, `bad_signature`,
    /// `missing_timestamp` or `stale_timestamp`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::MissingSignature => "missing_signature",
            Self::MalformedSignature => "malformed_signature",
            Self::BadSignature => "bad_signature",
            Self::MissingTimestamp => "missing_timestamp",
            Self::StaleTimestamp => "stale_timestamp",
        }
    }
}

/// Why a [`Verifier`](super::Verifier) could not be built or a body could not be signed.
///
/// Messages name a secret by its 1-based position in the configured list, never by its value.
#[derive(Debug, thiserror::Error)]
pub enum VerifierError {
    /// No secret was configured for a scheme that needs one.
    #[error("the {scheme} scheme needs at least one secret")]
    NoSecrets {
        /// The scheme's configuration name.
        scheme: &'static str,
    },
    /// A secret is the empty string.
    #[error("secret #{position} is empty")]
    EmptySecret {
        /// 1-based position in the configured list.
        position: usize,
    },
    /// A Standard Webhooks secret is not `whsec_` followed by non-empty standard base64.
    #[error(
        "secret #{position} is not a Standard Webhooks secret: expected \"whsec_\" followed by \
         non-empty standard base64"
    )]
    NotStandardWebhooksSecret {
        /// 1-based position in the configured list.
        position: usize,
    },
    /// A shared secret could never arrive in an HTTP header (it must be visible ASCII, without
    /// leading or trailing spaces).
    #[error(
        "secret #{position} cannot be sent as an HTTP header value: use visible ASCII without \
         leading or trailing spaces"
    )]
    SecretNotHeaderValue {
        /// 1-based position in the configured list.
        position: usize,
    },
    /// The HMAC prefix is not visible ASCII, so no header could carry it.
    #[error("the signature prefix must be visible ASCII without spaces")]
    InvalidPrefix,
    /// The Standard Webhooks message id is empty or not visible ASCII.
    #[error("the message id must be non-empty visible ASCII without spaces")]
    InvalidMessageId,
    /// A computed header value is not a valid HTTP header value (its value is not shown).
    #[error("the value computed for header {header} is not a valid HTTP header value")]
    InvalidHeaderValue {
        /// The header's name.
        header: String,
    },
    /// The clock reads before 1970, so no unix timestamp can be signed.
    #[error("the clock reads before the unix epoch")]
    ClockBeforeEpoch,
}
