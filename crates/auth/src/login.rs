//! FinCode's auth calls: login (RSA-OAEP encrypted password), refresh (single-use
//! refresh tokens) and logout. Bodies and responses are parsed here and nowhere else.

use std::{
    fmt,
    time::{Duration, SystemTime},
};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use rsa::{Oaep, RsaPublicKey};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

use crate::{AuthFailure, AuthRequest, Transport, jwt};

/// What login needs, read once from config and environment.
pub(crate) struct LoginSettings {
    pub(crate) email: SecretString,
    pub(crate) password: SecretString,
    pub(crate) public_key: RsaPublicKey,
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
            .map_err(|e| AuthFailure::Unreachable(e.0))?;
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
            .map_err(|e| RefreshError::Failed(AuthFailure::Unreachable(e.0)))?;
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

    /// RSA/ECB/OAEP with SHA-256 and MGF1-SHA-256, base64: what FinCode's docs describe.
    fn encrypt_password(&self) -> Result<String, AuthFailure> {
        let ciphertext = self
            .public_key
            .encrypt(
                &mut rand::rngs::OsRng,
                Oaep::new::<Sha256>(),
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
