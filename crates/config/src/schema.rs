//! The typed configuration and its defaults.
//!
//! Every default lives in a `Default` impl (or [`UpstreamConfig::new`]) in this file and nowhere
//! else: the loader falls back to these values, and `config.example.toml` is tested against them.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, Uri};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::de::{via, via_each, via_some};
use crate::template::KeyTemplate;
use crate::types::{
    AllowedNet, AnyDuration, ApiPath, AuditDir, AuditRetention, AuthHeader, BodyBytes,
    BudgetWindow, CaFile, ConfirmPath, DedupeRetention, DeliverTo, DeliveryAttempts,
    DeliveryConcurrency, EnvVarName, EventKey, EventMaxAge, FailureRatio, FieldActions,
    HeaderBytes, HeaderText, HttpsBaseUrl, JsonPointer, Listen, LogLevel, MaxAttempts, NameList,
    OtlpEndpoint, PoolSize, PositiveDuration, PositiveU32, PositiveU64, PositiveUsize, PostgresUrl,
    PublicKeyFile, Ratio, Retention, RouteRate, ShutdownGrace, SignatureHeader, SignaturePrefix,
    SignatureTolerance, SqlIdentifier, SqlitePath, TlsCertFile, TlsKeyFile, UnverifiedBytes,
    WebhookBodyBytes, WebhookPath, Window,
};

/// The example tenant URL: what error messages suggest, and what stands in for a missing
/// `upstream.base_url` while the rest of the file is checked (the loader reports it missing).
pub(crate) const EXAMPLE_BASE_URL: &str = "https://acme.fincode.tech/api/v6/services";

/// The whole sidecar configuration, validated.
///
/// Built once at start-up (and again on reload) by [`Config::load`](crate::Config::load); every
/// behaviour is derived from it then, never looked up on the hot path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default = "Config::unset", deny_unknown_fields)]
pub struct Config {
    /// Where the sidecar listens.
    pub listen: ListenConfig,
    /// What each listener tolerates from its clients: timeouts, connection caps, HTTP/2 limits.
    pub listeners: ListenersConfig,
    /// How the sidecar reaches FinCode.
    pub upstream: UpstreamConfig,
    /// Size limits on what the app may send.
    pub limits: LimitsConfig,
    /// Which credentials the sidecar injects.
    pub auth: AuthConfig,
    /// What the sidecar logs and how.
    pub log: LogConfig,
    /// What is scrubbed from everything the sidecar writes down.
    pub redact: RedactConfig,
    /// OpenTelemetry trace export.
    pub traces: TracesConfig,
    /// Retries of failed tries to FinCode.
    pub retry: RetryConfig,
    /// The circuit breaker in front of FinCode.
    pub breaker: BreakerConfig,
    /// How fast the sidecar lets the app call FinCode.
    pub rate_limit: RateLimitConfig,
    /// Inbound FinCode webhooks and their delivery to the app.
    pub webhooks: WebhooksConfig,
    /// Where durable state (webhook events) is kept: an SQLite file or a shared Postgres.
    pub store: StoreBackend,
    /// The tamper-evident audit trail.
    pub audit: AuditConfig,
    /// How the sidecar stops.
    pub shutdown: ShutdownConfig,
}

/// How the sidecar stops on SIGTERM/SIGINT (`[shutdown]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// How long in-flight app calls and webhook receipts may take to finish after the
    /// signal; what is still running then is cut. Keep it below the pod's
    /// `terminationGracePeriodSeconds`, which must also cover the webhook deliveries'
    /// drain, the logout and the audit trail's last checkpoint that follow.
    #[serde(serialize_with = "humantime_serde::serialize")]
    #[serde(deserialize_with = "via::<ShutdownGrace, _, _>")]
    pub grace: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(25),
        }
    }
}

/// The sidecar's two listeners.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenConfig {
    /// The egress port the app calls without credentials. Loopback by default because anyone who
    /// can reach it spends the merchant's FinCode credentials.
    #[serde(deserialize_with = "via::<Listen, _, _>")]
    pub egress: SocketAddr,
    /// The admin port (health, readiness, metrics, webhooks). Open to the pod network by default
    /// so kubelet probes and Prometheus can reach it.
    #[serde(deserialize_with = "via::<Listen, _, _>")]
    pub admin: SocketAddr,
}

/// Limits for each of the three listeners (`[listeners.egress]`, `[listeners.admin]`,
/// `[listeners.webhooks]`): one server module applies them all (DESIGN.md 3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenersConfig {
    /// The app's port.
    pub egress: ListenerLimits,
    /// Probes, Prometheus and the admin API.
    pub admin: ListenerLimits,
    /// FinCode's webhooks (used when `webhooks.enabled`).
    pub webhooks: ListenerLimits,
}

/// What one listener tolerates from a client before it closes the connection. Hostile or
/// broken clients (slowloris, idle floods) cost at most `max_connections` sockets, each for at
/// most `header_read_timeout` or `idle_timeout`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenerLimits {
    /// Time allowed from accepting a connection (or the end of the previous response) until a
    /// whole request head has arrived; covers the TLS handshake and HTTP/2 preface too.
    #[serde(serialize_with = "humantime_serde::serialize")]
    #[serde(deserialize_with = "via::<PositiveDuration, _, _>")]
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed. (HTTP/1 also meets
    /// `header_read_timeout` between keep-alive requests; the shorter one closes it.)
    #[serde(serialize_with = "humantime_serde::serialize")]
    #[serde(deserialize_with = "via::<PositiveDuration, _, _>")]
    pub idle_timeout: Duration,
    /// Connections open at once. At the cap the oldest connection with no request in flight is
    /// closed to make room; when every connection is busy the new one is closed at once.
    #[serde(deserialize_with = "via::<PositiveUsize, _, _>")]
    pub max_connections: usize,
    /// HTTP/2 streams (requests) in flight per connection.
    #[serde(deserialize_with = "via::<PositiveU32, _, _>")]
    pub http2_max_concurrent_streams: u32,
    /// HTTP/2 PING interval on an otherwise quiet connection; zero disables pings.
    #[serde(serialize_with = "humantime_serde::serialize")]
    #[serde(deserialize_with = "via::<AnyDuration, _, _>")]
    pub http2_keepalive_interval: Duration,
    /// How long to wait for a PING's answer before closing the connection.
    #[serde(serialize_with = "humantime_serde::serialize")]
    #[serde(deserialize_with = "via::<PositiveDuration, _, _>")]
    pub http2_keepalive_timeout: Duration,
    /// A connection with a request in flight that makes no progress (no new request, response
    /// head or response body chunk) for this long is closed; zero disables it. Without it a
    /// client that never reads its responses (an HTTP/2 window of 0, still answering PINGs)
    /// would hold its slot forever: it is never idle, so never evicted at the cap.
    #[serde(serialize_with = "humantime_serde::serialize")]
    #[serde(deserialize_with = "via::<AnyDuration, _, _>")]
    pub stall_timeout: Duration,
}

