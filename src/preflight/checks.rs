//! The checks: one function per checklist line, in the checklist's order. Live checks
//! (FinCode, the running sidecar, the audit trail, the store) run once and feed the items
//! that depend on them.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use fincode_config::{AuthMode, Config, Env, Problem, Secrets, WebhookScheme};
use fincode_proxy::{EgressProxy, Probe};
use fincode_redact::Redactor;
use fincode_telemetry::Metrics;
use http::Method;
use secrecy::ExposeSecret as _;

/// A verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// Checked against the live setup, and right.
    Pass,
    /// Checked and wrong; the reason names the key and the fix.
    Fail,
    /// Not a program's to check; the reason says what the operator must do.
    Manual,
}

// === impl Status ===

impl Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::Manual => "manual",
        }
    }
}

/// One checklist line and its verdict.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    /// Stable, for machines (`security.https`).
    pub(crate) id: &'static str,
    /// The checklist's section.
    pub(crate) section: &'static str,
    /// The checklist's line, as FinCode words it (`item` in the JSON).
    pub(crate) line: &'static str,
    pub(crate) status: Status,
    /// One line: why, and for a failure the fix naming the config key. Never a secret.
    pub(crate) reason: String,
}

const SECURITY: &str = "Security Review";
const ERRORS: &str = "Error Handling";
const WEBHOOKS: &str = "Webhook Setup";
const COMPLIANCE: &str = "Compliance";
const PRODUCTION: &str = "Production Credentials";
const MONITORING: &str = "Monitoring & Logging";
const SUPPORT: &str = "Support";
const LAUNCH: &str = "Launch Day";

fn item(
    id: &'static str,
    section: &'static str,
    line: &'static str,
    status: Status,
    reason: impl Into<String>,
) -> Item {
    Item {
        id,
        section,
        line,
        status,
        reason: reason.into(),
    }
}

/// What the command line adds to the config.
#[derive(Debug, Clone, Default)]
pub(crate) struct Options {
    /// `--production`: a non-production base URL fails.
    pub(crate) production: bool,
    /// `--alerts FILE`: the Prometheus rules to check.
    pub(crate) alerts: Option<PathBuf>,
}

/// The harmless authenticated call: FinCode's transaction list, one item. A `GET`, so it
/// can never create anything.
pub(crate) const PROBE_PATH: &str = "/transactionmanagement/transactions?page=0&size=1";

/// How long a read of the running sidecar's admin port may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(3);

/// The secrets the config names, read once ([`Config::partial_secrets`]): the set ones,
/// and a problem for each unset one, so that each check reports its own variables and the
/// rest still run.
struct Resolved {
    secrets: Secrets,
    problems: Vec<Problem>,
}

// === impl Resolved ===

impl Resolved {
    fn new(config: &Config, env: &Env) -> Self {
        let (secrets, problems) = config.partial_secrets(env);
        Self { secrets, problems }
    }

    /// Whether the variable `key` (as `Config::secrets` keys it) names is unset or blank.
    fn is_unset(&self, key: &str) -> bool {
        self.problems.iter().any(|problem| problem.key == key)
    }
}

/// Runs every check, in the checklist's order.
pub(crate) async fn run(config: &Config, env: &Env, options: &Options) -> Vec<Item> {
    let resolved = Resolved::new(config, env);
    // The live parts first: several items read each.
    let proxy = egress_proxy(config, &resolved);
    let session = session(config, &proxy).await;
    // Before reading /metrics: this call gives the request metrics their first series.
    let door = app_door(config).await;
    let admin = admin_port(config).await;
    let alerts = options.alerts.as_deref().map(read_alerts);

    let mut items = vec![
        credentials(config, &resolved),
        https(config),
        session.item,
        clock_skew(config, session.probe.as_ref()),
        webhook_validation(config, &resolved),
        redaction(config, &resolved),
        retry(config),
        breaker(config),
        item(
            "errors.user_feedback",
            ERRORS,
            "User Feedback: Provide clear error messages to users",
            Status::Manual,
            "the sidecar answers every error it makes as RFC 9457 application/problem+json \
             (title, detail, correlation_id, retry_after) with an x-sidecar-error header \
             naming the cause; make the app turn these into messages for its users and show \
             the correlation id",
        ),
        alerts_item(
            "errors.monitoring",
            ERRORS,
            "Monitoring: Set up alerts for critical errors",
            alerts.as_ref(),
            AlertKind::Critical,
        ),
    ];
    items.extend(webhook_setup(config, &resolved).await);
    items.extend([
        item(
            "compliance.data_privacy",
            COMPLIANCE,
            "Data Privacy: Ensure GDPR/NDPR compliance for user data",
            Status::Manual,
            format!(
                "the sidecar keeps personal data out of logs, traces and the audit trail (see \
                 Error Logging) and deletes delivered webhook bodies after webhooks.retention \
                 ({}); the merchant's records of processing, lawful basis and data-subject \
                 requests (`fincode-sidecar audit find`) remain the merchant's to confirm",
                humantime::format_duration(config.webhooks.retention)
            ),
        ),
        item(
            "compliance.terms",
            COMPLIANCE,
            "Terms & Conditions: Display payment terms to users",
            Status::Manual,
            "the app must show FinCode's payment terms to its users before they pay; nothing \
             the sidecar sees",
        ),
        audit(config, &resolved).await,
    ]);
    items.extend(production(config, options));
    items.extend(monitoring(config, &admin, door, alerts.as_ref()));
    items.extend(launch());
    items
}

/// The proxy `run` builds, or why it cannot be built: what [`EgressProxy::new`] needs
/// first is the redactor's hash key, then the credentials' variables.
fn egress_proxy(config: &Config, resolved: &Resolved) -> Result<EgressProxy, String> {
    if let Some(unset) = hash_key_unset(config, resolved) {
        return Err(unset);
    }
    if let Some(problem) = resolved
        .problems
        .iter()
        .find(|problem| problem.key.starts_with("auth."))
    {
        return Err(problem.message.clone());
    }
    EgressProxy::new(config, &resolved.secrets, Metrics::new()).map_err(|error| error.to_string())
}

/// Why the redactor cannot be built: `redact.hash_key_env` names an unset variable.
fn hash_key_unset(config: &Config, resolved: &Resolved) -> Option<String> {
    let var = config.redact.hash_key_env.as_deref()?;
    resolved.is_unset("redact.hash_key_env").then(|| {
        format!(
            "redact.hash_key_env: the variable {var} is not set or empty; set it to a random \
             key of at least 32 bytes, or remove redact.hash_key_env (hashed fields are then \
             dropped)"
        )
    })
}

// === Security Review ===

