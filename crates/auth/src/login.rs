//! FinCode's auth calls: login (RSA-OAEP encrypted password), refresh (single-use
//! refresh tokens) and logout. Bodies and responses are parsed here and nowhere else.

use std::{
    fmt,
    time::{Duration, SystemTime},
};

use base64::Engine as _;
use bytes::Bytes;
use fincode_config::OaepMgf1;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use rsa::{Oaep, RsaPublicKey, pkcs1::DecodeRsaPublicKey, pkcs8::DecodePublicKey};
use secrecy::{ExposeSecret, SecretString};
use sha1::Sha1;
use sha2::Sha256;

use crate::{AuthFailure, AuthRequest, Transport, jwt};

/// What login needs, read once from config and environment.
pub(crate) struct LoginSettings {
    pub(crate) email: SecretString,
    pub(crate) password: SecretString,
    pub(crate) public_key: RsaPublicKey,
    /// MGF1's hash inside the password's RSA-OAEP; see [`OaepMgf1`] for why SHA-1 by default.
    pub(crate) oaep_mgf1: OaepMgf1,
    pub(crate) login_path: String,
    pub(crate) refresh_path: String,
    pub(crate) logout_path: String,
    pub(crate) token_header: HeaderName,
    /// `platform`, `uuid` and friends: sent on auth calls too.
    pub(crate) headers: HeaderMap,
    pub(crate) fallback_lifetime: Duration,
}

impl fmt::Debug for LoginSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginSettings")
            .field("login_path", &self.login_path)
            .field("refresh_path", &self.refresh_path)
            .field("oaep_mgf1", &self.oaep_mgf1)
            .finish_non_exhaustive()
    }
}

/// A token pair FinCode issued.
pub(crate) struct Issued {
    pub(crate) access: SecretString,
    pub(crate) refresh: Option<SecretString>,
    pub(crate) lifetime: Duration,
}

/// Why a refresh did not produce a token.
pub(crate) enum RefreshError {
    /// The refresh token was used already (403) or is unknown/expired (401): log in again.
    Stale,
    /// Anything else; the current token (if still valid) stays in use.
    Failed(AuthFailure),
}

// === impl LoginSettings ===

impl LoginSettings {
    /// `PUT login` with the password encrypted for the tenant's key.
    pub(crate) async fn login(&self, transport: &dyn Transport) -> Result<Issued, AuthFailure> {
        let encrypted = self.encrypt_password()?;
        let body = serde_json::json!({
            "email": self.email.expose_secret(),
            "currentPassword": encrypted,
        });
        let response = transport
            .send(self.request(&self.login_path, &body, None))
            .await
            .map_err(AuthFailure::Unreachable)?;
        match response.status {
            StatusCode::OK => self.parse_issued(&response.body),
            StatusCode::UNAUTHORIZED => Err(AuthFailure::BadCredentials),
            StatusCode::FORBIDDEN => Err(AuthFailure::Locked),
            StatusCode::NOT_FOUND => Err(AuthFailure::UnknownUser),
            status => Err(AuthFailure::Unexpected(status.as_u16())),
        }
    }

    /// `PUT refresh-token` with the single-use refresh token.
    pub(crate) async fn refresh(
        &self,
        transport: &dyn Transport,
        refresh_token: &SecretString,
    ) -> Result<Issued, RefreshError> {
        let body = serde_json::json!({ "refresh_token": refresh_token.expose_secret() });
        let response = transport
            .send(self.request(&self.refresh_path, &body, None))
            .await
            .map_err(|e| RefreshError::Failed(AuthFailure::Unreachable(e)))?;
        match response.status {
            StatusCode::OK => self
                .parse_issued(&response.body)
                .map_err(RefreshError::Failed),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(RefreshError::Stale),
            status => Err(RefreshError::Failed(AuthFailure::Unexpected(
                status.as_u16(),
            ))),
        }
    }

    /// `PUT logout`, revoking the access token and its refresh token.
    pub(crate) async fn logout(&self, transport: &dyn Transport, access: &SecretString) -> bool {
        let request = self.request(&self.logout_path, &serde_json::json!({}), Some(access));
        matches!(transport.send(request).await, Ok(r) if r.status.is_success())
    }