/// How the sidecar reaches FinCode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default = "UpstreamConfig::unset", deny_unknown_fields)]
pub struct UpstreamConfig {
    /// FinCode's API base, e.g. `https://acme.fincode.tech/api/v6/services`. Normalised: absolute,
    /// lower-case scheme and host, no user info, query or fragment, and no trailing `/` on the path
    /// (a bare host keeps the single `/` that [`Uri`] always prints).
    #[serde(serialize_with = "ser_display")]
    #[serde(deserialize_with = "via::<HttpsBaseUrl, _, _>")]
    pub base_url: Uri,
    /// An extra PEM CA bundle trusted on top of the webpki roots (for a TLS-inspecting egress
    /// proxy or a test CA). Checked at load time to exist and hold a certificate.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_path"
    )]
    #[serde(deserialize_with = "via_some::<CaFile, _, _>")]
    pub ca_file: Option<PathBuf>,
    /// Permit `http://` base URLs. Only for tests against the sandbox: it puts credentials on the
    /// wire in clear text.
    pub allow_insecure: bool,
    /// How long to wait for a TCP + TLS connection to FinCode.
    #[serde(serialize_with = "humantime_serde::serialize")]
    #[serde(deserialize_with = "via::<PositiveDuration, _, _>")]
    pub connect_timeout: Duration,
    /// How long to wait for FinCode's response head once the request is sent; for the
    /// app's calls, each try is bounded by the shorter of this and `retry.per_try_timeout`.
    #[serde(serialize_with = "humantime_serde::serialize")]
    #[serde(deserialize_with = "via::<PositiveDuration, _, _>")]
    pub request_timeout: Duration,
    /// How long an idle pooled connection is kept before it is closed.
    #[serde(serialize_with = "humantime_serde::serialize")]
    #[serde(deserialize_with = "via::<PositiveDuration, _, _>")]
    pub pool_idle_timeout: Duration,
    /// How many idle connections to keep per FinCode host (0 disables pooling).
    pub pool_max_idle_per_host: usize,
    /// Offer HTTP/2 via ALPN; one multiplexed connection is cheaper than a pool of HTTP/1.1 ones.
    pub http2: bool,
}

/// Size limits on the app's requests, so one runaway request cannot exhaust the sidecar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request body accepted from the app, in bytes.
    #[serde(serialize_with = "ser_u64_saturating")]
    #[serde(deserialize_with = "via::<BodyBytes, _, _>")]
    pub max_request_body_bytes: u64,
    /// Largest total size of the request head accepted from the app, in bytes.
    #[serde(deserialize_with = "via::<HeaderBytes, _, _>")]
    pub max_request_header_bytes: usize,
    /// Requests in flight at once; the next one is refused at once with 503 `overloaded`
    /// (load shedding) instead of queueing behind a slow FinCode.
    #[serde(deserialize_with = "via::<PositiveUsize, _, _>")]
    pub max_concurrent_requests: usize,
}

/// How the sidecar authenticates to FinCode on the app's behalf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Log in with email and RSA-encrypted password (both from the environment), then keep the
    /// access token fresh with single-use refresh tokens.
    Login,
    /// Inject a static API token read from the environment variable named by `auth.token_env`.
    Static,
    /// Inject nothing: the app sends its own credentials (a migration step, not the goal).
    #[default]
    None,
}

/// The hash MGF1 uses inside the RSA-OAEP encryption of the login password (the OAEP digest
/// itself is always SHA-256).
///
/// FinCode's payload-encryption guide uses Java's
/// `Cipher.getInstance("RSA/ECB/OAEPWithSHA-256AndMGF1Padding")` with no parameter spec; Java's
/// default provider reads that as SHA-256 for the digest and SHA-1 for MGF1, and FinCode's server
/// decrypts accordingly. Most other libraries default MGF1 to the digest (SHA-256), which such a
/// server refuses: the login fails with 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OaepMgf1 {
    /// MGF1 with SHA-1: what Java's default provider does, so what FinCode decrypts.
    #[default]
    Sha1,
    /// MGF1 with SHA-256: for a server that passes an explicit `OAEPParameterSpec` (or uses a
    /// provider such as Bouncy Castle that defaults MGF1 to the digest).
    Sha256,
}

