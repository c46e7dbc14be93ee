#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! FinCode credentials for the egress proxy.
//!
//! The sidecar owns credentials: the app never sees or sends them. Three modes, chosen by
//! `auth.mode`:
//!
//! - `login`: email and password from the environment; the password is encrypted
//!   RSA-OAEP-SHA256 (MGF1-SHA1 by default, as FinCode's Java server decrypts; see
//!   `auth.oaep_mgf1`) with the tenant public key for `PUT securitymanagement/login`. The
//!   access token is refreshed ahead of expiry (read from the JWT `exp`), single-flight,
//!   with single-use refresh tokens, in a spawned task no request can cancel; a stale
//!   refresh token falls back to a fresh login; failed logins back off exponentially, and
//!   a login FinCode rejects (401/403/404) is not retried until the credentials change or
//!   `auth.login_retry_after_rejection` passes. See [`manager`](crate::manager).
//! - `static`: a long-lived dashboard API token read once from `auth.token_env`.
//! - `none`: inject nothing; the app's own credential headers pass through.
//!
//! Secrets are held as [`SecretString`]s (zeroized on drop, `Debug` prints
//! `[REDACTED]`), exposed only to build a header value that is marked sensitive (so
//! HTTP/2 never indexes it). They are never logged or persisted.

mod jwt;
mod login;
mod manager;

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use fincode_backoff::Backoff;
use fincode_config::{AuthConfig, AuthMode, Secrets};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use rsa::RsaPublicKey;
use secrecy::{ExposeSecret, SecretString};

use self::{
    login::LoginSettings,
    manager::{RenewalPolicy, TokenManager},
};

/// Headers that carry a credential; the app can never set them when the sidecar owns
/// credentials. A `static`, not a `const`: a `const` array of `HeaderName`s is built and
/// dropped at every use, and this one is read for every header of every request.
static CREDENTIAL_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-auth-token"),
    http::header::AUTHORIZATION,
    http::header::PROXY_AUTHORIZATION,
];

/// A boxed future, for the object-safe [`Transport`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An auth call to FinCode (login, refresh, logout). `Debug` shows the method, path and header
/// names, never the body (it holds the encrypted password or a refresh token).
pub struct AuthRequest {
    /// Always `PUT` for FinCode's security endpoints today.
    pub method: Method,
    /// The path below `upstream.base_url`.
    pub path: String,
    /// Headers, including sensitive ones.
    pub headers: HeaderMap,
    /// The JSON body. Holds secrets: never log it.
    pub body: Bytes,
}

/// FinCode's answer to an [`AuthRequest`]. `Debug` shows the status, never the body (it holds
/// tokens).
pub struct AuthResponse {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body (holds tokens: never log it).
    pub body: Bytes,
}

// === impl AuthRequest ===

impl fmt::Debug for AuthRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field(
                "body",
                &format_args!("[{} bytes redacted]", self.body.len()),
            )
            .finish()
    }
}

// === impl AuthResponse ===

impl fmt::Debug for AuthResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthResponse")
            .field("status", &self.status)
            .field(
                "body",
                &format_args!("[{} bytes redacted]", self.body.len()),
            )
            .finish()
    }
}

/// The request could not be completed; the message names the cause without secrets
/// (it is what `/readyz` and the logs show), and [`source`](std::error::Error::source)
/// keeps the transport's own error for code that classifies by type.
#[derive(Debug, Clone)]
pub struct TransportError {
    message: String,
    /// Shared so the error stays `Clone` (an [`AuthFailure`] is reported more than once).
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

// === impl TransportError ===

impl TransportError {
    /// A failure `message` describes, with no underlying error.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }

    /// Keeps `cause` as this error's source.
    #[must_use]
    pub fn caused_by(
        mut self,
        cause: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        self.source = Some(Arc::from(cause.into()));
        self
    }

    /// What went wrong, in words.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|cause| cause as &(dyn std::error::Error + 'static))
    }
}

/// How auth calls reach FinCode. The proxy implements it with its pooled TLS client,
/// so auth calls share the upstream's TLS settings and timeouts without this crate
/// depending on the proxy.
pub trait Transport: Send + Sync + 'static {
    /// Sends one auth call.
    fn send(&self, request: AuthRequest) -> BoxFuture<'_, Result<AuthResponse, TransportError>>;
}