fn credentials(config: &Config, resolved: &Resolved) -> Item {
    const LINE: &str =
        "Credentials Management: Confirm API credentials are stored in environment variables";
    if config.auth.mode == AuthMode::None {
        return item(
            "security.credentials",
            SECURITY,
            LINE,
            Status::Fail,
            "auth.mode = \"none\": the app sends its own FinCode credentials, so the sidecar \
             cannot vouch that they live only in the environment; fix: set auth.mode = \
             \"login\" (with auth.email_env, auth.password_env) or \"static\" (with \
             auth.token_env)",
        );
    }
    let named = config.auth.secret_env_vars();
    let unset: Vec<String> = named
        .iter()
        .filter(|(key, _)| resolved.is_unset(key))
        .map(|(key, var)| format!("{var} ({key})"))
        .collect();
    let listed = named
        .iter()
        .map(|(key, var)| format!("{var} ({key})"))
        .collect::<Vec<_>>()
        .join(", ");
    if unset.is_empty() {
        item(
            "security.credentials",
            SECURITY,
            LINE,
            Status::Pass,
            format!(
                "auth.mode = \"{}\": read from the environment, all set and non-empty (values \
                 not shown): {listed}; the config refuses a secret written in the file",
                mode_name(config.auth.mode)
            ),
        )
    } else {
        item(
            "security.credentials",
            SECURITY,
            LINE,
            Status::Fail,
            format!(
                "not set or empty: {}; fix: set each in the sidecar's environment (e.g. from \
                 a Kubernetes Secret), never in the config file",
                unset.join(", ")
            ),
        )
    }
}

fn mode_name(mode: AuthMode) -> &'static str {
    match mode {
        AuthMode::None => "none",
        AuthMode::Static => "static",
        AuthMode::Login => "login",
    }
}

fn https(config: &Config) -> Item {
    const LINE: &str = "HTTPS Only: Ensure all API calls use HTTPS";
    let upstream = &config.upstream;
    if upstream.base_url.scheme_str() == Some("https") && !upstream.allow_insecure {
        item(
            "security.https",
            SECURITY,
            LINE,
            Status::Pass,
            format!(
                "upstream.base_url is https (rustls, TLS 1.2+, certificates checked{}); the \
                 client refuses plain http",
                if upstream.ca_file.is_some() {
                    " against the webpki roots and upstream.ca_file"
                } else {
                    " against the webpki roots"
                }
            ),
        )
    } else {
        item(
            "security.https",
            SECURITY,
            LINE,
            Status::Fail,
            "upstream.allow_insecure = true lets the sidecar call FinCode over plain http \
             (tests only): credentials and payments would travel unencrypted; fix: remove \
             upstream.allow_insecure and use the https base URL",
        )
    }
}

/// The token check's verdict and FinCode's answer to the probe (for the clock).
struct Session {
    item: Item,
    probe: Result<Probe, String>,
}

/// A live login and refresh (login mode) or an authenticated `GET` (static mode), with a
/// session of preflight's own that is logged out afterwards.
async fn session(config: &Config, proxy: &Result<EgressProxy, String>) -> Session {
    const LINE: &str = "Token Security: Implement secure token storage and automatic refresh";
    let fail = |reason: String| item("security.token", SECURITY, LINE, Status::Fail, reason);
    let proxy = match proxy {
        Ok(proxy) => proxy,
        Err(error) => {
            return Session {
                item: fail(format!(
                    "the sidecar's FinCode client cannot be built: {error}"
                )),
                probe: Err(format!("not reached: {error}")),
            };
        }
    };
    let probe_text =
        |probe: &Probe| format!("GET {PROBE_PATH} answered HTTP {}", probe.status.as_u16());
    match config.auth.mode {
        AuthMode::Login => {
            let credentials = proxy.credentials();
            if let Err(failure) = credentials.login_now().await {
                // Without a token the probe goes out bare: FinCode's 401 still carries a
                // `Date` for the clock check.
                let probe = proxy.probe(PROBE_PATH, false).await;
                return Session {
                    item: fail(format!(
                        "a live login with the configured credentials failed: {failure}"
                    )),
                    probe: probe.map_err(|e| e.detail().to_owned()),
                };
            }
            let refreshed = credentials.refresh_now().await;
            let probe = proxy.probe(PROBE_PATH, true).await;
            // Our own session only: the running sidecar's tokens are untouched.
            let logged_out = credentials.logout().await;
            let logout_note = if logged_out {
                "preflight's session was logged out"
            } else {
                "logging preflight's session out failed (its tokens expire on their own)"
            };
            let item = match (&refreshed, &probe) {
                (Err(failure), _) => fail(format!(
                    "logged in, but a forced refresh failed: {failure}; the sidecar could not \
                     renew its token before expiry; check auth.refresh_path; {logout_note}"
                )),
                (Ok(()), Ok(answer)) if matches!(answer.status.as_u16(), 401 | 403) => {
                    fail(format!(
                        "login and refresh worked, but FinCode refused the refreshed token: {}; \
                         check auth.header (FinCode reads X-Auth-Token); {logout_note}",
                        probe_text(answer)
                    ))
                }
                (Ok(()), answer) => item(
                    "security.token",
                    SECURITY,
                    LINE,
                    Status::Pass,
                    format!(
                        "live login and forced refresh with the configured credentials \
                         succeeded ({}); tokens live only in memory, zeroized, refreshed \
                         {} before expiry, single-flight; {logout_note}",
                        answer.as_ref().map_or_else(
                            |e| format!("the authenticated GET failed: {}", e.detail()),
                            probe_text
                        ),
                        humantime::format_duration(config.auth.refresh_before)
                    ),
                ),
            };
            Session {
                item,
                probe: probe.map_err(|e| e.detail().to_owned()),
            }
        }
        AuthMode::Static => {
            let probe = proxy.probe(PROBE_PATH, true).await;
            let var = config.auth.token_env.as_deref().unwrap_or("?");
            let item = match &probe {
                Ok(answer) if answer.status.is_success() => item(
                    "security.token",
                    SECURITY,
                    LINE,
                    Status::Pass,
                    format!(
                        "static-token mode: no login or refresh exists, so an authenticated, \
                         harmless GET was made instead: {}; the token lives only in memory; \
                         renew it in {var} before it expires (dashboard tokens last 24 h to a \
                         year) and restart",
                        probe_text(answer)
                    ),
                ),
                Ok(answer) if matches!(answer.status.as_u16(), 401 | 403) => fail(format!(
                    "FinCode rejected the static token: {}; fix: put a valid dashboard API \
                     token in {var} (auth.token_env)",
                    probe_text(answer)
                )),
                Ok(answer) => fail(format!(
                    "the static token could not be confirmed: {}",
                    probe_text(answer)
                )),
                Err(error) => fail(format!("FinCode could not be reached: {}", error.detail())),
            };
            Session {
                item,
                probe: probe.map_err(|e| e.detail().to_owned()),
            }
        }
        AuthMode::None => {
            let probe = proxy.probe(PROBE_PATH, false).await;
            Session {
                item: fail(
                    "auth.mode = \"none\": the app holds and refreshes its own tokens, which \
                     the sidecar cannot check; fix: set auth.mode = \"login\" so the sidecar \
                     keeps tokens in memory and refreshes them ahead of expiry"
                        .to_owned(),
                ),
                probe: probe.map_err(|e| e.detail().to_owned()),
            }
        }
    }
}