/// Which credentials the sidecar injects, and where they come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The credential mode.
    pub mode: AuthMode,
    /// The request header the credential is sent in.
    #[serde(serialize_with = "ser_header_name")]
    #[serde(deserialize_with = "via::<AuthHeader, _, _>")]
    pub header: HeaderName,
    /// The *name* of the environment variable holding the API token; the token itself never
    /// appears in the file. Required when `mode` is [`AuthMode::Static`].
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "via_some::<EnvVarName, _, _>")]
    pub token_env: Option<String>,
    /// Non-secret headers added to every upstream request (lower-case names). Credential headers
    /// are refused here because their values would be secrets written in the file.
    pub extra_headers: BTreeMap<String, String>,
    /// Login mode: the *name* of the variable holding the login email.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "via_some::<EnvVarName, _, _>")]
    pub email_env: Option<String>,
    /// Login mode: the *name* of the variable holding the password (sent RSA-OAEP encrypted).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "via_some::<EnvVarName, _, _>")]
    pub password_env: Option<String>,
    /// Login mode: the tenant's RSA public key file (or use `public_key_env`): bare Base64 of the
    /// DER SubjectPublicKeyInfo as FinCode's dashboard shows it, or PEM (SPKI or PKCS#1).
    #[serde(
        serialize_with = "ser_opt_path",
        skip_serializing_if = "Option::is_none"
    )]
    #[serde(deserialize_with = "via_some::<PublicKeyFile, _, _>")]
    pub public_key_file: Option<PathBuf>,
    /// Login mode: the *name* of a variable holding the tenant's RSA public key, in any of the
    /// forms `public_key_file` accepts.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "via_some::<EnvVarName, _, _>")]
    pub public_key_env: Option<String>,
    /// Login mode: the MGF1 hash of the password's RSA-OAEP (SHA-256) encryption.
    pub oaep_mgf1: OaepMgf1,
    /// The header carrying the device id FinCode asks for.
    #[serde(serialize_with = "ser_header_name")]
    #[serde(deserialize_with = "via::<AuthHeader, _, _>")]
    pub device_id_header: HeaderName,
    /// The device id sent in `device_id_header` on every request, auth calls included (login
    /// and static modes). FinCode's API reference documents the value as "Use 200".
    #[serde(deserialize_with = "via::<HeaderText, _, _>")]
    pub device_id: String,
    /// Refresh this long before the access token expires, so requests never meet an expired one.
    #[serde(serialize_with = "humantime_serde::serialize")]
    #[serde(deserialize_with = "via::<PositiveDuration, _, _>")]
    pub refresh_before: Duration,
    /// Assumed token lifetime when the JWT carries no `exp` claim.
    #[serde(serialize_with = "humantime_serde::serialize")]
    #[serde(deserialize_with = "via::<PositiveDuration, _, _>")]
    pub token_lifetime: Duration,
    /// First wait after a failed login; doubles per failure (with jitter) up to `login_backoff_max`.
    /// FinCode locks accounts that fail too often, so the sidecar never hammers login.
    #[serde(serialize_with = "humantime_serde::serialize")]
    #[serde(deserialize_with = "via::<PositiveDuration, _, _>")]
    pub login_backoff_initial: Duration,
    /// Longest wait between login attempts.
    #[serde(serialize_with = "humantime_serde::serialize")]
    #[serde(deserialize_with = "via::<PositiveDuration, _, _>")]
    pub login_backoff_max: Duration,
    /// After FinCode rejects the login itself (401 bad credentials, 403 locked, 404 unknown
    /// user), the next attempt waits this long unless the credentials change (restart). Those
    /// answers do not cure themselves, and each further attempt can extend a lock.
    #[serde(serialize_with = "humantime_serde::serialize")]
    #[serde(deserialize_with = "via::<PositiveDuration, _, _>")]
    pub login_retry_after_rejection: Duration,
    /// A 401 from FinCode renews the token only once the token is at least this old. A token
    /// issued seconds ago is not stale: the 401 has another cause, and renewing on it would
    /// turn one endpoint's 401s into a refresh storm.
    #[serde(serialize_with = "humantime_serde::serialize")]
    #[serde(deserialize_with = "via::<AnyDuration, _, _>")]
    pub renew_on_401_min_age: Duration,
    /// How long shutdown waits for the best-effort logout.
    #[serde(serialize_with = "humantime_serde::serialize")]
    #[serde(deserialize_with = "via::<PositiveDuration, _, _>")]
    pub logout_timeout: Duration,
    /// Login path below `upstream.base_url`.
    #[serde(deserialize_with = "via::<ApiPath, _, _>")]
    pub login_path: String,
    /// Refresh path below `upstream.base_url`.
    #[serde(deserialize_with = "via::<ApiPath, _, _>")]
    pub refresh_path: String,
    /// Logout path below `upstream.base_url`.
    #[serde(deserialize_with = "via::<ApiPath, _, _>")]
    pub logout_path: String,
}

/// The log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line, for log shippers.
    #[default]
    Json,
    /// Human-readable lines, for a terminal.
    Text,
}

/// What the sidecar logs and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` `EnvFilter` directive such as `info` or `info,fincode_proxy=debug`.
    #[serde(deserialize_with = "via::<LogLevel, _, _>")]
    pub level: String,
    /// The output format.
    pub format: LogFormat,
    /// Log request and response bodies, redacted, one line each. Off by default: even
    /// redacted, bodies are personal data the merchant must account for.
    pub bodies: bool,
    /// The level the body lines are logged at (`trace`, `debug` or `info`), so they can be
    /// switched on for one target without raising everything else.
    pub body_level: BodyLevel,
    /// Bodies longer than this are not logged (a note says so); redaction needs the whole
    /// body, and a truncated one could cut a card number in half.
    pub max_body_bytes: usize,
}

/// The level body lines are logged at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyLevel {
    /// Only with `RUST_LOG=...=trace`.
    Trace,
    /// The default: visible with `level = "debug"`.
    #[default]
    Debug,
    /// Always, when `log.bodies` is on.
    Info,
}

/// What the redactor scrubs on top of its built-in rules (which cover every sensitive FinCode
/// field: tokens, passwords, PINs, card data, ids, phones, emails, names, accounts).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedactConfig {
    /// Extra header names whose values are never written down.
    #[serde(deserialize_with = "via::<NameList, _, _>")]
    pub headers: Vec<String>,
    /// Extra URL query parameters whose values are never written down.
    #[serde(deserialize_with = "via::<NameList, _, _>")]
    pub query_params: Vec<String>,
    /// Extra JSON field rules by key (case-insensitive): `drop`, `mask` (keep the last 4) or
    /// `hash` (a keyed HMAC pseudonym, so records about one customer can be linked without
    /// naming them).
    #[serde(deserialize_with = "via::<FieldActions, _, _>")]
    pub fields: BTreeMap<String, FieldAction>,
    /// The variable holding the key for `hash`. Without it, `hash` fields are dropped.
    #[serde(deserialize_with = "via_some::<EnvVarName, _, _>")]
    pub hash_key_env: Option<String>,
}

/// What happens to a JSON field's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldAction {
    /// Replaced by `[REDACTED]`.
    Drop,
    /// All but the last four characters replaced.
    Mask,
    /// A keyed HMAC pseudonym.
    Hash,
}

