#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![doc = include_str!("../README.md")]

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

mod admin;
mod api;
mod error;
mod faults;
mod keys;
mod server;
mod state;
mod tls;
mod tokens;
mod webhooks;

#[cfg(test)]
mod tests;

pub use crate::error::SandboxError;
pub use crate::faults::{FaultKind, FaultPhase, FaultRule};
pub use crate::keys::{OaepMgf1, encrypt_password_for_tests};
pub use crate::state::{Counters, FaultCounts, SeenRequest};
pub use crate::webhooks::{SendWebhooks, SentWebhook, WebhookSigning, transaction_status_event};

use crate::state::App;
use crate::tokens::{Lifetimes, Tokens};

/// Email of the user a default configuration knows.
pub const DEMO_EMAIL: &str = "demo@merchant.test";
/// Password of the default user.
pub const DEMO_PASSWORD: &str = "demo-password";

/// Locks a mutex, shrugging off poisoning: a panicked handler must not take the sandbox down
/// for every later test request.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A FinCode user the sandbox accepts at login.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// Login email.
    pub email: String,
    /// Clear-text password; clients send it RSA-encrypted.
    pub password: String,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("email", &self.email)
            .field("password", &"[REDACTED]")
            .finish()
    }
}

/// How to start a [`Sandbox`]. Plain data; `Default` is what tests want.
#[derive(Clone)]
pub struct SandboxConfig {
    /// The HTTPS (FinCode API) listener; default `127.0.0.1:0` (an ephemeral port).
    pub https_addr: SocketAddr,
    /// The plain-HTTP admin listener; must be a loopback address. Default `127.0.0.1:0`.
    pub admin_addr: SocketAddr,
    /// Where `ca.pem` and the RSA key PEMs are written (created if missing).
    pub state_dir: PathBuf,
    /// Users accepted at login; default the single demo user.
    pub users: Vec<User>,
    /// Lifetime of access tokens issued at login or refresh; default one hour.
    pub token_lifetime: Duration,
    /// Lifetime of refresh tokens; default one day.
    pub refresh_token_lifetime: Duration,
    /// Tokens accepted as long-lived static API tokens (never expire).
    pub static_tokens: Vec<String>,
    /// How login decrypts `currentPassword`; default MGF1-SHA1, as FinCode's Java server does.
    pub oaep_mgf1: OaepMgf1,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            https_addr: loopback,
            admin_addr: loopback,
            state_dir: PathBuf::from("sandbox-state"),
            users: vec![User {
                email: DEMO_EMAIL.to_owned(),
                password: DEMO_PASSWORD.to_owned(),
            }],
            token_lifetime: Duration::from_hours(1),
            refresh_token_lifetime: Duration::from_hours(24),
            static_tokens: Vec::new(),
            oaep_mgf1: OaepMgf1::default(),
        }
    }
}

impl fmt::Debug for SandboxConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxConfig")
            .field("https_addr", &self.https_addr)
            .field("admin_addr", &self.admin_addr)
            .field("state_dir", &self.state_dir)
            .field("users", &self.users)
            .field("token_lifetime", &self.token_lifetime)
            .field("refresh_token_lifetime", &self.refresh_token_lifetime)
            .field(
                "static_tokens",
                &format!("[{} REDACTED]", self.static_tokens.len()),
            )
            .field("oaep_mgf1", &self.oaep_mgf1)
            .finish()
    }
}

/// A running FinCode emulator: an HTTPS API listener and a plain-HTTP admin listener.
///
/// ```no_run
/// use fincode_sandbox::{FaultRule, Sandbox, SandboxConfig};
///
/// # async fn demo() -> Result<(), fincode_sandbox::SandboxError> {
/// let dir = std::env::temp_dir().join("fincode-sandbox-example");
/// let sandbox = Sandbox::start(SandboxConfig { state_dir: dir, ..SandboxConfig::default() }).await?;
/// // Point the client at `sandbox.base_url()`, trusting `sandbox.ca_cert_path()`.
/// sandbox.add_fault(FaultRule::status(503).times(3));
/// // ... drive the client ...
/// assert_eq!(sandbox.counters().faults_applied.status, 0);
/// sandbox.shutdown().await;
/// # Ok(()) }
/// ```
pub struct Sandbox {
    app: Arc<App>,
    https_addr: SocketAddr,
    admin_addr: SocketAddr,
    state_dir: PathBuf,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

// === impl Sandbox ===

impl Sandbox {
    /// Generates the CA, leaf certificate and RSA key, binds both listeners and starts serving.
    pub async fn start(config: SandboxConfig) -> Result<Sandbox, SandboxError> {
        if !config.admin_addr.ip().is_loopback() {
            return Err(SandboxError::Config(format!(
                "the admin API is unauthenticated and binds loopback only, not {}",
                config.admin_addr
            )));
        }
        tokio::fs::create_dir_all(&config.state_dir)
            .await
            .map_err(|e| SandboxError::io(format!("creating {}", config.state_dir.display()), e))?;
        let acceptor = tls::build_acceptor(&config.state_dir)?;
        let login_key =
            keys::LoginKey::load_or_generate(&config.state_dir, config.oaep_mgf1).await?;
        let tokens = Tokens::new(
            Lifetimes {
                access: config.token_lifetime,
                refresh: config.refresh_token_lifetime,
            },
            &config.static_tokens,
        );
        let users: HashMap<String, String> = config
            .users
            .iter()
            .map(|u| (u.email.clone(), u.password.clone()))
            .collect();
        let app = Arc::new(App::new(users, login_key, tokens));

        let https = TcpListener::bind(config.https_addr)
            .await
            .map_err(|e| SandboxError::io(format!("binding {}", config.https_addr), e))?;
        let admin = TcpListener::bind(config.admin_addr)
            .await
            .map_err(|e| SandboxError::io(format!("binding {}", config.admin_addr), e))?;
        let local = |listener: &TcpListener| {
            listener
                .local_addr()
                .map_err(|e| SandboxError::io("reading the bound address", e))
        };
        let https_addr = local(&https)?;
        let admin_addr = local(&admin)?;

        let (shutdown, watcher) = watch::channel(false);
        let tasks = vec![
            tokio::spawn(server::serve_tls(
                https,
                acceptor,
                api::router(app.clone()),
                app.clone(),
                watcher.clone(),
            )),
            tokio::spawn(server::serve_plain(
                admin,
                admin::router(app.clone(), config.state_dir.join(tls::CA_FILE)),
                watcher,
            )),
        ];
        tracing::info!(%https_addr, %admin_addr, "fincode sandbox started");
        Ok(Sandbox {
            app,
            https_addr,
            admin_addr,
            state_dir: config.state_dir,
            shutdown,
            tasks,
        })
    }

