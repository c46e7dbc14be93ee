//! The token manager: holds the current access token, refreshes it ahead of expiry in
//! the background, and renews it single-flight when FinCode rejects it.
//!
//! Single flight: every renewal goes through one async mutex and is keyed by the token
//! *generation* the caller saw. The first caller renews; everyone queued behind it sees
//! the generation has moved on and returns at once. So a thousand requests meeting an
//! expired token cause one refresh call, not a thousand.
//!
//! Failed logins are paced by a [`Streak`] of equal-jitter backoff: until `retry_at`, nobody calls login again,
//! neither the background task nor a request. FinCode locks accounts that fail too often.

use std::{
    sync::{Arc, Mutex, OnceLock, RwLock},
    time::Duration,
};

use http::HeaderValue;
use secrecy::{ExposeSecret, SecretString};
use tokio::{sync::Notify, time::Instant};

use fincode_backoff::Streak;

use crate::{
    AuthEvent, AuthFailure, Observer, Transport,
    login::{Issued, LoginSettings, RefreshError},
};

/// A token in use, with the times that govern it.
struct Token {
    access: SecretString,
    refresh: Option<SecretString>,
    expires_at: Instant,
    refresh_at: Instant,
}

struct State {
    token: Option<Token>,
    /// Bumped on every new token; callers name the generation they saw.
    generation: u64,
    /// Why there is no usable token (meaningful when `token` is `None`).
    failure: AuthFailure,
    /// No login or refresh attempt before this instant.
    retry_at: Option<Instant>,
}

struct Shared {
    observer: OnceLock<Observer>,
    settings: LoginSettings,
    transport: Arc<dyn Transport>,
    refresh_before: Duration,
    state: RwLock<State>,
    renewing: tokio::sync::Mutex<()>,
    backoff: Mutex<Streak>,
    changed: Notify,
}

/// Owns the FinCode session. Cheap to clone.
#[derive(Clone)]
pub(crate) struct TokenManager {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenManager").finish_non_exhaustive()
    }
}

// === impl TokenManager ===