/// The largest clock skew tolerated, and why: half of the tightest margin the sidecar
/// relies on a shared clock for.
///
/// - Login mode reads the token's expiry (`exp`, FinCode's clock) against the local clock
///   and refreshes `auth.refresh_before` early: a local clock behind FinCode's by that much
///   sends expired tokens.
/// - Timestamped webhook schemes (`standard-webhooks`, `stripe`) refuse events signed more
///   than `webhooks.tolerance` away from the local clock.
///
/// Half of the smaller one leaves the other half for the skew to grow between checks. With
/// neither in play, half of FinCode's five-minute refresh lead. Never under 5 s: `Date` has
/// a one-second resolution and the round trip blurs it further.
pub(crate) fn skew_threshold(config: &Config) -> (Duration, String) {
    let mut margins = Vec::new();
    if config.auth.mode == AuthMode::Login {
        margins.push(("auth.refresh_before", config.auth.refresh_before));
    }
    if config.webhooks.enabled
        && matches!(
            config.webhooks.scheme,
            WebhookScheme::StandardWebhooks | WebhookScheme::Stripe
        )
    {
        margins.push(("webhooks.tolerance", config.webhooks.tolerance));
    }
    let (key, margin) = margins
        .into_iter()
        .min_by_key(|(_, margin)| *margin)
        .unwrap_or(("FinCode's 5 min refresh lead", Duration::from_mins(5)));
    let threshold = (margin / 2).max(Duration::from_secs(5));
    (
        threshold,
        format!("half of {key} ({})", humantime::format_duration(margin)),
    )
}

/// FinCode's clock minus ours (seconds, signed), allowing for `Date`'s one-second
/// resolution and the round trip: zero when they could agree.
pub(crate) fn skew_secs(probe: &Probe, date: SystemTime) -> f64 {
    let signed = |a: SystemTime, b: SystemTime| match a.duration_since(b) {
        Ok(ahead) => ahead.as_secs_f64(),
        Err(behind) => -behind.duration().as_secs_f64(),
    };
    // FinCode stamped the answer between sending and receiving, truncated to the second:
    // its clock read somewhere in [date, date + 1 s) while ours read [sent_at, received_at].
    let low = signed(date, probe.received_at);
    let high = signed(date, probe.sent_at) + 1.0;
    if low > 0.0 {
        low
    } else if high < 0.0 {
        high
    } else {
        0.0
    }
}

fn clock_skew(config: &Config, probe: Result<&Probe, &String>) -> Item {
    const LINE: &str = "Clock in sync with FinCode (token expiry and webhook timestamps use it)";
    let (threshold, why) = skew_threshold(config);
    let answer = match probe {
        Ok(answer) => answer,
        Err(error) => {
            return item(
                "security.clock_skew",
                SECURITY,
                LINE,
                Status::Fail,
                format!("not checked: FinCode's Date header could not be read ({error})"),
            );
        }
    };
    let Some(date) = answer.date else {
        return item(
            "security.clock_skew",
            SECURITY,
            LINE,
            Status::Manual,
            "FinCode's answer had no valid Date header to compare with; check the host's NTP \
             sync (`timedatectl`, chrony)",
        );
    };
    let skew = skew_secs(answer, date);
    let direction = if skew > 0.0 { "ahead of" } else { "behind" };
    let limit = humantime::format_duration(threshold);
    if skew.abs() > threshold.as_secs_f64() {
        item(
            "security.clock_skew",
            SECURITY,
            LINE,
            Status::Fail,
            format!(
                "FinCode's clock is {:.0} s {direction} this host's, over the {limit} allowed \
                 ({why}); fix: sync this host's clock (NTP: chrony or systemd-timesyncd) \
                 before going live",
                skew.abs()
            ),
        )
    } else {
        item(
            "security.clock_skew",
            SECURITY,
            LINE,
            Status::Pass,
            format!(
                "within {:.0} s of FinCode's Date header (allowed: {limit}, {why})",
                skew.abs()
            ),
        )
    }
}

fn webhook_validation(config: &Config, resolved: &Resolved) -> Item {
    const LINE: &str = "Webhook Validation: Verify webhook signature validation is implemented";
    let webhooks = &config.webhooks;
    if !webhooks.enabled {
        return item(
            "security.webhook_validation",
            SECURITY,
            LINE,
            Status::Manual,
            "webhooks.enabled = false: the sidecar does not receive FinCode's webhooks; if the \
             app receives them itself it must verify them, or set webhooks.enabled = true and \
             let the sidecar verify, deduplicate and deliver them",
        );
    }
    let fail = |reason: String| {
        item(
            "security.webhook_validation",
            SECURITY,
            LINE,
            Status::Fail,
            reason,
        )
    };
    if webhooks.scheme == WebhookScheme::None {
        if webhooks.allow_ips.is_empty() {
            return fail(
                "webhooks.scheme = \"none\" with no webhooks.allow_ips: anyone who reaches the \
                 listener can post a fake payment event; fix: list FinCode's source addresses \
                 in webhooks.allow_ips, or use a signature scheme"
                    .to_owned(),
            );
        }
        return item(
            "security.webhook_validation",
            SECURITY,
            LINE,
            Status::Pass,
            format!(
                "webhooks.scheme = \"none\" (FinCode documents no signature): only {} allowed \
                 source range(s) in webhooks.allow_ips vouch for events{}",
                webhooks.allow_ips.len(),
                if webhooks.confirm_by_query {
                    ", and each is confirmed against FinCode before delivery"
                } else {
                    "; consider webhooks.confirm_by_query = true"
                }
            ),
        );
    }
    let unset: Vec<&str> = webhooks
        .secret_envs
        .iter()
        .enumerate()
        .filter(|(index, _)| resolved.is_unset(&format!("webhooks.secret_envs[{index}]")))
        .map(|(_, var)| var.as_str())
        .collect();
    if webhooks.secret_envs.is_empty() || unset.len() == webhooks.secret_envs.len() {
        return fail(format!(
            "no webhook secret is set{}; every event would be refused; fix: set the \
             variable(s) webhooks.secret_envs names to the secret FinCode gave you",
            if unset.is_empty() {
                String::new()
            } else {
                format!(" (unset: {})", unset.join(", "))
            }
        ));
    }
    item(
        "security.webhook_validation",
        SECURITY,
        LINE,
        Status::Pass,
        format!(
            "webhooks.scheme = \"{}\" over the raw bytes, constant-time, with {} secret(s) set \
             from the environment{}",
            scheme_name(webhooks.scheme),
            webhooks.secret_envs.len() - unset.len(),
            if unset.is_empty() {
                String::new()
            } else {
                format!(" (unset, ignored: {})", unset.join(", "))
            }
        ),
    )
}