/// OpenTelemetry trace export over OTLP/HTTP (protobuf).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TracesConfig {
    /// Where spans go, e.g. `http://otel-collector:4318/v1/traces`. When unset,
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` (+ `/v1/traces`)
    /// is used; when none is set, no spans are exported.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_display"
    )]
    #[serde(deserialize_with = "via_some::<OtlpEndpoint, _, _>")]
    pub otlp_endpoint: Option<Uri>,
    /// The share of new traces recorded, 0.0 to 1.0. A trace the app started keeps the app's
    /// sampling decision.
    #[serde(deserialize_with = "via::<Ratio, _, _>")]
    pub sample_ratio: f64,
    /// `service.name` on every span.
    pub service_name: String,
    /// How long one export may take before it is abandoned (spans are dropped, never queued
    /// without bound).
    #[serde(serialize_with = "humantime_serde::serialize")]
    #[serde(deserialize_with = "via::<PositiveDuration, _, _>")]
    pub export_timeout: Duration,
}

/// Retries of failed tries to FinCode (DESIGN.md 5.1). A payment is never sent twice: only
/// idempotent methods and POST/PATCH with `X-Idempotency-Key` are retried once FinCode may
/// have seen a byte; anything else only when the connection never opened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Tries per request, the first included; 1 turns retries off.
    #[serde(deserialize_with = "via::<MaxAttempts, _, _>")]
    pub max_attempts: u32,
    /// The first backoff ceiling; each retry doubles it (full jitter: the wait is uniform
    /// between 0 and the ceiling).
    #[serde(serialize_with = "humantime_serde::serialize")]
    #[serde(deserialize_with = "via::<PositiveDuration, _, _>")]
    pub backoff_base: Duration,
    /// The largest backoff ceiling.
    #[serde(serialize_with = "humantime_serde::serialize")]
    #[serde(deserialize_with = "via::<PositiveDuration, _, _>")]
    pub backoff_cap: Duration,
    /// How long one try may wait for FinCode's response head.
    #[serde(serialize_with = "humantime_serde::serialize")]
    #[serde(deserialize_with = "via::<PositiveDuration, _, _>")]
    pub per_try_timeout: Duration,
    /// How long a request may take over all its tries and waits.
    #[serde(serialize_with = "humantime_serde::serialize")]
    #[serde(deserialize_with = "via::<PositiveDuration, _, _>")]
    pub deadline: Duration,
    /// The longest `Retry-After` from FinCode that is waited out; a longer one ends the
    /// retries and its response goes to the app.
    #[serde(serialize_with = "humantime_serde::serialize")]
    #[serde(deserialize_with = "via::<PositiveDuration, _, _>")]
    pub retry_after_cap: Duration,
    /// Retries allowed as a share of recent requests, so an outage never becomes a storm.
    #[serde(deserialize_with = "via::<Ratio, _, _>")]
    pub budget_ratio: f64,
    /// Retries per second always allowed, whatever the ratio says.
    pub budget_min_per_second: u32,
    /// How far back "recent requests" reach.
    #[serde(serialize_with = "humantime_serde::serialize")]
    #[serde(deserialize_with = "via::<BudgetWindow, _, _>")]
    pub budget_window: Duration,
    /// Largest request body kept in memory so it can be sent again; larger ones are not retried.
    #[serde(serialize_with = "ser_u64_saturating")]
    pub max_replay_body: u64,
    /// Give a POST/PATCH without a usable `X-Idempotency-Key` (none, or only blank values) a
    /// fresh one (echoed to the app), which makes it retryable. Keys the app chose are never
    /// replaced. Only safe if FinCode deduplicates on the key for that endpoint.
    pub mint_idempotency_key: bool,
}

/// The circuit breaker for FinCode: after repeated failures the sidecar answers at once with
/// 503 `circuit_open` instead of piling requests onto a failing upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Off means every request goes to FinCode whatever happened before.
    pub enabled: bool,
    /// Opens after this many failed requests in a row.
    #[serde(deserialize_with = "via::<PositiveU32, _, _>")]
    pub consecutive_failures: u32,
    /// Opens when at least this share of requests in `window` failed...
    #[serde(deserialize_with = "via::<FailureRatio, _, _>")]
    pub failure_ratio: f64,
    /// ...and the window holds at least this many requests.
    #[serde(deserialize_with = "via::<PositiveU32, _, _>")]
    pub min_requests: u32,
    /// How far back the failure ratio looks.
    #[serde(serialize_with = "humantime_serde::serialize")]
    #[serde(deserialize_with = "via::<Window, _, _>")]
    pub window: Duration,
    /// How long it stays open before letting probes through.
    #[serde(serialize_with = "humantime_serde::serialize")]
    #[serde(deserialize_with = "via::<PositiveDuration, _, _>")]
    pub open_for: Duration,
    /// Probes let through when half-open; this many successes close it, one failure reopens it.
    #[serde(deserialize_with = "via::<PositiveU32, _, _>")]
    pub half_open_probes: u32,
}

/// Local rate limiting (a token bucket per scope), plus back-off when FinCode answers 429.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests per second for all routes together; 0 turns the global limit off.
    pub per_second: u32,
    /// Requests allowed at once above the steady rate.
    #[serde(deserialize_with = "via::<PositiveU32, _, _>")]
    pub burst: u32,
    /// How long a request over the limit may wait for its turn before 429 `rate_limited`.
    #[serde(serialize_with = "humantime_serde::serialize")]
    #[serde(deserialize_with = "via::<AnyDuration, _, _>")]
    pub max_wait: Duration,
    /// When FinCode answers 429 without `Retry-After`, requests to that route pause this long.
    #[serde(serialize_with = "humantime_serde::serialize")]
    #[serde(deserialize_with = "via::<PositiveDuration, _, _>")]
    pub upstream_backoff: Duration,
    /// Tighter limits per route template, e.g. `"/transactionmanagement/create-transaction"`.
    pub routes: BTreeMap<String, RouteLimit>,
}

/// One route's own rate, on top of the global one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "RouteEntry")]
pub struct RouteLimit {
    /// Requests per second on this route (at least 1).
    pub per_second: u32,
    /// Requests allowed at once above the steady rate (at least 1).
    pub burst: u32,
}

/// `"/route" = { per_second = N, burst = M }` as written: `burst` defaults to `per_second`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteEntry {
    #[serde(deserialize_with = "via::<RouteRate, _, _>")]
    per_second: u32,
    #[serde(default, deserialize_with = "via_some::<RouteRate, _, _>")]
    burst: Option<u32>,
}

impl From<RouteEntry> for RouteLimit {
    fn from(entry: RouteEntry) -> Self {
        Self {
            per_second: entry.per_second,
            burst: entry.burst.unwrap_or(entry.per_second),
        }
    }
}

/// Inbound webhooks (DESIGN.md 5.3): the listener checks, in order, method and path, body
/// size, source IP, signature, timestamp and JSON; commits the event durably; answers 200;
/// and a dispatcher delivers it to `deliver_to`, retrying until `max_attempts` or `max_age`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Off: no listener, no dispatcher.
    pub enabled: bool,
    /// Where FinCode's webhooks arrive (usually through the cluster's ingress).
    #[serde(deserialize_with = "via::<Listen, _, _>")]
    pub listen: SocketAddr,
    /// The paths accepted (POST only); anything else is 404.
    #[serde(deserialize_with = "via_each::<WebhookPath, _, _>")]
    pub paths: Vec<String>,
    /// Largest body accepted, in bytes; larger gets 413 before it is read.
    #[serde(deserialize_with = "via::<WebhookBodyBytes, _, _>")]
    pub max_body_bytes: usize,
    /// Bytes of not-yet-verified bodies buffered across all requests at once; a body that would
    /// go over gets 503 with `Retry-After`, so a flood of slow bodies cannot exhaust memory.
    #[serde(deserialize_with = "via::<UnverifiedBytes, _, _>")]
    pub max_unverified_bytes: usize,
    /// How long a sender may take to send the body once the head arrived (408 after it).
    /// FinCode's events are a few KiB; a long deadline only helps a trickling attacker hold a
    /// connection.
    #[serde(serialize_with = "humantime_serde::serialize")]
    #[serde(deserialize_with = "via::<PositiveDuration, _, _>")]
    pub body_read_timeout: Duration,
    /// PEM certificate chain for TLS on the listener; with `tls_key_file`. Unset: plain HTTP
    /// (TLS terminated by the ingress).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_path"
    )]
    #[serde(deserialize_with = "via_some::<TlsCertFile, _, _>")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key for `tls_cert_file`.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_path"
    )]
    #[serde(deserialize_with = "via_some::<TlsKeyFile, _, _>")]
    pub tls_key_file: Option<PathBuf>,
    /// Source addresses allowed (CIDRs); empty allows any. FinCode publishes its addresses.
    #[serde(serialize_with = "ser_display_list")]
    #[serde(deserialize_with = "via_each::<AllowedNet, _, _>")]
    pub allow_ips: Vec<ipnet::IpNet>,
    /// Proxies (CIDRs) whose `X-Forwarded-For` is believed for the allow-list check.
    #[serde(serialize_with = "ser_display_list")]
    #[serde(deserialize_with = "via_each::<AllowedNet, _, _>")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// How the sender proves it is FinCode.
    pub scheme: WebhookScheme,
    /// Variables holding the verification secrets; several at once during a rotation.
    #[serde(deserialize_with = "via_each::<EnvVarName, _, _>")]
    pub secret_envs: Vec<String>,
    /// For `hmac`: the digest.
    pub hmac_algorithm: HmacAlgorithm,
    /// For `hmac`: how the signature is written.
    pub hmac_encoding: HmacEncoding,
    /// For `hmac`, `stripe` and `shared-secret`: the header carrying the signature (or secret).
    /// Unset: `x-fincode-signature`, `stripe-signature`, `x-webhook-secret` respectively.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "via_some::<SignatureHeader, _, _>")]
    pub signature_header: Option<String>,
    /// For `hmac`: a prefix before the signature, such as `sha256=`.
    #[serde(deserialize_with = "via::<SignaturePrefix, _, _>")]
    pub signature_prefix: String,
    /// For `standard-webhooks` and `stripe`: how far the signed timestamp may be from now,
    /// either way.
    #[serde(serialize_with = "humantime_serde::serialize")]
    #[serde(deserialize_with = "via::<SignatureTolerance, _, _>")]
    pub tolerance: Duration,
    /// The deduplication key: `{field}` is a top-level JSON field, `{/a/b}` a JSON pointer,
    /// `{header:name}` a request header.
    #[serde(deserialize_with = "via::<EventKey, _, _>")]
    pub dedupe_key: KeyTemplate,
    /// Events with equal ordering keys (same template syntax) are delivered in arrival
    /// order. Unset: no ordering.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "via_some::<EventKey, _, _>")]
    pub order_key: Option<KeyTemplate>,
    /// The app's webhook endpoint, e.g. `http://127.0.0.1:3000/webhooks/fincode`.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_opt_display"
    )]
    #[serde(deserialize_with = "via_some::<DeliverTo, _, _>")]
    pub deliver_to: Option<Uri>,
    /// The variable holding the sidecar's own `whsec_...` secret: deliveries carry a Standard
    /// Webhooks signature made with it, so the app can verify they come from the sidecar.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "via_some::<EnvVarName, _, _>")]
    pub signing_secret_env: Option<String>,
    /// How long one delivery attempt may take, confirm-by-query included (one deadline).
    /// Shorter than `lease`, so an attempt ends before another sidecar may claim the event.
    #[serde(serialize_with = "humantime_serde::serialize")]
    #[serde(deserialize_with = "via::<PositiveDuration, _, _>")]
    pub delivery_timeout: Duration,
    /// How long a claimed event is this sidecar's before another claimant (a replica, or
    /// this one after a crash) may take it. Longer than `delivery_timeout`.
    #[serde(serialize_with = "humantime_serde::serialize")]
    #[serde(deserialize_with = "via::<PositiveDuration, _, _>")]
    pub lease: Duration,
    /// Deliveries in flight at once.
    #[serde(deserialize_with = "via::<DeliveryConcurrency, _, _>")]
    pub delivery_concurrency: usize,
    /// Attempts before an event becomes a dead letter.
    #[serde(deserialize_with = "via::<DeliveryAttempts, _, _>")]
    pub max_attempts: u32,
    /// Age after which an undelivered event becomes a dead letter.
    #[serde(serialize_with = "humantime_serde::serialize")]
    #[serde(deserialize_with = "via::<EventMaxAge, _, _>")]
    pub max_age: Duration,
    /// How long delivered events are kept (their bodies hold personal data; their dedupe
    /// keys recognise redeliveries). Dead and pending events are kept until handled.
    #[serde(serialize_with = "humantime_serde::serialize")]
    #[serde(deserialize_with = "via::<Retention, _, _>")]
    pub retention: Duration,
    /// How long a delivered event's dedupe key is remembered after its body is purged
    /// (counted from receipt), so a captured request replayed later is still a duplicate.
    #[serde(serialize_with = "humantime_serde::serialize")]
    #[serde(deserialize_with = "via::<DedupeRetention, _, _>")]
    pub dedupe_retention: Duration,
    /// The first backoff ceiling between attempts (full jitter, doubling).
    #[serde(serialize_with = "humantime_serde::serialize")]
    #[serde(deserialize_with = "via::<PositiveDuration, _, _>")]
    pub backoff_base: Duration,
    /// The largest backoff ceiling.
    #[serde(serialize_with = "humantime_serde::serialize")]
    #[serde(deserialize_with = "via::<PositiveDuration, _, _>")]
    pub backoff_cap: Duration,
    /// Before delivering an event, fetch the transaction from FinCode (through the egress
    /// path) and deliver only if its status matches. For `scheme = "none"`.
    pub confirm_by_query: bool,
    /// The path queried, with `{field}` placeholders from the event.
    #[serde(deserialize_with = "via::<ConfirmPath, _, _>")]
    pub confirm_path: KeyTemplate,
    /// JSON pointer to the status in FinCode's answer, compared with the event's `Status`.
    #[serde(deserialize_with = "via::<JsonPointer, _, _>")]
    pub confirm_status_pointer: String,
    /// The variable holding a token for the admin API's webhook routes from beyond
    /// loopback (`Authorization: Bearer ...`). Unset: loopback only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(deserialize_with = "via_some::<EnvVarName, _, _>")]
    pub admin_token_env: Option<String>,
}

