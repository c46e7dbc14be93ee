//! Access, refresh and static API tokens, issued and checked the way FinCode does.
//!
//! Access tokens are real HS256 JWTs so a client that peeks at `exp` sees a sensible value, but
//! validity is decided by the server-side record (keyed by `jti`), which is what lets the admin
//! API revoke or expire them on demand.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac as _};
use rand::RngCore as _;
use sha2::Sha256;

use crate::lock;

type HmacSha256 = Hmac<Sha256>;

/// A freshly issued access/refresh pair.
#[derive(Debug, Clone)]
pub(crate) struct IssuedPair {
    pub(crate) token: String,
    pub(crate) refresh_token: String,
    pub(crate) expires_in: u64,
}

/// Why a refresh was refused; FinCode distinguishes reuse (403) from everything else (401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefreshError {
    AlreadyUsed,
    Invalid,
}

/// Lifetimes applied to tokens issued from now on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lifetimes {
    pub(crate) access: Duration,
    pub(crate) refresh: Duration,
}

#[derive(Debug)]
struct AccessRecord {
    expires_at: SystemTime,
    revoked: bool,
    refresh_token: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RefreshState {
    Fresh,
    Used,
    Revoked,
}

#[derive(Debug)]
struct RefreshRecord {
    email: String,
    expires_at: SystemTime,
    state: RefreshState,
}

#[derive(Debug, Default)]
struct Store {
    access: HashMap<String, AccessRecord>,
    refresh: HashMap<String, RefreshRecord>,
    /// Static API tokens: `None` never expires (configured), `Some` was minted with a lifetime.
    statics: HashMap<String, Option<SystemTime>>,
}

/// Issues and validates every kind of token the sandbox accepts.
pub(crate) struct Tokens {
    /// Per-process HMAC key: tokens from an earlier run are (correctly) invalid after restart.
    key: [u8; 32],
    lifetimes: Mutex<Lifetimes>,
    store: Mutex<Store>,
}

// === impl Tokens ===

impl Tokens {
    pub(crate) fn new(lifetimes: Lifetimes, static_tokens: &[String]) -> Self {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        let store = Store {
            statics: static_tokens.iter().map(|t| (t.clone(), None)).collect(),
            ..Store::default()
        };
        Self {
            key,
            lifetimes: Mutex::new(lifetimes),
            store: Mutex::new(store),
        }
    }

    pub(crate) fn set_lifetimes(&self, access: Option<Duration>, refresh: Option<Duration>) {
        let mut lifetimes = lock(&self.lifetimes);
        if let Some(access) = access {
            lifetimes.access = access;
        }
        if let Some(refresh) = refresh {
            lifetimes.refresh = refresh;
        }
    }

    /// Issues a new access token and a new single-use refresh token for `email`.
    pub(crate) fn issue_pair(&self, email: &str) -> IssuedPair {
        let lifetimes = *lock(&self.lifetimes);
        let now = SystemTime::now();
        let (token, jti) = self.sign_jwt(email, now, lifetimes.access);
        let refresh_token = random_token();
        let mut store = lock(&self.store);
        store.access.insert(
            jti,
            AccessRecord {
                expires_at: now + lifetimes.access,
                revoked: false,
                refresh_token: Some(refresh_token.clone()),
            },
        );
        store.refresh.insert(
            refresh_token.clone(),
            RefreshRecord {
                email: email.to_owned(),
                expires_at: now + lifetimes.refresh,
                state: RefreshState::Fresh,
            },
        );
        IssuedPair {
            token,
            refresh_token,
            expires_in: lifetimes.access.as_secs(),
        }
    }

    /// Consumes `refresh_token` and issues a new pair; the old access token stays valid.
    pub(crate) fn refresh(&self, refresh_token: &str) -> Result<IssuedPair, RefreshError> {
        let email = {
            let mut store = lock(&self.store);
            let record = store
                .refresh
                .get_mut(refresh_token)
                .ok_or(RefreshError::Invalid)?;
            match record.state {
                RefreshState::Used => return Err(RefreshError::AlreadyUsed),
                RefreshState::Revoked => return Err(RefreshError::Invalid),
                RefreshState::Fresh if SystemTime::now() >= record.expires_at => {
                    return Err(RefreshError::Invalid);
                }
                RefreshState::Fresh => {}
            }
            record.state = RefreshState::Used;
            record.email.clone()
        };
        Ok(self.issue_pair(&email))
    }