fn scheme_name(scheme: WebhookScheme) -> &'static str {
    match scheme {
        WebhookScheme::Hmac => "hmac",
        WebhookScheme::StandardWebhooks => "standard-webhooks",
        WebhookScheme::Stripe => "stripe",
        WebhookScheme::SharedSecret => "shared-secret",
        WebhookScheme::None => "none",
    }
}

// --- the redaction self-test ---

/// What the self-test runs canaries through: the four doors of [`Redactor`]. A trait so
/// that the unit tests can show the self-test catches a redactor that lets data through.
pub(crate) trait Scrub {
    fn json(&self, body: &[u8]) -> String;
    fn header_value(&self, name: &str, value: &str) -> String;
    fn url(&self, url: &str) -> String;
    fn text(&self, text: &str) -> String;
}

impl Scrub for Redactor {
    fn json(&self, body: &[u8]) -> String {
        Redactor::json(self, body)
    }
    fn header_value(&self, name: &str, value: &str) -> String {
        Redactor::header_value(self, name, value.as_bytes())
    }
    fn url(&self, url: &str) -> String {
        Redactor::url(self, url)
    }
    fn text(&self, text: &str) -> String {
        Redactor::text(self, text).into_owned()
    }
}

/// One planted value.
struct Canary {
    what: &'static str,
    /// The JSON field it is planted under.
    field: &'static str,
    value: &'static str,
    /// A secret: not even its last four characters may be written down (masking them is
    /// a leak); other canaries leak only when whole.
    secret: bool,
}

/// Made-up values, distinctive enough not to appear by chance (the tails of the secrets
/// are letters that a hex pseudonym or a mask cannot produce).
const CANARIES: &[Canary] = &[
    Canary {
        what: "card number (PAN)",
        field: "cardNumber",
        value: "4111111111111111",
        secret: false,
    },
    Canary {
        what: "CVV",
        field: "cvv",
        value: "\"837\"",
        secret: false,
    },
    Canary {
        what: "access token",
        field: "token",
        value: "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJwcmVmbGlnaHQifQ.pfCanaryTokQjXk",
        secret: true,
    },
    Canary {
        what: "password",
        field: "currentPassword",
        value: "pf-Canary-Pw-ZqWv",
        secret: true,
    },
    Canary {
        what: "email",
        field: "email",
        value: "ada.canary@preflight.example",
        secret: false,
    },
    Canary {
        what: "name",
        field: "beneficiaryFullName",
        value: "Adaeze Canarywoman",
        secret: false,
    },
];

/// A canary that got through, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Leak {
    pub(crate) what: &'static str,
    pub(crate) field: &'static str,
    pub(crate) place: &'static str,
}

/// Runs a canary request (JSON body, headers, URL, an error message) through `scrub` and
/// names every canary that survives.
pub(crate) fn redaction_leaks(scrub: &dyn Scrub) -> Vec<Leak> {
    let value = |field: &str| {
        CANARIES
            .iter()
            .find(|c| c.field == field)
            .map_or("", |c| c.value.trim_matches('"'))
    };
    let mut body = String::from("{");
    for (i, canary) in CANARIES.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        let quoted = if canary.value.starts_with('"') {
            canary.value.to_owned()
        } else {
            format!("\"{}\"", canary.value)
        };
        let _ = write!(body, "\"{}\":{quoted}", canary.field);
    }
    body.push('}');
    let token = value("token");
    let password = value("currentPassword");
    let headers = [
        scrub.header_value("x-auth-token", token),
        scrub.header_value("authorization", &format!("Bearer {token}")),
        scrub.header_value("password", password),
        scrub.header_value("x-customer-email", value("email")),
    ]
    .join("\n");
    let url = scrub.url(&format!(
        "/transactionmanagement/transactions?token={token}&password={password}&email={}&pan={}",
        value("email"),
        value("cardNumber")
    ));
    let text = scrub.text(&format!(
        "payment failed for card {} of {}",
        value("cardNumber"),
        value("email")
    ));
    let outputs = [
        ("JSON body", scrub.json(body.as_bytes())),
        ("headers", headers),
        ("URL", url),
        ("free text", text),
    ];
    let mut leaks = Vec::new();
    for canary in CANARIES {
        let whole = canary.value;
        let tail: String = {
            let bare = whole.trim_matches('"');
            let count = bare.chars().count();
            bare.chars().skip(count.saturating_sub(4)).collect()
        };
        for (place, output) in &outputs {
            let leaked = output.contains(whole)
                // An unquoted canary (the CVV is matched with its quotes, being short).
                || (!whole.starts_with('"') && output.contains(whole.trim_matches('"')))
                || (canary.secret && output.contains(&tail));
            if leaked {
                leaks.push(Leak {
                    what: canary.what,
                    field: canary.field,
                    place,
                });
            }
        }
    }
    leaks
}

fn redaction(config: &Config, resolved: &Resolved) -> Item {
    const LINE: &str = "Error Logging: Ensure sensitive data (tokens, passwords) is not logged";
    let built = hash_key_unset(config, resolved).map_or_else(
        || fincode_proxy::redactor(&config.redact, &resolved.secrets).map_err(|e| e.to_string()),
        Err,
    );
    let redactor = match built {
        Ok(redactor) => redactor,
        Err(error) => {
            return item(
                "security.error_logging",
                SECURITY,
                LINE,
                Status::Fail,
                format!("the redactor cannot be built: {error}"),
            );
        }
    };
    let leaks = redaction_leaks(&redactor);
    if leaks.is_empty() {
        return item(
            "security.error_logging",
            SECURITY,
            LINE,
            Status::Pass,
            format!(
                "redaction self-test: a canary PAN, CVV, token, password, email and name in a \
                 JSON body, headers, a URL and free text all came out scrubbed by the redactor \
                 `run` builds from [redact] (logs, traces and the audit trail all use it); \
                 log.bodies = {}",
                config.log.bodies
            ),
        );
    }
    let normalise = |key: &str| {
        key.chars()
            .filter(|c| *c != '_' && *c != '-')
            .map(|c| c.to_ascii_lowercase())
            .collect::<String>()
    };
    let mut named = Vec::new();
    for leak in &leaks {
        let text = format!("{} ({}) in the {}", leak.what, leak.field, leak.place);
        if !named.contains(&text) {
            named.push(text);
        }
    }
    let overrides: Vec<String> = leaks
        .iter()
        .filter_map(|leak| {
            config
                .redact
                .fields
                .keys()
                .find(|key| normalise(key) == normalise(leak.field))
                .map(|key| format!("redact.fields.{key}"))
        })
        .fold(Vec::new(), |mut keys, key| {
            if !keys.contains(&key) {
                keys.push(key);
            }
            keys
        });
    let fix = if overrides.is_empty() {
        "fix: review [redact] (redact.fields, redact.headers, redact.query_params)".to_owned()
    } else {
        format!(
            "fix: remove {} or set it to \"drop\" (secrets must not keep even their last 4 \
             characters)",
            overrides.join(", ")
        )
    };
    item(
        "security.error_logging",
        SECURITY,
        LINE,
        Status::Fail,
        format!(
            "redaction self-test: canary survived: {}; {fix}",
            named.join(", ")
        ),
    )
}

