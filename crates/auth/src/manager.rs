//! The token manager: holds the current access token, refreshes it ahead of expiry in
//! the background, and renews it single-flight when FinCode rejects it.
//!
//! Single flight: a renewal is keyed by the token *generation* the caller saw, and runs
//! in one spawned task at a time. The first caller starts it; everyone else (and the
//! first caller too) awaits its end, then sees the generation has moved on. So a thousand
//! requests meeting an expired token cause one refresh call, not a thousand.
//!
//! Why a spawned task: renewals are often started by a request, and a request future is
//! dropped when the app disconnects or a per-try timeout fires. Dropping a refresh
//! halfway loses the answer to a single-use refresh token that FinCode has already
//! consumed, and the next renewal then needs a full login. Callers only *await* the
//! flight; dropping them never cancels it.
//!
//! A 401 on a token younger than `auth.renew_on_401_min_age` does not renew it: a token
//! issued seconds ago is not stale, so such a 401 has another cause, and renewing on it
//! would let one endpoint's 401s drive a refresh storm.
//!
//! Failed logins are paced by a [`Streak`] of equal-jitter backoff: until `retry_at`,
//! nobody calls login again, neither the background task nor a request. FinCode locks
//! accounts that fail too often. A login FinCode *rejects* (401 bad credentials, 403
//! locked, 404 unknown user) is terminal for these credentials: the next attempt waits
//! `auth.login_retry_after_rejection` (or a restart with new credentials), because
//! retrying cannot cure it and may extend a lock.

use std::{
    sync::{Arc, Mutex, OnceLock, RwLock},
    time::{Duration, SystemTime},
};

use http::HeaderValue;
use secrecy::{ExposeSecret, SecretString};
use tokio::{
    sync::{Notify, watch},
    time::Instant,
};

use fincode_backoff::Streak;

use crate::{
    AuthEvent, AuthFailure, AuthStatus, Observer, Transport,
    login::{Issued, LoginSettings, RefreshError},
};

/// When tokens are renewed; from `[auth]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RenewalPolicy {
    /// Refresh this long before expiry (at most half a token's life).
    pub(crate) refresh_before: Duration,
    /// A 401 renews only a token at least this old.
    pub(crate) renew_on_401_min_age: Duration,
    /// After a rejected login, wait this long before the next attempt.
    pub(crate) retry_after_rejection: Duration,
}

/// A token in use, with the times that govern it.
struct Token {
    access: SecretString,
    /// `access` as the header every request carries, made once when the token is
    /// installed (a JWT is hundreds of bytes to check and copy), or why it cannot be one.
    header: Result<HeaderValue, AuthFailure>,
    refresh: Option<SecretString>,
    issued_at: Instant,
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
    /// FinCode's last word on the login credentials was a rejection, for this reason
    /// (the `reason` label); cleared by the next successful login or refresh.
    rejected: Option<&'static str>,
    /// The wall-clock expiry of the last token installed, kept after the token is dropped
    /// so that [`AuthEvent::Schedule`] still says when it ran out.
    expires_wall: Option<SystemTime>,
}

