#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! FinCode credentials for the egress proxy.
//!
//! The sidecar owns credentials: the app never sees or sends them. Today this crate
//! knows two modes, chosen by `auth.mode`:
//!
//! - `none`: inject nothing; the app's own credential headers pass through. Only for
//!   setups where another component owns credentials; `check` warns about it.
//! - `static`: a long-lived dashboard API token read once from the environment
//!   variable named by `auth.token_env`.
//!
//! The token is held as a [`SecretString`] so that it is zeroized on drop and its
//! `Debug` prints `[REDACTED]`; it is only exposed at the moment a request header is
//! built, and that header is marked sensitive so HTTP/2 never indexes it in HPACK.

use fincode_config::{AuthConfig, AuthMode, Env};
use http::{HeaderMap, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};

/// Headers that carry a credential and that the app must never be able to set
/// on its own when the sidecar owns credentials.
const CREDENTIAL_HEADERS: [&str; 3] = ["x-auth-token", "authorization", "proxy-authorization"];

/// Why credentials could not be built. Never contains a secret value.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The environment variable named in the config is missing or empty.
    #[error(
        "environment variable {var} (named by {key}) is not set; export it with the FinCode API token"
    )]
    MissingEnv {
        /// The variable's name (not its value).
        var: String,
        /// The config key that names it.
        key: &'static str,
    },
    /// The token cannot be sent as an HTTP header value.
    #[error(
        "the value of environment variable {var} is not a valid HTTP header value (control characters or non-ASCII); check for a stray newline"
    )]
    InvalidToken {
        /// The variable's name (not its value).
        var: String,
    },
}

/// The credentials the egress proxy puts on every upstream request.
#[derive(Debug, Clone)]
pub struct Credentials {
    header: HeaderName,
    token: Option<SecretString>,
    extra_headers: Vec<(HeaderName, HeaderValue)>,
}

// === impl Credentials ===

impl Credentials {
    /// Builds credentials from the `[auth]` section, reading secrets from `env`.
    pub fn from_config(config: &AuthConfig, env: &Env) -> Result<Self, AuthError> {
        let token = match config.mode {
            AuthMode::None => None,
            AuthMode::Static => {
                let var = config.token_env.clone().unwrap_or_default();
                let value = env.get(&var).filter(|v| !v.is_empty()).ok_or_else(|| {
                    AuthError::MissingEnv {
                        var: var.clone(),
                        key: "auth.token_env",
                    }
                })?;
                // Validate once here so that building the header per request cannot fail.
                if HeaderValue::from_str(value).is_err() {
                    return Err(AuthError::InvalidToken { var });
                }
                Some(SecretString::from(value.to_owned()))
            }
        };
        let extra_headers = config
            .extra_headers
            .iter()
            .filter_map(|(name, value)| {
                // The config crate validated these; skipping keeps this infallible.
                Some((
                    HeaderName::from_bytes(name.as_bytes()).ok()?,
                    HeaderValue::from_str(value).ok()?,
                ))
            })
            .collect();
        Ok(Self {
            header: config.header.clone(),
            token,
            extra_headers,
        })
    }

    /// Credentials that inject nothing (tests and `auth.mode = "none"`).
    pub fn none() -> Self {
        Self {
            header: HeaderName::from_static("x-auth-token"),
            token: None,
            extra_headers: Vec::new(),
        }
    }

    /// Whether the sidecar owns credentials (and so strips the app's).
    pub fn is_injecting(&self) -> bool {
        self.token.is_some()
    }

    /// Puts our credentials on an outgoing request, replacing any the app sent.
    pub fn apply(&self, headers: &mut HeaderMap) {
        if let Some(token) = &self.token {
            for name in CREDENTIAL_HEADERS {
                headers.remove(name);
            }
            headers.remove(&self.header);
            if let Ok(mut value) = HeaderValue::from_str(token.expose_secret()) {
                value.set_sensitive(true);
                headers.insert(self.header.clone(), value);
            }
        }
        for (name, value) in &self.extra_headers {
            headers.insert(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests;