/// Why no token is available. The text is the `detail` of the app's 503 `auth_failed`:
/// it names the cause and never a secret.
#[derive(Debug, Clone)]
pub enum AuthFailure {
    /// The first login has not completed yet.
    Pending,
    /// FinCode answered 401: wrong email or password.
    BadCredentials,
    /// FinCode answered 403: the account is locked.
    Locked,
    /// FinCode answered 404: no such user.
    UnknownUser,
    /// FinCode could not be reached.
    Unreachable(TransportError),
    /// FinCode answered with an unexpected status.
    Unexpected(u16),
    /// FinCode's answer could not be understood.
    BadResponse(&'static str),
    /// The sidecar's own settings cannot work.
    Config(String),
}

impl fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pending => f.write_str("the sidecar is still logging in to FinCode; retry shortly"),
            Self::BadCredentials => f.write_str(
                "FinCode rejected the sidecar's login (401: bad credentials); check the email and password variables named by auth.email_env and auth.password_env, the tenant key (auth.public_key_file or auth.public_key_env) and auth.oaep_mgf1 (FinCode decrypts with MGF1-SHA1: \"sha1\")",
            ),
            Self::Locked => f.write_str(
                "FinCode refused the sidecar's login (403: account locked); unlock the account with FinCode support",
            ),
            Self::UnknownUser => f.write_str(
                "FinCode does not know the sidecar's login email (404); check the variable named by auth.email_env",
            ),
            Self::Unreachable(why) => write!(f, "FinCode's login could not be reached: {why}"),
            Self::Unexpected(status) => write!(f, "FinCode's login answered HTTP {status}"),
            Self::BadResponse(why) => write!(f, "FinCode's login answer was not understood: {why}"),
            Self::Config(why) => f.write_str(why),
        }
    }
}

// === impl AuthFailure ===

impl AuthFailure {
    /// FinCode rejected the login itself: the `reason` label of `fincode_login_rejected`
    /// (`bad_credentials`, `locked`, `unknown_user`). Such a failure is terminal for the
    /// current credentials; anything else is transient and backs off.
    pub fn rejection_reason(&self) -> Option<&'static str> {
        match self {
            Self::BadCredentials => Some("bad_credentials"),
            Self::Locked => Some("locked"),
            Self::UnknownUser => Some("unknown_user"),
            Self::Pending
            | Self::Unreachable(_)
            | Self::Unexpected(_)
            | Self::BadResponse(_)
            | Self::Config(_) => None,
        }
    }
}

/// How the sidecar's FinCode credentials are doing: what `/readyz` reports.
///
/// Readiness needs only [`had_token`](Self::had_token): once a first token was obtained,
/// FinCode or auth trouble must not take the app's pod out of its Service (the app has
/// other work than payments); it shows in `/readyz`'s body, metrics and alerts instead.
#[derive(Debug, Clone)]
pub struct AuthStatus {
    /// A token was obtained at least once since start (always true outside login mode).
    pub had_token: bool,
    /// An unexpired token is held now (always true outside login mode).
    pub token_valid: bool,
    /// Why the last login or refresh failed, while none has succeeded since.
    pub trouble: Option<AuthFailure>,
    /// FinCode's last answer to a login rejected the credentials (401, 403, 404).
    pub rejected: bool,
    /// No login or refresh is attempted before this much time has passed.
    pub next_attempt_in: Option<Duration>,
}

/// Why credentials could not be built. Never contains a secret value.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The mode needs the secret this key names, and the [`Secrets`] given hold none.
    ///
    /// `Config::secrets` reports an unset variable itself (naming it), so this means the
    /// secrets were not resolved from the same configuration, or the key names nothing.
    #[error(
        "{0}: no value was resolved for it; resolve the secrets with Config::secrets from this configuration"
    )]
    Unresolved(&'static str),
    /// The token cannot be sent as an HTTP header value.
    #[error(
        "the value of environment variable {var} is not a valid HTTP header value (control characters or non-ASCII); check for a stray newline"
    )]
    InvalidToken {
        /// The variable's name (not its value).
        var: String,
    },
    /// The tenant public key cannot be used.
    #[error(
        "{key}: {detail}; use the tenant's RSA public key as FinCode's dashboard shows it (bare Base64 of the DER SubjectPublicKeyInfo) or in PEM (SPKI or PKCS#1)"
    )]
    PublicKey {
        /// The config key that names the key.
        key: &'static str,
        /// What was wrong (the file error's words included).
        detail: String,
        /// The file error, when the file could not be read.
        #[source]
        source: Option<std::io::Error>,
    },
}