    /// Whether `token` is a static token or a JWT we issued that is unexpired and unrevoked.
    pub(crate) fn is_valid(&self, token: &str) -> bool {
        let now = SystemTime::now();
        {
            let store = lock(&self.store);
            if let Some(expiry) = store.statics.get(token) {
                return expiry.is_none_or(|at| now < at);
            }
        }
        let Some(jti) = self.verified_jti(token) else {
            return false;
        };
        let store = lock(&self.store);
        store
            .access
            .get(&jti)
            .is_some_and(|r| !r.revoked && now < r.expires_at)
    }

    /// Revokes a valid access token and its refresh token; `false` if `token` was not valid.
    pub(crate) fn logout(&self, token: &str) -> bool {
        if !self.is_valid(token) {
            return false;
        }
        let mut store = lock(&self.store);
        if store.statics.remove(token).is_some() {
            return true;
        }
        let Some(jti) = self.verified_jti(token) else {
            return false;
        };
        let refresh = store.access.get_mut(&jti).and_then(|record| {
            record.revoked = true;
            record.refresh_token.take()
        });
        if let Some(record) = refresh.and_then(|r| store.refresh.get_mut(&r)) {
            record.state = RefreshState::Revoked;
        }
        true
    }

    /// Mints a long-lived static API token (a JWT with `sub` = "static-api-token").
    pub(crate) fn mint_static(&self, lifetime: Duration) -> String {
        let now = SystemTime::now();
        let (token, _jti) = self.sign_jwt("static-api-token", now, lifetime);
        lock(&self.store)
            .statics
            .insert(token.clone(), Some(now + lifetime));
        token
    }

    /// Expires every login-issued access token now. Static tokens are untouched: they model
    /// dashboard tokens, which FinCode does not expire behind the merchant's back.
    pub(crate) fn expire_access_tokens(&self) {
        let now = SystemTime::now();
        for record in lock(&self.store).access.values_mut() {
            record.expires_at = record.expires_at.min(now);
        }
    }

    /// Marks every fresh refresh token as used, as if another client (a second replica
    /// sharing the account) had used it first: the next refresh gets 403 "Token Already Used".
    pub(crate) fn consume_refresh_tokens(&self) {
        for record in lock(&self.store).refresh.values_mut() {
            if matches!(record.state, RefreshState::Fresh) {
                record.state = RefreshState::Used;
            }
        }
    }

    fn sign_jwt(&self, subject: &str, now: SystemTime, lifetime: Duration) -> (String, String) {
        let iat = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let jti = uuid::Uuid::now_v7().to_string();
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let claims = serde_json::json!({
            "sub": subject,
            "iat": iat,
            "exp": iat.saturating_add(lifetime.as_secs()),
            "jti": jti,
        });
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signing_input = format!("{header}.{claims}");
        let signature = URL_SAFE_NO_PAD.encode(self.mac(signing_input.as_bytes()));
        (format!("{signing_input}.{signature}"), jti)
    }

    /// Checks the signature and returns the `jti` claim.
    fn verified_jti(&self, token: &str) -> Option<String> {
        let (signing_input, signature) = token.rsplit_once('.')?;
        let (_header, claims) = signing_input.split_once('.')?;
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        let mut mac = HmacSha256::new_from_slice(&self.key).ok()?;
        mac.update(signing_input.as_bytes());
        mac.verify_slice(&signature).ok()?;
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).ok()?).ok()?;
        claims.get("jti")?.as_str().map(str::to_owned)
    }

    fn mac(&self, input: &[u8]) -> Vec<u8> {
        // HMAC accepts keys of any length, so this cannot fail for our 32-byte key.
        let mut mac = HmacSha256::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(input);
        mac.finalize().into_bytes().to_vec()
    }
}

/// 32 random bytes, base64url: an opaque refresh token.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}
