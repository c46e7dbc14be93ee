//! Reads a JWT's `exp` claim, without verifying the signature.
//!
//! The sidecar is not the audience of the token: FinCode verifies it. We only need to
//! know when it expires so we can refresh ahead of time; a token whose claims cannot be
//! read falls back to `auth.token_lifetime`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;

/// How long until the token's `exp`, if it has a readable one in the future.
pub(crate) fn remaining_lifetime(token: &str, now: SystemTime) -> Option<Duration> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_u64()?;
    let exp = UNIX_EPOCH + Duration::from_secs(exp);
    exp.duration_since(now).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(claims: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", b64(r#"{"alg":"HS256"}"#), b64(claims))
    }

    #[test]
    fn reads_exp() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let t = token(r#"{"sub":"a","exp":4600}"#);
        assert_eq!(remaining_lifetime(&t, now), Some(Duration::from_hours(1)));
    }

    #[test]
    fn expired_missing_or_garbage_gives_none() {
        let now = UNIX_EPOCH + Duration::from_secs(10_000);
        assert_eq!(remaining_lifetime(&token(r#"{"exp":5}"#), now), None);
        assert_eq!(remaining_lifetime(&token(r#"{"sub":"x"}"#), now), None);
        assert_eq!(remaining_lifetime("opaque-token", now), None);
        assert_eq!(remaining_lifetime("a.!!!.c", now), None);
        assert_eq!(remaining_lifetime(&token(r#"{"exp":"soon"}"#), now), None);
    }
}