/// How webhook senders are verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WebhookScheme {
    /// HMAC of the raw body in a header.
    Hmac,
    /// Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
    StandardWebhooks,
    /// Stripe-style `t=...,v1=...`.
    Stripe,
    /// A header equal to a secret.
    SharedSecret,
    /// No signature: only with `allow_ips`.
    None,
}

/// The HMAC digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HmacAlgorithm {
    /// HMAC-SHA256.
    Sha256,
    /// HMAC-SHA512.
    Sha512,
}

/// How an HMAC signature is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HmacEncoding {
    /// Lowercase or uppercase hex.
    Hex,
    /// Standard base64.
    Base64,
}

/// Where webhook events are kept (`[store]`): one backend or the other, never a mix, so
/// the code that opens the store cannot read a Postgres key while opening SQLite.
///
/// The file spells the choice by which keys it sets: `url` means Postgres, otherwise
/// `sqlite_path` (or its default) means SQLite.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreBackend {
    /// One SQLite file: the default, for a sidecar running as a single pod.
    Sqlite {
        /// The file (on a persistent volume in Kubernetes).
        path: PathBuf,
    },
    /// A Postgres database shared by several replicas behind one webhook URL.
    Postgres(PostgresStoreConfig),
}

/// `[store]` with `url` set: a Postgres database shared by replicas.
///
/// Holds no secret: the URL is refused when it carries a password, which comes from the
/// variable `password_env` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresStoreConfig {
    /// `postgres://user@host:port/database`, without a password or query parameters.
    pub url: String,
    /// The *name* of the variable holding the password; `None` when the server needs none
    /// (trust or certificate authentication).
    pub password_env: Option<String>,
    /// Whether and how the connection is encrypted.
    pub tls: StoreTls,
    /// Connections kept open to the server.
    pub pool_size: u32,
    /// The SQL schema holding the sidecar's tables (created if missing), so they never
    /// mix with the application's.
    pub schema: String,
}