/// A login or refresh happened, or the token's schedule changed; for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthEvent {
    /// A login attempt ended.
    Login {
        /// Whether FinCode issued a token.
        ok: bool,
    },
    /// A refresh attempt ended.
    Refresh {
        /// Whether FinCode issued a token.
        ok: bool,
    },
    /// FinCode rejected the login credentials (`Some` with the
    /// [`rejection_reason`](AuthFailure::rejection_reason)), or a token was obtained after
    /// such a rejection (`None`).
    LoginRejected {
        /// `bad_credentials`, `locked` or `unknown_user`; `None` once accepted again.
        reason: Option<&'static str>,
    },
    /// A token was installed, or a renewal failed: when the token expires and when the
    /// sidecar renews it next, as wall-clock times, so that the operator can see them
    /// (`fincode_token_expiry_timestamp_seconds`); only `/readyz` told before, and only
    /// once it was too late. Login mode only: a static token's expiry is not known.
    Schedule {
        /// When the last token FinCode issued expires; `None` before the first one. Kept
        /// through failed renewals, even past it, so an expired token shows as such.
        expires_at: Option<SystemTime>,
        /// When the next renewal starts: a refresh ahead of expiry, or after a failure
        /// the next attempt (the backoff, or `auth.login_retry_after_rejection`).
        renews_at: SystemTime,
    },
}

/// Receives [`AuthEvent`]s.
pub type Observer = Arc<dyn Fn(AuthEvent) + Send + Sync>;

/// Which token a request carried, so a 401 renews that token and not a newer one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant(u64);

/// The credentials the egress proxy puts on every upstream request. Cheap to clone (one
/// `Arc`): every request's stack holds a copy, and the token itself is never copied.
#[derive(Debug, Clone)]
pub struct Credentials {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    header: HeaderName,
    extra_headers: Vec<(HeaderName, HeaderValue)>,
    source: Source,
    logout_timeout: Duration,
}

#[derive(Debug, Clone)]
enum Source {
    None,
    /// The token as the header value it is sent as, made (and checked) once; marked
    /// sensitive, so `Debug` and hyper's HPACK never show or index it.
    Static(HeaderValue),
    Login(TokenManager),
}

// === impl Credentials ===