    /// The bound HTTPS address (with the real port when configured with port 0).
    pub fn https_addr(&self) -> SocketAddr {
        self.https_addr
    }

    /// The bound admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// `https://127.0.0.1:{port}/api/v6/services`, no trailing slash.
    pub fn base_url(&self) -> String {
        format!("https://{}/api/v6/services", client_addr(self.https_addr))
    }

    /// `http://127.0.0.1:{port}`.
    pub fn admin_url(&self) -> String {
        format!("http://{}", client_addr(self.admin_addr))
    }

    /// The CA certificate (PEM) clients must trust.
    pub fn ca_cert_path(&self) -> PathBuf {
        self.state_dir.join(tls::CA_FILE)
    }

    /// The tenant public key (SPKI PEM) clients encrypt `currentPassword` with.
    pub fn public_key_path(&self) -> PathBuf {
        self.state_dir.join(keys::PUBLIC_KEY_FILE)
    }

    /// The same public key as FinCode's dashboard hands it out: a file holding the bare Base64
    /// of the DER SubjectPublicKeyInfo (no PEM armour).
    pub fn public_key_base64_path(&self) -> PathBuf {
        self.state_dir.join(keys::PUBLIC_KEY_BASE64_FILE)
    }

    /// The counters, as `GET /counters` reports them.
    pub fn counters(&self) -> Counters {
        self.app.counters.snapshot()
    }

    /// The last 10 000 requests, oldest first, as `GET /requests` reports them.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.app.seen_requests()
    }

    /// Appends a fault rule (no validation; an out-of-range status falls back to 503).
    pub fn add_fault(&self, rule: FaultRule) {
        lock(&self.app.faults).push(rule);
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        lock(&self.app.faults).clear();
    }

    /// Mints a static API token valid for `lifetime`.
    pub fn mint_static_token(&self, lifetime: Duration) -> String {
        self.app.tokens.mint_static(lifetime)
    }

    /// Expires every access token issued by login or refresh so far.
    pub fn expire_access_tokens(&self) {
        self.app.tokens.expire_access_tokens();
    }

    /// Marks every outstanding refresh token as already used (403 "Token Already Used"
    /// on its next use), as if another client had used it.
    pub fn consume_refresh_tokens(&self) {
        self.app.tokens.consume_refresh_tokens();
    }

    /// Shifts the clock the API's `Date` header shows by `offset_secs` (negative: behind),
    /// as a FinCode whose clock is off (or a sidecar host whose clock is) would look; 0
    /// restores the real clock.
    pub fn set_clock_offset(&self, offset_secs: i64) {
        self.app
            .clock_offset_secs
            .store(offset_secs, std::sync::atomic::Ordering::Relaxed);
    }

    /// Sends a batch of signed webhooks, as FinCode would, and reports each request's outcome in
    /// `(index, copy)` order. `https` URLs trust this sandbox's CA and the webpki roots.
    pub async fn send_webhooks(&self, batch: SendWebhooks) -> Vec<SentWebhook> {
        webhooks::send(Some(&self.ca_cert_path()), batch).await
    }

    /// Stops both listeners and drops every open connection.
    pub async fn shutdown(mut self) {
        self.shutdown.send_replace(true);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }
}

impl Drop for Sandbox {
    /// A sandbox dropped without `shutdown` still stops accepting.
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

impl fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sandbox")
            .field("https_addr", &self.https_addr)
            .field("admin_addr", &self.admin_addr)
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

/// The address a client should dial: an unspecified bind address is reached via loopback.
fn client_addr(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        let loopback = if addr.is_ipv4() {
            std::net::IpAddr::from([127, 0, 0, 1])
        } else {
            std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST)
        };
        SocketAddr::new(loopback, addr.port())
    } else {
        addr
    }
}