struct Shared {
    observer: OnceLock<Observer>,
    settings: LoginSettings,
    transport: Arc<dyn Transport>,
    policy: RenewalPolicy,
    state: RwLock<State>,
    /// The renewal in flight, if any: its sender is dropped when it ends.
    flight: Mutex<Option<watch::Receiver<()>>>,
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
        policy: RenewalPolicy,
        backoff: Streak,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                observer: OnceLock::new(),
                settings,
                transport,
                policy,
                state: RwLock::new(State {
                    token: None,
                    generation: 0,
                    failure: AuthFailure::Pending,
                    retry_at: None,
                    rejected: None,
                    expires_wall: None,
                }),
                flight: Mutex::new(None),
                backoff: Mutex::new(backoff),
                changed: Notify::new(),
            }),
        }
    }

    /// The header value for the current token and its generation. Renews first when the
    /// token has expired (single flight); fails with the cause when there is none.
    pub(crate) async fn current(&self) -> Result<(HeaderValue, u64), AuthFailure> {
        for _ in 0..2 {
            let seen = match self.held() {
                Ok(answer) => return answer,
                Err(seen) => seen,
            };
            self.renew(seen).await;
        }
        Err(self.read().failure.clone())
    }

    /// [`Self::current`] when it needs no renewal; `None` when it would wait for one.
    pub(crate) fn current_now(&self) -> Option<Result<(HeaderValue, u64), AuthFailure>> {
        self.held().ok()
    }

    /// What `current` answers without renewing, or the generation to renew.
    fn held(&self) -> Result<Result<(HeaderValue, u64), AuthFailure>, u64> {
        let state = self.read();
        match &state.token {
            Some(token) if Instant::now() < token.expires_at => {
                Ok(token.header.clone().map(|v| (v, state.generation)))
            }
            // Nothing yet and the background login has not failed: say so rather than
            // queue requests behind a login that may take a while.
            None if matches!(state.failure, AuthFailure::Pending) => Ok(Err(AuthFailure::Pending)),
            _ => Err(state.generation),
        }
    }

    /// FinCode answered 401 to a request carrying generation `seen`: renew once, unless
    /// that token is too young to be stale. `true` when a newer token is now held (a
    /// replay can carry it).
    pub(crate) async fn rejected(&self, seen: u64) -> bool {
        {
            let state = self.read();
            if state.generation != seen {
                return true;
            }
            if let Some(token) = &state.token {
                let age = Instant::now().saturating_duration_since(token.issued_at);
                if age < self.shared.policy.renew_on_401_min_age {
                    tracing::debug!(
                        ?age,
                        "FinCode answered 401 on a token issued moments ago; not renewing it (auth.renew_on_401_min_age)"
                    );
                    return false;
                }
            }
        }
        self.renew(seen).await;
        self.read().generation != seen
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

    /// A snapshot for `/readyz` and the logs.
    pub(crate) fn status(&self) -> AuthStatus {
        let now = Instant::now();
        let state = self.read();
        AuthStatus {
            had_token: state.generation > 0,
            token_valid: state.token.as_ref().is_some_and(|t| now < t.expires_at),
            trouble: (!matches!(state.failure, AuthFailure::Pending))
                .then(|| state.failure.clone()),
            rejected: state.rejected.is_some(),
            next_attempt_in: state
                .retry_at
                .map(|at| at.saturating_duration_since(now))
                .filter(|wait| !wait.is_zero()),
        }
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

    /// Best-effort logout, bounded by `timeout`; `true` when FinCode confirmed it.
    pub(crate) async fn logout(&self, timeout: Duration) -> bool {
        let access = self.read().token.as_ref().map(|t| t.access.clone());
        let Some(access) = access else { return false };
        let call = self
            .shared
            .settings
            .logout(self.shared.transport.as_ref(), &access);
        match tokio::time::timeout(timeout, call).await {
            Ok(true) => {
                tracing::info!("logged out of FinCode");
                true
            }
            Ok(false) => {
                tracing::warn!("FinCode logout failed; tokens expire on their own");
                false
            }
            Err(_) => {
                tracing::warn!(?timeout, "FinCode logout timed out");
                false
            }
        }
    }

    /// Logs in at once, bypassing the single flight and the backoff, and installs the
    /// token. For `preflight`, which holds a session of its own, runs no background task
    /// and must hear FinCode's verdict on this very attempt, not a cached one.
    pub(crate) async fn login_now(&self) -> Result<(), AuthFailure> {
        let issued = self.login().await?;
        self.install(issued);
        Ok(())
    }

    /// Refreshes at once with the refresh token held, with no fallback to a login: a
    /// refresh that fails is reported as such. For `preflight` (see [`Self::login_now`]).
    pub(crate) async fn refresh_now(&self) -> Result<(), AuthFailure> {
        let refresh = self.read().token.as_ref().and_then(|t| t.refresh.clone());
        let Some(refresh_token) = refresh else {
            return Err(AuthFailure::BadResponse(
                "no refresh token is held: log in first, or FinCode issued none",
            ));
        };
        let settings = &self.shared.settings;
        match settings
            .refresh(self.shared.transport.as_ref(), &refresh_token)
            .await
        {
            Ok(issued) => {
                self.emit(AuthEvent::Refresh { ok: true });
                self.install(issued);
                Ok(())
            }
            Err(RefreshError::Stale) => {
                self.emit(AuthEvent::Refresh { ok: false });
                Err(AuthFailure::BadResponse(
                    "FinCode refused the refresh token it had just issued (401/403)",
                ))
            }
            Err(RefreshError::Failed(failure)) => {
                self.emit(AuthEvent::Refresh { ok: false });
                Err(failure)
            }
        }
    }

    /// Single flight: renews only if generation `seen` is still current and no backoff
    /// is pending, in a spawned task that outlives the caller. Returns when that renewal
    /// (or the one already in flight) has ended.
    async fn renew(&self, seen: u64) {
        let mut done = {
            let mut flight = self.flight();
            match flight.as_ref() {
                // A flight that ended without clearing the slot (it panicked) is gone:
                // its sender is dropped, so `has_changed` fails.
                Some(running) if running.has_changed().is_ok() => running.clone(),
                _ => {
                    if !self.renewal_due(seen) {
                        return;
                    }
                    let (ended, done) = watch::channel(());
                    *flight = Some(done.clone());
                    let this = self.clone();
                    tokio::spawn(async move {
                        this.renew_now().await;
                        // Clear the slot before waking the waiters, so that whoever they
                        // wake sees the new generation and never this finished flight.
                        *this.flight() = None;
                        drop(ended);
                    });
                    done
                }
            }
        };
        // Resolves (with an error) once the flight's sender is dropped.
        let _ = done.changed().await;
    }

    /// Whether generation `seen` is still current and no backoff is pending.
    fn renewal_due(&self, seen: u64) -> bool {
        let state = self.read();
        state.generation == seen && state.retry_at.is_none_or(|at| Instant::now() >= at)
    }

    /// One renewal: refresh first; a stale refresh token (or none) falls back to login.
    async fn renew_now(&self) {
        let refresh = self.read().token.as_ref().and_then(|t| t.refresh.clone());
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
        let lead = self.shared.policy.refresh_before.min(issued.lifetime / 2);
        let wall = SystemTime::now();
        let expires_wall = wall + issued.lifetime;
        let renews_wall = wall + issued.lifetime.saturating_sub(lead);
        let token = Token {
            header: header_value(&issued.access),
            access: issued.access,
            refresh: issued.refresh,
            issued_at: now,
            expires_at: now + issued.lifetime,
            refresh_at: now + issued.lifetime.saturating_sub(lead),
        };
        let mut state = self.write();
        state.token = Some(token);
        state.generation += 1;
        state.failure = AuthFailure::Pending;
        state.retry_at = None;
        state.expires_wall = Some(expires_wall);
        let was_rejected = state.rejected.take().is_some();
        drop(state);
        self.backoff().reset();
        if was_rejected {
            self.emit(AuthEvent::LoginRejected { reason: None });
        }
        self.emit(AuthEvent::Schedule {
            expires_at: Some(expires_wall),
            renews_at: renews_wall,
        });
    }

    fn fail(&self, failure: AuthFailure) {
        let rejection = failure.rejection_reason();
        let delay = if rejection.is_some() {
            // Terminal for these credentials: the backoff does not apply, and the streak
            // starts afresh should the next attempt (much later) merely fail.
            self.backoff().reset();
            let delay = self.shared.policy.retry_after_rejection;
            tracing::error!(
                cause = %failure,
                retry_in = ?delay,
                "FinCode rejected the sidecar's login; no further attempt until the sidecar restarts with new credentials or auth.login_retry_after_rejection passes"
            );
            delay
        } else {
            let delay = self.backoff().next_delay();
            tracing::warn!(cause = %failure, retry_in = ?delay, "FinCode authentication failed");
            delay
        };
        let mut state = self.write();
        // Only FinCode's answer to a login says anything about the credentials; a
        // transient failure leaves the last verdict in place.
        if rejection.is_some() {
            state.rejected = rejection;
        }
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
        let schedule = AuthEvent::Schedule {
            expires_at: state.expires_wall,
            renews_at: SystemTime::now() + delay,
        };
        drop(state);
        if rejection.is_some() {
            self.emit(AuthEvent::LoginRejected { reason: rejection });
        }
        self.emit(schedule);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        unpoisoned(self.shared.state.read())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        unpoisoned(self.shared.state.write())
    }

    fn flight(&self) -> std::sync::MutexGuard<'_, Option<watch::Receiver<()>>> {
        unpoisoned(self.shared.flight.lock())
    }

    fn backoff(&self) -> std::sync::MutexGuard<'_, Streak> {
        unpoisoned(self.shared.backoff.lock())
    }
}

/// The guard of a lock even when a panicking holder poisoned it: authentication goes on
/// with the last values written rather than failing every request after one panic.
fn unpoisoned<G>(locked: std::sync::LockResult<G>) -> G {
    locked.unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn header_value(secret: &SecretString) -> Result<HeaderValue, AuthFailure> {
    let mut value = HeaderValue::from_str(secret.expose_secret()).map_err(|_| {
        AuthFailure::BadResponse("FinCode issued a token that is not a valid header value")
    })?;
    value.set_sensitive(true);
    Ok(value)
}