impl TokenManager {
    pub(crate) fn new(
        settings: LoginSettings,
        transport: Arc<dyn Transport>,
        refresh_before: Duration,
        backoff: Streak,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                observer: OnceLock::new(),
                settings,
                transport,
                refresh_before,
                state: RwLock::new(State {
                    token: None,
                    generation: 0,
                    failure: AuthFailure::Pending,
                    retry_at: None,
                }),
                renewing: tokio::sync::Mutex::new(()),
                backoff: Mutex::new(backoff),
                changed: Notify::new(),
            }),
        }
    }

    /// The header value for the current token and its generation. Renews first when the
    /// token has expired (single flight); fails with the cause when there is none.
    pub(crate) async fn current(&self) -> Result<(HeaderValue, u64), AuthFailure> {
        for _ in 0..2 {
            let seen = {
                let state = self.read();
                match &state.token {
                    Some(token) if Instant::now() < token.expires_at => {
                        return header_value(&token.access).map(|v| (v, state.generation));
                    }
                    // Nothing yet and the background login has not failed: say so
                    // rather than queue requests behind a login that may take a while.
                    None if matches!(state.failure, AuthFailure::Pending) => {
                        return Err(AuthFailure::Pending);
                    }
                    _ => state.generation,
                }
            };
            self.renew(seen).await;
        }
        Err(self.read().failure.clone())
    }

    /// FinCode answered 401 to a request carrying generation `seen`: renew once.
    pub(crate) async fn rejected(&self, seen: u64) {
        self.renew(seen).await;
    }

    /// Reports logins and refreshes to `observer` (metrics); set once.
    pub(crate) fn observe(&self, observer: Observer) {
        let _ = self.shared.observer.set(observer);
    }

    fn emit(&self, event: AuthEvent) {
        if let Some(observer) = self.shared.observer.get() {
            observer(event);
        }
    }

    /// Whether a usable token is held.
    pub(crate) fn is_ready(&self) -> bool {
        self.read()
            .token
            .as_ref()
            .is_some_and(|t| Instant::now() < t.expires_at)
    }

    /// Logs in, then keeps the token fresh until the task is dropped.
    pub(crate) async fn run(self) {
        loop {
            let (wake_at, seen) = {
                let state = self.read();
                let at = match (&state.token, state.retry_at) {
                    (_, Some(retry_at)) if retry_at > Instant::now() => retry_at,
                    (Some(token), _) => token.refresh_at,
                    (None, _) => Instant::now(),
                };
                (at, state.generation)
            };
            tokio::select! {
                () = tokio::time::sleep_until(wake_at) => self.renew(seen).await,
                // A request renewed the token: recompute when to wake.
                () = self.shared.changed.notified() => {}
            }
        }
    }

    /// Best-effort logout, bounded by `timeout`.
    pub(crate) async fn logout(&self, timeout: Duration) {
        let access = self.read().token.as_ref().map(|t| t.access.clone());
        let Some(access) = access else { return };
        let call = self
            .shared
            .settings
            .logout(self.shared.transport.as_ref(), &access);
        match tokio::time::timeout(timeout, call).await {
            Ok(true) => tracing::info!("logged out of FinCode"),
            Ok(false) => tracing::warn!("FinCode logout failed; tokens expire on their own"),
            Err(_) => tracing::warn!(?timeout, "FinCode logout timed out"),
        }
    }

    /// Single flight: renews only if generation `seen` is still current and no backoff
    /// is pending. Refresh first; a stale refresh token (or none) falls back to login.
    async fn renew(&self, seen: u64) {
        let _flight = self.shared.renewing.lock().await;
        let refresh = {
            let state = self.read();
            if state.generation != seen || state.retry_at.is_some_and(|at| Instant::now() < at) {
                return;
            }
            state.token.as_ref().and_then(|t| t.refresh.clone())
        };
        let settings = &self.shared.settings;
        let transport = self.shared.transport.as_ref();
        let result = match refresh {
            Some(refresh_token) => match settings.refresh(transport, &refresh_token).await {
                Ok(issued) => {
                    tracing::info!("FinCode token refreshed");
                    self.emit(AuthEvent::Refresh { ok: true });
                    Ok(issued)
                }
                Err(RefreshError::Stale) => {
                    tracing::info!(
                        "refresh token rejected (already used or expired); logging in again"
                    );
                    self.emit(AuthEvent::Refresh { ok: false });
                    self.login().await
                }
                Err(RefreshError::Failed(failure)) => {
                    self.emit(AuthEvent::Refresh { ok: false });
                    Err(failure)
                }
            },
            None => self.login().await,
        };
        match result {
            Ok(issued) => self.install(issued),
            Err(failure) => self.fail(failure),
        }
        self.shared.changed.notify_waiters();
    }

    async fn login(&self) -> Result<Issued, AuthFailure> {
        let result = self
            .shared
            .settings
            .login(self.shared.transport.as_ref())
            .await;
        if result.is_ok() {
            tracing::info!("logged in to FinCode");
        }
        self.emit(AuthEvent::Login { ok: result.is_ok() });
        result
    }

    fn install(&self, issued: Issued) {
        let now = Instant::now();
        // Never refresh earlier than half-way through a token's life, however short it
        // is: a tiny lifetime must not turn into a refresh loop.
        let lead = self.shared.refresh_before.min(issued.lifetime / 2);
        let token = Token {
            access: issued.access,
            refresh: issued.refresh,
            expires_at: now + issued.lifetime,
            refresh_at: now + issued.lifetime.saturating_sub(lead),
        };
        let mut state = self.write();
        state.token = Some(token);
        state.generation += 1;
        state.failure = AuthFailure::Pending;
        state.retry_at = None;
        drop(state);
        self.backoff().reset();
    }

    fn fail(&self, failure: AuthFailure) {
        let delay = self.backoff().next_delay();
        tracing::warn!(cause = %failure, retry_in = ?delay, "FinCode authentication failed");
        let mut state = self.write();
        // An unexpired token stays usable through a failed refresh (FinCode may be
        // briefly down); an expired one is dropped so requests get a clear 503.
        if state
            .token
            .as_ref()
            .is_some_and(|t| Instant::now() >= t.expires_at)
        {
            state.token = None;
        }
        state.failure = failure;
        state.retry_at = Some(Instant::now() + delay);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.shared
            .state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.shared
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn backoff(&self) -> std::sync::MutexGuard<'_, Streak> {
        self.shared
            .backoff
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn header_value(secret: &SecretString) -> Result<HeaderValue, AuthFailure> {
    let mut value = HeaderValue::from_str(secret.expose_secret()).map_err(|_| {
        AuthFailure::BadResponse("FinCode issued a token that is not a valid header value")
    })?;
    value.set_sensitive(true);
    Ok(value)
}