// === Error Handling ===

fn retry(config: &Config) -> Item {
    const LINE: &str = "Network Failures: Implement retry logic with exponential backoff";
    let retry = &config.retry;
    if retry.max_attempts <= 1 {
        return item(
            "errors.network",
            ERRORS,
            LINE,
            Status::Fail,
            "retry.max_attempts = 1: failed tries to FinCode are never retried; fix: set \
             retry.max_attempts = 3 (idempotent calls and keyed POSTs only are retried)",
        );
    }
    let d = humantime::format_duration;
    item(
        "errors.network",
        ERRORS,
        LINE,
        Status::Pass,
        format!(
            "up to {} tries, exponential backoff with full jitter from {} to {}, {} per try, \
             {} overall, retry budget {:.0} % + {}/s; only idempotent calls and POSTs with \
             X-Idempotency-Key are retried",
            retry.max_attempts,
            d(retry.backoff_base),
            d(retry.backoff_cap),
            d(retry.per_try_timeout),
            d(retry.deadline),
            retry.budget_ratio * 100.0,
            retry.budget_min_per_second
        ),
    )
}

fn breaker(config: &Config) -> Item {
    const LINE: &str = "Graceful Degradation: Handle API downtime gracefully";
    let breaker = &config.breaker;
    if !breaker.enabled {
        return item(
            "errors.degradation",
            ERRORS,
            LINE,
            Status::Fail,
            "breaker.enabled = false: during a FinCode outage every call waits for its \
             timeouts and retries; fix: set breaker.enabled = true",
        );
    }
    item(
        "errors.degradation",
        ERRORS,
        LINE,
        Status::Pass,
        format!(
            "circuit breaker on: opens after {} failures in a row or {:.0} % of at least {} \
             calls in {}, answers 503 circuit_open for {}, then probes; load shedding above \
             {} calls in flight",
            breaker.consecutive_failures,
            breaker.failure_ratio * 100.0,
            breaker.min_requests,
            humantime::format_duration(breaker.window),
            humantime::format_duration(breaker.open_for),
            config.limits.max_concurrent_requests
        ),
    )
}

// === alerts ===

/// The rules of a Prometheus rules file: `(alert name, expression)`.
type Rules = Result<Vec<(String, String)>, String>;

/// Reads `--alerts FILE`: a Prometheus rules file (`groups[].rules[]`), or a
/// PrometheusRule object (`spec.groups[].rules[]`).
fn read_alerts(path: &Path) -> Rules {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    let doc: serde_json::Value = serde_norway::from_str(&text)
        .map_err(|error| format!("{} does not parse as YAML: {error}", path.display()))?;
    let groups = doc
        .get("groups")
        .or_else(|| doc.get("spec").and_then(|spec| spec.get("groups")))
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| {
            format!(
                "{} has no `groups` list: not a Prometheus rules file",
                path.display()
            )
        })?;
    Ok(groups
        .iter()
        .filter_map(|group| group.get("rules").and_then(serde_json::Value::as_array))
        .flatten()
        .filter_map(|rule| {
            let name = rule.get("alert")?.as_str()?;
            let expr = match rule.get("expr")? {
                serde_json::Value::String(expr) => expr.clone(),
                other => other.to_string(),
            };
            Some((name.to_owned(), expr))
        })
        .collect())
}

/// Which of the checklist's alerts an item is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AlertKind {
    /// All three: "alerts for critical errors".
    Critical,
    /// "High error rates (>5%)".
    ErrorRate,
    /// "Slow response times (>3 seconds)".
    Latency,
    /// "Failed webhook deliveries".
    WebhookFailures,
}

/// Whether `expr` compares with `> bound` (blanks ignored), the bound not followed by
/// another digit (`> 3` but not `> 30`).
fn compares_above(expr: &str, bound: &str) -> bool {
    let compact: String = expr.chars().filter(|c| !c.is_whitespace()).collect();
    let needle = format!(">{bound}");
    compact.match_indices(&needle).any(|(at, _)| {
        !compact[at + needle.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit() || c == '.')
    })
}

/// The alert in `rules` that covers `kind`, by what its expression measures.
pub(crate) fn find_alert(rules: &[(String, String)], kind: AlertKind) -> Option<&str> {
    rules
        .iter()
        .find(|(_, expr)| match kind {
            AlertKind::ErrorRate => {
                (expr.contains("5xx") || expr.contains("error"))
                    && (compares_above(expr, "0.05") || compares_above(expr, "5"))
            }
            AlertKind::Latency => expr.contains("duration") && compares_above(expr, "3"),
            AlertKind::WebhookFailures => {
                expr.contains("fincode_webhook_deliveries_total")
                    && (expr.contains("\"failed\"") || expr.contains("\"dead\""))
            }
            AlertKind::Critical => false,
        })
        .map(|(name, _)| name.as_str())
}

fn alerts_item(
    id: &'static str,
    section: &'static str,
    line: &'static str,
    rules: Option<&Rules>,
    kind: AlertKind,
) -> Item {
    let Some(rules) = rules else {
        return item(
            id,
            section,
            line,
            Status::Manual,
            "deploy/prometheus/alerts.yaml (in the sidecar's repository, not on this host) \
             holds the rules, with promtool tests; load it into Prometheus (the Kubernetes \
             base renders it as a PrometheusRule), then rerun with --alerts FILE to check it",
        );
    };
    let rules = match rules {
        Ok(rules) => rules,
        Err(error) => {
            return item(
                id,
                section,
                line,
                Status::Fail,
                format!("{error}; fix: load deploy/prometheus/alerts.yaml"),
            );
        }
    };
    let kinds: &[AlertKind] = if kind == AlertKind::Critical {
        &[
            AlertKind::ErrorRate,
            AlertKind::Latency,
            AlertKind::WebhookFailures,
        ]
    } else {
        std::slice::from_ref(&kind)
    };
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for kind in kinds {
        match find_alert(rules, *kind) {
            Some(name) => found.push(name),
            None => missing.push(match kind {
                AlertKind::ErrorRate => "error rate > 5 %",
                AlertKind::Latency => "latency > 3 s",
                AlertKind::WebhookFailures | AlertKind::Critical => "failed webhook deliveries",
            }),
        }
    }
    if missing.is_empty() {
        item(
            id,
            section,
            line,
            Status::Pass,
            format!(
                "the rules file parses and has {} among {} alert(s)",
                found.join(", "),
                rules.len()
            ),
        )
    } else {
        item(
            id,
            section,
            line,
            Status::Fail,
            format!(
                "the rules file has no alert for {}; fix: load deploy/prometheus/alerts.yaml \
                 (FincodeSidecarHighErrorRate, FincodeSidecarHighLatencyP99, \
                 FincodeWebhookDeliveryFailing)",
                missing.join(", ")
            ),
        )
    }
}