/// TLS to the Postgres server (`store.tls`, `store.ca_file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreTls {
    /// Plain TCP (`tls = "disable"`): only for a server on loopback or a trusted link.
    Disable,
    /// TLS with the server's certificate checked against the CA and its host name
    /// (`tls = "verify-full"`, the default).
    VerifyFull {
        /// A PEM CA bundle for the server's certificate; `None` trusts the webpki roots.
        ca_file: Option<PathBuf>,
    },
}

/// `[store]` as written: the keys of both backends, which [`StoreBackend`] then picks from.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct StoreSection {
    #[serde(deserialize_with = "via_some::<SqlitePath, _, _>")]
    sqlite_path: Option<PathBuf>,
    #[serde(deserialize_with = "via_some::<PostgresUrl, _, _>")]
    url: Option<String>,
    #[serde(deserialize_with = "via_some::<EnvVarName, _, _>")]
    password_env: Option<String>,
    tls: TlsMode,
    #[serde(deserialize_with = "via_some::<CaFile, _, _>")]
    ca_file: Option<PathBuf>,
    #[serde(deserialize_with = "via::<PoolSize, _, _>")]
    pool_size: u32,
    #[serde(deserialize_with = "via::<SqlIdentifier, _, _>")]
    schema: String,
}

/// `store.tls` as written.
#[derive(Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum TlsMode {
    #[default]
    VerifyFull,
    Disable,
}

impl Default for StoreSection {
    fn default() -> Self {
        let postgres = PostgresStoreConfig::new(String::new());
        Self {
            sqlite_path: None,
            url: None,
            password_env: None,
            tls: TlsMode::VerifyFull,
            ca_file: None,
            pool_size: postgres.pool_size,
            schema: postgres.schema,
        }
    }
}

/// Postgres when `url` is set, else the SQLite file at `sqlite_path` (or its default). The
/// loader refuses a file that sets both, and warns about Postgres keys without a `url`.
impl<'de> Deserialize<'de> for StoreBackend {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let section = StoreSection::deserialize(d)?;
        let Some(url) = section.url else {
            return Ok(section
                .sqlite_path
                .map_or_else(Self::default, |path| Self::Sqlite { path }));
        };
        Ok(Self::Postgres(PostgresStoreConfig {
            url,
            password_env: section.password_env,
            tls: match section.tls {
                TlsMode::VerifyFull => StoreTls::VerifyFull {
                    ca_file: section.ca_file,
                },
                TlsMode::Disable => StoreTls::Disable,
            },
            pool_size: section.pool_size,
            schema: section.schema,
        }))
    }
}

/// The audit trail (`[audit]`): hash-chained JSONL segments with signed checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Write the trail. Needs `signing_key_env` and `redact.hash_key_env`.
    pub enabled: bool,
    /// The trail's directory (a persistent volume; nothing else writes there).
    #[serde(serialize_with = "ser_path")]
    #[serde(deserialize_with = "via::<AuditDir, _, _>")]
    pub dir: PathBuf,
    /// The variable holding the Ed25519 seed that signs checkpoints (Base64 of 32 bytes).
    #[serde(deserialize_with = "via_some::<EnvVarName, _, _>")]
    pub signing_key_env: Option<String>,
    /// The app's identity, written as `actor.id` on every record of an app call.
    #[serde(deserialize_with = "via_some::<HeaderText, _, _>")]
    pub actor: Option<String>,
    /// When records are forced to disk.
    pub fsync: AuditFsync,
    /// Refuse app calls the trail cannot record (503 `audit_unavailable`), and hold each
    /// response until its record is on disk.
    pub fail_closed: bool,
    /// Records that may wait for the writer; beyond it they are lost, counted and alerted on.
    #[serde(deserialize_with = "via::<PositiveUsize, _, _>")]
    pub queue: usize,
    /// A signed checkpoint after this many records...
    #[serde(serialize_with = "ser_u64_saturating")]
    #[serde(deserialize_with = "via::<PositiveU64, _, _>")]
    pub checkpoint_every: u64,
    /// ...or this long, whichever comes first.
    #[serde(serialize_with = "humantime_serde::serialize")]
    #[serde(deserialize_with = "via::<PositiveDuration, _, _>")]
    pub checkpoint_interval: Duration,
    /// A new segment once the current one holds this many bytes...
    #[serde(serialize_with = "ser_u64_saturating")]
    #[serde(deserialize_with = "via::<PositiveU64, _, _>")]
    pub max_segment_bytes: u64,
    /// ...or is this old.
    #[serde(serialize_with = "humantime_serde::serialize")]
    #[serde(deserialize_with = "via::<PositiveDuration, _, _>")]
    pub max_segment_age: Duration,
    /// Closed segments older than this are deleted, and the deletion recorded.
    #[serde(serialize_with = "humantime_serde::serialize")]
    #[serde(deserialize_with = "via::<AuditRetention, _, _>")]
    pub retention: Duration,
}