    fn request(
        &self,
        path: &str,
        body: &serde_json::Value,
        access: Option<&SecretString>,
    ) -> AuthRequest {
        let mut headers = self.headers.clone();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(mut value) = access.and_then(|a| HeaderValue::from_str(a.expose_secret()).ok())
        {
            value.set_sensitive(true);
            headers.insert(self.token_header.clone(), value);
        }
        AuthRequest {
            method: Method::PUT,
            path: path.to_owned(),
            headers,
            body: Bytes::from(body.to_string()),
        }
    }

    /// RSA-OAEP with SHA-256 as the digest and MGF1 over `oaep_mgf1`, base64. FinCode's guide
    /// encrypts with Java's `RSA/ECB/OAEPWithSHA-256AndMGF1Padding` and no parameter spec, which
    /// Java's default provider runs with MGF1-SHA1; its server decrypts the same way, so
    /// MGF1-SHA256 (most libraries' default, `Oaep::new::<Sha256>()`) fails there with 401.
    fn encrypt_password(&self) -> Result<String, AuthFailure> {
        let padding = match self.oaep_mgf1 {
            OaepMgf1::Sha1 => Oaep::new_with_mgf_hash::<Sha256, Sha1>(),
            OaepMgf1::Sha256 => Oaep::new::<Sha256>(),
        };
        let ciphertext = self
            .public_key
            .encrypt(
                &mut rand::rngs::OsRng,
                padding,
                self.password.expose_secret().as_bytes(),
            )
            .map_err(|_| {
                AuthFailure::Config(
                    "the password is too long for the tenant public key (RSA-OAEP)".to_owned(),
                )
            })?;
        Ok(base64::engine::general_purpose::STANDARD.encode(ciphertext))
    }

    /// Accepts the common spellings (`token`/`accessToken`/`access_token`...): FinCode's
    /// public docs are not consistent, and a rename should not take payments down.
    fn parse_issued(&self, body: &[u8]) -> Result<Issued, AuthFailure> {
        let json: serde_json::Value = serde_json::from_slice(body)
            .map_err(|_| AuthFailure::BadResponse("the response is not JSON"))?;
        let data = json.get("data").unwrap_or(&json);
        let pick = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| data.get(*n).and_then(serde_json::Value::as_str))
                .map(|s| SecretString::from(s.to_owned()))
        };
        let access = pick(&["token", "accessToken", "access_token", "authToken"])
            .ok_or(AuthFailure::BadResponse("no access token in the response"))?;
        let refresh = pick(&["refresh_token", "refreshToken"]);
        let lifetime = jwt::remaining_lifetime(access.expose_secret(), SystemTime::now())
            .or_else(|| {
                ["expires_in", "expiresIn"]
                    .iter()
                    .find_map(|n| data.get(*n).and_then(serde_json::Value::as_u64))
                    .map(Duration::from_secs)
            })
            .unwrap_or(self.fallback_lifetime);
        Ok(Issued {
            access,
            refresh,
            lifetime,
        })
    }
}

/// Reads the tenant public key in the forms operators hold it: the bare Base64 of the DER
/// SubjectPublicKeyInfo that FinCode's dashboard shows (line breaks and blanks from a copy and
/// paste are fine), or PEM, SPKI (`PUBLIC KEY`) or PKCS#1 (`RSA PUBLIC KEY`). `None` if it is
/// none of them; the caller names the config key.
pub(crate) fn parse_public_key(text: &str) -> Option<RsaPublicKey> {
    let text = text.trim();
    if text.starts_with("-----BEGIN") {
        return RsaPublicKey::from_public_key_pem(text)
            .or_else(|_| RsaPublicKey::from_pkcs1_pem(text))
            .ok();
    }
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .ok()?;
    // SPKI is what the dashboard gives; the bare PKCS#1 body costs nothing to accept too.
    RsaPublicKey::from_public_key_der(&der)
        .or_else(|_| RsaPublicKey::from_pkcs1_der(&der))
        .ok()
}