// === Webhook Setup ===

async fn webhook_setup(config: &Config, resolved: &Resolved) -> Vec<Item> {
    let webhooks = &config.webhooks;
    let lines = [
        (
            "webhooks.endpoint",
            "Endpoint Configured: Production webhook URL is registered",
        ),
        (
            "webhooks.idempotency",
            "Idempotency: Handle duplicate webhook deliveries",
        ),
        (
            "webhooks.async",
            "Async Processing: Process webhooks asynchronously to avoid timeouts",
        ),
        (
            "webhooks.retry",
            "Retry Handling: Implement retry logic for failed webhook processing",
        ),
    ];
    if !webhooks.enabled {
        return lines
            .iter()
            .map(|(id, line)| {
                item(
                    id,
                    WEBHOOKS,
                    line,
                    Status::Manual,
                    "webhooks.enabled = false: the app handles FinCode's webhooks itself and \
                     must do this; or set webhooks.enabled = true and let the sidecar do it",
                )
            })
            .collect();
    }
    let paths = webhooks.paths.join(", ");
    let store = if resolved.is_unset("store.password_env") {
        Err(resolved
            .problems
            .iter()
            .filter(|problem| problem.key == "store.password_env")
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "))
    } else {
        let password = resolved.secrets.store_password.as_ref();
        match crate::store_cli::read(&config.store, password).await {
            Ok(status) => Ok(format!(
                "the store is reachable ({} pending, {} dead letters)",
                status.counts.pending, status.counts.dead
            )),
            Err(error) => Err(error.to_string()),
        }
    };
    let store_name = match &config.store {
        fincode_config::StoreBackend::Sqlite { path } => format!("SQLite {}", path.display()),
        fincode_config::StoreBackend::Postgres(pg) => {
            format!("Postgres {} (schema {})", pg.url, pg.schema)
        }
    };
    let idempotency = match &store {
        Ok(reachable) => item(
            lines[1].0,
            WEBHOOKS,
            lines[1].1,
            Status::Pass,
            format!(
                "events are deduplicated on webhooks.dedupe_key under a unique constraint in \
                 {store_name}; {reachable}"
            ),
        ),
        Err(error) => item(
            lines[1].0,
            WEBHOOKS,
            lines[1].1,
            Status::Fail,
            format!(
                "the webhook store ({store_name}) cannot be read: {error}; fix: check \
                 [store] (store.sqlite_path on a persistent volume, or store.url and \
                 store.password_env), and that the sidecar has created it"
            ),
        ),
    };
    let deliver_to = webhooks.deliver_to.as_ref().map_or_else(
        || "(webhooks.deliver_to unset)".to_owned(),
        ToString::to_string,
    );
    vec![
        item(
            lines[0].0,
            WEBHOOKS,
            lines[0].1,
            Status::Manual,
            format!(
                "register https://<your ingress host>{} with FinCode for production (the \
                 sidecar listens on webhooks.listen = {}, path(s) {paths}); FinCode's \
                 dashboard or hello@fincode.co.uk confirms it",
                webhooks.paths.first().map_or("/", String::as_str),
                webhooks.listen
            ),
        ),
        idempotency,
        item(
            lines[2].0,
            WEBHOOKS,
            lines[2].1,
            Status::Pass,
            format!(
                "each event is committed durably and answered 200 at once; delivery to \
                 {deliver_to} runs apart ({} at a time)",
                webhooks.delivery_concurrency
            ),
        ),
        item(
            lines[3].0,
            WEBHOOKS,
            lines[3].1,
            Status::Pass,
            format!(
                "failed deliveries are retried with exponential backoff and full jitter from \
                 {} to {}, up to {} attempts or {}, then kept as dead letters \
                 (`fincode-sidecar webhooks replay`)",
                humantime::format_duration(webhooks.backoff_base),
                humantime::format_duration(webhooks.backoff_cap),
                webhooks.max_attempts,
                humantime::format_duration(webhooks.max_age)
            ),
        ),
    ]
}

// === Compliance: Record Keeping ===

async fn audit(config: &Config, resolved: &Resolved) -> Item {
    const LINE: &str = "Record Keeping: Implement transaction audit logging";
    let fail = |reason: String| {
        item(
            "compliance.record_keeping",
            COMPLIANCE,
            LINE,
            Status::Fail,
            reason,
        )
    };
    let audit = &config.audit;
    if !audit.enabled {
        return fail(
            "audit.enabled = false: no transaction audit trail is kept; fix: set \
             audit.enabled = true with audit.dir on a persistent volume, \
             audit.signing_key_env and redact.hash_key_env"
                .to_owned(),
        );
    }
    let var = audit.signing_key_env.as_deref().unwrap_or_default();
    let Some(seed) = resolved.secrets.audit_signing_key.as_ref() else {
        return fail(format!(
            "the variable {var} (audit.signing_key_env) is not set; fix: set it to the seed \
             the sidecar signs checkpoints with"
        ));
    };
    let signer = match fincode_audit::Signer::from_base64_seed(seed.expose_secret()) {
        Ok(signer) => signer,
        Err(error) => return fail(format!("{var} (audit.signing_key_env): {error}")),
    };
    let dir = audit.dir.clone();
    let probe = dir.join(format!(".preflight-probe-{}", std::process::id()));
    let written = tokio::task::spawn_blocking(move || write_probe(&probe)).await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            return fail(format!(
                "audit.dir = {} is not writable: {error}; fix: make it a writable persistent \
                 volume for the sidecar's user",
                audit.dir.display()
            ));
        }
        Err(_) => return fail("the audit probe did not complete".to_owned()),
    }
    let key = signer.public_key_base64();
    let report = verify_trail(audit.dir.clone(), key).await;
    match report {
        Ok(report) if report.is_intact() => item(
            "compliance.record_keeping",
            COMPLIANCE,
            LINE,
            Status::Pass,
            format!(
                "audit.dir = {} is writable (a probe file was written and removed) and the \
                 trail verifies: {} segment(s), {} record(s), checkpoints signed by the key \
                 from {var}",
                audit.dir.display(),
                report.segments,
                report.records
            ),
        ),
        Ok(report) => fail(format!(
            "the audit trail in {} does NOT verify: {} finding(s), first: {}; fix: run \
             `fincode-sidecar audit verify {} --public-key ...` and investigate before go-live",
            audit.dir.display(),
            report.findings.len(),
            report
                .findings
                .first()
                .map_or_else(String::new, ToString::to_string),
            audit.dir.display()
        )),
        Err(error) => fail(format!(
            "the audit trail in {} cannot be read: {error}",
            audit.dir.display()
        )),
    }
}