/// When audit records are forced to disk (`audit.fsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditFsync {
    /// Group commit: batches are written at once and synced together, at most 50 ms
    /// later, or before a committed record's commit resolves.
    #[default]
    Batch,
    /// Never: the OS writes back when it likes (tmpfs, throwaway trails).
    Never,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            dir: PathBuf::from("audit"),
            signing_key_env: None,
            actor: None,
            fsync: AuditFsync::Batch,
            fail_closed: false,
            queue: 65_536,
            checkpoint_every: 10_000,
            checkpoint_interval: Duration::from_mins(1),
            max_segment_bytes: 64 << 20,
            max_segment_age: Duration::from_hours(24),
            retention: Duration::from_hours(400 * 24),
        }
    }
}

// === impl Config ===

impl Config {
    /// A configuration with every default filled in and the given FinCode base URL.
    ///
    /// The URL is taken as given (not validated or normalised); use it for programmatic set-ups
    /// such as `demo` and tests, and [`Config::load`](crate::Config::load) for operator input.
    pub fn with_base_url(base_url: Uri) -> Self {
        Self::with_upstream(UpstreamConfig::new(base_url))
    }

    /// Every default, with [`EXAMPLE_BASE_URL`] standing in for the missing base URL.
    fn unset() -> Self {
        Self::with_upstream(UpstreamConfig::unset())
    }

    fn with_upstream(upstream: UpstreamConfig) -> Self {
        Self {
            listen: ListenConfig::default(),
            listeners: ListenersConfig::default(),
            upstream,
            limits: LimitsConfig::default(),
            auth: AuthConfig::default(),
            log: LogConfig::default(),
            redact: RedactConfig::default(),
            traces: TracesConfig::default(),
            retry: RetryConfig::default(),
            breaker: BreakerConfig::default(),
            rate_limit: RateLimitConfig::default(),
            webhooks: WebhooksConfig::default(),
            store: StoreBackend::default(),
            audit: AuditConfig::default(),
            shutdown: ShutdownConfig::default(),
        }
    }
}

// === impl ListenConfig ===

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            egress: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            admin: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 9090)),
        }
    }
}

// === impl ListenersConfig ===

impl Default for ListenersConfig {
    fn default() -> Self {
        Self {
            // The app is on loopback and trusted more; a slow app (or a large head over a busy
            // loopback) gets the longer head timeout, and it needs many connections.
            egress: ListenerLimits {
                header_read_timeout: Duration::from_secs(30),
                max_connections: 1024,
                http2_max_concurrent_streams: 256,
                // Off: an app request may wait for FinCode with no progress for up to
                // retry.deadline (plus its Retry-After waits), and the app on loopback is
                // trusted; a stalled reader there only slows the app itself.
                stall_timeout: Duration::ZERO,
                ..ListenerLimits::default()
            },
            // Probes and scrapes are a handful of short requests.
            admin: ListenerLimits {
                max_connections: 64,
                http2_max_concurrent_streams: 16,
                // Probes and scrapes answer in milliseconds.
                stall_timeout: Duration::from_secs(10),
                ..ListenerLimits::default()
            },
            webhooks: ListenerLimits::default(),
        }
    }
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_mins(1),
            max_connections: 1024,
            http2_max_concurrent_streams: 64,
            http2_keepalive_interval: Duration::from_secs(30),
            http2_keepalive_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_mins(1),
        }
    }
}

// === impl UpstreamConfig ===

impl UpstreamConfig {
    /// Every upstream default, with the given base URL (there is no sensible default tenant).
    pub fn new(base_url: Uri) -> Self {
        Self {
            base_url,
            ca_file: None,
            allow_insecure: false,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            pool_idle_timeout: Duration::from_secs(30),
            pool_max_idle_per_host: 64,
            http2: true,
        }
    }

    /// Every default, with [`EXAMPLE_BASE_URL`] standing in for the missing base URL.
    fn unset() -> Self {
        Self::new(Uri::from_static(EXAMPLE_BASE_URL))
    }

    /// The base URL's path without a trailing `/` (`""` for a bare host), ready to have the
    /// app's request path appended.
    pub fn base_path(&self) -> &str {
        self.base_url.path().trim_end_matches('/')
    }
}

// === impl LimitsConfig ===

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_request_body_bytes: 10 * 1024 * 1024,
            max_request_header_bytes: 64 * 1024,
            max_concurrent_requests: 1024,
        }
    }
}

// === impl AuthConfig ===

impl AuthConfig {
    /// The `(key, variable)` pairs naming secrets that the configured mode reads.
    pub fn secret_env_vars(&self) -> Vec<(&'static str, &str)> {
        fn named<'a>(
            key: &'static str,
            var: Option<&'a String>,
        ) -> Option<(&'static str, &'a str)> {
            var.map(|v| (key, v.as_str()))
        }
        match self.mode {
            AuthMode::None => Vec::new(),
            AuthMode::Static => named("auth.token_env", self.token_env.as_ref())
                .into_iter()
                .collect(),
            AuthMode::Login => [
                named("auth.email_env", self.email_env.as_ref()),
                named("auth.password_env", self.password_env.as_ref()),
                named("auth.public_key_env", self.public_key_env.as_ref()),
            ]
            .into_iter()
            .flatten()
            .collect(),
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::None,
            header: HeaderName::from_static("x-auth-token"),
            token_env: None,
            extra_headers: default_extra_headers(),
            email_env: None,
            password_env: None,
            public_key_file: None,
            public_key_env: None,
            oaep_mgf1: OaepMgf1::Sha1,
            device_id_header: HeaderName::from_static("uuid"),
            device_id: DEFAULT_DEVICE_ID.to_owned(),
            refresh_before: Duration::from_mins(5),
            token_lifetime: Duration::from_hours(1),
            login_backoff_initial: Duration::from_secs(2),
            login_backoff_max: Duration::from_mins(5),
            login_retry_after_rejection: Duration::from_hours(1),
            renew_on_401_min_age: Duration::from_secs(10),
            logout_timeout: Duration::from_secs(2),
            login_path: "/securitymanagement/login".to_owned(),
            refresh_path: "/securitymanagement/refresh-token".to_owned(),
            logout_path: "/securitymanagement/logout".to_owned(),
        }
    }
}

/// The device id FinCode's API reference asks for ("Use 200").
pub(crate) const DEFAULT_DEVICE_ID: &str = "200";

/// FinCode identifies the calling platform by this header; sending it by default means the app
/// does not have to.
pub(crate) fn default_extra_headers() -> BTreeMap<String, String> {
    BTreeMap::from([("platform".to_owned(), "fincode".to_owned())])
}

// === impl LogConfig ===

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Json,
            bodies: false,
            body_level: BodyLevel::Debug,
            max_body_bytes: 64 * 1024,
        }
    }
}