impl Credentials {
    /// Builds credentials from the `[auth]` section and the secrets resolved from it
    /// (`Config::secrets`, the one place that reads the environment and reports an unset
    /// variable). Auth calls (login mode) go through `transport`.
    pub fn from_config(
        config: &AuthConfig,
        secrets: &Secrets,
        transport: Arc<dyn Transport>,
    ) -> Result<Self, AuthError> {
        let mut extra_headers: Vec<(HeaderName, HeaderValue)> = config
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
        // FinCode documents the device id on every request, login included, whichever
        // credential the sidecar holds. (Mode "none" leaves the app's own headers alone.)
        if matches!(config.mode, AuthMode::Login | AuthMode::Static) {
            // The config crate validated the value; skipping keeps this infallible.
            if let Ok(value) = HeaderValue::from_str(&config.device_id) {
                extra_headers.push((config.device_id_header.clone(), value));
            }
        }
        let source = match config.mode {
            AuthMode::None => Source::None,
            AuthMode::Static => {
                let value = resolved(secrets.api_token.as_ref(), "auth.token_env")?;
                // Made once here: a token that is no header value is refused at start,
                // and a request only clones the value.
                let Ok(mut value) = HeaderValue::from_str(value.expose_secret()) else {
                    return Err(AuthError::InvalidToken {
                        var: config.token_env.clone().unwrap_or_default(),
                    });
                };
                value.set_sensitive(true);
                Source::Static(value)
            }
            AuthMode::Login => {
                let email = resolved(secrets.login_email.as_ref(), "auth.email_env")?;
                let password = resolved(secrets.login_password.as_ref(), "auth.password_env")?;
                let settings = LoginSettings {
                    email,
                    password,
                    public_key: public_key(config, secrets)?,
                    oaep_mgf1: config.oaep_mgf1,
                    login_path: config.login_path.clone(),
                    refresh_path: config.refresh_path.clone(),
                    logout_path: config.logout_path.clone(),
                    token_header: config.header.clone(),
                    headers: extra_headers.iter().cloned().collect(),
                    fallback_lifetime: config.token_lifetime,
                };
                Source::Login(TokenManager::new(
                    settings,
                    transport,
                    RenewalPolicy {
                        refresh_before: config.refresh_before,
                        renew_on_401_min_age: config.renew_on_401_min_age,
                        retry_after_rejection: config.login_retry_after_rejection,
                    },
                    Backoff::equal_jitter(config.login_backoff_initial, config.login_backoff_max)
                        .streak(),
                ))
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                header: config.header.clone(),
                extra_headers,
                source,
                logout_timeout: config.logout_timeout,
            }),
        })
    }

    /// Credentials that inject nothing (tests and `auth.mode = "none"`).
    pub fn none() -> Self {
        Self {
            inner: Arc::new(Inner {
                header: HeaderName::from_static("x-auth-token"),
                extra_headers: Vec::new(),
                source: Source::None,
                logout_timeout: Duration::ZERO,
            }),
        }
    }

    /// Starts the background login and refresh task (login mode); call once, inside the
    /// runtime. The task ends when the returned handle is aborted.
    pub fn start(&self) -> Option<tokio::task::JoinHandle<()>> {
        match &self.inner.source {
            Source::Login(manager) => Some(tokio::spawn(manager.clone().run())),
            Source::None | Source::Static(_) => None,
        }
    }

    /// Reports logins and refreshes to `observer` (login mode); call before [`Self::start`].
    pub fn observe(&self, observer: Observer) {
        if let Source::Login(manager) = &self.inner.source {
            manager.observe(observer);
        }
    }

    /// Whether the sidecar can authenticate requests now (an unexpired token is held).
    pub fn is_ready(&self) -> bool {
        match &self.inner.source {
            Source::Login(manager) => manager.is_ready(),
            Source::None | Source::Static(_) => true,
        }
    }

    /// How the credentials are doing, for `/readyz` (see [`AuthStatus`]).
    pub fn status(&self) -> AuthStatus {
        match &self.inner.source {
            Source::Login(manager) => manager.status(),
            Source::None | Source::Static(_) => AuthStatus {
                had_token: true,
                token_valid: true,
                trouble: None,
                rejected: false,
                next_attempt_in: None,
            },
        }
    }

    /// Whether a 401 from FinCode can be cured by renewing the token (login mode).
    pub fn renews_tokens(&self) -> bool {
        matches!(self.inner.source, Source::Login(_))
    }

    /// Puts our credentials on an outgoing request, replacing any the app sent.
    pub async fn apply(&self, headers: &mut HeaderMap) -> Result<Grant, AuthFailure> {
        if let Some(applied) = self.apply_now(headers) {
            return applied;
        }
        match &self.inner.source {
            // The token expired: wait for its renewal.
            Source::Login(manager) => {
                let (value, generation) = manager.current().await?;
                self.put(headers, Some(value));
                Ok(Grant(generation))
            }
            // `apply_now` always answers in these modes.
            Source::None | Source::Static(_) => Ok(Grant(0)),
        }
    }

    /// [`Self::apply`] without waiting: `None` when it would have to wait (login mode,
    /// with the token expired and a renewal to wait for), so the caller awaits `apply`.
    /// The common case needs no future at all: static and none modes always answer, and
    /// login mode does whenever an unexpired token is held.
    pub fn apply_now(&self, headers: &mut HeaderMap) -> Option<Result<Grant, AuthFailure>> {
        let (value, grant) = match &self.inner.source {
            Source::None => (None, Grant(0)),
            Source::Static(value) => (Some(value.clone()), Grant(0)),
            Source::Login(manager) => match manager.current_now()? {
                Ok((value, generation)) => (Some(value), Grant(generation)),
                Err(failure) => return Some(Err(failure)),
            },
        };
        self.put(headers, value);
        Some(Ok(grant))
    }

    /// Our credential header (when there is one) and the static headers, replacing the
    /// app's credentials.
    fn put(&self, headers: &mut HeaderMap, value: Option<HeaderValue>) {
        if let Some(value) = value {
            // An app rarely sends credentials of its own: one look over the names finds
            // out, instead of a hashed removal per credential header for every request.
            let app_sent = headers.keys().any(|name| CREDENTIAL_HEADERS.contains(name));
            if app_sent {
                for name in &CREDENTIAL_HEADERS {
                    headers.remove(name);
                }
            }
            headers.insert(self.inner.header.clone(), value);
        }
        for (name, value) in &self.inner.extra_headers {
            headers.insert(name.clone(), value.clone());
        }
    }

    /// FinCode rejected the token of `grant` with 401: renew it (single flight), unless
    /// it was issued less than `auth.renew_on_401_min_age` ago. `true` when a newer token
    /// is now held, so that a replay is worth sending; dropping the returned future never
    /// cancels the renewal.
    pub async fn rejected(&self, grant: Grant) -> bool {
        match &self.inner.source {
            Source::Login(manager) => manager.rejected(grant.0).await,
            Source::None | Source::Static(_) => false,
        }
    }

    /// Best-effort logout on shutdown, bounded by `auth.logout_timeout`. `true` when
    /// FinCode confirmed it; `false` when it failed or there was no session to end
    /// (always outside login mode).
    pub async fn logout(&self) -> bool {
        match &self.inner.source {
            Source::Login(manager) => manager.logout(self.inner.logout_timeout).await,
            Source::None | Source::Static(_) => false,
        }
    }

    /// Logs in now and installs the token, bypassing the background task's single flight
    /// and backoff, so the caller hears FinCode's verdict on this very attempt.
    ///
    /// For `fincode-sidecar preflight`, which proves the configured credentials work with
    /// a session of its own (never the running sidecar's) and logs it out afterwards.
    /// Do not call it beside [`Self::start`]: the two would race for the session. Outside
    /// login mode it fails with [`AuthFailure::Config`].
    pub async fn login_now(&self) -> Result<(), AuthFailure> {
        match &self.inner.source {
            Source::Login(manager) => manager.login_now().await,
            Source::None | Source::Static(_) => Err(not_login_mode()),
        }
    }

    /// Refreshes now with the refresh token held (after [`Self::login_now`]), with no
    /// fallback to a fresh login, so a refresh FinCode refuses is reported as such rather
    /// than hidden. Same use and caveats as [`Self::login_now`].
    pub async fn refresh_now(&self) -> Result<(), AuthFailure> {
        match &self.inner.source {
            Source::Login(manager) => manager.refresh_now().await,
            Source::None | Source::Static(_) => Err(not_login_mode()),
        }
    }
}

fn not_login_mode() -> AuthFailure {
    AuthFailure::Config(
        "auth.mode is not \"login\": there is no session to log in or refresh".to_owned(),
    )
}

/// The resolved secret `key` names, or why there is none.
fn resolved(secret: Option<&SecretString>, key: &'static str) -> Result<SecretString, AuthError> {
    secret.cloned().ok_or(AuthError::Unresolved(key))
}

fn public_key(config: &AuthConfig, secrets: &Secrets) -> Result<RsaPublicKey, AuthError> {
    let (key, text) = if let Some(path) = &config.public_key_file {
        let text = std::fs::read_to_string(path).map_err(|e| AuthError::PublicKey {
            key: "auth.public_key_file",
            detail: format!("cannot read {}: {e}", path.display()),
            source: Some(e),
        })?;
        ("auth.public_key_file", text)
    } else {
        let text = resolved(secrets.public_key.as_ref(), "auth.public_key_env")?;
        ("auth.public_key_env", text.expose_secret().to_owned())
    };
    login::parse_public_key(&text).ok_or_else(|| AuthError::PublicKey {
        key,
        detail: "not an RSA public key".to_owned(),
        source: None,
    })
}

#[cfg(test)]
mod tests;