/// Creates, syncs and removes a probe file in `dir`'s place.
fn write_probe(probe: &Path) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(probe)?;
    let written = file
        .write_all(b"fincode-sidecar preflight probe\n")
        .and_then(|()| file.sync_all());
    drop(file);
    let removed = std::fs::remove_file(probe);
    written.and(removed)
}

/// Verifies the trail beside the running sidecar. A line being appended at that moment
/// can look torn; that one case is read again once.
async fn verify_trail(dir: PathBuf, key: String) -> std::io::Result<fincode_audit::Report> {
    let once = |dir: PathBuf, key: String| {
        tokio::task::spawn_blocking(move || fincode_audit::verify_signed(&dir, &key, &[]))
    };
    let first = once(dir.clone(), key.clone())
        .await
        .map_err(std::io::Error::other)??;
    let only_torn = !first.is_intact()
        && first
            .findings
            .iter()
            .all(|finding| finding.problem.contains("torn"));
    if !only_torn {
        return Ok(first);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    once(dir, key).await.map_err(std::io::Error::other)?
}

// === Production Credentials ===

fn production(config: &Config, options: &Options) -> Vec<Item> {
    let manual = |id, line, reason: &str| item(id, PRODUCTION, line, Status::Manual, reason);
    vec![
        manual(
            "production.integration_testing",
            "Complete Integration Testing: Ensure all test scenarios pass",
            "run the app's payment, failure and webhook scenarios against FinCode's sandbox \
             through this sidecar; this report (nothing failing) is part of the evidence",
        ),
        manual(
            "production.go_live_request",
            "Submit Go-Live Request: Email hello@fincode.co.uk",
            "email hello@fincode.co.uk with the three items below",
        ),
        manual(
            "production.company_details",
            "Go-live request: Company name and registration details",
            "the merchant's legal name and company registration number",
        ),
        manual(
            "production.completion_confirmation",
            "Go-live request: Integration completion confirmation",
            "attach `fincode-sidecar preflight --format markdown` (this report) run against \
             the sandbox with nothing failing",
        ),
        item(
            "production.expected_volume",
            PRODUCTION,
            "Go-live request: Expected transaction volume",
            Status::Manual,
            format!(
                "state the expected volume; the sidecar allows {}/s overall (rate_limit.per_second), \
                 size it to the volume",
                config.rate_limit.per_second
            ),
        ),
        manual(
            "production.receive_credentials",
            "Receive Production Access: Production API credentials",
            "put them in the Secret behind the variables auth.* names (never in the config), \
             roll the pods, then rerun preflight --production",
        ),
        base_url(config, options),
        manual(
            "production.webhook_configuration",
            "Receive Production Access: Production webhook configuration",
            "set webhooks.scheme, the secret behind webhooks.secret_envs and \
             webhooks.allow_ips to what FinCode gives for production",
        ),
    ]
}

/// Whether `host` is `{tenant}.fincode.tech`, with one non-empty tenant label.
pub(crate) fn is_production_host(host: &str) -> bool {
    host.strip_suffix(".fincode.tech").is_some_and(|tenant| {
        !tenant.is_empty()
            && !tenant.contains('.')
            && tenant
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
    })
}

fn base_url(config: &Config, options: &Options) -> Item {
    const LINE: &str =
        "Receive Production Access: Production base URL https://{tenant}.fincode.tech";
    let url = &config.upstream.base_url;
    let production =
        url.scheme_str() == Some("https") && url.host().is_some_and(is_production_host);
    if production {
        return item(
            "production.base_url",
            PRODUCTION,
            LINE,
            Status::Pass,
            format!("upstream.base_url = {url} has the production shape"),
        );
    }
    if options.production {
        item(
            "production.base_url",
            PRODUCTION,
            LINE,
            Status::Fail,
            format!(
                "upstream.base_url = {url} is not a production URL (--production); fix: set \
                 upstream.base_url = \"https://{{tenant}}.fincode.tech/api/v6/services\""
            ),
        )
    } else {
        item(
            "production.base_url",
            PRODUCTION,
            LINE,
            Status::Manual,
            format!(
                "upstream.base_url = {url} is not a production URL: expected while testing; \
                 switch to https://{{tenant}}.fincode.tech/api/v6/services at go-live and run \
                 preflight --production"
            ),
        )
    }
}

// === Monitoring & Logging ===

/// The running sidecar's admin port: its `/metrics` text, or why it could not be read.
type Admin = Result<String, String>;

async fn admin_port(config: &Config) -> Admin {
    let addr = dialable(config.listen.admin);
    let get = |path: &'static str| async move {
        let url = format!("http://{addr}{path}");
        match tokio::time::timeout(
            ADMIN_TIMEOUT,
            crate::webhooks_cli::call(Method::GET, &url, None),
        )
        .await
        {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(error)) => Err(format!(
                "{url} is not reachable ({error}): is the sidecar running? (listen.admin = {})",
                config.listen.admin
            )),
            Err(_) => Err(format!(
                "{url} did not answer within {}: is the sidecar running? (listen.admin = {})",
                humantime::format_duration(ADMIN_TIMEOUT),
                config.listen.admin
            )),
        }
    };
    let (ready_status, ready_body) = get("/readyz").await?;
    if !ready_status.is_success() {
        let first = String::from_utf8_lossy(&ready_body);
        return Err(format!(
            "the sidecar at {addr} is not ready: /readyz answered {} ({})",
            ready_status.as_u16(),
            first.lines().next().unwrap_or_default().trim()
        ));
    }
    let (status, body) = get("/metrics").await?;
    if !status.is_success() {
        return Err(format!(
            "http://{addr}/metrics answered {}",
            status.as_u16()
        ));
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// `addr` as a client dials it: an unspecified bind address is reached over loopback.
fn dialable(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    addr
}

/// One harmless call through the running sidecar's egress port, as the app makes them: it
/// proves the app's door works end to end (credentials, TLS, layers), and gives the request
/// metrics their first series (prometheus-client shows a labelled family only once used).
async fn app_door(config: &Config) -> Item {
    const LINE: &str = "The app's door: a call through the running sidecar reaches FinCode";
    let addr = dialable(config.listen.egress);
    let url = format!("http://{addr}{PROBE_PATH}");
    let wait = config.retry.deadline + ADMIN_TIMEOUT;
    let answer =
        tokio::time::timeout(wait, crate::webhooks_cli::call(Method::GET, &url, None)).await;
    let (status, reason) = match answer {
        // The body (a transaction list: personal data) is dropped unread.
        Ok(Ok((status, _body))) if status.is_success() => (
            Status::Pass,
            format!(
                "GET {PROBE_PATH} through listen.egress = {} answered {}",
                config.listen.egress,
                status.as_u16()
            ),
        ),
        Ok(Ok((status, _body))) => (
            Status::Fail,
            format!(
                "GET {PROBE_PATH} through listen.egress = {} answered {}; the sidecar's logs                  and its x-sidecar-error header say why",
                config.listen.egress,
                status.as_u16()
            ),
        ),
        Ok(Err(error)) => (
            Status::Fail,
            format!(
                "{url} is not reachable ({error}): is the sidecar running? (listen.egress = {})",
                config.listen.egress
            ),
        ),
        Err(_) => (
            Status::Fail,
            format!(
                "{url} did not answer within {}: is the sidecar running?",
                humantime::format_duration(wait)
            ),
        ),
    };
    item("monitoring.app_door", MONITORING, LINE, status, reason)
}

fn monitoring(config: &Config, admin: &Admin, door: Item, alerts: Option<&Rules>) -> Vec<Item> {
    let metric = |id, line, names: &[&str], what: &str| {
        let (status, reason) = match admin {
            Err(error) => (Status::Fail, error.clone()),
            Ok(text) => {
                let missing: Vec<&str> = names
                    .iter()
                    .copied()
                    .filter(|name| !text.contains(&format!("# TYPE {name} ")))
                    .collect();
                if missing.is_empty() {
                    (
                        Status::Pass,
                        format!(
                            "the running sidecar exports {} on /metrics ({what})",
                            names.join(", ")
                        ),
                    )
                } else {
                    (
                        Status::Fail,
                        format!(
                            "the running sidecar's /metrics lacks {}; is it an older version?",
                            missing.join(", ")
                        ),
                    )
                }
            }
        };
        item(id, MONITORING, line, status, reason)
    };
    let endpoint = match admin {
        Ok(_) => item(
            "monitoring.metrics_endpoint",
            MONITORING,
            "Metrics endpoint up (Prometheus scrapes /metrics; probes read /readyz)",
            Status::Pass,
            format!(
                "the running sidecar on listen.admin = {} answers /readyz 200 and /metrics",
                config.listen.admin
            ),
        ),
        Err(error) => item(
            "monitoring.metrics_endpoint",
            MONITORING,
            "Metrics endpoint up (Prometheus scrapes /metrics; probes read /readyz)",
            Status::Fail,
            error.clone(),
        ),
    };
    let webhook_metric = if config.webhooks.enabled {
        metric(
            "monitoring.webhook_delivery",
            "Webhook Delivery: Monitor webhook receipt and processing times",
            &[
                "fincode_webhooks_received",
                "fincode_webhook_deliveries",
                "fincode_webhook_ack_duration_seconds",
                "fincode_webhook_delivery_duration_seconds",
            ],
            "receipts, deliveries and their durations",
        )
    } else {
        item(
            "monitoring.webhook_delivery",
            MONITORING,
            "Webhook Delivery: Monitor webhook receipt and processing times",
            Status::Manual,
            "webhooks.enabled = false: the app receives FinCode's webhooks itself and must \
             measure their receipt and processing",
        )
    };
    vec![
        endpoint,
        door,
        metric(
            "monitoring.success_rate",
            "Transaction Success Rate: Percentage of successful transactions",
            &["fincode_transactions"],
            "FinCode's business outcome of each create-transaction, by outcome",
        ),
        metric(
            "monitoring.response_times",
            "API Response Times: Monitor for degradation",
            &[
                "http_server_request_duration_seconds",
                "http_client_request_duration_seconds",
            ],
            "the app's calls and each try to FinCode, in seconds",
        ),
        metric(
            "monitoring.error_rates",
            "Error Rates: Track 4xx and 5xx errors",
            &["http_server_request_duration_seconds"],
            "by status_class 4xx/5xx; fincode_sidecar_errors by kind appears with the \
             sidecar's first error",
        ),
        webhook_metric,
        item(
            "logging.requests",
            MONITORING,
            "Log all API requests and responses (excluding sensitive data)",
            Status::Pass,
            format!(
                "one JSON access line per request (method, route, status, latency, attempts), \
                 every value through the redactor self-tested above; bodies {}",
                if config.log.bodies {
                    "logged redacted (log.bodies = true)"
                } else {
                    "not logged (log.bodies = false)"
                }
            ),
        ),
        item(
            "logging.correlation",
            MONITORING,
            "Include correlation IDs for tracing",
            Status::Pass,
            "every request keeps the app's X-Request-ID or gets a UUIDv7, sent to FinCode, \
             echoed back, and on every log line, span and audit record (W3C traceparent too)",
        ),
        alerts_item(
            "alerts.error_rate",
            MONITORING,
            "Set up alerts for: High error rates (>5%)",
            alerts,
            AlertKind::ErrorRate,
        ),
        alerts_item(
            "alerts.latency",
            MONITORING,
            "Set up alerts for: Slow response times (>3 seconds)",
            alerts,
            AlertKind::Latency,
        ),
        alerts_item(
            "alerts.webhook_failures",
            MONITORING,
            "Set up alerts for: Failed webhook deliveries",
            alerts,
            AlertKind::WebhookFailures,
        ),
    ]
}

// === Support and Launch Day ===

fn launch() -> Vec<Item> {
    let manual = |id, section, line, reason: &str| item(id, section, line, Status::Manual, reason);
    vec![
        manual(
            "support.requests",
            SUPPORT,
            "Support requests: Transaction ID or Customer Code, timestamp, error, steps",
            "for a support email to hello@fincode.co.uk, `fincode-sidecar audit find \
             --transaction-id ID` (or --reference, --correlation-id) gives the times, \
             attempts and errors, redacted",
        ),
        manual(
            "launch.monitor",
            LAUNCH,
            "Monitor Closely: Watch logs and metrics for the first few hours",
            "watch `fincode-sidecar status --watch` (one screen from the admin port), the \
             Grafana dashboard deploy/grafana/dashboard.json and the access logs for the \
             first hours",
        ),
        manual(
            "launch.rollback",
            LAUNCH,
            "Have Rollback Plan: Be prepared to revert if critical issues arise",
            "a bad config reload is refused and the old config keeps serving; a bad release \
             is reverted with `kubectl rollout undo`; keep the sandbox config at hand",
        ),
        manual(
            "launch.communicate",
            LAUNCH,
            "Communicate: Keep your team and stakeholders informed",
            "share this report and the dashboard with the team and name who is on call for \
             the alerts",
        ),
        manual(
            "launch.celebrate",
            LAUNCH,
            "Celebrate: You've successfully integrated with FinCode!",
            "once live with nothing failing here",
        ),
    ]
}

#[cfg(test)]
#[path = "checks_tests.rs"]
mod tests;