impl Default for TracesConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            sample_ratio: 1.0,
            service_name: "fincode-sidecar".to_owned(),
            export_timeout: Duration::from_secs(10),
        }
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            backoff_base: Duration::from_millis(50),
            backoff_cap: Duration::from_secs(2),
            per_try_timeout: Duration::from_secs(10),
            deadline: Duration::from_secs(30),
            retry_after_cap: Duration::from_secs(10),
            budget_ratio: 0.2,
            budget_min_per_second: 10,
            budget_window: Duration::from_secs(10),
            max_replay_body: 64 * 1024,
            mint_idempotency_key: false,
        }
    }
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            consecutive_failures: 5,
            failure_ratio: 0.5,
            min_requests: 20,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(15),
            half_open_probes: 3,
        }
    }
}

/// The route FinCode charges money on: limited more tightly by default.
pub const CREATE_TRANSACTION_ROUTE: &str = "/transactionmanagement/create-transaction";

/// The FinCode routes the sidecar knows by name, as paths below `upstream.base_url`;
/// `{id}` matches one path segment. Metrics, logs and per-route limits use these names
/// (never raw paths), so `rate_limit.routes` may name only these.
pub const ROUTE_TEMPLATES: [&str; 8] = [
    "/securitymanagement/login",
    "/securitymanagement/refresh-token",
    "/securitymanagement/logout",
    CREATE_TRANSACTION_ROUTE,
    "/transactionmanagement/transactions",
    "/transactionmanagement/transactions/{id}",
    "/sandbox/echo",
    "/sandbox/ping",
];

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_second: 100,
            burst: 200,
            max_wait: Duration::from_millis(500),
            upstream_backoff: Duration::from_secs(1),
            routes: BTreeMap::from([(
                CREATE_TRANSACTION_ROUTE.to_owned(),
                RouteLimit {
                    per_second: 20,
                    burst: 40,
                },
            )]),
        }
    }
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 8081)),
            paths: vec!["/webhooks/fincode".to_owned()],
            max_body_bytes: 64 * 1024,
            max_unverified_bytes: 8 * 1024 * 1024,
            body_read_timeout: Duration::from_secs(10),
            tls_cert_file: None,
            tls_key_file: None,
            allow_ips: Vec::new(),
            trusted_proxies: Vec::new(),
            scheme: WebhookScheme::Hmac,
            secret_envs: Vec::new(),
            hmac_algorithm: HmacAlgorithm::Sha256,
            hmac_encoding: HmacEncoding::Hex,
            signature_header: None,
            signature_prefix: String::new(),
            tolerance: Duration::from_mins(5),
            dedupe_key: KeyTemplate::default_dedupe(),
            order_key: None,
            deliver_to: None,
            signing_secret_env: None,
            delivery_timeout: Duration::from_secs(10),
            lease: Duration::from_secs(30),
            delivery_concurrency: 16,
            max_attempts: 15,
            max_age: Duration::from_hours(24),
            retention: Duration::from_hours(7 * 24),
            dedupe_retention: Duration::from_hours(30 * 24),
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_mins(10),
            confirm_by_query: false,
            confirm_path: KeyTemplate::default_confirm_path(),
            confirm_status_pointer: "/data/status".to_owned(),
            admin_token_env: None,
        }
    }
}

// === impl StoreBackend ===

impl StoreBackend {
    /// The `(key, variable)` pairs naming the store's secrets: Postgres's password
    /// variable, when one is named.
    pub fn secret_env_vars(&self) -> Vec<(&'static str, &str)> {
        match self {
            Self::Postgres(PostgresStoreConfig {
                password_env: Some(var),
                ..
            }) => vec![("store.password_env", var.as_str())],
            _ => Vec::new(),
        }
    }
}

impl Default for StoreBackend {
    fn default() -> Self {
        Self::Sqlite {
            path: PathBuf::from("fincode-sidecar.db"),
        }
    }
}

/// Written as the `[store]` keys the loader reads back: `sqlite_path` alone, or the
/// Postgres keys. There is no password to leave out: the config never holds one.
impl Serialize for StoreBackend {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Sqlite<'a> {
            #[serde(serialize_with = "ser_path")]
            sqlite_path: &'a std::path::Path,
        }
        #[derive(Serialize)]
        struct Postgres<'a> {
            url: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            password_env: Option<&'a str>,
            tls: &'static str,
            #[serde(
                skip_serializing_if = "Option::is_none",
                serialize_with = "ser_opt_path"
            )]
            ca_file: Option<PathBuf>,
            pool_size: u32,
            schema: &'a str,
        }
        match self {
            Self::Sqlite { path } => Sqlite { sqlite_path: path }.serialize(s),
            Self::Postgres(pg) => {
                let (tls, ca_file) = match &pg.tls {
                    StoreTls::Disable => ("disable", None),
                    StoreTls::VerifyFull { ca_file } => ("verify-full", ca_file.clone()),
                };
                Postgres {
                    url: &pg.url,
                    password_env: pg.password_env.as_deref(),
                    tls,
                    ca_file,
                    pool_size: pg.pool_size,
                    schema: &pg.schema,
                }
                .serialize(s)
            }
        }
    }
}

// === impl PostgresStoreConfig ===

impl PostgresStoreConfig {
    /// Every Postgres default, with the given URL (there is no sensible default server).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            password_env: None,
            tls: StoreTls::VerifyFull { ca_file: None },
            pool_size: 8,
            schema: "fincode_sidecar".to_owned(),
        }
    }
}

// === serde helpers ===
// `http` types do not implement `Serialize`; write them as the strings the loader reads back.

fn ser_display<T: std::fmt::Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

#[allow(clippy::ref_option)] // serde's `serialize_with` hands us `&Option<T>`.
fn ser_opt_display<T: std::fmt::Display, S: Serializer>(
    value: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => s.collect_str(value),
        None => s.serialize_none(),
    }
}

fn ser_header_name<S: Serializer>(name: &HeaderName, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(name.as_str())
}

// The loader only ever produces UTF-8 paths (they come from TOML strings); a programmatically
// built non-UTF-8 path is written lossily rather than failing the whole file.
#[allow(clippy::ref_option)] // serde's `serialize_with` hands us `&Option<_>`.
fn ser_opt_path<S: Serializer>(path: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
    match path {
        Some(path) => s.serialize_str(&path.to_string_lossy()),
        None => s.serialize_none(),
    }
}

// TOML integers are i64; anything above is "unlimited" in practice, so saturate rather than fail.
#[allow(clippy::trivially_copy_pass_by_ref)] // serde's `serialize_with` hands us `&u64`.
fn ser_u64_saturating<S: Serializer>(value: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_i64(i64::try_from(*value).unwrap_or(i64::MAX))
}

fn ser_path<S: Serializer>(path: &std::path::Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path.to_string_lossy())
}

fn ser_display_list<T: std::fmt::Display, S: Serializer>(
    values: &[T],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(values.iter().map(ToString::to_string))
}
